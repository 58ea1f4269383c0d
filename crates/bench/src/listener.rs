//! Outcomes as the workers publish them: an exclusive auto-delete queue bound to the results
//! exchange hears every result, which is where completion times come from (not from polling
//! the API). It takes nothing from anyone else's queue, and vanishes with the connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::ProgressBar;
use ledgerflow_domain::{FailureReason, TransactionStatus};
use ledgerflow_messaging::lapin::{Channel, Connection};
use ledgerflow_messaging::{Topology, connect};
use serde_json::Value;
use tokio::task::JoinHandle;

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
}

/// Every outcome heard so far.
#[derive(Default)]
pub struct Outcomes {
    by_id: HashMap<String, Outcome>,
    by_key: HashMap<String, Outcome>,
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
        let outcome = Outcome { at, decided_at, status, reason };
        self.received += 1;
        if let Some(id) = v["transactionId"].as_str() {
            self.by_id.entry(id.to_owned()).or_insert(outcome);
        }
        if let Some(key) = v["idempotencyKey"].as_str() {
            self.by_key.entry(key.to_owned()).or_insert(outcome);
        }
    }

    pub fn get(&self, on: MatchOn, key: &str) -> Option<&Outcome> {
        match on {
            MatchOn::TransactionId => self.by_id.get(key),
            MatchOn::IdempotencyKey => self.by_key.get(key),
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
        });
        Ok(Self { outcomes, failure, connection, _channel: channel, task })
    }

    /// The outcomes heard so far, locked: hold it briefly, the listener waits meanwhile.
    pub fn outcomes(&self) -> MutexGuard<'_, Outcomes> {
        lock(&self.outcomes)
    }

    fn ensure_listening(&self) -> Result<()> {
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
    use std::time::{Duration, Instant};

    use ledgerflow_domain::{FailureReason, TransactionStatus};

    use super::{MatchOn, Outcomes};

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
}
