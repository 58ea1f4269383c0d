//! `ledgerflow bench`: a load generator, and where the README's benchmark figures come from.
//!
//! By default it starts its own gateway and worker *processes* (this very binary, with the
//! `gateway` and `worker` subcommands) on a fresh database and queue prefix, so it measures the
//! deployment shape: HTTP, the broker, separate processes and their memory. A run has phases:
//!
//! 1. setup: register users, open accounts and fund them, all through the HTTP API;
//! 2. load: submit transfers over HTTP (or, with `--direct`, publish them to the exchange as
//!    an upstream system would), timing submit → 202 (or → publisher confirm) and submit →
//!    outcome, the outcome taken from the result exchange as the worker publishes it; with
//!    `--rate N%`, an unpaced load first measures the maximum and the timed load is paced at
//!    N% of it, on the same processes, seconds apart;
//! 3. `--raw`: the same transfers as a tight loop of `Store::execute` calls on a separate
//!    database, no HTTP and no queue: the floor the pipeline is compared with;
//! 4. the ledger check: the run's own database must hold every `ledgerflow reconcile`
//!    invariant after the load, or the run fails.
//!
//! `--balance-reads` instead shows that reading a balance costs the same at any history length.
//!
//! Every wait has a deadline; the child processes are killed if anything fails (they are
//! killed on drop), and the database and queues a run made are deleted unless `--keep`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ledgerflow_domain::{
    AccountId, Amount, Balance, Currency, EntryFields, EntryId, EntryType, FailureReason, TransactionId,
    TransactionStatus, TransferCommand, TransferKind, TransferRequest, UserId,
};
use ledgerflow_messaging::lapin::options::QueueDeclareOptions;
use ledgerflow_messaging::lapin::types::FieldTable;
use ledgerflow_messaging::lapin::{BasicProperties, Channel, Connection};
use ledgerflow_messaging::{COMMAND_TYPE, Publisher, Topology, connect};
use ledgerflow_store::{Execution, NoProgress, ReconcileOptions, ReconcileReport, Store};
use mongodb::bson::{Bson, Document, doc};
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// What every account is funded with, in cents: far more than the load can take out of it
/// (at most `MAX_TRANSFER_CENTS` a transfer), so a FAILED transfer means something is wrong.
const FUNDING_CENTS: i64 = 10_000_000;
/// Transfers move 1 to this many cents.
const MAX_TRANSFER_CENTS: i64 = 100;
/// With `--rate N%`, the pause after the checkpoint between the unpaced load and the timed one.
const SETTLE: Duration = Duration::from_secs(5);
/// The initiator of `--direct` and `--raw` commands: an upstream system named `bench`.
const SERVICE_INITIATOR: &str = "service:bench";
/// Registrations run argon2 on the gateway; more at once than its cores only queue up.
const REGISTER_CONCURRENCY: usize = 4;
/// Per-request limit: a request that takes longer is a hang, not a slow answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the started processes get to become ready (gateway answering, workers consuming).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process gets to drain and exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// Waiting for outcomes gives up when none has arrived for this long (stuck PENDING).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Time kept back from `--timeout` when waiting for outcomes, so that the report still gets made.
const REPORT_MARGIN: Duration = Duration::from_secs(5);
/// Bound on each clean-up step, so a broken server cannot hold the bench forever.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the started processes' memory is sampled.
const RSS_INTERVAL: Duration = Duration::from_millis(200);
/// Synthetic entries are written in batches of this many.
const INSERT_BATCH: i64 = 10_000;
/// Balance reads made (and not timed) before each timed series, to warm caches and pools.
const WARMUP_READS: usize = 20;

/// What `bench` needs from the global connection flags.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub mongodb_uri: String,
    pub mongodb_db: String,
    pub amqp_uri: String,
    pub amqp_prefix: String,
    pub partitions: u16,
    /// Threads of the gateway and workers it starts (`--threads`).
    pub threads: usize,
}

impl ConnInfo {
    fn topology(&self, prefix: &str) -> Topology {
        Topology::new(prefix).with_partitions(self.partitions)
    }
}

/// A secret from a flag or the environment that `Debug` does not print.
#[derive(Clone)]
pub struct Secret(String);

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(clap::Args, Debug)]
#[command(after_help = "By default a gateway and --workers worker processes are started on a fresh database and \
queue prefix (deleted afterwards unless --keep), against the configured MongoDB and RabbitMQ, \
and their ledger is reconciled after the load: the run fails if any invariant does not hold.\n\
With --target the bench drives a running gateway instead; its users, accounts and transfers stay \
in that ledger, and outcomes are read from the configured --amqp-prefix's results exchange.\n\n\
Examples:\n  ledgerflow bench --raw\n  ledgerflow bench --rate 50%\n  ledgerflow bench --hot --transfers 5000\n  ledgerflow bench --direct\n  \
ledgerflow bench --balance-reads --entries 1000,1000000\n  \
LEDGERFLOW_SYSTEM_PASSWORD=… ledgerflow bench --target http://127.0.0.1:8080 --system-email ops@example.com")]
pub struct BenchArgs {
    /// Accounts to create and fund before the load.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(2..))]
    accounts: u32,
    /// Accounts per registered user (registration is deliberately slow: argon2); at most
    /// the per-user cap, 100.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=ledgerflow_domain::MAX_ACCOUNTS_PER_USER as i64))]
    accounts_per_user: u32,
    /// Transfers to submit.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    transfers: u32,
    /// Requests (or publishes, or raw transactions) in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Submit at most this many transfers per second (open loop), to measure latency below
    /// the maximum throughput; or `N%`: first measure the maximum with an unpaced load of the
    /// same size, then pace the measured load at N% of it. Unlimited when unset.
    #[arg(long, value_name = "PER_S|N%")]
    rate: Option<Rate>,
    /// Worker processes to start (ignored with --target).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Send most transfers (--hot-percent) from one account: the worst case for contention.
    #[arg(long)]
    hot: bool,
    /// Share of transfers sent from the hot account with --hot, in percent.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    hot_percent: u8,
    /// Publish commands straight to the transfers exchange (as an upstream system) instead of HTTP.
    #[arg(long)]
    direct: bool,
    /// Also run the floor reference: the same transfers through Store::execute, no HTTP, no queue.
    #[arg(long)]
    raw: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep the database, queues and process logs the run made (`scripts/services.sh sweep`
    /// drops the database and queues once they are a day old).
    #[arg(long)]
    keep: bool,
    /// Also write one CSV line per transfer to this file (when it was sent, its accept and
    /// completion latencies, and when the worker decided it): where a latency tail comes from.
    #[arg(long, value_name = "FILE", conflicts_with = "balance_reads")]
    samples: Option<PathBuf>,
    /// Drive a running gateway at this base URL instead of starting processes.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// SYSTEM user for funding accounts with --target.
    #[arg(long, env = "LEDGERFLOW_SYSTEM_EMAIL")]
    system_email: Option<String>,
    /// Its password (prefer the environment variable to the flag).
    #[arg(long, env = "LEDGERFLOW_SYSTEM_PASSWORD", hide_env_values = true)]
    system_password: Option<Secret>,
    /// Give up (and clean up) after this long (e.g. 90s, 10m).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Instead of the load: time balance reads on one account at several history lengths.
    #[arg(long, conflicts_with_all = ["direct", "raw", "hot", "target"])]
    balance_reads: bool,
    /// History lengths (entries) for --balance-reads, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000", value_parser = clap::value_parser!(u64).range(1..))]
    entries: Vec<u64>,
    /// Balance reads timed at each history length.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    reads: u32,
}

/// How `--rate` paces the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rate {
    PerSecond(u32),
    /// A percentage of the maximum completed/s, measured first in the same run: measuring it
    /// minutes before, in a separate run, let the machine's drift between the two decide.
    OfMaximum(u8),
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(percent) = s.strip_suffix('%') {
            return match percent.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(Self::OfMaximum(p)),
                _ => Err(format!("{s}: a percentage of the maximum is 1% to 100%")),
            };
        }
        match s.parse::<u32>() {
            Ok(n @ 1..) => Ok(Self::PerSecond(n)),
            _ => Err(format!("{s}: expected transfers per second (at least 1) or a percentage such as 50%")),
        }
    }
}

impl Rate {
    /// Transfers per second: as given, or the share of a measured maximum (at least 1).
    fn per_second(self, maximum: f64) -> u32 {
        match self {
            Self::PerSecond(n) => n,
            Self::OfMaximum(p) => (maximum * f64::from(p) / 100.0).round().clamp(1.0, f64::from(u32::MAX)) as u32,
        }
    }
}

/// The unpaced load that measured the maximum for `--rate N%`.
#[derive(Debug, Clone, Copy)]
struct Maximum {
    completed_per_s: f64,
    accepted_per_s: f64,
    percent: u8,
}

impl BenchArgs {
    fn accounts(&self) -> usize {
        self.accounts as usize
    }

    fn transfers(&self) -> usize {
        self.transfers as usize
    }

    fn concurrency(&self) -> usize {
        self.concurrency as usize
    }

    fn mode(&self) -> &'static str {
        if self.direct { "direct" } else { "http" }
    }

    fn pattern(&self) -> &'static str {
        if self.hot { "hot" } else { "random" }
    }
}

/// Runs the benchmark `args` asks for and prints its report on stdout.
pub async fn run(conn: ConnInfo, args: BenchArgs) -> Result<()> {
    if args.balance_reads { run_balance_reads(&conn, &args).await } else { run_load(&conn, &args).await }
}

// ---------------------------------------------------------------------------------------------
// Load mode
// ---------------------------------------------------------------------------------------------

async fn run_load(conn: &ConnInfo, args: &BenchArgs) -> Result<()> {
    let sandbox = Sandbox::new(conn, args.target.is_some());
    let deadline = Instant::now() + args.timeout;
    let outcome = load(conn, args, &sandbox, deadline).await;
    cleanup(conn, &sandbox, args.keep, args.raw).await;
    let report = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json(args))?);
    } else {
        print!("{}", report.render(args));
    }
    match &report.ledger {
        Some(ledger) if !ledger.ok => bail!("the ledger does not reconcile after the load: {}", ledger_summary(ledger)),
        _ => Ok(()),
    }
}

/// The names one run works under. Without `--target` the run owns a fresh database and queue
/// prefix (so it cannot disturb anything else on the shared servers) and deletes them after;
/// with `--target` it uses the configured ones and deletes nothing of them.
struct Sandbox {
    tag: String,
    db: String,
    prefix: String,
    owned: bool,
    /// The `--raw` phase's own database, so the two phases never touch the same accounts.
    raw_db: String,
    logs: PathBuf,
}

impl Sandbox {
    fn new(conn: &ConnInfo, target: bool) -> Self {
        let tag = random_hex(4);
        let name = sandbox_name(&tag);
        let (db, prefix) =
            if target { (conn.mongodb_db.clone(), conn.amqp_prefix.clone()) } else { (name.clone(), name.clone()) };
        Self { raw_db: format!("{name}_raw"), logs: std::env::temp_dir().join(&name), tag, db, prefix, owned: !target }
    }
}

/// The SYSTEM user that funds accounts: invented for a run's own gateway, given for `--target`.
struct Credentials {
    email: String,
    password: String,
}

impl Credentials {
    fn for_run(args: &BenchArgs, sandbox: &Sandbox) -> Result<Self> {
        if args.target.is_none() {
            return Ok(Self { email: format!("bench-system-{}@example.com", sandbox.tag), password: random_hex(16) });
        }
        match (&args.system_email, &args.system_password) {
            (Some(email), Some(password)) => Ok(Self { email: email.clone(), password: password.0.clone() }),
            _ => bail!(
                "--target needs the SYSTEM user to fund accounts: --system-email/--system-password \
                 (or LEDGERFLOW_SYSTEM_EMAIL/LEDGERFLOW_SYSTEM_PASSWORD)"
            ),
        }
    }
}

/// Starts the processes (unless `--target`), measures, and always stops them gracefully: the
/// measurement alone is under the `--timeout`, so a timeout still ends in a clean stop.
async fn load(conn: &ConnInfo, args: &BenchArgs, sandbox: &Sandbox, deadline: Instant) -> Result<LoadReport> {
    let system = Credentials::for_run(args, sandbox)?;
    let mut cluster = match &args.target {
        None => Some(Cluster::start(conn, sandbox, args.workers, &system)?),
        Some(_) => None,
    };
    let base = match (&cluster, &args.target) {
        (Some(cluster), _) => cluster.base.clone(),
        (None, Some(target)) => target.trim_end_matches('/').to_owned(),
        (None, None) => bail!("neither a target nor started processes"),
    };
    let sampler = cluster.as_ref().map(|c| RssSampler::start(c.pids()));
    let measured = guarded(deadline, measure(conn, args, sandbox, cluster.as_mut(), &base, &system, deadline)).await;
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
    keep_or_remove_logs(sandbox, args.keep || measured.is_err() || logs.values().any(|c| c.warn + c.error > 0));
    let mut report = measured?;
    report.rss_mb = rss_mb;
    report.exits = exits;
    report.logs = logs;
    Ok(report)
}

/// Runs `work` until it finishes, the deadline passes, or Ctrl-C or SIGTERM arrives. The latter
/// are errors, so the caller goes on to stop processes and clean up either way.
async fn guarded<T>(deadline: Instant, work: impl Future<Output = Result<T>>) -> Result<T> {
    let limit = deadline.saturating_duration_since(Instant::now());
    let stop = crate::shutdown_on_signal();
    tokio::select! {
        done = tokio::time::timeout(limit, work) => {
            done.map_err(|_| anyhow!("the benchmark did not finish within --timeout; stopped it"))?
        }
        () = stop.cancelled() => bail!("interrupted"),
    }
}

/// Setup, load and the optional raw phase, with the result listener up throughout.
async fn measure(
    conn: &ConnInfo,
    args: &BenchArgs,
    sandbox: &Sandbox,
    mut cluster: Option<&mut Cluster>,
    base: &str,
    system: &Credentials,
    deadline: Instant,
) -> Result<LoadReport> {
    let api = Api::new(base, args.concurrency())?;
    let ready_by = deadline.min(Instant::now() + READY_TIMEOUT);
    if let Some(cluster) = cluster.as_deref_mut() {
        cluster.wait_ready(&api, ready_by).await?;
    }
    let cluster = cluster.as_deref();
    let topology = conn.topology(&sandbox.prefix);
    let listener = ResultListener::start(&conn.amqp_uri, &topology).await?;
    let measured = async {
        if args.target.is_none() {
            listener.wait_for_consumers(&topology.workers(), u32::from(args.workers), ready_by).await?;
        }
        let bars = Bars::new();
        let setup_started = Instant::now();
        let accounts = setup(&api, &listener, args, sandbox, system, deadline, &bars).await?;
        let setup = setup_started.elapsed();
        let new_plan = || Arc::new(plan(args.accounts(), args.transfers(), args.hot.then_some(args.hot_percent)));
        let maximum = match args.rate {
            Some(Rate::OfMaximum(percent)) => {
                let unpaced = Phase::new(sandbox, "max-", None, None);
                let figures = run_transfers(
                    &api,
                    &listener,
                    &topology,
                    conn,
                    args,
                    &accounts,
                    &new_plan(),
                    &unpaced,
                    deadline,
                    &bars,
                )
                .await?;
                // The timed load measures a steady state, not the write-out of what the
                // unpaced one left in MongoDB's cache: write it out now, then let the
                // processes settle.
                checkpoint(conn).await;
                tokio::time::sleep(SETTLE).await;
                Some(Maximum {
                    completed_per_s: figures.completed_per_s,
                    accepted_per_s: figures.accepted_per_s,
                    percent,
                })
            }
            _ => None,
        };
        let rate = args.rate.map(|r| r.per_second(maximum.map_or(0.0, |m| m.completed_per_s)));
        let plan = new_plan();
        let batching_now = async || match cluster {
            Some(cluster) => cluster.batching(&api.http).await,
            None => None,
        };
        let before = batching_now().await;
        let pids = cluster.map(Cluster::pids).unwrap_or_default();
        let cpu_before = CpuTimes::read(&pids);
        let timed = Phase::new(sandbox, "", rate, args.samples.as_deref());
        let load =
            run_transfers(&api, &listener, &topology, conn, args, &accounts, &plan, &timed, deadline, &bars).await?;
        let cpu_s = CpuTimes::read(&pids).since(&cpu_before);
        let after = batching_now().await;
        let batching = before.zip(after).map(|(before, after)| after - before);
        let raw = if args.raw { Some(raw_phase(conn, args, sandbox, &plan, &bars).await?) } else { None };
        let ledger = if sandbox.owned { Some(check_ledger(conn, &sandbox.db).await?) } else { None };
        Ok(LoadReport { setup, load, maximum, rate, raw, batching, cpu_s, ledger, ..LoadReport::default() })
    }
    .await;
    listener.close().await;
    measured
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// One child process. Killed (SIGKILL) and reaped when dropped, so that no failure path, panic
/// or timeout leaves a gateway or worker running after the bench.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Where a worker serves its Prometheus metrics.
    metrics: Option<String>,
}

impl Proc {
    fn spawn(name: &str, subcommand: &str, env: &[(&str, String)], logs: &Path) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the ledgerflow executable")?;
        let log = logs.join(format!("{name}.log"));
        let stdout = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let stderr = stdout.try_clone().context("cannot share the log file")?;
        let child = Command::new(exe)
            .arg(subcommand)
            // One inherited metrics port for several workers would clash (each worker is given
            // its own below); plain text logs are counted below.
            .env_remove("LEDGERFLOW_METRICS_ADDR")
            .env_remove("LEDGERFLOW_LOG_FORMAT")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start the {name} process"))?;
        let metrics =
            env.iter().find(|(k, _)| *k == "LEDGERFLOW_METRICS_ADDR").map(|(_, v)| format!("http://{v}/metrics"));
        Ok(Self { name: name.to_owned(), child, log, metrics })
    }

    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks for a graceful stop as an orchestrator would. Through kill(1): calling kill(2)
    /// directly would need the `unsafe` this workspace forbids.
    fn terminate(&self) -> Result<()> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().context("cannot run kill")?;
        ensure!(status.success(), "kill -TERM {pid} ({}) failed", self.name);
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines logged at WARN and ERROR: anything there during a benchmark is worth a look.
    fn log_counts(&self) -> LogCounts {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        LogCounts {
            warn: text.lines().filter(|l| l.contains(" WARN ")).count(),
            error: text.lines().filter(|l| l.contains(" ERROR ")).count(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct LogCounts {
    warn: usize,
    error: usize,
}

/// A gateway and workers started for one run.
struct Cluster {
    procs: Vec<Proc>,
    base: String,
}

impl Cluster {
    fn start(conn: &ConnInfo, sandbox: &Sandbox, workers: u16, system: &Credentials) -> Result<Self> {
        std::fs::create_dir_all(&sandbox.logs)
            .with_context(|| format!("cannot create the log directory {}", sandbox.logs.display()))?;
        let addr = free_local_addr()?;
        let common = vec![
            ("LEDGERFLOW_MONGODB_URI", conn.mongodb_uri.clone()),
            ("LEDGERFLOW_MONGODB_DB", sandbox.db.clone()),
            ("LEDGERFLOW_AMQP_URI", conn.amqp_uri.clone()),
            ("LEDGERFLOW_AMQP_PREFIX", sandbox.prefix.clone()),
            ("LEDGERFLOW_PARTITIONS", conn.partitions.to_string()),
            ("LEDGERFLOW_THREADS", conn.threads.to_string()),
            // The processes' own filter, for diagnosis (e.g. ledgerflow_store=debug); quiet by default.
            ("LEDGERFLOW_LOG", std::env::var("LEDGERFLOW_BENCH_PROCESS_LOG").unwrap_or_else(|_| "warn".to_owned())),
        ];
        let mut gateway = common.clone();
        gateway.extend([
            ("LEDGERFLOW_HTTP_ADDR", addr.clone()),
            ("LEDGERFLOW_JWT_SECRET", random_hex(32)),
            ("LEDGERFLOW_SYSTEM_EMAIL", system.email.clone()),
            ("LEDGERFLOW_SYSTEM_PASSWORD", system.password.clone()),
            ("LEDGERFLOW_COOKIE_SECURE", "false".to_owned()),
        ]);
        // Pushed one by one: if a later spawn fails, dropping `procs` kills the earlier ones.
        let mut procs = vec![Proc::spawn("gateway", "gateway", &gateway, &sandbox.logs)?];
        for i in 1..=workers {
            let mut env = common.clone();
            env.push(("LEDGERFLOW_WORKER_NAME", format!("{}-worker-{i}", sandbox.prefix)));
            env.push(("LEDGERFLOW_METRICS_ADDR", free_local_addr()?));
            procs.push(Proc::spawn(&format!("worker-{i}"), "worker", &env, &sandbox.logs)?);
        }
        Ok(Self { procs, base: format!("http://{addr}") })
    }

    fn pids(&self) -> Vec<(String, u32)> {
        self.procs.iter().map(|p| (p.name.clone(), p.child.id())).collect()
    }

    /// Waits until the gateway answers `/readyz`; fails at once if any process died meanwhile.
    async fn wait_ready(&mut self, api: &Api, by: Instant) -> Result<()> {
        loop {
            self.ensure_alive()?;
            if api.ready().await {
                return Ok(());
            }
            ensure!(Instant::now() < by, "the gateway at {} was not ready in time", self.base);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn ensure_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.exit_status() {
                bail!("the {} process ended early ({status}); its log ends with:\n{}", p.name, p.log_tail(20));
            }
        }
        Ok(())
    }

    fn log_counts(&self) -> BTreeMap<String, LogCounts> {
        self.procs.iter().map(|p| (p.name.clone(), p.log_counts())).collect()
    }

    /// The workers' batching counters, summed over the workers; `None` (and a warning) if a
    /// worker's metrics cannot be read, as they only explain the figures.
    async fn batching(&self, http: &reqwest::Client) -> Option<Batching> {
        let mut total = Batching::default();
        for (name, url) in self.procs.iter().filter_map(|p| Some((&p.name, p.metrics.as_ref()?))) {
            let text = async { http.get(url).send().await?.error_for_status()?.text().await };
            match text.await {
                Ok(text) => total = total + Batching::parse(&text),
                Err(e) => {
                    warn!(error = %e, worker = %name, "cannot read the worker's metrics");
                    return None;
                }
            }
        }
        Some(total)
    }

    /// SIGTERM to all, up to `STOP_GRACE` for them to drain and exit, SIGKILL for the rest
    /// (on drop). Returns how each one ended.
    async fn stop(mut self) -> BTreeMap<String, String> {
        // Only those not yet reaped: a reaped child's pid may already belong to someone else.
        for p in &mut self.procs {
            if p.exit_status().is_some() {
                continue;
            }
            if let Err(e) = p.terminate() {
                warn!(error = %e, "could not signal a bench process");
            }
        }
        let by = Instant::now() + STOP_GRACE;
        let mut ended = BTreeMap::new();
        while ended.len() < self.procs.len() && Instant::now() < by {
            for p in &mut self.procs {
                if ended.contains_key(&p.name) {
                    continue;
                }
                if let Some(status) = p.exit_status() {
                    ended.insert(p.name.clone(), status.to_string());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for p in &self.procs {
            ended
                .entry(p.name.clone())
                .or_insert_with(|| format!("killed: still running {STOP_GRACE:?} after SIGTERM"));
        }
        ended
    }
}

/// A loopback address nothing listens on right now, for the gateway to bind.
fn free_local_addr() -> Result<String> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(probe.local_addr().context("cannot find a free port")?.to_string())
}

fn keep_or_remove_logs(sandbox: &Sandbox, keep: bool) {
    if !sandbox.logs.exists() {
        return;
    }
    if keep {
        eprintln!("process logs kept in {}", sandbox.logs.display());
    } else if let Err(e) = std::fs::remove_dir_all(&sandbox.logs) {
        warn!(error = %e, dir = %sandbox.logs.display(), "could not remove the process logs");
    }
}

/// Samples each process's resident set size (`VmRSS` in `/proc/<pid>/status`) and keeps the
/// peak: memory is part of what a deployment pays for throughput.
struct RssSampler {
    peaks_kib: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RssSampler {
    fn start(pids: Vec<(String, u32)>) -> Self {
        let peaks_kib = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = CancellationToken::new();
        let (peaks, token) = (Arc::clone(&peaks_kib), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RSS_INTERVAL);
            while token.run_until_cancelled(tick.tick()).await.is_some() {
                let mut peaks = lock(&peaks);
                for (name, pid) in &pids {
                    if let Some(kib) = vm_rss_kib(*pid) {
                        let peak = peaks.entry(name.clone()).or_insert(0);
                        *peak = (*peak).max(kib);
                    }
                }
            }
        });
        Self { peaks_kib, stop, task }
    }

    /// Stops sampling (before the processes stop, so a reused pid is never sampled) and
    /// returns the peaks in MB (MiB).
    async fn finish(self) -> BTreeMap<String, f64> {
        self.stop.cancel();
        let _ = self.task.await;
        lock(&self.peaks_kib).iter().map(|(name, kib)| (name.clone(), round(*kib as f64 / 1024.0, 1))).collect()
    }
}

/// CPU time spent so far, in seconds: by the whole machine (`/proc/stat`: every process, the
/// database and the broker included) and by each process the bench started and itself
/// (`/proc/<pid>/stat`, user and system). Taken around the load, it shows what a run cost; the
/// latency tail follows the machine's share, and the machine's speed drifts between runs.
/// Empty where `/proc` cannot be read.
#[derive(Debug, Default)]
struct CpuTimes(BTreeMap<String, f64>);

/// Clock ticks per second in `/proc` (`USER_HZ`, 100 on Linux's common architectures).
const USER_HZ: f64 = 100.0;

impl CpuTimes {
    fn read(pids: &[(String, u32)]) -> Self {
        let mut times = BTreeMap::new();
        if let Some(ticks) = machine_busy_ticks() {
            times.insert("machine".to_owned(), ticks as f64 / USER_HZ);
        }
        let own = ("bench".to_owned(), std::process::id());
        for (name, pid) in pids.iter().chain(std::iter::once(&own)) {
            if let Some(ticks) = process_ticks(*pid) {
                times.insert(name.clone(), ticks as f64 / USER_HZ);
            }
        }
        Self(times)
    }

    /// Seconds spent since `earlier`, for what both readings have.
    fn since(&self, earlier: &Self) -> BTreeMap<String, f64> {
        let spent = |(name, now): (&String, &f64)| Some((name.clone(), round(now - earlier.0.get(name)?, 2)));
        self.0.iter().filter_map(spent).collect()
    }
}

/// Busy ticks of all CPUs together: everything but idle and I/O wait.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> =
        stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().map_while(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is counted in user already).
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    (fields.len() >= 8).then_some(busy)
}

/// User and system ticks of one process, its threads included.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Outcomes, from the result exchange
// ---------------------------------------------------------------------------------------------

/// What a result is matched on: HTTP transfers by the id the 202 named, upstream commands (which
/// have no id when sent) by their idempotency key.
#[derive(Debug, Clone, Copy)]
enum MatchOn {
    TransactionId,
    IdempotencyKey,
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// When the bench received the result: the end of the end-to-end latency.
    at: Instant,
    /// When the worker decided it (the result's `completedAt`, worker's clock).
    decided_at: Option<DateTime<Utc>>,
    status: TransactionStatus,
    reason: Option<FailureReason>,
}

#[derive(Default)]
struct Outcomes {
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

    fn get(&self, on: MatchOn, key: &str) -> Option<&Outcome> {
        match on {
            MatchOn::TransactionId => self.by_id.get(key),
            MatchOn::IdempotencyKey => self.by_key.get(key),
        }
    }
}

/// Hears every outcome as workers publish it, on an exclusive auto-delete queue bound to the
/// results exchange: it takes nothing from anyone else's queue, and vanishes with the
/// connection. Completion times come from here, not from polling the API.
struct ResultListener {
    outcomes: Arc<Mutex<Outcomes>>,
    failure: Arc<Mutex<Option<String>>>,
    connection: Connection,
    channel: Channel,
    task: JoinHandle<()>,
}

impl ResultListener {
    async fn start(amqp_uri: &str, topology: &Topology) -> Result<Self> {
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
        Ok(Self { outcomes, failure, connection, channel, task })
    }

    fn ensure_listening(&self) -> Result<()> {
        match lock(&self.failure).as_ref() {
            Some(reason) => bail!("lost the result queue: {reason}"),
            None => Ok(()),
        }
    }

    fn received(&self) -> usize {
        lock(&self.outcomes).received
    }

    /// Waits until `count` consumers read `queue` (the workers' roster, which a worker joins
    /// once it consumes every partition): how the bench knows its workers are up before timing
    /// starts.
    async fn wait_for_consumers(&self, queue: &str, count: u32, by: Instant) -> Result<()> {
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        loop {
            let q = self.channel.queue_declare(queue.into(), passive, FieldTable::default()).await?;
            if q.consumer_count() >= count {
                return Ok(());
            }
            ensure!(Instant::now() < by, "only {} of {count} workers consume {queue}", q.consumer_count());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every key has an outcome, no outcome arrived for `STALL_TIMEOUT`, or the
    /// deadline passed. Returns how many are still without one.
    async fn await_all(&self, on: MatchOn, keys: &[String], deadline: Instant, bar: &ProgressBar) -> Result<usize> {
        let mut waiting: Vec<&String> = keys.iter().collect();
        let mut last_progress = Instant::now();
        loop {
            self.ensure_listening()?;
            let before = waiting.len();
            {
                let outcomes = lock(&self.outcomes);
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

    async fn close(self) {
        self.task.abort();
        ledgerflow_messaging::close(&self.connection, "bench done").await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP API
// ---------------------------------------------------------------------------------------------

/// The gateway's HTTP API, as a client sees it.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: Arc<str>,
}

impl Api {
    fn new(base: &str, pool: usize) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(pool)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, base: base.into() })
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Result<(StatusCode, Value)> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// POSTs and insists on `want`: for setup, where anything else means the run is void.
    async fn expect(&self, path: &str, token: Option<&str>, body: &Value, want: StatusCode) -> Result<Value> {
        let (status, answer) = self.post(path, token, body).await.with_context(|| format!("POST {path}"))?;
        ensure!(status == want, "POST {path}: expected {want}, got {status}: {answer}");
        Ok(answer)
    }

    async fn ready(&self) -> bool {
        let url = format!("{}/readyz", self.base);
        self.http.get(url).send().await.is_ok_and(|r| r.status().is_success())
    }

    async fn register(&self, email: &str, password: &str) -> Result<String> {
        let body = json!({ "email": email, "password": password });
        let answer = self.expect("/api/auth/register", None, &body, StatusCode::CREATED).await?;
        str_at(&answer, "/token")
    }

    async fn login(&self, email: &str, password: &str) -> Result<String> {
        let body = json!({ "email": email, "password": password });
        let answer = self.expect("/api/auth/login", None, &body, StatusCode::OK).await?;
        str_at(&answer, "/token")
    }

    async fn open_account(&self, token: &str) -> Result<AccountId> {
        let answer =
            self.expect("/api/accounts", Some(token), &json!({ "currency": "USD" }), StatusCode::CREATED).await?;
        str_at(&answer, "/id")?.parse().map_err(|e| anyhow!("account id: {e}"))
    }

    /// SYSTEM initial funds; returns the transaction id to wait for.
    async fn fund(&self, system_token: &str, account: AccountId, key: &str) -> Result<String> {
        let body = json!({ "toAccount": account.to_string(), "amount": FUNDING_CENTS, "idempotencyKey": key });
        let answer =
            self.expect("/transactions/system/initial-funds", Some(system_token), &body, StatusCode::ACCEPTED).await?;
        str_at(&answer, "/transaction/id")
    }

    async fn transfer(
        &self,
        token: &str,
        from: AccountId,
        to: AccountId,
        amount: i64,
        key: &str,
    ) -> reqwest::Result<(StatusCode, Value)> {
        let body = json!({
            "fromAccount": from.to_string(), "toAccount": to.to_string(), "amount": amount, "idempotencyKey": key,
        });
        self.post("/transactions", Some(token), &body).await
    }
}

fn str_at(v: &Value, pointer: &str) -> Result<String> {
    v.pointer(pointer).and_then(Value::as_str).map(str::to_owned).with_context(|| format!("no {pointer} in {v}"))
}

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------

/// An account the load draws on, with its owner's token.
#[derive(Clone)]
struct Funded {
    id: AccountId,
    token: Arc<str>,
}

/// Registers users (one per `--accounts-per-user` accounts, since registration is slow on
/// purpose), opens the accounts and funds each, waiting until every funding is COMPLETED:
/// commands are not ordered, so a transfer sent earlier could overtake its funding.
async fn setup(
    api: &Api,
    listener: &ResultListener,
    args: &BenchArgs,
    sandbox: &Sandbox,
    system: &Credentials,
    deadline: Instant,
    bars: &Bars,
) -> Result<Arc<Vec<Funded>>> {
    let system_token: Arc<str> = api.login(&system.email, &system.password).await.context("SYSTEM login")?.into();
    let tokens = register_users(api, args, sandbox, bars).await?;
    let accounts = open_accounts(api, tokens, args, bars).await?;
    let ids = request_funding(api, system_token, &accounts, args, sandbox, bars).await?;
    let bar = bars.bar(ids.len(), "funded");
    let missing = listener.await_all(MatchOn::TransactionId, &ids, deadline, &bar).await?;
    ensure!(missing == 0, "{missing} of {} fundings got no result", ids.len());
    let outcomes = lock(&listener.outcomes);
    let failed: Vec<&Outcome> = ids
        .iter()
        .filter_map(|id| outcomes.get(MatchOn::TransactionId, id))
        .filter(|o| o.status != TransactionStatus::Completed)
        .collect();
    if let Some(first) = failed.first() {
        bail!("{} of {} fundings FAILED (e.g. {:?})", failed.len(), ids.len(), first.reason);
    }
    Ok(accounts)
}

async fn register_users(api: &Api, args: &BenchArgs, sandbox: &Sandbox, bars: &Bars) -> Result<Arc<Vec<Arc<str>>>> {
    let users = args.accounts().div_ceil(args.accounts_per_user as usize);
    let (api, tag) = (api.clone(), sandbox.tag.clone());
    let bar = bars.bar(users, "users");
    let tokens = pool(users, REGISTER_CONCURRENCY, &bar, move |u| {
        let (api, email) = (api.clone(), format!("bench-{tag}-{u}@example.com"));
        async move { api.register(&email, &random_hex(12)).await.map(Arc::<str>::from) }
    })
    .await?;
    bar.finish();
    Ok(Arc::new(tokens.into_iter().collect::<Result<_>>()?))
}

async fn open_accounts(
    api: &Api,
    tokens: Arc<Vec<Arc<str>>>,
    args: &BenchArgs,
    bars: &Bars,
) -> Result<Arc<Vec<Funded>>> {
    let api = api.clone();
    let bar = bars.bar(args.accounts(), "accounts");
    let opened = pool(args.accounts(), args.concurrency(), &bar, move |i| {
        let (api, token) = (api.clone(), Arc::clone(&tokens[i % tokens.len()]));
        async move { api.open_account(&token).await.map(|id| Funded { id, token }) }
    })
    .await?;
    bar.finish();
    Ok(Arc::new(opened.into_iter().collect::<Result<_>>()?))
}

/// Asks the SYSTEM user to fund every account; returns the funding transactions' ids.
async fn request_funding(
    api: &Api,
    system_token: Arc<str>,
    accounts: &Arc<Vec<Funded>>,
    args: &BenchArgs,
    sandbox: &Sandbox,
    bars: &Bars,
) -> Result<Vec<String>> {
    let (api, accounts, tag) = (api.clone(), Arc::clone(accounts), sandbox.tag.clone());
    let bar = bars.bar(accounts.len(), "funding");
    let ids = pool(accounts.len(), args.concurrency(), &bar, move |i| {
        let (api, token, account) = (api.clone(), Arc::clone(&system_token), accounts[i].id);
        let key = format!("bench-fund-{tag}-{i}");
        async move { api.fund(&token, account, &key).await }
    })
    .await?;
    bar.finish();
    ids.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// One planned transfer: indexes into the account list, so the raw phase can replay the same
/// plan on its own accounts.
#[derive(Debug, Clone, Copy)]
struct Planned {
    from: usize,
    to: usize,
    amount: i64,
}

/// Random pairs; with `hot_percent`, that share of transfers comes from account 0 (the worst
/// case: every posting on one account conflicts with the others and retries).
fn plan(accounts: usize, transfers: usize, hot_percent: Option<u8>) -> Vec<Planned> {
    let mut rng = rand::rng();
    (0..transfers)
        .map(|_| {
            let from = match hot_percent {
                Some(p) if rng.random_range(0..100) < p => 0,
                _ => rng.random_range(0..accounts),
            };
            let mut to = rng.random_range(0..accounts - 1);
            if to >= from {
                to += 1;
            }
            Planned { from, to, amount: rng.random_range(1..=MAX_TRANSFER_CENTS) }
        })
        .collect()
}

/// One transfer as sent, and what came back at once.
struct Sent {
    /// What its result is matched on: the transaction id (HTTP) or idempotency key (direct).
    key: String,
    sent: Instant,
    /// When the 202 (HTTP) or the publisher confirm (direct) arrived.
    accepted: Option<Instant>,
    /// Why it was not accepted: HTTP status and error code, or a transport or broker error.
    rejected: Option<String>,
}

impl Sent {
    fn accepted(key: String, sent: Instant) -> Self {
        Self { key, sent, accepted: Some(Instant::now()), rejected: None }
    }

    fn rejected(key: String, sent: Instant, why: String) -> Self {
        Self { key, sent, accepted: None, rejected: Some(why) }
    }
}

/// One load over a plan: how its idempotency keys begin (apart from any other load's), its
/// pace, and where its samples go.
struct Phase<'a> {
    /// Empty for the timed load, the one the report is about.
    name: &'static str,
    keys: String,
    rate: Option<u32>,
    samples: Option<&'a Path>,
}

impl<'a> Phase<'a> {
    fn new(sandbox: &Sandbox, name: &'static str, rate: Option<u32>, samples: Option<&'a Path>) -> Self {
        Self { name, keys: format!("bench-{}-{name}", sandbox.tag), rate, samples }
    }
}

/// Submits the plan at `--concurrency`, then waits for the outcome of every accepted transfer.
#[allow(clippy::too_many_arguments)]
async fn run_transfers(
    api: &Api,
    listener: &ResultListener,
    topology: &Topology,
    conn: &ConnInfo,
    args: &BenchArgs,
    accounts: &Arc<Vec<Funded>>,
    plan: &Arc<Vec<Planned>>,
    phase: &Phase<'_>,
    deadline: Instant,
    bars: &Bars,
) -> Result<LoadFigures> {
    let (submitted, finished) =
        if phase.name.is_empty() { ("submitted", "finished") } else { ("max: submitted", "max: finished") };
    let submitted = bars.bar(plan.len(), submitted);
    let finished = bars.bar(plan.len(), finished);
    let ticker = follow_results(listener, finished.clone());
    let anchor = (Instant::now(), Utc::now());
    let (sent, on) = if args.direct {
        let sent = submit_direct(conn, topology, accounts, plan, args, phase, &submitted).await;
        (sent, MatchOn::IdempotencyKey)
    } else {
        (submit_http(api, accounts, plan, args, phase, &submitted).await, MatchOn::TransactionId)
    };
    ticker.abort();
    let sent = sent?;
    submitted.finish();
    let keys: Vec<String> = sent.iter().filter(|s| s.accepted.is_some()).map(|s| s.key.clone()).collect();
    // Stop waiting a little before the overall deadline, so a slow run still reports what it
    // measured (with the rest counted as unfinished) instead of only timing out.
    let wait_until = deadline.checked_sub(REPORT_MARGIN).unwrap_or(deadline);
    listener.await_all(on, &keys, wait_until, &finished).await?;
    let outcomes = lock(&listener.outcomes);
    if let Some(path) = phase.samples {
        write_samples(path, anchor, &sent, &outcomes, on)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(LoadFigures::tally(&sent, &outcomes, on, anchor))
}

/// One CSV line per transfer: milliseconds from the first submit to this one's, to its 202 (or
/// confirm), to the worker's decision (`completedAt`, on the worker's clock, truncated to the
/// millisecond) and to the bench hearing the result; empty where there is none.
fn write_samples(
    path: &Path,
    anchor: (Instant, DateTime<Utc>),
    sent: &[Sent],
    outcomes: &Outcomes,
    on: MatchOn,
) -> std::io::Result<()> {
    let ms = |from: Instant, to: Instant| format!("{:.2}", to.saturating_duration_since(from).as_secs_f64() * 1e3);
    let mut out = std::io::BufWriter::new(File::create(path)?);
    writeln!(out, "sent_ms,accept_ms,decided_ms,result_ms,status")?;
    for s in sent {
        let outcome = outcomes.get(on, &s.key);
        let decided = outcome.and_then(|o| o.decided_at).and_then(|at| on_monotonic(anchor, at));
        writeln!(
            out,
            "{},{},{},{},{}",
            ms(anchor.0, s.sent),
            s.accepted.map(|a| ms(s.sent, a)).unwrap_or_default(),
            decided.map(|d| ms(s.sent, d)).unwrap_or_default(),
            outcome.map(|o| ms(s.sent, o.at)).unwrap_or_default(),
            outcome.map_or("", |o| o.status.as_str()),
        )?;
    }
    out.flush()
}

/// Moves the `finished` bar with the results heard while submitting (all results on the
/// queue; exact matching comes after).
fn follow_results(listener: &ResultListener, bar: ProgressBar) -> JoinHandle<()> {
    let (outcomes, baseline) = (Arc::clone(&listener.outcomes), listener.received());
    tokio::spawn(async move {
        loop {
            let received = lock(&outcomes).received;
            bar.set_position(received.saturating_sub(baseline) as u64);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn submit_http(
    api: &Api,
    accounts: &Arc<Vec<Funded>>,
    plan: &Arc<Vec<Planned>>,
    args: &BenchArgs,
    phase: &Phase<'_>,
    bar: &ProgressBar,
) -> Result<Vec<Sent>> {
    let (api, accounts, plan, keys) = (api.clone(), Arc::clone(accounts), Arc::clone(plan), phase.keys.clone());
    let pace = Pace::new(phase.rate);
    pool(plan.len(), args.concurrency(), bar, move |i| {
        let (api, accounts, t) = (api.clone(), Arc::clone(&accounts), plan[i]);
        let key = format!("{keys}{i}");
        async move {
            pace.wait_turn(i).await;
            send_http(&api, &accounts, t, key).await
        }
    })
    .await
}

async fn send_http(api: &Api, accounts: &[Funded], t: Planned, key: String) -> Sent {
    let (from, to) = (&accounts[t.from], &accounts[t.to]);
    let sent = Instant::now();
    match api.transfer(&from.token, from.id, to.id, t.amount, &key).await {
        Ok((StatusCode::ACCEPTED, body)) => match str_at(&body, "/transaction/id") {
            Ok(id) => Sent::accepted(id, sent),
            Err(_) => Sent::rejected(key, sent, "202 without a transaction id".to_owned()),
        },
        Ok((status, body)) => {
            let code = body.pointer("/error/code").and_then(Value::as_str).unwrap_or("");
            Sent::rejected(key, sent, format!("HTTP {} {code}", status.as_u16()).trim_end().to_owned())
        }
        Err(e) if e.is_timeout() => Sent::rejected(key, sent, "HTTP timeout".to_owned()),
        Err(e) if e.is_connect() => Sent::rejected(key, sent, "HTTP connect error".to_owned()),
        Err(_) => Sent::rejected(key, sent, "HTTP transport error".to_owned()),
    }
}

/// Publishes the plan as an upstream system would: confirmed, persistent JSON commands with
/// initiator `service:bench` and no transaction id.
async fn submit_direct(
    conn: &ConnInfo,
    topology: &Topology,
    accounts: &Arc<Vec<Funded>>,
    plan: &Arc<Vec<Planned>>,
    args: &BenchArgs,
    phase: &Phase<'_>,
    bar: &ProgressBar,
) -> Result<Vec<Sent>> {
    let publisher = Publisher::new(&conn.amqp_uri, "ledgerflow-bench-upstream", topology.clone());
    publisher.ensure_connected().await.context("cannot publish to RabbitMQ")?;
    let (p, accounts, plan, keys) = (publisher.clone(), Arc::clone(accounts), Arc::clone(plan), phase.keys.clone());
    let pace = Pace::new(phase.rate);
    let sent = pool(plan.len(), args.concurrency(), bar, move |i| {
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

async fn publish_direct(publisher: &Publisher, from: AccountId, to: AccountId, amount: i64, key: String) -> Sent {
    let sent = Instant::now();
    let cmd = match upstream_command(TransferKind::Transfer, from, to, amount, &key) {
        Ok(cmd) => cmd,
        Err(e) => return Sent::rejected(key, sent, format!("invalid command: {e}")),
    };
    let props = BasicProperties::default().with_type(COMMAND_TYPE.into()).with_app_id("ledgerflow-bench".into());
    let exchange = publisher.topology().transfers();
    match publisher.publish(&exchange, &from.to_string(), &cmd.to_json(), props).await {
        Ok(()) => Sent::accepted(key, sent),
        Err(e) => Sent::rejected(key, sent, e.to_string()),
    }
}

/// A command as an upstream system sends it: initiator `service:bench` and no transaction id,
/// so the worker creates the transaction, scoped by initiator and idempotency key.
fn upstream_command(
    kind: TransferKind,
    from: AccountId,
    to: AccountId,
    amount: i64,
    key: &str,
) -> Result<TransferCommand> {
    let request = TransferRequest::new(kind, from, to, Amount::new(amount)?, Currency::USD, None)?;
    Ok(TransferCommand {
        transaction_id: None,
        request,
        idempotency_key: key.parse()?,
        initiator: SERVICE_INITIATOR.parse()?,
        requested_at: chrono::Utc::now(),
    })
}

/// What the load phase measured.
#[derive(Debug, Default)]
struct LoadFigures {
    accepted: usize,
    accepted_per_s: f64,
    accept: Option<Percentiles>,
    rejected: BTreeMap<String, usize>,
    completed: usize,
    completed_per_s: f64,
    complete: Option<Percentiles>,
    /// The completed transfers' way split in two at the worker's decision (`completedAt`, to
    /// the millisecond): 202 (or confirm) → decision, and decision → result heard. Says which
    /// stage a latency tail comes from.
    decide: Option<Percentiles>,
    report: Option<Percentiles>,
    failed: BTreeMap<String, usize>,
    /// Accepted but without an outcome when waiting ended: stuck PENDING.
    unfinished: usize,
}

impl LoadFigures {
    /// Joins what was sent with the outcomes heard. Rates are over the time from the first
    /// submit to the last 202 (accepted) and to the last COMPLETED result (completed).
    fn tally(sent: &[Sent], outcomes: &Outcomes, on: MatchOn, anchor: (Instant, DateTime<Utc>)) -> Self {
        let Some(start) = sent.iter().map(|s| s.sent).min() else { return Self::default() };
        let mut figures = Self::default();
        let (mut accept, mut complete) = (Vec::new(), Vec::new());
        let (mut decide, mut report) = (Vec::new(), Vec::new());
        let (mut last_accept, mut last_complete) = (start, start);
        for s in sent {
            let Some(accepted) = s.accepted else {
                bump(&mut figures.rejected, s.rejected.as_deref().unwrap_or("unknown"));
                continue;
            };
            accept.push(accepted.saturating_duration_since(s.sent));
            last_accept = last_accept.max(accepted);
            match outcomes.get(on, &s.key) {
                Some(o) if o.status == TransactionStatus::Completed => {
                    complete.push(o.at.saturating_duration_since(s.sent));
                    last_complete = last_complete.max(o.at);
                    if let Some(decided) = o.decided_at.and_then(|at| on_monotonic(anchor, at)) {
                        decide.push(decided.saturating_duration_since(accepted));
                        report.push(o.at.saturating_duration_since(decided));
                    }
                }
                Some(o) => bump(&mut figures.failed, reason_name(o.reason)),
                None => figures.unfinished += 1,
            }
        }
        figures.accepted = accept.len();
        figures.completed = complete.len();
        figures.accepted_per_s = per_second(figures.accepted, last_accept - start);
        figures.completed_per_s = per_second(figures.completed, last_complete - start);
        figures.accept = Percentiles::of(accept);
        figures.complete = Percentiles::of(complete);
        figures.decide = Percentiles::of(decide);
        figures.report = Percentiles::of(report);
        figures
    }
}

/// Where an instant on this machine's wall clock (a worker's `completedAt`) falls on the
/// bench's monotonic clock, given one moment read on both.
fn on_monotonic(anchor: (Instant, DateTime<Utc>), at: DateTime<Utc>) -> Option<Instant> {
    anchor.0.checked_add((at - anchor.1).to_std().ok()?)
}

/// Checks every ledger invariant of the run's own database once its load is over (debits equal
/// credits, no balance below zero, every completed transfer with exactly its two entries, the
/// hash chains intact, nothing left PENDING): a rate that broke the books would be no figure.
/// Not with `--target`, whose database may hold far more than the run made.
async fn check_ledger(conn: &ConnInfo, db: &str) -> Result<ReconcileReport> {
    let store = Store::connect(&conn.mongodb_uri, db).await.context("ledger check: MongoDB")?;
    // Every transfer has its result by now, so anything still PENDING is stuck.
    let report = store.reconcile(&ReconcileOptions { max_pending_age: Duration::ZERO }, &NoProgress).await;
    store.shutdown().await;
    report.context("ledger check")
}

/// Asks MongoDB for a checkpoint; a server that refuses (no privilege for `fsync`) only
/// leaves the pause after it to do the work.
async fn checkpoint(conn: &ConnInfo) {
    let started = Instant::now();
    let done = async {
        let store = Store::connect(&conn.mongodb_uri, &conn.mongodb_db).await?;
        let done = store.checkpoint().await;
        store.shutdown().await;
        done
    };
    match done.await {
        Ok(()) => tracing::debug!(took_ms = started.elapsed().as_millis(), "MongoDB checkpoint"),
        Err(e) => warn!(error = %e, "MongoDB refused a checkpoint; only pausing"),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw floor
// ---------------------------------------------------------------------------------------------

/// The floor reference: the same double-entry transactions (`Store::execute` on upstream-style
/// commands) in a tight loop at the same concurrency, without HTTP or the broker, on a
/// database of its own.
#[derive(Debug, Default)]
struct RawFigures {
    completed: usize,
    failed: BTreeMap<String, usize>,
    /// Calls that returned an error (e.g. contention beyond the retry budget).
    errors: usize,
    per_s: f64,
    latency: Option<Percentiles>,
}

async fn raw_phase(
    conn: &ConnInfo,
    args: &BenchArgs,
    sandbox: &Sandbox,
    plan: &Arc<Vec<Planned>>,
    bars: &Bars,
) -> Result<RawFigures> {
    let uri = with_pool_size(&conn.mongodb_uri, args.concurrency());
    let store = Store::connect(&uri, &sandbox.raw_db).await.context("raw phase: MongoDB")?;
    store.ensure_indexes().await.context("raw phase: MongoDB")?;
    let accounts = raw_accounts(&store, args, sandbox, bars).await?;
    let bar = bars.bar(plan.len(), "raw");
    let (plan, tag) = (Arc::clone(plan), sandbox.tag.clone());
    let closing = store.clone();
    let started = Instant::now();
    let timed = pool(plan.len(), args.concurrency(), &bar, move |i| {
        let (store, t) = (store.clone(), plan[i]);
        let cmd = upstream_command(
            TransferKind::Transfer,
            accounts[t.from],
            accounts[t.to],
            t.amount,
            &format!("raw-{tag}-{i}"),
        );
        async move {
            let began = Instant::now();
            let decided = match cmd {
                Ok(cmd) => store.execute(&cmd).await.map_err(anyhow::Error::from).and_then(decision),
                Err(e) => Err(e),
            };
            (began.elapsed(), decided)
        }
    })
    .await?;
    let elapsed = started.elapsed();
    bar.finish();
    closing.shutdown().await;
    Ok(RawFigures::tally(timed, elapsed))
}

impl RawFigures {
    fn tally(timed: Vec<(Duration, Result<Decision>)>, elapsed: Duration) -> Self {
        let mut figures = Self::default();
        let mut latency = Vec::new();
        for (took, decided) in timed {
            match decided {
                Ok((TransactionStatus::Completed, _)) => latency.push(took),
                Ok((_, reason)) => bump(&mut figures.failed, reason_name(reason)),
                Err(e) => {
                    figures.errors += 1;
                    warn!(error = %format!("{e:#}"), "raw Store::execute failed");
                }
            }
        }
        figures.completed = latency.len();
        figures.per_s = per_second(figures.completed, elapsed);
        figures.latency = Percentiles::of(latency);
        figures
    }
}

/// Raw accounts funded in one database transaction.
const RAW_FUNDING_BATCH: usize = 64;

/// Opens and funds the raw phase's accounts straight through the Store.
async fn raw_accounts(store: &Store, args: &BenchArgs, sandbox: &Sandbox, bars: &Bars) -> Result<Arc<Vec<AccountId>>> {
    let (n, owner) = (args.accounts(), UserId::generate());
    let bar = bars.bar(n, "raw accounts");
    let s = store.clone();
    let opened = pool(n, args.concurrency(), &bar, move |_| {
        let s = s.clone();
        async move { s.insert_account(owner, Currency::USD).await.map(|a| a.id) }
    })
    .await?;
    bar.finish();
    let accounts: Arc<Vec<AccountId>> = Arc::new(opened.into_iter().collect::<Result<_, _>>()?);
    // Setup, not measured. Every funding debits the one funding account, so racing them at
    // the load's concurrency only makes them conflict: they go in sequential batches instead.
    let bar = bars.bar(n, "raw funding");
    let funding = AccountId::funding(Currency::USD);
    for (c, chunk) in accounts.chunks(RAW_FUNDING_BATCH).enumerate() {
        let cmds = chunk
            .iter()
            .enumerate()
            .map(|(j, &to)| {
                let key = format!("raw-fund-{}-{}", sandbox.tag, c * RAW_FUNDING_BATCH + j);
                upstream_command(TransferKind::InitialFunds, funding, to, FUNDING_CENTS, &key)
            })
            .collect::<Result<Vec<_>>>()?;
        for outcome in store.execute_batch(&cmds).await {
            let (status, reason) = decision(outcome?).context("raw funding")?;
            ensure!(status == TransactionStatus::Completed, "raw funding {status}: {reason:?}");
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    Ok(accounts)
}

/// How `Store::execute` decided a transaction.
type Decision = (TransactionStatus, Option<FailureReason>);

fn decision(execution: Execution) -> Result<Decision> {
    match execution {
        Execution::Decided(record) | Execution::AlreadyTerminal(record) => Ok((record.status, record.failure_reason)),
        other => bail!("unexpected execution: {other:?}"),
    }
}

/// The URI with `maxPoolSize` set to the concurrency (unless it names one): the driver's
/// default pool of 10 connections would otherwise hold the floor reference below the
/// concurrency it is meant to run at.
fn with_pool_size(uri: &str, size: usize) -> String {
    if uri.to_ascii_lowercase().contains("maxpoolsize=") {
        return uri.to_owned();
    }
    let hosts = uri.find("://").map_or(uri, |i| &uri[i + 3..]);
    let separator = if uri.contains('?') {
        "&"
    } else if hosts.contains('/') {
        "?"
    } else {
        "/?"
    };
    format!("{uri}{separator}maxPoolSize={size}")
}

// ---------------------------------------------------------------------------------------------
// Clean-up
// ---------------------------------------------------------------------------------------------

/// Deletes what the run made unless `--keep`: its queues and database when it started its own
/// processes, and the raw phase's database. Best effort and bounded: failures are reported.
async fn cleanup(conn: &ConnInfo, sandbox: &Sandbox, keep: bool, raw: bool) {
    let mut databases = Vec::new();
    if sandbox.owned {
        databases.push(sandbox.db.as_str());
    }
    if raw {
        databases.push(sandbox.raw_db.as_str());
    }
    if keep {
        if sandbox.owned {
            eprintln!("kept: queues and exchanges {}.*", sandbox.prefix);
        }
        for db in databases {
            eprintln!("kept: database {db}");
        }
        return;
    }
    if sandbox.owned {
        let topology = conn.topology(&sandbox.prefix);
        bounded_step(&format!("delete queues {}.*", sandbox.prefix), || delete_topology(&conn.amqp_uri, &topology))
            .await;
    }
    for db in databases {
        bounded_step(&format!("drop database {db}"), || drop_database(&conn.mongodb_uri, db)).await;
    }
}

/// Runs a clean-up step, retrying it for up to `CLEANUP_TIMEOUT` (a broker or database that is
/// restarting, or the very fault that failed the run, often passes within seconds); then
/// reports the last error and gives up, so a dead server cannot hold the bench.
async fn bounded_step<F, Fut>(what: &str, step: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let by = Instant::now() + CLEANUP_TIMEOUT;
    loop {
        let left = by.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left, step()).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => format!("no answer within {CLEANUP_TIMEOUT:?}"),
        };
        if Instant::now() + Duration::from_secs(1) >= by {
            warn!(error = %error, "could not {what}; delete it by hand");
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn delete_topology(amqp_uri: &str, topology: &Topology) -> Result<()> {
    let connection = connect(amqp_uri, "ledgerflow-bench-cleanup").await?;
    let channel = connection.create_channel().await?;
    let deleted = topology.delete(&channel).await;
    ledgerflow_messaging::close(&connection, "bench cleanup").await;
    Ok(deleted?)
}

async fn drop_database(mongodb_uri: &str, db: &str) -> Result<()> {
    let store = Store::connect(mongodb_uri, db).await?;
    let dropped = store.drop_database().await;
    store.shutdown().await;
    dropped?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Balance reads
// ---------------------------------------------------------------------------------------------

/// Balance-read latency at one history length.
struct ReadFigures {
    entries: u64,
    insert: Duration,
    latency: Percentiles,
    /// From `explain`: index keys and documents one balance read examines (1 and 1 whatever
    /// the history length, if the `(accountId, seq)` index does its job).
    keys_examined: i64,
    docs_examined: i64,
}

async fn run_balance_reads(conn: &ConnInfo, args: &BenchArgs) -> Result<()> {
    let mut sizes = args.entries.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let db = sandbox_name(&random_hex(4));
    let deadline = Instant::now() + args.timeout;
    let measured = guarded(deadline, measure_reads(conn, &db, &sizes, args.reads as usize)).await;
    if args.keep {
        eprintln!("kept: database {db}");
    } else {
        bounded_step(&format!("drop database {db}"), || drop_database(&conn.mongodb_uri, &db)).await;
    }
    let rows = measured?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reads_json(&rows, args.reads))?);
    } else {
        print!("{}", render_reads(&rows, args.reads));
    }
    Ok(())
}

/// Grows one account's history to each size in turn and times `reads` sequential
/// `Store::balance` calls at each.
async fn measure_reads(conn: &ConnInfo, db: &str, sizes: &[u64], reads: usize) -> Result<Vec<ReadFigures>> {
    let store = Store::connect(&conn.mongodb_uri, db).await.context("MongoDB")?;
    store.ensure_indexes().await.context("MongoDB")?;
    let account = store.insert_account(UserId::generate(), Currency::USD).await?;
    let client = mongodb::Client::with_uri_str(&conn.mongodb_uri).await.context("MongoDB")?;
    let database = client.database(db);
    let bars = Bars::new();
    let mut history = SyntheticHistory::new(account.id)?;
    let mut rows = Vec::new();
    for &entries in sizes {
        let target = i64::try_from(entries).context("--entries is too large")?;
        let bar = bars.bar(usize::try_from(entries).unwrap_or(usize::MAX), "entries");
        bar.set_position(history.seq.unsigned_abs());
        let started = Instant::now();
        history.extend_to(&database, target, &bar).await?;
        let insert = started.elapsed();
        bar.finish();
        let latency = time_balance_reads(&store, account.id, reads, history.balance()).await?;
        let (keys_examined, docs_examined) = explain_balance_read(&database, account.id).await?;
        rows.push(ReadFigures { entries, insert, latency, keys_examined, docs_examined });
    }
    store.shutdown().await;
    ledgerflow_store::shutdown_client(client).await;
    Ok(rows)
}

/// A synthetic history for one account: CREDIT entries of one cent each, written straight to
/// the `entries` collection (the Store has no bulk insert, and only reads are measured), with
/// a consistent `seq` / `balanceAfter` / hash chain so the data looks like the real thing.
/// Their transaction ids name no transaction.
struct SyntheticHistory {
    account: AccountId,
    amount: Amount,
    seq: i64,
    prev_hash: String,
}

impl SyntheticHistory {
    fn new(account: AccountId) -> Result<Self> {
        Ok(Self { account, amount: Amount::new(1)?, seq: 0, prev_hash: ledgerflow_domain::GENESIS_HASH.to_owned() })
    }

    fn balance(&self) -> Balance {
        Balance(self.seq * self.amount.minor())
    }

    fn next_entry(&mut self, created_at_ms: i64) -> Document {
        self.seq += 1;
        let fields = EntryFields {
            id: EntryId::generate(),
            account_id: self.account,
            transaction_id: TransactionId::generate(),
            entry_type: EntryType::Credit,
            amount: self.amount,
            currency: Currency::USD,
            seq: self.seq,
            balance_after: self.balance(),
            created_at_ms,
            prev_hash: &self.prev_hash,
        };
        let hash = fields.hash();
        let entry = doc! {
            "_id": fields.id.to_string(),
            "accountId": self.account.to_string(),
            "transactionId": fields.transaction_id.to_string(),
            "type": EntryType::Credit.as_str(),
            "amount": self.amount.minor(),
            "currency": Currency::USD.code(),
            "seq": self.seq,
            "balanceAfter": self.balance().minor(),
            "createdAt": mongodb::bson::DateTime::from_millis(created_at_ms),
            "prevHash": &self.prev_hash,
            "hash": &hash,
        };
        self.prev_hash = hash;
        entry
    }

    /// Appends entries in batches until the history is `target` long, and moves the account's
    /// `seq` along as a posting would.
    async fn extend_to(&mut self, db: &mongodb::Database, target: i64, bar: &ProgressBar) -> Result<()> {
        let entries = db.collection::<Document>("entries");
        while self.seq < target {
            let now = chrono::Utc::now().timestamp_millis();
            let batch: Vec<Document> =
                (0..(target - self.seq).min(INSERT_BATCH)).map(|_| self.next_entry(now)).collect();
            let n = batch.len() as u64;
            entries.insert_many(batch).await.context("inserting synthetic entries")?;
            bar.inc(n);
        }
        db.collection::<Document>("accounts")
            .update_one(doc! { "_id": self.account.to_string() }, doc! { "$set": { "seq": self.seq } })
            .await
            .context("updating the account's seq")?;
        Ok(())
    }
}

async fn time_balance_reads(store: &Store, account: AccountId, reads: usize, expected: Balance) -> Result<Percentiles> {
    for _ in 0..WARMUP_READS {
        store.balance(account).await?;
    }
    let mut samples = Vec::with_capacity(reads);
    for _ in 0..reads {
        let started = Instant::now();
        let balance = store.balance(account).await?;
        samples.push(started.elapsed());
        ensure!(balance == expected, "balance read {balance}, expected {expected}");
    }
    Percentiles::of(samples).context("no balance reads")
}

/// Asks MongoDB how it runs the balance query (the same filter, sort and limit as
/// `Store::balance`): index keys and documents examined.
async fn explain_balance_read(db: &mongodb::Database, account: AccountId) -> Result<(i64, i64)> {
    let query =
        doc! { "find": "entries", "filter": { "accountId": account.to_string() }, "sort": { "seq": -1 }, "limit": 1 };
    let answer = db.run_command(doc! { "explain": query, "verbosity": "executionStats" }).await.context("explain")?;
    let stats = answer.get_document("executionStats").context("explain: no executionStats")?;
    Ok((int_field(stats, "totalKeysExamined"), int_field(stats, "totalDocsExamined")))
}

fn int_field(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(f)) => *f as i64,
        _ => -1,
    }
}

fn reads_json(rows: &[ReadFigures], reads: u32) -> Value {
    let sizes: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "entries": r.entries,
                "insert_s": round(r.insert.as_secs_f64(), 2),
                "latency_ms": r.latency.to_json(),
                "keys_examined": r.keys_examined,
                "docs_examined": r.docs_examined,
            })
        })
        .collect();
    json!({ "mode": "balance-reads", "reads": reads, "sizes": sizes })
}

fn render_reads(rows: &[ReadFigures], reads: u32) -> String {
    let header = ["entries", "insert s", "p50 ms", "p95 ms", "p99 ms", "max ms", "keys examined", "docs examined"];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![r.entries.to_string(), format!("{:.1}", r.insert.as_secs_f64())];
            row.extend(Percentiles::cells(Some(r.latency)));
            row.extend([r.keys_examined.to_string(), r.docs_examined.to_string()]);
            row
        })
        .collect();
    format!(
        "ledgerflow bench --balance-reads: {reads} sequential Store::balance reads per history length, one account\n\n{}",
        table(&header, &body, false)
    )
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// The workers' own account of a load, from their Prometheus counters: how many transactions
/// their batches took and how often batches of two workers collided, which is where a latency
/// tail under load usually comes from.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Batching {
    /// Batches executed (each one MongoDB transaction unless it was retried or split).
    batches: u64,
    /// Commands in those batches.
    commands: u64,
    /// Transactions re-run after a write conflict (another worker's batch wrote one of the
    /// same accounts first) or, rarely, another transient error.
    conflict_retries: u64,
    /// Batches split in halves after conflicting for too long, or refused by the server.
    splits: u64,
}

impl Batching {
    /// Reads the counters from a Prometheus text exposition (absent ones are zero: the
    /// exporter only shows what has been recorded).
    fn parse(text: &str) -> Self {
        let sum = |name: &str| -> u64 {
            let total: f64 = text
                .lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (series, value) = line.rsplit_once(' ')?;
                    let metric = series.split('{').next()?;
                    if metric == name { value.parse::<f64>().ok() } else { None }
                })
                .sum();
            // Counts, exported as floats: rounding recovers them exactly.
            total.round() as u64
        };
        Self {
            batches: sum("ledgerflow_batch_size_count"),
            commands: sum("ledgerflow_batch_size_sum"),
            conflict_retries: sum("ledgerflow_mongo_transaction_retries_total"),
            splits: sum("ledgerflow_batch_splits_total"),
        }
    }

    fn mean_size(self) -> f64 {
        if self.batches == 0 { 0.0 } else { self.commands as f64 / self.batches as f64 }
    }

    fn to_json(self) -> Value {
        json!({
            "batches": self.batches,
            "commands": self.commands,
            "mean_size": round(self.mean_size(), 2),
            "conflict_retries": self.conflict_retries,
            "splits": self.splits,
        })
    }
}

impl std::ops::Add for Batching {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            batches: self.batches + o.batches,
            commands: self.commands + o.commands,
            conflict_retries: self.conflict_retries + o.conflict_retries,
            splits: self.splits + o.splits,
        }
    }
}

impl std::ops::Sub for Batching {
    type Output = Self;
    /// Counters only grow, but a restarted worker's start again from zero: never below zero.
    fn sub(self, o: Self) -> Self {
        Self {
            batches: self.batches.saturating_sub(o.batches),
            commands: self.commands.saturating_sub(o.commands),
            conflict_retries: self.conflict_retries.saturating_sub(o.conflict_retries),
            splits: self.splits.saturating_sub(o.splits),
        }
    }
}

#[derive(Debug, Default)]
struct LoadReport {
    setup: Duration,
    load: LoadFigures,
    /// With `--rate N%`: the unpaced load that measured the maximum.
    maximum: Option<Maximum>,
    /// The pace of the timed load, transfers per second (from `--rate`).
    rate: Option<u32>,
    raw: Option<RawFigures>,
    rss_mb: BTreeMap<String, f64>,
    exits: BTreeMap<String, String>,
    logs: BTreeMap<String, LogCounts>,
    /// What the workers did during the load (not the setup), when the bench started them.
    batching: Option<Batching>,
    /// CPU seconds spent during the load, by the machine and by each process (see [`CpuTimes`]).
    cpu_s: BTreeMap<String, f64>,
    /// The run's own ledger checked after the load (see [`check_ledger`]).
    ledger: Option<ReconcileReport>,
}

impl LoadReport {
    /// End-to-end completions per second as a share of the raw floor's.
    fn ratio(&self) -> Option<f64> {
        let raw = self.raw.as_ref()?;
        (raw.per_s > 0.0).then(|| round(self.load.completed_per_s / raw.per_s, 3))
    }

    fn to_json(&self, args: &BenchArgs) -> Value {
        let l = &self.load;
        let logs: BTreeMap<&String, Value> =
            self.logs.iter().map(|(name, c)| (name, json!({ "warn": c.warn, "error": c.error }))).collect();
        let mut v = json!({
            "mode": args.mode(),
            "pattern": args.pattern(),
            "accounts": args.accounts,
            "transfers": args.transfers,
            "concurrency": args.concurrency,
            "rate": self.rate,
            "workers": args.target.is_none().then_some(args.workers),
            "target": args.target,
            "setup_s": round(self.setup.as_secs_f64(), 2),
            "accepted": l.accepted,
            "accepted_per_s": l.accepted_per_s,
            "completed": l.completed,
            "completed_per_s": l.completed_per_s,
            "failed": l.failed.values().sum::<usize>(),
            "failure_reasons": l.failed,
            "rejected": l.rejected.values().sum::<usize>(),
            "rejections": l.rejected,
            "unfinished": l.unfinished,
            "ratio": self.ratio(),
            "latency_ms": {
                "accept": l.accept.map(Percentiles::to_json),
                "complete": l.complete.map(Percentiles::to_json),
                "decide": l.decide.map(Percentiles::to_json),
                "report": l.report.map(Percentiles::to_json),
            },
            "rss_mb": self.rss_mb,
            "cpu_s": self.cpu_s,
            "exits": self.exits,
            "log_lines": logs,
            "batching": self.batching.map(Batching::to_json),
        });
        if let Some(ledger) = &self.ledger {
            v["ledger"] = json!({
                "ok": ledger.ok,
                "transactions": ledger.transactions,
                "entries": ledger.entries,
                "accounts": ledger.accounts,
                "discrepancies": ledger.discrepancy_count,
                "first_discrepancies": ledger.discrepancies.iter().take(10).collect::<Vec<_>>(),
            });
        }
        if let Some(m) = self.maximum {
            v["maximum"] = json!({
                "completed_per_s": m.completed_per_s,
                "accepted_per_s": m.accepted_per_s,
                "percent": m.percent,
            });
        }
        if let Some(raw) = &self.raw {
            v["raw_per_s"] = json!(raw.per_s);
            v["raw"] = json!({
                "completed": raw.completed,
                "failed": raw.failed.values().sum::<usize>(),
                "failure_reasons": raw.failed,
                "errors": raw.errors,
                "latency_ms": raw.latency.map(Percentiles::to_json),
            });
        }
        v
    }

    fn render(&self, args: &BenchArgs) -> String {
        let l = &self.load;
        let mut out = String::new();
        let who = match &args.target {
            Some(target) => format!("against {target}"),
            None => format!("{} worker process(es)", args.workers),
        };
        let rate = self.rate.map(|r| format!(" at most {r}/s,")).unwrap_or_default();
        let _ = writeln!(
            out,
            "ledgerflow bench: {} transfers, {} pattern, {} accounts, {} transfers,{rate} concurrency {}, {who}",
            args.mode(),
            args.pattern(),
            args.accounts,
            args.transfers,
            args.concurrency
        );
        let _ = writeln!(out, "setup (users, accounts, funding): {:.1} s", self.setup.as_secs_f64());
        if let (Some(m), Some(rate)) = (self.maximum, self.rate) {
            let _ = writeln!(
                out,
                "maximum, measured first (unpaced, same size): {:.1} completed/s ({:.1} accepted/s); paced at {}% = {rate}/s",
                m.completed_per_s, m.accepted_per_s, m.percent
            );
        }
        let _ = writeln!(out);
        let accepted = if args.direct { "accepted (confirm)" } else { "accepted (202)" };
        let mut rows = vec![
            row(accepted, l.accepted, l.accepted_per_s, l.accept),
            row("completed", l.completed, l.completed_per_s, l.complete),
        ];
        let decide = if args.direct { "  confirm → decision" } else { "  202 → decision" };
        for (label, stage) in [(decide, l.decide), ("  decision → heard", l.report)] {
            let mut cells = vec![label.to_owned(), String::new(), String::new()];
            cells.extend(Percentiles::cells(stage));
            rows.push(cells);
        }
        if let Some(raw) = &self.raw {
            rows.push(row("raw Store::execute", raw.completed, raw.per_s, raw.latency));
        }
        out.push_str(&table(&["", "count", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms"], &rows, true));
        let _ = writeln!(out);
        let _ = writeln!(out, "failed:     {}", breakdown(&l.failed));
        let _ = writeln!(out, "rejected:   {}", breakdown(&l.rejected));
        let _ = writeln!(out, "unfinished: {} (accepted, no result)", l.unfinished);
        if let Some(raw) = &self.raw {
            let _ = writeln!(out, "raw failed: {}, errors: {}", breakdown(&raw.failed), raw.errors);
            let ratio = self.ratio().map_or("-".to_owned(), |r| format!("{r:.3}"));
            let _ = writeln!(out, "ratio completed/s ÷ raw/s: {ratio}");
        }
        if let Some(b) = self.batching {
            let _ = writeln!(
                out,
                "workers:    {} batches, mean size {:.1}; {} write-conflict retries, {} batches split",
                b.batches,
                b.mean_size(),
                b.conflict_retries,
                b.splits
            );
        }
        if let Some(ledger) = &self.ledger {
            let _ = writeln!(out, "ledger:     {}", ledger_summary(ledger));
        }
        if !self.rss_mb.is_empty() {
            let peaks: Vec<String> = self.rss_mb.iter().map(|(name, mb)| format!("{name} {mb:.1}")).collect();
            let _ = writeln!(out, "peak RSS MB: {}", peaks.join(", "));
        }
        if !self.cpu_s.is_empty() {
            let spent: Vec<String> = self.cpu_s.iter().map(|(name, s)| format!("{name} {s:.1}")).collect();
            let _ = writeln!(out, "CPU s, load: {}", spent.join(", "));
        }
        if !self.exits.is_empty() {
            let exits: Vec<String> = self.exits.iter().map(|(name, how)| format!("{name}: {how}")).collect();
            let _ = writeln!(out, "stopped:     {}", exits.join(", "));
        }
        if !self.logs.is_empty() {
            let logs: Vec<String> =
                self.logs.iter().map(|(name, c)| format!("{name} {}/{}", c.warn, c.error)).collect();
            let _ = writeln!(out, "log lines warn/error: {}", logs.join(", "));
        }
        out
    }
}

/// One line on the ledger check: what it covered, or what failed first.
fn ledger_summary(ledger: &ReconcileReport) -> String {
    let covered =
        format!("{} transactions, {} entries, {} accounts", ledger.transactions, ledger.entries, ledger.accounts);
    match ledger.discrepancies.first() {
        None => format!("every invariant holds ({covered})"),
        Some(d) => format!(
            "{} DISCREPANCIES ({covered}); first: [{}] {}: {}",
            ledger.discrepancy_count, d.check, d.subject, d.detail
        ),
    }
}

/// A table row: label, count, rate and latency percentiles.
fn row(label: &str, count: usize, per_s: f64, latency: Option<Percentiles>) -> Vec<String> {
    let mut cells = vec![label.to_owned(), count.to_string(), format!("{per_s:.1}")];
    cells.extend(Percentiles::cells(latency));
    cells
}

/// `3 (INSUFFICIENT_FUNDS 2, PROCESSING_FAILED 1)`, or `0`.
fn breakdown(counts: &BTreeMap<String, usize>) -> String {
    let total: usize = counts.values().sum();
    if total == 0 {
        return "0".to_owned();
    }
    let parts: Vec<String> = counts.iter().map(|(what, n)| format!("{what} {n}")).collect();
    format!("{total} ({})", parts.join(", "))
}

/// A table in the style of `ledgerflow admin`'s, numbers right-aligned; with `labels`, the
/// first column holds row labels and stays left-aligned.
fn table(header: &[&str], rows: &[Vec<String>], labels: bool) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(header.iter().copied());
    for row in rows {
        t.add_row(row.iter().map(String::as_str));
    }
    for column in t.column_iter_mut().skip(usize::from(labels)) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    format!("{t}\n")
}

#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: Duration,
    p95: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles of the samples; `None` without samples.
    fn of(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort_unstable();
        let max = *samples.last()?;
        let n = samples.len();
        let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Self { p50: rank(0.50), p95: rank(0.95), p99: rank(0.99), max })
    }

    fn to_json(self) -> Value {
        json!({ "p50": ms(self.p50), "p95": ms(self.p95), "p99": ms(self.p99), "max": ms(self.max) })
    }

    fn cells(p: Option<Self>) -> [String; 4] {
        match p {
            Some(p) => [p.p50, p.p95, p.p99, p.max].map(|d| format!("{:.2}", ms(d))),
            None => std::array::from_fn(|_| "-".to_owned()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Progress bars on stderr when it is a terminal; hidden otherwise (CI, pipes, tests), and
/// never on stdout, which carries only the report.
struct Bars(MultiProgress);

impl Bars {
    fn new() -> Self {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Self(MultiProgress::with_draw_target(target))
    }

    fn bar(&self, len: usize, label: &'static str) -> ProgressBar {
        let style = ProgressStyle::with_template("{msg:>14} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        self.0.add(ProgressBar::new(len as u64).with_style(style).with_message(label))
    }
}

/// Open-loop pacing for `--rate`: transfer `i` is sent no earlier than `i / rate` seconds
/// after the start, whatever happened to the ones before it.
#[derive(Clone, Copy)]
struct Pace {
    start: tokio::time::Instant,
    rate: Option<u32>,
}

impl Pace {
    fn new(rate: Option<u32>) -> Self {
        Self { start: tokio::time::Instant::now(), rate }
    }

    async fn wait_turn(self, i: usize) {
        if let Some(rate) = self.rate {
            tokio::time::sleep_until(self.start + Duration::from_secs_f64(i as f64 / f64::from(rate))).await;
        }
    }
}

/// Runs `task(0..n)` on `concurrency` tokio tasks and returns the outputs in index order.
/// Separate tasks rather than one buffered stream, so that building requests and parsing
/// answers spreads over every core, as many independent clients would.
async fn pool<T, F, Fut>(n: usize, concurrency: usize, bar: &ProgressBar, task: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let task = Arc::new(task);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (task, next, bar) = (Arc::clone(&task), Arc::clone(&next), bar.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break done;
                }
                done.push((i, task(i).await));
                bar.inc(1);
            }
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        out.extend(joined.context("a bench task panicked")?);
    }
    out.sort_unstable_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

fn bump(counts: &mut BTreeMap<String, usize>, what: &str) {
    *counts.entry(what.to_owned()).or_default() += 1;
}

fn reason_name(reason: Option<FailureReason>) -> &'static str {
    reason.map_or("UNKNOWN", FailureReason::as_str)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `ledgerflow_bench_<unix seconds>_<tag>`: the creation time lets `scripts/services.sh sweep`
/// drop what a killed or `--keep` run left behind once it is a day old.
fn sandbox_name(tag: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("ledgerflow_bench_{secs}_{tag}")
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

fn per_second(count: usize, over: Duration) -> f64 {
    if over.is_zero() { 0.0 } else { round(count as f64 / over.as_secs_f64(), 1) }
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1_000.0, 2)
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_counters_are_read_from_the_prometheus_text_and_summed_over_labels() {
        let text = "# TYPE ledgerflow_batch_size summary\n\
            ledgerflow_batch_size{quantile=\"0.5\"} 3\n\
            ledgerflow_batch_size_sum 120\n\
            ledgerflow_batch_size_count 40\n\
            # TYPE ledgerflow_batch_splits_total counter\n\
            ledgerflow_batch_splits_total{why=\"conflict\"} 3\n\
            ledgerflow_batch_splits_total{why=\"refused\"} 1\n\
            ledgerflow_mongo_transaction_retries_total 7\n\
            ledgerflow_mongo_transaction_retries_total_other 99\n";
        let read = Batching::parse(text);
        assert_eq!(read, Batching { batches: 40, commands: 120, conflict_retries: 7, splits: 4 });
        assert!((read.mean_size() - 3.0).abs() < 1e-9);
        // What a load added: the difference of two readings, never below zero.
        let later = Batching { batches: 50, commands: 150, conflict_retries: 7, splits: 4 };
        assert_eq!(later - read, Batching { batches: 10, commands: 30, conflict_retries: 0, splits: 0 });
        assert_eq!(read - later, Batching::default());
        assert_eq!(Batching::parse(""), Batching::default());
    }

    #[test]
    fn a_rate_is_per_second_or_a_share_of_the_maximum() {
        assert_eq!("700".parse::<Rate>(), Ok(Rate::PerSecond(700)));
        assert_eq!(" 50% ".parse::<Rate>(), Ok(Rate::OfMaximum(50)));
        for bad in ["0", "0%", "101%", "-5", "1.5", "half", "%", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Rate::PerSecond(700).per_second(1_234.0), 700);
        assert_eq!(Rate::OfMaximum(50).per_second(1_401.0), 701);
        // A load that completed nothing still paces the next at one per second, never zero.
        assert_eq!(Rate::OfMaximum(50).per_second(0.0), 1);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(samples).expect("samples");
        assert_eq!((p.p50, p.p95, p.p99, p.max), (ms_(50), ms_(95), ms_(99), ms_(100)));
        assert!(Percentiles::of(Vec::new()).is_none());
        let one = Percentiles::of(vec![ms_(7)]).expect("one sample");
        assert_eq!((one.p50, one.p99), (ms_(7), ms_(7)));
    }

    fn ms_(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_pool_size_is_added_to_any_uri_shape() {
        assert_eq!(
            with_pool_size("mongodb://127.0.0.1:27017/?replicaSet=rs0", 64),
            "mongodb://127.0.0.1:27017/?replicaSet=rs0&maxPoolSize=64"
        );
        assert_eq!(with_pool_size("mongodb://h:1", 8), "mongodb://h:1/?maxPoolSize=8");
        assert_eq!(with_pool_size("mongodb://h:1/db", 8), "mongodb://h:1/db?maxPoolSize=8");
        assert_eq!(with_pool_size("mongodb://h/?maxPoolSize=5", 8), "mongodb://h/?maxPoolSize=5");
    }

    #[test]
    fn plans_never_send_to_the_sender_and_hot_plans_concentrate() {
        let random = plan(3, 2_000, None);
        assert!(random.iter().all(|t| t.from != t.to && t.to < 3 && (1..=MAX_TRANSFER_CENTS).contains(&t.amount)));
        let hot = plan(10, 2_000, Some(90));
        let from_hot = hot.iter().filter(|t| t.from == 0).count();
        assert!(from_hot > 1_700, "{from_hot} of 2000 from the hot account");
    }

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

    #[test]
    fn sandbox_names_carry_their_creation_time_for_the_sweep() {
        // scripts/services.sh sweep matches ledgerflow_bench_(\d+)_[0-9a-f]+ and ages it by the number.
        let name = sandbox_name("0a1b2c3d");
        let secs = name.strip_prefix("ledgerflow_bench_").and_then(|rest| rest.strip_suffix("_0a1b2c3d"));
        let secs: u64 = secs.and_then(|s| s.parse().ok()).expect("ledgerflow_bench_<secs>_<tag>");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        assert!(now.abs_diff(secs) < 60, "{name}");
    }

    #[test]
    fn tables_align_labels_left_and_numbers_right() {
        let text = table(&["", "n"], &[vec!["accepted".into(), "5".into()], vec!["raw".into(), "1234".into()]], true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.iter().any(|l| l.contains("│ accepted ┆    5 │")), "{text}");
        assert!(lines.iter().any(|l| l.contains("│ raw      ┆ 1234 │")), "{text}");
    }

    #[test]
    fn cpu_times_count_this_process_and_the_machine() {
        let before = CpuTimes::read(&[("me".to_owned(), std::process::id())]);
        let started = Instant::now();
        let mut x = 0u64;
        // Busy until this process has used ten ticks more (bounded).
        let enough = (before.0["me"] * USER_HZ).round() as u64 + 10;
        while process_ticks(std::process::id()).is_some_and(|t| t < enough)
            && started.elapsed() < Duration::from_secs(10)
        {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = CpuTimes::read(&[("me".to_owned(), std::process::id())]).since(&before);
        assert!(spent["me"] > 0.0 && spent["bench"] > 0.0, "{spent:?}");
        assert!(spent["machine"] >= spent["me"] - 0.1, "{spent:?}");
        assert_eq!(process_ticks(u32::MAX), None, "no such process");
    }
}
