//! The event stream: a transactional outbox, and the sequenced events made of it.
//!
//! Every change of a transaction (accepted PENDING, decided, a hold settled or expired, an
//! original reversed) writes its event to the **outbox** in the MongoDB transaction that makes
//! the change: no change commits without its event, and no event without its change, whatever
//! crashes when. A commit's events go into one outbox document (several past
//! [`OUTBOX_DOC_EVENTS`]), in the order the commit made them: each document costs an insert, a
//! change on the stream and a delete, whatever it holds. Outbox events carry no public id,
//! because a transaction cannot know where it falls in commit order until it has committed.
//!
//! The relay (one leader among the worker processes, [`Store::claim_relay`]) reads the outbox
//! inserts through a change stream, which MongoDB delivers in commit order, and moves their
//! events into `events` under increasing ids, in one transaction that also deletes them from
//! the outbox and stores the change stream's resume token: an event's id is its place in
//! commit order, so a reader that has seen every id up to `n` never later finds an event below
//! `n`, and `after=n` is a gap-free cursor. Every write of the relay is fenced by its lease's epoch: a relay that
//! lost its lease (paused, partitioned) can no longer sequence or mark anything. The relay then
//! publishes the events above the last one confirmed, in order, and records how far it got.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ledgerflow_api::{EventAccountBody, EventBody, TransactionBody};
use ledgerflow_domain::{AccountId, Currency, EventType, Initiator, TransactionId, UserId};
use mongodb::bson::{self, Bson, DateTime as BsonDateTime, Document, RawDocumentBuf, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::options::ReturnDocument;
use mongodb::{ClientSession, Collection};
use serde::{Deserialize, Serialize};

use crate::docs::{from_bson_time, to_bson_time};
use crate::error::is_duplicate_key;
use crate::execute::{begin, finish};
use crate::{Store, StoreError, TransactionRecord, render};

/// The state of the relay's single stream: one document in `relay`.
const RELAY_STATE: &str = "events";
/// Most outbox changes the relay's change stream fetches at once.
const FEED_BATCH: u32 = 256;
/// Most events in one outbox document: a gateway's batch of 1,000 or a commit that also
/// settles holds writes several, each a bounded size whatever its transactions' metadata.
const OUTBOX_DOC_EVENTS: usize = 64;
/// Change stream errors: the resume token fell off the oplog, or is not on it (the database
/// was restored from a backup, say, or the outbox dropped).
const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
const CHANGE_STREAM_FATAL: i32 = 280;

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
struct EventDoc<I> {
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

    fn sequenced(self, id: i64) -> EventDoc<i64> {
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
struct OutboxDoc {
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
    fn events_of(raw: &RawDocumentBuf) -> Result<Vec<EventDoc<i64>>, StoreError> {
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

/// A relay's hold on the stream: valid while `epoch` is the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLease {
    pub epoch: i64,
}

/// Where the relay stands: the next id to give, the last id whose publish was confirmed, and
/// the change stream's resume token (none before the first sequencing).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RelayState {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    holder: Option<String>,
    #[serde(default)]
    epoch: i64,
    #[serde(default = "epoch_start")]
    lease_until: BsonDateTime,
    #[serde(default)]
    last_id: i64,
    #[serde(default)]
    published: i64,
    #[serde(default)]
    token: Option<ResumeToken>,
}

fn epoch_start() -> BsonDateTime {
    BsonDateTime::from_millis(0)
}

impl Default for RelayState {
    /// Nobody's, nothing numbered yet.
    fn default() -> Self {
        Self {
            id: RELAY_STATE.to_owned(),
            holder: None,
            epoch: 0,
            lease_until: epoch_start(),
            last_id: 0,
            published: 0,
            token: None,
        }
    }
}

/// The outbox's inserts, in commit order, from a change stream.
pub struct OutboxFeed {
    stream: ChangeStream<ChangeStreamEvent<Document>>,
}

impl OutboxFeed {
    /// The ids of the outbox documents inserted since the last call, in commit order, until
    /// they hold `max_events` events or more (a document is taken whole); waits up to the
    /// stream's await time for the first. Errors when the stream's history is lost
    /// ([`StoreError::is_history_lost`]) or the server is unreachable.
    pub async fn next_ids(&mut self, max_events: usize) -> Result<Vec<String>, StoreError> {
        let (mut ids, mut events) = (Vec::new(), 0);
        while events < max_events {
            let Some(change) = self.stream.next_if_any().await? else { break };
            if let Some(Bson::String(id)) = change.document_key.as_ref().and_then(|k| k.get("_id")) {
                ids.push(id.clone());
                events += change.full_document.as_ref().map_or(1, event_count);
            }
        }
        Ok(ids)
    }

    /// Where to resume after what [`Self::next_ids`] returned.
    pub fn resume_token(&self) -> Option<ResumeToken> {
        self.stream.resume_token()
    }
}

/// How many events an outbox document (or its change, without them) holds: `n`, or one for a
/// document of an earlier version.
fn event_count(doc: &Document) -> usize {
    doc.get_i64("n").ok().and_then(|n| usize::try_from(n).ok()).unwrap_or(1).max(1)
}

impl StoreError {
    /// The change stream cannot go on from its resume point (gone from the oplog, or never on
    /// it): start again from the outbox.
    pub fn is_history_lost(&self) -> bool {
        matches!(self, StoreError::Database(e)
            if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c)
                if c.code == CHANGE_STREAM_HISTORY_LOST || c.code == CHANGE_STREAM_FATAL))
    }
}

impl Store {
    fn outbox(&self) -> Collection<OutboxDoc> {
        self.db.collection("outbox")
    }

    fn events(&self) -> Collection<EventDoc<i64>> {
        self.db.collection("events")
    }

    fn relay_states(&self) -> Collection<RelayState> {
        self.db.collection("relay")
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
    async fn find_events(&self, f: &EventFilter, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        let docs: Vec<EventDoc<i64>> =
            self.events().find(f.to_document()).sort(doc! { "_id": 1 }).limit(limit).await?.try_collect().await?;
        docs.into_iter().map(TryInto::try_into).collect()
    }

    pub async fn find_event(&self, id: i64) -> Result<Option<EventRecord>, StoreError> {
        self.events().find_one(doc! { "_id": id }).await?.map(TryInto::try_into).transpose()
    }

    /// With `current`, renews that lease for `ttl` if it is still `holder`'s. Without, takes
    /// the lease if nobody else holds it unexpired, under a new epoch, which fences off every
    /// write of the last holder. `None` while another holds it.
    pub async fn claim_relay(
        &self,
        holder: &str,
        current: Option<RelayLease>,
        ttl: Duration,
    ) -> Result<Option<RelayLease>, StoreError> {
        let now = Utc::now();
        let until = to_bson_time(now + chrono::Duration::from_std(ttl).unwrap_or_default());
        if let Some(lease) = current {
            let renewed = self
                .relay_states()
                .update_one(
                    doc! { "_id": RELAY_STATE, "holder": holder, "epoch": lease.epoch },
                    doc! { "$set": { "leaseUntil": until } },
                )
                .await?;
            return Ok((renewed.matched_count == 1).then_some(lease));
        }
        if let Err(e) = self.relay_states().insert_one(RelayState::default()).await
            && !is_duplicate_key(&e)
        {
            return Err(e.into());
        }
        let taken = self
            .relay_states()
            .find_one_and_update(
                // Its own lease too: a holder that stopped leading after an error takes it
                // again at once, under a new epoch, rather than wait for it to run out.
                doc! {
                    "_id": RELAY_STATE,
                    "$or": [{ "leaseUntil": { "$lt": to_bson_time(now) } }, { "holder": holder }],
                },
                doc! { "$set": { "holder": holder, "leaseUntil": until }, "$inc": { "epoch": 1_i64 } },
            )
            .return_document(ReturnDocument::After)
            .await?;
        Ok(taken.map(|state| RelayLease { epoch: state.epoch }))
    }

    /// Gives the lease up (on shutdown), so that another relay takes over at once.
    pub async fn release_relay(&self, holder: &str, lease: RelayLease) -> Result<(), StoreError> {
        self.relay_states()
            .update_one(
                doc! { "_id": RELAY_STATE, "holder": holder, "epoch": lease.epoch },
                doc! { "$set": { "leaseUntil": epoch_start() } },
            )
            .await?;
        Ok(())
    }

    /// Follows the outbox's inserts from the stored resume token when `resume` and it is still
    /// on the oplog, or else from now; says which (from now, [`Store::unsequenced`] finds what
    /// came before).
    pub async fn outbox_feed(&self, resume: bool, wait: Duration) -> Result<(OutboxFeed, bool), StoreError> {
        let token = if resume { self.relay_state().await?.and_then(|s| s.token) } else { None };
        if token.is_some() {
            match self.watch_outbox(token, wait).await {
                Err(e) if e.is_history_lost() => {
                    tracing::warn!(error = %e, "the outbox's change stream lost its place; numbering from the outbox");
                }
                resumed => return resumed.map(|feed| (feed, true)),
            }
        }
        Ok((self.watch_outbox(None, wait).await?, false))
    }

    async fn watch_outbox(&self, token: Option<ResumeToken>, wait: Duration) -> Result<OutboxFeed, StoreError> {
        let stream = self
            .outbox()
            .clone_with_type::<Document>()
            .watch()
            // What the relay counts, not the events: a document of an earlier version (one
            // event, no `events`) comes whole, and counts as one.
            .pipeline([
                doc! { "$match": { "operationType": "insert" } },
                doc! { "$project": { "fullDocument.events": 0 } },
            ])
            .resume_after(token)
            .max_await_time(wait)
            // The relay takes a few hundred at a time; the driver's default batch (up to 16 MB
            // of changes) only inflates the leading worker's memory.
            .batch_size(FEED_BATCH)
            .await?;
        Ok(OutboxFeed { stream: stream.with_type() })
    }

    /// The id of the last event numbered (0: none yet).
    pub(crate) async fn last_numbered_event(&self) -> Result<i64, StoreError> {
        Ok(self.relay_state().await?.map_or(0, |s| s.last_id))
    }

    async fn relay_state(&self) -> Result<Option<RelayState>, StoreError> {
        Ok(self.relay_states().find_one(doc! { "_id": RELAY_STATE }).await?)
    }

    /// Outbox ids in the order their changes were decided, as many as hold up to
    /// `max_events` events (at least one document), and whether more wait: what to sequence
    /// when no change stream position is known (the first start, or one lost off the oplog).
    pub async fn unsequenced(&self, max_events: usize) -> Result<(Vec<String>, bool), StoreError> {
        // A document holds at least one event: one more than fit says whether more wait.
        let docs: Vec<Document> = self
            .outbox()
            .clone_with_type::<Document>()
            .find(doc! {})
            .sort(doc! { "createdAt": 1, "_id": 1 })
            .projection(doc! { "_id": 1, "n": 1 })
            .limit(i64::try_from(max_events).unwrap_or(i64::MAX).saturating_add(1))
            .await?
            .try_collect()
            .await?;
        let (mut ids, mut events) = (Vec::new(), 0);
        for d in &docs {
            let n = event_count(d);
            if !ids.is_empty() && events + n > max_events {
                return Ok((ids, true));
            }
            events += n;
            ids.extend(d.get_str("_id").ok().map(str::to_owned));
        }
        Ok((ids, false))
    }

    /// Moves the events of the outbox documents `ids` (in this order, each document's in its
    /// own; those already moved are skipped) into `events` under the next ids, and stores
    /// `token` as where the stream resumes, in one transaction fenced by `lease`. Returns how
    /// the events it numbered, in order, or [`StoreError::Contention`] when the lease is lost.
    pub async fn sequence(
        &self,
        lease: RelayLease,
        ids: &[String],
        token: Option<ResumeToken>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut session = begin(&self.client, false).await?;
        let done = self.sequence_in(&mut session, lease, ids, token).await.map(|events| (events, true));
        let numbered = finish(&mut session, done).await?;
        numbered.into_iter().map(TryInto::try_into).collect()
    }

    async fn sequence_in(
        &self,
        s: &mut ClientSession,
        lease: RelayLease,
        ids: &[String],
        token: Option<ResumeToken>,
    ) -> Result<Vec<EventDoc<i64>>, StoreError> {
        let state = self
            .relay_states()
            .find_one(doc! { "_id": RELAY_STATE, "epoch": lease.epoch })
            .session(&mut *s)
            .await?
            .ok_or(StoreError::Contention { attempts: 0 })?;
        let mut found: std::collections::HashMap<String, RawDocumentBuf> = self
            .outbox()
            .clone_with_type::<RawDocumentBuf>()
            .find(doc! { "_id": { "$in": ids } })
            .session(&mut *s)
            .await?
            .stream(&mut *s)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .filter_map(|d| Some((d.get_str("_id").ok()?.to_owned(), d)))
            .collect();
        let mut moved = Vec::new();
        let mut events = Vec::new();
        for id in ids {
            if let Some(raw) = found.remove(id) {
                events.extend(OutboxDoc::events_of(&raw)?);
                moved.push(id.clone());
            }
        }
        let n = events.len();
        let mut set = doc! { "lastId": state.last_id + n as i64 };
        if let Some(token) = token {
            set.insert(
                "token",
                bson::to_bson(&token).map_err(|e| StoreError::Corrupt {
                    collection: "relay",
                    id: RELAY_STATE.to_owned(),
                    reason: e.to_string(),
                })?,
            );
        }
        let events: Vec<EventDoc<i64>> =
            events.into_iter().zip(state.last_id + 1..).map(|(d, id)| d.sequenced(id)).collect();
        if n > 0 {
            self.events().insert_many(&events).session(&mut *s).await?;
        }
        if !moved.is_empty() {
            self.outbox().delete_many(doc! { "_id": { "$in": moved } }).session(&mut *s).await?;
        }
        let fenced = self
            .relay_states()
            .update_one(
                doc! { "_id": RELAY_STATE, "epoch": lease.epoch, "lastId": state.last_id },
                doc! { "$set": set },
            )
            .session(&mut *s)
            .await?;
        if fenced.matched_count != 1 {
            return Err(StoreError::Contention { attempts: 0 });
        }
        Ok(events)
    }

    /// Up to `limit` sequenced events not yet confirmed published, in order.
    pub async fn unpublished(&self, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        let published = self.relay_state().await?.map_or(0, |s| s.published);
        // The relay's batch, larger than a reader's page.
        self.find_events(&EventFilter { after: published, ..EventFilter::default() }, limit).await
    }

    /// Records that every event up to `id` is confirmed published (fenced by `lease`).
    pub async fn mark_published(&self, lease: RelayLease, id: i64) -> Result<bool, StoreError> {
        let marked = self
            .relay_states()
            .update_one(doc! { "_id": RELAY_STATE, "epoch": lease.epoch }, doc! { "$max": { "published": id } })
            .await?;
        Ok(marked.matched_count == 1)
    }

    /// How many outbox documents (commits' events) wait to be numbered, and how many numbered
    /// events wait to be published: the relay's backlog.
    pub async fn relay_backlog(&self) -> Result<(u64, i64), StoreError> {
        let outbox = self.outbox().estimated_document_count().await?;
        let state = self.relay_state().await?.unwrap_or_default();
        Ok((outbox, state.last_id - state.published))
    }
}
