//! The decision of a commit: given what a batch's transaction read, what happens to each
//! command and what must be written. Pure, so that every rule of the commit is unit-tested
//! here without a database; `execute` only loads the inputs and writes the [`Plan`].
//!
//! Commands are decided in the order given, each against the state the ones before it left:
//! two debits of one account in a batch see each other's effect, a reversal sees whether an
//! earlier command of the batch already reversed its original, and a repeated upstream
//! command finds the record its first copy created.

mod holds;
mod postings;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ledgerflow_domain::{
    AccountId, AccountSnapshot, Amount, Balance, EntryFields, EntryId, EntryType, EventType, FailureReason,
    GENESIS_HASH, Leg, NotReversible, Reserved, TransactionId, TransactionStatus, TransferCommand, TransferKind,
    TransferRequest, limits, post_transfer, reserve,
};

use crate::events::{EventAccount, EventDraft};
use crate::execute::{Execution, Outcome};
use crate::{AccountRecord, EntryRecord, StoreError, TransactionRecord};

/// An account as read: its document and its latest entry's balance and hash.
#[derive(Debug, Clone)]
pub(crate) struct AccountHead {
    pub account: AccountRecord,
    pub balance: Balance,
    /// The latest entry's hash, which the next entry chains to.
    pub hash: String,
    /// The latest entry's `createdAt`: no later entry is stamped earlier, whatever the clock
    /// of the worker that writes it, so that "the last entry at or before an instant" is one
    /// entry, found by one indexed lookup.
    pub last_at: Option<DateTime<Utc>>,
}

impl AccountHead {
    /// An account with no entries yet.
    pub fn empty(account: AccountRecord) -> Self {
        Self { account, balance: Balance::ZERO, hash: GENESIS_HASH.to_owned(), last_at: None }
    }
}

/// Everything a batch's decisions depend on, read in the transaction's snapshot. A record or
/// account that does not parse is kept as its error, which fails only the commands that
/// touch it.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub transactions: HashMap<TransactionId, Result<TransactionRecord, StoreError>>,
    /// Records by idempotency scope and key, for upstream commands that carry no id.
    pub by_key: HashMap<(String, String), TransactionId>,
    pub accounts: HashMap<AccountId, Result<AccountHead, StoreError>>,
}

impl Loaded {
    /// A record read under `id` and its idempotency scope and key.
    pub fn add_transaction(
        &mut self,
        id: TransactionId,
        key: (String, String),
        record: Result<TransactionRecord, StoreError>,
    ) {
        self.by_key.insert(key, id);
        self.transactions.insert(id, record);
    }
}

/// A guarded change of an account's `seq` (to its last new entry's) and reserved amounts
/// (by holds), from the values read: two batches that read the same values cannot both commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccountWrite {
    pub account: AccountId,
    pub read: (i64, Reserved),
    pub written: (i64, Reserved),
}

/// A hold settled by a batch: POSTED or VOIDED by one of its commands, or EXPIRED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settled {
    pub hold: TransactionId,
    pub status: TransactionStatus,
    pub posted_amount: Option<Amount>,
    pub resolved_by: Option<TransactionId>,
    pub resolved_at: DateTime<Utc>,
}

/// What a batch writes, in the order `execute` writes it.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Funding accounts used for the first time, inserted with their final `seq`.
    pub new_accounts: Vec<AccountRecord>,
    pub account_writes: Vec<AccountWrite>,
    pub entries: Vec<EntryRecord>,
    /// Records that were PENDING before the batch, now terminal (a guarded status update).
    pub decided: Vec<TransactionRecord>,
    /// Records first seen in this batch (upstream commands), inserted already terminal.
    pub created: Vec<TransactionRecord>,
    /// Originals recorded before this batch that a reversal in it undid: (original, by).
    pub reversed: Vec<(TransactionId, TransactionId)>,
    /// Holds recorded before this batch that it settled (a guarded update from HELD).
    pub settled: Vec<Settled>,
    /// The events of every change above, in the order the changes were decided: written to
    /// the outbox in the same transaction.
    pub events: Vec<EventDraft>,
}

impl Plan {
    /// Whether the batch changes nothing (every command was a repeat or a mismatch).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.decided.is_empty() && self.created.is_empty() && self.settled.is_empty()
    }
}

/// Decides every command in order against `loaded` and returns one outcome per command and
/// what to write. `now` stamps entries and decisions (kept to the millisecond, as stored).
pub(crate) fn decide(loaded: Loaded, cmds: &[TransferCommand], now: DateTime<Utc>) -> (Vec<Outcome>, Plan) {
    let mut batch = Batch::new(loaded, now);
    let outcomes = cmds.iter().map(|cmd| batch.decide(cmd)).collect();
    (outcomes, batch.finish())
}

/// Expires the hold `id` if at `now` it is HELD and past `expiresAt`: its reservation is
/// released from both accounts, as a settlement releases it, and it becomes EXPIRED with no
/// `resolvedBy`. Returns the hold as expired, or `None` (and a plan that writes nothing) when
/// there is nothing to expire: settled meanwhile, not yet due, or not a hold.
pub(crate) fn expire(
    loaded: Loaded,
    id: TransactionId,
    now: DateTime<Utc>,
) -> (Result<Option<TransactionRecord>, StoreError>, Plan) {
    let mut batch = Batch::new(loaded, now);
    let expired = batch.expire(id);
    (expired, batch.finish())
}

/// An account as the batch sees it: as loaded, then advanced by each posting decided so far.
struct AccountState {
    head: AccountHead,
    /// The `seq` and reserved amounts read from the database: the guard on the final write.
    loaded_seq: i64,
    loaded_reserved: Reserved,
    /// Made by this batch (a funding account's first use): inserted, not bumped.
    new: bool,
}

impl AccountState {
    /// The account as an event of the change just decided shows it.
    fn event_account(&self) -> EventAccount {
        let account = &self.head.account;
        EventAccount {
            account_id: account.id.to_string(),
            seq: account.seq,
            balance: self.head.balance.minor(),
            available: limits::available(self.head.balance, account.reserved, account.limits),
        }
    }

    fn snapshot(&self) -> AccountSnapshot {
        let account = &self.head.account;
        AccountSnapshot {
            id: account.id,
            status: account.status,
            currency: account.currency,
            balance: self.head.balance,
            reserved: account.reserved,
            limits: account.limits,
        }
    }

    /// Appends an entry of `movement` (leg `leg` of a journal, or `None`) to this account's
    /// chain and returns it.
    fn post(
        &mut self,
        transaction: TransactionId,
        movement: (Option<u16>, &Leg),
        entry_type: EntryType,
        balance_after: Balance,
        now: DateTime<Utc>,
    ) -> EntryRecord {
        let (leg, movement) = movement;
        let now = self.head.last_at.map_or(now, |last| last.max(now));
        self.head.last_at = Some(now);
        let fields = EntryFields {
            id: EntryId::generate(),
            account_id: self.head.account.id,
            transaction_id: transaction,
            entry_type,
            amount: movement.amount,
            currency: movement.currency,
            seq: self.head.account.seq + 1,
            balance_after,
            created_at_ms: now.timestamp_millis(),
            prev_hash: &self.head.hash,
            leg,
        };
        let hash = fields.hash();
        let entry = EntryRecord {
            id: fields.id,
            account_id: fields.account_id,
            transaction_id: transaction,
            entry_type,
            amount: movement.amount,
            currency: movement.currency,
            seq: fields.seq,
            balance_after,
            created_at: now,
            prev_hash: std::mem::replace(&mut self.head.hash, hash.clone()),
            hash,
            leg,
        };
        self.head.account.seq = entry.seq;
        self.head.balance = balance_after;
        entry
    }
}

/// The in-memory state of one batch: what was read, and what has been decided so far.
struct Batch {
    transactions: HashMap<TransactionId, Result<TransactionRecord, StoreError>>,
    by_key: HashMap<(String, String), TransactionId>,
    accounts: HashMap<AccountId, Result<AccountState, StoreError>>,
    /// Records created by this batch, in creation order.
    created: Vec<TransactionId>,
    now: DateTime<Utc>,
    plan: Plan,
}

impl Batch {
    fn new(loaded: Loaded, now: DateTime<Utc>) -> Self {
        let accounts = loaded
            .accounts
            .into_iter()
            .map(|(id, head)| {
                let state = |head: AccountHead| AccountState {
                    loaded_seq: head.account.seq,
                    loaded_reserved: head.account.reserved,
                    head,
                    new: false,
                };
                (id, head.map(state))
            })
            .collect();
        Self {
            transactions: loaded.transactions,
            by_key: loaded.by_key,
            accounts,
            created: Vec::new(),
            now: chrono::SubsecRound::trunc_subsecs(now, 3),
            plan: Plan::default(),
        }
    }

    fn record(&self, id: TransactionId) -> Option<Result<TransactionRecord, StoreError>> {
        self.transactions.get(&id).cloned()
    }

    /// Decides one command against the batch's current state and records what to write.
    fn decide(&mut self, cmd: &TransferCommand) -> Outcome {
        let existing = match cmd.transaction_id {
            Some(id) => match self.record(id) {
                Some(record) => Some(record?),
                None => return Ok(Execution::UnknownTransaction(id)),
            },
            None => {
                let key = (cmd.initiator.to_string(), cmd.idempotency_key.as_str().to_owned());
                self.by_key.get(&key).copied().and_then(|id| self.record(id)).transpose()?
            }
        };
        let mut record = match existing {
            Some(record) => {
                let same = record.request_hash == cmd.request.fingerprint()
                    && record.initiator == cmd.initiator
                    && record.idempotency_key == cmd.idempotency_key;
                if !same {
                    return Ok(Execution::Mismatch { existing: record.id });
                }
                if record.status.is_decided() {
                    let hold = self.settled_hold(&record);
                    return Ok(Execution::AlreadyTerminal { record, hold });
                }
                record
            }
            None => self.create(cmd),
        };

        let request = &cmd.request;
        self.open_funding_accounts(request);
        let from = self.snapshot(request.from)?;
        let to = self.snapshot(request.to)?;
        let now = self.now;
        let mut failed_leg = None;
        let decided = match request.kind {
            TransferKind::Hold => reserve(request, from.as_ref(), to.as_ref()).map(|()| {
                self.reservation(request, 1);
                TransactionStatus::Held
            }),
            TransferKind::PostHold | TransferKind::VoidHold => self.settle(cmd, &record, from.as_ref(), to.as_ref())?,
            TransferKind::Transfer | TransferKind::InitialFunds | TransferKind::Reversal if request.legs.is_empty() => {
                match self.reversal_refusal(request)? {
                    Some(reason) => Err(reason),
                    None => post_transfer(request, from.as_ref(), to.as_ref()),
                }
                .map(|posting| {
                    self.post(&record, posting);
                    if let Some(original) = request.reverses {
                        self.mark_reversed(original, record.id);
                    }
                    TransactionStatus::Completed
                })
            }
            TransferKind::Transfer | TransferKind::InitialFunds | TransferKind::Reversal | TransferKind::Journal => {
                match self.reversal_refusal(request)? {
                    Some(reason) => Err(reason),
                    None => self.post_legs(&record, request)?.map_err(|(leg, reason)| {
                        failed_leg = Some(leg);
                        reason
                    }),
                }
                .map(|()| {
                    if let Some(original) = request.reverses {
                        self.mark_reversed(original, record.id);
                    }
                    TransactionStatus::Completed
                })
            }
        };
        let (status, reason) = match decided {
            Ok(status) => (status, None),
            Err(reason) => (TransactionStatus::Failed, Some(reason)),
        };
        record.status = status;
        record.failure_reason = reason;
        record.failed_leg = failed_leg;
        record.completed_at = Some(now);
        self.record_decision(&record);
        let hold = self.settled_hold(&record);
        self.decision_events(&record, hold.as_ref());
        Ok(Execution::Decided { record, hold })
    }

    /// The events of a decision: the transaction's, then, when it completed, the original it
    /// reversed or the hold it settled, each with its accounts as the decision left them.
    fn decision_events(&mut self, record: &TransactionRecord, hold: Option<&TransactionRecord>) {
        self.event(EventType::entering(record.status), record);
        if record.status != TransactionStatus::Completed {
            return;
        }
        if let Some(Ok(original)) = record.reverses.and_then(|id| self.record(id)) {
            self.event(EventType::Reversed, &original);
        }
        if let Some(hold) = hold {
            self.event(EventType::entering(hold.status), hold);
        }
    }

    fn event(&mut self, event_type: EventType, record: &TransactionRecord) {
        let accounts = record
            .request()
            .accounts()
            .iter()
            .filter_map(|id| match self.accounts.get(id) {
                Some(Ok(state)) => Some(state.event_account()),
                _ => None,
            })
            .collect();
        let draft = EventDraft { event_type, record: record.clone(), accounts, at: self.now };
        self.plan.events.push(draft);
    }

    /// A record for an upstream command seen for the first time: it is written with its
    /// decision, and a copy later in the batch finds it by key.
    fn create(&mut self, cmd: &TransferCommand) -> TransactionRecord {
        let record = TransactionRecord::pending(TransactionId::generate(), cmd, self.now);
        self.plan.events.push(EventDraft::entering(&record, self.now));
        self.by_key.insert((record.initiator.to_string(), record.idempotency_key.as_str().to_owned()), record.id);
        self.transactions.insert(record.id, Ok(record.clone()));
        self.created.push(record.id);
        record
    }

    fn snapshot(&self, id: AccountId) -> Result<Option<AccountSnapshot>, StoreError> {
        match self.accounts.get(&id) {
            None => Ok(None),
            Some(Ok(state)) => Ok(Some(state.snapshot())),
            Some(Err(e)) => Err(e.clone()),
        }
    }

    /// For a REVERSAL: why it may not happen, if it may not. The original must exist, be
    /// reversible ([`ledgerflow_domain::ReversalCandidate`]) and be mirrored exactly.
    fn reversal_refusal(&self, request: &TransferRequest) -> Result<Option<FailureReason>, StoreError> {
        let Some(original_id) = request.reverses else { return Ok(None) };
        let Some(original) = self.record(original_id).transpose()? else {
            return Ok(Some(FailureReason::InvalidCommand));
        };
        Ok(match original.reversal_candidate().may_be_reversed() {
            Err(NotReversible::AlreadyReversed) => Some(FailureReason::AlreadyReversed),
            Err(_) => Some(FailureReason::InvalidCommand),
            Ok(()) if !request.mirrors(&original.request()) => Some(FailureReason::InvalidCommand),
            Ok(()) => None,
        })
    }

    /// Records on the original that it was reversed, in the reversal's transaction: two
    /// concurrent reversals conflict on this write and only one can complete.
    fn mark_reversed(&mut self, original: TransactionId, by: TransactionId) {
        if let Some(Ok(record)) = self.transactions.get_mut(&original) {
            record.reversed_by = Some(by);
        }
        if !self.created.contains(&original) {
            self.plan.reversed.push((original, by));
        }
    }

    fn record_decision(&mut self, record: &TransactionRecord) {
        if !self.created.contains(&record.id) {
            self.plan.decided.push(record.clone());
        }
        self.transactions.insert(record.id, Ok(record.clone()));
    }

    /// The plan, once every command is decided: created records as they finally stand, and
    /// each account's move from the `seq` it was read at.
    fn finish(mut self) -> Plan {
        for id in &self.created {
            if let Some(Ok(record)) = self.transactions.get(id) {
                self.plan.created.push(record.clone());
            }
        }
        let mut states: Vec<&AccountState> = self.accounts.values().filter_map(|s| s.as_ref().ok()).collect();
        // A stable order, so that concurrent batches write shared accounts in the same order.
        states.sort_by_key(|state| state.head.account.id);
        for state in states {
            if state.new {
                // Only once money moved through it: a failed first INITIAL_FUNDS (say, into an
                // unknown account) leaves no funding account behind.
                if state.head.account.seq > 0 {
                    self.plan.new_accounts.push(state.head.account.clone());
                }
            } else if state.head.account.seq != state.loaded_seq || state.head.account.reserved != state.loaded_reserved
            {
                self.plan.account_writes.push(AccountWrite {
                    account: state.head.account.id,
                    read: (state.loaded_seq, state.loaded_reserved),
                    written: (state.head.account.seq, state.head.account.reserved),
                });
            }
        }
        self.plan
    }
}

#[cfg(test)]
mod tests;
