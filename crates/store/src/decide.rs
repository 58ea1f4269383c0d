//! The decision of a commit: given what a batch's transaction read, what happens to each
//! command and what must be written. Pure, so that every rule of the commit is unit-tested
//! here without a database; `execute` only loads the inputs and writes the [`Plan`].
//!
//! Commands are decided in the order given, each against the state the ones before it left:
//! two debits of one account in a batch see each other's effect, a reversal sees whether an
//! earlier command of the batch already reversed its original, and a repeated upstream
//! command finds the record its first copy created.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ledgerflow_domain::holds::may_settle;
use ledgerflow_domain::{
    AccountId, AccountLimits, AccountSnapshot, Amount, Balance, EntryFields, EntryId, EntryType, FailureReason,
    GENESIS_HASH, NotReversible, Posting, Reserved, TransactionId, TransactionStatus, TransferCommand, TransferKind,
    TransferRequest, post_transfer,
};
use ledgerflow_domain::{post_held, reserve};

use crate::execute::{Execution, Outcome};
use crate::{AccountRecord, EntryRecord, StoreError, TransactionRecord};

/// An account as read: its document and its latest entry's balance and hash.
#[derive(Debug, Clone)]
pub(crate) struct AccountHead {
    pub account: AccountRecord,
    pub balance: Balance,
    /// The latest entry's hash, which the next entry chains to.
    pub hash: String,
}

impl AccountHead {
    /// An account with no entries yet.
    pub fn empty(account: AccountRecord) -> Self {
        Self { account, balance: Balance::ZERO, hash: GENESIS_HASH.to_owned() }
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

    /// Appends an entry to this account's chain and returns it.
    fn post(
        &mut self,
        record: &TransactionRecord,
        entry_type: EntryType,
        balance_after: Balance,
        now: DateTime<Utc>,
    ) -> EntryRecord {
        let fields = EntryFields {
            id: EntryId::generate(),
            account_id: self.head.account.id,
            transaction_id: record.id,
            entry_type,
            amount: record.amount,
            currency: record.currency,
            seq: self.head.account.seq + 1,
            balance_after,
            created_at_ms: now.timestamp_millis(),
            prev_hash: &self.head.hash,
        };
        let hash = fields.hash();
        let entry = EntryRecord {
            id: fields.id,
            account_id: fields.account_id,
            transaction_id: record.id,
            entry_type,
            amount: record.amount,
            currency: record.currency,
            seq: fields.seq,
            balance_after,
            created_at: now,
            prev_hash: std::mem::replace(&mut self.head.hash, hash.clone()),
            hash,
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
                if record.status.is_terminal() {
                    return Ok(Execution::AlreadyTerminal(record));
                }
                record
            }
            None => self.create(cmd),
        };

        let request = &cmd.request;
        self.open_funding_account(request);
        let from = self.snapshot(request.from)?;
        let to = self.snapshot(request.to)?;
        let now = self.now;
        let decided = match request.kind {
            TransferKind::Hold => reserve(request, from.as_ref(), to.as_ref()).map(|()| {
                self.reservation(request, 1);
                TransactionStatus::Held
            }),
            TransferKind::PostHold | TransferKind::VoidHold => self.settle(cmd, &record, from.as_ref(), to.as_ref())?,
            TransferKind::Transfer | TransferKind::InitialFunds | TransferKind::Reversal => {
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
        };
        let (status, reason) = match decided {
            Ok(status) => (status, None),
            Err(reason) => (TransactionStatus::Failed, Some(reason)),
        };
        record.status = status;
        record.failure_reason = reason;
        record.completed_at = Some(now);
        self.record_decision(&record);
        Ok(Execution::Decided(record))
    }

    /// A record for an upstream command seen for the first time: it is written with its
    /// decision, and a copy later in the batch finds it by key.
    fn create(&mut self, cmd: &TransferCommand) -> TransactionRecord {
        let record = TransactionRecord::pending(TransactionId::generate(), cmd, self.now);
        self.by_key.insert((record.initiator.to_string(), record.idempotency_key.as_str().to_owned()), record.id);
        self.transactions.insert(record.id, Ok(record.clone()));
        self.created.push(record.id);
        record
    }

    /// A currency's funding account comes into being on the first INITIAL_FUNDS that draws
    /// on it.
    fn open_funding_account(&mut self, request: &TransferRequest) {
        let funding = AccountId::funding(request.currency);
        if request.kind != TransferKind::InitialFunds || request.from != funding || self.accounts.contains_key(&funding)
        {
            return;
        }
        let account = AccountRecord {
            id: funding,
            owner_id: None,
            status: ledgerflow_domain::AccountStatus::Active,
            currency: request.currency,
            seq: 0,
            created_at: self.now,
            reserved: Reserved::default(),
            limits: AccountLimits::NONE,
            peak_overdraft: 0,
        };
        let head = AccountHead::empty(account);
        let state = AccountState { loaded_seq: 0, loaded_reserved: Reserved::default(), head, new: true };
        self.accounts.insert(funding, Ok(state));
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

    /// A POST_HOLD or VOID_HOLD: judged against its hold ([`ledgerflow_domain::holds`]);
    /// if allowed, the whole reservation is released, a post moves its amount, and the hold
    /// is settled by `record`.
    fn settle(
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

    /// Adds (`sign` 1) or releases (`sign` -1) a hold's reservation on both its accounts.
    fn reservation(&mut self, hold: &TransferRequest, sign: i64) {
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
    fn mark_settled(&mut self, settled: Settled) {
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

    /// Applies an allowed posting: an entry on each side, each account's state advanced.
    fn post(&mut self, record: &TransactionRecord, posting: Posting) {
        let sides = [
            (record.from_account, EntryType::Debit, posting.debit_balance_after),
            (record.to_account, EntryType::Credit, posting.credit_balance_after),
        ];
        for (id, entry_type, balance_after) in sides {
            if let Some(Ok(state)) = self.accounts.get_mut(&id) {
                self.plan.entries.push(state.post(record, entry_type, balance_after, self.now));
            }
        }
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
mod tests {
    use ledgerflow_domain::{AccountStatus, Amount, Currency, Initiator, UserId};

    use super::*;

    fn account(balance: i64, seq: i64) -> AccountHead {
        let account = AccountRecord {
            id: AccountId::generate(),
            owner_id: Some(UserId::generate()),
            status: AccountStatus::Active,
            currency: Currency::USD,
            seq,
            created_at: Utc::now(),
            reserved: Reserved::default(),
            limits: AccountLimits::NONE,
            peak_overdraft: 0,
        };
        let hash = if seq == 0 { GENESIS_HASH.to_owned() } else { format!("head-of-{seq}") };
        AccountHead { account, balance: Balance(balance), hash }
    }

    fn command(kind: TransferKind, from: AccountId, to: AccountId, amount: i64, key: &str) -> TransferCommand {
        let amount = Amount::new(amount).expect("amount");
        let request = match kind {
            TransferKind::Reversal => unreachable!("reversals are built with `reversal`"),
            kind => TransferRequest::new(kind, from, to, amount, Currency::USD, None).expect("valid request"),
        };
        upstream(request, key)
    }

    /// An upstream command: no transaction id, found or created by key.
    fn upstream(request: TransferRequest, key: &str) -> TransferCommand {
        TransferCommand {
            transaction_id: None,
            request,
            idempotency_key: key.parse().expect("key"),
            initiator: "service:payroll".parse::<Initiator>().expect("initiator"),
            requested_at: Utc::now(),
        }
    }

    /// A gateway command, whose PENDING record `loaded` holds.
    fn recorded(loaded: &mut Loaded, cmd: TransferCommand) -> TransferCommand {
        let record = TransactionRecord::pending(TransactionId::generate(), &cmd, Utc::now());
        let key = (record.initiator.to_string(), record.idempotency_key.as_str().to_owned());
        let cmd = TransferCommand { transaction_id: Some(record.id), ..cmd };
        loaded.add_transaction(record.id, key, Ok(record));
        cmd
    }

    fn loaded(accounts: &[&AccountHead]) -> Loaded {
        let mut loaded = Loaded::default();
        for head in accounts {
            loaded.accounts.insert(head.account.id, Ok((*head).clone()));
        }
        loaded
    }

    fn decided(outcome: &Outcome) -> &TransactionRecord {
        match outcome {
            Ok(Execution::Decided(record)) => record,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    fn status(outcome: &Outcome) -> (TransactionStatus, Option<FailureReason>) {
        let record = decided(outcome);
        (record.status, record.failure_reason)
    }

    fn hold_command(from: AccountId, to: AccountId, amount: i64, key: &str) -> TransferCommand {
        let timeout = ledgerflow_domain::HoldTimeout::new(60).expect("timeout");
        let amount = Amount::new(amount).expect("amount");
        upstream(TransferRequest::hold(from, to, amount, Currency::USD, None, timeout).expect("hold"), key)
    }

    fn settle_command(kind: TransferKind, hold: &TransactionRecord, amount: i64, key: &str) -> TransferCommand {
        let amount = Amount::new(amount).expect("amount");
        let request = TransferRequest::settle(kind, hold.id, hold.from_account, hold.to_account, amount, hold.currency);
        upstream(request.expect("settlement"), key)
    }

    #[test]
    fn a_hold_reserves_without_an_entry_and_later_debits_see_the_reservation() {
        let (a, b) = (account(100, 1), account(0, 0));
        let hold = hold_command(a.account.id, b.account.id, 60, "auth");
        let spend = command(TransferKind::Transfer, a.account.id, b.account.id, 50, "spend");
        let (outcomes, plan) = decide(loaded(&[&a, &b]), &[hold, spend], Utc::now());
        assert_eq!(status(&outcomes[0]), (TransactionStatus::Held, None));
        assert_eq!(status(&outcomes[1]), (TransactionStatus::Failed, Some(FailureReason::InsufficientFunds)));
        assert!(plan.entries.is_empty());
        let write = |id| plan.account_writes.iter().find(|w| w.account == id).expect("a write").clone();
        assert_eq!(write(a.account.id).written, (1, Reserved { debits: 60, credits: 0 }));
        assert_eq!(write(b.account.id).written, (0, Reserved { debits: 0, credits: 60 }));
    }

    #[test]
    fn a_partial_post_moves_its_amount_and_releases_the_whole_reservation_once() {
        let (mut a, mut b) = (account(100, 1), account(0, 0));
        a.account.reserved.debits = 60;
        b.account.reserved.credits = 60;
        let mut l = loaded(&[&a, &b]);
        let held = {
            let cmd = recorded(&mut l, hold_command(a.account.id, b.account.id, 60, "auth"));
            let id = cmd.transaction_id.expect("an id");
            let Some(Ok(record)) = l.transactions.get_mut(&id) else { panic!("recorded") };
            record.status = TransactionStatus::Held;
            record.clone()
        };
        let post = settle_command(TransferKind::PostHold, &held, 25, "capture");
        let void = settle_command(TransferKind::VoidHold, &held, 60, "void");
        let (outcomes, plan) = decide(l, &[post, void], Utc::now());
        assert_eq!(status(&outcomes[0]), (TransactionStatus::Completed, None));
        assert_eq!(status(&outcomes[1]), (TransactionStatus::Failed, Some(FailureReason::HoldNotHeld)));
        assert_eq!(
            plan.entries.iter().map(|e| (e.entry_type, e.amount.minor())).collect::<Vec<_>>(),
            [(EntryType::Debit, 25), (EntryType::Credit, 25)]
        );
        let none = Reserved::default();
        let write = |id| plan.account_writes.iter().find(|w| w.account == id).expect("a write").clone();
        assert_eq!((write(a.account.id).written, write(b.account.id).written), ((2, none), (1, none)));
        let settled = &plan.settled[..];
        assert_eq!(settled.len(), 1);
        assert_eq!(
            (settled[0].hold, settled[0].status, settled[0].posted_amount),
            (held.id, TransactionStatus::Posted, Some(Amount::new(25).expect("25")))
        );
    }

    #[test]
    fn a_settlement_at_or_after_expires_at_fails_even_if_the_hold_still_reads_held() {
        let (a, b) = (account(100, 1), account(0, 0));
        let mut l = loaded(&[&a, &b]);
        let cmd = recorded(&mut l, hold_command(a.account.id, b.account.id, 60, "auth"));
        let id = cmd.transaction_id.expect("an id");
        let Some(Ok(record)) = l.transactions.get_mut(&id) else { panic!("recorded") };
        record.status = TransactionStatus::Held;
        let held = record.clone();
        let at = held.expires_at.expect("a hold expires");
        let (outcomes, plan) = decide(l, &[settle_command(TransferKind::VoidHold, &held, 60, "void")], at);
        assert_eq!(status(&outcomes[0]), (TransactionStatus::Failed, Some(FailureReason::HoldExpired)));
        assert!(plan.settled.is_empty() && plan.account_writes.is_empty());
    }

    #[test]
    fn debits_of_one_account_in_a_batch_see_each_other() {
        let (a, b) = (account(150, 3), account(0, 0));
        let mut l = loaded(&[&a, &b]);
        let first = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 100, "k1"));
        let second = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 100, "k2"));
        let third = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 50, "k3"));
        let (outcomes, plan) = decide(l, &[first, second, third], Utc::now());
        assert_eq!(status(&outcomes[0]), (TransactionStatus::Completed, None));
        assert_eq!(status(&outcomes[1]), (TransactionStatus::Failed, Some(FailureReason::InsufficientFunds)));
        assert_eq!(status(&outcomes[2]), (TransactionStatus::Completed, None));
        // Two postings, four entries, numbered on from each account's seq and chained.
        let on = |id| plan.entries.iter().filter(|e| e.account_id == id).collect::<Vec<_>>();
        let debits = on(a.account.id);
        assert_eq!(debits.iter().map(|e| (e.seq, e.balance_after.minor())).collect::<Vec<_>>(), [(4, 50), (5, 0)]);
        assert_eq!(debits[0].prev_hash, "head-of-3");
        assert_eq!(debits[1].prev_hash, debits[0].hash);
        assert_eq!(debits[0].hash, debits[0].chain_fields().hash());
        let credits = on(b.account.id);
        assert_eq!(credits.iter().map(|e| (e.seq, e.balance_after.minor())).collect::<Vec<_>>(), [(1, 100), (2, 150)]);
        assert_eq!(credits[0].prev_hash, GENESIS_HASH);
        // Each account moves once, guarded by the seq it was read at.
        let none = Reserved::default();
        let mut writes = vec![
            AccountWrite { account: a.account.id, read: (3, none), written: (5, none) },
            AccountWrite { account: b.account.id, read: (0, none), written: (2, none) },
        ];
        writes.sort_by_key(|w| w.account);
        assert_eq!(plan.account_writes, writes);
        assert_eq!(plan.decided.len(), 3);
        assert!(plan.created.is_empty() && plan.new_accounts.is_empty() && plan.reversed.is_empty());
    }

    #[test]
    fn a_terminal_record_is_answered_without_writing() {
        let (a, b) = (account(100, 1), account(0, 0));
        let mut l = loaded(&[&a, &b]);
        let cmd = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 10, "k"));
        let id = cmd.transaction_id.expect("an id");
        if let Some(Ok(record)) = l.transactions.get_mut(&id) {
            record.status = TransactionStatus::Completed;
        }
        let (outcomes, plan) = decide(l, &[cmd], Utc::now());
        assert!(matches!(&outcomes[0], Ok(Execution::AlreadyTerminal(r)) if r.id == id));
        assert!(plan.is_empty() && plan.account_writes.is_empty());
    }

    #[test]
    fn a_command_that_contradicts_its_record_is_a_mismatch() {
        let (a, b) = (account(100, 1), account(0, 0));
        let mut l = loaded(&[&a, &b]);
        let cmd = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 10, "k"));
        let tampered = TransferCommand {
            request: TransferRequest { amount: Amount::new(11).expect("amount"), ..cmd.request.clone() },
            ..cmd.clone()
        };
        let unknown = TransferCommand { transaction_id: Some(TransactionId::generate()), ..cmd.clone() };
        let (outcomes, plan) = decide(l, &[tampered, unknown.clone()], Utc::now());
        assert!(matches!(&outcomes[0], Ok(Execution::Mismatch { existing }) if Some(*existing) == cmd.transaction_id));
        assert!(matches!(&outcomes[1], Ok(Execution::UnknownTransaction(id)) if Some(*id) == unknown.transaction_id));
        assert!(plan.is_empty());
    }

    #[test]
    fn an_upstream_command_is_created_once_and_its_copy_finds_it() {
        let (a, b) = (account(100, 1), account(0, 0));
        let cmd = command(TransferKind::Transfer, a.account.id, b.account.id, 10, "pay-1");
        let (outcomes, plan) = decide(loaded(&[&a, &b]), &[cmd.clone(), cmd], Utc::now());
        let created = decided(&outcomes[0]);
        assert_eq!(created.status, TransactionStatus::Completed);
        assert!(matches!(&outcomes[1], Ok(Execution::AlreadyTerminal(r)) if r.id == created.id));
        assert_eq!(plan.created, std::slice::from_ref(created));
        assert!(plan.decided.is_empty());
        assert_eq!(plan.entries.len(), 2);
    }

    #[test]
    fn the_first_initial_funds_opens_the_funding_account() {
        let b = account(0, 0);
        let funding = AccountId::funding(Currency::USD);
        let cmd = command(TransferKind::InitialFunds, funding, b.account.id, 500, "fund");
        let (outcomes, plan) = decide(
            loaded(&[&b]),
            &[cmd.clone(), command(TransferKind::InitialFunds, funding, b.account.id, 1, "again")],
            Utc::now(),
        );
        assert_eq!(status(&outcomes[0]), (TransactionStatus::Completed, None));
        assert_eq!(status(&outcomes[1]), (TransactionStatus::Completed, None));
        // Inserted once, already at the seq of its last entry; never bumped.
        assert_eq!(plan.new_accounts.len(), 1);
        assert_eq!((plan.new_accounts[0].id, plan.new_accounts[0].seq), (funding, 2));
        assert!(plan.account_writes.iter().all(|w| w.account != funding));
        let last = plan.entries.iter().rfind(|e| e.account_id == funding).expect("a funding entry");
        assert_eq!(last.balance_after, Balance(-501));
    }

    #[test]
    fn a_failed_first_initial_funds_opens_no_funding_account() {
        let funding = AccountId::funding(Currency::USD);
        let nowhere = AccountId::generate();
        let cmd = command(TransferKind::InitialFunds, funding, nowhere, 500, "fund");
        let (outcomes, plan) = decide(loaded(&[]), &[cmd], Utc::now());
        assert_eq!(status(&outcomes[0]), (TransactionStatus::Failed, Some(FailureReason::AccountNotFound)));
        assert!(plan.new_accounts.is_empty() && plan.entries.is_empty());
        assert_eq!(plan.created.len(), 1);
    }

    /// A batch's reads holding a COMPLETED transfer of 100 from `a` (now 0) to `b` (now 100).
    fn a_completed_transfer_of_100() -> (Loaded, AccountHead, AccountHead, TransactionRecord) {
        let (a, b) = (account(0, 1), account(100, 1));
        let mut l = loaded(&[&a, &b]);
        let original = command(TransferKind::Transfer, a.account.id, b.account.id, 100, "orig");
        let mut record = TransactionRecord::pending(TransactionId::generate(), &original, Utc::now());
        record.status = TransactionStatus::Completed;
        l.add_transaction(record.id, ("x".into(), "orig".into()), Ok(record.clone()));
        (l, a, b, record)
    }

    #[test]
    fn a_reversal_completes_once_and_a_second_in_the_batch_fails() {
        let (l, a, b, record) = a_completed_transfer_of_100();
        let reversal = |key| {
            let r =
                TransferRequest::reversal(record.id, a.account.id, b.account.id, record.amount, Currency::USD, None);
            upstream(r, key)
        };
        let (outcomes, plan) = decide(l, &[reversal("r1"), reversal("r2")], Utc::now());
        let first = decided(&outcomes[0]);
        assert_eq!(first.status, TransactionStatus::Completed);
        assert_eq!(status(&outcomes[1]), (TransactionStatus::Failed, Some(FailureReason::AlreadyReversed)));
        assert_eq!(plan.reversed, [(record.id, first.id)]);
        let balances: Vec<_> = plan.entries.iter().map(|e| (e.account_id, e.balance_after.minor())).collect();
        assert_eq!(balances, [(b.account.id, 0), (a.account.id, 100)]);
    }

    #[test]
    fn a_reversal_that_is_not_the_exact_mirror_fails() {
        let (l, a, b, record) = a_completed_transfer_of_100();
        let short = Amount::new(99).expect("amount");
        let partial = TransferRequest::reversal(record.id, a.account.id, b.account.id, short, Currency::USD, None);
        let of_nothing = TransferRequest::reversal(
            TransactionId::generate(),
            a.account.id,
            b.account.id,
            short,
            Currency::USD,
            None,
        );
        let (outcomes, plan) = decide(l, &[upstream(partial, "p"), upstream(of_nothing, "n")], Utc::now());
        for outcome in &outcomes {
            assert_eq!(status(outcome), (TransactionStatus::Failed, Some(FailureReason::InvalidCommand)));
        }
        assert!(plan.entries.is_empty() && plan.reversed.is_empty());
    }

    #[test]
    fn a_corrupt_account_fails_only_the_commands_that_touch_it() {
        let (a, b, c) = (account(100, 1), account(0, 0), account(0, 0));
        let mut l = loaded(&[&a, &b]);
        l.accounts.insert(
            c.account.id,
            Err(StoreError::Corrupt { collection: "accounts", id: c.account.id.to_string(), reason: "test".into() }),
        );
        let bad = recorded(&mut l, command(TransferKind::Transfer, a.account.id, c.account.id, 10, "bad"));
        let good = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 10, "good"));
        let (outcomes, plan) = decide(l, &[bad, good], Utc::now());
        assert!(matches!(&outcomes[0], Err(StoreError::Corrupt { .. })));
        assert_eq!(status(&outcomes[1]), (TransactionStatus::Completed, None));
        assert_eq!(plan.entries.len(), 2);
    }
}
