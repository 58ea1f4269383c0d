//! From events to deliveries: reads the events after the checkpoint, inserts a delivery for
//! each webhook that is to receive one, then raises the checkpoint. A crash in between leaves
//! the checkpoint behind, and the next pass inserts what exists already, which the unique
//! index turns into nothing.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ledgerflow_domain::{AccountId, Role, UserId};
use ledgerflow_store::{FeedEvent, NewDelivery, Store, StoreError, WebhookRecord};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::DispatcherConfig;

/// Events read per pass: a pass is one read of the webhooks and one insert.
const EVENTS_PER_PASS: i64 = 500;
/// Wait after a failed pass.
const AFTER_ERROR: Duration = Duration::from_secs(1);

pub(crate) async fn run(
    store: Store,
    config: Arc<DispatcherConfig>,
    fanned_out: Arc<Notify>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let wait = match pass(&store).await {
            Ok(0) => config.poll_interval,
            Ok(made) => {
                fanned_out.notify_one();
                if made == EVENTS_PER_PASS as usize { Duration::ZERO } else { config.poll_interval }
            }
            Err(e) => {
                warn!(error = %e, "webhook fan-out failed; trying again");
                AFTER_ERROR
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// One pass; the number of events read.
async fn pass(store: &Store) -> Result<usize, StoreError> {
    let after = store.fanout_checkpoint().await?;
    let events = store.feed_events_after(after, EVENTS_PER_PASS).await?;
    let Some(last) = events.last().map(|e| e.id) else { return Ok(0) };
    let webhooks = store.live_webhooks().await?;
    let mut owned: BTreeMap<UserId, BTreeSet<AccountId>> = BTreeMap::new();
    for webhook in webhooks.iter().filter(|w| w.owner_role == Role::User) {
        if let Entry::Vacant(place) = owned.entry(webhook.owner) {
            place.insert(store.account_ids_of(webhook.owner).await?.into_iter().collect());
        }
    }
    let deliveries = deliveries(&events, &webhooks, &owned);
    store.insert_deliveries(&deliveries).await?;
    store.advance_fanout_checkpoint(last).await?;
    Ok(events.len())
}

/// Who gets what: each event to each webhook that receives it and was registered when it
/// happened (a new webhook is not sent the history; a redelivery asks for an event by name).
fn deliveries(
    events: &[FeedEvent],
    webhooks: &[WebhookRecord],
    owned: &BTreeMap<UserId, BTreeSet<AccountId>>,
) -> Vec<NewDelivery> {
    let none = BTreeSet::new();
    let mut made = Vec::new();
    for event in events {
        for webhook in webhooks.iter().filter(|w| w.created_at <= event.created_at) {
            if webhook.receives(event, owned.get(&webhook.owner).unwrap_or(&none)) {
                made.push(NewDelivery {
                    webhook_id: webhook.id,
                    event_id: event.id,
                    event_created_at: event.created_at,
                });
            }
        }
    }
    made
}
