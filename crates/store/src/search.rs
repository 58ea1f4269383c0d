//! Searching transactions: by metadata, creation time and amount, on top of a listing's
//! visibility, account, status and kind filters and its `_id` cursor.
//!
//! Every listing walks an index in `_id` order (newest first), which is what keeps its cursor
//! pagination a range scan:
//! - a metadata filter: `{metadataTerms: 1, _id: -1}`, one multikey index over the
//!   `key=value` terms of every transaction with metadata (partial: the others are not in it),
//!   so any key's exact value is one index range, already in `_id` order;
//! - an account (or a USER's visibility, an `$or` of them): the `fromAccount`, `toAccount`
//!   and `initiator` indexes, each `{…: 1, _id: -1}`;
//! - otherwise the `_id` index itself.
//!
//! `createdFrom`/`createdTo` also bound `_id`: a transaction's id is a UUIDv7 minted when it
//! is accepted, moments before its `createdAt` is set (a worker creating an upstream one sets
//! both within its batch), so every transaction created in the window has an id minted within
//! [`ID_SLACK`] of it. The exact `createdAt` range is still applied; the `_id` bounds only keep
//! the scan to the window. Amounts, status and kind are checked on the documents the walk
//! reaches: they narrow what is returned, not what is read.

use chrono::{DateTime, Utc};
use ledgerflow_domain::{Amount, MetadataKey, MetadataValue, search_term};
use mongodb::IndexModel;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::IndexOptions;

use crate::docs::to_bson_time;
use crate::{Store, StoreError, TransactionFilter};

/// How far a transaction's id may be minted from its `createdAt`, either way, for the `_id`
/// bounds of a time window (see the module documentation).
pub const ID_SLACK: chrono::Duration = chrono::Duration::minutes(5);

/// The name of the metadata index, as `explain` reports it.
pub const METADATA_INDEX: &str = "metadataTerms_1__id_-1";

/// Metadata, creation time and amount filters of a listing; all optional and ANDed.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// Each key must have exactly this value.
    pub metadata: Vec<(MetadataKey, MetadataValue)>,
    /// `createdAt` at or after this.
    pub created_from: Option<DateTime<Utc>>,
    /// `createdAt` before this (a half-open window: consecutive windows never overlap).
    pub created_to: Option<DateTime<Utc>>,
    /// `amount` at least this (inclusive).
    pub min_amount: Option<Amount>,
    /// `amount` at most this (inclusive).
    pub max_amount: Option<Amount>,
}

impl SearchFilter {
    /// The query clauses, to be ANDed with the listing's others.
    pub(crate) fn clauses(&self) -> Vec<Document> {
        let mut clauses = Vec::new();
        let terms: Vec<String> = self.metadata.iter().map(|(k, v)| search_term(k, v)).collect();
        match terms.as_slice() {
            [] => {}
            [term] => clauses.push(doc! { "metadataTerms": term }),
            _ => clauses.push(doc! { "metadataTerms": { "$all": terms } }),
        }
        let mut created = Document::new();
        let mut ids = Document::new();
        if let Some(from) = self.created_from {
            created.insert("$gte", to_bson_time(from));
            ids.insert("$gte", min_id_at(from - ID_SLACK));
        }
        if let Some(to) = self.created_to {
            created.insert("$lt", to_bson_time(to));
            ids.insert("$lt", min_id_at(to + ID_SLACK));
        }
        if !created.is_empty() {
            clauses.push(doc! { "createdAt": created });
            clauses.push(doc! { "_id": ids });
        }
        let mut amount = Document::new();
        if let Some(min) = self.min_amount {
            amount.insert("$gte", min.minor());
        }
        if let Some(max) = self.max_amount {
            amount.insert("$lte", max.minor());
        }
        if !amount.is_empty() {
            clauses.push(doc! { "amount": amount });
        }
        clauses
    }
}

/// The smallest id (as stored: a lowercase hyphenated UUID string) a UUIDv7 minted at `t` or
/// later can have: its 48-bit millisecond timestamp, then zeros. Ids compare as strings in
/// time order.
fn min_id_at(t: DateTime<Utc>) -> String {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0).min((1 << 48) - 1);
    format!("{:08x}-{:04x}-0000-0000-000000000000", ms >> 16, ms & 0xffff)
}

/// The metadata index (see the module documentation).
pub(crate) fn metadata_index() -> IndexModel {
    let options = IndexOptions::builder()
        .name(METADATA_INDEX.to_owned())
        .partial_filter_expression(doc! { "metadataTerms": { "$exists": true } })
        .build();
    IndexModel::builder().keys(doc! { "metadataTerms": 1, "_id": -1 }).options(options).build()
}

/// How MongoDB runs a listing, from its `explain` (`executionStats`): which indexes the
/// winning plan scans, whether it reads the whole collection or sorts in memory, and what it
/// examined for what it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPlan {
    /// The names of the indexes its IXSCAN stages use.
    pub indexes: Vec<String>,
    /// Every stage of the winning plan (`LIMIT`, `FETCH`, `IXSCAN`, `COLLSCAN`, `SORT`…).
    pub stages: Vec<String>,
    pub keys_examined: i64,
    pub docs_examined: i64,
    pub returned: i64,
}

impl Store {
    /// Asks MongoDB how it runs [`Store::list_transactions`] with this filter: the same query,
    /// sort and limit.
    pub async fn explain_transactions(&self, f: &TransactionFilter) -> Result<SearchPlan, StoreError> {
        let query = doc! {
            "find": self.transactions().name(),
            "filter": f.to_document(),
            "sort": { "_id": -1 },
            "limit": f.limit.clamp(1, crate::MAX_PAGE),
        };
        let answer = self.db.run_command(doc! { "explain": query, "verbosity": "executionStats" }).await?;
        let malformed = |what: &str| StoreError::Database(mongodb::error::Error::custom(format!("explain: no {what}")));
        let stats = answer.get_document("executionStats").map_err(|_| malformed("executionStats"))?;
        let winning = answer
            .get_document("queryPlanner")
            .and_then(|p| p.get_document("winningPlan"))
            .map_err(|_| malformed("winningPlan"))?;
        let mut plan = SearchPlan {
            indexes: Vec::new(),
            stages: Vec::new(),
            keys_examined: count(stats, "totalKeysExamined"),
            docs_examined: count(stats, "totalDocsExamined"),
            returned: count(stats, "nReturned"),
        };
        walk(winning, &mut plan);
        Ok(plan)
    }
}

/// Collects the stages and index names of a plan tree (classic or slot-based engine: the
/// latter nests the classic tree under `queryPlan`).
fn walk(stage: &Document, plan: &mut SearchPlan) {
    if let Ok(name) = stage.get_str("stage") {
        plan.stages.push(name.to_owned());
    }
    if let Ok(index) = stage.get_str("indexName") {
        plan.indexes.push(index.to_owned());
    }
    for key in ["queryPlan", "inputStage"] {
        if let Ok(child) = stage.get_document(key) {
            walk(child, plan);
        }
    }
    if let Ok(children) = stage.get_array("inputStages") {
        for child in children {
            if let Bson::Document(child) = child {
                walk(child, plan);
            }
        }
    }
}

/// A count from `explain`, whichever numeric type the server chose; -1 if absent.
fn count(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(f)) => *f as i64,
        _ => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_id_of_a_moment_sorts_before_every_id_minted_then_or_later() {
        let id = ledgerflow_domain::TransactionId::generate();
        let (secs, nanos) = id.as_uuid().get_timestamp().expect("a UUIDv7").to_unix();
        let minted = DateTime::from_timestamp(i64::try_from(secs).expect("secs"), nanos).expect("a time");
        let id = id.to_string();
        assert!(min_id_at(minted) <= id, "{} <= {id}", min_id_at(minted));
        assert!(min_id_at(minted + chrono::Duration::milliseconds(1)) > id);
        assert!(min_id_at(minted - chrono::Duration::milliseconds(1)) < id);
    }
}
