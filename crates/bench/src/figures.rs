//! The statistics a load comes down to: counts and rates of what was accepted, completed,
//! failed and rejected, and nearest-rank latency percentiles of each stage, joined from what
//! was sent and the outcomes heard.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledgerflow_domain::{FailureReason, TransactionStatus};
use serde::Serialize;

use crate::listener::{MatchOn, Outcomes};
use crate::load::Sent;

/// Latency percentiles; in the JSON report, milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(into = "Millis")]
pub struct Percentiles {
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles of the samples; `None` without samples.
    pub fn of(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort_unstable();
        let max = *samples.last()?;
        let n = samples.len();
        let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Self { p50: rank(0.50), p95: rank(0.95), p99: rank(0.99), max })
    }

    /// Table cells in milliseconds, or dashes without samples.
    pub fn cells(p: Option<Self>) -> [String; 4] {
        match p {
            Some(p) => [p.p50, p.p95, p.p99, p.max].map(|d| format!("{:.2}", ms(d))),
            None => std::array::from_fn(|_| "-".to_owned()),
        }
    }
}

/// [`Percentiles`] in milliseconds, to two decimals.
#[derive(Serialize)]
struct Millis {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl From<Percentiles> for Millis {
    fn from(p: Percentiles) -> Self {
        Self { p50: ms(p.p50), p95: ms(p.p95), p99: ms(p.p99), max: ms(p.max) }
    }
}

/// What one load over a plan measured.
#[derive(Debug, Default)]
pub struct LoadFigures {
    pub accepted: usize,
    pub accepted_per_s: f64,
    pub accept: Option<Percentiles>,
    pub rejected: BTreeMap<String, usize>,
    pub completed: usize,
    pub completed_per_s: f64,
    pub complete: Option<Percentiles>,
    /// The completed transfers' way split in two at the worker's decision (`completedAt`, to
    /// the millisecond): 202 (or confirm) → decision, and decision → result heard. Says which
    /// stage a latency tail comes from.
    pub decide: Option<Percentiles>,
    pub report: Option<Percentiles>,
    pub failed: BTreeMap<String, usize>,
    /// Accepted but without an outcome when waiting ended: stuck PENDING.
    pub unfinished: usize,
}

impl LoadFigures {
    /// Joins what was sent with the outcomes heard. Rates are over the time from the first
    /// submit to the last 202 (accepted) and to the last COMPLETED result (completed).
    pub fn tally(sent: &[Sent], outcomes: &Outcomes, on: MatchOn, anchor: (Instant, DateTime<Utc>)) -> Self {
        let Some(start) = sent.iter().map(|s| s.sent).min() else { return Self::default() };
        let mut figures = Self::default();
        let (mut accept, mut complete) = (Vec::new(), Vec::new());
        let (mut decide, mut report) = (Vec::new(), Vec::new());
        let (mut last_accept, mut last_complete) = (start, start);
        for s in sent {
            let Some(accepted) = s.accepted else {
                bump(&mut figures.rejected, s.rejected.as_deref().unwrap_or("unknown"));
                continue;
            };
            accept.push(accepted.saturating_duration_since(s.sent));
            last_accept = last_accept.max(accepted);
            match outcomes.get(on, &s.key) {
                Some(o) if o.status == TransactionStatus::Completed => {
                    complete.push(o.at.saturating_duration_since(s.sent));
                    last_complete = last_complete.max(o.at);
                    if let Some(decided) = o.decided_at.and_then(|at| on_monotonic(anchor, at)) {
                        decide.push(decided.saturating_duration_since(accepted));
                        report.push(o.at.saturating_duration_since(decided));
                    }
                }
                Some(o) => bump(&mut figures.failed, reason_name(o.reason)),
                None => figures.unfinished += 1,
            }
        }
        figures.accepted = accept.len();
        figures.completed = complete.len();
        figures.accepted_per_s = per_second(figures.accepted, last_accept - start);
        figures.completed_per_s = per_second(figures.completed, last_complete - start);
        figures.accept = Percentiles::of(accept);
        figures.complete = Percentiles::of(complete);
        figures.decide = Percentiles::of(decide);
        figures.report = Percentiles::of(report);
        figures
    }
}

/// The unpaced load that measured the maximum for `--rate N%`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Maximum {
    pub completed_per_s: f64,
    pub accepted_per_s: f64,
    pub percent: u8,
}

/// Where an instant on this machine's wall clock (a worker's `completedAt`) falls on the
/// bench's monotonic clock, given one moment read on both.
pub fn on_monotonic(anchor: (Instant, DateTime<Utc>), at: DateTime<Utc>) -> Option<Instant> {
    anchor.0.checked_add((at - anchor.1).to_std().ok()?)
}

pub fn bump(counts: &mut BTreeMap<String, usize>, what: &str) {
    *counts.entry(what.to_owned()).or_default() += 1;
}

pub fn reason_name(reason: Option<FailureReason>) -> &'static str {
    reason.map_or("UNKNOWN", FailureReason::as_str)
}

/// Events per second, to one decimal; 0 over no time.
pub fn per_second(count: usize, over: Duration) -> f64 {
    if over.is_zero() { 0.0 } else { round(count as f64 / over.as_secs_f64(), 1) }
}

/// Milliseconds, to two decimals.
pub fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1_000.0, 2)
}

pub fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Percentiles;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(samples).expect("samples");
        assert_eq!((p.p50, p.p95, p.p99, p.max), (ms(50), ms(95), ms(99), ms(100)));
        assert!(Percentiles::of(Vec::new()).is_none());
        let one = Percentiles::of(vec![ms(7)]).expect("one sample");
        assert_eq!((one.p50, one.p99), (ms(7), ms(7)));
    }

    #[test]
    fn percentiles_are_reported_in_milliseconds() {
        let p = Percentiles::of(vec![Duration::from_micros(1_234), ms(20)]).expect("samples");
        let json = serde_json::to_string(&p).expect("json");
        assert_eq!(json, r#"{"p50":1.23,"p95":20.0,"p99":20.0,"max":20.0}"#);
    }
}
