//! What a run found, and its `--json` form: one object per run, with the keys and shape
//! `jq` one-liners, the smoke test and the README's figures rely on. Keys are in the order of
//! the fields below; those marked as skipped are absent, not null, when there is nothing to say.

use std::collections::BTreeMap;
use std::time::Duration;

use ledgerflow_store::{Discrepancy, ReconcileReport};
use serde::Serialize;

use crate::args::BenchArgs;
use crate::cluster::LogCounts;
use crate::figures::{LoadFigures, Maximum, Percentiles, round};
use crate::metrics::Batching;
use crate::pair_figures::{CostRatios, HoldsPhase, TransfersAfter};
use crate::raw::RawFigures;
use crate::reads::ReadFigures;

/// Everything a load run measured.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub setup: Duration,
    pub load: LoadFigures,
    /// With `--rate N%`: the unpaced load that measured the maximum.
    pub maximum: Option<Maximum>,
    /// The pace of the timed load, transfers per second (from `--rate`).
    pub rate: Option<u32>,
    /// With `--holds`: the hold-then-post pairs run after the transfers.
    pub holds: Option<HoldsPhase>,
    pub raw: Option<RawFigures>,
    pub rss_mb: BTreeMap<String, f64>,
    pub exits: BTreeMap<String, String>,
    pub logs: BTreeMap<String, LogCounts>,
    /// What the workers did during the load (not the setup), when the bench started them.
    pub batching: Option<Batching>,
    /// CPU seconds spent during the load, by the machine and by each process.
    pub cpu_s: BTreeMap<String, f64>,
    /// The run's own ledger checked after the load.
    pub ledger: Option<ReconcileReport>,
    /// With `--batch N`: the batches' completed/s against single requests' and `--direct`'s.
    pub compared: Option<BatchComparison>,
}

/// `--batch N`'s figures: end-to-end completed/s of the same number of transfers submitted in
/// batches of N, one per request, and straight to the queue, in one run, and the ratios.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BatchComparison {
    pub batch: u32,
    pub batch_per_s: f64,
    pub http_per_s: f64,
    pub direct_per_s: f64,
    /// batch ÷ single-request HTTP.
    pub vs_http: Option<f64>,
    /// batch ÷ direct.
    pub vs_direct: Option<f64>,
}

impl BatchComparison {
    pub fn of(batch: u32, batch_per_s: f64, http_per_s: f64, direct_per_s: f64) -> Self {
        let ratio = |of: f64| (of > 0.0).then(|| round(batch_per_s / of, 3));
        Self {
            batch,
            batch_per_s,
            http_per_s,
            direct_per_s,
            vs_http: ratio(http_per_s),
            vs_direct: ratio(direct_per_s),
        }
    }
}

impl LoadReport {
    /// End-to-end completions per second as a share of the raw floor's.
    pub fn ratio(&self) -> Option<f64> {
        let raw = self.raw.as_ref()?;
        (raw.per_s > 0.0).then(|| round(self.load.completed_per_s / raw.per_s, 3))
    }

    /// With `--holds`: what a pair costs against a transfer of this run.
    pub fn cost_ratios(&self) -> Option<CostRatios> {
        Some(CostRatios::of(self.holds.as_ref()?, &self.load, &self.cpu_s))
    }

    pub fn to_json<'a>(&'a self, args: &'a BenchArgs) -> LoadJson<'a> {
        let l = &self.load;
        LoadJson {
            mode: args.mode(),
            pattern: args.pattern(),
            accounts: args.accounts,
            transfers: args.transfers,
            concurrency: args.concurrency,
            rate: self.rate,
            workers: args.target.is_none().then_some(args.workers),
            target: args.target.as_deref(),
            setup_s: round(self.setup.as_secs_f64(), 2),
            accepted: l.accepted,
            accepted_per_s: l.accepted_per_s,
            completed: l.completed,
            completed_per_s: l.completed_per_s,
            failed: l.failed.values().sum(),
            failure_reasons: &l.failed,
            rejected: l.rejected.values().sum(),
            rejections: &l.rejected,
            unfinished: l.unfinished,
            ratio: self.ratio(),
            latency_ms: Stages { accept: l.accept, complete: l.complete, decide: l.decide, report: l.report },
            rss_mb: &self.rss_mb,
            cpu_s: &self.cpu_s,
            exits: &self.exits,
            log_lines: &self.logs,
            batching: self.batching,
            ledger: self.ledger.as_ref().map(LedgerJson::from),
            maximum: self.maximum,
            raw_per_s: self.raw.as_ref().map(|raw| raw.per_s),
            raw: self.raw.as_ref().map(RawJson::from),
            batch_comparison: self.compared,
            holds: self
                .holds
                .as_ref()
                .map(|holds| HoldsJson::of(holds, CostRatios::of(holds, &self.load, &self.cpu_s))),
        }
    }
}

/// A load run's `--json` report.
#[derive(Serialize)]
pub struct LoadJson<'a> {
    /// `http`, `direct` or `batch`.
    mode: &'static str,
    /// `random` or `hot`.
    pattern: &'static str,
    accounts: u32,
    transfers: u32,
    concurrency: u32,
    rate: Option<u32>,
    /// Null with `--target`.
    workers: Option<u16>,
    target: Option<&'a str>,
    setup_s: f64,
    accepted: usize,
    accepted_per_s: f64,
    completed: usize,
    completed_per_s: f64,
    failed: usize,
    failure_reasons: &'a BTreeMap<String, usize>,
    rejected: usize,
    rejections: &'a BTreeMap<String, usize>,
    unfinished: usize,
    /// completed/s ÷ raw/s, with `--raw`.
    ratio: Option<f64>,
    latency_ms: Stages,
    rss_mb: &'a BTreeMap<String, f64>,
    cpu_s: &'a BTreeMap<String, f64>,
    exits: &'a BTreeMap<String, String>,
    log_lines: &'a BTreeMap<String, LogCounts>,
    batching: Option<Batching>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger: Option<LedgerJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maximum: Option<Maximum>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<RawJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_comparison: Option<BatchComparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holds: Option<HoldsJson<'a>>,
}

/// The `--holds` phase: its pairs' counts, rate and latencies, and what a pair costs against a
/// transfer.
#[derive(Serialize)]
struct HoldsJson<'a> {
    hold_timeout_s: u32,
    holds_accepted: usize,
    held: usize,
    posts_accepted: usize,
    completed: usize,
    completed_per_s: f64,
    failed: usize,
    failure_reasons: &'a BTreeMap<String, usize>,
    rejected: usize,
    rejections: &'a BTreeMap<String, usize>,
    unfinished: usize,
    latency_ms: PairStages,
    ratio: CostRatios,
    cpu_s: &'a BTreeMap<String, f64>,
    batching: Option<Batching>,
    transfers_after: &'a TransfersAfter,
}

impl<'a> HoldsJson<'a> {
    fn of(holds: &'a HoldsPhase, ratio: CostRatios) -> Self {
        let p = &holds.pairs;
        Self {
            hold_timeout_s: holds.timeout_seconds,
            holds_accepted: p.holds_accepted,
            held: p.held,
            posts_accepted: p.posts_accepted,
            completed: p.completed,
            completed_per_s: p.completed_per_s,
            failed: p.failed.values().sum(),
            failure_reasons: &p.failed,
            rejected: p.rejected.values().sum(),
            rejections: &p.rejected,
            unfinished: p.unfinished,
            latency_ms: PairStages {
                hold_accept: p.hold_accept,
                held: p.hold,
                post_accept: p.post_accept,
                pair: p.complete,
            },
            ratio,
            cpu_s: &holds.cpu_s,
            batching: holds.batching,
            transfers_after: &holds.after,
        }
    }
}

/// Latency of each stage of a pair's way.
#[derive(Serialize)]
struct PairStages {
    /// Submit of the hold → 202 (or publisher confirm).
    hold_accept: Option<Percentiles>,
    /// Submit of the hold → HELD heard.
    held: Option<Percentiles>,
    /// Submit of the post → 202 (or publisher confirm).
    post_accept: Option<Percentiles>,
    /// Submit of the hold → the POST_HOLD's COMPLETED heard: the pair end to end.
    pair: Option<Percentiles>,
}

/// Latency of each stage of a transfer's way.
#[derive(Serialize)]
struct Stages {
    /// Submit → 202 (or publisher confirm).
    accept: Option<Percentiles>,
    /// Submit → result heard.
    complete: Option<Percentiles>,
    /// 202 (or confirm) → the worker's decision.
    decide: Option<Percentiles>,
    /// The worker's decision → result heard.
    report: Option<Percentiles>,
}

#[derive(Serialize)]
struct LedgerJson<'a> {
    ok: bool,
    transactions: u64,
    entries: u64,
    accounts: u64,
    discrepancies: u64,
    first_discrepancies: &'a [Discrepancy],
}

impl<'a> From<&'a ReconcileReport> for LedgerJson<'a> {
    fn from(ledger: &'a ReconcileReport) -> Self {
        Self {
            ok: ledger.ok,
            transactions: ledger.transactions,
            entries: ledger.entries,
            accounts: ledger.accounts,
            discrepancies: ledger.discrepancy_count,
            first_discrepancies: &ledger.discrepancies[..ledger.discrepancies.len().min(10)],
        }
    }
}

#[derive(Serialize)]
struct RawJson<'a> {
    completed: usize,
    failed: usize,
    failure_reasons: &'a BTreeMap<String, usize>,
    errors: usize,
    latency_ms: Option<Percentiles>,
}

impl<'a> From<&'a RawFigures> for RawJson<'a> {
    fn from(raw: &'a RawFigures) -> Self {
        Self {
            completed: raw.completed,
            failed: raw.failed.values().sum(),
            failure_reasons: &raw.failed,
            errors: raw.errors,
            latency_ms: raw.latency,
        }
    }
}

/// A `--balance-reads` run's `--json` report.
#[derive(Serialize)]
pub struct ReadsJson {
    mode: &'static str,
    reads: u32,
    sizes: Vec<SizeJson>,
}

/// One history length's figures.
#[derive(Serialize)]
struct SizeJson {
    entries: u64,
    insert_s: f64,
    latency_ms: Percentiles,
    keys_examined: i64,
    docs_examined: i64,
    /// `Store::balance_as_of` at the middle entry's instant.
    as_of_latency_ms: Percentiles,
    as_of_keys_examined: i64,
    as_of_docs_examined: i64,
}

pub fn reads_json(rows: &[ReadFigures], reads: u32) -> ReadsJson {
    let sizes = rows
        .iter()
        .map(|r| SizeJson {
            entries: r.entries,
            insert_s: round(r.insert.as_secs_f64(), 2),
            latency_ms: r.latency,
            keys_examined: r.plan.keys_examined,
            docs_examined: r.plan.docs_examined,
            as_of_latency_ms: r.as_of_latency,
            as_of_keys_examined: r.as_of_plan.keys_examined,
            as_of_docs_examined: r.as_of_plan.docs_examined,
        })
        .collect();
    ReadsJson { mode: "balance-reads", reads, sizes }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use clap::Parser;
    use ledgerflow_store::ReconcileReport;
    use serde_json::Value;

    use super::LoadReport;
    use crate::args::Cli;
    use crate::cluster::LogCounts;
    use crate::figures::{LoadFigures, Maximum, Percentiles};
    use crate::metrics::Batching;
    use crate::pair_figures::{HoldsPhase, PairFigures};
    use crate::raw::RawFigures;

    /// The keys of an object, in order.
    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().expect("an object").keys().map(String::as_str).collect()
    }

    #[test]
    fn the_json_report_keeps_its_keys_order_and_shape() {
        let cli = Cli::try_parse_from(["ledgerflow-bench", "--raw", "--accounts", "10"]).expect("arguments");
        let p = Percentiles::of(vec![Duration::from_millis(3)]);
        let report = LoadReport {
            setup: Duration::from_millis(1_234),
            load: LoadFigures {
                accepted: 5,
                completed: 4,
                accept: p,
                complete: p,
                unfinished: 1,
                ..Default::default()
            },
            maximum: Some(Maximum { completed_per_s: 10.0, accepted_per_s: 12.0, percent: 50 }),
            rate: Some(5),
            raw: Some(RawFigures { completed: 5, per_s: 2.0, latency: p, ..Default::default() }),
            holds: Some(HoldsPhase {
                pairs: PairFigures { completed: 3, completed_per_s: 1.0, complete: p, ..Default::default() },
                timeout_seconds: 600,
                ..Default::default()
            }),
            logs: BTreeMap::from([("gateway".to_owned(), LogCounts { warn: 1, error: 0 })]),
            batching: Some(Batching { batches: 2, commands: 5, conflict_retries: 0, splits: 0 }),
            ledger: Some(ReconcileReport { ok: true, transactions: 15, ..Default::default() }),
            ..Default::default()
        };
        let v = serde_json::to_value(report.to_json(&cli.bench)).expect("json");
        assert_eq!(
            keys(&v),
            [
                "mode",
                "pattern",
                "accounts",
                "transfers",
                "concurrency",
                "rate",
                "workers",
                "target",
                "setup_s",
                "accepted",
                "accepted_per_s",
                "completed",
                "completed_per_s",
                "failed",
                "failure_reasons",
                "rejected",
                "rejections",
                "unfinished",
                "ratio",
                "latency_ms",
                "rss_mb",
                "cpu_s",
                "exits",
                "log_lines",
                "batching",
                "ledger",
                "maximum",
                "raw_per_s",
                "raw",
                "holds"
            ]
        );
        assert_eq!((v["accounts"].as_u64(), v["workers"].as_u64(), v["target"].is_null()), (Some(10), Some(2), true));
        assert_eq!((v["setup_s"].as_f64(), v["ratio"].as_f64()), (Some(1.23), Some(0.0)));
        assert_eq!(keys(&v["latency_ms"]), ["accept", "complete", "decide", "report"]);
        assert_eq!(keys(&v["latency_ms"]["accept"]), ["p50", "p95", "p99", "max"]);
        assert!(v["latency_ms"]["decide"].is_null());
        assert_eq!(v["log_lines"]["gateway"], serde_json::json!({ "warn": 1, "error": 0 }));
        assert_eq!(
            keys(&v["ledger"]),
            ["ok", "transactions", "entries", "accounts", "discrepancies", "first_discrepancies"]
        );
        assert_eq!(keys(&v["maximum"]), ["completed_per_s", "accepted_per_s", "percent"]);
        assert_eq!(keys(&v["raw"]), ["completed", "failed", "failure_reasons", "errors", "latency_ms"]);
        assert_eq!(keys(&v["batching"]), ["batches", "commands", "mean_size", "conflict_retries", "splits"]);
        assert_eq!(
            keys(&v["holds"]),
            [
                "hold_timeout_s",
                "holds_accepted",
                "held",
                "posts_accepted",
                "completed",
                "completed_per_s",
                "failed",
                "failure_reasons",
                "rejected",
                "rejections",
                "unfinished",
                "latency_ms",
                "ratio",
                "cpu_s",
                "batching",
                "transfers_after"
            ]
        );
        assert_eq!(keys(&v["holds"]["transfers_after"]), ["completed", "completed_per_s", "cpu_s"]);
        assert_eq!(keys(&v["holds"]["latency_ms"]), ["hold_accept", "held", "post_accept", "pair"]);
        assert_eq!(keys(&v["holds"]["ratio"]), ["rate", "cpu", "latency_p50", "target"]);
        // No transfer completed in this report: no ratio, but the target is said.
        assert!(v["holds"]["ratio"]["rate"].is_null() && v["holds"]["ratio"]["target"] == 2.5);
        // Without the optional parts, their keys are absent rather than null.
        let bare = LoadReport::default();
        let v = serde_json::to_value(bare.to_json(&cli.bench)).expect("json");
        for absent in ["ledger", "maximum", "raw_per_s", "raw", "holds"] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
        assert!(v["rate"].is_null() && v["batching"].is_null() && v["ratio"].is_null());
    }
}
