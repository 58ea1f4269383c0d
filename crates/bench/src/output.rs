//! The report as text, for a person: a summary line, a table of counts, rates and latency
//! percentiles in the style of `ledgerflow admin`'s tables, and one line per other figure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use crate::args::BenchArgs;
use crate::figures::Percentiles;
use crate::ledger::ledger_summary;
use crate::metrics::Batching;
use crate::pair_figures::{HoldsPhase, PairFigures};
use crate::reads::ReadFigures;
use crate::report::LoadReport;
use ledgerflow_store::ReadPlan;

impl LoadReport {
    pub fn render(&self, args: &BenchArgs) -> String {
        let l = &self.load;
        let mut out = String::new();
        let who = match &args.target {
            Some(target) => format!("against {target}"),
            None => format!("{} worker process(es)", args.workers),
        };
        let rate = self.rate.map(|r| format!(" at most {r}/s,")).unwrap_or_default();
        let pairs = if args.holds {
            format!(", then {0} hold-then-post pairs and {0} transfers again", args.transfers)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "ledgerflow bench: {} transfers, {} pattern, {} accounts, {} transfers{pairs},{rate} concurrency {}, {who}",
            args.mode(),
            args.pattern(),
            args.accounts,
            args.transfers,
            args.concurrency
        );
        let _ = writeln!(out, "setup (users, accounts, funding): {:.1} s", self.setup.as_secs_f64());
        if let (Some(m), Some(rate)) = (self.maximum, self.rate) {
            let _ = writeln!(
                out,
                "maximum, measured first (unpaced, same size): {:.1} completed/s ({:.1} accepted/s); paced at {}% = {rate}/s",
                m.completed_per_s, m.accepted_per_s, m.percent
            );
        }
        let _ = writeln!(out);
        let accepted = if args.direct { "accepted (confirm)" } else { "accepted (202)" };
        let mut rows = vec![
            row(accepted, l.accepted, l.accepted_per_s, l.accept),
            row("completed", l.completed, l.completed_per_s, l.complete),
        ];
        let decide = if args.direct { "  confirm → decision" } else { "  202 → decision" };
        for (label, stage) in [(decide, l.decide), ("  decision → heard", l.report)] {
            let mut cells = vec![label.to_owned(), String::new(), String::new()];
            cells.extend(Percentiles::cells(stage));
            rows.push(cells);
        }
        if let Some(holds) = &self.holds {
            rows.extend(pair_rows(&holds.pairs, args.direct));
        }
        if let Some(raw) = &self.raw {
            rows.push(row("raw Store::execute", raw.completed, raw.per_s, raw.latency));
        }
        out.push_str(&labelled_table(&["", "count", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms"], &rows));
        let _ = writeln!(out);
        let _ = writeln!(out, "failed:     {}", breakdown(&l.failed));
        let _ = writeln!(out, "rejected:   {}", breakdown(&l.rejected));
        let _ = writeln!(out, "unfinished: {} (accepted, no result)", l.unfinished);
        if let Some(raw) = &self.raw {
            let _ = writeln!(out, "raw failed: {}, errors: {}", breakdown(&raw.failed), raw.errors);
            let ratio = self.ratio().map_or("-".to_owned(), |r| format!("{r:.3}"));
            let _ = writeln!(out, "ratio completed/s ÷ raw/s: {ratio}");
        }
        if let Some(b) = self.batching {
            let _ = writeln!(out, "workers:    {}", batching_line(b));
        }
        if let Some(c) = self.compared {
            let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.3}"));
            let _ = writeln!(
                out,
                "completed/s: batch of {} {:.1}, single requests {:.1}, direct {:.1}; batch ÷ single {}, batch ÷ direct {}",
                c.batch,
                c.batch_per_s,
                c.http_per_s,
                c.direct_per_s,
                ratio(c.vs_http),
                ratio(c.vs_direct)
            );
        }
        if let Some(holds) = &self.holds {
            self.render_holds(holds, &mut out);
        }
        if let Some(ledger) = &self.ledger {
            let _ = writeln!(out, "ledger:     {}", ledger_summary(ledger));
        }
        if !self.rss_mb.is_empty() {
            let peaks: Vec<String> = self.rss_mb.iter().map(|(name, mb)| format!("{name} {mb:.1}")).collect();
            let _ = writeln!(out, "peak RSS MB: {}", peaks.join(", "));
        }
        if !self.cpu_s.is_empty() {
            let spent: Vec<String> = self.cpu_s.iter().map(|(name, s)| format!("{name} {s:.1}")).collect();
            let _ = writeln!(out, "CPU s, load: {}", spent.join(", "));
        }
        if !self.exits.is_empty() {
            let exits: Vec<String> = self.exits.iter().map(|(name, how)| format!("{name}: {how}")).collect();
            let _ = writeln!(out, "stopped:     {}", exits.join(", "));
        }
        if !self.logs.is_empty() {
            let logs: Vec<String> =
                self.logs.iter().map(|(name, c)| format!("{name} {}/{}", c.warn, c.error)).collect();
            let _ = writeln!(out, "log lines warn/error: {}", logs.join(", "));
        }
        out
    }
}

impl LoadReport {
    /// The pairs' outcomes, cost against the transfers, and what the processes spent on them.
    fn render_holds(&self, holds: &HoldsPhase, out: &mut String) {
        let p = &holds.pairs;
        let _ = writeln!(out, "pairs failed:     {}", breakdown(&p.failed));
        let _ = writeln!(out, "pairs rejected:   {}", breakdown(&p.rejected));
        let _ = writeln!(out, "pairs unfinished: {} (hold accepted, no end)", p.unfinished);
        let a = &holds.after;
        let _ = writeln!(out, "transfers again:  {} completed, {:.1}/s", a.completed, a.completed_per_s);
        if let Some(r) = self.cost_ratios() {
            let x = |ratio: Option<f64>| ratio.map_or("-".to_owned(), |r| format!("{r:.2}×"));
            let verdict = match r.met() {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "unknown",
            };
            let _ = writeln!(
                out,
                "pair cost ÷ transfer cost: {} by rate (target ≤ {}×: {verdict}), {} by machine CPU, {} by p50 latency",
                x(r.rate),
                r.target,
                x(r.cpu),
                x(r.latency_p50)
            );
        }
        if let Some(b) = holds.batching {
            let _ = writeln!(out, "workers, pairs: {}", batching_line(b));
        }
        if !holds.cpu_s.is_empty() {
            let spent: Vec<String> = holds.cpu_s.iter().map(|(name, s)| format!("{name} {s:.1}")).collect();
            let _ = writeln!(out, "CPU s, pairs: {}", spent.join(", "));
        }
    }
}

/// The table rows of `--holds`: the hold's acceptance and HELD, the post's acceptance, and the
/// pair end to end with its rate.
fn pair_rows(p: &PairFigures, direct: bool) -> Vec<Vec<String>> {
    let accepted = if direct { "(confirm)" } else { "(202)" };
    vec![
        stage_row(&format!("hold accepted {accepted}"), p.holds_accepted, p.hold_accept),
        stage_row("  submit → HELD heard", p.held, p.hold),
        stage_row(&format!("  post accepted {accepted}"), p.posts_accepted, p.post_accept),
        row("pairs completed", p.completed, p.completed_per_s, p.complete),
    ]
}

/// A table row of a stage: label, count and latency percentiles, no rate.
fn stage_row(label: &str, count: usize, latency: Option<Percentiles>) -> Vec<String> {
    let mut cells = vec![label.to_owned(), count.to_string(), String::new()];
    cells.extend(Percentiles::cells(latency));
    cells
}

/// The workers' batches during a load, on one line.
fn batching_line(b: Batching) -> String {
    format!(
        "{} batches, mean size {:.1}; {} write-conflict retries, {} batches split",
        b.batches,
        b.mean_size(),
        b.conflict_retries,
        b.splits
    )
}

/// The `--balance-reads` report: one table row per history length and kind of read.
pub fn render_reads(rows: &[ReadFigures], reads: u32) -> String {
    let header =
        ["entries", "read", "insert s", "p50 ms", "p95 ms", "p99 ms", "max ms", "keys examined", "docs examined"];
    let body: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            let line = |read: &str, insert: String, latency, plan: ReadPlan| {
                let mut row = vec![r.entries.to_string(), read.to_owned(), insert];
                row.extend(Percentiles::cells(Some(latency)));
                row.extend([plan.keys_examined.to_string(), plan.docs_examined.to_string()]);
                row
            };
            [
                line("latest", format!("{:.1}", r.insert.as_secs_f64()), r.latency, r.plan),
                line("asOf middle", String::new(), r.as_of_latency, r.as_of_plan),
            ]
        })
        .collect();
    format!(
        "ledgerflow bench --balance-reads: {reads} sequential Store::balance reads per history length, one account, and as many Store::balance_as_of reads at its middle entry's instant\n\n{}",
        table(&header, &body)
    )
}

/// A table row: label, count, rate and latency percentiles.
fn row(label: &str, count: usize, per_s: f64, latency: Option<Percentiles>) -> Vec<String> {
    let mut cells = vec![label.to_owned(), count.to_string(), format!("{per_s:.1}")];
    cells.extend(Percentiles::cells(latency));
    cells
}

/// `3 (INSUFFICIENT_FUNDS 2, PROCESSING_FAILED 1)`, or `0`.
fn breakdown(counts: &BTreeMap<String, usize>) -> String {
    let total: usize = counts.values().sum();
    if total == 0 {
        return "0".to_owned();
    }
    let parts: Vec<String> = counts.iter().map(|(what, n)| format!("{what} {n}")).collect();
    format!("{total} ({})", parts.join(", "))
}

/// A table of numbers, right-aligned.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    aligned_table(header, rows, 0)
}

/// A table whose first column holds row labels, left-aligned, and the others numbers.
fn labelled_table(header: &[&str], rows: &[Vec<String>]) -> String {
    aligned_table(header, rows, 1)
}

/// A table in the style of `ledgerflow admin`'s, right-aligned from column `first_number` on.
fn aligned_table(header: &[&str], rows: &[Vec<String>], first_number: usize) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(header.iter().copied());
    for row in rows {
        t.add_row(row.iter().map(String::as_str));
    }
    for column in t.column_iter_mut().skip(first_number) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    format!("{t}\n")
}

#[cfg(test)]
mod tests {
    use super::labelled_table;

    #[test]
    fn tables_align_labels_left_and_numbers_right() {
        let text =
            labelled_table(&["", "n"], &[vec!["accepted".into(), "5".into()], vec!["raw".into(), "1234".into()]]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.iter().any(|l| l.contains("│ accepted ┆    5 │")), "{text}");
        assert!(lines.iter().any(|l| l.contains("│ raw      ┆ 1234 │")), "{text}");
    }
}
