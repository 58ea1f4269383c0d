//! `--holds`: hold-then-post pairs on the processes that just carried the transfers, to show
//! what reserving money and then capturing it costs against moving it at once. A pair is a
//! hold submitted over HTTP (or published as an upstream HOLD with `--direct`) and, once its
//! HELD result is heard on the results exchange, its post of the whole amount, until the
//! POST_HOLD's COMPLETED result is heard.
//!
//! Holds are submitted as the transfers are, `--concurrency` requests at a time without
//! waiting for their outcome, and each accepted hold's post follows on a task of its own (at
//! most `--concurrency` posts in flight): the pipeline is as full as in the transfers' load, so
//! the two rates compare what each costs at the maximum, not how long one client waits.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use ledgerflow_domain::{HoldTimeout, TransactionStatus};
use ledgerflow_messaging::Publisher;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, HoldRequest};
use crate::figures::reason_name;
use crate::listener::{MatchOn, Outcome, Waiter};
use crate::load::waits_end;
use crate::pair_figures::{Pair, PairFigures, Stop};
use crate::plan::{Planned, upstream_hold, upstream_post};
use crate::pool::pool;
use crate::run::Session;
use crate::setup::Funded;

/// How pairs are submitted, and what their results are matched on.
enum Via {
    /// As a client: results matched on the ids the 202s name.
    Http(Api),
    /// As an upstream system: results matched on idempotency keys.
    Direct(Publisher),
}

/// What every pair of a load shares: how it submits, what it submits, and how it waits.
struct Pairs {
    via: Via,
    accounts: Arc<Vec<Funded>>,
    plan: Arc<Vec<Planned>>,
    /// How this load's idempotency keys begin, apart from any other load's.
    keys: String,
    timeout: HoldTimeout,
    outcomes: Waiter,
    /// Posts in flight at once.
    posts: Semaphore,
    done: ProgressBar,
}

/// A pair once its hold was submitted: stopped there, or followed by its post on a task.
enum Submitted {
    Stopped(Pair),
    Following(JoinHandle<Pair>),
}

impl Session<'_> {
    /// Runs `plan` as hold-then-post pairs, holds each HELD for `timeout`, and waits for every
    /// accepted pair's end.
    pub async fn run_pairs(
        &self,
        accounts: &Arc<Vec<Funded>>,
        plan: &Arc<Vec<Planned>>,
        timeout: HoldTimeout,
    ) -> Result<PairFigures> {
        let (bench, concurrency) = (self.bench, self.bench.args.concurrency());
        let via = self.pairs_via().await?;
        // Stops every wait when the outcomes stall or time runs out, and when this returns
        // early, so that no pair's task outlives the phase.
        let stop = CancellationToken::new();
        let _stop_on_return = stop.clone().drop_guard();
        let watchdog = self.listener.stop_when_stalled(stop.clone(), waits_end(bench.deadline));
        let submitted = bench.bars.bar(plan.len(), "holds: submitted");
        let pairs = Arc::new(Pairs {
            via,
            accounts: Arc::clone(accounts),
            plan: Arc::clone(plan),
            keys: format!("bench-{}-pair-", bench.sandbox.tag),
            timeout,
            outcomes: self.listener.waiter(stop),
            posts: Semaphore::new(concurrency),
            done: bench.bars.bar(plan.len(), "pairs: finished"),
        });
        let shared = Arc::clone(&pairs);
        let submissions = pool(plan.len(), concurrency, &submitted, move |i| Arc::clone(&shared).submit(i)).await?;
        submitted.finish();
        let mut ended = Vec::with_capacity(submissions.len());
        for submission in submissions {
            ended.push(match submission {
                Submitted::Stopped(pair) => pair,
                Submitted::Following(task) => task.await.context("a pair's task panicked")?,
            });
        }
        watchdog.abort();
        pairs.done.finish();
        if let Via::Direct(publisher) = &pairs.via {
            publisher.close().await;
        }
        // Pairs that waited in vain because the results were lost are no figure.
        self.listener.ensure_listening()?;
        Ok(PairFigures::tally(&ended))
    }

    /// How this run submits: over HTTP, or with `--direct` as an upstream publisher.
    async fn pairs_via(&self) -> Result<Via> {
        let bench = self.bench;
        if bench.args.direct {
            let publisher =
                Publisher::new(&bench.conn.services.amqp_uri, "ledgerflow-bench-upstream", self.topology.clone());
            publisher.ensure_connected().await.context("cannot publish to RabbitMQ")?;
            return Ok(Via::Direct(publisher));
        }
        // Holds and posts both in flight: twice the transfers' connections, kept open.
        Ok(Via::Http(self.api.with_pool(2 * bench.args.concurrency())?))
    }
}

impl Pairs {
    /// Submits pair `i`'s hold; once accepted, its post follows on a task of its own.
    async fn submit(self: Arc<Self>, i: usize) -> Submitted {
        let mut pair = Pair::sent(Instant::now());
        match self.send_hold(i).await {
            Ok(hold) => {
                pair.hold_accepted = Some(Instant::now());
                Submitted::Following(tokio::spawn(self.follow(i, hold, pair)))
            }
            Err(why) => {
                self.done.inc(1);
                Submitted::Stopped(Pair { stopped: Some(Stop::Rejected(format!("hold: {why}"))), ..pair })
            }
        }
    }

    async fn follow(self: Arc<Self>, i: usize, hold: String, mut pair: Pair) -> Pair {
        if let Err(stop) = self.post_when_held(i, &hold, &mut pair).await {
            pair.stopped = Some(stop);
        }
        self.done.inc(1);
        pair
    }

    /// Waits for the hold (named `hold` as its results are matched) to be HELD, posts it, and
    /// waits for the post to be COMPLETED, noting each step's time in `pair`.
    async fn post_when_held(&self, i: usize, hold: &str, pair: &mut Pair) -> Result<(), Stop> {
        let held = self.outcome(hold, TransactionStatus::Held).await?;
        pair.held = Some(held.at);
        let post = {
            // Held until the post is accepted: at most `--concurrency` posts in flight.
            let _slot = self.posts.acquire().await.map_err(|_| Stop::Unfinished)?;
            pair.post_sent = Some(Instant::now());
            let post = self.send_post(i, hold, &held).await.map_err(|why| Stop::Rejected(format!("post: {why}")))?;
            pair.post_accepted = Some(Instant::now());
            post
        };
        let posted = self.outcome(&post, TransactionStatus::Completed).await?;
        pair.completed = Some(posted.at);
        Ok(())
    }

    /// The first outcome heard for `name`, if it is `expected`.
    async fn outcome(&self, name: &str, expected: TransactionStatus) -> Result<Outcome, Stop> {
        let on = match self.via {
            Via::Http(_) => MatchOn::TransactionId,
            Via::Direct(_) => MatchOn::IdempotencyKey,
        };
        let outcome = self.outcomes.outcome(on, name).await.ok_or(Stop::Unfinished)?;
        if outcome.status == expected {
            return Ok(outcome);
        }
        let kind = if expected == TransactionStatus::Held { "HOLD" } else { "POST_HOLD" };
        let why = match outcome.status {
            TransactionStatus::Failed => reason_name(outcome.reason),
            other => other.as_str(),
        };
        Err(Stop::Failed(format!("{kind} {why}")))
    }

    /// Submits pair `i`'s hold: what its results are matched on, or why it was not accepted.
    async fn send_hold(&self, i: usize) -> Result<String, String> {
        let (t, key) = (self.plan[i], format!("{}{i}", self.keys));
        let (from, to) = (&self.accounts[t.from], &self.accounts[t.to]);
        match &self.via {
            Via::Http(api) => {
                let timeout_seconds = self.timeout.seconds();
                let hold = HoldRequest { from: from.id, to: to.id, amount: t.amount, key: &key, timeout_seconds };
                api.hold(&from.token, &hold).await
            }
            Via::Direct(publisher) => {
                let cmd = upstream_hold(from.id, to.id, t.amount, self.timeout, &key)
                    .map_err(|e| format!("invalid command: {e}"))?;
                publisher.publish_command(&cmd, None).await.map_err(|e| e.to_string())?;
                Ok(key)
            }
        }
    }

    /// Posts the whole of pair `i`'s HELD hold: what the post's result is matched on, or why
    /// it was not accepted.
    async fn send_post(&self, i: usize, hold: &str, held: &Outcome) -> Result<String, String> {
        let (t, key) = (self.plan[i], format!("{}{i}-post", self.keys));
        let (from, to) = (&self.accounts[t.from], &self.accounts[t.to]);
        match &self.via {
            // The hold's initiator posts it, as a client capturing its own authorisation.
            Via::Http(api) => api.post_hold(&from.token, hold, &key).await,
            Via::Direct(publisher) => {
                let id = held.transaction_id.ok_or_else(|| format!("HELD result of {hold} without its id"))?;
                let cmd =
                    upstream_post(id, from.id, to.id, t.amount, &key).map_err(|e| format!("invalid command: {e}"))?;
                publisher.publish_command(&cmd, None).await.map_err(|e| e.to_string())?;
                Ok(key)
            }
        }
    }
}
