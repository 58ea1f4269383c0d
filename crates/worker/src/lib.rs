//! The worker: takes transfer commands off RabbitMQ, commits the double-entry postings of the
//! commands in flight together in one MongoDB transaction per batch (group commit, in `batcher`), then
//! reports each command's outcome on the result queue.
//!
//! Delivery is at least once; the effect is exactly once, because [`Store::execute_batch`] is
//! idempotent (see `ledgerflow-store`). The order for each message is: commit, publish the
//! result (with a confirm), then ack. A crash between any two steps leads to a redelivery,
//! which finds the transaction terminal and republishes its result: results are also at least
//! once, never lost.
//!
//! Nothing in a message is trusted. A message that does not parse, or that contradicts the
//! recorded transaction, gets a FAILED result and is rejected to the dead-letter queue. A
//! database that is unreachable leaves the message unacked and requeued after a pause; a lost
//! broker connection is re-established. Neither ends the process.

mod batcher;
mod handler;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
pub use handler::ATTEMPT_HEADER;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use ledgerflow_messaging::{MessagingError, Publisher, Topology, connect};
use ledgerflow_store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub amqp_uri: String,
    pub topology: Topology,
    /// Commands in flight at once (the AMQP prefetch): bounds memory and database load.
    pub prefetch: u16,
    /// Most commands committed in one database transaction. Larger batches raise the top
    /// throughput a little but hold accounts longer, so concurrent workers conflict more and
    /// the latency tail grows (measured with `ledgerflow bench --rate`).
    pub max_batch: usize,
    /// Shown in logs and as the broker connection name.
    pub name: String,
    /// Tries before a command that keeps failing transiently is given up (marked FAILED with
    /// `PROCESSING_FAILED` and dead-lettered).
    pub max_attempts: u32,
    /// Wait between those tries (spent in the retry queue, not in the worker).
    pub retry_delay: Duration,
}

impl WorkerConfig {
    pub fn new(amqp_uri: impl Into<String>, topology: Topology, name: impl Into<String>) -> Self {
        Self {
            amqp_uri: amqp_uri.into(),
            topology,
            prefetch: 256,
            max_batch: 64,
            name: name.into(),
            max_attempts: 5,
            retry_delay: Duration::from_secs(2),
        }
    }
}

/// Runs until `shutdown` is cancelled, then stops consuming, finishes and acks the commands in
/// flight, and returns. Connection losses are retried forever with capped backoff.
pub async fn run(store: Store, config: WorkerConfig, shutdown: CancellationToken) {
    let results = Publisher::new(&config.amqp_uri, &format!("{}-results", config.name), config.topology.clone());
    let ctx = Arc::new(handler::Ctx {
        batcher: batcher::Batcher::spawn(store.clone(), config.max_batch),
        store,
        results: results.clone(),
        max_attempts: config.max_attempts.max(1),
        retry_delay: config.retry_delay,
    });
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match consume(&ctx, &config, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                warn!(worker = %config.name, error = %e, retry_in = ?backoff, "consumer lost, reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    results.close().await;
    info!(worker = %config.name, "worker stopped");
}

/// How often a worker samples queue depths for the `ledgerflow_queue_depth` gauge.
const QUEUE_DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// Asks through the results publisher's channel, with its time limit: a failed or slow
/// passive declare must not close or stall the consuming channel.
async fn report_queue_depths(results: &Publisher, topology: &Topology) {
    for queue in [topology.transfers(), topology.retry(), topology.dead_letters(), topology.results()] {
        if let Ok(ready) = results.ready_messages(&queue).await {
            metrics::gauge!("ledgerflow_queue_depth", "queue" => queue).set(f64::from(ready));
        }
    }
}

/// One connection's worth of consuming. Returns `Ok` only on shutdown.
async fn consume(
    ctx: &Arc<handler::Ctx>,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Result<(), MessagingError> {
    let connection = connect(&config.amqp_uri, &config.name).await?;
    let channel = connection.create_channel().await?;
    config.topology.declare(&channel).await?;
    channel.basic_qos(config.prefetch, BasicQosOptions::default()).await?;
    let tag = format!("{}-{}", config.name, std::process::id());
    let mut consumer = channel
        .basic_consume(
            config.topology.transfers().as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!(worker = %config.name, queue = %config.topology.transfers(), prefetch = config.prefetch, "consuming");

    let mut in_flight = JoinSet::new();
    let mut depth_tick = tokio::time::interval(QUEUE_DEPTH_INTERVAL);
    let outcome = loop {
        tokio::select! {
            _ = depth_tick.tick() => report_queue_depths(&ctx.results, &config.topology).await,
            () = shutdown.cancelled() => {
                info!(worker = %config.name, in_flight = in_flight.len(), "shutting down: no new commands, draining");
                let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                break Ok(());
            }
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    in_flight.spawn(handler::handle(Arc::clone(ctx), delivery));
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(MessagingError::Unavailable("consumer cancelled by the broker".into())),
            },
            // Reap finished handlers so the set stays as small as the prefetch.
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    };
    // Finish (and ack) what was already taken, whether stopping or reconnecting: the acks
    // fail harmlessly if the channel is gone, and the broker then redelivers.
    while in_flight.join_next().await.is_some() {}
    let _ = connection.close(200, "worker stopping".into()).await;
    outcome
}
