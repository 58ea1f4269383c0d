//! `ledgerflow`: one binary for every LedgerFlow process.
//!
//! `gateway` and `worker` are what production runs (scaled separately); `up` runs a gateway
//! and N workers in one process for a laptop; `admin` holds operator tasks.

mod admin;
mod bench;
mod reconcile;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ledgerflow_domain::{AccountStatus, Email, Password, Role};
use ledgerflow_gateway::auth::verify_password;
use ledgerflow_gateway::{
    AppState, DEFAULT_INSERT_LINGER, DEFAULT_LOGIN_MAX_FAILURES, DEFAULT_LOGIN_WINDOW, DEFAULT_REPUBLISH_AFTER,
    DEFAULT_REPUBLISH_INTERVAL, DEFAULT_SESSION_RECHECK, GatewayConfig, hash_password,
};
use ledgerflow_messaging::{DEFAULT_PARTITIONS, Publisher, Topology};
use ledgerflow_store::Store;
use ledgerflow_worker::{DEFAULT_BATCH_LINGER, WorkerConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// mimalloc (v2, without transparent huge pages) returns freed memory to the system; glibc's
/// allocator kept the gateway's argon2 buffers, so its RSS only grew with each burst of
/// sign-ups.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ledgerflow",
    version,
    about = "A double-entry ledger: HTTP gateway, queue workers and operator tools."
)]
#[command(
    after_help = "Examples:\n  ledgerflow up --dev --workers 2\n  ledgerflow gateway --http-addr 0.0.0.0:8080\n  ledgerflow worker --prefetch 64\n  ledgerflow admin create-system-user --email ops@example.com"
)]
struct Cli {
    #[command(flatten)]
    conn: Connections,
    /// Threads the process runs its tasks on; 0 means one per CPU core. One (the default)
    /// spends the least CPU per transfer: a gateway or worker waits on the database and the
    /// broker far more than it computes, and one thread avoids waking others for every message
    /// (crates/ledgerflow/BENCHMARKS.md, "One thread per process"). Scale out with processes;
    /// raise it for a gateway alone on a large machine.
    #[arg(long, global = true, env = "LEDGERFLOW_THREADS", default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP gateway.
    Gateway(GatewayArgs),
    /// Run a worker that consumes transfer commands.
    Worker(WorkerArgs),
    /// Run a gateway and N workers in one process (for a laptop).
    Up(UpArgs),
    /// Check every ledger invariant; exit 1 on any discrepancy.
    #[command(after_help = "Checks: debits equal credits per currency; every COMPLETED transaction has exactly\n\
one DEBIT and one CREDIT of its amount, others none; each account's entries are numbered\n\
1, 2, 3… with running balances that add up and an intact hash chain; no account but the\n\
funding account is negative; nothing is PENDING longer than --max-pending-age.\n\n\
Examples:\n  ledgerflow reconcile\n  ledgerflow reconcile --json --max-pending-age 15m")]
    Reconcile {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// PENDING transactions older than this count as stuck (e.g. 90s, 15m, 1h).
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        max_pending_age: Duration,
    },
    /// Operator tasks.
    #[command(subcommand)]
    Admin(Admin),
    /// Load-test the whole pipeline (or time balance reads) and print a summary (runs
    /// `ledgerflow-bench`; `ledgerflow bench --help` lists its options).
    Bench(bench::BenchArgs),
}

#[derive(Args, Clone)]
struct Connections {
    /// MongoDB connection string (a replica set: transactions need one).
    #[arg(
        long,
        global = true,
        env = "LEDGERFLOW_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
    )]
    mongodb_uri: String,
    /// MongoDB database name.
    #[arg(long, global = true, env = "LEDGERFLOW_MONGODB_DB", default_value = "ledgerflow")]
    mongodb_db: String,
    /// RabbitMQ connection string.
    #[arg(long, global = true, env = "LEDGERFLOW_AMQP_URI", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_uri: String,
    /// Prefix of every exchange and queue name.
    #[arg(long, global = true, env = "LEDGERFLOW_AMQP_PREFIX", default_value = "ledgerflow")]
    amqp_prefix: String,
    /// Partition queues the transfer commands are spread over, by sending account. Every
    /// gateway and worker of a deployment must use the same number; workers beyond it stand by.
    #[arg(long, global = true, env = "LEDGERFLOW_PARTITIONS", default_value_t = DEFAULT_PARTITIONS,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    partitions: u16,
}

impl Connections {
    fn topology(&self) -> Topology {
        Topology::new(&self.amqp_prefix).with_partitions(self.partitions)
    }
}

#[derive(Args, Clone)]
struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, env = "LEDGERFLOW_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// HMAC secret for JWTs (at least 32 bytes).
    #[arg(long, env = "LEDGERFLOW_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Email of the SYSTEM user to create (or update) at start.
    #[arg(long, env = "LEDGERFLOW_SYSTEM_EMAIL")]
    system_email: Option<String>,
    /// Password of that SYSTEM user.
    #[arg(long, env = "LEDGERFLOW_SYSTEM_PASSWORD", hide_env_values = true)]
    system_password: Option<String>,
    /// Mark the session cookie Secure (set false only for plain-HTTP development).
    #[arg(long, env = "LEDGERFLOW_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    cookie_secure: bool,
    /// Republish PENDING transfers older than this, when no command waits in the queues.
    #[arg(long, env = "LEDGERFLOW_REPUBLISH_AFTER", default_value_t = DEFAULT_REPUBLISH_AFTER.into())]
    republish_after: humantime::Duration,
    /// How often the republisher looks for them.
    #[arg(long, env = "LEDGERFLOW_REPUBLISH_INTERVAL", default_value_t = DEFAULT_REPUBLISH_INTERVAL.into())]
    republish_interval: humantime::Duration,
    /// Longest wait of a transfer's PENDING insert for those of others, under steady load
    /// (0s: never wait).
    #[arg(long, env = "LEDGERFLOW_INSERT_LINGER", default_value_t = DEFAULT_INSERT_LINGER.into())]
    insert_linger: humantime::Duration,
    /// Failed sign-ins for one email within --login-window after which it is refused (429)
    /// until that window ends.
    #[arg(long, env = "LEDGERFLOW_LOGIN_MAX_FAILURES", default_value_t = DEFAULT_LOGIN_MAX_FAILURES, value_parser = clap::value_parser!(u32).range(1..))]
    login_max_failures: u32,
    /// The window failed sign-ins are counted in, from the first of them.
    #[arg(long, env = "LEDGERFLOW_LOGIN_WINDOW", default_value_t = DEFAULT_LOGIN_WINDOW.into())]
    login_window: humantime::Duration,
    /// How long a user's session version is remembered: a session ended through another
    /// gateway (sign-out, password change) or by `admin sign-out` is honoured here at most
    /// this much longer. Each expiry costs one read per active user.
    #[arg(long, env = "LEDGERFLOW_SESSION_RECHECK", default_value_t = DEFAULT_SESSION_RECHECK.into())]
    session_recheck: humantime::Duration,
}

#[derive(Args, Clone)]
struct WorkerArgs {
    /// Commands taken from the queue at once by this worker (AMQP prefetch).
    #[arg(long, env = "LEDGERFLOW_WORKER_PREFETCH", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=4096))]
    prefetch: u16,
    /// Most commands committed together in one MongoDB transaction (1: no batching).
    #[arg(long, env = "LEDGERFLOW_WORKER_MAX_BATCH", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1000))]
    max_batch: u16,
    /// Longest wait of a batch for more commands, under steady load (0s: never wait).
    #[arg(long, env = "LEDGERFLOW_WORKER_BATCH_LINGER", default_value_t = DEFAULT_BATCH_LINGER.into())]
    batch_linger: humantime::Duration,
    /// Name shown in logs and on the broker connection.
    #[arg(long, env = "LEDGERFLOW_WORKER_NAME")]
    name: Option<String>,
    /// Tries before a command that keeps failing transiently (database down) is marked FAILED
    /// with PROCESSING_FAILED and dead-lettered.
    #[arg(long, env = "LEDGERFLOW_WORKER_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Serve Prometheus metrics at http://<addr>/metrics (e.g. 0.0.0.0:9090); off when unset.
    #[arg(long, env = "LEDGERFLOW_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Wait between those tries, spent in the retry queue (e.g. 500ms, 2s).
    #[arg(long, env = "LEDGERFLOW_WORKER_RETRY_DELAY", default_value = "2s", value_parser = humantime::parse_duration)]
    retry_delay: Duration,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    /// Number of workers to run.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Development mode: invent a JWT secret when none is set and allow non-Secure cookies.
    #[arg(long)]
    dev: bool,
}

#[derive(Subcommand)]
enum Dlq {
    /// Show dead-lettered commands (they stay in the queue).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send dead-lettered commands back to the transfers queue, with fresh attempts.
    Replay {
        /// At most this many.
        #[arg(long, default_value_t = 1_000)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum Accounts {
    /// List accounts with their balances.
    #[command(
        after_help = "Examples:\n  ledgerflow admin accounts list\n  ledgerflow admin accounts list --owner alice@example.com"
    )]
    List {
        /// Only this user's (user id or email).
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100))]
        limit: i64,
    },
    /// Suspend an account: it can neither send nor receive until reactivated.
    Suspend { account: String },
    /// Make a suspended account ACTIVE again (a closed one stays closed).
    Reactivate { account: String },
    /// Close an empty account for good: refused while it holds money.
    Close { account: String },
}

#[derive(Subcommand)]
enum Admin {
    /// Inspect or replay the dead-letter queue.
    #[command(subcommand)]
    Dlq(Dlq),
    /// List, suspend, reactivate and close accounts.
    #[command(subcommand)]
    Accounts(Accounts),
    /// Show a transaction with its ledger entries.
    Transaction {
        /// The transaction id.
        id: String,
    },
    /// End every session of a user: its tokens are refused from now on (by every gateway
    /// within seconds), say after one leaked. It signs in again for a new one.
    #[command(after_help = "Example:\n  ledgerflow admin sign-out --email ops@example.com")]
    SignOut {
        /// The user's email.
        #[arg(long)]
        email: String,
    },
    /// Create the SYSTEM user, or promote and re-password an existing one (which ends its
    /// sessions); with the password it already has, nothing changes.
    #[command(
        after_help = "Example:\n  LEDGERFLOW_SYSTEM_PASSWORD='a long secret' ledgerflow admin create-system-user --email ops@example.com"
    )]
    CreateSystemUser {
        /// The SYSTEM user's email.
        #[arg(long, env = "LEDGERFLOW_SYSTEM_EMAIL")]
        email: String,
        /// Its password (at least 8 characters); prefer the environment variable to the flag.
        #[arg(long, env = "LEDGERFLOW_SYSTEM_PASSWORD", hide_env_values = true)]
        password: String,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LEDGERFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if std::env::var("LEDGERFLOW_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancelled on SIGTERM or Ctrl-C: stop taking work, finish what is in flight, exit.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    t.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        info!("shutdown requested");
        t.cancel();
    });
    token
}

/// How long a one-shot command (`reconcile`, `admin`) waits for MongoDB before it fails: long
/// enough for a replica-set election, short enough that a scheduled reconcile reports an
/// outage instead of hanging. Services (`gateway`, `worker`, `up`) wait as long as it takes.
const ONE_SHOT_PATIENCE: Duration = Duration::from_secs(30);

async fn open_store(conn: &Connections, patience: Option<Duration>) -> Result<Store> {
    let store = Store::connect(&conn.mongodb_uri, &conn.mongodb_db).await.context("invalid MongoDB URI")?;
    // Indexes are the invariants' backstop: retry until MongoDB is reachable, or until the
    // patience of a one-shot command runs out.
    let started = std::time::Instant::now();
    let mut wait = Duration::from_millis(200);
    loop {
        match store.ensure_indexes().await {
            Ok(()) => return Ok(store),
            Err(e) if patience.is_some_and(|p| started.elapsed() >= p) => {
                return Err(e).with_context(|| format!("MongoDB unreachable for {:.1?}", started.elapsed()));
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?wait, "MongoDB not ready");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs a one-shot command against the store, then shuts its client down before the process
/// exits (see [`Store::shutdown`]), whether the command succeeded or not.
async fn with_store<T>(conn: &Connections, command: impl AsyncFnOnce(&Store) -> Result<T>) -> Result<T> {
    let store = open_store(conn, Some(ONE_SHOT_PATIENCE)).await?;
    let result = command(&store).await;
    store.shutdown().await;
    result
}

/// Every gateway runs this at start, so a SYSTEM user that already has this password is left
/// alone: re-keying it would end its sessions at every restart.
async fn ensure_system_user(store: &Store, email: &str, password: &str) -> Result<()> {
    let email: Email = email.parse().context("LEDGERFLOW_SYSTEM_EMAIL")?;
    if let Some(user) = store.find_user_by_email(&email).await?
        && user.role == Role::System
        && verify_password(password.to_owned(), Some(user.password_hash)).await.map_err(|e| anyhow::anyhow!("{e}"))?
    {
        info!(user_id = %user.id, email = %user.email, "SYSTEM user ready (unchanged)");
        return Ok(());
    }
    let password: Password = password.parse().context("LEDGERFLOW_SYSTEM_PASSWORD")?;
    let hash = hash_password(password).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let user = store.ensure_system_user(&email, hash).await?;
    info!(user_id = %user.id, email = %user.email, "SYSTEM user ready");
    Ok(())
}

async fn gateway_state(conn: &Connections, args: &GatewayArgs, secret: String, store: Store) -> Result<AppState> {
    if secret.len() < 32 {
        bail!("LEDGERFLOW_JWT_SECRET must be at least 32 bytes");
    }
    if let (Some(email), Some(password)) = (&args.system_email, &args.system_password) {
        ensure_system_user(&store, email, password).await?;
    }
    let config = gateway_config(args, secret);
    let publisher = Publisher::new(&conn.amqp_uri, "ledgerflow-gateway", conn.topology());
    if let Err(e) = publisher.ensure_connected().await {
        warn!(error = %e, "RabbitMQ not reachable yet; transfers answer 503 until it is");
    }
    Ok(AppState::new(store, publisher, config))
}

/// The gateway's settings from its command line and environment.
fn gateway_config(args: &GatewayArgs, secret: String) -> GatewayConfig {
    let mut config = GatewayConfig::new(secret);
    config.cookie_secure = args.cookie_secure;
    config.republish_after = args.republish_after.into();
    config.republish_interval = args.republish_interval.into();
    config.insert_linger = args.insert_linger.into();
    config.login_max_failures = args.login_max_failures;
    config.login_window = args.login_window.into();
    config.session_recheck = args.session_recheck.into();
    config
}

fn worker_config(conn: &Connections, args: &WorkerArgs, index: u16) -> WorkerConfig {
    let name = args.name.clone().unwrap_or_else(|| format!("ledgerflow-worker-{}-{index}", std::process::id()));
    let mut config = WorkerConfig::new(&conn.amqp_uri, conn.topology(), name);
    config.prefetch = args.prefetch;
    config.max_batch = usize::from(args.max_batch);
    config.batch_linger = args.batch_linger.into();
    config.max_attempts = args.max_attempts;
    config.retry_delay = args.retry_delay;
    config
}

fn main() -> ExitCode {
    enlarge_thread_stacks();
    init_tracing();
    let cli = Cli::parse();
    if let Command::Bench(args) = &cli.command {
        return bench::forward(&cli.conn, cli.threads, args);
    }
    match runtime(cli.threads).and_then(|rt| rt.block_on(run(cli))) {
        Ok(()) => ExitCode::SUCCESS,
        // The message and its causes on one line. Not `Debug`: with RUST_BACKTRACE set (as it
        // often is, for panics) that appends a stack trace to an operator's mistyped id.
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Stack size of the threads this process starts, unless `RUST_MIN_STACK` says otherwise.
const THREAD_STACK: &str = "67108864";

/// Gives every thread the process starts, lapin's I/O threads included, a 64 MiB stack
/// (reserved address space; only what is used becomes memory).
///
/// lapin parses a message's AMQP headers on its I/O thread, recursively: a header of arrays
/// nested 1,800 deep (9 KB) overflowed the default 2 MiB and aborted the whole process, and
/// as the message stayed queued, every restart after. An AMQP frame (at most 128 KiB, the
/// broker's default `frame_max`) holds at most about 26,000 levels, which parse in about
/// 30 MiB; with room to spare, the message reaches the worker like any other, whose own
/// checks then judge it. lapin spawns its threads itself, so the only handle is std's default
/// for threads spawned without a size, read once from `RUST_MIN_STACK` at the first spawn.
#[allow(unsafe_code)]
fn enlarge_thread_stacks() {
    if std::env::var_os("RUST_MIN_STACK").is_none() {
        // SAFETY: called first thing in `main`, before this process has started any thread,
        // so nothing can read the environment while it changes.
        unsafe { std::env::set_var("RUST_MIN_STACK", THREAD_STACK) };
    }
}

/// A single-threaded runtime for one thread, else a multi-threaded one (0: one per core).
fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            builder.worker_threads(threads);
        }
        builder
    };
    builder.enable_all().build().context("cannot start the async runtime")
}

async fn run(cli: Cli) -> Result<()> {
    let conn = cli.conn;
    match cli.command {
        Command::Gateway(args) => {
            let secret = args.jwt_secret.clone().context("LEDGERFLOW_JWT_SECRET (or --jwt-secret) is required")?;
            let store = open_store(&conn, None).await?;
            let state = gateway_state(&conn, &args, secret, store.clone()).await?;
            let listener = tokio::net::TcpListener::bind(args.http_addr).await.context("cannot listen")?;
            let served = ledgerflow_gateway::serve(listener, state, shutdown_on_signal()).await;
            store.shutdown().await;
            served?;
        }
        Command::Worker(args) => {
            let store = open_store(&conn, None).await?;
            let shutdown = shutdown_on_signal();
            if let Some(addr) = args.metrics_addr {
                ledgerflow_gateway::telemetry::prometheus();
                let listener = tokio::net::TcpListener::bind(addr).await.context("cannot listen for metrics")?;
                info!(%addr, "serving metrics");
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let app = ledgerflow_gateway::telemetry::metrics_router();
                    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
                });
            }
            ledgerflow_worker::run(store.clone(), worker_config(&conn, &args, 0), shutdown).await;
            store.shutdown().await;
        }
        Command::Up(mut up) => {
            let secret = match (up.gateway.jwt_secret.clone(), up.dev) {
                (Some(s), _) => s,
                (None, true) => {
                    let mut bytes = [0u8; 32];
                    rand::fill(&mut bytes);
                    warn!("==================================================================");
                    warn!("DEV MODE: no LEDGERFLOW_JWT_SECRET set, so a random one was made up.");
                    warn!("Tokens will stop working when this process exits. Never do this in production.");
                    warn!("==================================================================");
                    hex::encode(bytes)
                }
                (None, false) => bail!("LEDGERFLOW_JWT_SECRET is required (or pass --dev)"),
            };
            if up.dev {
                up.gateway.cookie_secure = false;
            }
            let store = open_store(&conn, None).await?;
            let state = gateway_state(&conn, &up.gateway, secret, store.clone()).await?;
            let listener = tokio::net::TcpListener::bind(up.gateway.http_addr).await.context("cannot listen")?;
            let shutdown = shutdown_on_signal();
            let mut tasks = JoinSet::new();
            for i in 0..up.workers {
                tasks.spawn(ledgerflow_worker::run(
                    store.clone(),
                    worker_config(&conn, &up.worker, i),
                    shutdown.clone(),
                ));
            }
            info!(workers = up.workers, addr = %up.gateway.http_addr, "LedgerFlow is up");
            let served = ledgerflow_gateway::serve(listener, state, shutdown.clone()).await;
            shutdown.cancel();
            while tasks.join_next().await.is_some() {}
            store.shutdown().await;
            served?;
        }
        // Forwarded in `main`, before any runtime starts.
        Command::Bench(_) => unreachable!("ledgerflow bench is forwarded before the runtime starts"),
        Command::Reconcile { json, max_pending_age } => {
            if !with_store(&conn, async |store| reconcile::run(store, max_pending_age, json).await).await? {
                std::process::exit(1);
            }
        }
        Command::Admin(Admin::Accounts(Accounts::List { owner, limit })) => {
            with_store(&conn, async |store| admin::list_accounts(store, owner.as_deref(), limit).await).await?;
        }
        Command::Admin(Admin::Accounts(Accounts::Suspend { account })) => {
            with_store(&conn, async |store| admin::set_status(store, &account, AccountStatus::Suspended).await).await?;
        }
        Command::Admin(Admin::Accounts(Accounts::Reactivate { account })) => {
            with_store(&conn, async |store| admin::set_status(store, &account, AccountStatus::Active).await).await?;
        }
        Command::Admin(Admin::Accounts(Accounts::Close { account })) => {
            with_store(&conn, async |store| admin::set_status(store, &account, AccountStatus::Closed).await).await?;
        }
        Command::Admin(Admin::SignOut { email }) => {
            with_store(&conn, async |store| admin::sign_out(store, &email).await).await?;
        }
        Command::Admin(Admin::Transaction { id }) => {
            with_store(&conn, async |store| admin::show_transaction(store, &id).await).await?;
        }
        Command::Admin(Admin::Dlq(Dlq::List { limit })) => {
            admin::list_dead_letters(&conn.amqp_uri, &conn.topology(), limit).await?;
        }
        Command::Admin(Admin::Dlq(Dlq::Replay { limit })) => {
            admin::replay_dead_letters(&conn.amqp_uri, &conn.topology(), limit).await?;
        }
        Command::Admin(Admin::CreateSystemUser { email, password }) => {
            with_store(&conn, async |store| ensure_system_user(store, &email, &password).await).await?;
            println!("SYSTEM user {email} is ready");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use tokio::runtime::RuntimeFlavor;

    use super::{Cli, Command, DEFAULT_SESSION_RECHECK, gateway_config, runtime};

    #[test]
    fn the_gateway_takes_its_settings_from_the_command_line() {
        let config = |extra: &[&str]| {
            let cli = Cli::try_parse_from([&["ledgerflow", "gateway"], extra].concat()).expect("arguments parse");
            let Command::Gateway(args) = cli.command else { panic!("a gateway command") };
            gateway_config(&args, "s".repeat(32))
        };
        assert_eq!(config(&[]).session_recheck, DEFAULT_SESSION_RECHECK);
        let set = config(&["--session-recheck", "1s", "--login-max-failures", "3", "--login-window", "2m"]);
        assert_eq!(set.session_recheck, Duration::from_secs(1));
        assert_eq!((set.login_max_failures, set.login_window), (3, Duration::from_secs(120)));
    }

    #[test]
    fn threads_choose_the_runtime() {
        let one = runtime(1).expect("a runtime");
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let three = runtime(3).expect("a runtime");
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
        let per_core = runtime(0).expect("a runtime");
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(per_core.metrics().num_workers(), cores);
    }
}
