//! Money: positive bounded amounts in integer minor units, signed balances, ISO 4217 currencies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::DomainError;

/// The largest amount one transfer may move, in minor units (10^15: ten trillion dollars in
/// cents). Bounding it keeps every sum of a few amounts far from `i64` overflow.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// A transfer amount in integer minor units (cents for USD): always in `1..=MAX_AMOUNT_MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub fn new(minor: i64) -> Result<Self, DomainError> {
        match minor {
            m if m <= 0 => Err(DomainError::invalid("amount", "must be a positive integer of minor units")),
            m if m > MAX_AMOUNT_MINOR => {
                Err(DomainError::invalid("amount", format!("must not exceed {MAX_AMOUNT_MINOR} minor units")))
            }
            m => Ok(Self(m)),
        }
    }

    /// Parses a JSON value of the field `field` (absent or `null`: missing). See
    /// [`Amount::from_json_value`].
    pub fn from_json(field: &'static str, value: Option<&Value>) -> Result<Self, DomainError> {
        match value {
            None | Some(Value::Null) => Err(DomainError::Missing { field }),
            Some(value) => Self::from_json_value(value).map_err(|e| e.for_field(field)),
        }
    }

    /// Parses a JSON value; the error names `amount`. Only a JSON integer is money: `1.5`,
    /// `100.0`, `"100"` and `1e3` are all refused, because a client that sends them has
    /// misunderstood the unit. Also what `Deserialize` does.
    pub fn from_json_value(value: &Value) -> Result<Self, DomainError> {
        let Value::Number(n) = value else {
            return Err(DomainError::invalid("amount", "must be a JSON integer of minor units"));
        };
        match n.as_i64() {
            Some(i) => Self::new(i),
            // Not an i64 as written: a fraction, a whole number written with a point or an
            // exponent (100.0, 1e3), or one beyond i64, which `as` saturates so that `new`
            // names the bound it breaks.
            None => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 {
                    return Err(DomainError::invalid(
                        "amount",
                        "must be an integer number of minor units, not a fraction",
                    ));
                }
                Self::new(f as i64)?;
                Err(DomainError::invalid(
                    "amount",
                    "must be written as a JSON integer such as 1500, without a decimal point or exponent",
                ))
            }
        }
    }

    pub fn minor(self) -> i64 {
        self.0
    }
}

/// As [`Amount::from_json_value`]: a JSON integer, with the same refusals (their reason only,
/// see `crate::fields`).
impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_json_value(&Value::deserialize(d)?).map_err(|e| crate::fields::refusal(&e))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An account balance in minor units. Signed: only the funding account may hold a negative one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Balance(pub i64);

impl Balance {
    pub const ZERO: Balance = Balance(0);

    pub fn minor(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An ISO 4217 currency, checked against the standard's list (not merely three letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub const USD: Currency = Currency(iso_currency::Currency::USD);

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// This currency, if a new account may hold it: one in circulation, not a special code
    /// (XXX "no currency", XTS "for testing", metals, units of account), a fund code (USN,
    /// CLF…) or a superseded one (HRK, BGN…), as the ISO 4217 data marks them. Accounts already
    /// stored in any ISO code still read and still move money.
    pub fn for_new_account(self) -> Result<Self, DomainError> {
        if self.0.flags().is_empty() {
            Ok(self)
        } else {
            Err(DomainError::invalid(
                "currency",
                format!(
                    "{} is not a circulating currency: special, fund and superseded codes hold no new accounts",
                    self.code()
                ),
            ))
        }
    }
}

impl FromStr for Currency {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        iso_currency::Currency::from_code(s)
            .map(Currency)
            .ok_or_else(|| DomainError::invalid("currency", "must be an ISO 4217 code such as USD or EUR"))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_circulating_currencies_hold_new_accounts() {
        for code in ["USD", "EUR", "JPY", "BHD", "CHF"] {
            let currency: Currency = code.parse().unwrap();
            assert_eq!(currency.for_new_account(), Ok(currency), "{code}");
        }
        for code in ["XXX", "XTS", "XAU", "XDR", "USN", "CLF", "HRK", "BGN"] {
            let currency: Currency = code.parse().unwrap();
            let refused = currency.for_new_account().expect_err(code);
            assert_eq!(refused.field(), "currency");
            assert!(refused.to_string().contains(code), "{refused}");
        }
    }

    #[test]
    fn amount_accepts_only_positive_bounded_integers() {
        assert_eq!(Amount::new(1).map(Amount::minor), Ok(1));
        assert_eq!(Amount::new(MAX_AMOUNT_MINOR).map(Amount::minor), Ok(MAX_AMOUNT_MINOR));
        for bad in [0, -1, i64::MIN, MAX_AMOUNT_MINOR + 1, i64::MAX] {
            assert!(Amount::new(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn amount_from_json_refuses_fractions_strings_and_huge_numbers() {
        assert_eq!(Amount::from_json("amount", Some(&json!(250))).map(Amount::minor), Ok(250));
        for bad in
            [json!(1.5), json!(100.0), json!("100"), json!(true), json!(-5), json!(0), json!(u64::MAX), json!(1e300)]
        {
            let err = Amount::from_json("amount", Some(&bad)).expect_err("must be refused");
            assert_eq!(err.field(), "amount", "{bad}");
        }
        // Each refusal says what is wrong with the number as written.
        let reason = |v: Value| match Amount::from_json("amount", Some(&v)) {
            Err(DomainError::Invalid { reason, .. }) => reason,
            other => panic!("{v} gave {other:?}"),
        };
        for (written, says) in [
            ("1.5", "not a fraction"),
            ("-0.5", "not a fraction"),
            ("100.0", "without a decimal point or exponent"),
            ("1e3", "without a decimal point or exponent"),
            ("-0", "positive"),
            ("-1e30", "positive"),
            ("-9223372036854775809", "positive"),
            ("99999999999999999999999", "must not exceed"),
            ("18446744073709551615", "must not exceed"),
            ("1e300", "must not exceed"),
        ] {
            let value: Value = serde_json::from_str(written).expect("a JSON number");
            assert!(reason(value).contains(says), "{written} must be refused as {says:?}");
        }
        assert_eq!(Amount::from_json("amount", None), Err(DomainError::Missing { field: "amount" }));
        assert_eq!(Amount::from_json("amount", Some(&Value::Null)), Err(DomainError::Missing { field: "amount" }));
    }

    #[test]
    fn currency_is_checked_against_iso_4217() {
        assert_eq!("EUR".parse::<Currency>().map(Currency::code), Ok("EUR"));
        for bad in ["usd", "XXY", "US", "DOLLARS", ""] {
            assert!(bad.parse::<Currency>().is_err(), "{bad}");
        }
    }
}
