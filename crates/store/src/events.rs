//! The event stream: a transactional outbox, and the sequenced events made of it.
//!
//! Every change of a transaction (accepted PENDING, decided, a hold settled or expired, an
//! original reversed) writes its event to the **outbox** in the MongoDB transaction that makes
//! the change: no change commits without its event, and no event without its change, whatever
//! crashes when. A commit's events go into one outbox document (several past
//! `OUTBOX_DOC_EVENTS`), in the order the commit made them: each document costs an insert, a
//! change on the stream and a delete, whatever it holds. Outbox events carry no public id,
//! because a transaction cannot know where it falls in commit order until it has committed:
//! the relay (`relay`) numbers them into `events`, which readers page through here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ledgerflow_api::{EventAccountBody, EventBody, TransactionBody};
use ledgerflow_domain::{AccountId, Currency, EventType, Initiator, TransactionId, UserId};
use mongodb::bson::{self, DateTime as BsonDateTime, Document, RawDocumentBuf, doc};
use mongodb::{ClientSession, Collection};
use serde::{Deserialize, Serialize};

use crate::docs::{from_bson_time, to_bson_time};
use crate::{Store, StoreError, TransactionRecord, render};

/// Most events in one outbox document: a gateway's batch of 1,000 or a commit that also
/// settles holds writes several, each a bounded size whatever its transactions' metadata.
const OUTBOX_DOC_EVENTS: usize = 64;

/// An account as an event shows it: as of the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventAccount {
    pub account_id: String,
    pub seq: i64,
    pub balance: i64,
    pub available: i64,
}

/// An event decided by a commit, before it is written to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventDraft {
    pub event_type: EventType,
    /// The transaction as it stands after the change.
    pub record: TransactionRecord,
    pub accounts: Vec<EventAccount>,
    pub at: DateTime<Utc>,
}

impl EventDraft {
    /// The event of `record` having just entered its status (acceptance for PENDING), with no
    /// balance of its own: for acceptances and for failures decided outside a commit.
    pub fn entering(record: &TransactionRecord, at: DateTime<Utc>) -> Self {
        Self { event_type: EventType::entering(record.status), record: record.clone(), accounts: Vec::new(), at }
    }
}

/// An outbox or event document. `I` is the id: a UUID in the outbox, the sequence number in
/// `events`. Besides what the public event shows, it keeps what routing and visibility need.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventDoc<I> {
    #[serde(rename = "_id")]
    id: I,
    #[serde(rename = "type")]
    event_type: String,
    created_at: BsonDateTime,
    transaction_id: String,
    /// The transaction exactly as `GET /transactions/{id}` showed it then.
    transaction: Document,
    accounts: Vec<EventAccount>,
    /// The routing key's currency: a journal's first leg's.
    currency: String,
    /// Every account the transaction names (each leg's, for a journal): who may see it.
    account_ids: Vec<String>,
    /// The idempotency scope of its initiator (a user id, or `service:<name>`).
    initiator: String,
}

impl<I> EventDoc<I> {
    /// The event `draft` describes, under `id`.
    fn of_draft(draft: &EventDraft, id: I) -> Result<Self, StoreError> {
        let record = &draft.record;
        let body = render::transaction(record);
        let transaction = bson::to_document(&body).map_err(|e| StoreError::Corrupt {
            collection: "outbox",
            id: record.id.to_string(),
            reason: format!("transaction not representable: {e}"),
        })?;
        Ok(Self {
            id,
            event_type: draft.event_type.as_str().to_owned(),
            created_at: to_bson_time(draft.at),
            transaction_id: record.id.to_string(),
            transaction,
            accounts: draft.accounts.clone(),
            currency: record.currency.code().to_owned(),
            account_ids: record.request().accounts().iter().map(ToString::to_string).collect(),
            initiator: record.initiator.to_string(),
        })
    }

    pub(crate) fn sequenced(self, id: i64) -> EventDoc<i64> {
        let EventDoc {
            event_type,
            created_at,
            transaction_id,
            transaction,
            accounts,
            currency,
            account_ids,
            initiator,
            ..
        } = self;
        EventDoc { id, event_type, created_at, transaction_id, transaction, accounts, currency, account_ids, initiator }
    }
}

/// An outbox document: the events of one commit (or of up to [`OUTBOX_DOC_EVENTS`] of them),
/// each under its place in it. Earlier versions wrote one event per document, an
/// `EventDoc<String>` (no `events` field), which the relay still reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutboxDoc {
    #[serde(rename = "_id")]
    id: String,
    created_at: BsonDateTime,
    /// How many events it holds: what the relay counts off the change stream, which leaves
    /// the events themselves out.
    n: i64,
    events: Vec<EventDoc<i64>>,
}

impl OutboxDoc {
    fn of_drafts(drafts: &[EventDraft]) -> Result<Self, StoreError> {
        let events = drafts.iter().zip(0..).map(|(d, k)| EventDoc::of_draft(d, k)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            id: uuid::Uuid::now_v7().to_string(),
            created_at: events.first().map_or_else(BsonDateTime::now, |e| e.created_at),
            n: events.len() as i64,
            events,
        })
    }

    /// The events of a stored outbox document, of this version or an earlier one.
    pub(crate) fn events_of(raw: &RawDocumentBuf) -> Result<Vec<EventDoc<i64>>, StoreError> {
        let id = || raw.get_str("_id").unwrap_or_default().to_owned();
        let corrupt =
            |e: bson::de::Error| StoreError::Corrupt { collection: "outbox", id: id(), reason: e.to_string() };
        if raw.get("events").ok().flatten().is_some() {
            let doc: OutboxDoc = bson::from_slice(raw.as_bytes()).map_err(corrupt)?;
            Ok(doc.events)
        } else {
            let one: EventDoc<String> = bson::from_slice(raw.as_bytes()).map_err(corrupt)?;
            Ok(vec![one.sequenced(0)])
        }
    }
}

/// An event as stored in `events`: its public body, and what routing and visibility need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: i64,
    pub event_type: EventType,
    pub created_at: DateTime<Utc>,
    pub transaction_id: TransactionId,
    pub transaction: TransactionBody,
    pub accounts: Vec<EventAccount>,
    pub currency: Currency,
    pub account_ids: Vec<AccountId>,
    /// The initiator's idempotency scope, as stored (a user id, or `service:<name>`).
    pub initiator: String,
}

impl EventRecord {
    /// What the events API, the stream and webhooks show.
    pub fn body(&self) -> EventBody {
        EventBody {
            id: self.id,
            event_type: self.event_type.as_str().to_owned(),
            created_at: render::time(self.created_at),
            transaction_id: self.transaction_id.to_string(),
            transaction: self.transaction.clone(),
            accounts: self
                .accounts
                .iter()
                .map(|a| EventAccountBody {
                    account_id: a.account_id.clone(),
                    seq: a.seq,
                    balance: a.balance,
                    available: a.available,
                })
                .collect(),
        }
    }

    /// The routing key on `ledgerflow.events`: `<type>.<currency>`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.event_type.as_str(), self.currency.code())
    }

    /// Whether `user`, owning `accounts`, may see it: it initiated the transaction or owns one
    /// of its accounts (the rule of `GET /transactions/{id}`).
    pub fn visible_to(&self, user: UserId, accounts: &[AccountId]) -> bool {
        self.initiator == Initiator::User(user).to_string() || self.account_ids.iter().any(|a| accounts.contains(a))
    }
}

impl TryFrom<EventDoc<i64>> for EventRecord {
    type Error = StoreError;
    fn try_from(d: EventDoc<i64>) -> Result<Self, StoreError> {
        let id = d.id.to_string();
        let corrupt = |reason: String| StoreError::Corrupt { collection: "events", id: id.clone(), reason };
        let parse = |what: &str, e: &dyn std::fmt::Display| corrupt(format!("{what}: {e}"));
        Ok(Self {
            id: d.id,
            event_type: d.event_type.parse().map_err(|e| parse("type", &e))?,
            created_at: from_bson_time(d.created_at),
            transaction_id: d.transaction_id.parse().map_err(|e| parse("transactionId", &e))?,
            transaction: bson::from_document(d.transaction).map_err(|e| parse("transaction", &e))?,
            accounts: d.accounts,
            currency: d.currency.parse().map_err(|e| parse("currency", &e))?,
            account_ids: d
                .account_ids
                .iter()
                .map(|a| a.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| parse("accountIds", &e))?,
            initiator: d.initiator,
        })
    }
}

/// Which events a reader wants: after a cursor, oldest first.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events with a greater id.
    pub after: i64,
    /// Only these types (any, when empty).
    pub types: Vec<EventType>,
    /// Only events of transactions naming this account.
    pub account: Option<AccountId>,
    /// When set, only events this user may see (it initiated the transaction or owns one of
    /// these accounts).
    pub visible_to: Option<(UserId, Vec<AccountId>)>,
    pub limit: i64,
}

impl EventFilter {
    fn to_document(&self) -> Document {
        let mut clauses = vec![doc! { "_id": { "$gt": self.after } }];
        if !self.types.is_empty() {
            let types: Vec<&str> = self.types.iter().map(|t| t.as_str()).collect();
            clauses.push(doc! { "type": { "$in": types } });
        }
        if let Some(account) = self.account {
            clauses.push(doc! { "accountIds": account.to_string() });
        }
        if let Some((user, accounts)) = &self.visible_to {
            let accounts: Vec<String> = accounts.iter().map(ToString::to_string).collect();
            clauses.push(doc! { "$or": [
                { "initiator": Initiator::User(*user).to_string() },
                { "accountIds": { "$in": accounts } },
            ] });
        }
        doc! { "$and": clauses }
    }
}

impl Store {
    pub(crate) fn outbox(&self) -> Collection<OutboxDoc> {
        self.db.collection("outbox")
    }

    pub(crate) fn events(&self) -> Collection<EventDoc<i64>> {
        self.db.collection("events")
    }

    /// Writes `drafts`, a commit's events in the order it made them, to the outbox in the
    /// caller's transaction.
    pub(crate) async fn write_events(&self, s: &mut ClientSession, drafts: &[EventDraft]) -> Result<(), StoreError> {
        if drafts.is_empty() {
            return Ok(());
        }
        let docs = drafts.chunks(OUTBOX_DOC_EVENTS).map(OutboxDoc::of_drafts).collect::<Result<Vec<_>, _>>()?;
        self.outbox().insert_many(docs).session(s).await?;
        Ok(())
    }

    /// Indexes of the events: readers' cursors by account and by initiator, and the retention
    /// (a TTL index on `createdAt`; changed in place when `retention` changes).
    pub async fn ensure_event_indexes(&self, retention: Duration) -> Result<(), StoreError> {
        let index = |keys| mongodb::IndexModel::builder().keys(keys).build();
        self.events()
            .create_indexes([index(doc! { "accountIds": 1, "_id": 1 }), index(doc! { "initiator": 1, "_id": 1 })])
            .await?;
        let seconds = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let ttl =
            mongodb::options::IndexOptions::builder().name("createdAt_ttl".to_owned()).expire_after(retention).build();
        let model = mongodb::IndexModel::builder().keys(doc! { "createdAt": 1 }).options(ttl).build();
        if let Err(e) = self.events().create_index(model).await {
            // Same name, other options: the retention changed; change the index in place.
            // IndexOptionsConflict (85) or IndexKeySpecsConflict (86).
            if !matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 85 || c.code == 86) {
                return Err(e.into());
            }
            self.db
                .run_command(doc! {
                    "collMod": "events",
                    "index": { "name": "createdAt_ttl", "expireAfterSeconds": seconds },
                })
                .await?;
        }
        self.outbox().create_index(index(doc! { "createdAt": 1, "_id": 1 })).await?;
        Ok(())
    }

    /// Events after `f.after`, oldest first, at most `f.limit` (a page: at most one more than
    /// `MAX_PAGE`, so a reader can tell whether there is more).
    pub async fn events_after(&self, f: &EventFilter) -> Result<Vec<EventRecord>, StoreError> {
        self.find_events(f, f.limit.clamp(1, crate::MAX_PAGE + 1)).await
    }

    /// The events `f` selects, oldest first, at most `limit`.
    pub(crate) async fn find_events(&self, f: &EventFilter, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        let docs: Vec<EventDoc<i64>> =
            self.events().find(f.to_document()).sort(doc! { "_id": 1 }).limit(limit).await?.try_collect().await?;
        docs.into_iter().map(TryInto::try_into).collect()
    }

    pub async fn find_event(&self, id: i64) -> Result<Option<EventRecord>, StoreError> {
        self.events().find_one(doc! { "_id": id }).await?.map(TryInto::try_into).transpose()
    }
}
