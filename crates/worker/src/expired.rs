//! Commands that expired in a partition queue before any worker took them (their publisher
//! set an AMQP `expiration`; see `ledgerflow_messaging::Expirations`). Each is reported FAILED
//! `EXPIRED`, as an invalid command is reported FAILED `INVALID_COMMAND`, and a transaction the
//! gateway recorded PENDING for it is marked so: no command disappears without a result, and
//! none leaves a transaction PENDING for ever. The dead letter stays in the dead-letter queue.
//!
//! Every worker observes the shared queue of expired commands; the broker gives each to one of
//! them, so a command is reported once (again only if a worker dies before its ack).

use std::sync::Arc;
use std::time::Duration;

use ledgerflow_domain::{
    Command, FailureReason, IdempotencyKey, Initiator, TransactionId, TransactionStatus, TransferResult,
};
use ledgerflow_messaging::{Expirations, ExpiredCommand, MessagingError, Topology};
use ledgerflow_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use crate::handler::{Ctx, result_of};

/// Pause before putting back an expired command that could not be reported (database or
/// broker failing), so an outage does not turn into a hot loop.
const PAUSE: Duration = Duration::from_secs(1);
/// Longest wait for the broker to take an ack or nack.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the observer connects, and as whom.
pub(crate) struct Observer {
    pub uri: String,
    pub name: String,
    pub topology: Topology,
}

/// Reports expired commands until `shutdown`; connection losses are retried with capped
/// backoff, as the consuming loop's are.
pub(crate) async fn run(ctx: Arc<Ctx>, observer: Observer, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match observe(&ctx, &observer, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                warn!(worker = %observer.name, error = %e, retry_in = ?backoff, "expired commands' observer lost, reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One connection's worth of observing. Returns `Ok` only on shutdown.
async fn observe(ctx: &Ctx, observer: &Observer, shutdown: &CancellationToken) -> Result<(), MessagingError> {
    let name = format!("{}-expired", observer.name);
    let mut expirations = Expirations::subscribe(&observer.uri, &name, &observer.topology).await?;
    let outcome = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            next = expirations.next() => match next {
                Ok(expired) => {
                    if let Err(e) = handle(ctx, expired).await {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            },
        }
    };
    expirations.close("worker stopping").await;
    outcome
}

/// Reports one expired command, then acks it; puts it back after a pause if it could not be
/// reported. An error means the broker connection failed.
async fn handle(ctx: &Ctx, expired: ExpiredCommand) -> Result<(), MessagingError> {
    let message_id = expired.message_id();
    let span = info_span!(
        "expired",
        queue = expired.queue(),
        message_id = message_id.as_deref().unwrap_or(""),
        transaction_id = tracing::field::Empty,
    );
    let reported = report(ctx, &expired, message_id.as_deref()).instrument(span).await;
    let settling = async {
        if reported {
            expired.ack().await
        } else {
            tokio::time::sleep(PAUSE).await;
            expired.requeue().await
        }
    };
    match tokio::time::timeout(SETTLE_TIMEOUT, settling).await {
        Ok(settled) => settled,
        Err(_) => Err(MessagingError::Unavailable("settling an expired command timed out".into())),
    }
}

/// Whether the expired command's result is out.
async fn report(ctx: &Ctx, expired: &ExpiredCommand, message_id: Option<&str>) -> bool {
    let mut claim = Claim::of(expired.body(), message_id);
    // What the message says is believed only as far as its publisher may say it (see
    // `authority`): nobody else's expired message fails a recorded transaction, reads one
    // under another's key, or names another's initiator in a result.
    let origin = expired.origin(ctx.authority.trusted());
    let vouched = match &claim.initiator {
        Some(initiator) => matches!(ctx.authority.identify(&origin, claim.id, initiator), Ok(Ok(_))),
        None => false,
    };
    if !vouched {
        claim = Claim { id: None, key: claim.key, initiator: None };
    }
    let result = match outcome(&ctx.store, &claim).await {
        Ok(result) => result,
        Err(e) => {
            warn!(error = %e, "store unavailable while reporting an expired command; putting it back");
            return false;
        }
    };
    if let Some(id) = result.transaction_id {
        tracing::Span::current().record("transaction_id", tracing::field::display(id));
    }
    let reason = result.failure_reason.map_or("", FailureReason::as_str);
    warn!(status = %result.status, failure_reason = reason, "command expired in its partition queue unread");
    match ctx.results.publish_result(&result).await {
        Ok(()) => {
            metrics::counter!("ledgerflow_commands_expired_total").increment(1);
            true
        }
        Err(e) => {
            warn!(error = %e, "could not publish an expired command's result; putting it back");
            false
        }
    }
}

/// What an expired message says about the transaction it is for, as far as it can be read.
struct Claim {
    id: Option<TransactionId>,
    key: Option<IdempotencyKey>,
    initiator: Option<Initiator>,
}

impl Claim {
    fn of(body: &[u8], message_id: Option<&str>) -> Self {
        let (id, key, initiator) = match Command::parse(body) {
            Ok(Command::Complete(cmd)) => (cmd.transaction_id, Some(cmd.idempotency_key), Some(cmd.initiator)),
            Ok(Command::Settle(settle)) => {
                (settle.transaction_id, Some(settle.idempotency_key), Some(settle.initiator))
            }
            Err(invalid) => (invalid.transaction_id, invalid.idempotency_key, invalid.initiator),
        };
        let id = id.or_else(|| message_id.and_then(|m| m.parse().ok()));
        Self { id, key, initiator }
    }
}

/// The result to publish. A recorded transaction is failed `EXPIRED` only if the message names
/// its id, initiator and key alike (a bare id must not let anyone fail somebody else's
/// transfer), and reported as it then stands (the republisher may have had it done
/// meanwhile). An upstream command (no id) that was carried out under its key before is
/// reported as that was; any other is reported FAILED `EXPIRED` under its key and initiator.
async fn outcome(store: &Store, claim: &Claim) -> Result<TransferResult, StoreError> {
    let (Some(initiator), Some(key)) = (&claim.initiator, &claim.key) else { return Ok(expired(claim)) };
    let record = match claim.id {
        Some(id) => match store.find_transaction(id).await? {
            Some(r) if r.initiator == *initiator && r.idempotency_key == *key => {
                store.fail_pending(id, FailureReason::Expired).await?
            }
            _ => None,
        },
        None => store.find_by_key(initiator, key).await?.filter(|r| r.status.is_decided()),
    };
    Ok(record.map_or_else(|| expired(claim), |r| result_of(&r)))
}

/// FAILED `EXPIRED`, naming the command by its key and initiator (no transaction id: nothing
/// recorded was found to be its).
fn expired(claim: &Claim) -> TransferResult {
    let now = Some(chrono::Utc::now());
    let mut result = TransferResult::new(None, TransactionStatus::Failed, Some(FailureReason::Expired), now);
    result.idempotency_key = claim.key.clone();
    result.initiator = claim.initiator.clone();
    result
}
