//! Whole-ledger checks.

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use crate::{Store, StoreError};

impl Store {
    /// Total DEBIT and CREDIT amounts per currency, as `(currency, debits, credits)`.
    /// Double entry means the two are equal in every currency, always.
    pub async fn entry_totals(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let pipeline = [doc! { "$group": {
            "_id": "$currency",
            "debits": { "$sum": { "$cond": [{ "$eq": ["$type", "DEBIT"] }, "$amount", 0_i64] } },
            "credits": { "$sum": { "$cond": [{ "$eq": ["$type", "CREDIT"] }, "$amount", 0_i64] } },
        }}];
        let rows: Vec<Document> =
            self.entries().clone_with_type::<Document>().aggregate(pipeline).await?.try_collect().await?;
        let mut totals: Vec<(String, i64, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.get_str("_id").unwrap_or_default().to_owned(),
                    r.get_i64("debits").unwrap_or_default(),
                    r.get_i64("credits").unwrap_or_default(),
                )
            })
            .collect();
        totals.sort();
        Ok(totals)
    }
}
