//! Outcomes as the workers publish them: an exclusive auto-delete queue bound to the results
//! exchange hears every result, which is where completion times come from (not from polling
//! the API). It takes nothing from anyone else's queue, and vanishes with the connection.
//! A load that must act on an outcome (the post of a HELD hold) waits for it through a
//! [`Waiter`], woken by the listener as the result arrives rather than by polling.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::ProgressBar;
use ledgerflow_domain::{FailureReason, TransactionId, TransactionStatus};
use ledgerflow_messaging::lapin::{Channel, Connection};
use ledgerflow_messaging::{Topology, connect};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pool::lock;

/// Waiting for outcomes gives up when none has arrived for this long (stuck PENDING).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a result is matched on: HTTP transfers by the id the 202 named, upstream commands (which
/// have no id when sent) by their idempotency key.
#[derive(Debug, Clone, Copy)]
pub enum MatchOn {
    TransactionId,
    IdempotencyKey,
}

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// When the bench received the result: the end of the end-to-end latency.
    pub at: Instant,
    /// When the worker decided it (the result's `completedAt`, worker's clock).
    pub decided_at: Option<DateTime<Utc>>,
    pub status: TransactionStatus,
    pub reason: Option<FailureReason>,
    /// The transaction it is about: what names a hold published as an upstream command (which
    /// has no id until the worker creates it) in its post.
    pub transaction_id: Option<TransactionId>,
}

/// The first outcome heard for each of one kind of name (transaction ids, or idempotency keys),
/// and who waits for one not heard yet.
#[derive(Default)]
struct Index {
    heard: HashMap<String, Outcome>,
    /// One waiter per name: each of the bench's transactions is waited for by one task.
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
}

impl Index {
    /// Keeps the first arrival, and hands it to its waiter if there is one.
    fn record(&mut self, name: &str, outcome: Outcome) {
        if let Entry::Vacant(slot) = self.heard.entry(name.to_owned()) {
            slot.insert(outcome);
            if let Some(waiter) = self.waiting.remove(name) {
                let _ = waiter.send(outcome);
            }
        }
    }

    /// The outcome if it was heard, or a receiver that gets it when it is.
    fn subscribe(&mut self, name: &str) -> Result<Outcome, oneshot::Receiver<Outcome>> {
        if let Some(outcome) = self.heard.get(name) {
            return Ok(*outcome);
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(name.to_owned(), tx);
        Err(rx)
    }
}

/// Every outcome heard so far.
#[derive(Default)]
pub struct Outcomes {
    by_id: Index,
    by_key: Index,
    received: usize,
}

impl Outcomes {
    /// Records a result body. Results are at least once (a redelivered command republishes its
    /// result), so the first arrival counts.
    fn record(&mut self, body: &[u8], at: Instant) {
        let Ok(v) = serde_json::from_slice::<Value>(body) else { return };
        let Some(status) = v["status"].as_str().and_then(|s| s.parse().ok()) else { return };
        let reason = v["failureReason"].as_str().and_then(|s| s.parse().ok());
        let decided_at = v["completedAt"].as_str().and_then(|s| s.parse().ok());
        let id = v["transactionId"].as_str();
        let transaction_id = id.and_then(|s| s.parse().ok());
        let outcome = Outcome { at, decided_at, status, reason, transaction_id };
        self.received += 1;
        if let Some(id) = id {
            self.by_id.record(id, outcome);
        }
        if let Some(key) = v["idempotencyKey"].as_str() {
            self.by_key.record(key, outcome);
        }
    }

    pub fn get(&self, on: MatchOn, key: &str) -> Option<&Outcome> {
        self.index(on).heard.get(key)
    }

    fn index(&self, on: MatchOn) -> &Index {
        match on {
            MatchOn::TransactionId => &self.by_id,
            MatchOn::IdempotencyKey => &self.by_key,
        }
    }

    fn index_mut(&mut self, on: MatchOn) -> &mut Index {
        match on {
            MatchOn::TransactionId => &mut self.by_id,
            MatchOn::IdempotencyKey => &mut self.by_key,
        }
    }

    /// Drops every waiter, whose receivers then fail: nothing more will be heard.
    fn abandon_waiters(&mut self) {
        self.by_id.waiting.clear();
        self.by_key.waiting.clear();
    }
}

/// A handle for tasks that wait for one outcome each, as it arrives; until `stop` is
/// cancelled (the phase gave up waiting) or the listener is lost.
#[derive(Clone)]
pub struct Waiter {
    outcomes: Arc<Mutex<Outcomes>>,
    stop: CancellationToken,
}

impl Waiter {
    /// The first outcome heard for `key`, as soon as it is heard; `None` if waiting stopped
    /// first.
    pub async fn outcome(&self, on: MatchOn, key: &str) -> Option<Outcome> {
        let receiver = match lock(&self.outcomes).index_mut(on).subscribe(key) {
            Ok(outcome) => return Some(outcome),
            Err(receiver) => receiver,
        };
        tokio::select! {
            heard = receiver => heard.ok(),
            () = self.stop.cancelled() => None,
        }
    }
}

pub struct ResultListener {
    outcomes: Arc<Mutex<Outcomes>>,
    failure: Arc<Mutex<Option<String>>>,
    connection: Connection,
    /// The channel the consumer reads on, kept open with it.
    _channel: Channel,
    task: JoinHandle<()>,
}

impl ResultListener {
    pub async fn start(amqp_uri: &str, topology: &Topology) -> Result<Self> {
        let connection = connect(amqp_uri, "ledgerflow-bench").await.context("cannot connect to RabbitMQ")?;
        let channel = connection.create_channel().await?;
        let mut consumer = topology.follow_results(&channel, "ledgerflow-bench").await?;
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let failure = Arc::new(Mutex::new(None));
        let (sink, failed) = (Arc::clone(&outcomes), Arc::clone(&failure));
        let task = tokio::spawn(async move {
            let reason = loop {
                match consumer.next().await {
                    Some(Ok(delivery)) => lock(&sink).record(&delivery.data, Instant::now()),
                    Some(Err(e)) => break e.to_string(),
                    None => break "the broker cancelled the result consumer".to_owned(),
                }
            };
            *lock(&failed) = Some(reason);
            lock(&sink).abandon_waiters();
        });
        Ok(Self { outcomes, failure, connection, _channel: channel, task })
    }

    /// The outcomes heard so far, locked: hold it briefly, the listener waits meanwhile.
    pub fn outcomes(&self) -> MutexGuard<'_, Outcomes> {
        lock(&self.outcomes)
    }

    pub fn ensure_listening(&self) -> Result<()> {
        match lock(&self.failure).as_ref() {
            Some(reason) => bail!("lost the result queue: {reason}"),
            None => Ok(()),
        }
    }

    /// Moves `bar` with the results heard from now on (all results on the queue, not only a
    /// phase's: exact matching comes after), until the returned task is aborted.
    pub fn follow(&self, bar: ProgressBar) -> JoinHandle<()> {
        let (outcomes, baseline) = (Arc::clone(&self.outcomes), self.outcomes().received);
        tokio::spawn(async move {
            loop {
                let received = lock(&outcomes).received;
                bar.set_position(received.saturating_sub(baseline) as u64);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// A handle for waiting on single outcomes, until `stop` is cancelled.
    pub fn waiter(&self, stop: CancellationToken) -> Waiter {
        Waiter { outcomes: Arc::clone(&self.outcomes), stop }
    }

    /// Cancels `stop` when no result has been heard for `STALL_TIMEOUT`, the deadline passes,
    /// or the listener is lost: the rule of [`Self::await_all`], for waits spread over tasks.
    /// Runs until then, or until the returned task is aborted.
    pub fn stop_when_stalled(&self, stop: CancellationToken, deadline: Instant) -> JoinHandle<()> {
        let (outcomes, failure) = (Arc::clone(&self.outcomes), Arc::clone(&self.failure));
        tokio::spawn(async move {
            let (mut seen, mut last_progress) = (lock(&outcomes).received, Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let received = lock(&outcomes).received;
                if received != seen {
                    (seen, last_progress) = (received, Instant::now());
                }
                let lost = lock(&failure).is_some();
                if lost || last_progress.elapsed() >= STALL_TIMEOUT || Instant::now() >= deadline {
                    stop.cancel();
                    return;
                }
            }
        })
    }

    /// Waits until every key has an outcome, no outcome arrived for `STALL_TIMEOUT`, or the
    /// deadline passed. Returns how many are still without one.
    pub async fn await_all(&self, on: MatchOn, keys: &[String], deadline: Instant, bar: &ProgressBar) -> Result<usize> {
        let mut waiting: Vec<&String> = keys.iter().collect();
        let mut last_progress = Instant::now();
        loop {
            self.ensure_listening()?;
            let before = waiting.len();
            {
                let outcomes = self.outcomes();
                waiting.retain(|k| outcomes.get(on, k).is_none());
            }
            bar.set_position((keys.len() - waiting.len()) as u64);
            if waiting.len() < before {
                last_progress = Instant::now();
            }
            if waiting.is_empty() || last_progress.elapsed() >= STALL_TIMEOUT || Instant::now() >= deadline {
                bar.finish();
                return Ok(waiting.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn close(self) {
        self.task.abort();
        ledgerflow_messaging::close(&self.connection, "bench done").await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use ledgerflow_domain::{FailureReason, TransactionStatus};
    use tokio_util::sync::CancellationToken;

    use super::{MatchOn, Outcomes, Waiter};
    use crate::pool::lock;

    #[test]
    fn outcomes_keep_the_first_arrival() {
        let mut outcomes = Outcomes::default();
        let first = Instant::now();
        let body = br#"{"version":1,"transactionId":"t1","status":"FAILED","failureReason":"INSUFFICIENT_FUNDS","idempotencyKey":"k1"}"#;
        outcomes.record(body, first);
        outcomes.record(body, first + Duration::from_secs(1));
        outcomes.record(b"not json", first);
        let o = outcomes.get(MatchOn::TransactionId, "t1").expect("by id");
        assert_eq!(
            (o.at, o.status, o.reason),
            (first, TransactionStatus::Failed, Some(FailureReason::InsufficientFunds))
        );
        assert!(outcomes.get(MatchOn::IdempotencyKey, "k1").is_some());
        assert_eq!(outcomes.received, 2);
    }

    #[tokio::test]
    async fn a_waiter_hears_its_outcome_as_it_arrives_or_stops_waiting() {
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let stop = CancellationToken::new();
        let waiter = Waiter { outcomes: Arc::clone(&outcomes), stop: stop.clone() };
        let held = br#"{"version":1,"transactionId":"0190a0a0-0000-7000-8000-000000000001","status":"HELD","idempotencyKey":"h1"}"#;
        let waiting = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.outcome(MatchOn::IdempotencyKey, "h1").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        lock(&outcomes).record(held, Instant::now());
        let heard = waiting.await.expect("the waiting task").expect("the outcome");
        assert_eq!(heard.status, TransactionStatus::Held);
        assert_eq!(
            heard.transaction_id.map(|id| id.to_string()).as_deref(),
            Some("0190a0a0-0000-7000-8000-000000000001")
        );
        // Heard before anyone asked: answered at once.
        let by_id = waiter.outcome(MatchOn::TransactionId, "0190a0a0-0000-7000-8000-000000000001").await;
        assert!(by_id.is_some());
        stop.cancel();
        assert!(waiter.outcome(MatchOn::TransactionId, "never").await.is_none());
    }
}
