//! The context a run works in ([`Bench`]: its settings, names, deadline and progress bars, and
//! [`Session`]: what the phases of a load share once the processes are up) and the order of a
//! load run: start the processes, set up, load (after measuring the maximum for `--rate N%`),
//! the hold-then-post pairs of `--holds`, the raw floor, the ledger check, stop the processes,
//! clean up, report.

use ledgerflow::app::shutdown_on_signal;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use ledgerflow_domain::HoldTimeout;
use ledgerflow_messaging::Topology;

use crate::api::Api;
use crate::args::{BenchArgs, ConnInfo, Rate};
use crate::cluster::Cluster;
use crate::figures::Maximum;
use crate::ledger::ledger_summary;
use crate::listener::ResultListener;
use crate::load::{Phase, Via};
use crate::metrics::Batching;
use crate::pair_figures::{HoldsPhase, TransfersAfter};
use crate::plan::{Planned, plan};
use crate::progress::Bars;
use crate::report::{BatchComparison, LoadReport};
use crate::sampling::{CpuTimes, RssSampler};
use crate::sandbox::{Credentials, Sandbox};
use crate::setup::Funded;

/// The pause after the checkpoint between two loads (`--rate N%`'s unpaced load and the timed
/// one; those `--holds` and `--batch` compare).
const SETTLE: Duration = Duration::from_secs(5);
/// How long the started processes get to become ready (gateway answering, workers consuming).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One run: what it was asked, where it works, and until when.
pub struct Bench {
    pub conn: ConnInfo,
    pub args: BenchArgs,
    pub sandbox: Sandbox,
    /// When the run gives up: `--timeout` from its start.
    pub deadline: Instant,
    pub bars: Bars,
}

/// What the phases of a load share once the processes are up: the API client, the result
/// listener and the topology it listens on, and the processes (unless `--target`).
pub struct Session<'a> {
    pub bench: &'a Bench,
    pub api: Api,
    pub listener: ResultListener,
    pub topology: Topology,
    pub cluster: Option<&'a Cluster>,
}

impl Bench {
    pub fn new(conn: ConnInfo, args: BenchArgs) -> Self {
        let sandbox = Sandbox::new(&conn, &args);
        let deadline = Instant::now() + args.timeout;
        Self { conn, args, sandbox, deadline, bars: Bars::new() }
    }

    /// Runs the benchmark the arguments ask for and prints its report on stdout.
    pub async fn run(&self) -> Result<()> {
        if self.args.balance_reads { self.run_balance_reads().await } else { self.run_load().await }
    }

    async fn run_load(&self) -> Result<()> {
        let outcome = self.load().await;
        self.cleanup().await;
        let report = outcome?;
        if self.args.json {
            println!("{}", serde_json::to_string_pretty(&report.to_json(&self.args))?);
        } else {
            print!("{}", report.render(&self.args));
        }
        match &report.ledger {
            Some(ledger) if !ledger.ok => {
                bail!("the ledger does not reconcile after the load: {}", ledger_summary(ledger))
            }
            _ => Ok(()),
        }
    }

    /// Starts the processes (unless `--target`), measures, and always stops them gracefully:
    /// the measurement alone is under the `--timeout`, so a timeout still ends in a clean stop.
    async fn load(&self) -> Result<LoadReport> {
        let system = Credentials::for_run(&self.args, &self.sandbox)?;
        let mut cluster = match &self.args.target {
            None => Some(Cluster::start(&self.conn, &self.sandbox, self.args.workers, &system)?),
            Some(_) => None,
        };
        let base = match (&cluster, &self.args.target) {
            (Some(cluster), _) => cluster.base().to_owned(),
            (None, Some(target)) => target.trim_end_matches('/').to_owned(),
            (None, None) => bail!("neither a target nor started processes"),
        };
        let sampler = cluster.as_ref().map(|c| RssSampler::start(c.pids()));
        let measured = guarded(self.deadline, self.measure(cluster.as_mut(), &base, &system)).await;
        let rss_mb = match sampler {
            Some(sampler) => sampler.finish().await,
            None => BTreeMap::new(),
        };
        let (exits, logs) = match cluster {
            Some(cluster) => {
                let logs = cluster.log_counts();
                (cluster.stop().await, logs)
            }
            None => (BTreeMap::new(), BTreeMap::new()),
        };
        if self.args.keep || measured.is_err() || logs.values().any(|c| c.warn + c.error > 0) {
            self.sandbox.keep_logs();
        } else {
            self.sandbox.remove_logs();
        }
        let mut report = measured?;
        report.rss_mb = rss_mb;
        report.exits = exits;
        report.logs = logs;
        Ok(report)
    }

    /// Waits for the processes, then runs the load's phases with the result listener up.
    async fn measure(&self, mut cluster: Option<&mut Cluster>, base: &str, system: &Credentials) -> Result<LoadReport> {
        let api = Api::new(base, self.args.concurrency())?;
        let ready_by = self.deadline.min(Instant::now() + READY_TIMEOUT);
        if let Some(cluster) = cluster.as_deref_mut() {
            cluster.wait_ready(ready_by).await?;
        }
        let topology = self.conn.topology(&self.sandbox.prefix);
        let listener = ResultListener::start(&self.conn.services.amqp_uri, &topology).await?;
        let session = Session { bench: self, api, listener, topology, cluster: cluster.map(|c| &*c) };
        let measured = session.measure(system, ready_by).await;
        session.listener.close().await;
        measured
    }

    /// A fresh plan of `--transfers` over the accounts, in the `--hot` pattern if asked.
    fn new_plan(&self) -> Arc<Vec<Planned>> {
        Arc::new(plan(self.args.accounts(), self.args.transfers(), self.args.hot_share()))
    }
}

impl Session<'_> {
    /// Setup, the load (after the unpaced one for `--rate N%`), the raw floor and the ledger
    /// check.
    async fn measure(&self, system: &Credentials, ready_by: Instant) -> Result<LoadReport> {
        let (bench, args) = (self.bench, &self.bench.args);
        if args.target.is_none() {
            let amqp_uri = &bench.conn.services.amqp_uri;
            ledgerflow_testkit::wait_for_workers(amqp_uri, &self.topology, u32::from(args.workers), ready_by).await?;
        }
        let setup_started = Instant::now();
        let accounts = self.setup(system).await?;
        let setup = setup_started.elapsed();
        let maximum = match args.rate {
            Some(Rate::OfMaximum(percent)) => Some(self.measure_maximum(&accounts, percent).await?),
            _ => None,
        };
        // A load compared with others of the run starts as they do, so that none of them pays
        // for writing out what came before (here, the setup's accounts and funds).
        if args.holds || args.batch.is_some() {
            self.settle().await;
        }
        let rate = args.rate.map(|r| r.per_second(maximum.map_or(0.0, |m| m.completed_per_s)));
        let plan = bench.new_plan();
        let timed = Phase::timed(&bench.sandbox, Via::of(args), rate, args.samples.as_deref());
        let (load, cost) = self.costed(self.run_transfers(&accounts, &plan, &timed)).await?;
        let compared = match args.batch {
            Some(n) => Some(self.compare_batch(&accounts, n, load.completed_per_s).await?),
            None => None,
        };
        let holds = if args.holds { Some(self.holds(&accounts).await?) } else { None };
        let raw = if args.raw { Some(bench.raw_phase(&plan).await?) } else { None };
        let ledger = if bench.sandbox.owned { Some(bench.check_ledger().await?) } else { None };
        let (cpu_s, batching) = (cost.cpu_s, cost.batching);
        Ok(LoadReport {
            setup,
            load,
            maximum,
            rate,
            holds,
            raw,
            batching,
            cpu_s,
            ledger,
            compared,
            ..LoadReport::default()
        })
    }

    /// `--holds`: as many hold-then-post pairs as transfers, once the transfers' writes are on
    /// disk (as between `--rate N%`'s two loads), so that the pairs do not pay for them; then,
    /// the same way, as many transfers again (see [`TransfersAfter`]).
    async fn holds(&self, accounts: &Arc<Vec<Funded>>) -> Result<HoldsPhase> {
        self.settle().await;
        // Longer than the run, so that no hold expires in it: an expiry would fail its post.
        let seconds = self.bench.args.timeout.as_secs().clamp(1, HoldTimeout::MAX_SECONDS.into());
        let timeout = HoldTimeout::new(seconds as i64)?;
        let plan = self.bench.new_plan();
        let (pairs, cost) = self.costed(self.run_pairs(accounts, &plan, timeout)).await?;
        self.settle().await;
        let phase = Phase::after_pairs(&self.bench.sandbox, Via::of(&self.bench.args));
        let (again, again_cost) = self.costed(self.run_transfers(accounts, &self.bench.new_plan(), &phase)).await?;
        let after = TransfersAfter {
            completed: again.completed,
            completed_per_s: again.completed_per_s,
            cpu_s: again_cost.cpu_s,
        };
        Ok(HoldsPhase { pairs, after, timeout_seconds: timeout.seconds(), cpu_s: cost.cpu_s, batching: cost.batching })
    }

    /// `--batch N`: after the batches, the same number of transfers as single HTTP requests,
    /// then published with `--direct`, each on a fresh plan once the previous load's writes
    /// are on disk (as between `--rate N%`'s two loads).
    async fn compare_batch(&self, accounts: &Arc<Vec<Funded>>, n: u32, batch_per_s: f64) -> Result<BatchComparison> {
        let mut per_s = [0.0; 2];
        for (slot, via, labels) in [
            (0, Via::Http, ["http: submitted", "http: finished"]),
            (1, Via::Direct, ["direct: submitted", "direct: finished"]),
        ] {
            self.settle().await;
            let phase = Phase::compared(&self.bench.sandbox, via, labels);
            per_s[slot] = self.run_transfers(accounts, &self.bench.new_plan(), &phase).await?.completed_per_s;
        }
        Ok(BatchComparison::of(n, batch_per_s, per_s[0], per_s[1]))
    }

    /// Runs a load and reads what the machine and the started processes spent on it.
    async fn costed<T>(&self, load: impl Future<Output = Result<T>>) -> Result<(T, Cost)> {
        let pids = self.cluster.map(Cluster::pids).unwrap_or_default();
        let before = self.batching().await;
        let cpu_before = CpuTimes::read(&pids);
        let measured = load.await?;
        let cpu_s = CpuTimes::read(&pids).since(&cpu_before);
        let after = self.batching().await;
        let batching = before.zip(after).map(|(before, after)| after - before);
        Ok((measured, Cost { cpu_s, batching }))
    }

    /// For `--rate N%`: an unpaced load of the same size measures the maximum. The timed load
    /// measures a steady state, not the write-out of what this one left in MongoDB's cache:
    /// it is written out now, then the processes settle.
    async fn measure_maximum(&self, accounts: &Arc<Vec<Funded>>, percent: u8) -> Result<Maximum> {
        let unpaced = Phase::maximum(&self.bench.sandbox, Via::of(&self.bench.args));
        let figures = self.run_transfers(accounts, &self.bench.new_plan(), &unpaced).await?;
        self.settle().await;
        Ok(Maximum { completed_per_s: figures.completed_per_s, accepted_per_s: figures.accepted_per_s, percent })
    }

    /// Between two loads: MongoDB writes out what the last one left in its cache (a
    /// checkpoint), then the processes settle, so that the next load does not pay for it.
    async fn settle(&self) {
        self.bench.checkpoint().await;
        tokio::time::sleep(SETTLE).await;
    }

    /// The started workers' batching counters now; `None` with `--target`.
    async fn batching(&self) -> Option<Batching> {
        match self.cluster {
            Some(cluster) => cluster.batching(&self.api).await,
            None => None,
        }
    }
}

/// What a load cost: CPU seconds by the machine and by each process, and the workers' batches.
struct Cost {
    cpu_s: BTreeMap<String, f64>,
    batching: Option<Batching>,
}

/// Runs `work` until it finishes, the deadline passes, or Ctrl-C or SIGTERM arrives. The latter
/// are errors, so the caller goes on to stop processes and clean up either way.
pub async fn guarded<T>(deadline: Instant, work: impl Future<Output = Result<T>>) -> Result<T> {
    let limit = deadline.saturating_duration_since(Instant::now());
    let stop = shutdown_on_signal();
    tokio::select! {
        done = tokio::time::timeout(limit, work) => {
            done.map_err(|_| anyhow!("the benchmark did not finish within --timeout; stopped it"))?
        }
        () = stop.cancelled() => bail!("interrupted"),
    }
}
