//! What the processes cost, read from `/proc`: the peak resident memory of each process the
//! bench started (sampled through the run), and the CPU time the machine and each process spent
//! during the load. Memory and CPU are part of what a deployment pays for throughput; the
//! latency tail follows the machine's share, and the machine's speed drifts between runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::figures::round;
use crate::pool::lock;

/// How often the started processes' memory is sampled.
const RSS_INTERVAL: Duration = Duration::from_millis(200);
/// Clock ticks per second in `/proc` (`USER_HZ`, 100 on Linux's common architectures).
const USER_HZ: f64 = 100.0;

/// Samples each process's resident set size (`VmRSS` in `/proc/<pid>/status`) and keeps the
/// peak.
pub struct RssSampler {
    peaks_kib: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pids: Vec<(String, u32)>) -> Self {
        let peaks_kib = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = CancellationToken::new();
        let (peaks, token) = (Arc::clone(&peaks_kib), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RSS_INTERVAL);
            while token.run_until_cancelled(tick.tick()).await.is_some() {
                let mut peaks = lock(&peaks);
                for (name, pid) in &pids {
                    if let Some(kib) = vm_rss_kib(*pid) {
                        let peak = peaks.entry(name.clone()).or_insert(0);
                        *peak = (*peak).max(kib);
                    }
                }
            }
        });
        Self { peaks_kib, stop, task }
    }

    /// Stops sampling (before the processes stop, so a reused pid is never sampled) and
    /// returns the peaks in MB (MiB).
    pub async fn finish(self) -> BTreeMap<String, f64> {
        self.stop.cancel();
        let _ = self.task.await;
        lock(&self.peaks_kib).iter().map(|(name, kib)| (name.clone(), round(*kib as f64 / 1024.0, 1))).collect()
    }
}

/// CPU time spent so far, in seconds: by the whole machine (`/proc/stat`: every process, the
/// database and the broker included) and by each process the bench started and itself
/// (`/proc/<pid>/stat`, user and system). Taken around the load, it shows what a run cost.
/// Empty where `/proc` cannot be read.
#[derive(Debug, Default)]
pub struct CpuTimes(BTreeMap<String, f64>);

impl CpuTimes {
    pub fn read(pids: &[(String, u32)]) -> Self {
        let mut times = BTreeMap::new();
        if let Some(ticks) = machine_busy_ticks() {
            times.insert("machine".to_owned(), ticks as f64 / USER_HZ);
        }
        let own = ("bench".to_owned(), std::process::id());
        for (name, pid) in pids.iter().chain(std::iter::once(&own)) {
            if let Some(ticks) = process_ticks(*pid) {
                times.insert(name.clone(), ticks as f64 / USER_HZ);
            }
        }
        Self(times)
    }

    /// Seconds spent since `earlier`, for what both readings have.
    pub fn since(&self, earlier: &Self) -> BTreeMap<String, f64> {
        let spent = |(name, now): (&String, &f64)| Some((name.clone(), round(now - earlier.0.get(name)?, 2)));
        self.0.iter().filter_map(spent).collect()
    }
}

/// Busy ticks of all CPUs together: everything but idle and I/O wait.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> =
        stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().map_while(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is counted in user already).
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    (fields.len() >= 8).then_some(busy)
}

/// User and system ticks of one process, its threads included.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{CpuTimes, USER_HZ, process_ticks};

    #[test]
    fn cpu_times_count_this_process_and_the_machine() {
        let before = CpuTimes::read(&[("me".to_owned(), std::process::id())]);
        let started = Instant::now();
        let mut x = 0u64;
        // Busy until this process has used ten ticks more (bounded).
        let enough = (before.0["me"] * USER_HZ).round() as u64 + 10;
        while process_ticks(std::process::id()).is_some_and(|t| t < enough)
            && started.elapsed() < Duration::from_secs(10)
        {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = CpuTimes::read(&[("me".to_owned(), std::process::id())]).since(&before);
        assert!(spent["me"] > 0.0 && spent["bench"] > 0.0, "{spent:?}");
        assert!(spent["machine"] >= spent["me"] - 0.1, "{spent:?}");
        assert_eq!(process_ticks(u32::MAX), None, "no such process");
    }
}
