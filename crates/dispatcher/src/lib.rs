//! The webhook dispatcher: what `ledgerflow dispatcher` runs (and `ledgerflow up` beside its
//! gateway and workers).
//!
//! Two loops share one store and nothing else, so any number of dispatchers may run:
//! - `fanout` tails the `events` collection from a checkpoint and inserts one delivery per
//!   event and webhook that is to receive it; the unique index on deliveries makes a second
//!   fan-out of the same events (another dispatcher's, or this one's after a crash) harmless;
//! - `deliver` claims due deliveries one by one under a lease (`findOneAndUpdate`), POSTs the
//!   event, signed, and records the attempt: DELIVERED on a 2xx, else retried with backoff
//!   ([`schedule`]) until the horizon, then FAILED. Deliveries run in parallel up to a bound,
//!   and each endpoint has at most a few in flight, so a slow or dead one holds only its own.
//!
//! At least once: a dispatcher that dies between sending and recording leaves its lease to run
//! out, and the delivery is sent again. Receivers dedupe by event id.

mod deliver;
mod error;
mod fanout;
pub mod schedule;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use ledgerflow_domain::webhooks::UrlPolicy;
use ledgerflow_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use error::AttemptError;
pub use schedule::RetryPolicy;

/// Deliveries in flight at once per dispatcher, by default.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Deliveries in flight at once to one webhook, by default: one endpoint that stops answering
/// holds this many of the dispatcher's places, never all of them.
pub const DEFAULT_PER_ENDPOINT: usize = 4;
/// The longest first retry delay by default; it doubles with each try.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(10);
/// The longest retry delay by default.
pub const DEFAULT_RETRY_CAP: Duration = Duration::from_secs(3600);
/// How long after its first attempt a delivery is retried by default.
pub const DEFAULT_RETRY_HORIZON: Duration = Duration::from_secs(72 * 3600);
/// How long one attempt may take, response included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle dispatcher looks for new events and due deliveries.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A dispatcher's settings.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Names its claims (`lockedBy`) and its logs.
    pub name: String,
    /// Where deliveries may go: judged again at every attempt, on the addresses resolved then.
    pub policy: UrlPolicy,
    pub concurrency: usize,
    pub per_endpoint: usize,
    pub retry: RetryPolicy,
    pub poll_interval: Duration,
    /// Root certificates trusted for endpoints besides the public web's (webpki roots): for
    /// endpoints whose certificates a private CA issued.
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl DispatcherConfig {
    pub fn new(name: impl Into<String>, policy: UrlPolicy) -> Self {
        Self {
            name: name.into(),
            policy,
            concurrency: DEFAULT_CONCURRENCY,
            per_endpoint: DEFAULT_PER_ENDPOINT,
            retry: RetryPolicy { base: DEFAULT_RETRY_BASE, cap: DEFAULT_RETRY_CAP, horizon: DEFAULT_RETRY_HORIZON },
            poll_interval: DEFAULT_POLL_INTERVAL,
            extra_roots: Vec::new(),
        }
    }

    /// Also trusts the root certificates of the PEM bundle `pem`; how many it had.
    pub fn trust_pem_roots(&mut self, pem: &[u8]) -> Result<usize, reqwest::Error> {
        let roots = reqwest::Certificate::from_pem_bundle(pem)?;
        let count = roots.len();
        self.extra_roots.extend(roots);
        Ok(count)
    }
}

/// How often the backlog gauges are sampled.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Runs until `shutdown`: stops claiming, lets the attempts in flight finish (each ends within
/// [`ATTEMPT_TIMEOUT`]) and records them. Never fails: a database outage is waited out.
pub async fn run(store: Store, config: DispatcherConfig, shutdown: CancellationToken) {
    for outcome in ["delivered", "retried", "failed"] {
        metrics::counter!("ledgerflow_webhook_deliveries_total", "outcome" => outcome).increment(0);
    }
    info!(name = %config.name, concurrency = config.concurrency, "dispatcher started");
    let config = Arc::new(config);
    // Woken by the fan-out when it made deliveries, so they go out at once.
    let fanned_out = Arc::new(Notify::new());
    let fanout =
        tokio::spawn(fanout::run(store.clone(), Arc::clone(&config), Arc::clone(&fanned_out), shutdown.clone()));
    let gauges = tokio::spawn(sample_backlog(store.clone(), shutdown.clone()));
    deliver::run(store, Arc::clone(&config), fanned_out, shutdown).await;
    let _ = fanout.await;
    let _ = gauges.await;
    info!(name = %config.name, "dispatcher stopped");
}

/// Keeps `ledgerflow_webhook_retry_backlog` (deliveries tried and due again) and
/// `ledgerflow_webhook_oldest_undelivered_seconds` (age of the oldest event still PENDING
/// somewhere) current.
async fn sample_backlog(store: Store, shutdown: CancellationToken) {
    loop {
        match store.delivery_backlog().await {
            Ok(backlog) => {
                metrics::gauge!("ledgerflow_webhook_retry_backlog").set(backlog.retrying as f64);
                let age = backlog
                    .oldest_pending
                    .map_or(0.0, |at| (chrono::Utc::now() - at).to_std().map_or(0.0, |age| age.as_secs_f64()));
                metrics::gauge!("ledgerflow_webhook_oldest_undelivered_seconds").set(age);
            }
            Err(e) => warn!(error = %e, "cannot read the delivery backlog"),
        }
        tokio::select! {
            () = tokio::time::sleep(GAUGE_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
