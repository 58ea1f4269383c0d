//! The gateway and worker processes a run starts: the `ledgerflow` executable next to this one,
//! with the `gateway` and `worker` subcommands, so the bench measures the deployment shape
//! (HTTP, the broker, separate processes and their memory). Each is killed if it is dropped
//! still running, so no failure path leaves one behind; each logs to a file of its own.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use tracing::warn;

use ledgerflow::Settings;
use ledgerflow::settings::{GatewaySettings, WorkerSettings, from_env};

use ledgerflow_testkit::LoggedChild;

use crate::api::Api;
use crate::args::ConnInfo;
use crate::metrics::Batching;
use crate::sandbox::{Credentials, Sandbox, random_hex};

/// What builds `ledgerflow` and this bench side by side, for the error when `ledgerflow` is missing.
const BUILD_HINT: &str = if cfg!(debug_assertions) {
    "cargo build -p ledgerflow -p ledgerflow-bench"
} else {
    "cargo build --release -p ledgerflow -p ledgerflow-bench"
};
/// How long a process gets to drain and exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The `ledgerflow` executable the processes run: the one next to this bench's, as `cargo
/// build` and `ledgerflow bench` (which runs the bench next to itself) place them.
fn ledgerflow_exe() -> Result<PathBuf> {
    let bench = std::env::current_exe().context("cannot find the ledgerflow-bench executable")?;
    let exe = bench.with_file_name(format!("ledgerflow{}", std::env::consts::EXE_SUFFIX));
    ensure!(
        exe.is_file(),
        "{} is missing: the bench runs the gateway and workers from the ledgerflow executable next to it \
         (build both: {BUILD_HINT})",
        exe.display()
    );
    Ok(exe)
}

/// One child process, killed (SIGKILL) and reaped when dropped, so that no failure path,
/// panic or timeout leaves a gateway or worker running after the bench.
struct Proc {
    process: LoggedChild,
    name: String,
    /// Where a worker serves its Prometheus metrics.
    metrics: Option<String>,
}

impl Proc {
    fn spawn(exe: &Path, name: &str, subcommand: &str, env: &[(&str, String)], logs: &Path) -> Result<Self> {
        let mut command = Command::new(exe);
        command
            .arg(subcommand)
            // One inherited metrics port for several workers would clash (each worker is given
            // its own below); plain text logs are counted below.
            .env_remove("LEDGERFLOW_METRICS_ADDR")
            .env_remove("LEDGERFLOW_LOG_FORMAT")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let log = logs.join(format!("{name}.log"));
        let process =
            LoggedChild::spawn(command, name, &log).with_context(|| format!("cannot start the {name} process"))?;
        let metrics =
            env.iter().find(|(k, _)| *k == "LEDGERFLOW_METRICS_ADDR").map(|(_, v)| format!("http://{v}/metrics"));
        Ok(Self { process, name: name.to_owned(), metrics })
    }

    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exited()
    }

    /// Asks for a graceful stop as an orchestrator would; the caller waits for the exit.
    fn terminate(&mut self) -> Result<()> {
        self.process.stopped = true;
        self.process.signal("TERM").with_context(|| format!("cannot stop the {} process", self.name))
    }

    fn log_tail(&self, lines: usize) -> String {
        self.process.tail(lines)
    }

    /// Lines logged at WARN and ERROR: anything there during a benchmark is worth a look.
    fn log_counts(&self) -> LogCounts {
        let text = self.process.log_text();
        LogCounts {
            warn: text.lines().filter(|l| l.contains(" WARN ")).count(),
            error: text.lines().filter(|l| l.contains(" ERROR ")).count(),
        }
    }
}

/// Lines a process logged at WARN and at ERROR.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct LogCounts {
    pub warn: usize,
    pub error: usize,
}

/// The settings of a run's processes: the bench's own (flags' defaults, then `LEDGERFLOW_*`,
/// as a `ledgerflow` process would read them), on the run's database and prefix, with a
/// fresh JWT secret and the run's SYSTEM user.
fn process_settings(conn: &ConnInfo, sandbox: &Sandbox, system: &Credentials, addr: &str) -> Result<Settings> {
    let mut connections = conn.services.clone();
    connections.mongodb_db = sandbox.db.clone();
    connections.amqp_prefix = sandbox.prefix.clone();
    let mut gateway: GatewaySettings = from_env().context("gateway settings in the environment")?;
    gateway.http_addr = addr.parse().context("a local address")?;
    gateway.jwt_secret = Some(random_hex(32).into());
    gateway.system_email = Some(system.email.clone());
    gateway.system_password = Some(system.password.clone());
    gateway.cookie_secure = false;
    let worker: WorkerSettings = from_env().context("worker settings in the environment")?;
    Ok(Settings { connections, gateway: Some(gateway), worker, workers: 0, threads: conn.threads })
}

/// A gateway and workers started for one run.
pub struct Cluster {
    procs: Vec<Proc>,
    /// The gateway's base URL.
    pub base: String,
}

impl Cluster {
    pub fn start(conn: &ConnInfo, sandbox: &Sandbox, workers: u16, system: &Credentials) -> Result<Self> {
        let exe = ledgerflow_exe()?;
        std::fs::create_dir_all(&sandbox.logs)
            .with_context(|| format!("cannot create the log directory {}", sandbox.logs.display()))?;
        let addr = free_local_addr()?;
        let settings = process_settings(conn, sandbox, system, &addr)?;
        // The processes' own filter, for diagnosis (e.g. ledgerflow_store=debug); quiet by default.
        let log =
            ("LEDGERFLOW_LOG", std::env::var("LEDGERFLOW_BENCH_PROCESS_LOG").unwrap_or_else(|_| "warn".to_owned()));
        let mut gateway = settings.gateway_only().child_env();
        gateway.push(log.clone());
        // Pushed one by one: if a later spawn fails, dropping `procs` kills the earlier ones.
        let mut procs = vec![Proc::spawn(&exe, "gateway", "gateway", &gateway, &sandbox.logs)?];
        for i in 1..=workers {
            let mut worker = settings.worker_only();
            worker.worker.name = Some(format!("{}-worker-{i}", sandbox.prefix));
            worker.worker.metrics_addr = Some(free_local_addr()?.parse().context("a local address")?);
            let mut env = worker.child_env();
            env.push(log.clone());
            procs.push(Proc::spawn(&exe, &format!("worker-{i}"), "worker", &env, &sandbox.logs)?);
        }
        Ok(Self { procs, base: format!("http://{addr}") })
    }

    /// Each process's name and pid.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs.iter().map(|p| (p.name.clone(), p.process.pid())).collect()
    }

    /// Waits until the gateway answers `/readyz`; fails at once if any process died meanwhile.
    pub async fn wait_ready(&mut self, api: &Api, by: Instant) -> Result<()> {
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

    pub fn log_counts(&self) -> BTreeMap<String, LogCounts> {
        self.procs.iter().map(|p| (p.name.clone(), p.log_counts())).collect()
    }

    /// The workers' batching counters, summed over the workers; `None` (and a warning) if a
    /// worker's metrics cannot be read, as they only explain the figures.
    pub async fn batching(&self, api: &Api) -> Option<Batching> {
        let mut total = Batching::default();
        for (name, url) in self.procs.iter().filter_map(|p| Some((&p.name, p.metrics.as_ref()?))) {
            match api.get_text(url).await {
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
    pub async fn stop(mut self) -> BTreeMap<String, String> {
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
