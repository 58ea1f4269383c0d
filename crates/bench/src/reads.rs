//! `--balance-reads`: shows that reading a balance costs the same at any history length. One
//! account's history is grown to each `--entries` length in turn (a synthetic history, through
//! the store's API for it), and `--reads` sequential `Store::balance` calls are timed at each,
//! with MongoDB's own account of the index keys and documents one read examines; and as many
//! `Store::balance_as_of` reads of the instant of the history's middle entry, likewise.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use ledgerflow_domain::{AccountId, Balance, Currency, UserId};
use ledgerflow_store::Store;
use ledgerflow_store::synthetic::ReadPlan;

use crate::figures::Percentiles;
use crate::progress::BarProgress;
use crate::run::{Bench, guarded};

/// Balance reads made (and not timed) before each timed series, to warm caches and pools.
const WARMUP_READS: usize = 20;

/// Balance-read latency at one history length.
pub struct ReadFigures {
    pub entries: u64,
    /// How long growing the history to this length took.
    pub insert: Duration,
    pub latency: Percentiles,
    /// From `explain`: 1 key and 1 document whatever the history length, if the
    /// `(accountId, seq)` index does its job.
    pub plan: ReadPlan,
    /// The same for `Store::balance_as_of` at the instant of the middle entry: 1 and 1 too, if
    /// the `(accountId, createdAt, seq)` index does its job.
    pub as_of_latency: Percentiles,
    pub as_of_plan: ReadPlan,
}

impl Bench {
    /// Measures on a database of its own, deleted afterwards unless `--keep`, and prints the
    /// report.
    pub async fn run_balance_reads(&self) -> Result<()> {
        let mut sizes = self.args.entries.clone();
        sizes.sort_unstable();
        sizes.dedup();
        let db = &self.sandbox.db;
        let measured = guarded(self.deadline, self.measure_reads(&sizes)).await;
        if self.args.keep {
            eprintln!("kept: database {db}");
        } else {
            self.drop_database(db).await;
        }
        let rows = measured?;
        if self.args.json {
            println!("{}", serde_json::to_string_pretty(&crate::report::reads_json(&rows, self.args.reads))?);
        } else {
            print!("{}", crate::output::render_reads(&rows, self.args.reads));
        }
        Ok(())
    }

    /// Grows one account's history to each size in turn and times `--reads` sequential
    /// `Store::balance` calls at each.
    async fn measure_reads(&self, sizes: &[u64]) -> Result<Vec<ReadFigures>> {
        let store = Store::connect(&self.conn.services.mongodb_uri, &self.sandbox.db).await.context("MongoDB")?;
        store.ensure_indexes().await.context("MongoDB")?;
        let measured = self.measure_reads_in(&store, sizes).await;
        store.shutdown().await;
        measured
    }

    async fn measure_reads_in(&self, store: &Store, sizes: &[u64]) -> Result<Vec<ReadFigures>> {
        let account = store.insert_account(UserId::generate(), Currency::USD).await?;
        let mut rows = Vec::new();
        let mut length = 0;
        for &entries in sizes {
            let target = i64::try_from(entries).context("--entries is too large")?;
            let bar = self.bars.bar(usize::try_from(entries).unwrap_or(usize::MAX), "entries");
            bar.set_position(length);
            let started = Instant::now();
            let balance = store
                .extend_synthetic_history(&account, target, &BarProgress(bar.clone()))
                .await
                .context("writing the synthetic history")?;
            let insert = started.elapsed();
            bar.finish();
            length = entries;
            let latency = time_balance_reads(store, account.id, self.args.reads as usize, balance).await?;
            let plan = store.explain_balance_read(&account).await.context("explain")?;
            let middle = store.entry_time(&account, (target / 2).max(1)).await?.context("the middle entry")?;
            let reads = self.args.reads as usize;
            let as_of_latency = time_balance_as_of_reads(store, account.id, reads, middle, balance).await?;
            let as_of_plan = store.explain_balance_as_of(account.id, middle).await.context("explain")?;
            rows.push(ReadFigures { entries, insert, latency, plan, as_of_latency, as_of_plan });
        }
        Ok(rows)
    }
}

async fn time_balance_reads(store: &Store, account: AccountId, reads: usize, expected: Balance) -> Result<Percentiles> {
    for _ in 0..WARMUP_READS {
        store.balance(account).await?;
    }
    let mut samples = Vec::with_capacity(reads);
    for _ in 0..reads {
        let started = Instant::now();
        let balance = store.balance(account).await?;
        samples.push(started.elapsed());
        ensure!(balance == expected, "balance read {balance}, expected {expected}");
    }
    Percentiles::of(samples).context("no balance reads")
}

/// Times reads of the balance as of `at`, which must lie within the history: one synthetic
/// entry credits 1, so the balance then is between 1 and the whole history's.
async fn time_balance_as_of_reads(
    store: &Store,
    account: AccountId,
    reads: usize,
    at: DateTime<Utc>,
    latest: Balance,
) -> Result<Percentiles> {
    for _ in 0..WARMUP_READS {
        store.balance_as_of(account, at).await?;
    }
    let mut samples = Vec::with_capacity(reads);
    for _ in 0..reads {
        let started = Instant::now();
        let balance = store.balance_as_of(account, at).await?;
        samples.push(started.elapsed());
        ensure!(Balance(1) <= balance && balance <= latest, "balance as of {at} read {balance}, latest {latest}");
    }
    Percentiles::of(samples).context("no balance reads")
}
