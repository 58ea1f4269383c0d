//! Transaction records: created PENDING (by the gateway, or by a worker for upstream
//! commands) and made terminal only by the posting in `execute`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::{FutureExt, TryStreamExt};
use ledgerflow_domain::{
    AccountId, FailureReason, IdempotencyKey, Initiator, TransactionId, TransactionStatus, TransferCommand,
    TransferKind,
};
use mongodb::ClientSession;
use mongodb::bson::{Document, doc};
use mongodb::options::ReturnDocument;

use crate::docs::{HELD_UNTIL, TransactionDoc, to_bson_time};
use crate::events::EventDraft;
use crate::execute::{begin, finish, given_up, retrying};
use crate::search::SearchFilter;
use crate::{GroupCommit, Grouping, MAX_PAGE, Store, StoreError, TransactionRecord};

/// How long recording (or failing) a PENDING transaction retries a conflict or a transient
/// error: a gateway racing another on one key wins or loses at the second try. Short, because
/// an outage makes the driver label every error transient, and the caller must answer 503
/// while its client still waits, not after a budget made for workers' batches.
const PENDING_RETRY_BUDGET: Duration = Duration::from_secs(1);

/// What recording a new PENDING transaction did.
#[derive(Debug)]
pub enum InsertPending {
    Created(TransactionRecord),
    /// The initiator already used this idempotency key; here is what it recorded then.
    /// Whether it was the same request is the caller's question (compare `request_hash`).
    Existing(TransactionRecord),
}

/// Records PENDING transactions, several callers' to an insert: see [`Store::pending_writer`].
#[derive(Clone)]
pub struct PendingWriter(GroupCommit<TransferCommand, Result<InsertPending, StoreError>>);

impl PendingWriter {
    /// [`Store::insert_pending`], sharing the insert with whoever else is waiting.
    pub async fn insert(&self, cmd: TransferCommand) -> Result<InsertPending, StoreError> {
        self.0.try_call(cmd).await
    }
}

/// Reads transactions by id, several callers' in one find: see [`Store::transaction_reader`].
#[derive(Clone)]
pub struct TransactionReader(GroupCommit<TransactionId, Result<Option<TransactionRecord>, StoreError>>);

impl TransactionReader {
    /// [`Store::find_transaction`], sharing the find with whoever else is waiting.
    pub async fn find(&self, id: TransactionId) -> Result<Option<TransactionRecord>, StoreError> {
        self.0.try_call(id).await
    }
}

/// Which transactions a listing returns.
#[derive(Debug, Clone, Default)]
pub struct TransactionFilter {
    /// When set, only transactions this user initiated or that touch one of these accounts
    /// (any leg's, for a journal).
    pub visible_to: Option<(Initiator, Vec<AccountId>)>,
    pub account: Option<AccountId>,
    pub status: Option<TransactionStatus>,
    pub kind: Option<TransferKind>,
    /// Cursor: only transactions with an id before this one (ids are time-ordered).
    pub before: Option<TransactionId>,
    pub limit: i64,
    /// Metadata, time and amount filters (see `search`).
    pub search: SearchFilter,
}

pub(crate) fn key_filter(initiator: &Initiator, key: &IdempotencyKey) -> Document {
    doc! { "idempotencyScope": initiator.to_string(), "idempotencyKey": key.as_str() }
}

/// Idempotency keys to look up together, grouped by scope: one `$in` clause per initiator.
/// MongoDB plans each clause of an `$or` on its own (its subplanner), so one clause per key
/// would cost it more CPU than reading the records does.
#[derive(Debug, Default)]
pub(crate) struct KeyLookup(BTreeMap<String, Vec<String>>);

impl KeyLookup {
    pub(crate) fn add(&mut self, initiator: &Initiator, key: &IdempotencyKey) {
        self.0.entry(initiator.to_string()).or_default().push(key.as_str().to_owned());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The clauses of a filter matching every key added.
    pub(crate) fn clauses(&self) -> Vec<Document> {
        self.0
            .iter()
            .map(|(scope, keys)| doc! { "idempotencyScope": scope, "idempotencyKey": { "$in": keys } })
            .collect()
    }
}

impl Store {
    /// Records a PENDING transaction for a command that carries its id. A unique index on
    /// (scope, key) makes concurrent duplicates collapse into one record.
    pub async fn insert_pending(&self, cmd: &TransferCommand) -> Result<InsertPending, StoreError> {
        let mut results = self.insert_pending_many(std::slice::from_ref(cmd)).await;
        results.pop().unwrap_or(Err(StoreError::Contention { attempts: 0 }))
    }

    /// [`Store::insert_pending`] for several commands in one transaction, which also writes
    /// each new record's `transaction.accepted` event to the outbox: one result per command,
    /// in order, each what inserting it alone would have given (a reused key answers with what
    /// it recorded then; a key used twice in the group, with the group's first record).
    pub async fn insert_pending_many(&self, cmds: &[TransferCommand]) -> Vec<Result<InsertPending, StoreError>> {
        let now = Utc::now();
        // Ids are fixed before the first attempt, so that a retried transaction records the
        // same transactions the callers were told about.
        let records: Vec<TransactionRecord> = cmds
            .iter()
            .map(|cmd| TransactionRecord::pending(cmd.transaction_id.unwrap_or_else(TransactionId::generate), cmd, now))
            .collect();
        // Nearly every key is new, so the first try inserts without looking the keys up; a
        // repeat makes it fail with a duplicate key, and every later try looks them up first.
        let first = AtomicBool::new(true);
        let attempt = || self.insert_pending_once(&records, !first.swap(false, Ordering::Relaxed));
        match retrying(PENDING_RETRY_BUDGET, attempt).await {
            Ok(results) => results,
            Err(gave_up) => {
                let e = given_up(gave_up);
                cmds.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }

    async fn insert_pending_once(
        &self,
        records: &[TransactionRecord],
        look_up: bool,
    ) -> Result<Vec<Result<InsertPending, StoreError>>, StoreError> {
        // Local, not snapshot, reads: a repeat must be answered with its transaction as it
        // stands now, and a snapshot transaction reads the majority-committed snapshot, which
        // was seen to lag a worker's just-acknowledged decision (a repeat answered PENDING
        // after its client had waited for COMPLETED). The unique key index guards the insert.
        let mut session = begin(&self.client, false).await?;
        let done = self.insert_pending_in(&mut session, records, look_up).await;
        finish(&mut session, done).await
    }

    /// The transaction's work: looks the keys up (when `look_up`), inserts the new records and
    /// their events. Returns the results and whether anything was written. A record recorded
    /// under one of the keys before (unless looked up), or by another gateway meanwhile, makes
    /// the insert fail with a duplicate key (or a write conflict), and the whole transaction is
    /// retried, finding it this time.
    async fn insert_pending_in(
        &self,
        s: &mut ClientSession,
        records: &[TransactionRecord],
        look_up: bool,
    ) -> Result<(Vec<Result<InsertPending, StoreError>>, bool), StoreError> {
        type Key = (String, String);
        let key_of = |r: &TransactionRecord| (r.initiator.to_string(), r.idempotency_key.as_str().to_owned());
        let mut known: HashMap<Key, Result<TransactionRecord, StoreError>> = HashMap::new();
        if look_up {
            let mut keys = KeyLookup::default();
            for r in records {
                keys.add(&r.initiator, &r.idempotency_key);
            }
            let mut found = self.transactions().find(doc! { "$or": keys.clauses() }).session(&mut *s).await?;
            while let Some(doc) = found.next(&mut *s).await.transpose()? {
                let key = (doc.idempotency_scope.clone(), doc.idempotency_key.clone());
                known.insert(key, TransactionRecord::try_from(doc));
            }
        }
        let mut fresh = Vec::new();
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            results.push(match known.get(&key_of(record)) {
                Some(existing) => existing.clone().map(InsertPending::Existing),
                None => {
                    known.insert(key_of(record), Ok(record.clone()));
                    fresh.push(record);
                    Ok(InsertPending::Created(record.clone()))
                }
            });
        }
        if fresh.is_empty() {
            return Ok((results, false));
        }
        let docs: Vec<TransactionDoc> = fresh.iter().map(|r| TransactionDoc::from(*r)).collect();
        self.transactions().insert_many(docs).session(&mut *s).await?;
        self.add_pending(s, &fresh).await?;
        let events: Vec<EventDraft> = fresh.iter().map(|r| EventDraft::entering(r, r.created_at)).collect();
        self.write_events(s, &events).await?;
        Ok((results, true))
    }

    /// A writer that records the PENDING transactions of concurrent callers in shared inserts
    /// (see [`GroupCommit`]). Spawns a task on the current Tokio runtime.
    pub fn pending_writer(&self, grouping: Grouping) -> PendingWriter {
        let store = self.clone();
        PendingWriter(GroupCommit::spawn(grouping, move |cmds: Vec<TransferCommand>| {
            metrics::histogram!("ledgerflow_pending_insert_size").record(cmds.len() as f64);
            let store = store.clone();
            async move { store.insert_pending_many(&cmds).await }.boxed()
        }))
    }

    /// A reader that serves concurrent callers' reads by id with one find (see
    /// [`GroupCommit`]): a hold's settlement reads the hold before recording anything, and
    /// alone that read cost the gateway and mongod about what recording the settlement did.
    /// Spawns a task on the current Tokio runtime.
    pub fn transaction_reader(&self, grouping: Grouping) -> TransactionReader {
        let store = self.clone();
        TransactionReader(GroupCommit::spawn(grouping, move |ids: Vec<TransactionId>| {
            let store = store.clone();
            async move { store.find_transactions(&ids).await }.boxed()
        }))
    }

    /// Each of `ids`' transaction, in order, read with one find.
    pub(crate) async fn find_transactions(
        &self,
        ids: &[TransactionId],
    ) -> Vec<Result<Option<TransactionRecord>, StoreError>> {
        let wanted: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let found: Result<Vec<TransactionDoc>, StoreError> =
            async { Ok(self.transactions().find(doc! { "_id": { "$in": &wanted } }).await?.try_collect().await?) }
                .await;
        let found: HashMap<String, Result<TransactionRecord, StoreError>> = match found {
            Ok(docs) => docs.into_iter().map(|d| (d.id.clone(), d.try_into())).collect(),
            Err(e) => return ids.iter().map(|_| Err(e.clone())).collect(),
        };
        // An id asked twice in one group gets its transaction twice.
        wanted.iter().map(|id| found.get(id).cloned().transpose()).collect()
    }

    pub async fn find_transaction(&self, id: TransactionId) -> Result<Option<TransactionRecord>, StoreError> {
        let doc = self.transactions().find_one(doc! { "_id": id.to_string() }).await?;
        doc.map(TryInto::try_into).transpose()
    }

    pub async fn find_by_key(
        &self,
        initiator: &Initiator,
        key: &IdempotencyKey,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let doc = self.transactions().find_one(key_filter(initiator, key)).await?;
        doc.map(TryInto::try_into).transpose()
    }
}

impl TransactionFilter {
    /// The query of a listing (see [`Store::list_transactions`]), sorted by `_id` descending.
    pub(crate) fn to_document(&self) -> Document {
        let f = self;
        let mut clauses: Vec<Document> = Vec::new();
        if let Some((initiator, accounts)) = &f.visible_to {
            let ids: Vec<String> = accounts.iter().map(ToString::to_string).collect();
            clauses.push(doc! { "$or": [{ "initiator": initiator.to_string() }, { "accounts": { "$in": &ids } }] });
        }
        if let Some(account) = f.account {
            clauses.push(doc! { "accounts": account.to_string() });
        }
        if let Some(status) = f.status {
            clauses.push(doc! { "status": status.as_str() });
        }
        if let Some(kind) = f.kind {
            clauses.push(doc! { "kind": kind.as_str() });
        }
        clauses.extend(f.search.clauses());
        if let Some(before) = f.before {
            clauses.push(doc! { "_id": { "$lt": before.to_string() } });
        }
        if clauses.is_empty() {
            doc! {}
        } else {
            doc! { "$and": clauses }
        }
    }
}

impl Store {
    /// Newest first.
    pub async fn list_transactions(&self, f: &TransactionFilter) -> Result<Vec<TransactionRecord>, StoreError> {
        let filter = f.to_document();
        let docs: Vec<TransactionDoc> = self
            .transactions()
            .find(filter)
            .sort(doc! { "_id": -1 })
            .limit(f.limit.clamp(1, MAX_PAGE))
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(TryInto::try_into).collect()
    }

    /// A reversal of `original` that is PENDING or COMPLETED, if any: a transaction can be
    /// reversed once (a FAILED reversal may be tried again).
    pub async fn active_reversal_of(&self, original: TransactionId) -> Result<Option<TransactionRecord>, StoreError> {
        let doc = self
            .transactions()
            .find_one(doc! {
                "reverses": original.to_string(),
                "status": { "$in": [TransactionStatus::Pending.as_str(), TransactionStatus::Completed.as_str()] },
            })
            .await?;
        doc.map(TryInto::try_into).transpose()
    }

    /// Marks a still-PENDING transaction FAILED (used for commands that can never be
    /// processed), with its `transaction.failed` event in the same transaction. Returns the
    /// record as it now stands, or `None` if there is none.
    pub async fn fail_pending(
        &self,
        id: TransactionId,
        reason: FailureReason,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let failed = retrying(PENDING_RETRY_BUDGET, || self.fail_pending_once(id, reason)).await;
        match failed.map_err(given_up)? {
            Some(record) => Ok(Some(record)),
            None => self.find_transaction(id).await,
        }
    }

    async fn fail_pending_once(
        &self,
        id: TransactionId,
        reason: FailureReason,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let mut session = begin(&self.client, false).await?;
        let now = Utc::now();
        let failed = async {
            let doc = self
                .transactions()
                .find_one_and_update(
                    doc! { "_id": id.to_string(), "status": TransactionStatus::Pending.as_str() },
                    doc! {
                        "$set": {
                            "status": TransactionStatus::Failed.as_str(),
                            "failureReason": reason.as_str(),
                            "completedAt": to_bson_time(now),
                        },
                        "$unset": { HELD_UNTIL: "" },
                    },
                )
                .return_document(ReturnDocument::After)
                .session(&mut session)
                .await?;
            let Some(doc) = doc else { return Ok((None, false)) };
            let record = TransactionRecord::try_from(doc)?;
            self.remove_pending(&mut session, [record.id]).await?;
            self.write_events(&mut session, &[EventDraft::entering(&record, now)]).await?;
            Ok::<_, StoreError>((Some(record), true))
        }
        .await;
        finish(&mut session, failed).await
    }
}
