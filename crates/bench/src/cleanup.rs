//! Deleting what a run made, unless `--keep`: its queues and database when it started its own
//! processes, and the raw phase's database. Best effort and bounded, so that a dead server
//! cannot hold the bench: what could not be deleted is named for deleting by hand (or left to
//! `scripts/services.sh sweep`).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use ledgerflow_messaging::{Topology, connect};
use ledgerflow_store::Store;
use tracing::warn;

use crate::run::Bench;

/// Bound on each clean-up step, so a broken server cannot hold the bench forever.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

impl Bench {
    /// Deletes (or with `--keep`, names) the queues and databases the load run made.
    pub async fn cleanup(&self) {
        let sandbox = &self.sandbox;
        let mut databases = Vec::new();
        if sandbox.owned {
            databases.push(sandbox.db.as_str());
        }
        if self.args.raw {
            databases.push(sandbox.raw_db.as_str());
        }
        if self.args.keep {
            if sandbox.owned {
                eprintln!("kept: queues and exchanges {}.*", sandbox.prefix);
            }
            for db in databases {
                eprintln!("kept: database {db}");
            }
            return;
        }
        if sandbox.owned {
            let topology = self.conn.topology(&sandbox.prefix);
            let amqp_uri = &self.conn.services.amqp_uri;
            bounded_step(&format!("delete queues {}.*", sandbox.prefix), || delete_topology(amqp_uri, &topology)).await;
        }
        for db in databases {
            self.drop_database(db).await;
        }
    }

    /// Drops one database the run made, within the clean-up bound.
    pub async fn drop_database(&self, db: &str) {
        let uri = &self.conn.services.mongodb_uri;
        bounded_step(&format!("drop database {db}"), || drop_database(uri, db)).await;
    }
}

/// Runs a clean-up step, retrying it for up to `CLEANUP_TIMEOUT` (a broker or database that is
/// restarting, or the very fault that failed the run, often passes within seconds); then
/// reports the last error and gives up, so a dead server cannot hold the bench.
async fn bounded_step<F, Fut>(what: &str, step: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let by = Instant::now() + CLEANUP_TIMEOUT;
    loop {
        let left = by.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left, step()).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => format!("no answer within {CLEANUP_TIMEOUT:?}"),
        };
        if Instant::now() + Duration::from_secs(1) >= by {
            warn!(error = %error, "could not {what}; delete it by hand");
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn delete_topology(amqp_uri: &str, topology: &Topology) -> Result<()> {
    let connection = connect(amqp_uri, "ledgerflow-bench-cleanup").await?;
    let channel = connection.create_channel().await?;
    let deleted = topology.delete(&channel).await;
    ledgerflow_messaging::close(&connection, "bench cleanup").await;
    Ok(deleted?)
}

async fn drop_database(mongodb_uri: &str, db: &str) -> Result<()> {
    let store = Store::connect(mongodb_uri, db).await?;
    let dropped = store.drop_database().await;
    store.shutdown().await;
    dropped?;
    Ok(())
}
