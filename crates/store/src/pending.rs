//! The transactions still PENDING, kept beside `transactions`: one small document per record
//! the gateway makes, `{_id, createdAt, republished}`, inserted in the MongoDB transaction that
//! records it and deleted in the one that decides it. The republisher and the oldest-PENDING
//! gauge find them here, by `createdAt`.
//!
//! Why not an index on `transactions.status`: inside a multi-document transaction MongoDB 6.0
//! checks every index of a collection for readiness, parsing the collection's whole catalog
//! entry each time, whenever an update changes a field that some index names in its keys or
//! its partial filter; an update that changes no such field touches no index at all. A
//! decision changes `status`, so with `status` indexed the worker's update of each PENDING
//! record paid ten such checks and moved an index entry: about three times what the same
//! update costs without (and most of what a batch submission costs MongoDB beyond an upstream
//! command, whose record is inserted already decided). So no index of `transactions` names a
//! field a decision writes (`status`, `failureReason`, `completedAt`, `failedLeg`,
//! `reversedBy`), and what has to be found by status lives where a decision's write is cheap:
//! the PENDING ones here, the holds that may still expire under `heldUntil` (a field only a
//! hold's settlement, expiry or failure removes).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use futures::stream::TryChunksError;
use ledgerflow_domain::{TransactionId, TransactionStatus};
use mongodb::bson::{DateTime as BsonDateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{ClientSession, Collection, IndexModel};
use serde::{Deserialize, Serialize};

use crate::docs::{HELD_UNTIL, from_bson_time, to_bson_time};
use crate::error::duplicates_refused;
use crate::execute::begin;
use crate::{Store, StoreError, TransactionRecord};

/// The index older versions kept on `transactions` for the republisher; its presence at start
/// means the `pending` documents and `heldUntil` fields are still to be made.
pub(crate) const RETIRED_STATUS_INDEX: &str = "status_1_createdAt_1";
/// The expiry sweep's index of older versions: HELD holds by `expiresAt` (partial on `status`).
pub(crate) const RETIRED_HELD_INDEX: &str = "held_expiresAt";
/// The expiry sweep's index: holds that may still expire, by when.
pub(crate) const HELD_UNTIL_INDEX: &str = "heldUntil";
/// Notes made per round trip when an older database is upgraded.
const FILL_IN_CHUNK: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingDoc {
    #[serde(rename = "_id")]
    id: String,
    created_at: BsonDateTime,
    /// How often the gateway's republisher re-sent the command.
    #[serde(default)]
    republished: i64,
}

impl Store {
    fn pending(&self) -> Collection<PendingDoc> {
        self.db.collection("pending")
    }

    /// Notes `records`, just recorded PENDING in the transaction `s`, as outstanding.
    pub(crate) async fn add_pending(
        &self,
        s: &mut ClientSession,
        records: &[&TransactionRecord],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let docs = records.iter().map(|r| PendingDoc {
            id: r.id.to_string(),
            created_at: to_bson_time(r.created_at),
            republished: 0,
        });
        self.pending().insert_many(docs).session(s).await?;
        Ok(())
    }

    /// Notes that the transactions `ids`, decided in the transaction `s`, are outstanding no
    /// more. An id with nothing to remove (a record an upstream command made, inserted
    /// decided) is no error.
    pub(crate) async fn remove_pending(
        &self,
        s: &mut ClientSession,
        ids: impl IntoIterator<Item = TransactionId>,
    ) -> Result<(), StoreError> {
        let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
        if !ids.is_empty() {
            self.pending().delete_many(doc! { "_id": { "$in": ids } }).session(s).await?;
        }
        Ok(())
    }

    /// PENDING transactions older than `older_than` and republished fewer than `max_republishes`
    /// times, oldest first: candidates for the republisher (their command may never have
    /// reached the broker: the gateway answered 503, or died before the confirm).
    pub async fn stale_pending(
        &self,
        older_than: std::time::Duration,
        max_republishes: u32,
        limit: i64,
    ) -> Result<Vec<TransactionRecord>, StoreError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let rows: Vec<PendingDoc> = self
            .pending()
            .find(doc! {
                "createdAt": { "$lt": to_bson_time(cutoff) },
                "republished": { "$not": { "$gte": i64::from(max_republishes) } },
            })
            .sort(doc! { "createdAt": 1 })
            .limit(limit.clamp(1, 1_000))
            .await?
            .try_collect()
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<TransactionId> = rows.iter().filter_map(|r| r.id.parse().ok()).collect();
        let mut records = HashMap::new();
        for found in self.find_transactions(&ids).await {
            if let Some(record) = found? {
                records.insert(record.id.to_string(), record);
            }
        }
        let mut stale = Vec::with_capacity(rows.len());
        let mut decided = Vec::new();
        for row in rows {
            match records.remove(&row.id) {
                Some(record) if record.status == TransactionStatus::Pending => stale.push(record),
                // Decided by a version that did not remove its note: nothing is outstanding.
                _ => decided.push(row.id),
            }
        }
        if !decided.is_empty() {
            self.pending().delete_many(doc! { "_id": { "$in": decided } }).await?;
        }
        Ok(stale)
    }

    /// The `createdAt` of the oldest PENDING transaction, if any, however often republished.
    pub async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let oldest = self.pending().find_one(doc! {}).sort(doc! { "createdAt": 1 }).await?;
        Ok(oldest.map(|row| from_bson_time(row.created_at)))
    }

    /// Counts a republish of a still-PENDING transaction, so that one whose command keeps
    /// failing is not sent round forever. `false` if it is no longer PENDING.
    pub async fn count_republish(&self, id: TransactionId) -> Result<bool, StoreError> {
        let counted = self
            .pending()
            .update_one(doc! { "_id": id.to_string() }, doc! { "$inc": { "republished": 1_i64 } })
            .await?;
        Ok(counted.matched_count == 1)
    }

    /// What is wrong, read in one snapshot, with the note of transaction `id`: PENDING without
    /// one, or one without a PENDING transaction.
    pub(crate) async fn pending_note_mismatch(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut session = begin(&self.client, true).await?;
        let record = self
            .db
            .collection::<Document>("transactions")
            .find_one(doc! { "_id": id })
            .projection(doc! { "status": 1 })
            .session(&mut session)
            .await?;
        let noted = self.pending().find_one(doc! { "_id": id }).session(&mut session).await?.is_some();
        let _ = session.abort_transaction().await;
        let pending = TransactionStatus::Pending.as_str();
        Ok(match (record.as_ref().map(|r| r.get_str("status").unwrap_or_default()), noted) {
            (Some(status), false) if status == pending => {
                Some("PENDING, but not noted in `pending`: the republisher cannot find it".to_owned())
            }
            (Some(status), true) if status != pending => Some(format!("{status}, but still noted in `pending`")),
            (None, true) => Some("noted in `pending`, but there is no such transaction".to_owned()),
            _ => None,
        })
    }

    /// The indexes of `pending` and of the holds that may still expire, and, on a database an
    /// older version made, the `pending` documents and `heldUntil` fields it did not keep
    /// (found through its status index, which then goes with the expiry sweep's old one).
    pub(crate) async fn ensure_pending_indexes(&self) -> Result<(), StoreError> {
        self.pending().create_index(IndexModel::builder().keys(doc! { "createdAt": 1 }).build()).await?;
        let options = IndexOptions::builder()
            .name(HELD_UNTIL_INDEX.to_owned())
            .partial_filter_expression(doc! { HELD_UNTIL: { "$exists": true } })
            .build();
        self.transactions()
            .create_index(IndexModel::builder().keys(doc! { HELD_UNTIL: 1 }).options(options).build())
            .await?;
        let indexes = self.transactions().list_index_names().await?;
        if indexes.iter().any(|name| name == RETIRED_STATUS_INDEX) {
            self.fill_in_pending().await?;
        }
        Ok(())
    }

    /// Makes what older versions did not keep: a `pending` document for each PENDING
    /// transaction, and `heldUntil` on each PENDING or HELD hold. Idempotent, so a start
    /// interrupted halfway is finished by the next; the retired indexes go only after it.
    async fn fill_in_pending(&self) -> Result<(), StoreError> {
        let raw = self.db.collection::<Document>("transactions");
        let pending = TransactionStatus::Pending.as_str();
        let found = raw
            .find(doc! { "status": pending })
            .projection(doc! { "createdAt": 1 })
            .hint(mongodb::options::Hint::Name(RETIRED_STATUS_INDEX.to_owned()))
            .await?;
        let mut noted = 0_u64;
        // Unordered: a note a gateway of this version already made is refused alone.
        let mut chunks = found.try_chunks(FILL_IN_CHUNK);
        while let Some(docs) = chunks.try_next().await.map_err(|TryChunksError(_, e)| e)? {
            let rows: Vec<PendingDoc> = docs
                .iter()
                .filter_map(|doc| {
                    let (id, created_at) = (doc.get_str("_id").ok()?, doc.get_datetime("createdAt").ok()?);
                    Some(PendingDoc { id: id.to_owned(), created_at: *created_at, republished: 0 })
                })
                .collect();
            // A chunk of nothing but unparseable records (reconcile reports them) notes
            // nothing: the driver refuses an empty insert.
            if rows.is_empty() {
                continue;
            }
            let tried = rows.len();
            let refused = match self.pending().insert_many(rows).ordered(false).await {
                Ok(_) => 0,
                Err(e) => duplicates_refused(&e).ok_or(e)?,
            };
            noted += (tried - refused) as u64;
        }
        let held = raw
            .update_many(
                doc! {
                    "status": { "$in": [pending, TransactionStatus::Held.as_str()] },
                    "kind": ledgerflow_domain::TransferKind::Hold.as_str(),
                    HELD_UNTIL: { "$exists": false },
                },
                vec![doc! { "$set": { HELD_UNTIL: "$expiresAt" } }],
            )
            .hint(mongodb::options::Hint::Name(RETIRED_STATUS_INDEX.to_owned()))
            .await?;
        if noted > 0 || held.modified_count > 0 {
            tracing::info!(pending = noted, holds = held.modified_count, "outstanding transactions noted apart");
        }
        Ok(())
    }
}
