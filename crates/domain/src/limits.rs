//! What an account may still spend and receive: money reserved by holds, and the limits
//! SYSTEM sets (an overdraft line below zero, a ceiling above).
//!
//! `balance` is posted money only. `available = balance − reserved debits + overdraft line`
//! is what a new debit may take: money a hold reserved cannot be spent twice, and an overdraft
//! line lets an account go down to exactly `−overdraft`. A ceiling (`maxBalance`) caps
//! `balance + reserved credits`, so a hold in an account's favour counts against it too.

use crate::{Balance, DomainError, MAX_AMOUNT_MINOR};

/// Limits SYSTEM sets on an account: `overdraft ≥ 0` (0: no overdraft) and an optional
/// `max_balance > 0`. Both bounded by [`MAX_AMOUNT_MINOR`], like every amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountLimits {
    overdraft: i64,
    max_balance: Option<i64>,
}

impl AccountLimits {
    /// No overdraft, no ceiling: what every account starts with.
    pub const NONE: AccountLimits = AccountLimits { overdraft: 0, max_balance: None };

    pub fn new(overdraft: i64, max_balance: Option<i64>) -> Result<Self, DomainError> {
        if !(0..=MAX_AMOUNT_MINOR).contains(&overdraft) {
            return Err(DomainError::invalid(
                "overdraftLimit",
                format!("must be an integer of minor units from 0 to {MAX_AMOUNT_MINOR}"),
            ));
        }
        if max_balance.is_some_and(|m| !(1..=MAX_AMOUNT_MINOR).contains(&m)) {
            return Err(DomainError::invalid(
                "maxBalance",
                format!("must be null or an integer of minor units from 1 to {MAX_AMOUNT_MINOR}"),
            ));
        }
        Ok(Self { overdraft, max_balance })
    }

    /// How far below zero the account may go.
    pub fn overdraft(&self) -> i64 {
        self.overdraft
    }

    /// The most `balance + reserved credits` may reach, if capped.
    pub fn max_balance(&self) -> Option<i64> {
        self.max_balance
    }
}

/// Money that HELD holds reserve on an account: `debits` it may no longer spend, `credits`
/// on their way in. Never negative; zero on an account no hold names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reserved {
    pub debits: i64,
    pub credits: i64,
}

/// `balance − reserved debits + overdraft`, in wide arithmetic so that no stored values,
/// however extreme, overflow; saturated to `i64` for display.
pub fn available(balance: Balance, reserved: Reserved, limits: AccountLimits) -> i64 {
    let wide = i128::from(balance.minor()) - i128::from(reserved.debits) + i128::from(limits.overdraft);
    i64::try_from(wide).unwrap_or(if wide < 0 { i64::MIN } else { i64::MAX })
}

/// Why new limits may not be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    /// The account already owes more (posted and reserved debits) than the new line allows:
    /// lowering it would break `balance ≥ −overdraft` the moment those holds post.
    #[error(
        "the account's balance less its held debits is {committed} minor units; an overdraft limit of {overdraft} \
         would be exceeded"
    )]
    BelowBalance { committed: i64, overdraft: i64 },
}

/// Whether `limits` may replace an account's limits, given what it holds and owes. A lower
/// ceiling is always allowed: it refuses new credits without touching money already there.
pub fn may_set_limits(balance: Balance, reserved: Reserved, limits: AccountLimits) -> Result<(), LimitRefusal> {
    let committed = i128::from(balance.minor()) - i128::from(reserved.debits);
    if committed < -i128::from(limits.overdraft) {
        let committed = i64::try_from(committed).unwrap_or(i64::MIN);
        return Err(LimitRefusal::BelowBalance { committed, overdraft: limits.overdraft });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_refused_for_the_field_that_is_wrong() {
        assert_eq!(AccountLimits::new(-1, None).map_err(|e| e.field()), Err("overdraftLimit"));
        assert_eq!(AccountLimits::new(MAX_AMOUNT_MINOR + 1, None).map_err(|e| e.field()), Err("overdraftLimit"));
        assert_eq!(AccountLimits::new(0, Some(0)).map_err(|e| e.field()), Err("maxBalance"));
        assert_eq!(AccountLimits::new(0, Some(-5)).map_err(|e| e.field()), Err("maxBalance"));
        let ok = AccountLimits::new(500, Some(10_000)).expect("valid");
        assert_eq!((ok.overdraft(), ok.max_balance()), (500, Some(10_000)));
        assert_eq!(AccountLimits::new(0, None), Ok(AccountLimits::NONE));
    }

    #[test]
    fn available_subtracts_reservations_and_adds_the_overdraft_line() {
        let limits = AccountLimits::new(50, None).expect("valid");
        assert_eq!(available(Balance(100), Reserved { debits: 30, credits: 999 }, limits), 120);
        assert_eq!(available(Balance(i64::MIN), Reserved { debits: i64::MAX, credits: 0 }, limits), i64::MIN);
    }

    #[test]
    fn the_overdraft_line_cannot_drop_below_what_is_owed() {
        let held = Reserved { debits: 40, credits: 0 };
        let line = |n| AccountLimits::new(n, None).expect("valid");
        assert_eq!(may_set_limits(Balance(-60), held, line(100)), Ok(()));
        assert_eq!(
            may_set_limits(Balance(-60), held, line(99)),
            Err(LimitRefusal::BelowBalance { committed: -100, overdraft: 99 })
        );
        assert_eq!(may_set_limits(Balance(0), Reserved::default(), line(0)), Ok(()));
    }
}
