//! Holds within a batch: settling one (a POST_HOLD or VOID_HOLD), expiring one, and the
//! reservations they take and release on the hold's accounts.

use ledgerflow_domain::holds::may_settle;
use ledgerflow_domain::{
    AccountSnapshot, EventType, FailureReason, TransactionId, TransactionStatus, TransferCommand, TransferKind,
    TransferRequest, post_held,
};

use super::{Batch, Settled};
use crate::{StoreError, TransactionRecord};

impl Batch {
    /// For a COMPLETED POST_HOLD or VOID_HOLD, the hold it settled as the batch now sees it.
    pub(super) fn settled_hold(&self, record: &TransactionRecord) -> Option<TransactionRecord> {
        let hold = record.hold.filter(|_| record.status == TransactionStatus::Completed)?;
        self.record(hold)?.ok()
    }

    /// A POST_HOLD or VOID_HOLD: judged against its hold ([`ledgerflow_domain::holds`]);
    /// if allowed, the whole reservation is released, a post moves its amount, and the hold
    /// is settled by `record`.
    pub(super) fn settle(
        &mut self,
        cmd: &TransferCommand,
        record: &TransactionRecord,
        from: Option<&AccountSnapshot>,
        to: Option<&AccountSnapshot>,
    ) -> Result<Result<TransactionStatus, FailureReason>, StoreError> {
        let request = &cmd.request;
        let Some(hold_id) = request.hold else { return Ok(Err(FailureReason::InvalidCommand)) };
        let Some(hold) = self.record(hold_id).transpose()? else { return Ok(Err(FailureReason::HoldNotFound)) };
        let Some(facts) = hold.held_facts() else { return Ok(Err(FailureReason::HoldNotFound)) };
        if let Err(reason) = may_settle(&facts, request, &cmd.initiator, self.now) {
            return Ok(Err(reason));
        }
        let (settled_as, posted_amount) = if request.kind == TransferKind::PostHold {
            match post_held(request, from, to) {
                Ok(posting) => {
                    self.post(record, posting);
                    (TransactionStatus::Posted, Some(request.amount))
                }
                Err(reason) => return Ok(Err(reason)),
            }
        } else {
            (TransactionStatus::Voided, None)
        };
        self.reservation(&facts.request, -1);
        self.mark_settled(Settled {
            hold: hold_id,
            status: settled_as,
            posted_amount,
            resolved_by: Some(record.id),
            resolved_at: self.now,
        });
        Ok(Ok(TransactionStatus::Completed))
    }

    /// The expiry of hold `id` (see [`super::expire`]). Both accounts must have been read: a
    /// reservation is released exactly or not at all.
    pub(super) fn expire(&mut self, id: TransactionId) -> Result<Option<TransactionRecord>, StoreError> {
        let Some(hold) = self.record(id).transpose()? else { return Ok(None) };
        let Some(facts) = hold.held_facts() else { return Ok(None) };
        if facts.status != TransactionStatus::Held || self.now < facts.expires_at {
            return Ok(None);
        }
        for account in [facts.request.from, facts.request.to] {
            if self.snapshot(account)?.is_none() {
                let reason = format!("hold {id} reserves on it, but it does not exist");
                return Err(StoreError::Corrupt { collection: "accounts", id: account.to_string(), reason });
            }
        }
        self.reservation(&facts.request, -1);
        let settled = Settled {
            hold: id,
            status: TransactionStatus::Expired,
            posted_amount: None,
            resolved_by: None,
            resolved_at: self.now,
        };
        self.mark_settled(settled);
        let expired = self.record(id).and_then(Result::ok);
        if let Some(hold) = &expired {
            self.event(EventType::Expired, hold);
        }
        Ok(expired)
    }

    /// Adds (`sign` 1) or releases (`sign` -1) a hold's reservation on both its accounts.
    pub(super) fn reservation(&mut self, hold: &TransferRequest, sign: i64) {
        let amount = sign * hold.amount.minor();
        if let Some(Ok(state)) = self.accounts.get_mut(&hold.from) {
            state.head.account.reserved.debits += amount;
        }
        if let Some(Ok(state)) = self.accounts.get_mut(&hold.to) {
            state.head.account.reserved.credits += amount;
        }
    }

    /// Records a hold's settlement on it, in this transaction: two settlements of one hold
    /// conflict on this write and only one can commit.
    pub(super) fn mark_settled(&mut self, settled: Settled) {
        if let Some(Ok(hold)) = self.transactions.get_mut(&settled.hold) {
            hold.status = settled.status;
            hold.posted_amount = settled.posted_amount;
            hold.resolved_by = settled.resolved_by;
            hold.resolved_at = Some(settled.resolved_at);
        }
        if !self.created.contains(&settled.hold) {
            self.plan.settled.push(settled);
        }
    }
}
