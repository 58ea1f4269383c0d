//! The event relay: moves the outbox's events, in commit order, into the numbered event stream
//! and publishes them to the `ledgerflow.events` topic exchange (see `ledgerflow_store::events`
//! and the store's `relay`).
//!
//! Every worker runs one, and one at a time leads: the holder of a lease in MongoDB, renewed
//! every second and taken over by another worker within [`LEASE`] of its holder's death (at
//! once when it stops cleanly). Leading is fenced by the lease's epoch, so a paused leader that
//! wakes up after a takeover cannot number or mark anything; at worst it publishes a batch
//! again, which is why delivery is at least once and consumers dedupe by event id. In normal
//! operation nothing is published twice: one leader, and a publish is recorded as done once
//! the broker has confirmed it.
//!
//! Order: events are numbered in commit order and published in number order, each batch
//! confirmed before the next is sent, so each account's events (indeed all of them) reach the
//! exchange in order. After a crash the next leader resumes from the last confirmed one.

use std::time::{Duration, Instant};

use ledgerflow_messaging::{MessagingError, Publisher};
use ledgerflow_store::{EventRecord, RelayLease, ResumeToken, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a lease lasts unless renewed: how soon another worker takes over from a dead
/// leader.
const LEASE: Duration = Duration::from_secs(5);
/// How often the leader renews it.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a worker that does not lead tries to.
const STANDBY_POLL: Duration = Duration::from_secs(1);
/// How long the leader waits on the change stream for new outbox documents before it looks at
/// what is left to publish and at its lease again.
const FEED_WAIT: Duration = Duration::from_millis(100);
/// Most events numbered, or published, at once.
const BATCH: usize = 256;

/// Why leading stopped.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Broker(#[from] MessagingError),
    #[error("another relay holds the lease")]
    LeaseLost,
}

/// Tries to lead, and leads while it can, until `shutdown`.
pub(crate) async fn run(store: Store, publisher: Publisher, holder: String, shutdown: CancellationToken) {
    metrics::gauge!("ledgerflow_relay_leading").set(0.0);
    while !shutdown.is_cancelled() {
        match store.claim_relay(&holder, None, LEASE).await {
            Ok(Some(lease)) => {
                info!(relay = %holder, epoch = lease.epoch, "leading the event relay");
                metrics::gauge!("ledgerflow_relay_leading").set(1.0);
                let led = lead(&store, &publisher, &holder, lease, &shutdown).await;
                // Only a leader samples the backlog: a former one must not keep showing its last.
                for gauge in ["ledgerflow_relay_leading", "ledgerflow_events_outbox", "ledgerflow_events_unpublished"] {
                    metrics::gauge!(gauge).set(0.0);
                }
                match led {
                    Ok(lease) => {
                        // Stopping: hand over at once rather than after the lease runs out.
                        if let Err(e) = store.release_relay(&holder, lease).await {
                            debug!(error = %e, "could not release the relay's lease; it runs out by itself");
                        }
                    }
                    Err(e) => warn!(relay = %holder, error = %e, "stopped leading the event relay"),
                }
            }
            Ok(None) => {}
            Err(e) => debug!(error = %e, "could not claim the relay's lease"),
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(STANDBY_POLL) => {}
        }
    }
}

/// Leads until `shutdown` (returning the lease, to be released) or an error.
///
/// It first publishes what the last leader numbered and did not publish, then publishes each
/// batch as it numbers it, from what it just wrote: no read of `events` per batch.
///
/// It follows the outbox's change stream from where the last leader left it. Without such a
/// place (the first start, or one lost off the oplog) it opens the stream at now and first
/// numbers what the outbox already holds, in the order its changes were decided (the only time
/// the order is the decisions' clocks' rather than the commits'), a batch per turn of the same
/// loop, so that however long that takes the lease is renewed and what is numbered published.
async fn lead(
    store: &Store,
    publisher: &Publisher,
    holder: &str,
    mut lease: RelayLease,
    shutdown: &CancellationToken,
) -> Result<RelayLease, Stop> {
    let (mut feed, resumed) = store.outbox_feed(true, FEED_WAIT).await?;
    let mut draining = !resumed;
    let mut renewed = Instant::now();
    publish_numbered(store, publisher, lease).await?;
    while !shutdown.is_cancelled() {
        if renewed.elapsed() >= RENEW_EVERY {
            lease = store.claim_relay(holder, Some(lease), LEASE).await?.ok_or(Stop::LeaseLost)?;
            renewed = Instant::now();
            sample_backlog(store).await;
        }
        let numbered = if draining {
            let (ids, more) = store.unsequenced(BATCH).await?;
            draining = more;
            // The drain's last batch also stores the stream's place, so that the next leader
            // resumes instead of scanning.
            let token = if draining { None } else { feed.resume_token() };
            number(store, lease, &ids, token).await?
        } else {
            let ids = match feed.next_ids(BATCH).await {
                Ok(ids) => ids,
                Err(e) if e.is_history_lost() => {
                    warn!(error = %e, "the outbox's change stream lost its place; numbering from the outbox");
                    (feed, _) = store.outbox_feed(false, FEED_WAIT).await?;
                    draining = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if ids.is_empty() {
                continue;
            }
            number(store, lease, &ids, feed.resume_token()).await?
        };
        for events in numbered.chunks(BATCH) {
            publish(store, publisher, lease, events).await?;
        }
    }
    Ok(lease)
}

/// Numbers the events of the outbox documents `ids`, stores `token` as the stream's place, and
/// returns what it numbered.
async fn number(
    store: &Store,
    lease: RelayLease,
    ids: &[String],
    token: Option<ResumeToken>,
) -> Result<Vec<EventRecord>, Stop> {
    let numbered = store.sequence(lease, ids, token).await?;
    metrics::counter!("ledgerflow_events_sequenced_total").increment(numbered.len() as u64);
    Ok(numbered)
}

/// Publishes every numbered event not yet confirmed, in order, a batch at a time: what a
/// leader finds when it starts.
async fn publish_numbered(store: &Store, publisher: &Publisher, lease: RelayLease) -> Result<(), Stop> {
    loop {
        let events = store.unpublished(BATCH as i64).await?;
        publish(store, publisher, lease, &events).await?;
        if events.len() < BATCH {
            return Ok(());
        }
    }
}

/// Publishes `events` (numbered, the next after the last published, in order) and records
/// them as published once the broker confirmed all of them.
async fn publish(store: &Store, publisher: &Publisher, lease: RelayLease, events: &[EventRecord]) -> Result<(), Stop> {
    let Some(last) = events.last().map(|e| e.id) else { return Ok(()) };
    let mut messages = Vec::with_capacity(events.len());
    for event in events {
        let body = serde_json::to_vec(&event.body()).map_err(|e| StoreError::Corrupt {
            collection: "events",
            id: event.id.to_string(),
            reason: e.to_string(),
        })?;
        messages.push((event.routing_key(), event.id, body));
    }
    publisher.publish_events(&messages).await?;
    if !store.mark_published(lease, last).await? {
        return Err(Stop::LeaseLost);
    }
    metrics::counter!("ledgerflow_events_published_total").increment(events.len() as u64);
    Ok(())
}

/// The relay's backlog gauges: changes not yet numbered, events not yet published.
async fn sample_backlog(store: &Store) {
    if let Ok((outbox, unpublished)) = store.relay_backlog().await {
        metrics::gauge!("ledgerflow_events_outbox").set(outbox as f64);
        metrics::gauge!("ledgerflow_events_unpublished").set(unpublished as f64);
    }
}
