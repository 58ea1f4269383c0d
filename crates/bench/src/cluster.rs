//! The gateway and worker processes a run starts: the `ledgerflow` executable next to this one,
//! with the `gateway` and `worker` subcommands, so the bench measures the deployment shape
//! (HTTP, the broker, separate processes and their memory). Started, waited for and stopped
//! as testkit's `Cluster`, as the fault tests start theirs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::Serialize;
use tracing::warn;

use ledgerflow::Settings;
use ledgerflow::settings::{GatewaySettings, WorkerSettings, from_env};

use ledgerflow_testkit::{Launcher, LoggedChild, free_local_addr};

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

/// Lines a process logged at WARN and at ERROR.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct LogCounts {
    pub warn: usize,
    pub error: usize,
}

impl LogCounts {
    /// Lines logged at WARN and ERROR: anything there during a benchmark is worth a look.
    fn of(process: &LoggedChild) -> Self {
        let text = process.log_text();
        Self {
            warn: text.lines().filter(|l| l.contains(" WARN ")).count(),
            error: text.lines().filter(|l| l.contains(" ERROR ")).count(),
        }
    }
}

/// The settings of a run's processes: the bench's own (flags' defaults, then `LEDGERFLOW_*`,
/// as a `ledgerflow` process would read them), on the run's database and prefix, with a
/// fresh JWT secret and the run's SYSTEM user.
fn process_settings(conn: &ConnInfo, sandbox: &Sandbox, system: &Credentials) -> Result<Settings> {
    let mut connections = conn.services.clone();
    connections.mongodb_db = sandbox.db.clone();
    connections.amqp_prefix = sandbox.prefix.clone();
    let mut gateway: GatewaySettings = from_env().context("gateway settings in the environment")?;
    gateway.jwt_secret = Some(random_hex(32).into());
    gateway.system_email = Some(system.email.clone());
    gateway.system_password = Some(system.password.clone());
    gateway.cookie_secure = false;
    let worker: WorkerSettings = from_env().context("worker settings in the environment")?;
    Ok(Settings { connections, gateway: Some(gateway), worker: Some(worker), workers: 0, threads: conn.threads })
}

/// A gateway and workers started for one run, each logging to a file of its own in the
/// run's log directory.
pub struct Cluster(ledgerflow_testkit::Cluster);

impl Cluster {
    pub fn start(conn: &ConnInfo, sandbox: &Sandbox, workers: u16, system: &Credentials) -> Result<Self> {
        let settings = process_settings(conn, sandbox, system)?;
        // The processes' own filter, for diagnosis (e.g. ledgerflow_store=debug); quiet by default.
        let filter = std::env::var("LEDGERFLOW_BENCH_PROCESS_LOG").unwrap_or_else(|_| "warn".to_owned());
        let launcher = Launcher::new(ledgerflow_exe()?, &sandbox.logs, &filter);
        // Started one by one: if a later start fails, dropping `cluster` kills the earlier ones.
        let mut cluster = ledgerflow_testkit::Cluster::start(launcher, settings.clone(), &settings)?;
        for i in 1..=workers {
            let metrics = free_local_addr()?;
            cluster.spawn_worker(&format!("worker-{i}"), |worker| {
                worker.name = Some(format!("{}-worker-{i}", sandbox.prefix));
                worker.metrics_addr = Some(metrics);
            })?;
        }
        Ok(Self(cluster))
    }

    /// The gateway's base URL.
    pub fn base(&self) -> &str {
        &self.0.gateway.base
    }

    /// Each process's name and pid.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.0.processes().map(|p| (p.name.clone(), p.pid())).collect()
    }

    /// Waits until the gateway is ready; fails at once if any process died meanwhile.
    pub async fn wait_ready(&mut self, by: Instant) -> Result<()> {
        self.0.wait_ready(by).await
    }

    pub fn log_counts(&self) -> BTreeMap<String, LogCounts> {
        self.0.processes().map(|p| (p.name.clone(), LogCounts::of(p))).collect()
    }

    /// The workers' batching counters, summed over the workers; `None` (and a warning) if a
    /// worker's metrics cannot be read, as they only explain the figures.
    pub async fn batching(&self, api: &Api) -> Option<Batching> {
        let mut total = Batching::default();
        for worker in &self.0.workers {
            let Some(url) = worker.metrics_url() else { continue };
            match api.get_text(&url).await {
                Ok(text) => total = total + Batching::parse(&text),
                Err(e) => {
                    warn!(error = %e, worker = %worker.process.name, "cannot read the worker's metrics");
                    return None;
                }
            }
        }
        Some(total)
    }

    /// SIGTERM to all, up to `STOP_GRACE` for them to drain and exit, SIGKILL for the rest
    /// (on drop). Returns how each one ended.
    pub async fn stop(self) -> BTreeMap<String, String> {
        self.0.stop(STOP_GRACE).await
    }
}
