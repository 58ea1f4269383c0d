//! Test harness: `spawn_app()` starts a real gateway and real workers in this process,
//! against the real MongoDB and RabbitMQ, isolated by a fresh database name and a fresh
//! queue-name prefix, so tests run in parallel on one shared broker and database server.
//!
//! Services come from `LEDGERFLOW_TEST_MONGODB_URI` and `LEDGERFLOW_TEST_AMQP_URI` (loopback
//! defaults); `scripts/test.sh` starts them first.

#![allow(clippy::unwrap_used)]

mod broker;
mod cli;
pub mod nodes;
pub mod processes;
pub mod proxy;
pub mod receiver;
pub mod services;

pub use broker::{close_broker_connections, persistent, publish_on, ready_commands};
pub use cli::{cli_output, ledgerflow_bin, ledgerflow_command};

use std::time::{Duration, Instant};

use ledgerflow::settings::{Connections, GatewaySettings, WorkerSettings, from_env};
use ledgerflow::{App, Settings};
use ledgerflow_messaging::lapin::Connection;
use ledgerflow_messaging::{Topology, connect};
use ledgerflow_store::Store;
use ledgerflow_worker::WorkerConfig;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use serde_json;

/// Upper bound for anything a test waits for. Generous: CI machines are small.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Longest wait for one step of a test's teardown.
const TEARDOWN_STEP: Duration = Duration::from_secs(15);
/// Partition queues per test topology: fewer than the default, to keep the shared broker
/// light, but more than one, so that tests cross partitions.
pub const PARTITIONS: u16 = 4;

pub const SYSTEM_EMAIL: &str = "system@ledgerflow.test";
pub const SYSTEM_PASSWORD: &str = "system-password-for-tests";
/// One JWT secret for every test gateway, so a token works on each.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

/// The settings every test system starts from: the real ones (the flags' defaults, then the
/// environment), changed to the test services, a database and a queue prefix of its own
/// (`kind`: test, fault), port 0, a SYSTEM user and quick retries.
pub fn test_settings(kind: &str) -> Settings {
    let (db, prefix) = unique_names(kind);
    let mut connections: Connections = from_env().unwrap();
    connections.mongodb_uri = mongodb_uri();
    connections.mongodb_db = db;
    // LedgerFlow's processes as a deployment runs them: under broker users of their own (the
    // fault tests' processes all share the gateway's), and the workers trusting the gateway's.
    connections.amqp_uri = amqp_uri_as(GATEWAY_BROKER_USER);
    connections.amqp_prefix = prefix;
    connections.partitions = PARTITIONS;
    connections.retry_delay = Duration::from_millis(100).into();
    connections.trusted_broker_users = vec![GATEWAY_BROKER_USER.to_owned(), WORKER_BROKER_USER.to_owned()];
    let mut gateway: GatewaySettings = from_env().unwrap();
    gateway.http_addr = "127.0.0.1:0".parse().unwrap();
    gateway.jwt_secret = Some(SecretString::from(JWT_SECRET.to_owned()));
    gateway.system_email = Some(SYSTEM_EMAIL.to_owned());
    gateway.system_password = Some(SecretString::from(SYSTEM_PASSWORD.to_owned()));
    gateway.cookie_secure = false;
    gateway.republish_interval = Duration::from_millis(200).into();
    gateway.republish_after = Duration::from_millis(500).into();
    let mut worker: WorkerSettings = from_env().unwrap();
    worker.prefetch = 16;
    worker.max_attempts = 3;
    Settings { connections, gateway: Some(gateway), worker: Some(worker), workers: 0, threads: 1 }
}

pub fn mongodb_uri() -> String {
    std::env::var("LEDGERFLOW_TEST_MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?replicaSet=rs0".into())
}

/// The test broker as its administrator (`guest`): for inspecting and draining queues.
pub fn amqp_uri() -> String {
    std::env::var("LEDGERFLOW_TEST_AMQP_URI").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Broker users `scripts/services.sh` creates on the test broker (each with its name as its
/// password): LedgerFlow's gateway and workers, and upstream systems that may only publish
/// commands.
pub const GATEWAY_BROKER_USER: &str = "ledgerflow-gateway";
pub const WORKER_BROKER_USER: &str = "ledgerflow-worker";
pub const UPSTREAM_BROKER_USER: &str = "ledgerflow-upstream-a";
pub const OTHER_UPSTREAM_BROKER_USER: &str = "ledgerflow-upstream-b";
/// The service every test's upstream commands come from, publishing as
/// [`UPSTREAM_BROKER_USER`] (see [`register_test_upstream`]).
pub const TEST_UPSTREAM: &str = "test-upstream";

/// [`amqp_uri`] as broker user `user`.
pub fn amqp_uri_as(user: &str) -> String {
    let mut uri = reqwest::Url::parse(&amqp_uri()).unwrap();
    uri.set_username(user).unwrap();
    uri.set_password(Some(user)).unwrap();
    uri.to_string()
}

/// Registers `service:test-upstream`, publishing as [`UPSTREAM_BROKER_USER`], allowed every
/// kind on every client account: the tests of the pipeline itself publish as it. The tests
/// of grants (tests/e2e/services.rs) register services of their own.
pub async fn register_test_upstream(store: &Store) {
    use ledgerflow_domain::TransferKind;
    use ledgerflow_domain::grants::Grant;
    let name = TEST_UPSTREAM.parse().unwrap();
    store.add_service(&name, &UPSTREAM_BROKER_USER.parse().unwrap()).await.unwrap().unwrap();
    let everything =
        Grant { kinds: TransferKind::ALL.iter().copied().collect(), any_account: true, ..Grant::default() };
    store.change_grant(&name, &everything, true).await.unwrap().unwrap();
}

/// A database name and a queue prefix of their own for one test (`kind`: test, fault), named
/// so that `scripts/services.sh sweep` can drop what a failed test left behind
/// ([`ledgerflow_testkit::Sandbox`]).
pub fn unique_names(kind: &str) -> (String, String) {
    let sandbox = ledgerflow_testkit::Sandbox::new(kind);
    (sandbox.db, sandbox.prefix)
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEDGERFLOW_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A signed-in user: id and token.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub token: String,
}

/// Two users and their accounts: `a` is Alice's, `b` is Bob's.
pub struct Pair {
    pub alice: Session,
    pub bob: Session,
    pub a: String,
    pub b: String,
}

/// HTTP to one gateway, with the requests most tests make. [`TestApp`] and
/// [`processes::Cluster`] dereference to it.
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    /// The typed client LedgerFlow's users get (`ledgerflow-client`), on the same connections.
    pub api: ledgerflow_client::Client,
    /// Signed in as SYSTEM (funding).
    pub system: Session,
    /// The gateway process's log, whose tail a failed request shows (none in process).
    gateway_log: Option<std::path::PathBuf>,
}

impl Client {
    fn new(base: String, timeout: Duration, gateway_log: Option<std::path::PathBuf>) -> Self {
        let http = reqwest::Client::builder().timeout(timeout).build().unwrap();
        let api = ledgerflow_client::Client::with_http(http.clone(), &base);
        Self { base, http, api, system: Session { id: String::new(), token: String::new() }, gateway_log }
    }

    /// The typed client, signed in as `user`.
    pub fn as_user(&self, user: &Session) -> ledgerflow_client::Client {
        self.api.signed_in(&user.token)
    }

    /// Panics with the gateway process's log tail (if it is one) when a request that must
    /// succeed did not.
    #[track_caller]
    pub fn must<T>(&self, what: &str, answer: Result<T, ledgerflow_client::Error>) -> T {
        answer.unwrap_or_else(|e| {
            let tail = self.gateway_log.as_deref().map(|log| processes::log_tail("gateway", log, 20));
            panic!("{what} failed: {e}\n{}", tail.unwrap_or_default())
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and body.
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> ledgerflow_client::Result<(StatusCode, Value)> {
        let client = token.map_or_else(|| self.api.clone(), |t| self.api.signed_in(t));
        client.send(method.parse().unwrap(), path, body.as_ref()).await
    }

    /// [`Client::try_call`] for requests that must get an answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        match self.try_call(method, path, token, body).await {
            Ok(answer) => answer,
            Err(e) => {
                let tail = self.gateway_log.as_deref().map(|log| processes::log_tail("gateway", log, 20));
                panic!("{method} {path} failed: {e}\n{}", tail.unwrap_or_default())
            }
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let auth = self.must("login", self.api.login(email, password).await);
        Session { id: auth.user.id, token: auth.token }
    }

    /// Registers a fresh user with a unique email.
    pub async fn register(&self) -> Session {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let auth = self.must("register", self.api.register(&email, "correct horse battery", None).await);
        Session { id: auth.user.id, token: auth.token }
    }

    /// Opens a USD account for `user`; returns its id.
    pub async fn open_account(&self, user: &Session) -> String {
        self.must("open account", self.as_user(user).open_account(None).await).id
    }

    /// `user` transfers `amount` from `from` to `to` under a fresh `key`, which must be
    /// accepted (202); returns the gateway's answer without waiting for the outcome.
    pub async fn accept_transfer(
        &self,
        user: &Session,
        from: &str,
        to: &str,
        amount: i64,
        key: &str,
    ) -> ledgerflow_client::Accepted {
        let transfer = ledgerflow_client::Transfer { from, to, amount, idempotency_key: key, description: None };
        let accepted = self.must("transfer", self.as_user(user).transfer(&transfer).await);
        assert!(!accepted.repeat, "the transfer under {key} was a repeat");
        accepted
    }

    /// Waits (long polls) until the transaction `id` is COMPLETED or FAILED, as `user` sees it.
    pub async fn settled(&self, user: &Session, id: &str) -> ledgerflow_client::TransactionBody {
        let start = Instant::now();
        loop {
            let t = self.must("wait", self.as_user(user).wait(id, 5).await);
            if t.status != "PENDING" {
                return t;
            }
            assert!(start.elapsed() < DEADLINE, "transaction {id} still PENDING after {DEADLINE:?}");
        }
    }

    /// Asks for initial funds through the SYSTEM endpoint; returns the funding transaction's
    /// id without waiting for it.
    pub async fn request_funding(&self, account: &str, amount: i64) -> String {
        let key = format!("fund-{}", uuid::Uuid::new_v4());
        let accepted = self.must("funding", self.as_user(&self.system).initial_funds(account, amount, &key).await);
        assert!(!accepted.repeat, "funding under a fresh key was a repeat");
        accepted.transaction.id
    }
}

/// A running LedgerFlow (gateway + workers) on its own database and queues.
pub struct TestApp {
    pub client: Client,
    /// What this app was built from; [`TestApp::cli`] hands it to child processes.
    pub settings: Settings,
    pub store: Store,
    pub topology: Topology,
    shutdown: CancellationToken,
    gateway: Option<JoinHandle<()>>,
    workers: Vec<(CancellationToken, Option<JoinHandle<()>>)>,
    /// As the broker's administrator: inspects and drains queues.
    pub amqp: Connection,
    /// As [`UPSTREAM_BROKER_USER`]: publishes as `service:test-upstream` would.
    pub upstream: Connection,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(1).await
}

/// Starts a gateway and `workers` independent workers (each with its own connections).
pub async fn spawn_app_with(workers: usize) -> TestApp {
    spawn_app_configured(workers, |_| {}).await
}

/// Like [`spawn_app_with`], with the gateway's settings changed by `configure`. The gateway
/// is built by [`App::build`], as `ledgerflow gateway` builds it; the workers are started
/// one by one, so that a test can stop each.
pub async fn spawn_app_configured(workers: usize, configure: impl FnOnce(&mut GatewaySettings)) -> TestApp {
    init_logs();
    let mut settings = test_settings("test");
    configure(settings.gateway.as_mut().unwrap());
    // The harness's own client: the app's is shut down with it, before the teardown is done.
    let store = Store::connect(&settings.connections.mongodb_uri, &settings.connections.mongodb_db).await.unwrap();
    let topology = settings.connections.topology();
    let app = App::build(&settings).await.unwrap();
    // After the build (which makes the indexes), before any worker reads the services.
    register_test_upstream(&store).await;
    let base = format!("http://{}", app.http_addr().unwrap());
    let shutdown = CancellationToken::new();
    let gateway = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            app.run_until_stopped(shutdown).await.unwrap();
        }
    });
    let amqp = connect(&amqp_uri(), "test-harness").await.unwrap();
    let upstream = connect(&amqp_uri_as(UPSTREAM_BROKER_USER), "test-upstream").await.unwrap();
    let mut app = TestApp {
        upstream,
        client: Client::new(base, Duration::from_secs(30), None),
        settings,
        store,
        topology,
        shutdown,
        gateway: Some(gateway),
        workers: Vec::new(),
        amqp,
    };
    for _ in 0..workers {
        app.add_worker();
    }
    app.client.system = app.login(SYSTEM_EMAIL, SYSTEM_PASSWORD).await;
    app
}

impl std::ops::Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TestApp {
    /// Starts one more independent worker; returns its index for [`TestApp::stop_worker`].
    pub fn add_worker(&mut self) -> usize {
        let name = format!("test-worker-{}", self.workers.len());
        self.add_worker_with(self.store.clone(), self.worker_config(&name))
    }

    /// The configuration test workers use: the app's worker settings (small prefetch, quick
    /// retries), named `name`.
    pub fn worker_config(&self, name: &str) -> WorkerConfig {
        let worker = self.settings.worker.as_ref().expect("test settings have worker settings");
        let mut config = worker.config(&self.settings.connections, 0);
        config.name = name.to_owned();
        config.amqp_uri = amqp_uri_as(WORKER_BROKER_USER);
        config
    }

    /// Starts a worker with its own store and configuration; returns its index.
    pub fn add_worker_with(&mut self, store: Store, config: WorkerConfig) -> usize {
        let token = CancellationToken::new();
        let handle = tokio::spawn(ledgerflow_worker::run(store, config, token.clone()));
        self.workers.push((token, Some(handle)));
        self.workers.len() - 1
    }

    /// Gracefully stops one worker and waits until it has drained.
    pub async fn stop_worker(&mut self, index: usize) {
        let (token, handle) = &mut self.workers[index];
        token.cancel();
        if let Some(handle) = handle.take() {
            tokio::time::timeout(DEADLINE, handle).await.expect("worker drains in time").unwrap();
        }
    }

    /// The usual cast: two new users, Alice and Bob, with one (unfunded) account each.
    pub async fn alice_and_bob(&self) -> Pair {
        let (alice, bob) = (self.register().await, self.register().await);
        let (a, b) = (self.open_account(&alice).await, self.open_account(&bob).await);
        Pair { alice, bob, a, b }
    }

    /// Funds an account through the SYSTEM endpoint and waits until the money is there.
    pub async fn fund(&self, account: &str, amount: i64) {
        let id = self.request_funding(account, amount).await;
        let done = self.wait_terminal(&self.system.token, &id).await;
        assert_eq!(done["status"], "COMPLETED", "funding did not complete: {done}");
    }

    pub async fn transfer(
        &self,
        user: &Session,
        from: &str,
        to: &str,
        amount: Value,
        key: &str,
    ) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/transactions",
            Some(&user.token),
            Some(json!({"fromAccount": from, "toAccount": to, "amount": amount, "idempotencyKey": key})),
        )
        .await
    }

    /// Polls `GET /transactions/{id}` until it is COMPLETED or FAILED.
    pub async fn wait_terminal(&self, token: &str, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let (status, body) = self.call("GET", &format!("/transactions/{id}"), Some(token), None).await;
            assert_eq!(status, StatusCode::OK, "poll failed: {body}");
            let t = &body["transaction"];
            if t["status"] != "PENDING" {
                return t.clone();
            }
            assert!(start.elapsed() < DEADLINE, "transaction {id} still PENDING after {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The balance of `account` as the holder of `token` reads it.
    pub async fn balance(&self, token: &str, account: &str) -> i64 {
        self.must("balance", self.api.signed_in(token).balance(account).await).balance
    }

    pub async fn entries(&self, token: &str, account: &str) -> Vec<Value> {
        let (status, body) =
            self.call("GET", &format!("/api/accounts/{account}/entries?limit=100"), Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "entries failed: {body}");
        body["entries"].as_array().unwrap().clone()
    }

    /// Stops everything and deletes the test's database and queues.
    pub async fn teardown(mut self) {
        for (token, _) in &self.workers {
            token.cancel();
        }
        self.shutdown.cancel();
        for handle in self.workers.drain(..).filter_map(|(_, h)| h) {
            let _ = tokio::time::timeout(DEADLINE, handle).await;
        }
        if let Some(g) = self.gateway.take() {
            let _ = tokio::time::timeout(DEADLINE, g).await;
        }
        // A fresh connection: the shared one may have been cut by a broker restart. Each step
        // is bounded: a connection's close once waited forever for the broker's close-ok
        // (seen once in CI), and a test must end either way.
        let fresh = async {
            if let Ok(conn) = connect(&amqp_uri(), "test-teardown").await {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = self.topology.delete(&ch).await;
                }
                ledgerflow_messaging::close(&conn, "teardown").await;
            }
        };
        let _ = tokio::time::timeout(TEARDOWN_STEP, fresh).await;
        ledgerflow_messaging::close(&self.amqp, "teardown").await;
        let _ = tokio::time::timeout(TEARDOWN_STEP, self.store.drop_database()).await;
    }
}

impl TestApp {
    /// Sends raw bytes with the given content type (or none); for malformed-request tests.
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// Asserts an error response: status, the standard body shape and the code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "status of {body}");
    assert_eq!(body["error"]["code"], code, "code of {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "message of {body}");
}

/// A gateway of a test's own: where it listens, how to stop it, and its task.
pub struct OwnGateway {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub stop: CancellationToken,
    pub served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Starts another gateway on the same database and queues but with its own broker URI
    /// (e.g. an unreachable one); returns its base URL. It stops with the app.
    pub async fn extra_gateway(&self, amqp_uri: &str) -> String {
        self.gateway_with(amqp_uri, |_| {}).await.base
    }

    /// Starts another gateway like [`Self::extra_gateway`], configured, that can also be
    /// stopped on its own.
    pub async fn gateway_with(&self, amqp_uri: &str, configure: impl FnOnce(&mut GatewaySettings)) -> OwnGateway {
        let mut settings = self.settings.clone();
        settings.connections.amqp_uri = amqp_uri.to_owned();
        configure(settings.gateway.as_mut().unwrap());
        let app = App::build(&settings).await.unwrap();
        let addr = app.http_addr().unwrap();
        let stop = self.shutdown.child_token();
        let served = tokio::spawn(app.run_until_stopped(stop.clone()));
        OwnGateway { base: format!("http://{addr}"), addr, stop, served }
    }
}

/// The JSON Schema of a queue message, from the domain crate's `schemas/` folder.
pub fn schema(name: &str) -> Value {
    let path = format!("{}/../crates/domain/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

impl TestApp {
    /// Starts a worker with a given broker connection name.
    pub fn add_named_worker(&mut self, name: &str) -> usize {
        self.add_worker_with(self.store.clone(), self.worker_config(name))
    }
}

impl TestApp {
    /// Raw access to this test's database, to tamper with what the application wrote.
    pub async fn raw_db(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap().database(self.store.database_name())
    }

    /// Holds a write on `account`'s document in someone else's open MongoDB transaction, so
    /// every posting on it conflicts until [`AccountLock::release`].
    pub async fn lock_account(&self, account: &str) -> AccountLock {
        let client = mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap();
        let accounts = client.database(self.store.database_name()).collection::<mongodb::bson::Document>("accounts");
        let mut session = client.start_session().await.unwrap();
        session.start_transaction().await.unwrap();
        let hold = mongodb::bson::doc! { "$set": { "heldBy": "test" } };
        accounts.update_one(mongodb::bson::doc! { "_id": account }, hold).session(&mut session).await.unwrap();
        AccountLock { session }
    }

    /// The sum of a metric's series in the in-process app's metrics (its workers share the
    /// gateway's recorder).
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let text = self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let value = |l: &str| l.rsplit(' ').next()?.parse::<f64>().ok();
        text.lines().filter(|l| l.starts_with(name)).filter_map(value).sum()
    }
}

/// A write held on an account by an open transaction (see [`TestApp::lock_account`]).
pub struct AccountLock {
    session: mongodb::ClientSession,
}

impl AccountLock {
    /// Ends the transaction without effect: postings on the account go through again.
    pub async fn release(mut self) {
        self.session.abort_transaction().await.unwrap();
    }
}

impl TestApp {
    /// The stored status of a transaction, read directly (no waiting).
    pub async fn stored_status(&self, id: &str) -> String {
        let t = self.store.find_transaction(id.parse().unwrap()).await.unwrap().expect("transaction exists");
        t.status.to_string()
    }
}
