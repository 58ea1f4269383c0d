//! Long-poll support: wakes `GET /transactions/{id}?wait=N` requests when a worker reports
//! the transaction's outcome on the result exchange, instead of clients polling in a loop.
//!
//! Each gateway binds its own exclusive, auto-deleted queue to the `ledgerflow.results`
//! fanout exchange, so it sees every result without taking any from other consumers of the
//! durable `ledgerflow.results` queue. A result only wakes waiters; the answer is always
//! re-read from MongoDB, which stays the source of truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ledgerflow_domain::TransactionId;
use ledgerflow_messaging::{MessagingError, Topology, close, connect};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Waiters by transaction id. An entry lives while someone waits on it.
#[derive(Default)]
pub struct Watchers {
    waiting: Mutex<HashMap<TransactionId, (Arc<Notify>, usize)>>,
}

/// Holds a place in [`Watchers`] until dropped.
pub struct Watch<'a> {
    watchers: &'a Watchers,
    id: TransactionId,
    pub notify: Arc<Notify>,
}

impl Watchers {
    /// Registers interest in `id`. Create the `notified()` future and `enable()` it before
    /// checking the database, so a result arriving in between is not missed.
    pub fn watch(&self, id: TransactionId) -> Watch<'_> {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = waiting.entry(id).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Watch { watchers: self, id, notify: Arc::clone(&entry.0) }
    }

    fn wake(&self, id: TransactionId) {
        let waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((notify, _)) = waiting.get(&id) {
            notify.notify_waiters();
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut waiting = self.watchers.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = waiting.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiting.remove(&self.id);
            }
        }
    }
}

/// Consumes results until `shutdown`, reconnecting after broker failures.
pub(crate) async fn run(uri: String, topology: Topology, watchers: Arc<Watchers>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        if let Err(e) = consume(&uri, &topology, &watchers, &shutdown).await {
            warn!(error = %e, retry_in = ?backoff, "result watcher lost the broker");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

async fn consume(
    uri: &str,
    topology: &Topology,
    watchers: &Watchers,
    shutdown: &CancellationToken,
) -> Result<(), MessagingError> {
    let connection = connect(uri, "ledgerflow-gateway-results").await?;
    let channel = connection.create_channel().await?;
    let mut consumer = topology.follow_results(&channel, "ledgerflow-gateway-results").await?;
    info!("result watcher consuming");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                close(&connection, "gateway stopping").await;
                return Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let id = serde_json::from_slice::<serde_json::Value>(&delivery.data)
                        .ok()
                        .and_then(|v| v.get("transactionId")?.as_str()?.parse().ok());
                    if let Some(id) = id {
                        watchers.wake(id);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(MessagingError::Unavailable("result consumer cancelled".into())),
            }
        }
    }
}
