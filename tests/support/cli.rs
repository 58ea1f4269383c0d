//! `ledgerflow` as a process: one-shot commands (`reconcile`, `admin`, `bench`) and worker
//! processes on a test app's database and queues.

use std::time::Duration;

use ledgerflow::Settings;
use ledgerflow::settings::WorkerSettings;
use ledgerflow_testkit::{Launcher, Worker};
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
