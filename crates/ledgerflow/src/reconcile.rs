//! `ledgerflow reconcile`: the operator's proof that the books are straight.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use ledgerflow_store::{Progress, ReconcileOptions, ReconcileReport, Store};

/// A progress bar on stderr when it is a terminal; silent otherwise (cron jobs, CI).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = if std::io::stderr().is_terminal() { ProgressBar::new(0) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Self(bar)
    }
}

impl Progress for Bar {
    fn phase(&self, name: &'static str, estimated_total: u64) {
        self.0.set_message(name);
        self.0.set_length(estimated_total);
        self.0.set_position(0);
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

/// Runs the checks and prints the report; returns whether the ledger is consistent.
pub async fn run(store: &Store, options: &ReconcileOptions, json: bool) -> anyhow::Result<bool> {
    let bar = Bar::new();
    let report = store.reconcile(options, &bar).await?;
    bar.0.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(report.ok)
}

fn render(r: &ReconcileReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "LedgerFlow reconciliation");
    let _ = writeln!(out, "  transactions checked: {}", r.transactions);
    let _ = writeln!(out, "  entries checked:      {}", r.entries);
    let _ = writeln!(out, "  accounts checked:     {}", r.accounts);
    for t in &r.totals {
        let mark = if t.debits == t.credits { "ok" } else { "MISMATCH" };
        let _ = writeln!(out, "  {}: debits {} / credits {}  {mark}", t.currency, t.debits, t.credits);
    }
    let _ = writeln!(out, "  stuck PENDING:        {}", r.stuck_pending);
    if r.ok {
        let _ = writeln!(out, "OK: every invariant holds");
    } else {
        let _ = writeln!(out, "FAILED: {} discrepancies", r.discrepancy_count);
        for d in &r.discrepancies {
            let _ = writeln!(out, "  [{}] {}: {}", d.check, d.subject, d.detail);
        }
        if (r.discrepancies.len() as u64) < r.discrepancy_count {
            let _ = writeln!(out, "  … and {} more", r.discrepancy_count - r.discrepancies.len() as u64);
        }
    }
    out
}
