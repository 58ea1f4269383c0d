//! One way to assemble LedgerFlow: [`App::build`] from [`Settings`], then
//! [`App::run_until_stopped`]. `ledgerflow gateway`, `worker` and `up` differ only in the
//! settings they pass, and the tests build their systems the same way with the real settings
//! changed (a fresh database, port 0), so what is tested is wired as what runs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ledgerflow_domain::{Email, Password, Role};
use ledgerflow_gateway::{AppState, hash_password, verify_password};
use ledgerflow_messaging::Publisher;
use ledgerflow_store::Store;
use ledgerflow_worker::WorkerConfig;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::{Connections, GatewaySettings, Settings};

/// The shortest JWT secret accepted: an HMAC key shorter than its hash's output weakens it.
const MIN_SECRET_BYTES: usize = 32;

/// A built system, bound to its ports and connected (or connecting) to its services.
pub struct App {
    store: Store,
    gateway: Option<(TcpListener, AppState)>,
    workers: Vec<WorkerConfig>,
    /// A worker process's own `/metrics` listener (a gateway serves them beside its API).
    metrics: Option<TcpListener>,
}

impl App {
    /// Opens the store (waiting for MongoDB as long as it takes), prepares the SYSTEM user,
    /// the publisher and the HTTP listener, and the workers' configurations.
    pub async fn build(settings: &Settings) -> Result<App> {
        let store = open_store(&settings.connections, None).await?;
        let gateway = match &settings.gateway {
            Some(gateway) => Some(build_gateway(&settings.connections, gateway, store.clone()).await?),
            None => None,
        };
        let worker = match (&settings.worker, settings.workers) {
            (_, 0) => None,
            (Some(worker), _) => Some(worker),
            (None, _) => bail!("settings for {} workers without worker settings", settings.workers),
        };
        let metrics = match (worker.and_then(|w| w.metrics_addr), &gateway) {
            (Some(addr), None) => Some(TcpListener::bind(addr).await.context("cannot listen for metrics")?),
            _ => None,
        };
        let workers = match worker {
            Some(worker) => (0..settings.workers).map(|i| worker.config(&settings.connections, i)).collect(),
            None => Vec::new(),
        };
        Ok(App { store, gateway, workers, metrics })
    }

    /// Where the gateway listens (the real port when the settings asked for port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Where a worker process serves its metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs until `shutdown` is cancelled: stops taking work, finishes what is in flight
    /// (the gateway its open requests, each worker its deliveries), then closes the store.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        if let Some(listener) = self.metrics {
            // Installed before the workers start, so that what they record at once (the
            // counters they register at zero) does not go to no recorder.
            ledgerflow_telemetry::prometheus();
            info!(addr = ?listener.local_addr(), "serving metrics");
            tokio::spawn(ledgerflow_telemetry::serve_metrics(listener, shutdown.clone().cancelled_owned()));
        }
        let mut tasks = JoinSet::new();
        for config in self.workers {
            tasks.spawn(ledgerflow_worker::run(self.store.clone(), config, shutdown.clone()));
        }
        let served = match self.gateway {
            Some((listener, state)) => {
                info!(workers = tasks.len(), "LedgerFlow is up");
                let served = ledgerflow_gateway::serve(listener, state, shutdown.clone()).await;
                shutdown.cancel();
                served.context("the gateway failed")
            }
            None => {
                shutdown.cancelled().await;
                Ok(())
            }
        };
        while tasks.join_next().await.is_some() {}
        self.store.shutdown().await;
        served
    }
}

async fn build_gateway(
    connections: &Connections,
    settings: &GatewaySettings,
    store: Store,
) -> Result<(TcpListener, AppState)> {
    let secret = settings.jwt_secret.clone().context("LEDGERFLOW_JWT_SECRET (or --jwt-secret) is required")?;
    if secret.expose_secret().len() < MIN_SECRET_BYTES {
        bail!("LEDGERFLOW_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes");
    }
    settings
        .client_addresses()
        .map_err(|e| anyhow!("LEDGERFLOW_TRUSTED_PROXY_HEADER, LEDGERFLOW_TRUSTED_PROXIES: {e}"))?;
    if let (Some(email), Some(password)) = (&settings.system_email, &settings.system_password) {
        ensure_system_user(&store, email, password).await?;
    }
    let publisher = Publisher::new(&connections.amqp_uri, "ledgerflow-gateway", connections.topology());
    if let Err(e) = publisher.ensure_connected().await {
        warn!(error = %e, "RabbitMQ not reachable yet; transfers answer 503 until it is");
    }
    let state = AppState::new(store, publisher, settings.config(secret));
    let listener = TcpListener::bind(settings.http_addr).await.context("cannot listen")?;
    Ok((listener, state))
}

/// Every gateway runs this at start, so a SYSTEM user that already has this password is left
/// alone: re-keying it would end its sessions at every restart.
pub async fn ensure_system_user(store: &Store, email: &str, password: &SecretString) -> Result<()> {
    let email: Email = email.parse().context("LEDGERFLOW_SYSTEM_EMAIL")?;
    let password = password.expose_secret();
    if let Some(user) = store.find_user_by_email(&email).await?
        && user.role == Role::System
        && verify_password(password.to_owned(), Some(user.password_hash)).await.map_err(|e| anyhow!("{e}"))?
    {
        info!(user_id = %user.id, email = %user.email, "SYSTEM user ready (unchanged)");
        return Ok(());
    }
    let password: Password = password.parse().context("LEDGERFLOW_SYSTEM_PASSWORD")?;
    let hash = hash_password(password).await.map_err(|e| anyhow!("{e}"))?;
    let user = store.ensure_system_user(&email, hash).await?;
    info!(user_id = %user.id, email = %user.email, "SYSTEM user ready");
    Ok(())
}

/// Connects to MongoDB and makes sure the indexes exist. Indexes are the invariants'
/// backstop, so this retries until MongoDB is reachable, or until `patience` (a one-shot
/// command's) runs out.
pub async fn open_store(connections: &Connections, patience: Option<Duration>) -> Result<Store> {
    let store =
        Store::connect(&connections.mongodb_uri, &connections.mongodb_db).await.context("invalid MongoDB URI")?;
    let started = Instant::now();
    let mut wait = Duration::from_millis(200);
    loop {
        let indexed = async {
            store.ensure_indexes().await?;
            store.ensure_event_indexes(connections.events_retention.into()).await
        };
        match indexed.await {
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

/// A single-threaded runtime for one thread, else a multi-threaded one (0: one per core).
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
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

/// Cancelled on SIGTERM or Ctrl-C: stop taking work, finish what is in flight, exit.
pub fn shutdown_on_signal() -> CancellationToken {
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
