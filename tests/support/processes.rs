//! Real `ledgerflow` processes for fault tests, and the faults themselves.
//!
//! [`Cluster`] runs a `ledgerflow gateway` process and `ledgerflow worker` processes on a
//! fresh database and queue prefix, talks to them over HTTP, and inspects MongoDB and
//! RabbitMQ directly. Unlike [`crate::TestApp`] it keeps no long-lived broker connection
//! (each broker operation opens its own, so RabbitMQ can be restarted under it) and runs no
//! gateway in the test process (so the gateway *process* is the only republisher).
//!
//! Every process writes JSON logs to a file under `$TMPDIR/ledgerflow-fault-logs/`; if a test
//! fails, the tail of each log is printed and the database and queues are kept for inspection.
//! Processes are killed when dropped. [`Services`] stops and starts the shared RabbitMQ and
//! mongod, and starts again whatever it stopped when dropped, even if the test panicked.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledgerflow_messaging::lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use ledgerflow_messaging::lapin::{BasicProperties, Connection};
use ledgerflow_messaging::{Topology, connect};
use ledgerflow_store::Store;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use ledgerflow::Settings;
pub use ledgerflow_testkit::{LoggedChild, log_tail};

use crate::{
    Client, SYSTEM_EMAIL, SYSTEM_PASSWORD, Session, amqp_uri, ledgerflow_bin, ledgerflow_command, mongodb_uri,
};

/// How long a gateway process waits before republishing a transfer whose publish was not
/// confirmed, and how often it looks.
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(3);
pub const REPUBLISH_INTERVAL: Duration = Duration::from_millis(500);
/// Upper bound for a process to start, stop, or for a service command to finish.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(60);
/// The HTTP client's timeout: a request that takes longer is a hang, not a slow answer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// The repository root (for `scripts/services.sh`).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("ledgerflow-fault-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command to completion, killed after `limit` (via coreutils `timeout`). Returns its
/// standard output, or a description of how it failed.
pub fn run_bounded(program: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["--kill-after=5", &format!("{}", limit.as_secs().max(1)), program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} did not run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// [`run_bounded`] off the async runtime's threads.
pub async fn run_bounded_async(program: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let program = program.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bounded(&program, &args, limit)
    })
    .await
    .unwrap()
}

// ------------------------------------------------------------------------------ services

/// Stops and starts the shared services. Dropping it starts again whatever it ever stopped
/// (`rabbitmqctl start_app` and `scripts/services.sh up` are idempotent), so the services
/// are left running even when an assertion fails mid-outage.
#[derive(Default)]
pub struct Services {
    touched_rabbitmq: bool,
    touched_mongod: bool,
    /// The command line of the mongod this test stopped, to start that very one again (it
    /// may have been started from another checkout, with its own data directory).
    mongod_cmdline: Option<Vec<String>>,
}

/// The running mongod on the test port, as (pid, command line), found through /proc.
fn running_mongod() -> Option<(u32, Vec<String>)> {
    let port = std::env::var("LEDGERFLOW_MONGO_PORT").unwrap_or_else(|_| "27017".into());
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_mongod = args.first().is_some_and(|a| a.ends_with("/mongod") || a == "mongod");
        if is_mongod && args.windows(2).any(|w| w[0] == "--port" && w[1] == port) {
            return Some((pid, args));
        }
    }
    None
}

/// Starts mongod again with the command line it had (it forks into the background).
fn restart_mongod(cmdline: &[String]) -> Result<(), String> {
    let (program, args) = cmdline.split_first().ok_or("empty mongod command line")?;
    let status = std::process::Command::new(program).args(args).status().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("mongod exited with {status}")) }
}

impl Services {
    /// `rabbitmqctl stop_app`: every AMQP connection drops and the port stops accepting.
    pub async fn stop_rabbitmq(&mut self) {
        self.touched_rabbitmq = true;
        run_bounded_async("rabbitmqctl", &["stop_app"], PROCESS_DEADLINE).await.unwrap();
    }

    /// `rabbitmqctl start_app` and `await_startup`.
    pub async fn start_rabbitmq(&mut self) {
        run_bounded_async("rabbitmqctl", &["start_app"], PROCESS_DEADLINE).await.unwrap();
        run_bounded_async("rabbitmqctl", &["await_startup"], PROCESS_DEADLINE).await.unwrap();
    }

    /// A clean shutdown (SIGTERM) of the running mongod, whichever checkout started it.
    pub async fn stop_mongod(&mut self) {
        let (pid, cmdline) = running_mongod().expect("a mongod runs on the test port");
        self.touched_mongod = true;
        self.mongod_cmdline = Some(cmdline);
        run_bounded_async("kill", &["-TERM", &pid.to_string()], PROCESS_DEADLINE).await.unwrap();
        let start = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(start.elapsed() < PROCESS_DEADLINE, "mongod did not stop");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The same mongod again, on the same data; `scripts/services.sh up` then waits for
    /// PRIMARY and reapplies its settings.
    pub async fn start_mongod(&mut self) {
        if let (None, Some(cmdline)) = (running_mongod(), &self.mongod_cmdline) {
            restart_mongod(cmdline).unwrap();
        }
        let script = repo_root().join("scripts/services.sh");
        run_bounded_async(script.to_str().unwrap(), &["up"], PROCESS_DEADLINE).await.unwrap();
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if self.touched_rabbitmq {
            for args in [&["start_app"][..], &["await_startup"][..]] {
                if let Err(e) = run_bounded("rabbitmqctl", args, PROCESS_DEADLINE) {
                    eprintln!("fault test cleanup: {e}");
                }
            }
        }
        if self.touched_mongod {
            let restarted = match (running_mongod(), &self.mongod_cmdline) {
                (None, Some(cmdline)) => restart_mongod(cmdline),
                _ => Ok(()),
            };
            if let Err(e) = restarted {
                eprintln!("fault test cleanup: {e}");
            }
            let script = repo_root().join("scripts/services.sh");
            if let Err(e) = run_bounded(script.to_str().unwrap(), &["up"], PROCESS_DEADLINE) {
                eprintln!("fault test cleanup: {e}");
            }
        }
    }
}

/// Consumer tags on a queue, from `rabbitmqctl list_consumers` (a worker's tag starts with
/// its name).
pub async fn consumer_tags(queue: &str) -> Vec<String> {
    let Ok(out) =
        run_bounded_async("rabbitmqctl", &["list_consumers", "queue_name", "consumer_tag", "-q"], PROCESS_DEADLINE)
            .await
    else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(q, _)| *q == queue)
        .map(|(_, tag)| tag.trim().to_owned())
        .collect()
}

// ------------------------------------------------------------------------------ processes

/// SIGTERM, then the exit status, which must come within [`PROCESS_DEADLINE`] (the test fails
/// with the process's log tail otherwise).
pub async fn stop(process: &mut LoggedChild) -> ExitStatus {
    match process.terminate(PROCESS_DEADLINE).await {
        Ok(Some(status)) => status,
        Ok(None) => {
            panic!("{} did not exit within {PROCESS_DEADLINE:?} of SIGTERM\n{}", process.name, process.tail(30))
        }
        Err(e) => panic!("cannot stop {}: {e}", process.name),
    }
}

/// What every process of one cluster shares: its settings (database, queue prefix…) and log
/// names.
#[derive(Clone)]
pub struct ProcessEnv {
    pub settings: Settings,
    pub label: String,
}

impl ProcessEnv {
    /// A fault test's settings: [`crate::test_settings`], with retries 1 s apart and enough
    /// of them that the outages these tests cause (a few seconds) never exhaust them (a
    /// transfer must complete, not fail PROCESSING_FAILED), and a republisher that waits 3 s.
    fn new(label: &str) -> Self {
        let mut settings = crate::test_settings("fault");
        let gateway = settings.gateway.as_mut().unwrap();
        gateway.republish_after = REPUBLISH_AFTER.into();
        gateway.republish_interval = REPUBLISH_INTERVAL.into();
        settings.worker.retry_delay = Duration::from_secs(1).into();
        settings.worker.max_attempts = 10;
        Self { settings, label: label.into() }
    }

    /// The cluster's database.
    pub fn db(&self) -> &str {
        &self.settings.connections.mongodb_db
    }

    /// The cluster's queue-name prefix.
    pub fn prefix(&self) -> &str {
        &self.settings.connections.amqp_prefix
    }

    /// `ledgerflow <subcommand>` with `settings` as its environment, logging JSON to a file
    /// of its own.
    fn command(&self, settings: &Settings, subcommand: &str, name: &str) -> (Command, PathBuf) {
        let bin = ledgerflow_bin();
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --bin ledgerflow` (scripts/test.sh does)",
            bin.display()
        );
        let log = log_dir().join(format!("{}-{}-{name}.log", self.label, &self.prefix()[self.prefix().len() - 8..]));
        let mut cmd = ledgerflow_command(settings);
        cmd.arg(subcommand)
            .env("LEDGERFLOW_LOG", std::env::var("LEDGERFLOW_TEST_PROCESS_LOG").unwrap_or_else(|_| "info".into()))
            .env("LEDGERFLOW_LOG_FORMAT", "json");
        (cmd, log)
    }
}

/// A `ledgerflow worker` process.
pub struct WorkerProcess {
    pub process: LoggedChild,
}

impl WorkerProcess {
    /// Starts a worker; `name` is also its broker connection name (suffixed by the prefix so
    /// it is unique across tests).
    pub fn spawn(env: &ProcessEnv, name: &str, prefetch: u16) -> Self {
        let mut settings = env.settings.worker_only();
        settings.worker.name = Some(format!("{name}-{}", env.prefix()));
        settings.worker.prefetch = prefetch;
        let (cmd, log) = env.command(&settings, "worker", name);
        Self { process: LoggedChild::spawn(cmd, name, &log).unwrap() }
    }

    /// Commands this worker sent to the retry queue after a transient failure, from its log.
    pub fn retried(&self) -> usize {
        self.process.log_events().iter().filter(|e| e["fields"]["message"] == "sent to the retry queue").count()
    }

    /// Commands the broker redelivered to this worker (after another worker or connection
    /// failed to settle them): distinct message ids seen with the AMQP `redelivered` flag
    /// in its JSON log. A redelivered command that then waits in the retry queue comes back
    /// as a fresh message, so counting settled deliveries would miss it.
    pub fn redelivered(&self) -> HashSet<String> {
        self.process
            .log_events()
            .iter()
            .filter(|e| e["span"]["name"] == "command" && e["span"]["redelivered"] == true)
            .filter_map(|e| e["span"]["message_id"].as_str().filter(|id| !id.is_empty()).map(Into::into))
            .collect()
    }
}

/// A `ledgerflow gateway` process listening on a free loopback port.
pub struct GatewayProcess {
    pub process: LoggedChild,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl GatewayProcess {
    /// Starts a gateway and waits until `/healthz` answers; `amqp_uri` overrides the broker
    /// address (e.g. an [`AmqpProxy`]).
    pub async fn spawn(env: &ProcessEnv, name: &str, amqp_uri: Option<&str>) -> Self {
        // The port is probed free and then handed over; if another process takes it in
        // between, the gateway exits ("cannot listen") and we try another.
        let mut last_failure = String::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut settings = env.settings.gateway_only();
            settings.gateway.as_mut().unwrap().http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if let Some(uri) = amqp_uri {
                settings.connections.amqp_uri = uri.to_owned();
            }
            let (cmd, log) = env.command(&settings, "gateway", name);
            let mut gateway = Self {
                process: LoggedChild::spawn(cmd, name, &log).unwrap(),
                base: format!("http://127.0.0.1:{port}"),
            };
            let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
            let start = Instant::now();
            loop {
                if let Some(status) = gateway.process.exited() {
                    last_failure = format!("gateway exited at start ({status})\n{}", gateway.process.tail(20));
                    break;
                }
                if http.get(format!("{}/healthz", gateway.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                    return gateway;
                }
                assert!(
                    start.elapsed() < PROCESS_DEADLINE,
                    "gateway did not answer /healthz within {PROCESS_DEADLINE:?}\n{}",
                    gateway.process.tail(30)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("could not start a gateway: {last_failure}");
    }

    /// Transaction ids its republisher sent, from its JSON log.
    pub fn republished(&self) -> HashSet<String> {
        self.process
            .log_events()
            .iter()
            .filter(|e| e["fields"]["message"] == "republished unconfirmed transfer")
            .filter_map(|e| {
                e["fields"]["transaction_id"].as_str().or_else(|| e["span"]["transaction_id"].as_str()).map(Into::into)
            })
            .collect()
    }
}

/// A TCP proxy between one process and RabbitMQ, to fail its broker connections the way a
/// network fault would. [`AmqpProxy::cut`] drops every connection through it at once: both
/// sides see it die mid-stream, and publishes in flight lose their confirms. With
/// [`AmqpProxy::hold_replies`] first, nothing flows back from the broker until the cut, so
/// every publish made meanwhile reaches the broker and only its confirm is lost. New
/// connections go through again after a cut (and its blackout, if any).
pub struct AmqpProxy {
    /// `amqp_uri()` pointed at the proxy.
    pub uri: String,
    current: Arc<Mutex<CancellationToken>>,
    /// New connections are dropped at once until then.
    blackout_until: Arc<Mutex<Instant>>,
    hold: tokio::sync::watch::Sender<bool>,
    live: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl AmqpProxy {
    pub async fn start() -> Self {
        let mut uri = reqwest::Url::parse(&amqp_uri()).unwrap();
        let upstream = format!("{}:{}", uri.host_str().unwrap(), uri.port().unwrap_or(5672));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        uri.set_host(Some("127.0.0.1")).unwrap();
        uri.set_port(Some(listener.local_addr().unwrap().port())).unwrap();
        let current = Arc::new(Mutex::new(CancellationToken::new()));
        let blackout_until = Arc::new(Mutex::new(Instant::now()));
        let (hold, held) = tokio::sync::watch::channel(false);
        let live = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let (current, blackout_until, live) =
                (Arc::clone(&current), Arc::clone(&blackout_until), Arc::clone(&live));
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if Instant::now() < *blackout_until.lock().unwrap() {
                        continue; // dropped: the connection attempt fails
                    }
                    let cut = current.lock().unwrap().clone();
                    let (live, upstream, held) = (Arc::clone(&live), upstream.clone(), held.clone());
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                        live.fetch_add(1, Ordering::SeqCst);
                        tokio::select! {
                            () = cut.cancelled() => {}
                            () = forward(client, server, held, &cut) => {}
                        }
                        live.fetch_sub(1, Ordering::SeqCst);
                        // Dropping both sockets closes them.
                    });
                }
            }
        });
        Self { uri: uri.to_string(), current, blackout_until, hold, live, accept }
    }

    /// From now until the next cut, nothing flows back from the broker (confirms included).
    pub fn hold_replies(&self) {
        self.hold.send_replace(true);
    }

    /// Drops every connection open through the proxy, and for `blackout` also every new
    /// one; returns how many were open.
    pub fn cut(&self, blackout: Duration) -> usize {
        *self.blackout_until.lock().unwrap() = Instant::now() + blackout;
        let live = self.live.load(Ordering::SeqCst);
        std::mem::take(&mut *self.current.lock().unwrap()).cancel();
        self.hold.send_replace(false);
        live
    }
}

/// Copies both ways until either side closes; broker-to-client bytes wait while `held`.
async fn forward(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mut held: tokio::sync::watch::Receiver<bool>,
    cut: &CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::io::copy(&mut client_read, &mut server_write);
    let down = async {
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            let Ok(n @ 1..) = server_read.read(&mut buf).await else { return };
            // Held bytes are never delivered: the cut that ends the hold also ends this.
            while *held.borrow_and_update() {
                if held.changed().await.is_err() {
                    return;
                }
            }
            if cut.is_cancelled() || client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        () = down => {}
    }
}

impl Drop for AmqpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.current.lock().unwrap().cancel();
    }
}

// ------------------------------------------------------------------------------ cluster

/// A gateway process and worker processes on their own database and queues, plus the
/// test's direct handles on MongoDB and RabbitMQ.
pub struct Cluster {
    pub env: ProcessEnv,
    pub store: Store,
    /// The same database through the driver, for counts the store does not offer.
    pub raw: mongodb::Database,
    pub topology: Topology,
    pub client: Client,
    pub gateway: GatewayProcess,
    pub workers: Vec<WorkerProcess>,
    /// The proxy the gateway reaches RabbitMQ through, if started with one.
    pub proxy: Option<AmqpProxy>,
    torn_down: bool,
}

impl std::ops::Deref for Cluster {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Cluster {
    /// Starts a gateway process and `workers` worker processes; `label` names the test in
    /// log file names.
    pub async fn start(label: &str, workers: usize) -> Self {
        Self::start_with(label, workers, None).await
    }

    /// Like [`Cluster::start`], with the gateway reaching RabbitMQ through an [`AmqpProxy`].
    pub async fn start_behind_proxy(label: &str, workers: usize) -> Self {
        Self::start_with(label, workers, Some(AmqpProxy::start().await)).await
    }

    async fn start_with(label: &str, workers: usize, proxy: Option<AmqpProxy>) -> Self {
        let env = ProcessEnv::new(label);
        let store = Store::connect(&mongodb_uri(), env.db()).await.unwrap();
        let raw = mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap().database(env.db());
        let topology = env.settings.connections.topology();
        let gateway = GatewayProcess::spawn(&env, "gateway", proxy.as_ref().map(|p| p.uri.as_str())).await;
        let client = Client::new(gateway.base.clone(), HTTP_TIMEOUT, Some(gateway.process.log.clone()));
        let mut cluster =
            Self { env, store, raw, topology, client, gateway, workers: Vec::new(), proxy, torn_down: false };
        for i in 0..workers {
            cluster.spawn_worker(&format!("worker-{i}"), 16);
        }
        cluster.client.system = cluster.login(SYSTEM_EMAIL, SYSTEM_PASSWORD).await;
        cluster
    }

    /// Starts one more worker process; returns its index in `workers`.
    pub fn spawn_worker(&mut self, name: &str, prefetch: u16) -> usize {
        self.workers.push(WorkerProcess::spawn(&self.env, name, prefetch));
        self.workers.len() - 1
    }

    /// Commands the broker redelivered, over all workers (see [`WorkerProcess::redelivered`]).
    pub fn redelivered(&self) -> usize {
        self.workers.iter().flat_map(|w| w.redelivered()).collect::<HashSet<_>>().len()
    }

    /// MongoDB transactions open but idle on the server, as `(client, seconds open)`: in
    /// these tests, what a killed worker left behind (a live worker's last milliseconds).
    pub async fn idle_transactions(&self) -> Vec<(String, i64)> {
        let pipeline = [
            mongodb::bson::doc! { "$currentOp": { "allUsers": true, "idleSessions": true } },
            mongodb::bson::doc! { "$match": { "active": false, "transaction": { "$exists": true } } },
        ];
        let Ok(mut cursor) = self.raw.client().database("admin").aggregate(pipeline).await else { return Vec::new() };
        let mut out = Vec::new();
        while let Some(Ok(op)) = futures::StreamExt::next(&mut cursor).await {
            let client = op.get_str("client").unwrap_or("?").to_owned();
            let open = op.get_document("transaction").ok().and_then(|t| t.get_i64("timeOpenMicros").ok()).unwrap_or(0);
            out.push((client, open / 1_000_000));
        }
        out
    }

    /// Commands the workers sent to the retry queue, summed over their logs.
    pub fn retried(&self) -> usize {
        self.workers.iter().map(WorkerProcess::retried).sum()
    }

    /// Asserts that every process still runs and none logged a panic.
    pub fn assert_processes_alive(&mut self) {
        let mut all: Vec<&mut LoggedChild> = self.workers.iter_mut().map(|w| &mut w.process).collect();
        all.push(&mut self.gateway.process);
        for p in all.into_iter().filter(|p| !p.stopped) {
            if let Some(status) = p.exited() {
                panic!("{} exited ({status})\n{}", p.name, p.tail(40));
            }
            assert!(!p.panicked(), "{} logged a panic\n{}", p.name, p.tail(40));
        }
    }

    // ---------------------------------------------------------------- HTTP

    /// Registers a fresh user and opens one USD account for it.
    pub async fn user_with_account(&self) -> (Session, String) {
        let user = self.register().await;
        let account = self.open_account(&user).await;
        (user, account)
    }

    // ---------------------------------------------------------------- MongoDB

    /// Waits until every transaction in `ids` is terminal, reading MongoDB directly and
    /// riding out database errors until `limit`. Returns the records, in `ids` order.
    pub async fn wait_terminal(&self, ids: &[String], limit: Duration) -> Vec<ledgerflow_store::TransactionRecord> {
        let start = Instant::now();
        let mut done: Vec<Option<ledgerflow_store::TransactionRecord>> = vec![None; ids.len()];
        loop {
            for (i, id) in ids.iter().enumerate() {
                if done[i].is_some() {
                    continue;
                }
                match self.store.find_transaction(id.parse().unwrap()).await {
                    Ok(Some(t)) if t.status.is_terminal() => done[i] = Some(t),
                    Ok(_) | Err(_) => {}
                }
            }
            let pending: Vec<&String> = ids.iter().zip(&done).filter(|(_, d)| d.is_none()).map(|(id, _)| id).collect();
            if pending.is_empty() {
                return done.into_iter().map(Option::unwrap).collect();
            }
            if start.elapsed() > limit {
                let workers: Vec<String> = self.workers.iter().map(|w| w.process.tail(15)).collect();
                let idle = self.idle_transactions().await;
                panic!(
                    "{} of {} transactions still not terminal after {limit:?}, e.g. {:?}\n\
                     idle MongoDB transactions open on the server (client, seconds): {idle:?}\n{}\n{}",
                    pending.len(),
                    ids.len(),
                    &pending[..pending.len().min(5)],
                    self.gateway.process.tail(15),
                    workers.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many transactions are terminal, or `None` if MongoDB does not answer.
    pub async fn count_terminal(&self) -> Option<u64> {
        let filter = mongodb::bson::doc! { "status": { "$in": ["COMPLETED", "FAILED"] } };
        self.raw.collection::<mongodb::bson::Document>("transactions").count_documents(filter).await.ok()
    }

    /// `ledgerflow reconcile --json <extra>` on this cluster's database: exit code and report.
    pub async fn reconcile(&self, extra: &[&str]) -> (i32, Value) {
        let mut cmd = tokio::process::Command::from(ledgerflow_command(&self.env.settings.one_shot()));
        cmd.args(["reconcile", "--json"]).args(extra).kill_on_drop(true);
        let out = tokio::time::timeout(PROCESS_DEADLINE, cmd.output())
            .await
            .expect("reconcile finishes in time")
            .expect("ledgerflow runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("reconcile printed no JSON ({e}): {stdout}{}", String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code().unwrap_or(-1), report)
    }

    // ---------------------------------------------------------------- RabbitMQ

    /// A fresh connection to the broker (closed by the caller or on drop).
    pub async fn amqp(&self) -> Connection {
        connect(&amqp_uri(), &format!("fault-test-harness-{}", self.env.prefix())).await.unwrap()
    }

    /// Publishes raw bodies to the transfers exchange as an upstream system would, each
    /// persistent and confirmed; `routing_key` is the sending account by convention.
    pub async fn publish_raw(&self, messages: &[(String, Vec<u8>)]) {
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let mut confirms = Vec::new();
        for (routing_key, body) in messages {
            let confirm = ch
                .basic_publish(
                    self.topology.transfers().as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack(), "the broker refused a raw publish");
        }
        let _ = conn.close(200, "done".into()).await;
    }

    /// Commands ready in the partition queues now (passive declares: live, unlike `rabbitmqctl
    /// list_queues`, whose counters are refreshed only every few seconds).
    pub async fn ready_commands(&self) -> u32 {
        let conn = self.amqp().await;
        let ready = crate::ready_commands(&conn, &self.topology).await;
        let _ = conn.close(200, "done".into()).await;
        ready
    }

    /// Takes every message off `queue` (acking them): keeps polling until `enough` says the
    /// collected bodies suffice and the queue is empty, or `limit` passes.
    pub async fn drain(&self, queue: &str, limit: Duration, enough: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let start = Instant::now();
        let mut out = Vec::new();
        loop {
            match ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
                Some(msg) => out.push(msg.delivery.data.clone()),
                None if enough(&out) || start.elapsed() > limit => break,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let _ = conn.close(200, "done".into()).await;
        out
    }

    /// Stops every process (workers gracefully, so they finish what they took) and deletes the
    /// test's database and queues. Not called when a test fails: then they stay for
    /// inspection (see the message printed on drop).
    pub async fn teardown(mut self) {
        for w in &mut self.workers {
            if w.process.exited().is_none() {
                stop(&mut w.process).await;
            }
        }
        if self.gateway.process.exited().is_none() {
            stop(&mut self.gateway.process).await;
        }
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let _ = self.topology.delete(&ch).await;
        let _ = conn.close(200, "teardown".into()).await;
        // A killed worker's open MongoDB transactions hold locks until mongod expires them
        // (transactionLifetimeLimitSeconds), and dropDatabase waits for them: give up then.
        if tokio::time::timeout(Duration::from_secs(10), self.store.drop_database()).await.is_err() {
            println!("note: database {} not dropped within 10 s (locks held by orphaned transactions?)", self.env.db());
        }
        if std::env::var_os("LEDGERFLOW_FAULT_KEEP_LOGS").is_none() {
            for p in self.workers.iter().map(|w| &w.process).chain([&self.gateway.process]) {
                let _ = std::fs::remove_file(&p.log);
            }
        }
        self.torn_down = true;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.torn_down && std::thread::panicking() {
            eprintln!(
                "fault test failed: database {} and queues {}.* are kept; process logs:",
                self.env.db(),
                self.env.prefix()
            );
            for p in self.workers.iter().map(|w| &w.process).chain([&self.gateway.process]) {
                eprintln!("{}", p.tail(20));
            }
        }
    }
}
