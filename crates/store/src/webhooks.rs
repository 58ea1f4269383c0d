//! Webhooks and their deliveries.
//!
//! `webhooks`: `{_id: uuid, ownerId, ownerRole, url, types, accounts?, secret, createdAt,
//! deletedAt?}`. A deletion only marks the document, so that its deliveries stay explained;
//! every read but the dispatcher's skips deleted ones.
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

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ledgerflow_domain::webhooks::{EventTypes, WebhookUrl};
use ledgerflow_domain::{AccountId, EventType, Initiator, Role, UserId, WebhookId};
use mongodb::bson::{Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, IndexModel};
use serde::{Deserialize, Serialize};

use crate::docs::{field, from_bson_time, to_bson_time};
use crate::error::{is_duplicate_key, only_duplicates};
use crate::events::EventRecord;
use crate::{Store, StoreError};

/// Attempts a delivery keeps in its history (the oldest go first): at the default schedule, a
/// 72-hour horizon is about 80 attempts.
const ATTEMPTS_KEPT: i32 = 100;

/// How long a DELIVERED or FAILED delivery stays listed (and redeliverable from its webhook's
/// history) after it settled: as long as events are kept by default.
pub const DELIVERY_HISTORY: Duration = Duration::from_secs(30 * 24 * 3600);

/// A webhook's signing secret: `whsec_` and 64 hex digits. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// The secret made of 32 random bytes (the caller draws them: the store makes no
    /// randomness of its own).
    pub fn from_random(bytes: [u8; 32]) -> Self {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("whsec_{hex}"))
    }

    /// The secret itself: for the one answer that shows it, and for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

/// What a webhook is registered with.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub owner: UserId,
    pub owner_role: Role,
    pub url: WebhookUrl,
    pub types: EventTypes,
    /// Only events naming one of these accounts; `None`: every event the owner may see.
    pub accounts: Option<BTreeSet<AccountId>>,
    pub secret: WebhookSecret,
}

/// A registered webhook.
#[derive(Debug, Clone)]
pub struct WebhookRecord {
    pub id: WebhookId,
    pub owner: UserId,
    pub owner_role: Role,
    pub url: WebhookUrl,
    pub types: EventTypes,
    pub accounts: Option<BTreeSet<AccountId>>,
    pub secret: WebhookSecret,
    pub created_at: DateTime<Utc>,
    /// The last event numbered when it was registered: it receives those after (`None` for a
    /// webhook registered before this was recorded: those created after it, by the clocks).
    pub starts_after: Option<i64>,
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookDoc {
    #[serde(rename = "_id")]
    id: String,
    owner_id: String,
    owner_role: Role,
    url: String,
    types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accounts: Option<Vec<String>>,
    secret: String,
    created_at: BsonDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    starts_after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_at: Option<BsonDateTime>,
}

impl TryFrom<WebhookDoc> for WebhookRecord {
    type Error = StoreError;

    fn try_from(d: WebhookDoc) -> Result<Self, StoreError> {
        const C: &str = "webhooks";
        let id = d.id.as_str();
        let types: Vec<EventType> = d.types.iter().map(|t| field(C, id, t)).collect::<Result<_, _>>()?;
        let accounts = match &d.accounts {
            Some(accounts) => Some(accounts.iter().map(|a| field(C, id, a)).collect::<Result<_, _>>()?),
            None => None,
        };
        Ok(Self {
            id: field(C, id, id)?,
            owner: field(C, id, &d.owner_id)?,
            owner_role: d.owner_role,
            // Stored URLs parsed once already; the policy is judged again at each delivery.
            url: field(C, id, &d.url)?,
            types: EventTypes::new(types).map_err(|e| StoreError::Corrupt {
                collection: C,
                id: id.to_owned(),
                reason: e.to_string(),
            })?,
            accounts,
            secret: WebhookSecret(d.secret),
            created_at: from_bson_time(d.created_at),
            starts_after: d.starts_after,
            deleted: d.deleted_at.is_some(),
        })
    }
}

/// What decides which webhooks receive an event.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    pub id: i64,
    pub event_type: EventType,
    pub created_at: DateTime<Utc>,
    /// The initiator's idempotency scope (a user id, or `service:<name>`).
    pub initiator: &'a str,
    /// Every account the transaction names.
    pub account_ids: &'a [AccountId],
}

impl EventRecord {
    pub fn facts(&self) -> EventFacts<'_> {
        EventFacts {
            id: self.id,
            event_type: self.event_type,
            created_at: self.created_at,
            initiator: &self.initiator,
            account_ids: &self.account_ids,
        }
    }
}

impl WebhookRecord {
    /// Whether `event` happened after this webhook was registered, so that it is to be sent
    /// (a new webhook is not sent the history; a redelivery asks for an event by name). By
    /// the event's number, not by the clocks: an event committed after the registration is
    /// numbered after it, whatever the clock of the worker that decided it said; one
    /// committed just before but numbered after is sent too, which at least once allows.
    pub fn follows(&self, event: &EventFacts<'_>) -> bool {
        match self.starts_after {
            Some(after) => event.id > after,
            None => self.created_at <= event.created_at,
        }
    }

    /// Whether this webhook is to receive `event`: one of its types, naming one of its
    /// accounts if it lists any, and one its owner may see (SYSTEM every event; a USER those
    /// it asked for and those naming an account of its own, `owned`: the rule of
    /// `GET /transactions/{id}`).
    pub fn receives(&self, event: &EventFacts<'_>, owned: &BTreeSet<AccountId>) -> bool {
        let names_any = |set: &BTreeSet<AccountId>| event.account_ids.iter().any(|a| set.contains(a));
        let visible = match self.owner_role {
            Role::System => true,
            Role::User => event.initiator == Initiator::User(self.owner).to_string() || names_any(owned),
        };
        visible && self.types.contains(event.event_type) && self.accounts.as_ref().is_none_or(names_any)
    }
}

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
    fn webhooks(&self) -> Collection<WebhookDoc> {
        self.db.collection("webhooks")
    }

    fn deliveries(&self) -> Collection<DeliveryDoc> {
        self.db.collection("deliveries")
    }

    fn dispatcher_checkpoints(&self) -> Collection<Document> {
        self.db.collection("dispatcherCheckpoints")
    }

    /// The indexes of webhooks and deliveries: part of [`Store::ensure_indexes`].
    pub(crate) async fn ensure_webhook_indexes(&self) -> Result<(), StoreError> {
        let index = |keys, options: Option<IndexOptions>| IndexModel::builder().keys(keys).options(options).build();
        let pending = |name: &str| {
            IndexOptions::builder()
                .name(name.to_owned())
                .partial_filter_expression(doc! { "status": DeliveryStatus::Pending.as_str() })
                .build()
        };
        self.webhooks().create_index(index(doc! { "ownerId": 1, "_id": 1 }, None)).await?;
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

    /// Registers a webhook; returns it as stored.
    pub async fn insert_webhook(&self, new: NewWebhook) -> Result<WebhookRecord, StoreError> {
        let starts_after = self.last_numbered_event().await?;
        let doc = WebhookDoc {
            id: WebhookId::generate().to_string(),
            owner_id: new.owner.to_string(),
            owner_role: new.owner_role,
            url: new.url.as_str().to_owned(),
            types: new.types.iter().map(|t| t.as_str().to_owned()).collect(),
            accounts: new.accounts.map(|a| a.iter().map(ToString::to_string).collect()),
            secret: new.secret.0,
            created_at: to_bson_time(Utc::now()),
            starts_after: Some(starts_after),
            deleted_at: None,
        };
        self.webhooks().insert_one(&doc).await?;
        doc.try_into()
    }

    /// How many live webhooks a user has.
    pub async fn count_webhooks(&self, owner: UserId) -> Result<u64, StoreError> {
        let filter = doc! { "ownerId": owner.to_string(), "deletedAt": { "$exists": false } };
        Ok(self.webhooks().count_documents(filter).await?)
    }

    /// A user's live webhooks, oldest first (at most `limit`).
    pub async fn list_webhooks(&self, owner: UserId, limit: i64) -> Result<Vec<WebhookRecord>, StoreError> {
        let filter = doc! { "ownerId": owner.to_string(), "deletedAt": { "$exists": false } };
        self.read_webhooks(filter, Some(limit)).await
    }

    /// Every live webhook: what the fan-out matches events against.
    pub async fn live_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.read_webhooks(doc! { "deletedAt": { "$exists": false } }, None).await
    }

    async fn read_webhooks(&self, filter: Document, limit: Option<i64>) -> Result<Vec<WebhookRecord>, StoreError> {
        let webhooks = self.webhooks();
        let find = webhooks.find(filter).sort(doc! { "_id": 1 });
        let docs: Vec<WebhookDoc> = match limit {
            Some(limit) => find.limit(limit).await?.try_collect().await?,
            None => find.await?.try_collect().await?,
        };
        docs.into_iter().map(TryInto::try_into).collect()
    }

    /// A webhook, deleted or not.
    pub async fn find_webhook(&self, id: WebhookId) -> Result<Option<WebhookRecord>, StoreError> {
        self.webhooks().find_one(doc! { "_id": id.to_string() }).await?.map(TryInto::try_into).transpose()
    }

    /// Marks a live webhook deleted; `false` if there was none. Its PENDING deliveries are
    /// given up by the dispatcher as it comes to them.
    pub async fn delete_webhook(&self, id: WebhookId) -> Result<bool, StoreError> {
        let filter = doc! { "_id": id.to_string(), "deletedAt": { "$exists": false } };
        let update = doc! { "$set": { "deletedAt": to_bson_time(Utc::now()) } };
        Ok(self.webhooks().update_one(filter, update).await?.matched_count == 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(event_type: EventType, initiator: &'a str, account_ids: &'a [AccountId]) -> EventFacts<'a> {
        EventFacts { id: 1, event_type, created_at: Utc::now(), initiator, account_ids }
    }

    fn webhook(owner: UserId, owner_role: Role, accounts: Option<&[AccountId]>) -> WebhookRecord {
        WebhookRecord {
            id: WebhookId::generate(),
            owner,
            owner_role,
            url: "https://example.com/".parse().expect("a URL"),
            types: EventTypes::new([EventType::Completed]).expect("types"),
            accounts: accounts.map(|a| a.iter().copied().collect()),
            secret: WebhookSecret::from_random([7; 32]),
            created_at: Utc::now(),
            starts_after: Some(0),
            deleted: false,
        }
    }

    #[test]
    fn a_users_webhook_receives_only_what_its_owner_may_see() {
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let (a, b) = (AccountId::generate(), AccountId::generate());
        let alices: BTreeSet<AccountId> = [a].into();
        let (alice_scope, bob_scope) = (alice.to_string(), bob.to_string());
        let hook = webhook(alice, Role::User, None);
        assert!(hook.receives(&event(EventType::Completed, &bob_scope, &[b, a]), &alices), "credits her account");
        assert!(hook.receives(&event(EventType::Completed, &alice_scope, &[b]), &alices), "she asked for it");
        assert!(!hook.receives(&event(EventType::Completed, &bob_scope, &[b]), &alices), "Bob's alone");
        assert!(!hook.receives(&event(EventType::Failed, &alice_scope, &[a]), &alices), "not its type");
        assert!(!hook.receives(&event(EventType::Completed, "service:payroll", &[b]), &alices), "a service's");
        let system = webhook(UserId::generate(), Role::System, None);
        assert!(system.receives(&event(EventType::Completed, &bob_scope, &[b]), &BTreeSet::new()));
    }

    #[test]
    fn an_account_filter_narrows_what_is_visible() {
        let alice = UserId::generate();
        let (a1, a2) = (AccountId::generate(), AccountId::generate());
        let hers: BTreeSet<AccountId> = [a1, a2].into();
        let scope = alice.to_string();
        let hook = webhook(alice, Role::User, Some(&[a1]));
        assert!(hook.receives(&event(EventType::Completed, &scope, &[a1]), &hers));
        assert!(!hook.receives(&event(EventType::Completed, &scope, &[a2]), &hers));
    }

    #[test]
    fn secrets_never_print() {
        let secret = WebhookSecret::from_random([0xab; 32]);
        assert!(secret.expose().starts_with("whsec_abab") && secret.expose().len() == 6 + 64);
        assert!(!format!("{secret:?}").contains("abab"));
    }
}
