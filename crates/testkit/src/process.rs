//! A child process with its log file: whatever it writes on stdout and stderr goes to the file,
//! which failure messages quote and tests read (processes started with
//! `LEDGERFLOW_LOG_FORMAT=json` log one JSON object a line). Killed (SIGKILL) and reaped when
//! dropped.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running (or exited) child process and its log.
pub struct LoggedChild {
    child: Child,
    /// A name for messages, e.g. `worker-a`.
    pub name: String,
    pub log: PathBuf,
    /// Set once it was stopped on purpose (it is then not expected to be running).
    pub stopped: bool,
}

impl LoggedChild {
    /// Starts `command` with no standard input and both outputs into `log` (created afresh).
    pub fn spawn(mut command: Command, name: &str, log: &Path) -> io::Result<Self> {
        let file = File::create(log)?;
        let child = command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).spawn()?;
        Ok(Self { child, name: name.to_owned(), log: log.to_owned(), stopped: false })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `None` while it runs; its exit status once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, …). Through kill(1): calling kill(2)
    /// directly would need the `unsafe` this workspace denies.
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -{signal} {} ({}) failed", self.pid(), self.name)))
        }
    }

    /// SIGKILL, then waits for the exit.
    pub fn sigkill(&mut self) -> io::Result<ExitStatus> {
        self.stopped = true;
        self.signal("KILL")?;
        self.child.wait()
    }

    /// SIGTERM, then waits up to `limit` for the exit; `Ok(None)` if it is still running then.
    pub async fn terminate(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        self.stopped = true;
        self.signal("TERM")?;
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Ok(Some(status));
            }
            if start.elapsed() >= limit {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its JSON log lines, parsed (lines that are not JSON, e.g. a panic message, are skipped).
    pub fn log_events(&self) -> Vec<Value> {
        self.log_text().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The last `n` lines of its log, headed by its name and log file, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        log_tail(&self.name, &self.log, n)
    }

    /// Whether its log records a panic (the process may have survived it on another task).
    pub fn panicked(&self) -> bool {
        self.log_text().contains("panicked at")
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `n` lines of the log of the process `name`, for failure messages.
pub fn log_tail(name: &str, log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- last {n} log lines of {name} ({}):\n{}",
        log.display(),
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}
