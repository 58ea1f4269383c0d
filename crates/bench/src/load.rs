//! The load: a plan of transfers submitted at `--concurrency` (and `--rate`), over HTTP as a
//! client would or, with `--direct`, published to the transfers exchange as an upstream
//! system would; then every accepted transfer's outcome awaited, and the two joined into the
//! figures.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use indicatif::ProgressBar;
use ledgerflow_client::Transfer;
use ledgerflow_domain::{AccountId, TransferKind};
use ledgerflow_messaging::Publisher;

use crate::api::Api;
use crate::args::BenchArgs;
use crate::figures::LoadFigures;
use crate::listener::MatchOn;
use crate::plan::{Pace, Planned, upstream_command};
use crate::pool::pool;
use crate::run::Session;
use crate::samples::write_samples;
use crate::sandbox::Sandbox;
use crate::setup::Funded;

/// Time kept back from `--timeout` when waiting for outcomes, so that the report still gets made.
const REPORT_MARGIN: Duration = Duration::from_secs(5);

/// When waiting for a load's outcomes ends: a little before the overall deadline, so a slow
/// run still reports what it measured (with the rest counted as unfinished) instead of only
/// timing out.
pub fn waits_end(deadline: Instant) -> Instant {
    deadline.checked_sub(REPORT_MARGIN).unwrap_or(deadline)
}

/// One transfer as sent, and what came back at once.
pub struct Sent {
    /// What its result is matched on: the transaction id (HTTP) or idempotency key (direct).
    pub key: String,
    pub sent: Instant,
    /// When the 202 (HTTP) or the publisher confirm (direct) arrived.
    pub accepted: Option<Instant>,
    /// Why it was not accepted: HTTP status and error code, or a transport or broker error.
    pub rejected: Option<String>,
}

impl Sent {
    fn accepted(key: String, sent: Instant) -> Self {
        Self { key, sent, accepted: Some(Instant::now()), rejected: None }
    }

    fn rejected(key: String, sent: Instant, why: String) -> Self {
        Self { key, sent, accepted: None, rejected: Some(why) }
    }
}

/// How a load submits its transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// One `POST /transactions` each.
    Http,
    /// Published to the exchange as an upstream system (`--direct`).
    Direct,
    /// `POST /transactions/batch` of this many (`--batch N`).
    Batch(usize),
}

impl Via {
    /// What the arguments ask of the load the report is about.
    pub fn of(args: &BenchArgs) -> Self {
        match (args.direct, args.batch) {
            (true, _) => Self::Direct,
            (false, Some(n)) => Self::Batch(n as usize),
            (false, None) => Self::Http,
        }
    }
}

/// One load over a plan: how its idempotency keys begin (apart from any other load's), how
/// and at what pace it submits, where its samples go, and how its progress bars are labelled.
pub struct Phase<'a> {
    keys: String,
    via: Via,
    rate: Option<u32>,
    samples: Option<&'a Path>,
    labels: [&'static str; 2],
}

impl<'a> Phase<'a> {
    /// The load the report is about.
    pub fn timed(sandbox: &Sandbox, via: Via, rate: Option<u32>, samples: Option<&'a Path>) -> Self {
        Self { keys: format!("bench-{}-", sandbox.tag), via, rate, samples, labels: ["submitted", "finished"] }
    }

    /// The unpaced load that measures the maximum for `--rate N%`.
    pub fn maximum(sandbox: &Sandbox, via: Via) -> Self {
        Self::unpaced(sandbox, via, "max", ["max: submitted", "max: finished"])
    }

    /// The transfers `--holds` runs again after its pairs.
    pub fn after_pairs(sandbox: &Sandbox, via: Via) -> Self {
        Self::unpaced(sandbox, via, "after", ["after: submitted", "after: finished"])
    }

    /// An unpaced load that `--batch` compares itself with.
    pub fn compared(sandbox: &Sandbox, via: Via, labels: [&'static str; 2]) -> Self {
        Self::unpaced(sandbox, via, if via == Via::Direct { "direct" } else { "http" }, labels)
    }

    /// An unpaced load whose idempotency keys are its own (`bench-<tag>-<name>-<i>`), so that
    /// none repeats another load's.
    fn unpaced(sandbox: &Sandbox, via: Via, name: &str, labels: [&'static str; 2]) -> Self {
        Self { keys: format!("bench-{}-{name}-", sandbox.tag), via, rate: None, samples: None, labels }
    }
}

impl Session<'_> {
    /// Submits the plan at `--concurrency`, then waits for the outcome of every accepted transfer.
    pub async fn run_transfers(
        &self,
        accounts: &Arc<Vec<Funded>>,
        plan: &Arc<Vec<Planned>>,
        phase: &Phase<'_>,
    ) -> Result<LoadFigures> {
        let bars = &self.bench.bars;
        let submitted = bars.bar(plan.len(), phase.labels[0]);
        let finished = bars.bar(plan.len(), phase.labels[1]);
        let ticker = self.listener.follow(finished.clone());
        let anchor = (Instant::now(), Utc::now());
        let (sent, on) = match phase.via {
            Via::Direct => (self.submit_direct(accounts, plan, phase, &submitted).await, MatchOn::IdempotencyKey),
            Via::Http => (self.submit_http(accounts, plan, phase, &submitted).await, MatchOn::TransactionId),
            Via::Batch(n) => (self.submit_batches(accounts, plan, phase, n, &submitted).await, MatchOn::TransactionId),
        };
        ticker.abort();
        let sent = sent?;
        submitted.finish();
        let keys: Vec<String> = sent.iter().filter(|s| s.accepted.is_some()).map(|s| s.key.clone()).collect();
        self.listener.await_all(on, &keys, waits_end(self.bench.deadline), &finished).await?;
        let outcomes = self.listener.outcomes();
        if let Some(path) = phase.samples {
            write_samples(path, anchor, &sent, &outcomes, on)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(LoadFigures::tally(&sent, &outcomes, on, anchor))
    }

    async fn submit_http(
        &self,
        accounts: &Arc<Vec<Funded>>,
        plan: &Arc<Vec<Planned>>,
        phase: &Phase<'_>,
        bar: &ProgressBar,
    ) -> Result<Vec<Sent>> {
        let (api, accounts, plan, keys) =
            (self.api.clone(), Arc::clone(accounts), Arc::clone(plan), phase.keys.clone());
        let pace = Pace::new(phase.rate);
        pool(plan.len(), self.bench.args.concurrency(), bar, move |i| {
            let (api, accounts, t) = (api.clone(), Arc::clone(&accounts), plan[i]);
            let key = format!("{keys}{i}");
            async move {
                pace.wait_turn(i).await;
                send_http(&api, &accounts, t, key).await
            }
        })
        .await
    }

    /// Submits the plan in batches of up to `n`, each of one user's transfers (a user sends
    /// only from its own accounts), the users' batches taken in turn so that the senders mix
    /// as in the other loads; about `--concurrency` transfers in flight, in at least two batches.
    async fn submit_batches(
        &self,
        accounts: &Arc<Vec<Funded>>,
        plan: &Arc<Vec<Planned>>,
        phase: &Phase<'_>,
        n: usize,
        bar: &ProgressBar,
    ) -> Result<Vec<Sent>> {
        let batches = Arc::new(batches(accounts, plan, n));
        let (api, accounts, plan, keys) =
            (self.api.clone(), Arc::clone(accounts), Arc::clone(plan), phase.keys.clone());
        let in_flight = self.bench.args.concurrency().div_ceil(n).max(2);
        let progress = bar.clone();
        let sent = pool(batches.len(), in_flight, bar, move |b| {
            let (api, accounts, plan, batches, keys) =
                (api.clone(), Arc::clone(&accounts), Arc::clone(&plan), Arc::clone(&batches), keys.clone());
            let progress = progress.clone();
            async move {
                let batch = &batches[b];
                let ids: Vec<(String, String)> = batch
                    .iter()
                    .map(|&i| (accounts[plan[i].from].id.to_string(), accounts[plan[i].to].id.to_string()))
                    .collect();
                let keys: Vec<String> = batch.iter().map(|i| format!("{keys}{i}")).collect();
                let transfers: Vec<Transfer<'_>> = batch
                    .iter()
                    .zip(&ids)
                    .zip(&keys)
                    .map(|((&i, (from, to)), key)| Transfer {
                        from,
                        to,
                        amount: plan[i].amount,
                        idempotency_key: key,
                        description: None,
                    })
                    .collect();
                let token = Arc::clone(&accounts[plan[batch[0]].from].token);
                let started = Instant::now();
                let answers = api.batch(&token, &transfers).await;
                // The pool moves the bar on by one batch; these are its other transfers.
                progress.inc(batch.len().saturating_sub(1) as u64);
                batch
                    .iter()
                    .zip(keys)
                    .zip(answers)
                    .map(|((&i, key), answer)| {
                        let sent = match answer {
                            Ok(id) => Sent::accepted(id, started),
                            Err(why) => Sent::rejected(key, started, why),
                        };
                        (i, sent)
                    })
                    .collect::<Vec<_>>()
            }
        })
        .await?;
        let mut sent: Vec<(usize, Sent)> = sent.into_iter().flatten().collect();
        sent.sort_unstable_by_key(|(i, _)| *i);
        Ok(sent.into_iter().map(|(_, s)| s).collect())
    }

    /// Publishes the plan as an upstream system would: confirmed, persistent JSON commands
    /// with initiator `service:bench` and no transaction id.
    async fn submit_direct(
        &self,
        accounts: &Arc<Vec<Funded>>,
        plan: &Arc<Vec<Planned>>,
        phase: &Phase<'_>,
        bar: &ProgressBar,
    ) -> Result<Vec<Sent>> {
        let publisher =
            Publisher::new(&self.bench.conn.services.amqp_uri, "ledgerflow-bench-upstream", self.topology.clone());
        publisher.ensure_connected().await.context("cannot publish to RabbitMQ")?;
        let (p, accounts, plan, keys) = (publisher.clone(), Arc::clone(accounts), Arc::clone(plan), phase.keys.clone());
        let pace = Pace::new(phase.rate);
        let sent = pool(plan.len(), self.bench.args.concurrency(), bar, move |i| {
            let (p, from, to, amount) = (p.clone(), accounts[plan[i].from].id, accounts[plan[i].to].id, plan[i].amount);
            let key = format!("{keys}{i}");
            async move {
                pace.wait_turn(i).await;
                publish_direct(&p, from, to, amount, key).await
            }
        })
        .await;
        publisher.close().await;
        sent
    }
}

/// The plan's transfers in batches of up to `n` indices, each of one user's (the owner of the
/// sending account, told by its token), the users' batches in turn: their first batches, then
/// their second ones, and so on.
fn batches(accounts: &[Funded], plan: &[Planned], n: usize) -> Vec<Vec<usize>> {
    let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in plan.iter().enumerate() {
        by_user.entry(&*accounts[t.from].token).or_default().push(i);
    }
    let per_user: Vec<Vec<Vec<usize>>> =
        by_user.into_values().map(|own| own.chunks(n.max(1)).map(<[usize]>::to_vec).collect()).collect();
    let rounds = per_user.iter().map(Vec::len).max().unwrap_or(0);
    (0..rounds).flat_map(|r| per_user.iter().filter_map(move |own| own.get(r).cloned())).collect()
}

async fn send_http(api: &Api, accounts: &[Funded], t: Planned, key: String) -> Sent {
    let (from, to) = (&accounts[t.from], &accounts[t.to]);
    let sent = Instant::now();
    match api.transfer(&from.token, from.id, to.id, t.amount, &key).await {
        Ok(id) => Sent::accepted(id, sent),
        Err(why) => Sent::rejected(key, sent, why),
    }
}

async fn publish_direct(publisher: &Publisher, from: AccountId, to: AccountId, amount: i64, key: String) -> Sent {
    let sent = Instant::now();
    let cmd = match upstream_command(TransferKind::Transfer, from, to, amount, &key) {
        Ok(cmd) => cmd,
        Err(e) => return Sent::rejected(key, sent, format!("invalid command: {e}")),
    };
    match publisher.publish_command(&cmd, None).await {
        Ok(()) => Sent::accepted(key, sent),
        Err(e) => Sent::rejected(key, sent, e.to_string()),
    }
}
