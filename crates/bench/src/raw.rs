//! `--raw`, the floor reference: the same double-entry transactions (`Store::execute` on
//! upstream-style commands) in a tight loop at the same concurrency, without HTTP or the
//! broker, on a database of its own. The pipeline's rate is reported as a ratio of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ledgerflow_domain::{AccountId, Currency, FailureReason, TransactionStatus, TransferKind, UserId};
use ledgerflow_store::{Execution, Store};
use tracing::warn;

use crate::figures::{Percentiles, bump, per_second, reason_name};
use crate::plan::{FUNDING_CENTS, Planned, upstream_command};
use crate::pool::pool;
use crate::run::Bench;

/// Raw accounts funded in one database transaction.
const RAW_FUNDING_BATCH: usize = 64;

/// What the raw phase measured.
#[derive(Debug, Default)]
pub struct RawFigures {
    pub completed: usize,
    pub failed: BTreeMap<String, usize>,
    /// Calls that returned an error (e.g. contention beyond the retry budget).
    pub errors: usize,
    pub per_s: f64,
    pub latency: Option<Percentiles>,
}

/// How `Store::execute` decided a transaction.
type Decision = (TransactionStatus, Option<FailureReason>);

impl Bench {
    /// Replays `plan` through `Store::execute` on the raw database's own accounts.
    pub async fn raw_phase(&self, plan: &Arc<Vec<Planned>>) -> Result<RawFigures> {
        let uri = with_pool_size(&self.conn.services.mongodb_uri, self.args.concurrency());
        let store = Store::connect(&uri, &self.sandbox.raw_db).await.context("raw phase: MongoDB")?;
        store.ensure_indexes().await.context("raw phase: MongoDB")?;
        let accounts = self.raw_accounts(&store).await?;
        let bar = self.bars.bar(plan.len(), "raw");
        let (plan, tag) = (Arc::clone(plan), self.sandbox.tag.clone());
        let closing = store.clone();
        let started = Instant::now();
        let timed = pool(plan.len(), self.args.concurrency(), &bar, move |i| {
            let (store, t) = (store.clone(), plan[i]);
            let key = format!("raw-{tag}-{i}");
            let cmd = upstream_command(TransferKind::Transfer, accounts[t.from], accounts[t.to], t.amount, &key);
            async move {
                let began = Instant::now();
                let decided = match cmd {
                    Ok(cmd) => store.execute(&cmd).await.map_err(anyhow::Error::from).and_then(decision),
                    Err(e) => Err(e),
                };
                (began.elapsed(), decided)
            }
        })
        .await?;
        let elapsed = started.elapsed();
        bar.finish();
        closing.shutdown().await;
        Ok(RawFigures::tally(timed, elapsed))
    }

    /// Opens and funds the raw phase's accounts straight through the Store.
    async fn raw_accounts(&self, store: &Store) -> Result<Arc<Vec<AccountId>>> {
        let (n, owner) = (self.args.accounts(), UserId::generate());
        let bar = self.bars.bar(n, "raw accounts");
        let s = store.clone();
        let opened = pool(n, self.args.concurrency(), &bar, move |_| {
            let s = s.clone();
            async move { s.insert_account(owner, Currency::USD).await.map(|a| a.id) }
        })
        .await?;
        bar.finish();
        let accounts: Arc<Vec<AccountId>> = Arc::new(opened.into_iter().collect::<Result<_, _>>()?);
        // Setup, not measured. Every funding debits the one funding account, so racing them at
        // the load's concurrency only makes them conflict: they go in sequential batches instead.
        let bar = self.bars.bar(n, "raw funding");
        let funding = AccountId::funding(Currency::USD);
        for (c, chunk) in accounts.chunks(RAW_FUNDING_BATCH).enumerate() {
            let cmds = chunk
                .iter()
                .enumerate()
                .map(|(j, &to)| {
                    let key = format!("raw-fund-{}-{}", self.sandbox.tag, c * RAW_FUNDING_BATCH + j);
                    upstream_command(TransferKind::InitialFunds, funding, to, FUNDING_CENTS, &key)
                })
                .collect::<Result<Vec<_>>>()?;
            for outcome in store.execute_batch(&cmds).await {
                let (status, reason) = decision(outcome?).context("raw funding")?;
                ensure!(status == TransactionStatus::Completed, "raw funding {status}: {reason:?}");
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
        Ok(accounts)
    }
}

impl RawFigures {
    fn tally(timed: Vec<(Duration, Result<Decision>)>, elapsed: Duration) -> Self {
        let mut figures = Self::default();
        let mut latency = Vec::new();
        for (took, decided) in timed {
            match decided {
                Ok((TransactionStatus::Completed, _)) => latency.push(took),
                Ok((_, reason)) => bump(&mut figures.failed, reason_name(reason)),
                Err(e) => {
                    figures.errors += 1;
                    warn!(error = %format!("{e:#}"), "raw Store::execute failed");
                }
            }
        }
        figures.completed = latency.len();
        figures.per_s = per_second(figures.completed, elapsed);
        figures.latency = Percentiles::of(latency);
        figures
    }
}

fn decision(execution: Execution) -> Result<Decision> {
    match execution {
        Execution::Decided { record, .. } | Execution::AlreadyTerminal { record, .. } => {
            Ok((record.status, record.failure_reason))
        }
        other => bail!("unexpected execution: {other:?}"),
    }
}

/// The URI with `maxPoolSize` set to the concurrency (unless it names one): the driver's
/// default pool of 10 connections would otherwise hold the floor reference below the
/// concurrency it is meant to run at.
fn with_pool_size(uri: &str, size: usize) -> String {
    if uri.to_ascii_lowercase().contains("maxpoolsize=") {
        return uri.to_owned();
    }
    let hosts = uri.find("://").map_or(uri, |i| &uri[i + 3..]);
    let separator = if uri.contains('?') {
        "&"
    } else if hosts.contains('/') {
        "?"
    } else {
        "/?"
    };
    format!("{uri}{separator}maxPoolSize={size}")
}

#[cfg(test)]
mod tests {
    use super::with_pool_size;

    #[test]
    fn the_pool_size_is_added_to_any_uri_shape() {
        assert_eq!(
            with_pool_size("mongodb://127.0.0.1:27017/?replicaSet=rs0", 64),
            "mongodb://127.0.0.1:27017/?replicaSet=rs0&maxPoolSize=64"
        );
        assert_eq!(with_pool_size("mongodb://h:1", 8), "mongodb://h:1/?maxPoolSize=8");
        assert_eq!(with_pool_size("mongodb://h:1/db", 8), "mongodb://h:1/db?maxPoolSize=8");
        assert_eq!(with_pool_size("mongodb://h/?maxPoolSize=5", 8), "mongodb://h/?maxPoolSize=5");
    }
}
