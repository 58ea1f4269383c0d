//! What `--holds` comes down to: each hold-then-post pair's timings, their counts, rate and
//! latency percentiles, and what a pair costs against a plain transfer of the same run.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::figures::{LoadFigures, Percentiles, bump, per_second, round};
use crate::metrics::Batching;

/// What a pair may cost against a transfer, end to end (issue 28): its rate at least 1/2.5 of
/// the transfers'.
pub const COST_TARGET: f64 = 2.5;

/// One pair's way: the hold submitted, accepted (202, or the publisher confirm) and heard
/// HELD, then its post submitted, accepted and heard COMPLETED.
#[derive(Debug, Clone)]
pub struct Pair {
    pub sent: Instant,
    pub hold_accepted: Option<Instant>,
    pub held: Option<Instant>,
    pub post_sent: Option<Instant>,
    pub post_accepted: Option<Instant>,
    pub completed: Option<Instant>,
    /// Why it did not complete; `None` once it did.
    pub stopped: Option<Stop>,
}

impl Pair {
    pub fn sent(at: Instant) -> Self {
        Self {
            sent: at,
            hold_accepted: None,
            held: None,
            post_sent: None,
            post_accepted: None,
            completed: None,
            stopped: None,
        }
    }
}

/// Why a pair did not complete, named by the request or transaction that stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A submission refused or lost (`hold: HTTP 503 …`, `post: …`).
    Rejected(String),
    /// A transaction decided otherwise than expected (`HOLD INSUFFICIENT_FUNDS`, `POST_HOLD HOLD_EXPIRED`).
    Failed(String),
    /// Accepted, without the outcome awaited when waiting ended.
    Unfinished,
}

/// What the pairs of one load measured.
#[derive(Debug, Default)]
pub struct PairFigures {
    pub holds_accepted: usize,
    /// Submit → 202 (or confirm) of the hold.
    pub hold_accept: Option<Percentiles>,
    pub held: usize,
    /// Submit of the hold → HELD heard.
    pub hold: Option<Percentiles>,
    pub posts_accepted: usize,
    /// Submit → 202 (or confirm) of the post.
    pub post_accept: Option<Percentiles>,
    pub completed: usize,
    /// Pairs completed per second, from the first hold submitted to the last POST_HOLD heard.
    pub completed_per_s: f64,
    /// A pair end to end: submit of the hold → its POST_HOLD's COMPLETED heard.
    pub complete: Option<Percentiles>,
    pub failed: BTreeMap<String, usize>,
    pub rejected: BTreeMap<String, usize>,
    pub unfinished: usize,
}

impl PairFigures {
    pub fn tally(pairs: &[Pair]) -> Self {
        let Some(start) = pairs.iter().map(|p| p.sent).min() else { return Self::default() };
        let mut figures = Self::default();
        let (mut hold_accept, mut hold, mut post_accept, mut complete) = (vec![], vec![], vec![], vec![]);
        let mut last_complete = start;
        for p in pairs {
            if let Some(at) = p.hold_accepted {
                hold_accept.push(at.saturating_duration_since(p.sent));
            }
            if let Some(at) = p.held {
                hold.push(at.saturating_duration_since(p.sent));
            }
            if let (Some(sent), Some(at)) = (p.post_sent, p.post_accepted) {
                post_accept.push(at.saturating_duration_since(sent));
            }
            if let Some(at) = p.completed {
                complete.push(at.saturating_duration_since(p.sent));
                last_complete = last_complete.max(at);
            }
            match &p.stopped {
                Some(Stop::Rejected(why)) => bump(&mut figures.rejected, why),
                Some(Stop::Failed(why)) => bump(&mut figures.failed, why),
                Some(Stop::Unfinished) => figures.unfinished += 1,
                None => {}
            }
        }
        (figures.holds_accepted, figures.held, figures.posts_accepted, figures.completed) =
            (hold_accept.len(), hold.len(), post_accept.len(), complete.len());
        figures.completed_per_s = per_second(figures.completed, last_complete - start);
        figures.hold_accept = Percentiles::of(hold_accept);
        figures.hold = Percentiles::of(hold);
        figures.post_accept = Percentiles::of(post_accept);
        figures.complete = Percentiles::of(complete);
        figures
    }
}

/// The `--holds` phase: its pairs, and what the processes did meanwhile.
#[derive(Debug, Default)]
pub struct HoldsPhase {
    pub pairs: PairFigures,
    /// As many transfers again, run after the pairs (see [`TransfersAfter`]).
    pub after: TransfersAfter,
    /// How long each hold could stay HELD: longer than the run, so none expires in it.
    pub timeout_seconds: u32,
    /// CPU seconds spent during the pairs, by the machine and by each process.
    pub cpu_s: BTreeMap<String, f64>,
    pub batching: Option<Batching>,
}

/// The transfers run again after the pairs, as many as before them and in the same way. With
/// the first load they bracket the pairs, so that what changes over a run (the machine's
/// speed, which drifts within minutes, and the ledger's size) weighs on both sides of a ratio
/// alike: a pair is compared with the transfers of both loads together.
#[derive(Debug, Default, Clone, Serialize)]
pub struct TransfersAfter {
    pub completed: usize,
    pub completed_per_s: f64,
    /// CPU seconds spent during this load, by the machine and by each process.
    pub cpu_s: BTreeMap<String, f64>,
}

/// What a pair costs, as a multiple of what a transfer of the same run costs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CostRatios {
    /// Transfers completed/s ÷ pairs completed/s: the cost the target is about. The
    /// transfers' rate is both loads' together: all they completed over all their time.
    pub rate: Option<f64>,
    /// The machine's CPU seconds per completed pair ÷ per completed transfer.
    pub cpu: Option<f64>,
    /// A pair's p50 end to end ÷ a transfer's.
    pub latency_p50: Option<f64>,
    pub target: f64,
}

impl CostRatios {
    pub fn of(holds: &HoldsPhase, transfers: &LoadFigures, transfers_cpu_s: &BTreeMap<String, f64>) -> Self {
        let (pairs, after) = (&holds.pairs, &holds.after);
        // Costs of one pair and one transfer; no ratio where either is unknown (zero).
        let ratio = |pair: f64, transfer: f64| (transfer > 0.0 && pair > 0.0).then(|| round(pair / transfer, 2));
        let machine = |cpu_s: &BTreeMap<String, f64>| cpu_s.get("machine").copied().unwrap_or(0.0);
        let per = |total: f64, n: usize| if n > 0 { total / n as f64 } else { 0.0 };
        // Seconds of the loaded pipeline per transfer, over both loads (one that completed
        // nothing is left out rather than counted as infinitely slow).
        let loads = [(transfers.completed, transfers.completed_per_s), (after.completed, after.completed_per_s)];
        let (n, seconds) = loads
            .iter()
            .filter(|(n, per_s)| *n > 0 && *per_s > 0.0)
            .fold((0, 0.0), |(n, s), (count, per_s)| (n + count, s + *count as f64 / per_s));
        let transfers_per_s = if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
        let transfer_cpu = machine(transfers_cpu_s) + machine(&after.cpu_s);
        let p50 = |p: Option<Percentiles>| p.map_or(0.0, |p| p.p50.as_secs_f64());
        Self {
            // Seconds of the loaded pipeline per pair over per transfer: the inverse rates.
            rate: ratio(transfers_per_s, pairs.completed_per_s),
            cpu: ratio(
                per(machine(&holds.cpu_s), pairs.completed),
                per(transfer_cpu, transfers.completed + after.completed),
            ),
            latency_p50: ratio(p50(pairs.complete), p50(transfers.complete)),
            target: COST_TARGET,
        }
    }

    /// Whether the rate ratio is within the target; `None` without both rates.
    pub fn met(&self) -> Option<bool> {
        self.rate.map(|r| r <= COST_TARGET)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::{CostRatios, HoldsPhase, Pair, PairFigures, Stop, TransfersAfter};
    use crate::figures::{LoadFigures, Percentiles};

    fn after(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn completed(start: Instant, sent: u64, held: u64, done: u64) -> Pair {
        Pair {
            hold_accepted: Some(after(start, sent + 2)),
            held: Some(after(start, held)),
            post_sent: Some(after(start, held + 1)),
            post_accepted: Some(after(start, held + 3)),
            completed: Some(after(start, done)),
            ..Pair::sent(after(start, sent))
        }
    }

    #[test]
    fn pairs_are_timed_from_the_hold_to_the_post_heard_completed() {
        let start = Instant::now();
        let rejected = Pair { stopped: Some(Stop::Rejected("hold: HTTP 503".into())), ..Pair::sent(start) };
        let failed = Pair {
            hold_accepted: Some(after(start, 1)),
            stopped: Some(Stop::Failed("HOLD INSUFFICIENT_FUNDS".into())),
            ..Pair::sent(start)
        };
        let lost = Pair { stopped: Some(Stop::Unfinished), ..completed(start, 0, 10, 0) };
        let lost = Pair { completed: None, ..lost };
        let pairs = [completed(start, 0, 20, 100), completed(start, 100, 150, 500), rejected, failed, lost];
        let f = PairFigures::tally(&pairs);
        assert_eq!((f.holds_accepted, f.held, f.posts_accepted, f.completed), (4, 3, 3, 2));
        // Two pairs over the half second from the first hold to the last post heard.
        assert_eq!(f.completed_per_s, 4.0);
        let complete = f.complete.expect("completed pairs");
        assert_eq!((complete.p50, complete.max), (Duration::from_millis(100), Duration::from_millis(400)));
        assert_eq!(f.post_accept.expect("posts").max, Duration::from_millis(2));
        assert_eq!(f.rejected, BTreeMap::from([("hold: HTTP 503".to_owned(), 1)]));
        assert_eq!(f.failed, BTreeMap::from([("HOLD INSUFFICIENT_FUNDS".to_owned(), 1)]));
        assert_eq!(f.unfinished, 1);
        assert_eq!(PairFigures::tally(&[]).completed, 0);
    }

    #[test]
    fn a_pair_costs_the_transfers_rate_over_its_own() {
        let p50 = |ms: u64| Percentiles::of(vec![Duration::from_millis(ms)]);
        let transfers =
            LoadFigures { completed: 1_000, completed_per_s: 800.0, complete: p50(40), ..Default::default() };
        let transfers_cpu = BTreeMap::from([("machine".to_owned(), 2.0)]);
        let holds = HoldsPhase {
            pairs: PairFigures { completed: 1_000, completed_per_s: 400.0, complete: p50(90), ..Default::default() },
            cpu_s: BTreeMap::from([("machine".to_owned(), 4.4)]),
            ..HoldsPhase::default()
        };
        let r = CostRatios::of(&holds, &transfers, &transfers_cpu);
        assert_eq!((r.rate, r.cpu, r.latency_p50), (Some(2.0), Some(2.2), Some(2.25)));
        assert_eq!(r.met(), Some(true));
        // Transfers run again after the pairs, slower: 1,000 at 800/s and 1,000 at 400/s are
        // 2,000 in 3.75 s, 533.3/s; their CPU is counted over both loads.
        let after = TransfersAfter {
            completed: 1_000,
            completed_per_s: 400.0,
            cpu_s: BTreeMap::from([("machine".to_owned(), 2.4)]),
        };
        let bracketed = HoldsPhase { after, ..holds };
        let r = CostRatios::of(&bracketed, &transfers, &transfers_cpu);
        assert_eq!((r.rate, r.cpu), (Some(1.33), Some(2.0)));
        // Nothing completed on one side: no ratio, rather than an infinite one.
        let none = CostRatios::of(&HoldsPhase::default(), &transfers, &BTreeMap::new());
        assert!(none.rate.is_none() && none.cpu.is_none() && none.met().is_none());
    }
}
