//! Sends PENDING transfers whose publish was never confirmed: the gateway that recorded them
//! answered 503 (broker down) or died between recording and publishing. Running it in every
//! gateway replica is safe: a duplicate command is harmless to the idempotent worker.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::AppState;
use crate::routes::publish_command;

/// Transfers republished per sweep; the next sweep takes the rest.
const BATCH: i64 = 200;

pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.republish_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stale = match state.store.unpublished_pending(state.config.republish_after, BATCH).await {
            Ok(stale) => stale,
            Err(e) => {
                warn!(error = %e, "republisher cannot read transactions");
                continue;
            }
        };
        for record in stale {
            match publish_command(&state, &record.to_command(), None).await {
                Ok(()) => info!(transaction_id = %record.id, "republished unconfirmed transfer"),
                Err(e) => {
                    warn!(transaction_id = %record.id, error = %e, "republish failed, will retry");
                    break;
                }
            }
        }
    }
}
