//! The rule for settling a hold: which POST_HOLD or VOID_HOLD may act on which hold, and when.
//! Pure; the worker loads the hold in the same database transaction that settles it.

use chrono::{DateTime, Utc};

use crate::{FailureReason, Initiator, TransactionStatus, TransferKind, TransferRequest};

/// What the settling rule needs to know of a hold, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFacts {
    /// The hold's own request (kind HOLD).
    pub request: TransferRequest,
    pub status: TransactionStatus,
    pub initiator: Initiator,
    pub expires_at: DateTime<Utc>,
}

/// Whether `request` (a POST_HOLD or VOID_HOLD by `initiator`) may settle the hold at `now`.
///
/// It must name the hold's accounts and currency (as the gateway fills them in); a service
/// may only settle its own holds (another's is as good as unknown to it); the hold must be
/// HELD and not past `expiresAt` (even if nobody wrote the expiry yet); a post may take at
/// most the held amount, and a void names exactly it.
pub fn may_settle(
    hold: &HeldFacts,
    request: &TransferRequest,
    initiator: &Initiator,
    now: DateTime<Utc>,
) -> Result<(), FailureReason> {
    let held = &hold.request;
    if held.kind != TransferKind::Hold || (matches!(initiator, Initiator::Service(_)) && *initiator != hold.initiator) {
        return Err(FailureReason::HoldNotFound);
    }
    if (request.from, request.to, request.currency) != (held.from, held.to, held.currency) {
        return Err(FailureReason::InvalidCommand);
    }
    if hold.status != TransactionStatus::Held {
        return Err(FailureReason::HoldNotHeld);
    }
    if now >= hold.expires_at {
        return Err(FailureReason::HoldExpired);
    }
    match request.kind {
        TransferKind::PostHold if request.amount > held.amount => Err(FailureReason::AmountExceedsHold),
        TransferKind::VoidHold if request.amount != held.amount => Err(FailureReason::InvalidCommand),
        TransferKind::PostHold | TransferKind::VoidHold => Ok(()),
        _ => Err(FailureReason::InvalidCommand),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountId, Amount, Currency, HoldTimeout, TransactionId};

    fn hold_request(amount: i64) -> TransferRequest {
        let (from, to) = (AccountId::generate(), AccountId::generate());
        let timeout = HoldTimeout::new(60).expect("timeout");
        TransferRequest::hold(from, to, Amount::new(amount).expect("amount"), Currency::USD, None, timeout)
            .expect("hold")
    }

    fn settle(kind: TransferKind, held: &TransferRequest, amount: i64) -> TransferRequest {
        let amount = Amount::new(amount).expect("amount");
        TransferRequest::settle(kind, TransactionId::generate(), held.from, held.to, amount, held.currency)
            .expect("settle")
    }

    #[test]
    fn a_held_hold_is_posted_up_to_its_amount_until_it_expires() {
        let held = hold_request(100);
        let owner: Initiator = "service:cards".parse().expect("initiator");
        let now = Utc::now();
        let facts = HeldFacts {
            request: held.clone(),
            status: TransactionStatus::Held,
            initiator: owner.clone(),
            expires_at: now + chrono::Duration::seconds(5),
        };
        let post = |amount| may_settle(&facts, &settle(TransferKind::PostHold, &held, amount), &owner, now);
        assert_eq!(post(100), Ok(()));
        assert_eq!(post(40), Ok(()));
        assert_eq!(post(101), Err(FailureReason::AmountExceedsHold));
        let void = settle(TransferKind::VoidHold, &held, 100);
        assert_eq!(may_settle(&facts, &void, &owner, now), Ok(()));
        assert_eq!(
            may_settle(&facts, &void, &owner, facts.expires_at),
            Err(FailureReason::HoldExpired),
            "at expiresAt it is too late, written or not"
        );
        let other: Initiator = "service:payroll".parse().expect("initiator");
        assert_eq!(may_settle(&facts, &void, &other, now), Err(FailureReason::HoldNotFound));
        for status in [TransactionStatus::Posted, TransactionStatus::Voided, TransactionStatus::Expired] {
            let settled = HeldFacts { status, ..facts.clone() };
            assert_eq!(may_settle(&settled, &void, &owner, now), Err(FailureReason::HoldNotHeld));
        }
        let elsewhere = TransferRequest { to: AccountId::generate(), ..void.clone() };
        assert_eq!(may_settle(&facts, &elsewhere, &owner, now), Err(FailureReason::InvalidCommand));
    }
}
