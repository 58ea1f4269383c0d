//! The relay's side of the event stream (see `events` for the outbox it reads).
//!
//! The relay (one leader among the worker processes, [`Store::claim_relay`]) reads the outbox
//! inserts through a change stream, which MongoDB delivers in commit order, and moves their
//! events into `events` under increasing ids, in one transaction that also deletes them from
//! the outbox and stores the change stream's resume token: an event's id is its place in
//! commit order, so a reader that has seen every id up to `n` never later finds an event below
//! `n`, and `after=n` is a gap-free cursor. Every write of the relay is fenced by its lease's
//! epoch: a relay that lost its lease (paused, partitioned) can no longer sequence or mark
//! anything. The relay then publishes what it numbered, in order, and records how far the
//! broker confirmed.

use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, DateTime as BsonDateTime, Document, RawDocumentBuf, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::options::ReturnDocument;
use mongodb::{ClientSession, Collection};
use serde::{Deserialize, Serialize};

use crate::docs::to_bson_time;
use crate::error::is_duplicate_key;
use crate::events::{EventDoc, EventFilter, EventRecord, OutboxDoc};
use crate::execute::{begin, finish};
use crate::{Store, StoreError};

/// The state of the relay's single stream: one document in `relay`.
const RELAY_STATE: &str = "events";
/// Most outbox changes the relay's change stream fetches at once.
const FEED_BATCH: u32 = 256;
/// Change stream errors: the resume token fell off the oplog, or is not on it (the database
/// was restored from a backup, say, or the outbox dropped).
const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
const CHANGE_STREAM_FATAL: i32 = 280;

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
    fn relay_states(&self) -> Collection<RelayState> {
        self.db.collection("relay")
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
