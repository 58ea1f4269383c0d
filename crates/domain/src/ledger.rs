//! The posting rule: given a request and the two accounts as they stand, decide whether the
//! money moves and what each balance becomes. Pure, so every branch is unit-tested here and
//! the worker only has to load the inputs and store the outputs.

use serde::{Deserialize, Serialize};

use crate::limits::{AccountLimits, Reserved, available};
use crate::{AccountId, AccountStatus, Amount, Balance, Currency, FailureReason, Leg, TransferKind, TransferRequest};

/// The side of a ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EntryType {
    Debit,
    Credit,
}

impl EntryType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Debit => "DEBIT",
            EntryType::Credit => "CREDIT",
        }
    }
}

/// An account as the posting rule needs to see it, read inside the same database transaction
/// that will write the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSnapshot {
    pub id: AccountId,
    pub status: AccountStatus,
    pub currency: Currency,
    /// Derived from the account's latest entry (`balanceAfter`), never stored separately.
    pub balance: Balance,
    /// What HELD holds reserve on it.
    pub reserved: Reserved,
    pub limits: AccountLimits,
}

impl AccountSnapshot {
    /// The funding account is the only one whose balance may go below zero: it is where
    /// issued money comes from, so its negative balance is the total issued.
    pub fn is_funding(&self) -> bool {
        self.id == AccountId::funding(self.currency)
    }

    /// What a new debit may take ([`crate::limits`]).
    pub fn available(&self) -> i64 {
        available(self.balance, self.reserved, self.limits)
    }

    /// Whether a debit (or a reservation) of `amount` fits: within `available`, except on
    /// the funding account, which is unbounded below.
    pub fn may_debit(&self, amount: i64) -> Result<(), FailureReason> {
        if self.is_funding() || self.available() >= amount { Ok(()) } else { Err(FailureReason::InsufficientFunds) }
    }

    /// Whether a credit (or a reservation in its favour) of `amount` stays under the
    /// account's ceiling, counting what holds already reserve for it.
    pub fn may_credit(&self, amount: i64) -> Result<(), FailureReason> {
        let Some(max) = self.limits.max_balance() else { return Ok(()) };
        let after = i128::from(self.balance.minor()) + i128::from(self.reserved.credits) + i128::from(amount);
        if after > i128::from(max) { Err(FailureReason::BalanceLimitExceeded) } else { Ok(()) }
    }
}

/// How many accounts one user may own: enough for any person or business unit, and a bound
/// on what one sign-up can make the ledger hold (and on the account list that scopes a user's
/// transaction listing).
pub const MAX_ACCOUNTS_PER_USER: u64 = 100;

/// Why an account may not take the status asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatusRefusal {
    /// CLOSED is final: an account number, once closed, is never reused for new money.
    #[error("the account is CLOSED, which is final")]
    Closed,
    /// Closing would strand the money: no transfer could move it out afterwards.
    #[error("the account holds {balance} (minor units of {currency}); move it out before closing the account")]
    NotEmpty { balance: Balance, currency: Currency },
    /// HELD holds would post into, or out of, a closed account.
    #[error("the account has HELD holds; post or void them (or let them expire) before closing the account")]
    OpenHolds,
}

impl AccountSnapshot {
    /// Whether the account may take `status`. Asking for the status it has is allowed (a
    /// repeated request), SUSPENDED and ACTIVE may alternate, and CLOSED is only for an empty
    /// account and never left.
    pub fn may_become(&self, status: AccountStatus) -> Result<(), StatusRefusal> {
        match (self.status, status) {
            (current, wanted) if current == wanted => Ok(()),
            (AccountStatus::Closed, _) => Err(StatusRefusal::Closed),
            (_, AccountStatus::Closed) if self.balance != Balance::ZERO => {
                Err(StatusRefusal::NotEmpty { balance: self.balance, currency: self.currency })
            }
            (_, AccountStatus::Closed) if self.reserved != Reserved::default() => Err(StatusRefusal::OpenHolds),
            _ => Ok(()),
        }
    }
}

/// The balances after a transfer that was allowed to happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub debit_balance_after: Balance,
    pub credit_balance_after: Balance,
}

/// The checks every movement and reservation passes, whatever the balances: both accounts
/// exist, are ACTIVE and hold the movement's currency, and only the kinds allowed to touch the
/// funding account do. `None` for an account means it does not exist.
fn admissible<'a>(
    kind: TransferKind,
    currency: Currency,
    from: Option<&'a AccountSnapshot>,
    to: Option<&'a AccountSnapshot>,
) -> Result<(&'a AccountSnapshot, &'a AccountSnapshot), FailureReason> {
    let (Some(from), Some(to)) = (from, to) else {
        return Err(FailureReason::AccountNotFound);
    };
    // Only INITIAL_FUNDS (and a journal's leg, which only SYSTEM or a service granted
    // INITIAL_FUNDS may send) may draw on the funding account, and only a reversal may pay
    // into it: otherwise a plain transfer could mint or destroy money.
    let may_draw = matches!(kind, TransferKind::InitialFunds | TransferKind::Journal);
    if (from.is_funding() && !may_draw) || (to.is_funding() && kind != TransferKind::Reversal) {
        return Err(FailureReason::InvalidCommand);
    }
    if from.status != AccountStatus::Active || to.status != AccountStatus::Active {
        return Err(FailureReason::AccountNotActive);
    }
    if from.currency != currency || to.currency != currency {
        return Err(FailureReason::CurrencyMismatch);
    }
    Ok((from, to))
}

/// Decides a transfer (also initial funds and reversals): within the sender's `available`
/// and the receiver's ceiling.
pub fn post_transfer(
    request: &TransferRequest,
    from: Option<&AccountSnapshot>,
    to: Option<&AccountSnapshot>,
) -> Result<Posting, FailureReason> {
    let (from, to) = covered(request.kind, request.currency, request.amount, from, to)?;
    moved(from, to, request.amount.minor())
}

/// Decides one leg of a journal, or of a journal's reversal, against its accounts as the
/// legs before it left them: the checks of a transfer of its amount.
pub fn post_leg(
    kind: TransferKind,
    leg: &Leg,
    from: Option<&AccountSnapshot>,
    to: Option<&AccountSnapshot>,
) -> Result<Posting, FailureReason> {
    let (from, to) = covered(kind, leg.currency, leg.amount, from, to)?;
    moved(from, to, leg.amount.minor())
}

/// Decides a hold: the same checks as a transfer of its amount, which it reserves instead of
/// moving ([`crate::limits`]).
pub fn reserve(
    request: &TransferRequest,
    from: Option<&AccountSnapshot>,
    to: Option<&AccountSnapshot>,
) -> Result<(), FailureReason> {
    covered(request.kind, request.currency, request.amount, from, to).map(|_| ())
}

/// Decides the post of a held amount: the money was reserved, so no limit is judged again
/// (held money cannot have been spent, nor the overdraft line lowered below it), but both
/// accounts must still be ACTIVE.
pub fn post_held(
    request: &TransferRequest,
    from: Option<&AccountSnapshot>,
    to: Option<&AccountSnapshot>,
) -> Result<Posting, FailureReason> {
    let (from, to) = admissible(request.kind, request.currency, from, to)?;
    moved(from, to, request.amount.minor())
}

/// [`admissible`], and the amount within the sender's `available` and the receiver's ceiling.
fn covered<'a>(
    kind: TransferKind,
    currency: Currency,
    amount: Amount,
    from: Option<&'a AccountSnapshot>,
    to: Option<&'a AccountSnapshot>,
) -> Result<(&'a AccountSnapshot, &'a AccountSnapshot), FailureReason> {
    let (from, to) = admissible(kind, currency, from, to)?;
    let amount = amount.minor();
    from.may_debit(amount)?;
    to.may_credit(amount)?;
    Ok((from, to))
}

fn moved(from: &AccountSnapshot, to: &AccountSnapshot, amount: i64) -> Result<Posting, FailureReason> {
    let debit_after = from.balance.minor().checked_sub(amount);
    let credit_after = to.balance.minor().checked_add(amount);
    match (debit_after, credit_after) {
        (Some(d), Some(c)) => Ok(Posting { debit_balance_after: Balance(d), credit_balance_after: Balance(c) }),
        _ => Err(FailureReason::BalanceLimitExceeded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(balance: i64) -> AccountSnapshot {
        AccountSnapshot {
            id: AccountId::generate(),
            status: AccountStatus::Active,
            currency: Currency::USD,
            balance: Balance(balance),
            reserved: Reserved::default(),
            limits: AccountLimits::NONE,
        }
    }

    fn funding() -> AccountSnapshot {
        AccountSnapshot { id: AccountId::funding(Currency::USD), ..account(-500) }
    }

    fn transfer(from: &AccountSnapshot, to: &AccountSnapshot, amount: i64) -> TransferRequest {
        TransferRequest {
            kind: TransferKind::Transfer,
            from: from.id,
            to: to.id,
            amount: Amount::new(amount).expect("amount"),
            currency: Currency::USD,
            description: None,
            reverses: None,
            hold: None,
            timeout: None,
            legs: Vec::new(),
            metadata: None,
        }
    }

    #[test]
    fn a_covered_transfer_moves_exactly_the_amount() {
        let (a, b) = (account(100), account(7));
        let p = post_transfer(&transfer(&a, &b, 100), Some(&a), Some(&b)).expect("covered");
        assert_eq!(p, Posting { debit_balance_after: Balance(0), credit_balance_after: Balance(107) });
    }

    #[test]
    fn only_an_empty_account_closes_and_closed_is_final() {
        use AccountStatus::{Active, Closed, Suspended};
        let with = |status, balance| AccountSnapshot { status, ..account(balance) };
        for (from, to) in
            [(Active, Suspended), (Suspended, Active), (Active, Closed), (Suspended, Closed), (Closed, Closed)]
        {
            assert_eq!(with(from, 0).may_become(to), Ok(()), "{from} -> {to}");
        }
        assert_eq!(with(Active, 5).may_become(Suspended), Ok(()));
        assert_eq!(
            with(Suspended, 5).may_become(Closed),
            Err(StatusRefusal::NotEmpty { balance: Balance(5), currency: Currency::USD })
        );
        assert!(matches!(with(Active, -1).may_become(Closed), Err(StatusRefusal::NotEmpty { .. })));
        assert_eq!(with(Closed, 0).may_become(Active), Err(StatusRefusal::Closed));
        assert_eq!(with(Closed, 0).may_become(Suspended), Err(StatusRefusal::Closed));
    }

    #[test]
    fn an_uncovered_transfer_fails_with_insufficient_funds() {
        let (a, b) = (account(99), account(0));
        assert_eq!(post_transfer(&transfer(&a, &b, 100), Some(&a), Some(&b)), Err(FailureReason::InsufficientFunds));
    }

    #[test]
    fn missing_inactive_and_mismatched_accounts_fail_with_their_reason() {
        let (a, b) = (account(100), account(0));
        let t = transfer(&a, &b, 1);
        assert_eq!(post_transfer(&t, None, Some(&b)), Err(FailureReason::AccountNotFound));
        assert_eq!(post_transfer(&t, Some(&a), None), Err(FailureReason::AccountNotFound));
        let suspended = AccountSnapshot { status: AccountStatus::Suspended, ..b.clone() };
        assert_eq!(post_transfer(&t, Some(&a), Some(&suspended)), Err(FailureReason::AccountNotActive));
        let euros = AccountSnapshot { currency: "EUR".parse().expect("EUR"), ..b.clone() };
        assert_eq!(post_transfer(&t, Some(&a), Some(&euros)), Err(FailureReason::CurrencyMismatch));
    }

    #[test]
    fn only_initial_funds_may_overdraw_the_funding_account() {
        let (f, b) = (funding(), account(0));
        let mut t = transfer(&f, &b, 1_000);
        assert_eq!(post_transfer(&t, Some(&f), Some(&b)), Err(FailureReason::InvalidCommand));
        t.kind = TransferKind::InitialFunds;
        let p = post_transfer(&t, Some(&f), Some(&b)).expect("funding may go negative");
        assert_eq!(p.debit_balance_after, Balance(-1_500));
        let back = transfer(&b, &f, 1);
        assert_eq!(post_transfer(&back, Some(&account(5)), Some(&f)), Err(FailureReason::InvalidCommand));
        // The reversal of initial funds returns them to the funding account.
        let undo =
            TransferRequest::reversal(crate::TransactionId::generate(), f.id, b.id, t.amount, Currency::USD, None);
        let p = post_transfer(&undo, Some(&account(1_000)), Some(&f)).expect("reversal into funding");
        assert_eq!(p.credit_balance_after, Balance(500));
    }

    #[test]
    fn held_money_cannot_be_spent_twice() {
        let held = AccountSnapshot { reserved: Reserved { debits: 60, credits: 0 }, ..account(100) };
        let b = account(0);
        // The balance covers 100, but 60 of it is reserved.
        assert_eq!(
            post_transfer(&transfer(&held, &b, 41), Some(&held), Some(&b)),
            Err(FailureReason::InsufficientFunds)
        );
        assert!(post_transfer(&transfer(&held, &b, 40), Some(&held), Some(&b)).is_ok());
    }

    #[test]
    fn an_overdraft_line_goes_down_to_exactly_minus_the_limit() {
        let limits = AccountLimits::new(500, None).expect("valid");
        let a = AccountSnapshot { limits, ..account(100) };
        let b = account(0);
        let p = post_transfer(&transfer(&a, &b, 600), Some(&a), Some(&b)).expect("within the line");
        assert_eq!(p.debit_balance_after, Balance(-500));
        let a = AccountSnapshot { balance: Balance(-500), ..a };
        assert_eq!(post_transfer(&transfer(&a, &b, 1), Some(&a), Some(&b)), Err(FailureReason::InsufficientFunds));
    }

    #[test]
    fn a_ceiling_refuses_the_credit_that_would_pass_it_counting_reserved_credits() {
        let limits = AccountLimits::new(0, Some(1_000)).expect("valid");
        let capped = AccountSnapshot { limits, reserved: Reserved { debits: 0, credits: 200 }, ..account(700) };
        let a = account(10_000);
        assert!(post_transfer(&transfer(&a, &capped, 100), Some(&a), Some(&capped)).is_ok());
        assert_eq!(
            post_transfer(&transfer(&a, &capped, 101), Some(&a), Some(&capped)),
            Err(FailureReason::BalanceLimitExceeded)
        );
    }

    #[test]
    fn balances_never_overflow() {
        let (a, b) = (account(10), account(i64::MAX - 5));
        assert_eq!(post_transfer(&transfer(&a, &b, 10), Some(&a), Some(&b)), Err(FailureReason::BalanceLimitExceeded));
    }

    #[test]
    fn a_journal_leg_may_draw_on_the_funding_account_but_never_pay_into_it() {
        let (f, b) = (funding(), account(0));
        let one = Amount::new(1_000).expect("amount");
        let issue = Leg::new(f.id, b.id, one, Currency::USD).expect("leg");
        let p = post_leg(TransferKind::Journal, &issue, Some(&f), Some(&b)).expect("funding may go negative");
        assert_eq!(p.debit_balance_after, Balance(-1_500));
        let back = Leg::new(b.id, f.id, one, Currency::USD).expect("leg");
        let rich = account(5_000);
        assert_eq!(post_leg(TransferKind::Journal, &back, Some(&rich), Some(&f)), Err(FailureReason::InvalidCommand));
        assert!(post_leg(TransferKind::Reversal, &back, Some(&rich), Some(&f)).is_ok());
        let euros = Leg::new(b.id, rich.id, one, "EUR".parse().expect("EUR")).expect("leg");
        assert_eq!(
            post_leg(TransferKind::Journal, &euros, Some(&b), Some(&rich)),
            Err(FailureReason::CurrencyMismatch)
        );
    }
}
