//! The webhook dispatcher as a process of its own (`ledgerflow dispatcher`) or beside a
//! gateway and workers (`ledgerflow up`): its store, its metrics listener, and
//! [`ledgerflow_dispatcher::run`] until the shutdown.

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::open_store;
use crate::settings::{Connections, DispatcherSettings, WebhookPolicySettings};

/// Runs one dispatcher until `shutdown` is cancelled (waiting for MongoDB as long as it takes).
pub async fn run(
    connections: Connections,
    policy: WebhookPolicySettings,
    settings: DispatcherSettings,
    shutdown: CancellationToken,
) -> Result<()> {
    let config = settings.config(&policy)?;
    let metrics = match settings.dispatcher_metrics_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.context("cannot listen for the dispatcher's metrics")?),
        None => None,
    };
    let store = open_store(&connections, None).await?;
    if let Some(listener) = metrics {
        // Installed before the dispatcher registers its counters at zero.
        ledgerflow_telemetry::prometheus();
        info!(addr = ?listener.local_addr(), "serving the dispatcher's metrics");
        tokio::spawn(ledgerflow_telemetry::serve_metrics(listener, shutdown.clone().cancelled_owned()));
    }
    ledgerflow_dispatcher::run(store.clone(), config, shutdown).await;
    store.shutdown().await;
    Ok(())
}
