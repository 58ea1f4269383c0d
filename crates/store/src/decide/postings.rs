//! Postings within a batch: the entries an allowed posting writes, a journal's legs applied
//! all or none, and the funding accounts the first draw on them opens.

use ledgerflow_domain::{
    AccountId, AccountLimits, EntryType, FailureReason, Leg, Posting, Reserved, TransactionId, TransferKind,
    TransferRequest, post_leg,
};

use super::{AccountHead, AccountState, Batch};
use crate::{AccountRecord, StoreError, TransactionRecord};

impl Batch {
    /// A currency's funding account comes into being on the first INITIAL_FUNDS (or journal
    /// leg) that draws on it.
    pub(super) fn open_funding_accounts(&mut self, request: &TransferRequest) {
        if !matches!(request.kind, TransferKind::InitialFunds | TransferKind::Journal) {
            return;
        }
        for leg in request.movements() {
            let funding = AccountId::funding(leg.currency);
            if leg.from != funding || self.accounts.contains_key(&funding) {
                continue;
            }
            let account = AccountRecord {
                id: funding,
                owner_id: None,
                status: ledgerflow_domain::AccountStatus::Active,
                currency: leg.currency,
                seq: 0,
                created_at: self.now,
                reserved: Reserved::default(),
                limits: AccountLimits::NONE,
                peak_overdraft: 0,
                metadata: Default::default(),
            };
            let head = AccountHead::empty(account);
            let state = AccountState { loaded_seq: 0, loaded_reserved: Reserved::default(), head, new: true };
            self.accounts.insert(funding, Ok(state));
        }
    }

    /// Applies an allowed posting: an entry on each side, each account's state advanced.
    pub(super) fn post(&mut self, record: &TransactionRecord, posting: Posting) {
        let movement =
            Leg { from: record.from_account, to: record.to_account, amount: record.amount, currency: record.currency };
        self.post_movement(record.id, (None, &movement), posting);
    }

    pub(super) fn post_movement(
        &mut self,
        transaction: TransactionId,
        movement: (Option<u16>, &Leg),
        posting: Posting,
    ) {
        let (leg, m) = movement;
        let sides = [
            (m.from, EntryType::Debit, posting.debit_balance_after),
            (m.to, EntryType::Credit, posting.credit_balance_after),
        ];
        for (id, entry_type, balance_after) in sides {
            if let Some(Ok(state)) = self.accounts.get_mut(&id) {
                self.plan.entries.push(state.post(transaction, (leg, m), entry_type, balance_after, self.now));
            }
        }
    }

    /// Applies a journal's legs (or its reversal's) in order, each against the accounts as
    /// the legs before it left them, all or none: at the first leg that may not happen, every
    /// earlier leg's effect on the batch is undone, and that leg's index and reason returned.
    pub(super) fn post_legs(
        &mut self,
        record: &TransactionRecord,
        request: &TransferRequest,
    ) -> Result<Result<(), (u16, FailureReason)>, StoreError> {
        let touched = request.accounts();
        // An account that did not parse fails the command before any leg is applied.
        for id in &touched {
            self.snapshot(*id)?;
        }
        let saved: Vec<(AccountId, AccountHead)> = touched
            .iter()
            .filter_map(|id| match self.accounts.get(id) {
                Some(Ok(state)) => Some((*id, state.head.clone())),
                _ => None,
            })
            .collect();
        let entries_before = self.plan.entries.len();
        for (index, leg) in request.legs.iter().enumerate() {
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            let from = self.snapshot(leg.from)?;
            let to = self.snapshot(leg.to)?;
            match post_leg(request.kind, leg, from.as_ref(), to.as_ref()) {
                Ok(posting) => self.post_movement(record.id, (Some(index), leg), posting),
                Err(reason) => {
                    self.plan.entries.truncate(entries_before);
                    for (id, head) in saved {
                        if let Some(Ok(state)) = self.accounts.get_mut(&id) {
                            state.head = head;
                        }
                    }
                    return Ok(Err((index, reason)));
                }
            }
        }
        Ok(Ok(()))
    }
}
