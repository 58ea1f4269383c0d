//! The shared services under a fault test: [`Services`] stops and starts the shared RabbitMQ
//! and mongod, and starts again whatever it stopped when dropped, even if the test panicked;
//! and bounded runs of the commands that do it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for a process to start, stop, or for a service command to finish.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// The repository root (for `scripts/services.sh`).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// Runs a command to completion, killed after `limit` (via coreutils `timeout`). Returns its
/// standard output, or a description of how it failed.
pub fn run_bounded(program: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["--kill-after=5", &format!("{}", limit.as_secs().max(1)), program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} did not run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// [`run_bounded`] off the async runtime's threads.
pub async fn run_bounded_async(program: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let program = program.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bounded(&program, &args, limit)
    })
    .await
    .unwrap()
}

// ------------------------------------------------------------------------------ services

/// Stops and starts the shared services. Dropping it starts again whatever it ever stopped
/// (`rabbitmqctl start_app` and `scripts/services.sh up` are idempotent), so the services
/// are left running even when an assertion fails mid-outage.
#[derive(Default)]
pub struct Services {
    touched_rabbitmq: bool,
    touched_mongod: bool,
    /// The command line of the mongod this test stopped, to start that very one again (it
    /// may have been started from another checkout, with its own data directory).
    mongod_cmdline: Option<Vec<String>>,
}

/// The running mongod on the test port, as (pid, command line), found through /proc.
fn running_mongod() -> Option<(u32, Vec<String>)> {
    let port = std::env::var("LEDGERFLOW_MONGO_PORT").unwrap_or_else(|_| "27017".into());
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_mongod = args.first().is_some_and(|a| a.ends_with("/mongod") || a == "mongod");
        if is_mongod && args.windows(2).any(|w| w[0] == "--port" && w[1] == port) {
            return Some((pid, args));
        }
    }
    None
}

/// Starts mongod again with the command line it had (it forks into the background).
fn restart_mongod(cmdline: &[String]) -> Result<(), String> {
    let (program, args) = cmdline.split_first().ok_or("empty mongod command line")?;
    let status = std::process::Command::new(program).args(args).status().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("mongod exited with {status}")) }
}

impl Services {
    /// `rabbitmqctl stop_app`: every AMQP connection drops and the port stops accepting.
    pub async fn stop_rabbitmq(&mut self) {
        self.touched_rabbitmq = true;
        run_bounded_async("rabbitmqctl", &["stop_app"], PROCESS_DEADLINE).await.unwrap();
    }

    /// `rabbitmqctl start_app` and `await_startup`.
    pub async fn start_rabbitmq(&mut self) {
        run_bounded_async("rabbitmqctl", &["start_app"], PROCESS_DEADLINE).await.unwrap();
        run_bounded_async("rabbitmqctl", &["await_startup"], PROCESS_DEADLINE).await.unwrap();
    }

    /// A clean shutdown (SIGTERM) of the running mongod, whichever checkout started it.
    pub async fn stop_mongod(&mut self) {
        let (pid, cmdline) = running_mongod().expect("a mongod runs on the test port");
        self.touched_mongod = true;
        self.mongod_cmdline = Some(cmdline);
        run_bounded_async("kill", &["-TERM", &pid.to_string()], PROCESS_DEADLINE).await.unwrap();
        let start = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(start.elapsed() < PROCESS_DEADLINE, "mongod did not stop");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The same mongod again, on the same data; `scripts/services.sh up` then waits for
    /// PRIMARY and reapplies its settings.
    pub async fn start_mongod(&mut self) {
        if let (None, Some(cmdline)) = (running_mongod(), &self.mongod_cmdline) {
            restart_mongod(cmdline).unwrap();
        }
        let script = repo_root().join("scripts/services.sh");
        run_bounded_async(script.to_str().unwrap(), &["up"], PROCESS_DEADLINE).await.unwrap();
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if self.touched_rabbitmq {
            for args in [&["start_app"][..], &["await_startup"][..]] {
                if let Err(e) = run_bounded("rabbitmqctl", args, PROCESS_DEADLINE) {
                    eprintln!("fault test cleanup: {e}");
                }
            }
        }
        if self.touched_mongod {
            let restarted = match (running_mongod(), &self.mongod_cmdline) {
                (None, Some(cmdline)) => restart_mongod(cmdline),
                _ => Ok(()),
            };
            if let Err(e) = restarted {
                eprintln!("fault test cleanup: {e}");
            }
            let script = repo_root().join("scripts/services.sh");
            if let Err(e) = run_bounded(script.to_str().unwrap(), &["up"], PROCESS_DEADLINE) {
                eprintln!("fault test cleanup: {e}");
            }
        }
    }
}

/// Consumer tags on a queue, from `rabbitmqctl list_consumers` (a worker's tag starts with
/// its name).
pub async fn consumer_tags(queue: &str) -> Vec<String> {
    let Ok(out) =
        run_bounded_async("rabbitmqctl", &["list_consumers", "queue_name", "consumer_tag", "-q"], PROCESS_DEADLINE)
            .await
    else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(q, _)| *q == queue)
        .map(|(_, tag)| tag.trim().to_owned())
        .collect()
}
