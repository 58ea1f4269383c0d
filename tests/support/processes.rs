//! Real `ledgerflow` processes for fault tests.
//!
//! [`Cluster`] runs a `ledgerflow gateway` process, `ledgerflow worker` processes and, when a
//! test asks, `ledgerflow dispatcher` processes on a
//! fresh database and queue prefix (testkit's `Cluster`, as the bench runs its own), talks to
//! them over HTTP, and inspects MongoDB and RabbitMQ directly. Unlike [`crate::TestApp`] it
//! keeps no long-lived broker connection (each broker operation opens its own, so RabbitMQ can
//! be restarted under it) and runs no gateway in the test process (so the gateway *process* is
//! the only republisher).
//!
//! Every process writes JSON logs to a file under `$TMPDIR/ledgerflow-fault-logs/`; if a test
//! fails, the tail of each log is printed and the database and queues are kept for inspection.
//! Processes are killed when dropped. The faults themselves are in [`crate::services`] and
//! [`crate::proxy`].

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use ledgerflow::settings::{DispatcherSettings, WebhookPolicySettings, from_env};
use ledgerflow_domain::EventType;
use ledgerflow_messaging::lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use ledgerflow_messaging::lapin::types::{AMQPValue, FieldTable};
use ledgerflow_messaging::lapin::{BasicProperties, Connection};
use ledgerflow_messaging::{Topology, connect};
use ledgerflow_store::Store;
use ledgerflow_testkit::Launcher;
use serde_json::Value;

use ledgerflow::Settings;
pub use ledgerflow_testkit::{LoggedChild, log_tail};

pub use crate::proxy::AmqpProxy;
pub use crate::services::{PROCESS_DEADLINE, Services, consumer_tags, repo_root, run_bounded, run_bounded_async};
use crate::{Client, SYSTEM_EMAIL, SYSTEM_PASSWORD, Session, ledgerflow_bin, ledgerflow_command};

/// How long a gateway process waits before republishing a transfer whose publish was not
/// confirmed, and how often it looks.
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(3);
pub const REPUBLISH_INTERVAL: Duration = Duration::from_millis(500);
/// The HTTP client's timeout: a request that takes longer is a hang, not a slow answer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Where the fault clusters' webhooks may deliver: to the tests' receivers, plain HTTP on
/// loopback.
pub const TEST_WEBHOOKS: WebhookPolicySettings =
    WebhookPolicySettings { webhook_allow_http: true, webhook_allow_private: true };
/// A queue the test binds to the events exchange, to see what the relay published; the broker
/// removes it this long after its last use if a failed test left it.
const TAP_EXPIRES_MS: i64 = 600_000;

fn log_dir() -> PathBuf {
    std::env::temp_dir().join("ledgerflow-fault-logs")
}

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
    /// transfer must complete, not fail PROCESSING_FAILED), a republisher that waits 3 s, and
    /// webhooks allowed to reach the tests' receivers.
    fn new(label: &str) -> Self {
        let mut settings = crate::test_settings("fault");
        let gateway = settings.gateway.as_mut().unwrap();
        gateway.republish_after = REPUBLISH_AFTER.into();
        gateway.republish_interval = REPUBLISH_INTERVAL.into();
        gateway.webhooks = TEST_WEBHOOKS;
        settings.connections.retry_delay = Duration::from_secs(1).into();
        let worker = settings.worker.as_mut().unwrap();
        worker.max_attempts = 10;
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

    /// How its processes start: JSON logs (read back below) in files named after the test
    /// and the end of its prefix, at `info` unless `LEDGERFLOW_TEST_PROCESS_LOG` says otherwise.
    fn launcher(&self) -> Launcher {
        let filter = std::env::var("LEDGERFLOW_TEST_PROCESS_LOG").unwrap_or_else(|_| "info".into());
        let mut launcher = Launcher::new(ledgerflow_bin(), log_dir(), &filter);
        launcher.log_prefix = format!("{}-{}-", self.label, &self.prefix()[self.prefix().len() - 8..]);
        launcher.json_logs = true;
        launcher
    }
}

/// Commands a worker sent to the retry queue after a transient failure, from its log.
pub fn retried(worker: &LoggedChild) -> usize {
    worker.log_events().iter().filter(|e| e["fields"]["message"] == "sent to the retry queue").count()
}

/// Commands the broker redelivered to a worker (after another worker or connection failed to
/// settle them): distinct message ids seen with the AMQP `redelivered` flag in its JSON log.
/// A redelivered command that then waits in the retry queue comes back as a fresh message, so
/// counting settled deliveries would miss it.
pub fn redelivered(worker: &LoggedChild) -> HashSet<String> {
    worker
        .log_events()
        .iter()
        .filter(|e| e["span"]["name"] == "command" && e["span"]["redelivered"] == true)
        .filter_map(|e| e["span"]["message_id"].as_str().filter(|id| !id.is_empty()).map(Into::into))
        .collect()
}

/// Transaction ids a gateway's republisher sent, from its JSON log.
pub fn republished(gateway: &LoggedChild) -> HashSet<String> {
    gateway
        .log_events()
        .iter()
        .filter(|e| e["fields"]["message"] == "republished unconfirmed transfer")
        .filter_map(|e| {
            e["fields"]["transaction_id"].as_str().or_else(|| e["span"]["transaction_id"].as_str()).map(Into::into)
        })
        .collect()
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
    /// The gateway and worker processes.
    pub procs: ledgerflow_testkit::Cluster,
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
        Self::start_with(ProcessEnv::new(label), workers, None).await
    }

    /// Like [`Cluster::start`], with the gateway reaching RabbitMQ through an [`AmqpProxy`].
    pub async fn start_behind_proxy(label: &str, workers: usize) -> Self {
        Self::start_with(ProcessEnv::new(label), workers, Some(AmqpProxy::start().await)).await
    }

    /// Like [`Cluster::start`], on other services than the shared ones (the cluster fault
    /// tests' own): every process, and the test's own handles, use `mongodb_uri` and
    /// `amqp_uri` (which may be a list of brokers).
    pub async fn start_on(label: &str, workers: usize, mongodb_uri: &str, amqp_uri: &str) -> Self {
        let mut env = ProcessEnv::new(label);
        env.settings.connections.mongodb_uri = mongodb_uri.to_owned();
        env.settings.connections.amqp_uri = amqp_uri.to_owned();
        Self::start_with(env, workers, None).await
    }

    async fn start_with(env: ProcessEnv, workers: usize, proxy: Option<AmqpProxy>) -> Self {
        let mongodb_uri = env.settings.connections.mongodb_uri.clone();
        let store = Store::connect(&mongodb_uri, env.db()).await.unwrap();
        let raw = mongodb::Client::with_uri_str(&mongodb_uri).await.unwrap().database(env.db());
        let topology = env.settings.connections.topology();
        let mut gateway = env.settings.clone();
        if let Some(proxy) = &proxy {
            gateway.connections.amqp_uri = proxy.uri.clone();
        }
        let by = Instant::now() + PROCESS_DEADLINE;
        let procs = ledgerflow_testkit::Cluster::start_ready(env.launcher(), env.settings.clone(), &gateway, by)
            .await
            .unwrap_or_else(|e| panic!("could not start a gateway: {e:#}"));
        let client = Client::new(procs.gateway.base.clone(), HTTP_TIMEOUT, Some(procs.gateway.process.log.clone()));
        crate::register_test_upstream(&store).await;
        let mut cluster = Self { env, store, raw, topology, client, procs, proxy, torn_down: false };
        for i in 0..workers {
            cluster.spawn_worker(&format!("worker-{i}"), 16);
        }
        cluster.client.system = cluster.login(SYSTEM_EMAIL, SYSTEM_PASSWORD).await;
        cluster
    }

    /// Starts one more worker process; returns its index in `workers`.
    /// Its broker connection name is `name` suffixed by the prefix, so it is unique across
    /// tests.
    pub fn spawn_worker(&mut self, name: &str, prefetch: u16) -> usize {
        let connection_name = format!("{name}-{}", self.env.prefix());
        let configure = |worker: &mut ledgerflow::settings::WorkerSettings| {
            worker.name = Some(connection_name);
            worker.prefetch = prefetch;
        };
        self.procs.spawn_worker(name, configure).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a `ledgerflow dispatcher` process named `name`, retrying failed deliveries
    /// within a second; returns its index in `procs.dispatchers`.
    pub fn spawn_dispatcher(&mut self, name: &str) -> usize {
        let mut dispatcher: DispatcherSettings = from_env().unwrap();
        dispatcher.dispatcher_name = Some(format!("{name}-{}", self.env.prefix()));
        dispatcher.webhook_retry_base = Duration::from_millis(200).into();
        dispatcher.webhook_retry_cap = Duration::from_secs(1).into();
        self.procs.spawn_dispatcher(name, &TEST_WEBHOOKS, &dispatcher).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Registers, as SYSTEM, a webhook at `url` for every event type; returns its id.
    pub async fn webhook_for_every_event(&self, url: &str) -> String {
        let types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        self.must("register a webhook", self.as_user(&self.system).register_webhook(url, &types, None).await).id
    }

    /// Binds a queue of the test to the events exchange for every routing key: from then on it
    /// holds a copy of every event the relay publishes. Returns its name (see
    /// [`Cluster::drain`]); teardown deletes it.
    pub async fn tap_events(&self) -> String {
        let queue = self.events_tap();
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongLongInt(TAP_EXPIRES_MS));
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        ch.queue_declare(queue.as_str().into(), durable, args).await.unwrap();
        let exchange = self.topology.events();
        let bind = QueueBindOptions::default();
        ch.queue_bind(queue.as_str().into(), exchange.as_str().into(), "#".into(), bind, FieldTable::default())
            .await
            .unwrap();
        let _ = conn.close(200, "done".into()).await;
        queue
    }

    fn events_tap(&self) -> String {
        format!("{}.test-events-tap", self.env.prefix())
    }

    /// Commands the broker redelivered, over all workers (see [`redelivered`]).
    pub fn redelivered(&self) -> usize {
        self.procs.workers.iter().flat_map(|w| redelivered(&w.process)).collect::<HashSet<_>>().len()
    }

    /// Commands the broker redelivered to the worker `index`.
    pub fn redelivered_to(&self, index: usize) -> HashSet<String> {
        redelivered(&self.procs.workers[index].process)
    }

    /// Transaction ids the gateway's republisher sent.
    pub fn republished(&self) -> HashSet<String> {
        republished(&self.procs.gateway.process)
    }

    /// The events waiting in the outbox to be numbered (a document holds a commit's events).
    pub async fn outbox_events(&self) -> u64 {
        let pipeline = [mongodb::bson::doc! { "$group": { "_id": null, "n": { "$sum": { "$ifNull": ["$n", 1] } } } }];
        let mut cursor = self.raw.collection::<mongodb::bson::Document>("outbox").aggregate(pipeline).await.unwrap();
        match futures::StreamExt::next(&mut cursor).await {
            Some(total) => {
                let total = total.unwrap();
                u64::try_from(total.get_i64("n").or_else(|_| total.get_i32("n").map(i64::from)).unwrap()).unwrap()
            }
            None => 0,
        }
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
        self.procs.workers.iter().map(|w| retried(&w.process)).sum()
    }

    /// Asserts that every process still runs and none logged a panic.
    pub fn assert_processes_alive(&mut self) {
        if let Err(e) = self.procs.ensure_alive() {
            panic!("{e:#}");
        }
        for p in self.procs.processes().filter(|p| !p.stopped) {
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
                    Ok(Some(t)) if t.status.is_decided() => done[i] = Some(t),
                    Ok(_) | Err(_) => {}
                }
            }
            let pending: Vec<&String> = ids.iter().zip(&done).filter(|(_, d)| d.is_none()).map(|(id, _)| id).collect();
            if pending.is_empty() {
                return done.into_iter().map(Option::unwrap).collect();
            }
            if start.elapsed() > limit {
                let workers: Vec<String> = self.procs.workers.iter().map(|w| w.process.tail(15)).collect();
                let idle = self.idle_transactions().await;
                panic!(
                    "{} of {} transactions still not terminal after {limit:?}, e.g. {:?}\n\
                     idle MongoDB transactions open on the server (client, seconds): {idle:?}\n{}\n{}",
                    pending.len(),
                    ids.len(),
                    &pending[..pending.len().min(5)],
                    self.procs.gateway.process.tail(15),
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

    /// A fresh connection to the cluster's broker (closed by the caller or on drop).
    pub async fn amqp(&self) -> Connection {
        let uri = &self.env.settings.connections.amqp_uri;
        connect(uri, &format!("fault-test-harness-{}", self.env.prefix())).await.unwrap()
    }

    /// Publishes raw bodies to the transfers exchange as `service:test-upstream` would, each
    /// persistent and confirmed; `routing_key` is the sending account by convention.
    pub async fn publish_raw(&self, messages: &[(String, Vec<u8>)]) {
        self.publish_raw_as(crate::UPSTREAM_BROKER_USER, messages).await;
    }

    /// Like [`Cluster::publish_raw`], as broker user `user` (one of `scripts/services.sh`'s).
    pub async fn publish_raw_as(&self, user: &str, messages: &[(String, Vec<u8>)]) {
        let name = format!("fault-test-publisher-{}", self.env.prefix());
        let conn = connect(&crate::amqp_uri_as(user), &name).await.unwrap();
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
                    BasicProperties::default().with_delivery_mode(2).with_user_id(user.into()),
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
        crate::broker::ready_commands_at(&self.env.settings.connections.amqp_uri, &self.topology).await
    }

    /// Takes every message off `queue` (acking them): keeps polling until `enough` says the
    /// collected bodies suffice and the queue is empty, or `limit` passes.
    pub async fn drain(&self, queue: &str, limit: Duration, enough: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let out = crate::broker::take(&ch, queue, usize::MAX, limit, enough).await;
        let _ = conn.close(200, "done".into()).await;
        out
    }

    /// Stops every process (workers gracefully, so they finish what they took) and deletes the
    /// test's database and queues. Not called when a test fails: then they stay for
    /// inspection (see the message printed on drop).
    pub async fn teardown(mut self) {
        self.stop_processes().await;
        let conn = self.amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let _ = self.topology.delete(&ch).await;
        let _ = ch.queue_delete(self.events_tap().as_str().into(), QueueDeleteOptions::default()).await;
        let _ = conn.close(200, "teardown".into()).await;
        self.drop_database_and_logs().await;
    }

    /// [`Cluster::teardown`] on a broker the test throws away with its queues (a cluster of
    /// its own, see [`crate::nodes`]): deleting a quorum queue one of whose nodes is dead
    /// takes seconds, for nothing.
    pub async fn teardown_keeping_queues(mut self) {
        self.stop_processes().await;
        self.drop_database_and_logs().await;
    }

    async fn stop_processes(&mut self) {
        for d in &mut self.procs.dispatchers {
            if d.exited().is_none() {
                stop(d).await;
            }
        }
        for w in &mut self.procs.workers {
            if w.process.exited().is_none() {
                stop(&mut w.process).await;
            }
        }
        if self.procs.gateway.process.exited().is_none() {
            stop(&mut self.procs.gateway.process).await;
        }
    }

    async fn drop_database_and_logs(&mut self) {
        // A killed worker's open MongoDB transactions hold locks until mongod expires them
        // (transactionLifetimeLimitSeconds), and dropDatabase waits for them: give up then.
        if tokio::time::timeout(Duration::from_secs(10), self.store.drop_database()).await.is_err() {
            println!("note: database {} not dropped within 10 s (locks held by orphaned transactions?)", self.env.db());
        }
        if std::env::var_os("LEDGERFLOW_FAULT_KEEP_LOGS").is_none() {
            for p in self.procs.processes() {
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
            for p in self.procs.processes() {
                eprintln!("{}", p.tail(20));
            }
        }
    }
}
