//! Clustered services of the test's own, for the cluster fault tests: a RabbitMQ cluster
//! ([`RabbitCluster`]) and a MongoDB replica set ([`MongoReplicaSet`]) on loopback, from the
//! binaries `scripts/services.sh` installs, each node with its own ports, node name, data
//! directory and (RabbitMQ) Erlang cookie, beside the shared broker and mongod, which they
//! never touch: nothing here names port 5672 or 27017, the shared broker's node or its cookie.
//!
//! Every node is a child process of the test. The guards kill (SIGKILL) whatever of theirs
//! still runs and delete their data when dropped, so a failing or timed-out test leaves no
//! node behind. Node logs are written to `$TMPDIR/ledgerflow-fault-logs/`: a failing test
//! prints their tails and keeps them, a passing one deletes them (unless
//! `LEDGERFLOW_FAULT_KEEP_LOGS` is set, as for the other fault tests' process logs).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ledgerflow_testkit::{LoggedChild, free_local_addr};
use mongodb::bson::{Document, doc};
use serde_json::Value;

use crate::services::repo_root;

/// Upper bound for a node to boot, or for a cluster or replica set to form.
pub const NODE_DEADLINE: Duration = Duration::from_secs(60);
/// Upper bound for one `rabbitmqctl` command.
const CTL_LIMIT: Duration = Duration::from_secs(30);
/// How often a node is polled while it starts.
const POLL: Duration = Duration::from_millis(200);

/// Debian's rabbitmq-server keeps its scripts here; `/usr/sbin`'s are wrappers that switch to
/// the `rabbitmq` user, which would not read this test's cookie or write its directories.
const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";

fn log_dir() -> PathBuf {
    std::env::temp_dir().join("ledgerflow-fault-logs")
}

/// A fresh directory for one cluster's data, removed by the guard.
fn fresh_dir(kind: &str, tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ledgerflow-{kind}-{tag}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Deletes the logs of `nodes` after a test that passed, unless asked to keep them.
fn remove_logs<'a>(nodes: impl Iterator<Item = &'a LoggedChild>) {
    if std::thread::panicking() || std::env::var_os("LEDGERFLOW_FAULT_KEEP_LOGS").is_some() {
        return;
    }
    for node in nodes {
        let _ = std::fs::remove_file(&node.log);
    }
}

fn free_port() -> Result<u16> {
    Ok(free_local_addr()?.port())
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

/// The pids of processes whose command line (read with a blank after each argument) contains
/// `needle`, through /proc.
fn pids_with(needle: &str) -> Vec<u32> {
    pids_where(|pid| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some(String::from_utf8_lossy(&raw).replace('\0', " ").contains(needle))
    })
}

/// The pids of processes started with `entry` (`NAME=value`) in their environment, except an
/// epmd a node may have started: other Erlang nodes on the host (the shared broker) rely on it.
fn pids_with_env(entry: &str) -> Vec<u32> {
    pids_where(|pid| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        if exe.file_name().is_some_and(|n| n == "epmd") {
            return Some(false);
        }
        let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        Some(raw.split(|b| *b == 0).any(|e| e == entry.as_bytes()))
    })
}

fn pids_where(test: impl Fn(u32) -> Option<bool>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id() && test(*pid).unwrap_or(false))
        .collect()
}

/// SIGKILL to a pid, through kill(1) (the workspace forbids the `unsafe` of kill(2)).
fn sigkill(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

// ------------------------------------------------------------------------------ RabbitMQ

/// One node of a [`RabbitCluster`].
pub struct RabbitNode {
    /// `<name>@localhost`.
    pub node: String,
    pub amqp_port: u16,
    pub dist_port: u16,
    /// The `rabbitmq-server` script, which runs the Erlang VM as its child and logs its output.
    pub server: LoggedChild,
}

impl RabbitNode {
    /// The node's AMQP URI, as the default `guest` user (allowed on loopback).
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }
}

/// A RabbitMQ cluster of the test's own: see the module documentation.
pub struct RabbitCluster {
    dir: PathBuf,
    /// Unique to this cluster; in every node name, so its processes can be found by it.
    tag: String,
    pub nodes: Vec<RabbitNode>,
}

/// A queue as `rabbitmqctl list_queues` reports it.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    pub name: String,
    /// Nodes of its replicas (quorum queues).
    pub members: Vec<String>,
    /// The node of its leader (quorum queues).
    pub leader: String,
}

impl RabbitCluster {
    /// Starts `size` nodes with the consistent-hash exchange plugin, clusters them with the
    /// first, and waits until every node runs in the cluster.
    pub async fn start(size: usize) -> Result<Self> {
        Self::start_configured(size, "[].").await
    }

    /// Like [`RabbitCluster::start`], every node with `advanced` as its `advanced.config` (an
    /// Erlang term list, for settings `rabbitmq.conf` does not take).
    pub async fn start_configured(size: usize, advanced: &str) -> Result<Self> {
        ensure!(
            Path::new(RABBITMQ_BIN).join("rabbitmq-server").is_file(),
            "{RABBITMQ_BIN}/rabbitmq-server is missing: run scripts/services.sh (it installs Debian's rabbitmq-server)"
        );
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let dir = fresh_dir("rabbit", &tag)?;
        let mut cluster = Self { dir, tag, nodes: Vec::new() };
        cluster.write_shared_files(advanced)?;
        for i in 0..size {
            let node = cluster.spawn_node(i)?;
            cluster.nodes.push(node);
        }
        let by = Instant::now() + NODE_DEADLINE;
        for i in 0..size {
            cluster.wait_booted(i, by).await?;
        }
        for i in 1..size {
            let first = cluster.nodes[0].node.clone();
            for args in [&["stop_app"][..], &["join_cluster", &first], &["start_app"]] {
                cluster.ctl(i, args).await?;
            }
        }
        cluster.ctl(0, &["await_startup"]).await?;
        let status = cluster.ctl(0, &["cluster_status", "--formatter", "json"]).await?;
        let status: Value = serde_json::from_str(&status).context("cluster_status printed no JSON")?;
        let running = status["running_nodes"].as_array().map_or(0, Vec::len);
        ensure!(running == size, "only {running} of {size} nodes run in the cluster: {status}");
        Ok(cluster)
    }

    /// The cookie (in `$HOME` of every node and `rabbitmqctl` call), the plugin list, the
    /// advanced configuration, and an empty environment file: Debian's
    /// `/etc/rabbitmq/rabbitmq-env.conf` is the shared broker's and would give every node its
    /// name.
    fn write_shared_files(&self, advanced: &str) -> Result<()> {
        let cookie = self.dir.join(".erlang.cookie");
        std::fs::write(&cookie, format!("LEDGERFLOWTEST{}", self.tag.to_uppercase()))?;
        // Erlang refuses a cookie others can read.
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
        std::fs::write(self.dir.join("enabled_plugins"), "[rabbitmq_consistent_hash_exchange].\n")?;
        std::fs::write(self.dir.join("rabbitmq-env.conf"), "")?;
        std::fs::write(self.dir.join("rabbitmq.conf"), "")?;
        std::fs::write(self.dir.join("advanced.config"), advanced)?;
        Ok(())
    }

    /// The environment every node and `rabbitmqctl` call shares.
    fn env(&self, command: &mut Command) {
        command
            .env("HOME", &self.dir)
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", self.dir.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }

    fn spawn_node(&self, i: usize) -> Result<RabbitNode> {
        let name = format!("lf-{}-{i}", self.tag);
        let node = format!("{name}@localhost");
        let (amqp_port, dist_port) = (free_port()?, free_port()?);
        let base = self.dir.join(&name);
        std::fs::create_dir_all(&base)?;
        let mut command = Command::new(Path::new(RABBITMQ_BIN).join("rabbitmq-server"));
        self.env(&mut command);
        command
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_BASE", &base)
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_PID_FILE", base.join("pid"))
            // To standard output, which the child's log file takes.
            .env("RABBITMQ_LOGS", "-")
            // Inter-node traffic on loopback only, like everything else here.
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}");
        std::fs::create_dir_all(log_dir())?;
        let log = log_dir().join(format!("rabbit-{name}.log"));
        let server = LoggedChild::spawn(command, &name, &log).with_context(|| format!("cannot start {node}"))?;
        Ok(RabbitNode { node, amqp_port, dist_port, server })
    }

    /// Waits until node `i` takes AMQP connections (the listener opens last in its boot).
    async fn wait_booted(&mut self, i: usize, by: Instant) -> Result<()> {
        loop {
            let node = &mut self.nodes[i];
            if let Some(status) = node.server.exited() {
                bail!("{} exited while booting ({status}); {}", node.node, node.server.tail(30));
            }
            if port_open(node.amqp_port) {
                return Ok(());
            }
            ensure!(Instant::now() < by, "{} did not boot in time; {}", node.node, node.server.tail(30));
            tokio::time::sleep(POLL).await;
        }
    }

    /// `rabbitmqctl -n <node i> <args>`, bounded; its standard output.
    pub async fn ctl(&self, i: usize, args: &[&str]) -> Result<String> {
        let mut command = Command::new(Path::new(RABBITMQ_BIN).join("rabbitmqctl"));
        self.env(&mut command);
        command.arg("-n").arg(&self.nodes[i].node).args(args);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true).stdin(std::process::Stdio::null());
        let what = format!("rabbitmqctl -n {} {}", self.nodes[i].node, args.join(" "));
        let out = tokio::time::timeout(CTL_LIMIT, command.output())
            .await
            .with_context(|| format!("`{what}` did not finish within {CTL_LIMIT:?}"))?
            .with_context(|| format!("`{what}` did not run"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "`{what}` failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// Every node's URI, comma-separated, in node order: a `LEDGERFLOW_AMQP_URI` list.
    pub fn uri_list(&self) -> String {
        self.nodes.iter().map(RabbitNode::uri).collect::<Vec<_>>().join(",")
    }

    /// The queues whose names start with `prefix`, as node `via` reports them.
    pub async fn queues(&self, via: usize, prefix: &str) -> Result<Vec<QueueInfo>> {
        let out = self.ctl(via, &["list_queues", "name", "leader", "members", "--formatter", "json", "-q"]).await?;
        let rows: Vec<Value> = serde_json::from_str(&out).with_context(|| format!("list_queues printed {out}"))?;
        Ok(rows
            .iter()
            .filter(|q| q["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .map(|q| QueueInfo {
                name: q["name"].as_str().unwrap_or_default().to_owned(),
                leader: q["leader"].as_str().unwrap_or_default().to_owned(),
                members: q["members"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// The index of the node named `node`.
    pub fn index_of(&self, node: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.node == node)
    }

    /// SIGKILLs node `i`'s Erlang VM, as a crash would, and waits until its AMQP port refuses.
    pub async fn kill(&mut self, i: usize) -> Result<()> {
        let node = self.nodes[i].node.clone();
        // The VM is the script's child; only their environment names the node.
        let processes = pids_with_env(&format!("RABBITMQ_NODENAME={node}"));
        ensure!(processes.len() > 1, "no Erlang VM of {node} to kill");
        for pid in processes {
            sigkill(pid);
        }
        self.nodes[i].server.stopped = true;
        let by = Instant::now() + Duration::from_secs(10);
        while port_open(self.nodes[i].amqp_port) {
            ensure!(Instant::now() < by, "{node} still takes connections after SIGKILL");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The last lines of every node's log, for failure messages.
    pub fn tails(&self, n: usize) -> String {
        self.nodes.iter().map(|node| node.server.tail(n)).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("RabbitMQ cluster of the failed test:\n{}", self.tails(15));
        }
        // Every process of this cluster (its nodes' VMs, which outlive their scripts, and any
        // rabbitmqctl still running): all have its directory as their home.
        let home = format!("HOME={}", self.dir.display());
        for pid in pids_with_env(&home) {
            sigkill(pid);
        }
        remove_logs(self.nodes.iter().map(|n| &n.server));
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------------------ MongoDB

/// One member of a [`MongoReplicaSet`].
pub struct MongoMember {
    pub port: u16,
    pub process: LoggedChild,
}

impl MongoMember {
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A MongoDB replica set of the test's own: see the module documentation.
pub struct MongoReplicaSet {
    dir: PathBuf,
    /// The replica set's name.
    pub name: String,
    pub members: Vec<MongoMember>,
}

/// The mongod `scripts/services.sh` installs: under `$LEDGERFLOW_MONGO_DIR` or this checkout's
/// `.local/mongodb/`, as the script puts it; failing that (a second worktree of the checkout
/// that installed it), the executable of the shared mongod on the test port, the same binary.
pub fn mongod_binary() -> Result<PathBuf> {
    let home =
        std::env::var_os("LEDGERFLOW_MONGO_DIR").map_or_else(|| repo_root().join(".local/mongodb"), PathBuf::from);
    let installed = home.join("pkg/fiftyone/db/bin/mongod");
    if installed.is_file() {
        return Ok(installed);
    }
    let port = std::env::var("LEDGERFLOW_MONGO_PORT").unwrap_or_else(|_| "27017".into());
    // Command lines are read with a blank after every argument.
    for pid in pids_with(&format!("--port {port} ")) {
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe"))
            && exe.file_name().is_some_and(|n| n == "mongod")
        {
            return Ok(exe);
        }
    }
    bail!("no mongod at {} and none running: run scripts/services.sh", installed.display())
}

impl MongoReplicaSet {
    /// Starts `size` mongods and initiates them as one replica set whose first member is the
    /// primary (the highest priority); waits until the others are SECONDARY, so an election
    /// can follow the primary's death.
    ///
    /// Elections time out after 5 s instead of MongoDB's 10 s, which keeps the test short: the
    /// recovery time it prints moves with this setting.
    pub async fn start(size: usize) -> Result<Self> {
        let mongod = mongod_binary()?;
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let dir = fresh_dir("mongo", &tag)?;
        let name = format!("lf-{tag}");
        let mut set = Self { dir, name, members: Vec::new() };
        std::fs::create_dir_all(log_dir())?;
        for i in 0..size {
            let port = free_port()?;
            let dbpath = set.dir.join(format!("m{i}"));
            std::fs::create_dir_all(&dbpath)?;
            let mut command = Command::new(&mongod);
            command
                .args(["--replSet", &set.name, "--bind_ip", "127.0.0.1", "--port", &port.to_string()])
                .arg("--dbpath")
                .arg(&dbpath)
                .args(["--wiredTigerCacheSizeGB", "0.25", "--oplogSize", "128"])
                // As scripts/services.sh sets it on the shared mongod: a crashed client's open
                // transaction frees its documents after 10 s, not 60.
                .args(["--setParameter", "transactionLifetimeLimitSeconds=10"]);
            let member = format!("mongod-{}-{i}", set.name);
            let log = log_dir().join(format!("{member}.log"));
            let process =
                LoggedChild::spawn(command, &member, &log).with_context(|| format!("cannot start {member}"))?;
            set.members.push(MongoMember { port, process });
        }
        let by = Instant::now() + NODE_DEADLINE;
        for i in 0..size {
            set.wait_listening(i, by).await?;
        }
        set.initiate().await?;
        set.wait_formed(by).await?;
        Ok(set)
    }

    async fn wait_listening(&mut self, i: usize, by: Instant) -> Result<()> {
        loop {
            let member = &mut self.members[i];
            if let Some(status) = member.process.exited() {
                bail!("{} exited at start ({status}); {}", member.process.name, member.process.tail(30));
            }
            if port_open(member.port) {
                return Ok(());
            }
            ensure!(Instant::now() < by, "{} did not listen in time; {}", member.process.name, member.process.tail(30));
            tokio::time::sleep(POLL).await;
        }
    }

    /// A client of member `i` alone.
    async fn direct(&self, i: usize) -> Result<mongodb::Client> {
        let uri = format!("mongodb://{}/?directConnection=true&serverSelectionTimeoutMS=2000", self.members[i].host());
        Ok(mongodb::Client::with_uri_str(uri).await?)
    }

    async fn initiate(&self) -> Result<()> {
        let members: Vec<Document> = (0..self.members.len())
            .map(|i| {
                let priority = if i == 0 { 2 } else { 1 };
                doc! { "_id": i as i32, "host": self.members[i].host(), "priority": priority }
            })
            .collect();
        let config = doc! {
            "_id": &self.name,
            "members": members,
            "settings": { "electionTimeoutMillis": 5000 },
        };
        self.direct(0).await?.database("admin").run_command(doc! { "replSetInitiate": config }).await?;
        Ok(())
    }

    /// Waits until one member is PRIMARY and every other SECONDARY.
    async fn wait_formed(&self, by: Instant) -> Result<()> {
        let client = self.direct(0).await?;
        loop {
            let states = match client.database("admin").run_command(doc! { "replSetGetStatus": 1 }).await {
                Ok(status) => status
                    .get_array("members")
                    .map(|m| {
                        m.iter().filter_map(|m| m.as_document()?.get_str("stateStr").ok().map(str::to_owned)).collect()
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::<String>::new(),
            };
            let primaries = states.iter().filter(|s| *s == "PRIMARY").count();
            let secondaries = states.iter().filter(|s| *s == "SECONDARY").count();
            if primaries == 1 && primaries + secondaries == self.members.len() {
                return Ok(());
            }
            ensure!(Instant::now() < by, "replica set {} not formed in time: {states:?}", self.name);
            tokio::time::sleep(POLL).await;
        }
    }

    /// The connection string of the whole set.
    pub fn uri(&self) -> String {
        let hosts: Vec<String> = self.members.iter().map(MongoMember::host).collect();
        format!("mongodb://{}/?replicaSet={}", hosts.join(","), self.name)
    }

    /// The member that says it is the writable primary, asking those still running.
    pub async fn primary(&mut self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].process.exited().is_some() {
                continue;
            }
            let Ok(client) = self.direct(i).await else { continue };
            let hello = client.database("admin").run_command(doc! { "hello": 1 }).await;
            if hello.is_ok_and(|h| h.get_bool("isWritablePrimary").unwrap_or(false)) {
                return Some(i);
            }
        }
        None
    }

    /// SIGKILLs member `i`, as a crash would.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let process = &mut self.members[i].process;
        process.sigkill().with_context(|| format!("cannot kill {}", process.name))?;
        Ok(())
    }

    pub fn tails(&self, n: usize) -> String {
        self.members.iter().map(|m| m.process.tail(n)).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for MongoReplicaSet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("MongoDB replica set of the failed test:\n{}", self.tails(10));
        }
        remove_logs(self.members.iter().map(|m| &m.process));
        // Each member is a LoggedChild, killed as it drops.
        self.members.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
