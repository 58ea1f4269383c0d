//! The worker: takes transfer commands off RabbitMQ, commits the double-entry postings of the
//! commands in flight together in one MongoDB transaction per batch (group commit, in `batcher`), then
//! reports each command's outcome on the result queue.
//!
//! Commands arrive through partition queues, one per slice of sending accounts; each worker
//! subscribes to all of them and keeps an equal share as their single active consumer (see
//! `share`), so one account's transfers are committed by one worker at a time.
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
mod share;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
pub use handler::ATTEMPT_HEADER;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use ledgerflow_messaging::{MessagingError, Publisher, Topology, close, connect};
use ledgerflow_store::{Grouping, Store};
use share::Share;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a batch lingers to fill by default (see [`WorkerConfig::batch_linger`]).
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(8);
/// Commands in flight by default (see [`WorkerConfig::prefetch`]).
pub const DEFAULT_PREFETCH: u16 = 256;
/// Most commands in one database transaction by default (see [`WorkerConfig::max_batch`]).
pub const DEFAULT_MAX_BATCH: u16 = 64;
/// Tries of a command by default (see [`WorkerConfig::max_attempts`]).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Wait between tries by default (see [`WorkerConfig::retry_delay`]).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(2);

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub amqp_uri: String,
    pub topology: Topology,
    /// Commands in flight at once (the AMQP prefetch, shared out between the partitions):
    /// bounds memory and database load.
    pub prefetch: u16,
    /// Most commands committed in one database transaction. Larger batches raise the top
    /// throughput a little but hold accounts longer, so concurrent workers conflict more and
    /// the latency tail grows (measured with `ledgerflow bench --rate`).
    pub max_batch: usize,
    /// How long a batch may wait to fill while commands arrive faster than one per this
    /// interval (zero: never). Fewer, larger transactions at moderate load leave CPU to spare,
    /// which cut the latency tail (measured with `ledgerflow bench --rate`).
    pub batch_linger: Duration,
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
            prefetch: DEFAULT_PREFETCH,
            max_batch: usize::from(DEFAULT_MAX_BATCH),
            batch_linger: DEFAULT_BATCH_LINGER,
            name: name.into(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_delay: DEFAULT_RETRY_DELAY,
        }
    }
}

/// Runs until `shutdown` is cancelled, then stops consuming, finishes and acks the commands in
/// flight, and returns. Connection losses are retried forever with capped backoff.
pub async fn run(store: Store, config: WorkerConfig, shutdown: CancellationToken) {
    let results = Publisher::new(&config.amqp_uri, &format!("{}-results", config.name), config.topology.clone());
    let ctx = Arc::new(handler::Ctx {
        batcher: batcher::Batcher::spawn(
            store.clone(),
            Grouping { max: config.max_batch, linger: config.batch_linger },
        ),
        store,
        results: results.clone(),
        max_attempts: config.max_attempts.max(1),
        retry_delay: config.retry_delay,
    });
    // Sampled apart from the consuming loop, so a broker slow to answer a passive declare
    // never holds up deliveries or shutdown.
    let workers = Arc::new(AtomicU32::new(0));
    let sampler = tokio::spawn(sample_queues(results.clone(), config.topology.clone(), Arc::clone(&workers)));
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match consume(&ctx, &config, &workers, &shutdown).await {
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
    sampler.abort();
    results.close().await;
    info!(worker = %config.name, "worker stopped");
}

/// How often a worker samples queue depths (the `ledgerflow_queue_depth` gauge) and the number
/// of workers sharing the partitions.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait for one round of queue samples.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every `SAMPLE_INTERVAL`, sets the `ledgerflow_queue_depth` gauges and stores the number of
/// workers on the roster in `workers` (0 until known). Asks through the results publisher's
/// channel, with time limits: a failed passive declare must not close the consuming channel.
async fn sample_queues(results: Publisher, topology: Topology, workers: Arc<AtomicU32>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let round = async {
            let queues = topology.partitions().into_iter().chain([
                topology.retry(),
                topology.dead_letters(),
                topology.results(),
            ]);
            for queue in queues {
                if let Ok(ready) = results.ready_messages(&queue).await {
                    metrics::gauge!("ledgerflow_queue_depth", "queue" => queue).set(f64::from(ready));
                }
            }
            if let Ok(roster) = results.queue_state(&topology.workers()).await {
                workers.store(roster.consumers, Ordering::Relaxed);
            }
        };
        if tokio::time::timeout(SAMPLE_TIMEOUT, round).await.is_err() {
            debug!("queue sampling timed out");
        }
    }
}

/// A delivery and the partition subscription it came from.
struct Fed {
    partition: u16,
    generation: u32,
    delivery: Delivery,
}

/// One partition queue's subscriptions on a channel. Each hand-off cancels the current one
/// and subscribes again (see [`share`]), which counts a generation up; deliveries already
/// prefetched still come through, tagged with the old generation.
struct Feed {
    channel: Channel,
    partition: u16,
    queue: String,
    tag: String,
}

impl Feed {
    fn tag(&self, generation: u32) -> String {
        format!("{}-p{}-{generation}", self.tag, self.partition)
    }

    async fn subscribe(&self, generation: u32) -> Result<Consumer, MessagingError> {
        let (queue, tag) = (self.queue.as_str().into(), self.tag(generation).into());
        Ok(self.channel.basic_consume(queue, tag, BasicConsumeOptions::default(), FieldTable::default()).await?)
    }

    /// Passes deliveries on until `stop`, starting with the `first` subscription.
    async fn run(
        self,
        first: Consumer,
        to_worker: mpsc::Sender<Fed>,
        hand_off: Arc<Notify>,
        stop: CancellationToken,
    ) -> Result<(), MessagingError> {
        let mut consumer = first;
        for generation in 0.. {
            if generation > 0 {
                // Stopping while a hand-off completed: no new subscription to cancel again.
                if stop.is_cancelled() {
                    return Ok(());
                }
                consumer = self.subscribe(generation).await?;
            }
            let tag = self.tag(generation);
            let mut cancelled = false;
            loop {
                tokio::select! {
                    () = stop.cancelled(), if !cancelled => {
                        let _ = self.channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                        return Ok(());
                    }
                    () = hand_off.notified(), if !cancelled => {
                        self.channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await?;
                        cancelled = true;
                    }
                    delivery = consumer.next() => match delivery {
                        Some(Ok(delivery)) => {
                            let fed = Fed { partition: self.partition, generation, delivery };
                            if to_worker.send(fed).await.is_err() {
                                return Ok(());
                            }
                        }
                        Some(Err(e)) => return Err(e.into()),
                        None if cancelled => break,
                        None => {
                            let why = format!("consumer of {} cancelled by the broker", self.queue);
                            return Err(MessagingError::Unavailable(why));
                        }
                    },
                }
            }
            info!(partition = self.partition, "handed the partition on");
            metrics::counter!("ledgerflow_partition_handoffs_total").increment(1);
        }
        Ok(())
    }
}

/// One connection's worth of consuming. Returns `Ok` only on shutdown.
async fn consume(
    ctx: &Arc<handler::Ctx>,
    config: &WorkerConfig,
    workers: &AtomicU32,
    shutdown: &CancellationToken,
) -> Result<(), MessagingError> {
    let connection = connect(&config.amqp_uri, &config.name).await?;
    let topology = &config.topology;
    // Per consumer: the prefetch is shared out between the partitions.
    let per_partition = config.prefetch.div_ceil(topology.partition_count()).max(MIN_PREFETCH);
    let tag = format!("{}-{}", config.name, std::process::id());
    // Bounded, like every step on a connection: a broker still starting up may accept the
    // connection and not answer.
    let setup = async {
        let channel = connection.create_channel().await?;
        topology.declare(&channel).await?;
        channel.basic_qos(per_partition, BasicQosOptions::default()).await?;
        let mut subscribed = Vec::new();
        for (partition, queue) in (0..).zip(topology.partitions()) {
            let feed = Feed { channel: channel.clone(), partition, queue, tag: tag.clone() };
            let first = feed.subscribe(0).await?;
            subscribed.push((feed, first));
        }
        // Joining the roster last: once every worker counts there, each consumes every partition.
        let roster = (topology.workers(), format!("{tag}-roster"));
        let options = BasicConsumeOptions::default();
        let roster = channel
            .basic_consume(roster.0.as_str().into(), roster.1.as_str().into(), options, FieldTable::default())
            .await?;
        Ok::<_, MessagingError>((subscribed, roster))
    };
    // The roster consumer is kept (dropping it would cancel it); it never yields anything.
    let (subscribed, _roster) = match tokio::time::timeout(SETUP_LIMIT, setup).await {
        Ok(Ok(subscribed)) => subscribed,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            close(&connection, "setup timed out").await;
            return Err(MessagingError::Unavailable(format!("no subscriptions within {SETUP_LIMIT:?}")));
        }
    };

    let stop_feeds = shutdown.child_token();
    let (to_worker, mut fed) = mpsc::channel(usize::from(per_partition));
    let mut feeds = JoinSet::new();
    let mut hand_offs = Vec::new();
    for (feed, first) in subscribed {
        let hand_off = Arc::new(Notify::new());
        hand_offs.push(Arc::clone(&hand_off));
        feeds.spawn(feed.run(first, to_worker.clone(), hand_off, stop_feeds.clone()));
    }
    drop(to_worker);
    info!(worker = %config.name, partitions = topology.partition_count(), prefetch = per_partition, "consuming");

    let mut share = Share::new(topology.partition_count());
    let mut in_flight = JoinSet::new();
    let mut report_tick = tokio::time::interval(SAMPLE_INTERVAL);
    let outcome = loop {
        tokio::select! {
            _ = report_tick.tick() => report_partitions(&share, topology.partition_count()),
            () = shutdown.cancelled() => {
                info!(worker = %config.name, in_flight = in_flight.len(), "shutting down: no new commands, draining");
                break Ok(());
            }
            fed = fed.recv() => match fed {
                Some(Fed { partition, generation, delivery }) => {
                    share.set_workers(workers.load(Ordering::Relaxed));
                    if share.delivered(partition, generation, Instant::now()) {
                        hand_offs[usize::from(partition)].notify_one();
                    }
                    in_flight.spawn(handler::handle(Arc::clone(ctx), delivery));
                }
                None => break Err(MessagingError::Unavailable("every partition feed ended".into())),
            },
            Some(ended) = feeds.join_next() => {
                let error = match ended {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => MessagingError::Unavailable("a partition feed ended".into()),
                    Err(e) => MessagingError::Unavailable(format!("a partition feed failed: {e}")),
                };
                break Err(error);
            }
            // Reap finished handlers so the set stays as small as the prefetch.
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    };
    // No new deliveries; finish (and ack) what was already taken, whether stopping or
    // reconnecting: the acks fail harmlessly if the channel is gone, and the broker then
    // redelivers. Prefetched deliveries never handed to a handler are dropped here and
    // requeued by the broker when the connection closes. Each step is bounded: a dead
    // connection must not hold the worker (handlers bound their own publishes and acks).
    drop(fed);
    stop_feeds.cancel();
    if tokio::time::timeout(TEARDOWN_LIMIT, async { while feeds.join_next().await.is_some() {} }).await.is_err() {
        feeds.abort_all();
    }
    while in_flight.join_next().await.is_some() {}
    report_partitions(&Share::new(topology.partition_count()), topology.partition_count());
    close(&connection, "worker stopping").await;
    outcome
}

/// Longest wait for a consuming connection's channel, topology and subscriptions.
const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for one teardown step of a consuming connection.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(3);

/// Fewest commands in flight per partition, whatever the prefetch is shared out into.
const MIN_PREFETCH: u16 = 16;

/// The `ledgerflow_partition_active` gauges: 1 for each partition this worker is active on
/// (as of its last delivery from it).
fn report_partitions(share: &Share, partitions: u16) {
    let mut active = share.active().peekable();
    for p in 0..partitions {
        let on = active.next_if_eq(&p).is_some();
        metrics::gauge!("ledgerflow_partition_active", "partition" => p.to_string()).set(if on { 1.0 } else { 0.0 });
    }
}
