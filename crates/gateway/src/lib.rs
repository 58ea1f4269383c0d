//! The LedgerFlow HTTP gateway.
//!
//! Thin on purpose: it authenticates, parses requests into domain types, checks ownership,
//! records a transfer as PENDING, publishes the command with a publisher confirm and answers
//! `202 Accepted`. Whether money moves is decided by a worker alone. A transfer whose publish
//! failed stays recorded; the `republisher` sends it later.

pub mod auth;
mod de;
mod dto;
pub mod error;
mod extract;
mod facts;
pub mod hashing;
mod republisher;
mod requests;
mod routes;
mod search;
mod sessions;
pub mod source;
pub mod telemetry;
mod watch;

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ledgerflow_messaging::Publisher;
use ledgerflow_store::{Grouping, PendingWriter, Store, TransactionReader};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::add_extension::AddExtension;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{error, info, warn};

pub use auth::JwtKeys;
pub use hashing::{DEFAULT_SLOTS_PER_CLIENT, hash_password, verify_password};
pub use source::{ProxyHeader, ProxyNet, TrustedProxies};

/// Gateway settings that are not connections.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Signs and checks tokens; shown as `[REDACTED]` by `Debug`, so never logged.
    pub jwt_secret: SecretString,
    pub token_ttl: Duration,
    /// How long a user's session version is remembered: a session ended through another
    /// gateway, or by an operator, is still honoured here for at most this long.
    pub session_recheck: Duration,
    /// Whether the session cookie is marked `Secure` (turn off only for plain-HTTP dev).
    pub cookie_secure: bool,
    /// How often the republisher looks for stale PENDING transfers.
    pub republish_interval: Duration,
    /// How old a PENDING transfer must be, with the transfer queues empty, to be republished.
    pub republish_after: Duration,
    /// How long a PENDING insert may wait for those of other transfers while they arrive
    /// faster than one per this interval (zero: never; see [`ledgerflow_store::GroupCommit`]);
    /// reads of a transaction by id share finds the same way.
    pub insert_linger: Duration,
    /// Failed sign-ins for one email after which it is locked out until its window ends.
    pub login_max_failures: u32,
    /// The window failed sign-ins are counted in, from the first of them.
    pub login_window: Duration,
    /// Password-hashing slots one client may hold at once (see [`hashing::HashSlots`]).
    pub hash_slots_per_client: usize,
    /// Where client addresses come from behind proxies (`None`: the TCP peer is the client).
    pub trusted_proxies: Option<TrustedProxies>,
    /// Longest time a request body may take to arrive, whole (408 after it).
    pub body_deadline: Duration,
    /// Longest time a request head (line and headers) may take to arrive; the connection is
    /// closed after it.
    pub head_deadline: Duration,
    /// Longest wait, once a shutdown is asked for, for open requests to finish; past it the
    /// gateway stops anyway (a client that never reads its response cannot hold it up).
    pub drain_limit: Duration,
    /// Which webhook URLs may be registered (the dispatcher holds deliveries to the same).
    pub webhook_policy: ledgerflow_domain::webhooks::UrlPolicy,
}

impl GatewayConfig {
    pub fn new(jwt_secret: impl Into<SecretString>) -> Self {
        Self {
            jwt_secret: jwt_secret.into(),
            token_ttl: Duration::from_secs(12 * 3600),
            session_recheck: DEFAULT_SESSION_RECHECK,
            cookie_secure: true,
            republish_interval: DEFAULT_REPUBLISH_INTERVAL,
            republish_after: DEFAULT_REPUBLISH_AFTER,
            insert_linger: DEFAULT_INSERT_LINGER,
            login_max_failures: DEFAULT_LOGIN_MAX_FAILURES,
            login_window: DEFAULT_LOGIN_WINDOW,
            hash_slots_per_client: DEFAULT_SLOTS_PER_CLIENT,
            trusted_proxies: None,
            body_deadline: Duration::from_secs(10),
            head_deadline: Duration::from_secs(10),
            drain_limit: Duration::from_secs(10),
            webhook_policy: ledgerflow_domain::webhooks::UrlPolicy::default(),
        }
    }
}

/// How often the republisher looks by default (see [`GatewayConfig::republish_interval`]).
pub const DEFAULT_REPUBLISH_INTERVAL: Duration = Duration::from_secs(5);

/// How old a PENDING transfer must be by default to be republished (see
/// [`GatewayConfig::republish_after`]).
pub const DEFAULT_REPUBLISH_AFTER: Duration = Duration::from_secs(10);

/// How long a PENDING insert lingers to share by default (see
/// [`GatewayConfig::insert_linger`]).
pub const DEFAULT_INSERT_LINGER: Duration = Duration::from_millis(8);

/// Failed sign-ins per email before a lockout, by default (see
/// [`GatewayConfig::login_max_failures`]): far more than a person mistypes, far fewer than a
/// password guesser needs.
pub const DEFAULT_LOGIN_MAX_FAILURES: u32 = 10;

/// How long a session version is remembered by default (see
/// [`GatewayConfig::session_recheck`]).
pub const DEFAULT_SESSION_RECHECK: Duration = Duration::from_secs(5);

/// The window of failed sign-ins by default (see [`GatewayConfig::login_window`]).
pub const DEFAULT_LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Most PENDING records written in one insert, and most transactions read in one find.
/// Concurrent transfers share an insert (one mongod command and journal wait instead of one
/// each); past this, a burst takes several.
const GROUP_MAX: usize = 64;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Records new transfers as PENDING, concurrent ones in shared inserts.
    pending: PendingWriter,
    /// Reads transactions by id, concurrent reads in shared finds.
    transactions: TransactionReader,
    pub publisher: Publisher,
    pub keys: Arc<JwtKeys>,
    pub config: Arc<GatewayConfig>,
    /// Long-polling requests waiting for a transaction's result.
    pub watchers: Arc<watch::Watchers>,
    /// Owners and currencies of accounts already seen.
    accounts: Arc<facts::AccountFacts>,
    /// Users' session versions, recently read.
    sessions: Arc<sessions::SessionVersions>,
    /// Places on the password-hashing thread, shared out between clients.
    hash_slots: Arc<hashing::HashSlots>,
    /// Cancelled when the gateway is asked to stop, so that long polls answer at once.
    stopping: CancellationToken,
}

impl AppState {
    /// Spawns the PENDING writer's and the transaction reader's tasks, so call it inside the
    /// Tokio runtime that serves.
    pub fn new(store: Store, publisher: Publisher, config: GatewayConfig) -> Self {
        let keys = Arc::new(JwtKeys::new(config.jwt_secret.expose_secret().as_bytes(), config.token_ttl));
        let pending = store.pending_writer(Grouping { max: GROUP_MAX, linger: config.insert_linger });
        let transactions = store.transaction_reader(Grouping { max: GROUP_MAX, linger: config.insert_linger });
        let sessions = Arc::new(sessions::SessionVersions::new(config.session_recheck));
        let hash_slots = hashing::HashSlots::new(config.hash_slots_per_client);
        Self {
            store,
            pending,
            transactions,
            publisher,
            keys,
            config: Arc::new(config),
            watchers: Arc::default(),
            accounts: Arc::default(),
            sessions,
            hash_slots,
            stopping: CancellationToken::new(),
        }
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    routes::routes()
        .route_layer(axum::middleware::from_fn(telemetry::track))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id)
                })
                // A 5xx is logged with its cause where it is mapped (error.rs), and a 503 from
                // /readyz is a state, not a fault: tower-http's own line would only repeat it
                // at ERROR.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::map_request(extract::drop_unfit_request_id))
        // Balances, entries and tokens are nobody's to keep: no cache stores an answer.
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then stops accepting, finishes open requests (for
/// up to [`GatewayConfig::drain_limit`]; long polls answer at once) and stops the republisher.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) -> std::io::Result<()> {
    let state = AppState { stopping: shutdown.clone(), ..state };
    ledgerflow_telemetry::prometheus();
    telemetry::register_failure_counters();
    tokio::spawn(hashing::measure_a_check());
    info!(addr = %listener.local_addr()?, "gateway listening");
    let republisher = tokio::spawn(republisher::run(state.clone(), shutdown.clone()));
    let watcher = tokio::spawn(watch::run(
        state.publisher.uri().to_owned(),
        state.publisher.topology().clone(),
        Arc::clone(&state.watchers),
        shutdown.clone(),
    ));
    let (publisher, config) = (state.publisher.clone(), Arc::clone(&state.config));
    accept(listener, router(state), &shutdown, &config).await;
    shutdown.cancel();
    let _ = republisher.await;
    let _ = watcher.await;
    publisher.close().await;
    info!("gateway stopped");
    Ok(())
}

/// Serves connections until `shutdown`, then waits for open ones up to the drain limit. What
/// `axum::serve` does, plus a deadline for each request head: it sets no timer, so a client
/// that never finished a head kept its connection for as long as it liked.
async fn accept(listener: TcpListener, app: Router, shutdown: &CancellationToken, config: &GatewayConfig) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(config.head_deadline);
    let open = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The peer gave up before we took it: nothing to serve.
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset) => continue,
                // Out of file descriptors, say: give connections time to close.
                Err(e) => {
                    error!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Answers are small and whole: send each at once rather than wait for the client to
        // acknowledge the last (Nagle's algorithm).
        if let Err(e) = stream.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        // Each request carries its connection's peer, which `source` tells clients apart by.
        let app = AddExtension::new(app.clone(), source::Peer(peer));
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
        tokio::spawn(open.watch(connection));
    }
    drop(listener);
    if tokio::time::timeout(config.drain_limit, open.shutdown()).await.is_err() {
        warn!(limit = ?config.drain_limit, "open requests outlasted the drain limit; stopping without them");
    }
}

#[cfg(test)]
mod tests {
    use super::GatewayConfig;

    #[test]
    fn the_jwt_secret_never_prints() {
        let secret = "a-secret-of-at-least-thirty-two-bytes!";
        let config = GatewayConfig::new(secret.to_owned());
        let shown = format!("{config:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
