//! Journals: several movements of money committed all or nothing.
//!
//! A JOURNAL is one transaction of 2 to [`MAX_LEGS`] [`Leg`]s, each a movement of one currency
//! from one account to another. The worker applies the legs in order inside one database
//! transaction, so a later leg may spend what an earlier one credited, and a failing leg fails
//! the whole journal with nothing written. Each leg balances itself (its DEBIT and CREDIT are
//! of the same amount and currency), so a journal balances per currency however its legs mix
//! currencies: an exchange goes through a liquidity account in each currency.
//!
//! Every other transaction is a single movement; [`TransferRequest::movements`] lets the
//! posting, the checks and `reconcile` treat both alike.

use serde::Serialize;
use serde_json::Value;

use crate::fields::{opt_str, req_str};
use crate::{AccountId, Amount, Currency, DomainError, TransferKind, TransferRequest};

/// The fewest legs a journal has: one movement is a transfer.
pub const MIN_LEGS: usize = 2;
/// The most legs a journal has: enough for a payment with its fees, taxes and splits, and a
/// bound on what one command makes a worker read and write.
pub const MAX_LEGS: usize = 16;

/// One movement: `amount` of `currency` from `from` to `to`, two distinct accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leg {
    #[serde(rename = "fromAccount")]
    pub from: AccountId,
    #[serde(rename = "toAccount")]
    pub to: AccountId,
    pub amount: Amount,
    pub currency: Currency,
}

impl Leg {
    pub fn new(from: AccountId, to: AccountId, amount: Amount, currency: Currency) -> Result<Self, DomainError> {
        if from == to {
            return Err(DomainError::invalid("toAccount", "must differ from fromAccount"));
        }
        Ok(Self { from, to, amount, currency })
    }

    /// The same movement the other way: what its reversal moves.
    pub fn mirrored(self) -> Self {
        Self { from: self.to, to: self.from, ..self }
    }

    /// Reads a leg of a queue command, naming the leg of any refusal (`legs[2].amount`).
    pub(crate) fn from_json(index: usize, value: &Value) -> Result<Self, DomainError> {
        let named = |e: DomainError| DomainError::Invalid { field: "legs", reason: format!("legs[{index}]: {e}") };
        let Value::Object(obj) = value else {
            return Err(named(DomainError::invalid("leg", "must be an object")));
        };
        let read = || -> Result<Self, DomainError> {
            if let Some(unknown) =
                obj.keys().find(|k| !matches!(k.as_str(), "fromAccount" | "toAccount" | "amount" | "currency"))
            {
                return Err(DomainError::invalid("leg", format!("has no field {unknown}")));
            }
            let from = AccountId::parse_field("fromAccount", req_str(obj, "fromAccount")?)?;
            let to = AccountId::parse_field("toAccount", req_str(obj, "toAccount")?)?;
            let amount = Amount::from_json("amount", obj.get("amount"))?;
            let currency = opt_str(obj, "currency")?.ok_or(DomainError::Missing { field: "currency" })?.parse()?;
            Self::new(from, to, amount, currency)
        };
        read().map_err(named)
    }
}

/// Checks a journal's number of legs.
pub(crate) fn check_leg_count(count: usize) -> Result<(), DomainError> {
    if (MIN_LEGS..=MAX_LEGS).contains(&count) {
        Ok(())
    } else {
        Err(DomainError::invalid("legs", format!("must have {MIN_LEGS} to {MAX_LEGS} legs, not {count}")))
    }
}

impl TransferRequest {
    /// A journal: its legs, applied in order, all or none. `from`, `to`, `amount` and
    /// `currency` are its first leg's: the account it is routed and listed by.
    pub fn journal(legs: Vec<Leg>, description: Option<crate::Description>) -> Result<Self, DomainError> {
        check_leg_count(legs.len())?;
        let first = legs[0];
        Ok(Self {
            kind: TransferKind::Journal,
            from: first.from,
            to: first.to,
            amount: first.amount,
            currency: first.currency,
            description,
            reverses: None,
            hold: None,
            timeout: None,
            legs,
            metadata: None,
        })
    }

    /// The movements this request makes: a journal's legs (or those of a journal's reversal),
    /// or its one movement from `from` to `to`.
    pub fn movements(&self) -> Vec<Leg> {
        if self.legs.is_empty() {
            vec![Leg { from: self.from, to: self.to, amount: self.amount, currency: self.currency }]
        } else {
            self.legs.clone()
        }
    }

    /// The accounts money leaves, each once, in the order of the legs.
    pub fn debited_accounts(&self) -> Vec<AccountId> {
        let mut accounts: Vec<AccountId> = Vec::new();
        for leg in self.movements() {
            if !accounts.contains(&leg.from) {
                accounts.push(leg.from);
            }
        }
        accounts
    }

    /// Every account a movement of this request touches, each once.
    pub fn accounts(&self) -> Vec<AccountId> {
        let mut accounts: Vec<AccountId> = Vec::new();
        for leg in self.movements() {
            for account in [leg.from, leg.to] {
                if !accounts.contains(&account) {
                    accounts.push(account);
                }
            }
        }
        accounts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn leg(amount: i64) -> Leg {
        Leg::new(AccountId::generate(), AccountId::generate(), Amount::new(amount).expect("amount"), Currency::USD)
            .expect("leg")
    }

    #[test]
    fn a_journal_has_two_to_sixteen_legs_and_is_routed_by_its_first() {
        assert!(TransferRequest::journal(vec![leg(1)], None).is_err());
        assert!(TransferRequest::journal((0..17).map(|_| leg(1)).collect(), None).is_err());
        let legs: Vec<Leg> = (1..=16).map(leg).collect();
        let journal = TransferRequest::journal(legs.clone(), None).expect("16 legs");
        assert_eq!((journal.from, journal.to, journal.amount), (legs[0].from, legs[0].to, legs[0].amount));
        assert_eq!(journal.movements(), legs);
        assert_eq!(journal.accounts().len(), 32);
    }

    #[test]
    fn a_leg_moves_between_two_accounts() {
        let a = AccountId::generate();
        let err = Leg::new(a, a, Amount::new(1).expect("1"), Currency::USD).expect_err("same account");
        assert_eq!(err.field(), "toAccount");
    }

    #[test]
    fn a_queued_leg_is_refused_by_its_index_and_field() {
        let good = json!({
            "fromAccount": "0190a0a0-0000-7000-8000-000000000001",
            "toAccount": "0190a0a0-0000-7000-8000-000000000002",
            "amount": 5,
            "currency": "EUR",
        });
        assert!(Leg::from_json(0, &good).is_ok());
        for (field, value) in
            [("amount", json!(0)), ("currency", json!(null)), ("fromAccount", json!(7)), ("x", json!(1))]
        {
            let mut bad = good.clone();
            bad[field] = value;
            let reason = Leg::from_json(3, &bad).expect_err(field).to_string();
            assert!(reason.contains("legs[3]") && reason.contains(field), "{field}: {reason}");
        }
        assert!(Leg::from_json(0, &json!([1])).is_err());
    }
}
