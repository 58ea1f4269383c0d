//! Whole-ledger checks.

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};

use crate::{Store, StoreError};

/// One currency's totals, exact at any volume.
pub type Totals = (String, Result<(i128, i128), String>);

impl Store {
    /// Total DEBIT and CREDIT amounts per currency, as `(currency, Ok((debits, credits)))`.
    /// Double entry means the two are equal in every currency, always.
    ///
    /// Summed as decimals in the server: a `$sum` of 64-bit integers turns into a double once
    /// it passes `i64::MAX` (reached after about 9,200 fundings of the largest amount, or
    /// USD 92 bn through a currency of tiny units), and a double read back as an integer is
    /// not a total. A sum that is not an exact integer is an `Err` naming what was read, for
    /// `reconcile` to report, never a silent zero.
    pub async fn entry_totals(&self) -> Result<Vec<Totals>, StoreError> {
        let side =
            |kind: &str| doc! { "$sum": { "$cond": [{ "$eq": ["$type", kind] }, { "$toDecimal": "$amount" }, 0_i64] } };
        let pipeline = [doc! { "$group": { "_id": "$currency", "debits": side("DEBIT"), "credits": side("CREDIT") } }];
        let rows: Vec<Document> =
            self.entries().clone_with_type::<Document>().aggregate(pipeline).await?.try_collect().await?;
        let mut totals: Vec<Totals> = rows
            .iter()
            .map(|r| {
                let currency = r.get_str("_id").unwrap_or_default().to_owned();
                let sides = exact(r.get("debits")).and_then(|d| exact(r.get("credits")).map(|c| (d, c)));
                (currency, sides)
            })
            .collect();
        totals.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(totals)
    }
}

/// A sum as an exact integer: a decimal without fraction or exponent, or a plain integer
/// (an empty side sums to the integer 0).
fn exact(sum: Option<&Bson>) -> Result<i128, String> {
    match sum {
        Some(Bson::Decimal128(d)) => d.to_string().parse().map_err(|_| format!("sum {d} is not an exact integer")),
        Some(Bson::Int64(n)) => Ok(i128::from(*n)),
        Some(Bson::Int32(n)) => Ok(i128::from(*n)),
        other => Err(format!("sum {other:?} is not an exact integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_integers_are_totals() {
        let decimal = |s: &str| Some(Bson::Decimal128(s.parse().expect("a decimal")));
        assert_eq!(exact(decimal("92230000000000000000").as_ref()), Ok(92_230_000_000_000_000_000));
        assert_eq!(exact(Some(&Bson::Int64(7))), Ok(7));
        assert!(exact(decimal("1.5E+3").as_ref()).is_err());
        assert!(exact(Some(&Bson::Double(9.2e18))).is_err());
        assert!(exact(None).is_err());
    }
}
