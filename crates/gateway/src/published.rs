//! Marks transfers as published once the broker confirmed their command, in batches: one
//! database write for however many publishes were confirmed while the previous write ran.
//!
//! The mark only tells the [`crate::republisher`] to leave a PENDING transfer alone, so it
//! need not be synchronous: a mark that is late or lost costs at worst a duplicate command,
//! which the idempotent worker answers without moving money twice.

use ledgerflow_domain::TransactionId;
use ledgerflow_store::Store;
use tokio::sync::mpsc;
use tracing::warn;

/// Most ids written per mark.
const MAX_BATCH: usize = 1_000;

/// A handle on the marking task; it ends once every handle is dropped.
#[derive(Clone)]
pub struct PublishedMarks {
    ids: mpsc::Sender<TransactionId>,
}

impl PublishedMarks {
    /// Starts the marking task (must be called inside a Tokio runtime).
    pub fn spawn(store: Store) -> Self {
        let (ids, rx) = mpsc::channel(MAX_BATCH * 8);
        tokio::spawn(run(store, rx));
        Self { ids }
    }

    /// Queues a mark; never waits. When the queue is full the mark is dropped (see above).
    pub fn mark(&self, id: TransactionId) {
        if self.ids.try_send(id).is_err() {
            metrics::counter!("ledgerflow_published_marks_dropped_total").increment(1);
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<TransactionId>) {
    let mut ids = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ids, MAX_BATCH).await > 0 {
        if let Err(e) = store.mark_published(&ids).await {
            warn!(error = %e, count = ids.len(), "could not mark transactions published; they may be republished");
        }
        ids.clear();
    }
}
