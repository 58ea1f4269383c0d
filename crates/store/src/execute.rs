//! The double-entry commit: a batch of commands, one MongoDB multi-document transaction, in
//! three steps: load, decide, write.
//!
//! Inside a single snapshot transaction the worker reads, in three queries for the whole
//! batch, the transaction records (finding them by id or, for upstream commands, by
//! idempotency key), the accounts, and each account's latest entry (its balance and chain
//! hash). The pure [`decide`](crate::decide) then judges every command in order and returns a
//! plan, which is written in a handful of multi-statement writes: account sequence bumps
//! first, then the entries, then the transaction statuses. Either all of it commits or none
//! of it.
//!
//! Why batch: the cost of a transfer is dominated by per-operation and per-commit work in
//! MongoDB, so a batch of N commands costs about what one does. A command that fails on its
//! merits (insufficient funds, unknown account, a contradicting duplicate) is decided FAILED,
//! or answered without writing, alone: its neighbours are unaffected. An error the server
//! raises against the batch's content, rather than a conflict or an outage, makes the batch
//! fall back to one transaction per command, so a poisoned command fails alone too.
//!
//! Why it cannot double-spend: every posting writes the account documents of both sides
//! (their `seq`, guarded by the value read), so two transactions that read the same balance
//! conflict on that write and one is aborted with a `TransientTransactionError`, retried
//! here, and re-reads the new balance. Why it cannot double-apply: the transaction record's
//! status is written in the same transaction, guarded by `PENDING`, and checked first, so a
//! redelivered command finds it terminal and writes nothing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use backoff::ExponentialBackoffBuilder;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use ledgerflow_domain::{
    AccountId, Balance, FailureReason, TransactionId, TransactionStatus, TransferCommand, TransferKind,
};
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{ReadConcern, WriteConcern};
use mongodb::{Client, ClientSession};
use tracing::debug;

use crate::decide::{AccountHead, Loaded, Plan, decide};
use crate::docs::{AccountDoc, EXPIRY_UNREPORTED, EntryDoc, HELD_UNTIL, TransactionDoc, reserved_guard, to_bson_time};
use crate::error::is_duplicate_key;
use crate::transactions::KeyLookup;
use crate::{AccountRecord, Store, StoreError, TransactionRecord};

/// By default, how long one batch may keep retrying write conflicts before the caller is told
/// to try again later (the worker then sends its commands through its retry queue).
pub(crate) const CONFLICT_RETRY_BUDGET: Duration = Duration::from_secs(20);
/// How long a batch of several commands retries write conflicts before it is split.
const BATCH_CONFLICT_BUDGET: Duration = Duration::from_millis(30);
/// How many times an ambiguous commit is re-sent before the whole transaction is retried.
const COMMIT_RETRIES: u32 = 5;
const WRITE_CONFLICT: i32 = 112;

/// What executing a command did.
///
/// `hold` is, for a COMPLETED POST_HOLD or VOID_HOLD, the hold it settled as the commit's
/// snapshot saw it afterwards (POSTED or VOIDED): the worker reports the hold's end with the
/// settlement's, and the commit has already read it, so nobody reads it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// This call decided the transaction (COMPLETED, FAILED or HELD).
    Decided { record: TransactionRecord, hold: Option<TransactionRecord> },
    /// It was decided already (a redelivered or repeated command); nothing was written.
    AlreadyTerminal { record: TransactionRecord, hold: Option<TransactionRecord> },
    /// The command names a transaction id that does not exist. Nothing was written.
    UnknownTransaction(TransactionId),
    /// The command disagrees with the transaction recorded under its id or idempotency key
    /// (same key, different body; or a tampered command). Nothing was written.
    Mismatch { existing: TransactionId },
}

/// One command's outcome within a batch.
pub type Outcome = Result<Execution, StoreError>;

impl Store {
    /// Executes a transfer command exactly once in effect, however often it is delivered and
    /// however many workers run it concurrently: a batch of one.
    pub async fn execute(&self, cmd: &TransferCommand) -> Outcome {
        metrics::histogram!("ledgerflow_batch_size").record(1.0);
        self.execute_alone(cmd).await
    }

    async fn execute_alone(&self, cmd: &TransferCommand) -> Outcome {
        let outcomes =
            self.with_retries(std::slice::from_ref(cmd), self.conflict_retry_budget).await.map_err(given_up)?;
        outcomes.into_iter().next().unwrap_or(Err(StoreError::Contention { attempts: 0 }))
    }

    /// Executes several commands in one database transaction and returns one outcome per
    /// command, in order. Commands are decided in the order given, so two debits of one
    /// account in the same batch see each other.
    pub async fn execute_batch(&self, cmds: &[TransferCommand]) -> Vec<Outcome> {
        match cmds {
            [] => return Vec::new(),
            [cmd] => return vec![self.execute(cmd).await],
            _ => {}
        }
        metrics::histogram!("ledgerflow_batch_size").record(cmds.len() as f64);
        self.execute_splitting(cmds).await
    }

    /// A batch that keeps hitting write conflicts is split in halves, each executed on its
    /// own (in order): a large batch would otherwise keep losing to the small ones other
    /// workers commit meanwhile. A batch the server refuses runs one command at a time.
    fn execute_splitting<'a>(&'a self, cmds: &'a [TransferCommand]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            if let [cmd] = cmds {
                return vec![self.execute_alone(cmd).await];
            }
            match self.with_retries(cmds, BATCH_CONFLICT_BUDGET).await {
                Ok(outcomes) => outcomes,
                Err((e, _)) if is_conflict(&e) => {
                    debug!(size = cmds.len(), "batch keeps conflicting, splitting it");
                    metrics::counter!("ledgerflow_batch_splits_total", "why" => "conflict").increment(1);
                    let (first, second) = cmds.split_at(cmds.len() / 2);
                    let mut outcomes = self.execute_splitting(first).await;
                    outcomes.extend(self.execute_splitting(second).await);
                    outcomes
                }
                Err((e, _)) if refuses_content(&e) => {
                    debug!(error = %e, size = cmds.len(), "batch refused by the server, running its commands one by one");
                    metrics::counter!("ledgerflow_batch_splits_total", "why" => "refused").increment(1);
                    let mut outcomes = Vec::with_capacity(cmds.len());
                    for cmd in cmds {
                        outcomes.push(self.execute_alone(cmd).await);
                    }
                    outcomes
                }
                Err(gave_up) => {
                    let e = given_up(gave_up);
                    cmds.iter().map(|_| Err(e.clone())).collect()
                }
            }
        })
    }

    /// Runs the batch's transaction, retrying conflicts for up to `budget` ([`retrying`]).
    async fn with_retries(
        &self,
        cmds: &[TransferCommand],
        budget: Duration,
    ) -> Result<Vec<Outcome>, (StoreError, u32)> {
        retrying(budget, || self.execute_once(cmds)).await
    }

    async fn execute_once(&self, cmds: &[TransferCommand]) -> Result<Vec<Outcome>, StoreError> {
        let done = self.transact(&Reads::of_commands(cmds), |loaded, now| decide(loaded, cmds, now)).await;
        if let Err(e) = &done
            && is_conflict(e)
            && cmds.iter().any(|cmd| cmd.request.debited_accounts().len() > 1)
        {
            // A journal is routed by its first debited account; its other debits may be
            // committed meanwhile by the workers of other partitions. Conflicts are retried
            // like any other; counted, so an operator sees what such journals cost.
            metrics::counter!("ledgerflow_journal_conflicts_total").increment(1);
        }
        done
    }

    /// One commit: in a snapshot transaction, loads `reads`, lets the pure `judge` decide
    /// what happens and what to write, writes that plan and commits (or, when the plan writes
    /// nothing, aborts). Every change of accounts and transactions goes this one way.
    pub(crate) async fn transact<T>(
        &self,
        reads: &Reads,
        judge: impl FnOnce(Loaded, DateTime<Utc>) -> (T, Plan),
    ) -> Result<T, StoreError> {
        let mut session = begin(&self.client, true).await?;
        let phase = Instant::now();
        let loaded = match self.load(&mut session, reads).await {
            Ok(loaded) => loaded,
            Err(e) => return finish(&mut session, Err(e)).await,
        };
        let (outcomes, plan) = judge(loaded, Utc::now());
        if plan.is_empty() {
            return finish(&mut session, Ok((outcomes, false))).await;
        }
        let loaded = phase.elapsed();
        let phase = Instant::now();
        if let Err(e) = self.write(&mut session, plan).await {
            return finish(&mut session, Err(e)).await;
        }
        let written = phase.elapsed();
        let phase = Instant::now();
        commit(&mut session).await?;
        let committed = phase.elapsed();
        metrics::histogram!("ledgerflow_mongo_commit_seconds").record(committed.as_secs_f64());
        // Where a slow batch spent its time: reads, writes, or the commit's journal wait.
        debug!(
            load_ms = loaded.as_secs_f64() * 1e3,
            write_ms = written.as_secs_f64() * 1e3,
            commit_ms = committed.as_secs_f64() * 1e3,
            "transaction committed"
        );
        Ok(outcomes)
    }

    /// Reads everything the decisions depend on, in the transaction's snapshot: three
    /// queries however many commands.
    async fn load(&self, s: &mut ClientSession, reads: &Reads) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();

        // By id alone for the usual batch (the gateway recorded every command): no `$or` for
        // MongoDB to plan clause by clause.
        let by_id = doc! { "_id": { "$in": &reads.ids[..] } };
        let filter = if reads.keys.is_empty() {
            by_id
        } else {
            let mut clauses = reads.keys.clauses();
            clauses.push(by_id);
            doc! { "$or": clauses }
        };
        let mut found = self.transactions().find(filter).session(&mut *s).await?;
        while let Some(doc) = found.next(&mut *s).await.transpose()? {
            let Ok(id) = doc.id.parse::<TransactionId>() else { continue };
            let key = (doc.idempotency_scope.clone(), doc.idempotency_key.clone());
            loaded.add_transaction(id, key, TransactionRecord::try_from(doc));
        }

        // Accounts.
        let filter = doc! { "_id": { "$in": reads.accounts.iter().map(ToString::to_string).collect::<Vec<_>>() } };
        let mut found = self.accounts().find(filter).session(&mut *s).await?;
        let mut heads: Vec<Document> = Vec::new();
        while let Some(doc) = found.next(&mut *s).await.transpose()? {
            let id = doc.id.clone();
            match AccountRecord::try_from(doc) {
                Ok(account) => {
                    if account.seq > 0 {
                        heads.push(doc! { "accountId": &id, "seq": account.seq });
                    }
                    loaded.accounts.insert(account.id, Ok(AccountHead::empty(account)));
                }
                Err(e) => {
                    if let Ok(account_id) = id.parse() {
                        loaded.accounts.insert(account_id, Err(e));
                    }
                }
            }
        }

        // Each account's latest entry: its balance and the hash the next entry chains to.
        if !heads.is_empty() {
            let mut found_heads = HashSet::new();
            let mut found = self.entries().find(doc! { "$or": heads }).session(&mut *s).await?;
            while let Some(entry) = found.next(&mut *s).await.transpose()? {
                let Ok(id) = entry.account_id.parse::<AccountId>() else { continue };
                if let Some(Ok(head)) = loaded.accounts.get_mut(&id)
                    && head.account.seq == entry.seq
                {
                    head.balance = Balance(entry.balance_after);
                    head.hash = entry.hash;
                    head.last_at = Some(crate::docs::from_bson_time(entry.created_at));
                    found_heads.insert(id);
                }
            }
            for (id, head) in &mut loaded.accounts {
                if let Ok(h) = head
                    && h.account.seq > 0
                    && !found_heads.contains(id)
                {
                    *head = Err(StoreError::Corrupt {
                        collection: "accounts",
                        id: id.to_string(),
                        reason: format!("no entry for its latest seq {}", h.account.seq),
                    });
                }
            }
        }
        Ok(loaded)
    }

    /// Writes a batch's plan. Account writes go first: they are where concurrent batches
    /// collide, and colliding before the other writes wastes the least work. A funding
    /// account used for the first time by two batches at once collides on `_id`: a duplicate
    /// key, retried as a conflict.
    async fn write(&self, s: &mut ClientSession, plan: Plan) -> Result<(), StoreError> {
        if !plan.new_accounts.is_empty() {
            let docs: Vec<AccountDoc> = plan.new_accounts.iter().map(AccountDoc::from).collect();
            self.accounts().insert_many(docs).session(&mut *s).await?;
        }
        let accounts = plan.account_writes.iter().map(|w| {
            let ((seq, reserved), (new_seq, new_reserved)) = (w.read, w.written);
            doc! {
                "q": {
                    "_id": w.account.to_string(),
                    "seq": seq,
                    "pendingDebits": reserved_guard(reserved.debits),
                    "pendingCredits": reserved_guard(reserved.credits),
                },
                "u": { "$set": {
                    "seq": new_seq,
                    "pendingDebits": new_reserved.debits,
                    "pendingCredits": new_reserved.credits,
                } },
            }
        });
        self.update_each(s, "accounts", accounts.collect()).await?;
        if !plan.entries.is_empty() {
            let entries: Vec<EntryDoc> = plan.entries.iter().map(EntryDoc::from).collect();
            self.entries().insert_many(entries).session(&mut *s).await?;
        }
        let decided = plan.decided.iter().map(|record| {
            let reason = record.failure_reason.map(FailureReason::as_str);
            let completed_at = record.completed_at.map(to_bson_time);
            let mut set =
                doc! { "status": record.status.as_str(), "failureReason": reason, "completedAt": completed_at };
            if let Some(leg) = record.failed_leg {
                set.insert("failedLeg", i64::from(leg));
            }
            // Only these fields: none is indexed, so the update touches no index (see
            // `pending`), except a failed hold's, which can no longer expire.
            let mut update = doc! { "$set": set };
            if record.kind == TransferKind::Hold && record.status.is_final() {
                update.insert("$unset", doc! { HELD_UNTIL: "" });
            }
            doc! {
                "q": { "_id": record.id.to_string(), "status": TransactionStatus::Pending.as_str() },
                "u": update,
            }
        });
        let reversed = plan.reversed.iter().map(|(original, by)| {
            doc! {
                "q": { "_id": original.to_string(), "reversedBy": null },
                "u": { "$set": { "reversedBy": by.to_string() } },
            }
        });
        let settled = plan.settled.iter().map(|h| {
            let mut set = doc! {
                "status": h.status.as_str(),
                "postedAmount": h.posted_amount.map(|a| a.minor()),
                "resolvedBy": h.resolved_by.map(|id| id.to_string()),
                "resolvedAt": to_bson_time(h.resolved_at),
            };
            // No command carries an expiry, so no redelivery would report it again if its
            // result were lost: the hold remembers until the result is out.
            if h.status == TransactionStatus::Expired {
                set.insert(EXPIRY_UNREPORTED, true);
            }
            doc! {
                "q": { "_id": h.hold.to_string(), "status": TransactionStatus::Held.as_str() },
                "u": { "$set": set, "$unset": { HELD_UNTIL: "" } },
            }
        });
        // Every change of a recorded transaction in one round trip, in this order: a hold
        // decided HELD in this batch is HELD before a later command of the batch settles it.
        let changes = decided.chain(reversed).chain(settled).collect();
        self.update_each(s, "transactions", changes).await?;
        self.remove_pending(s, plan.decided.iter().map(|record| record.id)).await?;
        if !plan.created.is_empty() {
            let created: Vec<TransactionDoc> = plan.created.iter().map(TransactionDoc::from).collect();
            self.transactions().insert_many(created).session(&mut *s).await?;
        }
        self.write_events(s, &plan.events).await
    }

    /// Runs several guarded update statements in one round trip (the `update` command; the
    /// driver's bulk API needs MongoDB 8). Each must match exactly one document: a guard that
    /// no longer holds means the snapshot is stale, and the whole transaction is retried.
    async fn update_each(
        &self,
        s: &mut ClientSession,
        collection: &'static str,
        updates: Vec<Document>,
    ) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let expected = updates.len() as i64;
        let reply = self
            .db
            .run_command(doc! { "update": collection, "updates": updates, "ordered": true })
            .session(&mut *s)
            .await?;
        if let Ok(errors) = reply.get_array("writeErrors")
            && let Some(Bson::Document(first)) = errors.first()
        {
            return Err(StoreError::Write {
                collection,
                code: first.get_i32("code").unwrap_or_default(),
                message: first.get_str("errmsg").unwrap_or_default().to_owned(),
            });
        }
        let matched = match reply.get("n") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            _ => -1,
        };
        if matched != expected {
            return Err(StoreError::Contention { attempts: 0 });
        }
        Ok(())
    }
}

/// What a commit reads: transaction records by id and by idempotency key, and accounts (each
/// with its latest entry).
#[derive(Debug, Default)]
pub(crate) struct Reads {
    ids: Vec<String>,
    keys: KeyLookup,
    accounts: Vec<AccountId>,
}

impl Reads {
    /// A batch's: its records (by id or, for upstream commands, by key), the originals of its
    /// reversals, the holds its posts and voids settle, and every account it names (each leg's,
    /// for a journal).
    fn of_commands(cmds: &[TransferCommand]) -> Self {
        let mut reads = Reads::default();
        for cmd in cmds {
            match cmd.transaction_id {
                Some(id) => reads.ids.push(id.to_string()),
                None => reads.keys.add(&cmd.initiator, &cmd.idempotency_key),
            }
            reads.ids.extend(cmd.request.reverses.map(|id| id.to_string()));
            reads.ids.extend(cmd.request.hold.map(|id| id.to_string()));
            reads.accounts.extend(cmd.request.accounts());
        }
        reads.accounts.sort_unstable();
        reads.accounts.dedup();
        reads
    }

    /// A hold's expiry's: the hold and its two accounts.
    pub(crate) fn of_hold(hold: &TransactionRecord) -> Self {
        Reads {
            ids: vec![hold.id.to_string()],
            keys: KeyLookup::default(),
            accounts: vec![hold.from_account, hold.to_account],
        }
    }
}

/// Runs `attempt` until it succeeds, retrying what may succeed on a second try (write
/// conflicts, transient transaction errors) with exponential backoff for up to `budget`. On
/// failure, returns the last error and the number of attempts.
pub(crate) async fn retrying<T, F, Fut>(budget: Duration, mut attempt: F) -> Result<T, (StoreError, u32)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let policy = ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(1))
        .with_max_interval(Duration::from_millis(25))
        .with_max_elapsed_time(Some(budget))
        .build();
    let mut attempts = 0u32;
    let result = backoff::future::retry(policy, || {
        attempts += 1;
        let attempt = attempt();
        async {
            attempt.await.map_err(|e| {
                if is_retryable(&e) {
                    debug!(error = %e, "transaction conflict, retrying");
                    backoff::Error::transient(e)
                } else {
                    backoff::Error::permanent(e)
                }
            })
        }
    })
    .await;
    metrics::counter!("ledgerflow_mongo_transaction_retries_total").increment(u64::from(attempts.saturating_sub(1)));
    result.map_err(|e| (e, attempts))
}

/// What a caller is told when [`retrying`] gave up: `Contention` when trying again later may
/// succeed (with the attempts made), else the error itself.
pub(crate) fn given_up((e, attempts): (StoreError, u32)) -> StoreError {
    if is_retryable(&e) { StoreError::Contention { attempts } } else { e }
}

/// A new session in a transaction whose writes wait for a majority; reads see the
/// transaction's snapshot when `snapshot`, else the latest local data.
pub(crate) async fn begin(client: &Client, snapshot: bool) -> Result<ClientSession, StoreError> {
    let mut session = client.start_session().await?;
    let mut start = session.start_transaction().write_concern(WriteConcern::majority());
    if snapshot {
        start = start.read_concern(ReadConcern::snapshot());
    }
    start.await?;
    Ok(session)
}

/// Ends the transaction as its work went: commits when it wrote what is to be kept (`Ok((_,
/// true))`), aborts when it did not, and on an error aborts and passes the error on. An abort
/// after an error is best effort: the server also aborts the transaction when the session ends.
pub(crate) async fn finish<T>(
    session: &mut ClientSession,
    done: Result<(T, bool), StoreError>,
) -> Result<T, StoreError> {
    match done {
        Ok((value, true)) => {
            commit(session).await?;
            Ok(value)
        }
        Ok((value, false)) => {
            session.abort_transaction().await?;
            Ok(value)
        }
        Err(e) => {
            let _ = session.abort_transaction().await;
            Err(e)
        }
    }
}

/// Commits, re-sending the commit while its outcome is unknown (safe: commit is idempotent).
pub(crate) async fn commit(session: &mut ClientSession) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) && tries < COMMIT_RETRIES => {
                tries += 1;
                debug!(error = %e, tries, "commit outcome unknown, retrying commit");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Errors after which re-running the whole transaction is safe and may succeed.
fn is_retryable(e: &StoreError) -> bool {
    is_conflict(e)
        || matches!(e, StoreError::Database(e)
            if e.contains_label(TRANSIENT_TRANSACTION_ERROR) || e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT))
}

/// Whether the error is a write conflict with another transaction (as opposed to an
/// outage, which splitting a batch would not help).
fn is_conflict(e: &StoreError) -> bool {
    match e {
        StoreError::Contention { .. } => true,
        StoreError::Write { code, .. } => *code == WRITE_CONFLICT || *code == crate::error::DUPLICATE_KEY,
        StoreError::Database(e) => {
            is_duplicate_key(e) || matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == WRITE_CONFLICT)
        }
        _ => false,
    }
}

/// Whether the server refused something in the batch's content (as opposed to a conflict or
/// an outage, which would hit each command alike): then each command is run alone.
fn refuses_content(e: &StoreError) -> bool {
    !is_retryable(e)
        && match e {
            StoreError::Corrupt { .. } | StoreError::Write { .. } => true,
            StoreError::Database(e) => matches!(
                e.kind.as_ref(),
                ErrorKind::Command(_)
                    | ErrorKind::Write(_)
                    | ErrorKind::InsertMany(_)
                    | ErrorKind::BsonDeserialization(_)
                    | ErrorKind::BsonSerialization(_)
                    | ErrorKind::InvalidArgument { .. }
            ),
            _ => false,
        }
}
