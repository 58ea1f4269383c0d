//! What a run asks of MongoDB around its loads: a checkpoint between the unpaced load and the
//! timed one, and the check of every ledger invariant on the run's own database afterwards.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ledgerflow_store::{NoProgress, ReconcileOptions, ReconcileReport, Store};
use tracing::warn;

use crate::run::Bench;

impl Bench {
    /// Checks every ledger invariant of the run's own database once its load is over (debits
    /// equal credits, no balance below zero, every completed transfer with exactly its two
    /// entries, the hash chains intact, nothing left PENDING): a rate that broke the books
    /// would be no figure. Not with `--target`, whose database may hold far more than the run
    /// made.
    pub async fn check_ledger(&self) -> Result<ReconcileReport> {
        let store =
            Store::connect(&self.conn.services.mongodb_uri, &self.sandbox.db).await.context("ledger check: MongoDB")?;
        // Every transfer has its result by now, so anything still PENDING is stuck.
        let options = ReconcileOptions { max_pending_age: Duration::ZERO, hold_expiry_grace: Duration::from_secs(60) };
        let report = store.reconcile(&options, &NoProgress).await;
        store.shutdown().await;
        report.context("ledger check")
    }

    /// Asks MongoDB for a checkpoint; a server that refuses (no privilege for `fsync`) only
    /// leaves the pause after it to do the work.
    pub async fn checkpoint(&self) {
        let started = Instant::now();
        let done = async {
            let store = Store::connect(&self.conn.services.mongodb_uri, &self.conn.services.mongodb_db).await?;
            let done = store.checkpoint().await;
            store.shutdown().await;
            done
        };
        match done.await {
            Ok(()) => tracing::debug!(took_ms = started.elapsed().as_millis(), "MongoDB checkpoint"),
            Err(e) => warn!(error = %e, "MongoDB refused a checkpoint; only pausing"),
        }
    }
}

/// One line on the ledger check: what it covered, or what failed first.
pub fn ledger_summary(ledger: &ReconcileReport) -> String {
    let covered =
        format!("{} transactions, {} entries, {} accounts", ledger.transactions, ledger.entries, ledger.accounts);
    match ledger.discrepancies.first() {
        None => format!("every invariant holds ({covered})"),
        Some(d) => format!(
            "{} DISCREPANCIES ({covered}); first: [{}] {}: {}",
            ledger.discrepancy_count, d.check, d.subject, d.detail
        ),
    }
}
