//! The reversal rule: which transactions may be reversed, and what their reversal must be.
//!
//! The gateway applies it to refuse a reversal at once (409), the worker again inside the
//! database transaction that would write it (the gateway's read may be stale by then). One
//! definition, so the two can never disagree about what is reversible.

use crate::{Description, Leg, TransactionId, TransactionStatus, TransferKind, TransferRequest};

/// Why a transaction may not be reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReversible {
    /// PENDING money has not moved, and FAILED money never will.
    #[error("only a COMPLETED transaction can be reversed")]
    NotCompleted,
    /// Undoing a reversal is a new transfer, not a reversal of a reversal: otherwise a chain
    /// of them could move the same money back and forth without end.
    #[error("a reversal cannot itself be reversed")]
    IsAReversal,
    /// A VOID_HOLD moved no money; a hold's money moves (and is reversed) by its POST_HOLD.
    #[error("only money that moved can be reversed: reverse a hold's POST_HOLD, not the hold or its void")]
    MovedNoMoney,
    /// Each transaction is reversed at most once.
    #[error("the transaction is already reversed")]
    AlreadyReversed,
}

/// What the rule needs to know of the transaction to reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReversalCandidate {
    pub kind: TransferKind,
    pub status: TransactionStatus,
    /// The REVERSAL that already undid it, if any.
    pub reversed_by: Option<TransactionId>,
}

impl ReversalCandidate {
    /// Whether the transaction may be reversed now.
    pub fn may_be_reversed(&self) -> Result<(), NotReversible> {
        if self.status != TransactionStatus::Completed {
            return Err(NotReversible::NotCompleted);
        }
        if self.kind == TransferKind::Reversal {
            return Err(NotReversible::IsAReversal);
        }
        if matches!(self.kind, TransferKind::Hold | TransferKind::VoidHold) {
            return Err(NotReversible::MovedNoMoney);
        }
        if self.reversed_by.is_some() {
            return Err(NotReversible::AlreadyReversed);
        }
        Ok(())
    }
}

impl TransferRequest {
    /// The reversal of `original` (recorded as `id`): each of its movements moved back, a
    /// journal's legs in the opposite order, so that a leg that spent an earlier leg's credit
    /// is undone before that credit is.
    pub fn reversal_of(id: TransactionId, original: &TransferRequest, reason: Option<Description>) -> Self {
        let mut reversal = Self::reversal(id, original.from, original.to, original.amount, original.currency, reason);
        if !original.legs.is_empty() {
            reversal.legs = original.legs.iter().rev().map(|leg| leg.mirrored()).collect();
            let first = reversal.legs[0];
            (reversal.from, reversal.to, reversal.amount, reversal.currency) =
                (first.from, first.to, first.amount, first.currency);
        }
        reversal
    }

    /// Whether this request is exactly the reversal of `original`: the same amounts in the
    /// same currencies, between the same accounts the other way (a journal's legs in the
    /// opposite order). A queue message may claim to reverse anything; only the exact mirror
    /// is honoured.
    pub fn mirrors(&self, original: &TransferRequest) -> bool {
        let expected: Vec<Leg> = original.movements().into_iter().rev().map(Leg::mirrored).collect();
        self.kind == TransferKind::Reversal && self.movements() == expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountId, Amount, Currency};

    fn completed(kind: TransferKind) -> ReversalCandidate {
        ReversalCandidate { kind, status: TransactionStatus::Completed, reversed_by: None }
    }

    #[test]
    fn only_a_completed_unreversed_non_reversal_may_be_reversed() {
        assert_eq!(completed(TransferKind::Transfer).may_be_reversed(), Ok(()));
        assert_eq!(completed(TransferKind::InitialFunds).may_be_reversed(), Ok(()));
        assert_eq!(completed(TransferKind::Reversal).may_be_reversed(), Err(NotReversible::IsAReversal));
        for status in [TransactionStatus::Pending, TransactionStatus::Failed] {
            let candidate = ReversalCandidate { status, ..completed(TransferKind::Transfer) };
            assert_eq!(candidate.may_be_reversed(), Err(NotReversible::NotCompleted), "{status}");
        }
        let reversed =
            ReversalCandidate { reversed_by: Some(TransactionId::generate()), ..completed(TransferKind::Transfer) };
        assert_eq!(reversed.may_be_reversed(), Err(NotReversible::AlreadyReversed));
    }

    #[test]
    fn only_the_exact_mirror_reverses_a_transfer() {
        let (a, b) = (AccountId::generate(), AccountId::generate());
        let amount = Amount::new(250).expect("amount");
        let original =
            TransferRequest::new(TransferKind::Transfer, a, b, amount, Currency::USD, None).expect("valid request");
        let id = TransactionId::generate();
        let reversal = TransferRequest::reversal(id, a, b, amount, Currency::USD, None);
        assert!(reversal.mirrors(&original));
        assert!(!TransferRequest::reversal(id, b, a, amount, Currency::USD, None).mirrors(&original));
        let less = Amount::new(249).expect("amount");
        assert!(!TransferRequest::reversal(id, a, b, less, Currency::USD, None).mirrors(&original));
        let euros = "EUR".parse().expect("EUR");
        assert!(!TransferRequest::reversal(id, a, b, amount, euros, None).mirrors(&original));
        // A transfer the other way is not a reversal, however much it looks like one.
        let back =
            TransferRequest::new(TransferKind::Transfer, b, a, amount, Currency::USD, None).expect("valid request");
        assert!(!back.mirrors(&original));
    }

    #[test]
    fn a_journal_is_reversed_leg_by_leg_in_the_opposite_order() {
        let [a, b, c] = [AccountId::generate(), AccountId::generate(), AccountId::generate()];
        let leg =
            |from, to, amount| Leg::new(from, to, Amount::new(amount).expect("amount"), Currency::USD).expect("leg");
        let original = TransferRequest::journal(vec![leg(a, b, 100), leg(b, c, 60)], None).expect("journal");
        let id = TransactionId::generate();
        let reversal = TransferRequest::reversal_of(id, &original, None);
        assert_eq!(reversal.legs, vec![leg(c, b, 60), leg(b, a, 100)]);
        assert_eq!((reversal.from, reversal.to, reversal.amount.minor()), (c, b, 60));
        assert!(reversal.mirrors(&original));
        // The same legs in the journal's own order would spend b's credit before it is back.
        let mut unordered = reversal.clone();
        unordered.legs.reverse();
        assert!(!unordered.mirrors(&original));
        // A plain reversal of the first leg alone is not the journal's reversal.
        assert!(
            !TransferRequest::reversal(id, a, b, Amount::new(100).expect("100"), Currency::USD, None)
                .mirrors(&original)
        );
    }
}
