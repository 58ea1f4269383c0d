//! Group commit: the commands in flight on a worker are executed together, in one MongoDB
//! transaction per batch.
//!
//! Each delivery's handler hands its command to the batcher and waits for its own outcome;
//! the batcher runs whatever is waiting (up to `max_batch`) as one batch once the previous
//! batch is done, lingering up to `batch_linger` for more under steady load ([`GroupCommit`]).

use std::time::Instant;

use futures::FutureExt;
use ledgerflow_domain::TransferCommand;
use ledgerflow_store::{GroupCommit, Grouping, Outcome, Store};
use tracing::{Instrument, Level, debug, info_span};

/// A handle to a worker's batching task; the task ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Batcher(GroupCommit<TransferCommand, Outcome>);

impl Batcher {
    pub(crate) fn spawn(store: Store, grouping: Grouping) -> Self {
        Self(GroupCommit::spawn(grouping, move |cmds| {
            let store = store.clone();
            async move { execute(&store, cmds).await }.boxed()
        }))
    }

    /// Executes `cmd` in the next batch and returns its own outcome (a batch that panicked
    /// is a transient failure, which sends the command round the retry queue).
    pub(crate) async fn execute(&self, cmd: TransferCommand) -> Outcome {
        self.0.try_call(cmd).await
    }
}

async fn execute(store: &Store, cmds: Vec<TransferCommand>) -> Vec<Outcome> {
    let span = info_span!("batch", size = cmds.len());
    // One string per command: only worth building when someone reads it.
    if tracing::enabled!(Level::DEBUG) {
        let ids: Vec<String> = cmds
            .iter()
            .map(|c| c.transaction_id.map_or_else(|| c.idempotency_key.as_str().to_owned(), |id| id.to_string()))
            .collect();
        debug!(parent: &span, transactions = ?ids, "executing batch");
    }
    let started = Instant::now();
    let outcomes = store.execute_batch(&cmds).instrument(span.clone()).await;
    debug!(parent: &span, took_ms = started.elapsed().as_secs_f64() * 1e3, "batch done");
    outcomes
}
