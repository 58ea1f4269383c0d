//! Re-sends PENDING transfers whose command may never have reached the broker: the gateway
//! that recorded them answered 503 (broker down), or died between recording and the
//! publisher confirm.
//!
//! Nothing is written per request to tell a published transfer from an unpublished one (such
//! a mark would race the worker's write of the same document). Instead a transfer is
//! republished when it is older than `republish_after` *and* the transfer and retry queues
//! have nothing waiting: a command that reached the broker is then either done or in a
//! worker's hands, and a duplicate is harmless to the idempotent worker. While a backlog
//! drains, nothing is republished. Each transfer is republished at most [`MAX_REPUBLISHES`]
//! times; one that still stays PENDING is left to `ledgerflow reconcile` and the operator.
//! Running the republisher in every gateway replica is safe for the same reason.
//!
//! Each sweep also sets `ledgerflow_pending_oldest_age_seconds`, the age of the oldest PENDING
//! transaction whatever its republishes: the one number that shows a transfer stuck (given up
//! here, lost, or behind a backlog) before the next `reconcile` run does.

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::AppState;

/// Transfers republished per sweep; the next sweep takes the rest.
const BATCH: i64 = 200;
/// Republishes of one transfer before it is left to the operator.
const MAX_REPUBLISHES: u32 = 5;

pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.republish_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        report_oldest_pending(&state).await;
        sweep(&state).await;
    }
}

/// Sets `ledgerflow_pending_oldest_age_seconds` (0 when nothing is PENDING). One indexed read
/// of a single document per sweep (`pending` by `createdAt`), whatever its republishes, so the
/// transfers given up above are counted too. Left as it was when the read fails: the database
/// being down shows on `/readyz` and in the 503s instead.
async fn report_oldest_pending(state: &AppState) {
    match state.store.oldest_pending().await {
        Ok(oldest) => {
            let age = oldest.map_or(0.0, |at| (Utc::now() - at).as_seconds_f64().max(0.0));
            metrics::gauge!("ledgerflow_pending_oldest_age_seconds").set(age);
        }
        Err(e) => debug!(error = %e, "cannot read the oldest PENDING transaction"),
    }
}

async fn sweep(state: &AppState) {
    let stale = match state.store.stale_pending(state.config.republish_after, MAX_REPUBLISHES, BATCH).await {
        Ok(stale) if stale.is_empty() => return,
        Ok(stale) => stale,
        Err(e) => {
            warn!(error = %e, "republisher cannot read transactions");
            return;
        }
    };
    if !queues_are_idle(state).await {
        debug!(candidates = stale.len(), "transfer queues busy, not republishing yet");
        return;
    }
    for record in stale {
        match state.store.count_republish(record.id).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!(error = %e, "republisher cannot update transactions");
                return;
            }
        }
        match state.publisher.publish_command(&record.to_command(), None).await {
            Ok(()) => info!(transaction_id = %record.id, "republished unconfirmed transfer"),
            Err(e) => {
                warn!(transaction_id = %record.id, error = %e, "republish failed, will retry");
                return;
            }
        }
    }
}

/// Whether no command waits in any partition or in the retry queue (nor in the retry queues of
/// earlier versions, which the workers empty into it).
async fn queues_are_idle(state: &AppState) -> bool {
    let topology = state.publisher.topology();
    for queue in topology.partitions().into_iter().chain([topology.retry()]) {
        match state.publisher.ready_messages(&queue).await {
            Ok(0) => {}
            Ok(_) => return false,
            Err(e) => {
                debug!(queue, error = %e, "cannot read queue depth");
                return false;
            }
        }
    }
    // An earlier version's queue that does not answer (its broker node is down, say) counts as
    // idle: this version must not depend on such a node, and what a republish adds is at
    // worst a duplicate the workers recognise.
    state.publisher.retired_retries().await.is_ok_and(|queues| queues.iter().all(|(_, q)| q.ready == 0))
}
