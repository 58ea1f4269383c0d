//! `ledgerflow`: one binary for every LedgerFlow process.
//!
//! `gateway` and `worker` are what production runs (scaled separately); `up` runs a gateway
//! and N workers in one process for a laptop; `admin` holds operator tasks.

mod admin;
mod allocator;
mod bench;
mod cli;
mod reconcile;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;
use ledgerflow::app::{ensure_system_user, open_store, runtime, shutdown_on_signal};
use ledgerflow::settings::{Connections, ONE_SHOT_PATIENCE};
use ledgerflow::{App, Settings};
use ledgerflow_domain::AccountStatus;
use ledgerflow_store::{ReconcileOptions, Store};
use secrecy::SecretString;
use tracing::warn;

use crate::cli::{Accounts, Admin, Cli, Command, DispatcherArgs, Dlq, Services};

/// Runs a one-shot command against the store, then shuts its client down before the process
/// exits (see [`Store::shutdown`]), whether the command succeeded or not.
async fn with_store<T>(conn: &Connections, command: impl AsyncFnOnce(&Store) -> Result<T>) -> Result<T> {
    let store = open_store(conn, Some(ONE_SHOT_PATIENCE)).await?;
    let result = command(&store).await;
    store.shutdown().await;
    result
}

fn main() -> ExitCode {
    enlarge_thread_stacks();
    allocator::purge_promptly();
    ledgerflow_telemetry::init_tracing();
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

async fn run(cli: Cli) -> Result<()> {
    let (connections, threads) = (cli.conn, cli.threads);
    let conn = &connections;
    match cli.command {
        Command::Gateway(gateway) => {
            let settings = Settings { connections, gateway: Some(gateway), worker: None, workers: 0, threads };
            App::build(&settings).await?.run_until_stopped(shutdown_on_signal()).await?;
        }
        Command::Worker(worker) => {
            let settings = Settings { connections, gateway: None, worker: Some(worker), workers: 1, threads };
            App::build(&settings).await?.run_until_stopped(shutdown_on_signal()).await?;
        }
        Command::Up(mut up) => {
            if up.gateway.jwt_secret.is_none() {
                if !up.dev {
                    bail!("LEDGERFLOW_JWT_SECRET is required (or pass --dev)");
                }
                let mut bytes = [0u8; 32];
                rand::fill(&mut bytes);
                warn!("==================================================================");
                warn!("DEV MODE: no LEDGERFLOW_JWT_SECRET set, so a random one was made up.");
                warn!("Tokens will stop working when this process exits. Never do this in production.");
                warn!("==================================================================");
                up.gateway.jwt_secret = Some(SecretString::from(hex::encode(bytes)));
            }
            if up.dev {
                up.gateway.cookie_secure = false;
            }
            let policy = up.gateway.webhooks.clone();
            let dispatcher_connections = connections.clone();
            let settings = Settings {
                connections,
                gateway: Some(up.gateway),
                worker: Some(up.worker),
                workers: up.workers,
                threads,
            };
            let shutdown = shutdown_on_signal();
            let dispatcher = tokio::spawn(ledgerflow::dispatch::run(
                dispatcher_connections,
                policy,
                up.dispatcher,
                shutdown.clone(),
            ));
            let ran = async { App::build(&settings).await?.run_until_stopped(shutdown.clone()).await }.await;
            // The gateway stopped (asked to, or failing): the dispatcher stops with it.
            shutdown.cancel();
            let dispatched = dispatcher.await;
            ran?;
            dispatched.map_err(|e| anyhow::anyhow!("the dispatcher failed: {e}"))??;
        }
        Command::Dispatcher(DispatcherArgs { policy, dispatcher }) => {
            ledgerflow::dispatch::run(connections, policy, dispatcher, shutdown_on_signal()).await?;
        }
        // Forwarded in `main`, before any runtime starts.
        Command::Bench(_) => unreachable!("ledgerflow bench is forwarded before the runtime starts"),
        Command::Reconcile { json, max_pending_age, hold_expiry_grace } => {
            let options = ReconcileOptions { max_pending_age, hold_expiry_grace };
            if !with_store(conn, async |store| reconcile::run(store, &options, json).await).await? {
                std::process::exit(1);
            }
        }
        Command::Admin(Admin::Accounts(Accounts::List { owner, limit })) => {
            with_store(conn, async |store| admin::list_accounts(store, owner.as_deref(), limit).await).await?;
        }
        Command::Admin(Admin::Accounts(Accounts::Suspend { account })) => {
            with_store(conn, async |store| admin::set_status(store, &account, AccountStatus::Suspended).await).await?;
        }
        Command::Admin(Admin::Accounts(Accounts::Reactivate { account })) => {
            with_store(conn, async |store| admin::set_status(store, &account, AccountStatus::Active).await).await?;
        }
        Command::Admin(Admin::Accounts(Accounts::Close { account })) => {
            with_store(conn, async |store| admin::set_status(store, &account, AccountStatus::Closed).await).await?;
        }
        Command::Admin(Admin::Statement { account, from, to, csv }) => {
            with_store(conn, async |store| admin::statement(store, &account, &from, &to, csv).await).await?;
        }
        Command::Admin(Admin::SignOut { email }) => {
            with_store(conn, async |store| admin::sign_out(store, &email).await).await?;
        }
        Command::Admin(Admin::Transaction { id }) => {
            with_store(conn, async |store| admin::show_transaction(store, &id).await).await?;
        }
        Command::Admin(Admin::Dlq(Dlq::List { limit })) => {
            admin::list_dead_letters(&conn.amqp_uri, &conn.topology(), limit).await?;
        }
        Command::Admin(Admin::Dlq(Dlq::Replay { limit })) => {
            admin::replay_dead_letters(&conn.amqp_uri, &conn.topology(), &conn.trusted(), limit).await?;
        }
        Command::Admin(Admin::Services(services)) => {
            with_store(conn, async |store| match services {
                Services::Add { name, broker_user } => admin::add_service(store, &name, &broker_user).await,
                Services::List => admin::list_services(store).await,
                Services::Show { name } => admin::show_service(store, &name).await,
                Services::Grant(g) => admin::change_grant(store, &g.into(), true).await,
                Services::Revoke(g) => admin::change_grant(store, &g.into(), false).await,
                Services::Disable { name } => admin::set_service_enabled(store, &name, false).await,
                Services::Enable { name } => admin::set_service_enabled(store, &name, true).await,
            })
            .await?;
        }
        Command::Admin(Admin::CreateSystemUser { email, password }) => {
            with_store(conn, async |store| ensure_system_user(store, &email, &password).await).await?;
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

    use std::collections::BTreeMap;

    use clap::CommandFactory;
    use ledgerflow_gateway::DEFAULT_SESSION_RECHECK;
    use secrecy::SecretString;

    use super::{Cli, Command, runtime};

    /// The settings read from the environment by the telemetry crate, not through flags.
    const LOG_SETTINGS: [&str; 2] = ["LEDGERFLOW_LOG", "LEDGERFLOW_LOG_FORMAT"];

    /// The `code spans` of a Markdown table cell, in order.
    fn code_spans(cell: &str) -> Vec<&str> {
        cell.split('`').skip(1).step_by(2).collect()
    }

    /// Every variable the configuration document's table lists, with the cell of defaults of
    /// its row split like the variables (one default per variable, where the row has them).
    fn documented() -> BTreeMap<String, Option<String>> {
        let doc = include_str!("../../../docs/configuration.md");
        let mut documented = BTreeMap::new();
        for row in doc.lines().filter(|line| line.starts_with("| `LEDGERFLOW_")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let names = code_spans(cells[0]);
            let defaults = code_spans(cells[1]);
            let has_defaults = cells[1].trim_start().starts_with('`') && defaults.len() == names.len();
            for (i, name) in names.into_iter().enumerate() {
                documented.insert(name.to_owned(), has_defaults.then(|| defaults[i].to_owned()));
            }
        }
        documented
    }

    /// Every variable the services' flags read (`gateway`, `worker`, `up`, and the global
    /// ones), with its default.
    fn declared() -> BTreeMap<String, Option<String>> {
        let mut cli = Cli::command();
        cli.build();
        let mut declared = BTreeMap::new();
        for sub in ["gateway", "worker", "up", "dispatcher"] {
            let sub = cli.find_subcommand(sub).expect("a service subcommand");
            for arg in sub.get_arguments().chain(cli.get_arguments()) {
                let Some(env) = arg.get_env() else { continue };
                let default = arg.get_default_values().first().map(|d| d.to_string_lossy().into_owned());
                declared.insert(env.to_string_lossy().into_owned(), default);
            }
        }
        declared
    }

    /// A child process started with a process's settings gets every one of them: a flag
    /// added without its place in `child_env` would silently take its default in children.
    #[test]
    fn child_processes_get_every_setting() {
        let cli = Cli::try_parse_from([
            "ledgerflow",
            "up",
            "--jwt-secret",
            "j",
            "--system-email",
            "e",
            "--name",
            "n",
            "--dispatcher-name",
            "d",
            "--dispatcher-metrics-addr",
            "127.0.0.1:9091",
            "--webhook-ca-file",
            "/etc/ledgerflow/webhook-ca.pem",
        ])
        .expect("arguments parse");
        let Command::Up(up) = cli.command else { panic!("an up command") };
        // A dispatcher's section renders its own environment (`Settings` carries none: the
        // test kit passes it beside them to a `ledgerflow dispatcher` child).
        let dispatcher_env = up.dispatcher.env();
        let mut worker = up.worker;
        worker.metrics_addr = Some("127.0.0.1:9090".parse().expect("an address"));
        let mut gateway = up.gateway;
        gateway.system_password = Some(SecretString::from("p".to_owned()));
        gateway.trusted_proxy_header = Some("X-Forwarded-For".parse().expect("a header name"));
        gateway.trusted_proxies = vec!["10.0.0.0/8".parse().expect("a network")];
        let settings = ledgerflow::Settings {
            connections: cli.conn,
            gateway: Some(gateway),
            worker: Some(worker),
            workers: 1,
            threads: 1,
        };
        let mut rendered: Vec<&str> =
            settings.child_env().iter().chain(&dispatcher_env).map(|(name, _)| *name).collect();
        rendered.sort_unstable();
        assert_eq!(rendered, declared().keys().map(String::as_str).collect::<Vec<_>>());
        // Secrets reach the child, and only there.
        let env: BTreeMap<_, _> = settings.child_env().into_iter().collect();
        assert_eq!(env["LEDGERFLOW_JWT_SECRET"], "j");
        assert!(!format!("{settings:?}").contains("\"j\""), "{settings:?}");
    }

    #[test]
    fn the_configuration_document_lists_every_setting_with_its_default() {
        let mut documented = documented();
        for name in LOG_SETTINGS {
            assert!(documented.remove(name).is_some(), "docs/configuration.md does not list {name}");
        }
        let declared = declared();
        let names = |map: &BTreeMap<String, Option<String>>| map.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&documented), names(&declared), "docs/configuration.md against the flags");
        for (name, default) in &declared {
            assert_eq!(&documented[name], default, "the default of {name} in docs/configuration.md");
        }
    }

    #[test]
    fn the_gateway_takes_its_settings_from_the_command_line() {
        let config = |extra: &[&str]| {
            let cli = Cli::try_parse_from([&["ledgerflow", "gateway"], extra].concat()).expect("arguments parse");
            let Command::Gateway(args) = cli.command else { panic!("a gateway command") };
            args.config(SecretString::from("s".repeat(32)))
        };
        assert_eq!(config(&[]).session_recheck, DEFAULT_SESSION_RECHECK);
        let set = config(&["--session-recheck", "1s", "--login-max-failures", "3", "--login-window", "2m"]);
        assert_eq!(set.session_recheck, Duration::from_secs(1));
        assert_eq!((set.login_max_failures, set.login_window), (3, Duration::from_secs(120)));
        assert_eq!(config(&[]).hash_slots_per_client, ledgerflow_gateway::DEFAULT_SLOTS_PER_CLIENT);
        assert_eq!(config(&["--hash-slots-per-client", "3"]).hash_slots_per_client, 3);
        assert!(config(&[]).trusted_proxies.is_none());
        let behind = ["--trusted-proxy-header", "X-Forwarded-For", "--trusted-proxies", "10.0.0.0/8,127.0.0.1"];
        assert!(config(&behind).trusted_proxies.is_some());
    }

    /// A trusted proxy header needs the proxies it is believed from, and the other way round:
    /// half a pair stops the gateway at start rather than trusting anyone, or no one.
    #[test]
    fn the_client_address_settings_come_in_pairs() {
        let args = |extra: &[&str]| {
            let cli = Cli::try_parse_from([&["ledgerflow", "gateway"], extra].concat()).expect("arguments parse");
            let Command::Gateway(args) = cli.command else { panic!("a gateway command") };
            args
        };
        assert!(args(&["--trusted-proxy-header", "X-Forwarded-For"]).client_addresses().is_err());
        assert!(args(&["--trusted-proxies", "10.0.0.0/8"]).client_addresses().is_err());
        for refused in [
            ["--trusted-proxies", "10.0.0.0/33"],
            ["--trusted-proxy-header", "Forwarded"],
            ["--hash-slots-per-client", "0"],
        ] {
            assert!(Cli::try_parse_from([&["ledgerflow", "gateway"], &refused[..]].concat()).is_err(), "{refused:?}");
        }
    }

    /// A list of a cluster's nodes is taken as given; one that no connection could use stops
    /// the process at start, not at every reconnection.
    #[test]
    fn the_broker_setting_takes_a_list_of_nodes_and_refuses_a_malformed_one() {
        let parse = |uri: &str| Cli::try_parse_from(["ledgerflow", "--amqp-uri", uri, "reconcile"]);
        let list = "amqp://lf:p@10.0.0.1:5672/%2f, amqp://lf:p@10.0.0.2:5672/%2f";
        assert_eq!(parse(list).expect("a list parses").conn.amqp_uri, list);
        for bad in ["amqp://lf:p@10.0.0.1:5672/%2f,", "amqp://lf:p@h1/%2f,amqp://other:p@h2/%2f", "h1:5672"] {
            let Err(e) = parse(bad) else { panic!("{bad} was taken") };
            let e = e.to_string();
            assert!(e.contains("broker address") && !e.contains(":p@"), "{bad}: {e}");
        }
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
