//! Real `ledgerflow` processes, as the fault tests and the bench run them: a `ledgerflow
//! gateway`, `ledgerflow worker`s and `ledgerflow dispatcher`s started with the environment
//! [`Settings::child_env`] renders, each a [`LoggedChild`], so a process runs with exactly the
//! settings the harness means, and no failure path leaves one running.
//!
//! [`Launcher`] says how processes start (which executable, where they log, how much);
//! [`Cluster`] is one gateway, its workers and dispatchers, with readiness and a graceful stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ledgerflow::Settings;
use ledgerflow::settings::{DispatcherSettings, WebhookPolicySettings, WorkerSettings};
use ledgerflow_messaging::{Publisher, Topology};

use crate::LoggedChild;

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);
/// Tries to start a gateway whose probed free port another process took first.
const GATEWAY_TRIES: usize = 3;

/// How a harness starts `ledgerflow` processes.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `ledgerflow` executable.
    pub exe: PathBuf,
    /// Where each process logs, to `<log_prefix><name>.log`.
    pub log_dir: PathBuf,
    pub log_prefix: String,
    /// Every process's `LEDGERFLOW_LOG` filter.
    pub log_filter: String,
    /// JSON log lines (`LEDGERFLOW_LOG_FORMAT=json`), for a harness that reads its processes'
    /// logs back; plain text otherwise.
    pub json_logs: bool,
}

impl Launcher {
    /// Processes of `exe` logging into `log_dir` at `log_filter`, in plain text.
    pub fn new(exe: impl Into<PathBuf>, log_dir: impl Into<PathBuf>, log_filter: &str) -> Self {
        Self {
            exe: exe.into(),
            log_dir: log_dir.into(),
            log_prefix: String::new(),
            log_filter: log_filter.to_owned(),
            json_logs: false,
        }
    }

    /// `ledgerflow <subcommand>` with `settings` as its environment, not started yet.
    pub fn command(&self, settings: &Settings, subcommand: &str) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .arg(subcommand)
            // What the settings leave unset must not come from this process's environment
            // either: one inherited metrics port would clash between workers, and an inherited
            // log format is not the one the harness reads.
            .env_remove("LEDGERFLOW_METRICS_ADDR")
            .env_remove("LEDGERFLOW_LOG_FORMAT")
            .envs(settings.child_env())
            .env("LEDGERFLOW_LOG", &self.log_filter);
        if self.json_logs {
            command.env("LEDGERFLOW_LOG_FORMAT", "json");
        }
        command
    }

    /// Starts `command` as the process `name`, logging to its file.
    pub fn spawn(&self, command: Command, name: &str) -> Result<LoggedChild> {
        std::fs::create_dir_all(&self.log_dir)
            .with_context(|| format!("cannot create the log directory {}", self.log_dir.display()))?;
        ensure!(
            self.exe.is_file(),
            "{} is missing: build it first (`cargo build --bin ledgerflow`)",
            self.exe.display()
        );
        let log = self.log_dir.join(format!("{}{name}.log", self.log_prefix));
        LoggedChild::spawn(command, name, &log).with_context(|| format!("cannot start the {name} process"))
    }

    /// A `ledgerflow worker` process with `settings`' worker settings, changed by `configure`.
    pub fn worker(
        &self,
        settings: &Settings,
        name: &str,
        configure: impl FnOnce(&mut WorkerSettings),
    ) -> Result<Worker> {
        let mut settings = settings.worker_only();
        let worker = settings.worker.as_mut().context("settings without worker settings")?;
        configure(worker);
        let metrics = worker.metrics_addr;
        let process = self.spawn(self.command(&settings, "worker"), name)?;
        Ok(Worker { process, metrics })
    }

    /// A `ledgerflow gateway` process with `settings`' gateway settings on a free loopback
    /// port; not waited for.
    pub fn gateway(&self, settings: &Settings, name: &str) -> Result<Gateway> {
        let mut settings = settings.gateway_only();
        let addr = free_local_addr()?;
        settings.gateway.as_mut().context("settings without a gateway")?.http_addr = addr;
        let process = self.spawn(self.command(&settings, "gateway"), name)?;
        Ok(Gateway { process, base: format!("http://{addr}") })
    }

    /// A `ledgerflow dispatcher` process on `settings`' services, delivering under `policy`
    /// (which must agree with the gateway's, that registered the webhooks).
    pub fn dispatcher(
        &self,
        settings: &Settings,
        name: &str,
        policy: &WebhookPolicySettings,
        dispatcher: &DispatcherSettings,
    ) -> Result<LoggedChild> {
        let mut command = self.command(&settings.one_shot(), "dispatcher");
        command
            .env_remove("LEDGERFLOW_DISPATCHER_METRICS_ADDR")
            .env_remove("LEDGERFLOW_DISPATCHER_NAME")
            .envs(policy.env())
            .envs(dispatcher.env());
        self.spawn(command, name)
    }
}

/// A `ledgerflow gateway` process.
pub struct Gateway {
    pub process: LoggedChild,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

/// A `ledgerflow worker` process.
pub struct Worker {
    pub process: LoggedChild,
    /// Where it serves its Prometheus metrics, if it does.
    pub metrics: Option<SocketAddr>,
}

impl Worker {
    /// Its metrics page's URL, if it serves one.
    pub fn metrics_url(&self) -> Option<String> {
        self.metrics.map(|addr| format!("http://{addr}/metrics"))
    }
}

/// A gateway, its workers and its webhook dispatchers, on the services and names of one
/// [`Settings`].
pub struct Cluster {
    pub launcher: Launcher,
    pub settings: Settings,
    pub gateway: Gateway,
    pub workers: Vec<Worker>,
    pub dispatchers: Vec<LoggedChild>,
}

impl Cluster {
    /// Starts the gateway of `gateway` (the cluster's settings, or others for the gateway
    /// alone, e.g. another broker address); no workers yet, and nothing waited for.
    pub fn start(launcher: Launcher, settings: Settings, gateway: &Settings) -> Result<Self> {
        let gateway = launcher.gateway(gateway, "gateway")?;
        Ok(Self { launcher, settings, gateway, workers: Vec::new(), dispatchers: Vec::new() })
    }

    /// [`Cluster::start`] and [`Cluster::wait_ready`], trying another port when the probed
    /// one was taken between the probe and the gateway's bind (it then exits at start).
    pub async fn start_ready(launcher: Launcher, settings: Settings, gateway: &Settings, by: Instant) -> Result<Self> {
        let mut tries = 0;
        loop {
            let mut cluster = Self::start(launcher.clone(), settings.clone(), gateway)?;
            match cluster.wait_ready(by).await {
                Ok(()) => return Ok(cluster),
                Err(e) if tries + 1 < GATEWAY_TRIES && cluster.gateway.process.exited().is_some() => {
                    tries += 1;
                    drop(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts one more worker with the cluster's worker settings, changed by `configure`;
    /// returns its index in `workers`.
    pub fn spawn_worker(&mut self, name: &str, configure: impl FnOnce(&mut WorkerSettings)) -> Result<usize> {
        self.workers.push(self.launcher.worker(&self.settings, name, configure)?);
        Ok(self.workers.len() - 1)
    }

    /// Starts a webhook dispatcher on the cluster's services (see [`Launcher::dispatcher`]);
    /// returns its index in `dispatchers`.
    pub fn spawn_dispatcher(
        &mut self,
        name: &str,
        policy: &WebhookPolicySettings,
        dispatcher: &DispatcherSettings,
    ) -> Result<usize> {
        self.dispatchers.push(self.launcher.dispatcher(&self.settings, name, policy, dispatcher)?);
        Ok(self.dispatchers.len() - 1)
    }

    /// Every process: the gateway, the workers, then the dispatchers.
    pub fn processes(&self) -> impl Iterator<Item = &LoggedChild> {
        std::iter::once(&self.gateway.process).chain(self.workers.iter().map(|w| &w.process)).chain(&self.dispatchers)
    }

    fn processes_mut(&mut self) -> impl Iterator<Item = &mut LoggedChild> {
        std::iter::once(&mut self.gateway.process)
            .chain(self.workers.iter_mut().map(|w| &mut w.process))
            .chain(&mut self.dispatchers)
    }

    /// Fails with its log tail if a process not stopped on purpose has exited.
    pub fn ensure_alive(&mut self) -> Result<()> {
        for p in self.processes_mut() {
            if let (false, Some(status)) = (p.stopped, p.exited()) {
                bail!("the {} process ended early ({status}); {}", p.name, p.tail(20));
            }
        }
        Ok(())
    }

    /// Waits until the gateway answers `/readyz` (MongoDB and RabbitMQ reachable); fails at
    /// once if a process died meanwhile, and at `by`.
    pub async fn wait_ready(&mut self, by: Instant) -> Result<()> {
        let client = ledgerflow_client::Client::new(&self.gateway.base);
        loop {
            self.ensure_alive()?;
            if client.ready().await {
                return Ok(());
            }
            ensure!(
                Instant::now() < by,
                "the gateway at {} was not ready in time; {}",
                self.gateway.base,
                self.gateway.process.tail(30)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every worker consumes every partition; see [`wait_for_workers`].
    pub async fn wait_for_workers(&mut self, by: Instant) -> Result<()> {
        let count = u32::try_from(self.workers.len()).context("too many workers")?;
        let connections = &self.settings.connections;
        wait_for_workers(&connections.amqp_uri, &connections.topology(), count, by).await
    }

    /// SIGTERM to every process still running, up to `grace` for them to finish what they
    /// took and exit; the rest are killed when dropped. Returns how each one ended, by name.
    pub async fn stop(mut self, grace: Duration) -> BTreeMap<String, String> {
        // Only those not yet reaped: a reaped child's pid may already belong to someone else.
        for p in self.processes_mut() {
            if p.exited().is_none() {
                p.stopped = true;
                let _ = p.signal("TERM");
            }
        }
        let by = Instant::now() + grace;
        let mut ended = BTreeMap::new();
        loop {
            for p in self.processes_mut() {
                if !ended.contains_key(&p.name)
                    && let Some(status) = p.exited()
                {
                    ended.insert(p.name.clone(), status.to_string());
                }
            }
            if ended.len() == self.processes().count() || Instant::now() >= by {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        for p in self.processes() {
            ended.entry(p.name.clone()).or_insert_with(|| format!("killed: still running {grace:?} after SIGTERM"));
        }
        ended
    }
}

/// Waits until at least `count` workers are on the roster of `topology`, which a worker joins
/// once it consumes every partition: how a harness knows its workers are up.
pub async fn wait_for_workers(amqp_uri: &str, topology: &Topology, count: u32, by: Instant) -> Result<()> {
    let broker = Publisher::new(amqp_uri, "ledgerflow-harness", topology.clone());
    let roster = topology.roster();
    let waited = async {
        loop {
            let consumers = broker.queue_state(&roster).await.map_or(0, |q| q.consumers);
            if consumers >= count {
                return Ok(());
            }
            ensure!(Instant::now() < by, "only {consumers} of {count} workers consume {roster}");
            tokio::time::sleep(POLL).await;
        }
    };
    let waited = waited.await;
    broker.close().await;
    waited
}

/// A loopback address nothing listens on right now. Another process may take it before the
/// caller binds it: [`Cluster::start_ready`] tries again then.
pub fn free_local_addr() -> Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    probe.local_addr().context("cannot find a free port")
}
