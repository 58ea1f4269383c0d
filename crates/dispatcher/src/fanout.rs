//! From events to deliveries: reads the events after the checkpoint, inserts a delivery for
//! each webhook that is to receive one, then raises the checkpoint. A crash in between leaves
//! the checkpoint behind, and the next pass inserts what exists already, which the unique
//! index turns into nothing.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ledgerflow_domain::{AccountId, Role, UserId};
use ledgerflow_store::{EventFacts, EventFilter, NewDelivery, Store, StoreError, WebhookRecord};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::DispatcherConfig;

/// Events read per pass: a pass is one read of the webhooks and one insert.
const EVENTS_PER_PASS: i64 = 100;
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
    let events = store.events_after(&EventFilter { after, limit: EVENTS_PER_PASS, ..EventFilter::default() }).await?;
    let Some(last) = events.last().map(|e| e.id) else { return Ok(0) };
    let webhooks = store.live_webhooks().await?;
    let mut owned: BTreeMap<UserId, BTreeSet<AccountId>> = BTreeMap::new();
    for webhook in webhooks.iter().filter(|w| w.owner_role == Role::User) {
        if let Entry::Vacant(place) = owned.entry(webhook.owner) {
            place.insert(store.account_ids_of(webhook.owner).await?.into_iter().collect());
        }
    }
    let facts: Vec<EventFacts<'_>> = events.iter().map(|e| e.facts()).collect();
    let deliveries = deliveries(&facts, &webhooks, &owned);
    store.insert_deliveries(&deliveries).await?;
    store.advance_fanout_checkpoint(last).await?;
    Ok(events.len())
}

/// Who gets what: each event to each webhook that receives it and was registered when it
/// happened ([`WebhookRecord::follows`]).
fn deliveries(
    events: &[EventFacts<'_>],
    webhooks: &[WebhookRecord],
    owned: &BTreeMap<UserId, BTreeSet<AccountId>>,
) -> Vec<NewDelivery> {
    let none = BTreeSet::new();
    let mut made = Vec::new();
    for event in events {
        for webhook in webhooks.iter().filter(|w| w.follows(event)) {
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

#[cfg(test)]
mod tests {
    use chrono::{Duration as Span, Utc};
    use ledgerflow_domain::webhooks::EventTypes;
    use ledgerflow_domain::{EventType, WebhookId};
    use ledgerflow_store::WebhookSecret;

    use super::*;

    fn webhook(owner: UserId, created_at: chrono::DateTime<Utc>, starts_after: Option<i64>) -> WebhookRecord {
        WebhookRecord {
            id: WebhookId::generate(),
            owner,
            owner_role: Role::User,
            url: "https://example.com/".parse().expect("a URL"),
            types: EventTypes::new([EventType::Completed]).expect("types"),
            accounts: None,
            secret: WebhookSecret::from_random([1; 32]),
            created_at,
            starts_after,
            deleted: false,
        }
    }

    fn event(id: i64, initiator: &str, created_at: chrono::DateTime<Utc>) -> EventFacts<'_> {
        EventFacts { id, event_type: EventType::Completed, created_at, initiator, account_ids: &[] }
    }

    #[test]
    fn a_webhook_is_sent_what_is_numbered_after_it_is_registered_and_its_owner_may_see() {
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let now = Utc::now();
        // Event 2 was decided by a worker whose clock runs a second behind the gateway's.
        let hers = webhook(alice, now, Some(1));
        let (alice, bob) = (alice.to_string(), bob.to_string());
        let events = [
            event(1, &alice, now - Span::seconds(2)),
            event(2, &alice, now - Span::seconds(1)),
            event(3, &bob, now + Span::seconds(1)),
        ];
        let made = deliveries(&events, std::slice::from_ref(&hers), &BTreeMap::new());
        let sent: Vec<(WebhookId, i64)> = made.iter().map(|d| (d.webhook_id, d.event_id)).collect();
        assert_eq!(sent, [(hers.id, 2)], "not the event numbered before, nor Bob's");
    }

    #[test]
    fn a_webhook_registered_before_its_start_was_recorded_goes_by_the_clocks() {
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let now = Utc::now();
        let hers = webhook(alice, now, None);
        let (alice, bob) = (alice.to_string(), bob.to_string());
        let events =
            [event(1, &alice, now - Span::seconds(1)), event(2, &alice, now), event(3, &bob, now + Span::seconds(1))];
        let made = deliveries(&events, std::slice::from_ref(&hers), &BTreeMap::new());
        let sent: Vec<(WebhookId, i64)> = made.iter().map(|d| (d.webhook_id, d.event_id)).collect();
        assert_eq!(sent, [(hers.id, 2)], "not the older event, nor Bob's");
    }
}
