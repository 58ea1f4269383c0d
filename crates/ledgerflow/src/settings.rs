//! Typed settings, read once from flags and the environment (`LEDGERFLOW_*`).
//!
//! Defaults are the owning crate's constants (`ledgerflow_gateway::DEFAULT_*`,
//! `ledgerflow_worker::DEFAULT_*`), so a default is written once. Secrets are
//! [`SecretString`]s: `Debug` shows them as `[REDACTED]`. Each section renders itself as the
//! environment of a child `ledgerflow` process ([`Settings::child_env`]), which is how the
//! tests and the bench start real processes with the settings they mean.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use clap::builder::TypedValueParser as _;
use ledgerflow_dispatcher::{
    DEFAULT_CONCURRENCY, DEFAULT_PER_ENDPOINT, DEFAULT_RETRY_BASE, DEFAULT_RETRY_CAP, DEFAULT_RETRY_HORIZON,
    DispatcherConfig, RetryPolicy,
};
use ledgerflow_domain::webhooks::UrlPolicy;
use ledgerflow_gateway::{
    DEFAULT_INSERT_LINGER, DEFAULT_LOGIN_MAX_FAILURES, DEFAULT_LOGIN_WINDOW, DEFAULT_REPUBLISH_AFTER,
    DEFAULT_REPUBLISH_INTERVAL, DEFAULT_SESSION_RECHECK, DEFAULT_SLOTS_PER_CLIENT, GatewayConfig, ProxyHeader,
    ProxyNet, TrustedProxies,
};
use ledgerflow_messaging::{DEFAULT_PARTITIONS, DEFAULT_RETRY_DELAY, Topology};
use ledgerflow_worker::{
    DEFAULT_BATCH_LINGER, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BATCH, DEFAULT_PREFETCH, WorkerConfig,
};
use secrecy::{ExposeSecret, SecretString};

/// One environment variable of a child process: its name and value.
pub type EnvVar = (&'static str, String);

/// Where the services are, shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct Connections {
    /// MongoDB connection string (a replica set: transactions need one).
    #[arg(
        long,
        global = true,
        env = "LEDGERFLOW_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
    )]
    pub mongodb_uri: String,
    /// MongoDB database name.
    #[arg(long, global = true, env = "LEDGERFLOW_MONGODB_DB", default_value = "ledgerflow")]
    pub mongodb_db: String,
    /// RabbitMQ connection string, or the nodes of one RabbitMQ cluster as a comma-separated
    /// list of them (same user and virtual host), tried in that order at every (re)connection.
    #[arg(long, global = true, env = "LEDGERFLOW_AMQP_URI",
          default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", value_parser = BrokerList)]
    pub amqp_uri: String,
    /// Prefix of every exchange and queue name.
    #[arg(long, global = true, env = "LEDGERFLOW_AMQP_PREFIX", default_value = "ledgerflow")]
    pub amqp_prefix: String,
    /// Partition queues the transfer commands are spread over, by sending account. Every
    /// gateway and worker of a deployment must use the same number; workers beyond it stand by.
    #[arg(long, global = true, env = "LEDGERFLOW_PARTITIONS", default_value_t = DEFAULT_PARTITIONS,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub partitions: u16,
    /// Wait of a transiently failed command in the retry queue before its next try (e.g.
    /// 500ms, 2s). The retry queue's TTL, named in the queue's name: every gateway and worker
    /// of a deployment must use the same value (the gateways look at that queue).
    #[arg(long, global = true, env = "LEDGERFLOW_RETRY_DELAY", default_value_t = DEFAULT_RETRY_DELAY.into())]
    pub retry_delay: humantime::Duration,
    /// Broker users of LedgerFlow's own processes (gateways, workers, `admin dlq replay`),
    /// comma-separated. Only their messages may act for recorded transactions and have their
    /// bookkeeping headers believed; a worker always counts its own user among them. Give
    /// every upstream service a broker user of its own, never one of these.
    #[arg(long, global = true, env = "LEDGERFLOW_TRUSTED_BROKER_USERS", value_delimiter = ',')]
    pub trusted_broker_users: Vec<String>,
    /// How long events are kept for `GET /api/events` and webhooks' redeliveries (e.g. 30d,
    /// 72h): a TTL index, changed in place when this changes. Every process of a deployment
    /// must use the same value.
    #[arg(long, global = true, env = "LEDGERFLOW_EVENTS_RETENTION", default_value = "30d")]
    pub events_retention: humantime::Duration,
}

impl Connections {
    pub fn topology(&self) -> Topology {
        Topology::new(&self.amqp_prefix).with_partitions(self.partitions).with_retry_delay(self.retry_delay.into())
    }

    pub fn env(&self) -> Vec<EnvVar> {
        vec![
            ("LEDGERFLOW_MONGODB_URI", self.mongodb_uri.clone()),
            ("LEDGERFLOW_MONGODB_DB", self.mongodb_db.clone()),
            ("LEDGERFLOW_AMQP_URI", self.amqp_uri.clone()),
            ("LEDGERFLOW_AMQP_PREFIX", self.amqp_prefix.clone()),
            ("LEDGERFLOW_PARTITIONS", self.partitions.to_string()),
            ("LEDGERFLOW_RETRY_DELAY", self.retry_delay.to_string()),
            ("LEDGERFLOW_TRUSTED_BROKER_USERS", self.trusted_broker_users.join(",")),
            ("LEDGERFLOW_EVENTS_RETENTION", self.events_retention.to_string()),
        ]
    }

    /// The broker users LedgerFlow's own processes publish as: the configured ones and this
    /// process's own.
    pub fn trusted(&self) -> ledgerflow_messaging::TrustedUsers {
        ledgerflow_messaging::TrustedUsers::with_own(&self.trusted_broker_users, &self.amqp_uri)
    }
}

/// Checks a broker list once, at start ([`ledgerflow_messaging::Brokers`]), so a typo stops the
/// process with a message instead of failing every connection attempt forever. Kept as the
/// text given: every connection parses it again, in the messaging crate. A parser of its own
/// because clap's errors for a plain function quote the value, and this one holds a password.
#[derive(Clone, Copy, Debug)]
pub struct BrokerList;

impl clap::builder::TypedValueParser for BrokerList {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let refuse = |why: String| {
            let message = format!("invalid --amqp-uri (LEDGERFLOW_AMQP_URI): {why}\n");
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| refuse("not UTF-8".into()))?;
        ledgerflow_messaging::Brokers::parse(text).map_err(|e| refuse(e.to_string()))?;
        Ok(text.to_owned())
    }
}

/// Parses a secret flag or variable, so that it is never held as a plain `String`.
pub fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

/// The HTTP gateway's settings.
#[derive(Args, Debug, Clone)]
pub struct GatewaySettings {
    /// Address to listen on.
    #[arg(long, env = "LEDGERFLOW_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// HMAC secret for JWTs (at least 32 bytes).
    #[arg(long, env = "LEDGERFLOW_JWT_SECRET", hide_env_values = true, value_parser = secret)]
    pub jwt_secret: Option<SecretString>,
    /// Email of the SYSTEM user to create (or update) at start.
    #[arg(long, env = "LEDGERFLOW_SYSTEM_EMAIL")]
    pub system_email: Option<String>,
    /// Password of that SYSTEM user.
    #[arg(long, env = "LEDGERFLOW_SYSTEM_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub system_password: Option<SecretString>,
    /// Mark the session cookie Secure (set false only for plain-HTTP development).
    #[arg(long, env = "LEDGERFLOW_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,
    /// Republish PENDING transfers older than this, when no command waits in the queues.
    #[arg(long, env = "LEDGERFLOW_REPUBLISH_AFTER", default_value_t = DEFAULT_REPUBLISH_AFTER.into())]
    pub republish_after: humantime::Duration,
    /// How often the republisher looks for them.
    #[arg(long, env = "LEDGERFLOW_REPUBLISH_INTERVAL", default_value_t = DEFAULT_REPUBLISH_INTERVAL.into())]
    pub republish_interval: humantime::Duration,
    /// Longest wait of a transfer's PENDING insert for those of others, and of a read of a
    /// transaction by id for others, under steady load (0s: never wait).
    #[arg(long, env = "LEDGERFLOW_INSERT_LINGER", default_value_t = DEFAULT_INSERT_LINGER.into())]
    pub insert_linger: humantime::Duration,
    /// Failed sign-ins for one email within --login-window after which it is refused (429)
    /// until that window ends.
    #[arg(long, env = "LEDGERFLOW_LOGIN_MAX_FAILURES", default_value_t = DEFAULT_LOGIN_MAX_FAILURES, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures: u32,
    /// The window failed sign-ins are counted in, from the first of them.
    #[arg(long, env = "LEDGERFLOW_LOGIN_WINDOW", default_value_t = DEFAULT_LOGIN_WINDOW.into())]
    pub login_window: humantime::Duration,
    /// Sign-ins, sign-ups and password changes one client address may have waiting for the
    /// password-hashing thread at once (of 32); past it, 429 TOO_MANY_REQUESTS.
    #[arg(long, env = "LEDGERFLOW_HASH_SLOTS_PER_CLIENT", default_value_t = DEFAULT_SLOTS_PER_CLIENT,
          value_parser = clap::value_parser!(u16).range(1..=32).map(usize::from))]
    pub hash_slots_per_client: usize,
    /// The header trusted proxies put the client's address in (e.g. X-Forwarded-For); read
    /// only from the connections of --trusted-proxies, and needs them.
    #[arg(long, env = "LEDGERFLOW_TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<ProxyHeader>,
    /// The proxies (addresses or CIDR networks, comma-separated) whose connections may set
    /// --trusted-proxy-header; needs it.
    #[arg(long, env = "LEDGERFLOW_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ProxyNet>,
    /// How long a user's session version is remembered: a session ended through another
    /// gateway (sign-out, password change) or by `admin sign-out` is honoured here at most
    /// this much longer. Each expiry costs one read per active user.
    #[arg(long, env = "LEDGERFLOW_SESSION_RECHECK", default_value_t = DEFAULT_SESSION_RECHECK.into())]
    pub session_recheck: humantime::Duration,
    /// Not flags: the gateway's own deadlines (`None`: [`GatewayConfig`]'s), which tests
    /// shorten or lengthen.
    #[arg(skip)]
    pub body_deadline: Option<Duration>,
    #[arg(skip)]
    pub head_deadline: Option<Duration>,
    #[arg(skip)]
    pub drain_limit: Option<Duration>,
    /// Which webhook URLs may be registered.
    #[command(flatten)]
    pub webhooks: WebhookPolicySettings,
}

impl GatewaySettings {
    /// The gateway's configuration, signing tokens with `secret`.
    pub fn config(&self, secret: SecretString) -> GatewayConfig {
        let mut config = GatewayConfig::new(secret);
        config.cookie_secure = self.cookie_secure;
        config.republish_after = self.republish_after.into();
        config.republish_interval = self.republish_interval.into();
        config.insert_linger = self.insert_linger.into();
        config.login_max_failures = self.login_max_failures;
        config.login_window = self.login_window.into();
        config.session_recheck = self.session_recheck.into();
        config.hash_slots_per_client = self.hash_slots_per_client;
        // Half a pair is refused at start (`client_addresses`); here it is no proxies.
        config.trusted_proxies = self.client_addresses().ok().flatten();
        config.body_deadline = self.body_deadline.unwrap_or(config.body_deadline);
        config.head_deadline = self.head_deadline.unwrap_or(config.head_deadline);
        config.drain_limit = self.drain_limit.unwrap_or(config.drain_limit);
        config.webhook_policy = self.webhooks.policy();
        config
    }

    /// Where client addresses come from; an error when only the header or only the proxies
    /// are set.
    pub fn client_addresses(&self) -> Result<Option<TrustedProxies>, &'static str> {
        TrustedProxies::new(self.trusted_proxy_header.clone(), &self.trusted_proxies)
    }

    pub fn env(&self) -> Vec<EnvVar> {
        let mut env = vec![
            ("LEDGERFLOW_HTTP_ADDR", self.http_addr.to_string()),
            ("LEDGERFLOW_COOKIE_SECURE", self.cookie_secure.to_string()),
            ("LEDGERFLOW_REPUBLISH_AFTER", self.republish_after.to_string()),
            ("LEDGERFLOW_REPUBLISH_INTERVAL", self.republish_interval.to_string()),
            ("LEDGERFLOW_INSERT_LINGER", self.insert_linger.to_string()),
            ("LEDGERFLOW_LOGIN_MAX_FAILURES", self.login_max_failures.to_string()),
            ("LEDGERFLOW_LOGIN_WINDOW", self.login_window.to_string()),
            ("LEDGERFLOW_SESSION_RECHECK", self.session_recheck.to_string()),
            ("LEDGERFLOW_HASH_SLOTS_PER_CLIENT", self.hash_slots_per_client.to_string()),
        ];
        if let Some(header) = &self.trusted_proxy_header {
            env.push(("LEDGERFLOW_TRUSTED_PROXY_HEADER", header.to_string()));
        }
        if !self.trusted_proxies.is_empty() {
            let proxies: Vec<String> = self.trusted_proxies.iter().map(ToString::to_string).collect();
            env.push(("LEDGERFLOW_TRUSTED_PROXIES", proxies.join(",")));
        }
        if let Some(secret) = &self.jwt_secret {
            env.push(("LEDGERFLOW_JWT_SECRET", secret.expose_secret().to_owned()));
        }
        if let Some(email) = &self.system_email {
            env.push(("LEDGERFLOW_SYSTEM_EMAIL", email.clone()));
        }
        if let Some(password) = &self.system_password {
            env.push(("LEDGERFLOW_SYSTEM_PASSWORD", password.expose_secret().to_owned()));
        }
        env.extend(self.webhooks.env());
        env
    }
}

/// A worker's settings.
#[derive(Args, Debug, Clone)]
pub struct WorkerSettings {
    /// Commands taken from the queue at once by this worker (AMQP prefetch).
    #[arg(long, env = "LEDGERFLOW_WORKER_PREFETCH", default_value_t = DEFAULT_PREFETCH, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub prefetch: u16,
    /// Most commands committed together in one MongoDB transaction (1: no batching).
    #[arg(long, env = "LEDGERFLOW_WORKER_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub max_batch: u16,
    /// Longest wait of a batch for more commands, under steady load (0s: never wait).
    #[arg(long, env = "LEDGERFLOW_WORKER_BATCH_LINGER", default_value_t = DEFAULT_BATCH_LINGER.into())]
    pub batch_linger: humantime::Duration,
    /// Name shown in logs and on the broker connection.
    #[arg(long, env = "LEDGERFLOW_WORKER_NAME")]
    pub name: Option<String>,
    /// Tries before a command that keeps failing transiently (database down) is marked FAILED
    /// with PROCESSING_FAILED and dead-lettered.
    #[arg(long, env = "LEDGERFLOW_WORKER_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Serve Prometheus metrics at `http://<addr>/metrics` (e.g. 0.0.0.0:9090); off when unset.
    #[arg(long, env = "LEDGERFLOW_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl WorkerSettings {
    /// The configuration of this process's worker number `index`.
    pub fn config(&self, connections: &Connections, index: u16) -> WorkerConfig {
        let name = self.name.clone().unwrap_or_else(|| format!("ledgerflow-worker-{}-{index}", std::process::id()));
        let mut config = WorkerConfig::new(&connections.amqp_uri, connections.topology(), name);
        config.prefetch = self.prefetch;
        config.max_batch = usize::from(self.max_batch);
        config.batch_linger = self.batch_linger.into();
        config.max_attempts = self.max_attempts;
        config.trusted_broker_users = connections.trusted_broker_users.clone();
        config
    }

    pub fn env(&self) -> Vec<EnvVar> {
        let mut env = vec![
            ("LEDGERFLOW_WORKER_PREFETCH", self.prefetch.to_string()),
            ("LEDGERFLOW_WORKER_MAX_BATCH", self.max_batch.to_string()),
            ("LEDGERFLOW_WORKER_BATCH_LINGER", self.batch_linger.to_string()),
            ("LEDGERFLOW_WORKER_MAX_ATTEMPTS", self.max_attempts.to_string()),
        ];
        if let Some(name) = &self.name {
            env.push(("LEDGERFLOW_WORKER_NAME", name.clone()));
        }
        if let Some(addr) = self.metrics_addr {
            env.push(("LEDGERFLOW_METRICS_ADDR", addr.to_string()));
        }
        env
    }
}

/// What one process runs: an HTTP gateway, in-process workers, or both (`up`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub connections: Connections,
    /// `None`: this process serves no HTTP.
    pub gateway: Option<GatewaySettings>,
    /// `None`: this process runs no worker. A gateway alone reads none of them, so a worker
    /// variable it could not parse (in an environment shared with workers) cannot stop it.
    pub worker: Option<WorkerSettings>,
    /// Workers this process runs (0 for a gateway alone); needs `worker`.
    pub workers: u16,
    /// Threads the process runs its tasks on (0: one per core).
    pub threads: usize,
}

impl Settings {
    /// These settings as the environment of a child `ledgerflow` process, which reads them
    /// back through the same flags: the connections always, the gateway's and the workers'
    /// only when this process runs them (a one-shot command takes neither).
    pub fn child_env(&self) -> Vec<EnvVar> {
        let mut env = self.connections.env();
        env.push(("LEDGERFLOW_THREADS", self.threads.to_string()));
        if let Some(gateway) = &self.gateway {
            env.extend(gateway.env());
        }
        if let (1.., Some(worker)) = (self.workers, &self.worker) {
            env.extend(worker.env());
        }
        env
    }

    /// The settings of a one-shot command (`reconcile`, `admin`) on the same services.
    pub fn one_shot(&self) -> Settings {
        Settings { gateway: None, worker: None, workers: 0, ..self.clone() }
    }

    /// The settings of a process running one worker and nothing else.
    pub fn worker_only(&self) -> Settings {
        Settings { gateway: None, workers: 1, ..self.clone() }
    }

    /// The settings of a process running the gateway alone.
    pub fn gateway_only(&self) -> Settings {
        Settings { worker: None, workers: 0, ..self.clone() }
    }
}

/// The defaults of a section as flags and the environment give them, for a caller that
/// builds [`Settings`] by hand (tests, the bench) and then changes what it needs.
pub fn from_env<T: Args>() -> Result<T, clap::Error> {
    #[derive(clap::Parser)]
    struct Only<T: Args> {
        #[command(flatten)]
        section: T,
    }
    <Only<T> as clap::Parser>::try_parse_from(["ledgerflow"]).map(|only| only.section)
}

/// How long a one-shot command (`reconcile`, `admin`) waits for MongoDB before it fails: long
/// enough for a replica-set election, short enough that a scheduled reconcile reports an
/// outage instead of hanging. Services (`gateway`, `worker`, `up`) wait as long as it takes.
pub const ONE_SHOT_PATIENCE: Duration = Duration::from_secs(30);

/// Where webhooks may deliver: read by the gateway (registration) and the dispatcher (every
/// attempt), which must agree.
#[derive(Args, Debug, Clone, Default)]
pub struct WebhookPolicySettings {
    /// Let webhooks use plain http:// URLs (development and tests only: deliveries are then
    /// readable and forgeable on the way).
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_http: bool,
    /// Let webhooks reach loopback, private, link-local (the cloud metadata service included),
    /// CGNAT and unique-local addresses (development and tests only).
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
}

impl WebhookPolicySettings {
    pub fn policy(&self) -> UrlPolicy {
        UrlPolicy { allow_http: self.webhook_allow_http, allow_private: self.webhook_allow_private }
    }

    pub fn env(&self) -> Vec<EnvVar> {
        vec![
            ("LEDGERFLOW_WEBHOOK_ALLOW_HTTP", self.webhook_allow_http.to_string()),
            ("LEDGERFLOW_WEBHOOK_ALLOW_PRIVATE", self.webhook_allow_private.to_string()),
        ]
    }
}

/// A webhook dispatcher's settings (`ledgerflow dispatcher`, and the one `ledgerflow up` runs).
#[derive(Args, Debug, Clone)]
pub struct DispatcherSettings {
    /// Name shown in logs and on the deliveries it claims.
    #[arg(long, env = "LEDGERFLOW_DISPATCHER_NAME")]
    pub dispatcher_name: Option<String>,
    /// Webhook deliveries in flight at once.
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from))]
    pub webhook_concurrency: usize,
    /// Deliveries in flight at once to one webhook: what one slow endpoint can hold.
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = DEFAULT_PER_ENDPOINT,
          value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub webhook_endpoint_concurrency: usize,
    /// The longest first retry delay of a failed delivery; it doubles with each try (each
    /// delay is drawn at random below it).
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_RETRY_BASE", default_value_t = DEFAULT_RETRY_BASE.into())]
    pub webhook_retry_base: humantime::Duration,
    /// The longest retry delay.
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_RETRY_CAP", default_value_t = DEFAULT_RETRY_CAP.into())]
    pub webhook_retry_cap: humantime::Duration,
    /// How long after its first attempt a delivery is retried before it is marked FAILED.
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_RETRY_HORIZON", default_value_t = DEFAULT_RETRY_HORIZON.into())]
    pub webhook_retry_horizon: humantime::Duration,
    /// Serve the dispatcher's Prometheus metrics at `http://<addr>/metrics`; off when unset
    /// (under `up`, the gateway's /metrics has them too).
    #[arg(long, env = "LEDGERFLOW_DISPATCHER_METRICS_ADDR")]
    pub dispatcher_metrics_addr: Option<SocketAddr>,
    /// A PEM file of root certificates to trust for webhook endpoints besides the public
    /// web's: for endpoints whose certificates a private CA issued.
    #[arg(long, env = "LEDGERFLOW_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
}

impl DispatcherSettings {
    /// The configuration of this process's dispatcher, delivering under `policy`; fails when
    /// `--webhook-ca-file` cannot be read or holds no certificate.
    pub fn config(&self, policy: &WebhookPolicySettings) -> anyhow::Result<DispatcherConfig> {
        let name =
            self.dispatcher_name.clone().unwrap_or_else(|| format!("ledgerflow-dispatcher-{}", std::process::id()));
        let mut config = DispatcherConfig::new(name, policy.policy());
        config.concurrency = self.webhook_concurrency;
        config.per_endpoint = self.webhook_endpoint_concurrency;
        config.retry = RetryPolicy {
            base: self.webhook_retry_base.into(),
            cap: self.webhook_retry_cap.into(),
            horizon: self.webhook_retry_horizon.into(),
        };
        if let Some(path) = &self.webhook_ca_file {
            let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let count = config
                .trust_pem_roots(&pem)
                .with_context(|| format!("{} is not a PEM bundle of certificates", path.display()))?;
            anyhow::ensure!(count > 0, "{} holds no certificate", path.display());
        }
        Ok(config)
    }

    pub fn env(&self) -> Vec<EnvVar> {
        let mut env = vec![
            ("LEDGERFLOW_WEBHOOK_CONCURRENCY", self.webhook_concurrency.to_string()),
            ("LEDGERFLOW_WEBHOOK_ENDPOINT_CONCURRENCY", self.webhook_endpoint_concurrency.to_string()),
            ("LEDGERFLOW_WEBHOOK_RETRY_BASE", self.webhook_retry_base.to_string()),
            ("LEDGERFLOW_WEBHOOK_RETRY_CAP", self.webhook_retry_cap.to_string()),
            ("LEDGERFLOW_WEBHOOK_RETRY_HORIZON", self.webhook_retry_horizon.to_string()),
        ];
        if let Some(name) = &self.dispatcher_name {
            env.push(("LEDGERFLOW_DISPATCHER_NAME", name.clone()));
        }
        if let Some(addr) = self.dispatcher_metrics_addr {
            env.push(("LEDGERFLOW_DISPATCHER_METRICS_ADDR", addr.to_string()));
        }
        if let Some(path) = &self.webhook_ca_file {
            env.push(("LEDGERFLOW_WEBHOOK_CA_FILE", path.display().to_string()));
        }
        env
    }
}
