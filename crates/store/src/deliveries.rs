//! The deliveries of events to webhooks, as the dispatchers share them out.
//!
//! `deliveries`: one document per webhook and event, `{webhookId, eventId, eventCreatedAt,
//! status: PENDING|DELIVERED|FAILED, attempts: [{at, statusCode?, durationMs, error?}], tries,
//! firstAttemptAt?, nextAttemptAt, lockedUntil, lockedBy, createdAt}`. The unique index on
//! `{webhookId, eventId}` makes a second fan-out of the same event (two dispatchers, or one
//! after a crash) insert nothing. A dispatcher sends only what it claimed: the claim sets
//! `lockedUntil` (a lease) in one `findOneAndUpdate`, so two dispatchers never hold the same
//! attempt, and the attempt's outcome is written only while the lease is still its own.
//!
//! A delivery that settled (DELIVERED or FAILED) carries `settledAt` and is removed
//! [`DELIVERY_HISTORY`] later by a TTL index.
//!
//! `dispatcherCheckpoints`: `{_id: "fanout", after}`, the last event id whose deliveries are
//! all inserted; only ever raised (`$max`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ledgerflow_domain::WebhookId;
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, IndexModel};
use serde::{Deserialize, Serialize};

use crate::docs::{field, from_bson_time, to_bson_time};
use crate::error::{is_duplicate_key, only_duplicates};
use crate::{Store, StoreError};

/// Attempts a delivery keeps in its history (the oldest go first): at the default schedule, a
/// 72-hour horizon is about 80 attempts.
const ATTEMPTS_KEPT: i32 = 100;

/// How long a DELIVERED or FAILED delivery stays listed (and redeliverable from its webhook's
/// history) after it settled: as long as events are kept by default.
pub const DELIVERY_HISTORY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DeliveryStatus {
    /// Not yet sent, or to be sent again at `nextAttemptAt`.
    Pending,
    /// An attempt was answered 2xx.
    Delivered,
    /// Given up (past the retry horizon, or nothing left to send); redeliverable.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Failed => "FAILED",
        }
    }
}

/// One try at sending an event to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    #[serde(with = "bson_time")]
    pub at: DateTime<Utc>,
    /// The endpoint's answer, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    pub duration_ms: i64,
    /// Why it did not succeed, when not for its status code alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

mod bson_time {
    use chrono::{DateTime, Utc};
    use mongodb::bson::DateTime as BsonDateTime;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        crate::docs::to_bson_time(*t).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        BsonDateTime::deserialize(d).map(crate::docs::from_bson_time)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryDoc {
    webhook_id: String,
    event_id: i64,
    event_created_at: BsonDateTime,
    status: DeliveryStatus,
    #[serde(default)]
    attempts: Vec<Attempt>,
    #[serde(default)]
    tries: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_attempt_at: Option<BsonDateTime>,
    next_attempt_at: BsonDateTime,
    locked_until: BsonDateTime,
    #[serde(default)]
    locked_by: Option<String>,
    created_at: BsonDateTime,
}

/// A delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub webhook_id: WebhookId,
    pub event_id: i64,
    pub event_created_at: DateTime<Utc>,
    pub status: DeliveryStatus,
    /// The latest attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// Attempts since it was (re)queued: what the backoff grows with.
    pub tries: u32,
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// When it is due (meaningful while PENDING).
    pub next_attempt_at: DateTime<Utc>,
}

impl TryFrom<DeliveryDoc> for DeliveryRecord {
    type Error = StoreError;

    fn try_from(d: DeliveryDoc) -> Result<Self, StoreError> {
        Ok(Self {
            webhook_id: field("deliveries", &d.webhook_id, &d.webhook_id)?,
            event_id: d.event_id,
            event_created_at: from_bson_time(d.event_created_at),
            status: d.status,
            attempts: d.attempts,
            tries: u32::try_from(d.tries).unwrap_or(u32::MAX),
            first_attempt_at: d.first_attempt_at.map(from_bson_time),
            next_attempt_at: from_bson_time(d.next_attempt_at),
        })
    }
}

/// A delivery the fan-out creates: this webhook is to receive this event.
#[derive(Debug, Clone, Copy)]
pub struct NewDelivery {
    pub webhook_id: WebhookId,
    pub event_id: i64,
    pub event_created_at: DateTime<Utc>,
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// No more tries (the horizon is past, or there is nothing to send).
    Failed,
}

/// The dispatcher's backlog, for its gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryBacklog {
    /// PENDING deliveries that were tried at least once.
    pub retrying: u64,
    /// When the oldest event still PENDING somewhere was created.
    pub oldest_pending: Option<DateTime<Utc>>,
}

const EPOCH: BsonDateTime = BsonDateTime::MIN;

impl Store {
    fn deliveries(&self) -> Collection<DeliveryDoc> {
        self.db.collection("deliveries")
    }

    fn dispatcher_checkpoints(&self) -> Collection<Document> {
        self.db.collection("dispatcherCheckpoints")
    }

    /// The deliveries' indexes: part of [`Store::ensure_indexes`].
    pub(crate) async fn ensure_delivery_indexes(&self) -> Result<(), StoreError> {
        let index = |keys, options: Option<IndexOptions>| IndexModel::builder().keys(keys).options(options).build();
        let pending = |name: &str| {
            IndexOptions::builder()
                .name(name.to_owned())
                .partial_filter_expression(doc! { "status": DeliveryStatus::Pending.as_str() })
                .build()
        };
        self.deliveries()
            .create_indexes([
                // One delivery per webhook and event, however many fan-outs.
                index(doc! { "webhookId": 1, "eventId": 1 }, Some(IndexOptions::builder().unique(true).build())),
                // The claims' look for due deliveries: only PENDING ones are in it.
                index(doc! { "nextAttemptAt": 1 }, Some(pending("pending_nextAttemptAt"))),
                // The gauge of the oldest undelivered event.
                index(doc! { "eventCreatedAt": 1 }, Some(pending("pending_eventCreatedAt"))),
                // Settled deliveries go after a while; PENDING ones have no `settledAt`.
                index(doc! { "settledAt": 1 }, Some(IndexOptions::builder().expire_after(DELIVERY_HISTORY).build())),
            ])
            .await?;
        Ok(())
    }

    /// Where the fan-out stands: every event up to this id has its deliveries (0: none yet).
    pub async fn fanout_checkpoint(&self) -> Result<i64, StoreError> {
        let found = self.dispatcher_checkpoints().find_one(doc! { "_id": "fanout" }).await?;
        Ok(found.and_then(|d| d.get("after").and_then(Bson::as_i64)).unwrap_or(0))
    }

    /// Raises the fan-out checkpoint to `after` (never lowers it: another dispatcher may be
    /// further on).
    pub async fn advance_fanout_checkpoint(&self, after: i64) -> Result<(), StoreError> {
        let update = doc! { "$max": { "after": after } };
        match self.dispatcher_checkpoints().update_one(doc! { "_id": "fanout" }, update).upsert(true).await {
            Ok(_) => Ok(()),
            // Two first upserts at once: the other made the document; raise it again.
            Err(e) if is_duplicate_key(&e) => {
                let update = doc! { "$max": { "after": after } };
                self.dispatcher_checkpoints().update_one(doc! { "_id": "fanout" }, update).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts deliveries, skipping those that exist (another fan-out made them).
    pub async fn insert_deliveries(&self, new: &[NewDelivery]) -> Result<(), StoreError> {
        if new.is_empty() {
            return Ok(());
        }
        let now = to_bson_time(Utc::now());
        let docs = new.iter().map(|d| DeliveryDoc {
            webhook_id: d.webhook_id.to_string(),
            event_id: d.event_id,
            event_created_at: to_bson_time(d.event_created_at),
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            tries: 0,
            first_attempt_at: None,
            next_attempt_at: now,
            locked_until: EPOCH,
            locked_by: None,
            created_at: now,
        });
        match self.deliveries().insert_many(docs).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) if only_duplicates(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Claims the PENDING delivery due soonest, for `lease`, as `by`, skipping the webhooks
    /// in `busy` (those with as many attempts in flight as they may have).
    pub async fn claim_delivery(
        &self,
        by: &str,
        lease: Duration,
        busy: &[WebhookId],
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let busy: Vec<String> = busy.iter().map(ToString::to_string).collect();
        let filter = doc! {
            "status": DeliveryStatus::Pending.as_str(),
            "nextAttemptAt": { "$lte": to_bson_time(now) },
            "lockedUntil": { "$lte": to_bson_time(now) },
            "webhookId": { "$nin": busy },
        };
        let update = doc! { "$set": { "lockedUntil": to_bson_time(until), "lockedBy": by } };
        let claimed = self
            .deliveries()
            .find_one_and_update(filter, update)
            .sort(doc! { "nextAttemptAt": 1 })
            .return_document(ReturnDocument::After)
            .await?;
        claimed.map(TryInto::try_into).transpose()
    }

    /// Records an attempt of a delivery claimed by `by`, and what follows from it. `false`
    /// when the claim was no longer `by`'s (its lease ran out, or it was redelivered), in which
    /// case nothing is written.
    pub async fn finish_attempt(
        &self,
        delivery: &DeliveryRecord,
        by: &str,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError> {
        let filter = doc! {
            "webhookId": delivery.webhook_id.to_string(),
            "eventId": delivery.event_id,
            "lockedBy": by,
            "status": DeliveryStatus::Pending.as_str(),
        };
        let (status, next) = match outcome {
            AttemptOutcome::Delivered => (DeliveryStatus::Delivered, attempt.at),
            AttemptOutcome::RetryAt(at) => (DeliveryStatus::Pending, at),
            AttemptOutcome::Failed => (DeliveryStatus::Failed, attempt.at),
        };
        let attempt_doc = mongodb::bson::to_bson(attempt).map_err(|e| StoreError::Corrupt {
            collection: "deliveries",
            id: delivery.webhook_id.to_string(),
            reason: e.to_string(),
        })?;
        let mut set = doc! {
            "status": status.as_str(),
            "nextAttemptAt": to_bson_time(next),
            "lockedUntil": EPOCH,
            "lockedBy": Bson::Null,
        };
        // A settled delivery is kept for DELIVERY_HISTORY (the TTL index on `settledAt`); a
        // PENDING one has no `settledAt` and is never expired.
        if status != DeliveryStatus::Pending {
            set.insert("settledAt", to_bson_time(attempt.at));
        }
        let update = doc! {
            "$push": { "attempts": { "$each": [attempt_doc], "$slice": -ATTEMPTS_KEPT } },
            "$inc": { "tries": 1 },
            "$min": { "firstAttemptAt": to_bson_time(delivery.first_attempt_at.unwrap_or(attempt.at)) },
            "$set": set,
        };
        Ok(self.deliveries().update_one(filter, update).await?.matched_count == 1)
    }

    /// Queues `event_id` again for each of `webhooks`, due now, with a fresh retry horizon:
    /// an existing delivery (whatever its status) keeps its attempts, a missing one is made.
    pub async fn redeliver(
        &self,
        webhooks: &[WebhookId],
        event_id: i64,
        event_created_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = to_bson_time(Utc::now());
        for webhook in webhooks {
            let filter = doc! { "webhookId": webhook.to_string(), "eventId": event_id };
            let update = doc! {
                "$set": {
                    "status": DeliveryStatus::Pending.as_str(),
                    "nextAttemptAt": now,
                    "lockedUntil": EPOCH,
                    "lockedBy": Bson::Null,
                    "tries": 0_i64,
                },
                "$unset": { "firstAttemptAt": "", "settledAt": "" },
                "$setOnInsert": {
                    "eventCreatedAt": to_bson_time(event_created_at),
                    "attempts": [],
                    "createdAt": now,
                },
            };
            let upserted = self.deliveries().update_one(filter.clone(), update.clone()).upsert(true).await;
            match upserted {
                Ok(_) => {}
                // A fan-out inserted it in between: it exists now.
                Err(e) if is_duplicate_key(&e) => {
                    self.deliveries().update_one(filter, update).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A webhook's deliveries, newest event first, before event `before` when given.
    pub async fn list_deliveries(
        &self,
        webhook: WebhookId,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut filter = doc! { "webhookId": webhook.to_string() };
        if let Some(before) = before {
            filter.insert("eventId", doc! { "$lt": before });
        }
        let docs: Vec<DeliveryDoc> = self
            .deliveries()
            .find(filter)
            .sort(doc! { "eventId": -1 })
            .limit(limit.clamp(1, crate::MAX_PAGE))
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(TryInto::try_into).collect()
    }

    /// What the dispatcher's gauges show.
    pub async fn delivery_backlog(&self) -> Result<DeliveryBacklog, StoreError> {
        let pending = DeliveryStatus::Pending.as_str();
        let retrying = self.deliveries().count_documents(doc! { "status": pending, "tries": { "$gt": 0 } }).await?;
        let oldest = self
            .deliveries()
            .find_one(doc! { "status": pending })
            .sort(doc! { "eventCreatedAt": 1 })
            .await?
            .map(|d| from_bson_time(d.event_created_at));
        Ok(DeliveryBacklog { retrying, oldest_pending: oldest })
    }
}
