//! Webhooks: who receives which events, where, signed with what.
//!
//! `webhooks`: `{_id: uuid, ownerId, ownerRole, url, types, accounts?, secret, createdAt,
//! deletedAt?}`. A deletion only marks the document, so that its deliveries stay explained;
//! every read but the dispatcher's skips deleted ones. What is sent, and how often, is in
//! `deliveries`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ledgerflow_domain::webhooks::{EventTypes, WebhookUrl};
use ledgerflow_domain::{AccountId, EventType, Initiator, Role, UserId, WebhookId};
use mongodb::bson::{DateTime as BsonDateTime, Document, doc};
use mongodb::{Collection, IndexModel};
use serde::{Deserialize, Serialize};

use crate::docs::{field, from_bson_time, to_bson_time};
use crate::events::EventRecord;
use crate::{Store, StoreError};

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

impl Store {
    fn webhooks(&self) -> Collection<WebhookDoc> {
        self.db.collection("webhooks")
    }

    /// The indexes of webhooks and deliveries: part of [`Store::ensure_indexes`].
    pub(crate) async fn ensure_webhook_indexes(&self) -> Result<(), StoreError> {
        let by_owner = IndexModel::builder().keys(doc! { "ownerId": 1, "_id": 1 }).build();
        self.webhooks().create_index(by_owner).await?;
        self.ensure_delivery_indexes().await
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
