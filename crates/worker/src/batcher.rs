//! Group commit: the commands in flight on a worker are executed together, in one MongoDB
//! transaction per batch.
//!
//! Each delivery's handler hands its command to the batcher and waits for its own outcome.
//! The batcher takes whatever is waiting (up to `max_batch`) the moment the previous batch is
//! done, so it never delays a command to fill a batch: under light load batches are of one,
//! under heavy load they grow, and the per-transaction cost is shared.

use std::time::Instant;

use ledgerflow_domain::TransferCommand;
use ledgerflow_store::{Outcome, Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, Level, debug, info_span};

struct Job {
    cmd: TransferCommand,
    reply: oneshot::Sender<Outcome>,
}

/// A handle to a worker's batching task; the task ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    pub(crate) fn spawn(store: Store, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (jobs, rx) = mpsc::channel(max_batch * 2);
        tokio::spawn(run(store, rx, max_batch));
        Self { jobs }
    }

    /// Executes `cmd` in the next batch and returns its own outcome.
    pub(crate) async fn execute(&self, cmd: TransferCommand) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        // The task outlives every handle, so these only fail if it panicked: report that as
        // a transient failure, which sends the command round the retry queue.
        let gone = || StoreError::Contention { attempts: 0 };
        self.jobs.send(Job { cmd, reply }).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut jobs = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        let (cmds, replies): (Vec<_>, Vec<_>) = jobs.drain(..).map(|j| (j.cmd, j.reply)).unzip();
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
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The handler may be gone (shutdown); its delivery is then redelivered.
            let _ = reply.send(outcome);
        }
    }
}
