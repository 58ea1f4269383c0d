//! `ledgerflow` as a process: one-shot commands (`reconcile`, `admin`, `bench`) and worker
//! processes on a test app's database and queues.

use std::time::Duration;

use ledgerflow::Settings;
use ledgerflow::settings::WorkerSettings;
use ledgerflow_testkit::{Gateway, Launcher, Worker};
use serde_json::Value;

use crate::{DEADLINE, TestApp};

/// The `ledgerflow` binary built by `scripts/test.sh` (override with `LEDGERFLOW_BIN`).
pub fn ledgerflow_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("LEDGERFLOW_BIN") {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/ledgerflow")
}

/// `ledgerflow` (the binary) with `settings` as its environment ([`Settings::child_env`]):
/// quiet, with no standard input. Callers add the subcommand and anything else.
pub fn ledgerflow_command(settings: &Settings) -> std::process::Command {
    let mut cmd = std::process::Command::new(ledgerflow_bin());
    cmd.envs(settings.child_env()).env("LEDGERFLOW_LOG", "warn").stdin(std::process::Stdio::null());
    cmd
}

/// Runs a `ledgerflow` command to its end, within `deadline`.
pub async fn cli_output(cmd: std::process::Command, deadline: Duration) -> std::process::Output {
    let out = tokio::process::Command::from(cmd).output();
    tokio::time::timeout(deadline, out).await.expect("cli finishes in time").expect("ledgerflow runs")
}

impl TestApp {
    /// `ledgerflow` on this app's services, database and queues ([`ledgerflow_command`]);
    /// the caller adds the subcommand.
    pub fn cli(&self) -> std::process::Command {
        ledgerflow_command(&self.settings.one_shot())
    }

    /// How this app starts `ledgerflow` processes: as testkit's `LoggedChild`ren (killed when
    /// dropped, so a failing test leaves no process behind to consume its queues), logging
    /// warnings to files named after the app's queue prefix.
    pub fn launcher(&self) -> Launcher {
        let mut launcher = Launcher::new(ledgerflow_bin(), std::env::temp_dir().join("ledgerflow-test-logs"), "warn");
        launcher.log_prefix = format!("{}-", self.settings.connections.amqp_prefix);
        launcher
    }

    /// `ledgerflow worker` as a real process with this app's worker settings, named `name`,
    /// then `configure`d.
    fn worker_process(&self, name: &str, configure: impl FnOnce(&mut WorkerSettings)) -> Worker {
        let configure = |worker: &mut WorkerSettings| {
            worker.name = Some(name.to_owned());
            configure(worker);
        };
        self.launcher().worker(&self.settings, name, configure).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts `ledgerflow worker` as a real process on this app's database and queues.
    pub fn spawn_worker_process(&self, name: &str) -> Worker {
        self.worker_process(name, |worker| worker.prefetch = 8)
    }

    /// Starts `ledgerflow worker` as a real process serving its metrics on a free port;
    /// returns it and the port.
    pub fn spawn_worker_with_metrics(&self, name: &str) -> (Worker, u16) {
        let addr = ledgerflow_testkit::free_local_addr().unwrap();
        (self.worker_process(name, |worker| worker.metrics_addr = Some(addr)), addr.port())
    }

    /// The Prometheus text a worker process serves on `port`, if it answers yet.
    pub async fn worker_metrics(&self, port: u16) -> Option<String> {
        let resp = self.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?;
        resp.text().await.ok()
    }
}

impl TestApp {
    /// Runs `ledgerflow <args>` against this app's database and queues; returns the exit
    /// code and standard output.
    pub async fn run_cli(&self, args: &[&str]) -> (i32, String) {
        let mut cmd = self.cli();
        cmd.args(args);
        let out = cli_output(cmd, DEADLINE).await;
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ledgerflow reconcile --json`, parsed.
    pub async fn reconcile(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["reconcile", "--json"];
        args.extend_from_slice(extra);
        let (code, out) = self.run_cli(&args).await;
        (code, serde_json::from_str(&out).unwrap_or_else(|e| panic!("reconcile printed no JSON ({e}): {out}")))
    }

    /// Asserts that `ledgerflow reconcile` finds the books in order (exit code 0).
    pub async fn assert_reconciles(&self) {
        let (code, report) = self.reconcile(&[]).await;
        assert_eq!(code, 0, "reconcile passes: {report}");
    }
}

/// Tries to start a gateway process whose probed free port another process took first.
const GATEWAY_TRIES: usize = 3;

impl TestApp {
    /// Starts `ledgerflow gateway` as a real process on this app's database and queues, named
    /// `name`, and waits until it is ready. Its `/metrics` are its own, which an in-process
    /// gateway's (sharing the test's recorder) are not.
    pub async fn spawn_gateway_process(&self, name: &str) -> Gateway {
        let by = std::time::Instant::now() + DEADLINE;
        for _ in 0..GATEWAY_TRIES {
            let mut gateway = self.launcher().gateway(&self.settings, name).unwrap_or_else(|e| panic!("{e:#}"));
            let client = ledgerflow_client::Client::new(&gateway.base);
            loop {
                if client.ready().await {
                    return gateway;
                }
                // It exits at start when the port was taken between the probe and its bind.
                if gateway.process.exited().is_some() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < by,
                    "gateway {name} not ready in time: {}",
                    gateway.process.tail(30)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("gateway {name} did not start in {GATEWAY_TRIES} tries (see its log)")
    }

    /// The value of an unlabelled metric `name` on the Prometheus page at `base` (a gateway's
    /// URL), or `None` while it does not show it.
    pub async fn metric_at(&self, base: &str, name: &str) -> Option<f64> {
        let resp = self.http.get(format!("{base}/metrics")).send().await.ok()?;
        let text = resp.text().await.ok()?;
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}
