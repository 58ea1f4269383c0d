//! A reader of the `events` collection for the webhook dispatcher, written to the event
//! contract (issue 29) while the outbox and its own reader are being built. STAND-IN: to be
//! replaced by the store's `EventRecord` and `Store::events_after` once they exist, whose
//! public JSON it produces the same way.
//!
//! `events`: `{_id: Int64, type, createdAt, transactionId, transaction, accounts: [{accountId,
//! seq, balance, available}], currency, accountIds, initiator}`; the last three are internal
//! and never leave LedgerFlow.

use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use ledgerflow_domain::webhooks::EventType;
use ledgerflow_domain::{AccountId, Initiator};
use mongodb::Collection;
use mongodb::bson::{DateTime as BsonDateTime, Document, doc};
use serde::{Deserialize, Serialize};

use crate::docs::{field, from_bson_time};
use crate::{Store, StoreError};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventDoc {
    #[serde(rename = "_id")]
    id: i64,
    #[serde(rename = "type")]
    kind: String,
    created_at: BsonDateTime,
    transaction_id: String,
    transaction: Document,
    #[serde(default)]
    accounts: Vec<AccountStateDoc>,
    #[serde(default)]
    account_ids: Vec<String>,
    initiator: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountStateDoc {
    account_id: String,
    seq: i64,
    balance: i64,
    available: i64,
}

/// An event as the dispatcher needs it: what to match webhooks on, and the exact bytes to
/// send.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub id: i64,
    pub event_type: EventType,
    pub created_at: DateTime<Utc>,
    /// Every account the transaction names (internal).
    pub account_ids: Vec<AccountId>,
    /// Who asked for the transaction (internal).
    pub initiator: Initiator,
    /// The public JSON: `{"id","type","createdAt","transactionId","transaction","accounts"}`.
    pub body: Vec<u8>,
}

/// The public JSON of an event, fields in the contract's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PublicEvent<'a> {
    id: i64,
    #[serde(rename = "type")]
    kind: &'a str,
    created_at: String,
    transaction_id: &'a str,
    transaction: serde_json::Value,
    accounts: &'a [AccountStateDoc],
}

impl TryFrom<EventDoc> for FeedEvent {
    type Error = StoreError;

    fn try_from(d: EventDoc) -> Result<Self, StoreError> {
        const C: &str = "events";
        let id = d.id.to_string();
        let corrupt = |reason: String| StoreError::Corrupt { collection: C, id: id.clone(), reason };
        let event_type: EventType = field(C, &id, &d.kind)?;
        let created_at = from_bson_time(d.created_at);
        let public = PublicEvent {
            id: d.id,
            kind: event_type.as_str(),
            created_at: created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            transaction_id: &d.transaction_id,
            transaction: mongodb::bson::Bson::Document(d.transaction.clone()).into_relaxed_extjson(),
            accounts: &d.accounts,
        };
        let body = serde_json::to_vec(&public).map_err(|e| corrupt(e.to_string()))?;
        Ok(Self {
            id: d.id,
            event_type,
            created_at,
            account_ids: d.account_ids.iter().map(|a| field(C, &id, a)).collect::<Result<_, _>>()?,
            initiator: field(C, &id, &d.initiator)?,
            body,
        })
    }
}

impl Store {
    fn feed(&self) -> Collection<EventDoc> {
        self.db.collection("events")
    }

    /// Up to `limit` events with ids above `after`, oldest first.
    pub async fn feed_events_after(&self, after: i64, limit: i64) -> Result<Vec<FeedEvent>, StoreError> {
        let docs: Vec<EventDoc> = self
            .feed()
            .find(doc! { "_id": { "$gt": after } })
            .sort(doc! { "_id": 1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(TryInto::try_into).collect()
    }

    /// One event, if it is (still) kept.
    pub async fn feed_event(&self, id: i64) -> Result<Option<FeedEvent>, StoreError> {
        self.feed().find_one(doc! { "_id": id }).await?.map(TryInto::try_into).transpose()
    }
}
