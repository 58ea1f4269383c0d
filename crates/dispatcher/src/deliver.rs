//! Deliveries: claim what is due, send it, record the attempt.
//!
//! The loop keeps up to `concurrency` attempts in flight, and at most `per_endpoint` to one
//! webhook: a claim skips the webhooks that have their share, so a slow endpoint waits on
//! itself only. A claim's lease outlasts an attempt (its timeout) by a margin, so a lease runs
//! out only when its dispatcher died or lost the database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ledgerflow_domain::WebhookId;
use ledgerflow_domain::webhooks::UrlHost;
use ledgerflow_store::{Attempt, AttemptOutcome, DeliveryRecord, EventRecord, Store, WebhookRecord};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::error::AttemptError;
use crate::{ATTEMPT_TIMEOUT, DispatcherConfig, schedule, sign};

/// How long a claim holds a delivery: an attempt's timeout, plus room to resolve its host and
/// record it.
const LEASE: Duration = Duration::from_secs(30);
/// The most of a response body read (and thrown away) before the connection is dropped.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest wait for an endpoint's name to resolve.
const RESOLVE_LIMIT: Duration = Duration::from_secs(5);
/// Wait after the store failed a claim.
const AFTER_ERROR: Duration = Duration::from_secs(1);

pub(crate) async fn run(
    store: Store,
    config: Arc<DispatcherConfig>,
    fanned_out: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut in_flight = InFlight::default();
    while !shutdown.is_cancelled() {
        if tasks.len() < config.concurrency {
            let busy = in_flight.full(config.per_endpoint);
            match store.claim_delivery(&config.name, LEASE, &busy).await {
                Ok(Some(delivery)) => {
                    let webhook = delivery.webhook_id;
                    let handle = tasks.spawn(attempt(store.clone(), Arc::clone(&config), delivery));
                    in_flight.started(handle.id(), webhook);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "cannot claim a webhook delivery");
                    tokio::time::sleep(AFTER_ERROR).await;
                }
            }
        }
        tokio::select! {
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match done { Ok((id, ())) => id, Err(e) => e.id() };
                in_flight.finished(id);
            }
            () = fanned_out.notified() => {}
            () = tokio::time::sleep(config.poll_interval) => {}
            () = shutdown.cancelled() => {}
        }
    }
    // Attempts end within their timeout; each records itself.
    while tasks.join_next().await.is_some() {}
}

/// The attempts in flight, by task and by webhook.
#[derive(Default)]
struct InFlight {
    webhook_of: HashMap<tokio::task::Id, WebhookId>,
    per_webhook: HashMap<WebhookId, usize>,
}

impl InFlight {
    fn started(&mut self, task: tokio::task::Id, webhook: WebhookId) {
        self.webhook_of.insert(task, webhook);
        *self.per_webhook.entry(webhook).or_default() += 1;
    }

    fn finished(&mut self, task: tokio::task::Id) {
        let Some(webhook) = self.webhook_of.remove(&task) else { return };
        if let Some(n) = self.per_webhook.get_mut(&webhook) {
            *n -= 1;
            if *n == 0 {
                self.per_webhook.remove(&webhook);
            }
        }
    }

    /// The webhooks with `cap` attempts in flight.
    fn full(&self, cap: usize) -> Vec<WebhookId> {
        self.per_webhook.iter().filter(|(_, n)| **n >= cap).map(|(w, _)| *w).collect()
    }
}

/// One attempt of a claimed delivery, recorded.
async fn attempt(store: Store, config: Arc<DispatcherConfig>, delivery: DeliveryRecord) {
    let span = info_span!(
        "delivery",
        event_id = delivery.event_id,
        webhook_id = %delivery.webhook_id,
        attempt = delivery.tries + 1,
    );
    async move {
        let at = Utc::now();
        let started = Instant::now();
        let sent = send(&store, &config, &delivery).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (status_code, error) = match &sent {
            Ok(code) => (Some(i32::from(*code)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let outcome = match &sent {
            Ok(200..=299) => AttemptOutcome::Delivered,
            // The store could not be read: leave the claim to run out and try again then,
            // without counting an attempt the endpoint never saw.
            Err(AttemptError::Store(e)) => {
                warn!(error = %e, "cannot read what to deliver; the delivery is tried again later");
                return;
            }
            Err(AttemptError::Gone(_)) => AttemptOutcome::Failed,
            _ => {
                let first = delivery.first_attempt_at.unwrap_or(at);
                schedule::after_failure(&config.retry, delivery.tries + 1, first, Utc::now(), rand::random::<f64>())
            }
        };
        let label = match outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::RetryAt(_) => "retried",
            AttemptOutcome::Failed => "failed",
        };
        metrics::counter!("ledgerflow_webhook_deliveries_total", "outcome" => label).increment(1);
        debug!(?status_code, ?error, outcome = label, duration_ms, "delivery attempt");
        let attempt = Attempt { at, status_code, duration_ms, error };
        match store.finish_attempt(&delivery, &config.name, &attempt, outcome).await {
            Ok(true) => {}
            Ok(false) => warn!("the delivery's claim ended before its attempt was recorded"),
            Err(e) => warn!(error = %e, "cannot record a delivery attempt; it is tried again when its claim ends"),
        }
    }
    .instrument(span)
    .await;
}

/// Sends the delivery's event to its webhook; the endpoint's status code.
async fn send(store: &Store, config: &DispatcherConfig, delivery: &DeliveryRecord) -> Result<u16, AttemptError> {
    let webhook = store.find_webhook(delivery.webhook_id).await?;
    let webhook = webhook.filter(|w| !w.deleted).ok_or(AttemptError::Gone("the webhook was deleted"))?;
    let event = store.find_event(delivery.event_id).await?.ok_or(AttemptError::Gone("the event is no longer kept"))?;
    post(config, &webhook, &event).await
}

/// POSTs `event` to `webhook`, connecting only to addresses the policy allows, resolved now
/// and used as resolved (a name cannot be re-pointed between the check and the connection).
async fn post(config: &DispatcherConfig, webhook: &WebhookRecord, event: &EventRecord) -> Result<u16, AttemptError> {
    let policy = config.policy;
    policy.check_scheme(&webhook.url).map_err(AttemptError::Refused)?;
    // Serialised once: these bytes are both signed and sent.
    let body = serde_json::to_vec(&event.body()).map_err(|e| AttemptError::Request(e.to_string()))?;
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        // A proxy would resolve the name itself, past the address check.
        .no_proxy();
    for root in &config.extra_roots {
        client = client.add_root_certificate(root.clone());
    }
    match webhook.url.host() {
        UrlHost::Address(ip) => policy.check_address(ip).map_err(AttemptError::Refused)?,
        UrlHost::Name(name) => {
            let addresses = resolve(name, webhook.url.port()).await?;
            for address in &addresses {
                policy.check_address(address.ip()).map_err(AttemptError::Refused)?;
            }
            client = client.resolve_to_addrs(name, &addresses);
        }
    }
    let client = client.build().map_err(|e| AttemptError::Request(e.to_string()))?;
    let now = Utc::now().timestamp();
    let response = client
        .post(webhook.url.as_str())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("LedgerFlow-Event-Id", event.id.to_string())
        .header("LedgerFlow-Event-Type", event.event_type.as_str())
        .header("LedgerFlow-Signature", sign::signature_header(webhook.secret.expose(), now, &body))
        .body(body)
        .send()
        .await
        .map_err(request_error)?;
    let status = response.status().as_u16();
    drain(response).await;
    Ok(status)
}

async fn resolve(name: &str, port: u16) -> Result<Vec<SocketAddr>, AttemptError> {
    let unresolved = || AttemptError::Unresolved(name.to_owned());
    let found = tokio::time::timeout(RESOLVE_LIMIT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| unresolved())?
        .map_err(|_| unresolved())?;
    let addresses: Vec<SocketAddr> = found.collect();
    if addresses.is_empty() { Err(unresolved()) } else { Ok(addresses) }
}

/// Reads the response body up to [`MAX_RESPONSE_BYTES`] and drops it: an endpoint's answer
/// means nothing but its status, and an endless one must not hold the attempt.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while read < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
}

fn request_error(e: reqwest::Error) -> AttemptError {
    if e.is_timeout() {
        AttemptError::Timeout(ATTEMPT_TIMEOUT.as_secs())
    } else if e.is_connect() {
        AttemptError::Connect(source_text(&e))
    } else {
        AttemptError::Request(source_text(&e))
    }
}

/// The innermost cause's message ("Connection refused"), not reqwest's wrapper with the URL.
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}
