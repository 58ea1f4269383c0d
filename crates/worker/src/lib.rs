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
//! recorded transaction, gets a FAILED result and a confirmed copy in the dead-letter queue,
//! then is acked (requeued after a pause if that copy could not be published). A database that
//! is unreachable leaves the message unacked and requeued after a pause; a lost broker
//! connection is re-established. Neither ends the process.

mod authority;
mod batcher;
mod expired;
mod handler;
mod relay;
mod share;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ledgerflow_messaging::{Fed, MessagingError, Partitions, Publisher, Topology, TrustedUsers, retry};
use ledgerflow_store::{Grouping, Store};
use share::Share;
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
    /// Broker users of LedgerFlow's own processes (gateways, operators' tools) besides this
    /// worker's own: only their messages may act for recorded transactions (see `authority`).
    pub trusted_broker_users: Vec<String>,
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
            trusted_broker_users: Vec::new(),
        }
    }
}

/// Runs until `shutdown` is cancelled, then stops consuming, finishes and acks the commands in
/// flight, and returns. Connection losses are retried forever with capped backoff.
pub async fn run(store: Store, config: WorkerConfig, shutdown: CancellationToken) {
    register_rare_counters();
    let results = Publisher::new(&config.amqp_uri, &format!("{}-results", config.name), config.topology.clone());
    let trusted = TrustedUsers::with_own(&config.trusted_broker_users, &config.amqp_uri);
    let authority = Arc::new(authority::Authority::new(trusted, store.clone()));
    let registry = tokio::spawn(Arc::clone(&authority).keep_fresh());
    let ctx = Arc::new(handler::Ctx {
        authority,
        batcher: batcher::Batcher::spawn(
            store.clone(),
            Grouping { max: config.max_batch, linger: config.batch_linger },
        ),
        store,
        results: results.clone(),
        max_attempts: config.max_attempts.max(1),
        // The retry queue's, which `topology` names.
        retry_delay: config.topology.retry_delay(),
    });
    // Sampled apart from the consuming loop, so a broker slow to answer a passive declare
    // never holds up deliveries or shutdown.
    let workers = Arc::new(AtomicU32::new(0));
    let sampler = tokio::spawn(sample_queues(results.clone(), config.topology.clone(), Arc::clone(&workers)));
    let expiry = tokio::spawn(expire_holds(ctx.store.clone(), results.clone()));
    let retired = tokio::spawn(move_retired_retries(results.clone(), ctx.authority.trusted().clone()));
    let observer = expired::Observer {
        uri: config.amqp_uri.clone(),
        name: config.name.clone(),
        topology: config.topology.clone(),
    };
    let expirations = tokio::spawn(expired::run(Arc::clone(&ctx), observer, shutdown.clone()));
    // Every worker stands ready to relay the event stream; one at a time leads, publishing on
    // the results' connection: one more connection would cost a thread (each lapin connection
    // runs its own I/O loop) and its buffers, for no isolation that matters (both publish to
    // the same broker, and a broken link is reopened by whichever publishes next).
    let holder = format!("{}-{}-{}", config.name, std::process::id(), uuid::Uuid::new_v4().simple());
    let relay = tokio::spawn(relay::run(ctx.store.clone(), results.clone(), holder, shutdown.clone()));
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
    expiry.abort();
    retired.abort();
    // It stops on `shutdown` by itself, settling what it holds; bounded like every step.
    if tokio::time::timeout(OBSERVER_STOP_LIMIT, expirations).await.is_err() {
        warn!(worker = %config.name, "the expired commands' observer did not stop in time");
    }
    // It hands its lease over on `shutdown`, so another worker leads at once.
    if tokio::time::timeout(OBSERVER_STOP_LIMIT, relay).await.is_err() {
        warn!(worker = %config.name, "the event relay did not stop in time");
    }
    registry.abort();
    results.close().await;
    info!(worker = %config.name, "worker stopped");
}

/// Longest wait for the observer of expired commands to stop.
const OBSERVER_STOP_LIMIT: Duration = Duration::from_secs(15);

/// Registers at zero the counters that only retries, redeliveries, hand-offs and split
/// batches increment (recorded in `handler`, `ledgerflow-messaging` and `ledgerflow-store`).
/// `rate()` needs a sample before the first increment to count it, and the alerts and the
/// dashboard in deploy/monitoring should find the series on a quiet worker rather than nothing.
fn register_rare_counters() {
    for name in [
        "ledgerflow_messages_redelivered_total",
        "ledgerflow_messages_retried_total",
        "ledgerflow_partition_handoffs_total",
        "ledgerflow_holds_expired_total",
        "ledgerflow_commands_expired_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for why in ["conflict", "refused"] {
        metrics::counter!("ledgerflow_batch_splits_total", "why" => why).increment(0);
    }
    // Any refusal at all is worth an alert (deploy/monitoring), so the series exists at zero.
    metrics::counter!("ledgerflow_commands_unauthorized_total", "reason" => "ANONYMOUS").increment(0);
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
                topology.expired(),
                topology.results(),
            ]);
            for queue in queues {
                if let Ok(ready) = results.ready_messages(&queue).await {
                    metrics::gauge!("ledgerflow_queue_depth", "queue" => queue).set(f64::from(ready));
                }
            }
            if let Ok(roster) = results.queue_state(&topology.roster()).await {
                workers.store(roster.consumers, Ordering::Relaxed);
            }
        };
        if tokio::time::timeout(SAMPLE_TIMEOUT, round).await.is_err() {
            debug!("queue sampling timed out");
        }
    }
}

/// How often each worker looks into the retired retry queues.
const RETIRED_INTERVAL: Duration = Duration::from_secs(5);
/// Most commands moved from them at once.
const RETIRED_MOVES: usize = 100;

/// Moves what earlier versions left in their retry queues into this one, and reports their
/// depths, forever (see `Topology::retired_retries`). Not bounded by a timeout: a move dropped
/// half-way would leave its message unacked on the publisher's channel; each publish bounds
/// itself.
async fn move_retired_retries(results: Publisher, trusted: TrustedUsers) {
    let mut tick = tokio::time::interval(RETIRED_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Their depths are sampled here, not with the other queues' every second: each look
        // opens a channel per queue.
        let queues = match results.retired_retries().await {
            Ok(queues) => queues,
            Err(e) => {
                debug!(error = %e, "could not look into the retired retry queues");
                continue;
            }
        };
        for (queue, q) in &queues {
            metrics::gauge!("ledgerflow_queue_depth", "queue" => queue.clone()).set(f64::from(q.ready));
        }
        match retry::move_retired(&results, &trusted, &queues, RETIRED_MOVES).await {
            Ok(0) => {}
            Ok(moved) => info!(moved, "moved commands from the retired retry queues"),
            Err(e) => debug!(error = %e, "could not move commands from the retired retry queues"),
        }
    }
}

/// How often each worker looks for HELD holds past `expiresAt`: holds expire within about
/// this long of their time, whoever asks (every worker sweeps; each hold expires once).
const HOLD_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Most holds one sweep expires before looking again at once.
const HOLD_SWEEP_BATCH: i64 = 100;

/// How long an expiry's result may stay unreported before any worker's sweep publishes it:
/// the expiring worker publishes at once, and a copy from another meanwhile would be noise.
const EXPIRY_REPORT_GRACE: Duration = Duration::from_secs(5);

/// Expires due holds forever and publishes an EXPIRED result for each. A hold stays marked
/// unreported until its result is confirmed, and every sweep publishes the results still
/// unreported after [`EXPIRY_REPORT_GRACE`] (their worker failed to publish them, or died
/// first): a watcher always hears of an expiry, at least once, as of every other decision.
async fn expire_holds(store: Store, results: Publisher) {
    let mut tick = tokio::time::interval(HOLD_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            let expired = match store.expire_due_holds(HOLD_SWEEP_BATCH).await {
                Ok(expired) => expired,
                Err(e) => {
                    debug!(error = %e, "hold expiry sweep failed; trying again next round");
                    break;
                }
            };
            for hold in &expired {
                metrics::counter!("ledgerflow_holds_expired_total").increment(1);
                info!(transaction_id = %hold.id, amount = hold.amount.minor(), "hold expired");
            }
            report_expiries(&store, &results, &expired).await;
            if (expired.len() as i64) < HOLD_SWEEP_BATCH {
                break;
            }
        }
        match store.expiries_unreported(chrono::Utc::now() - EXPIRY_REPORT_GRACE, HOLD_SWEEP_BATCH).await {
            Ok(unreported) => report_expiries(&store, &results, &unreported).await,
            Err(e) => debug!(error = %e, "could not look for unreported expiries; trying again next round"),
        }
    }
}

/// Publishes the EXPIRED results of `holds` and marks those the broker confirmed as reported;
/// the others stay unreported for a later sweep.
async fn report_expiries(store: &Store, results: &Publisher, holds: &[ledgerflow_store::TransactionRecord]) {
    let mut reported = Vec::with_capacity(holds.len());
    for hold in holds {
        match results.publish_result(&handler::result_of(hold)).await {
            Ok(()) => reported.push(hold.id),
            Err(e) => {
                warn!(transaction_id = %hold.id, error = %e, "could not publish a hold's expiry; a later sweep will")
            }
        }
    }
    if let Err(e) = store.expiries_reported(&reported).await {
        debug!(error = %e, "could not mark expiries reported; a later sweep publishes them again");
    }
}

/// One connection's worth of consuming. Returns `Ok` only on shutdown.
async fn consume(
    ctx: &Arc<handler::Ctx>,
    config: &WorkerConfig,
    workers: &AtomicU32,
    shutdown: &CancellationToken,
) -> Result<(), MessagingError> {
    let topology = &config.topology;
    // Per consumer: the prefetch is shared out between the partitions.
    let per_partition = config.prefetch.div_ceil(topology.partition_count()).max(MIN_PREFETCH);
    let tag = format!("{}-{}", config.name, std::process::id());
    let mut partitions = Partitions::subscribe(&config.amqp_uri, &config.name, &tag, topology, per_partition).await?;
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
            fed = partitions.next() => match fed {
                Ok(Fed { partition, generation, delivery }) => {
                    share.set_workers(workers.load(Ordering::Relaxed));
                    if share.delivered(partition, generation, Instant::now()) {
                        partitions.hand_off(partition);
                    }
                    in_flight.spawn(handler::handle(Arc::clone(ctx), delivery));
                }
                Err(e) => break Err(e),
            },
            // Reap finished handlers so the set stays as small as the prefetch.
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    };
    // No new deliveries; finish (and ack) what was already taken, whether stopping or
    // reconnecting: the acks fail harmlessly if the channel is gone, and the broker then
    // redelivers. Handlers bound their own publishes and acks, so a dead connection cannot
    // hold the worker here.
    partitions.stop().await;
    while in_flight.join_next().await.is_some() {}
    report_partitions(&Share::new(topology.partition_count()), topology.partition_count());
    partitions.close("worker stopping").await;
    outcome
}

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
