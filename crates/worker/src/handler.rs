//! What happens to one delivery.

use std::sync::Arc;
use std::time::Duration;

use ledgerflow_domain::{
    Command, CommandError, FailureReason, IdempotencyKey, Initiator, RequestId, SettleCommand, TransactionId,
    TransactionStatus, TransferCommand, TransferKind, TransferResult,
};
use ledgerflow_messaging::{CommandDelivery, DeadLetterReason, Origin, Publisher, Settlement};
use ledgerflow_store::{Execution, Store, StoreError, TransactionRecord};
use tracing::{Instrument, error, info, info_span, warn};

use crate::authority::{Authority, Refused};
use crate::batcher::Batcher;

/// Longest wait for a delivery to be settled: a dead letter's confirmed publish, a requeue's
/// pause, and the broker taking the ack or nack.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler needs.
pub(crate) struct Ctx {
    pub store: Store,
    /// Executes commands in batches, one database transaction each.
    pub batcher: Batcher,
    pub results: Publisher,
    /// Tries (first delivery included) before a transiently failing command is given up.
    pub max_attempts: u32,
    /// How long a transiently failing command waits in the retry queue.
    pub retry_delay: Duration,
    /// Who may publish what.
    pub authority: Arc<Authority>,
}

/// What to do with the delivery once the work is done.
enum Settle {
    Ack,
    /// Give it up: to the dead-letter queue, with why.
    DeadLetter(DeadLetterReason),
    /// The database failed transiently: try again later through the retry queue, or give up
    /// once the attempts are spent.
    Retry,
    /// The broker failed (a result could not be published): put it back.
    Requeue,
}

pub(crate) async fn handle(ctx: Arc<Ctx>, delivery: CommandDelivery) {
    let (store, results) = (&ctx.store, &ctx.results);
    metrics::counter!("ledgerflow_messages_consumed_total").increment(1);
    if delivery.redelivered() {
        metrics::counter!("ledgerflow_messages_redelivered_total").increment(1);
    }
    let message_id = delivery.message_id();
    let request_id = delivery.request_id();
    let span = info_span!(
        "command",
        message_id = message_id.as_deref().unwrap_or(""),
        request_id = request_id.as_ref().map_or("", RequestId::as_str),
        transaction_id = tracing::field::Empty,
        redelivered = delivery.redelivered(),
    );
    async {
        let origin = delivery.origin(ctx.authority.trusted());
        let (parsed, mut settle) = match Command::parse(delivery.body()) {
            Ok(command) => match admit(&ctx, &origin, command).await {
                Ok(cmd) => {
                    if let Some(id) = cmd.transaction_id {
                        tracing::Span::current().record("transaction_id", tracing::field::display(id));
                    }
                    let settle = execute(&ctx, &cmd).await;
                    (Some(cmd), settle)
                }
                Err(settle) => (None, settle),
            },
            Err(invalid) => (None, refuse(store, results, invalid, message_id.as_deref(), origin.own).await),
        };
        if matches!(settle, Settle::Retry) {
            settle = retry_or_give_up(&ctx, &delivery, &origin, parsed.as_ref()).await;
        }
        let settling = async {
            match settle {
                Settle::Ack => delivery.settle(Settlement::Ack, results, &origin).await,
                Settle::DeadLetter(reason) => delivery.settle(Settlement::DeadLetter(reason), results, &origin).await,
                Settle::Retry | Settle::Requeue => delivery.settle(Settlement::Requeue, results, &origin).await,
            }
        };
        // Bounded, so a connection that dies mid-ack cannot wedge the consumer's drain; an
        // unsettled delivery is redelivered by the broker to someone.
        let outcome = match tokio::time::timeout(SETTLE_TIMEOUT, settling).await {
            Ok(Ok(settled)) => settled.as_str(),
            Ok(Err(e)) => {
                warn!(error = %e, "could not settle delivery");
                "unsettled"
            }
            Err(_) => {
                warn!("settling the delivery timed out");
                "unsettled"
            }
        };
        metrics::counter!("ledgerflow_messages_total", "outcome" => outcome).increment(1);
    }
    .instrument(span)
    .await;
}

async fn execute(ctx: &Ctx, cmd: &TransferCommand) -> Settle {
    let results = &ctx.results;
    match ctx.batcher.execute(cmd.clone()).await {
        Ok(Execution::Decided { record, hold }) => {
            if cmd.transaction_id.is_none() {
                tracing::Span::current().record("transaction_id", tracing::field::display(record.id));
            }
            let reason = record.failure_reason.map_or("", |r| r.as_str());
            metrics::counter!("ledgerflow_transfers_total", "status" => record.status.as_str(), "reason" => reason)
                .increment(1);
            info!(status = %record.status, failure_reason = reason, amount = record.amount.minor(), "transaction decided");
            report_with_hold(results, &record, hold.as_ref()).await
        }
        Ok(Execution::AlreadyTerminal { record, hold }) => {
            info!(status = %record.status, "already terminal, republishing its result");
            report_with_hold(results, &record, hold.as_ref()).await
        }
        Ok(Execution::UnknownTransaction(id)) => {
            warn!(transaction_id = %id, "command names an unknown transaction, dead-lettering");
            let result = failed_command(cmd, Some(id), FailureReason::InvalidCommand);
            let why = DeadLetterReason::new("UNKNOWN_TRANSACTION", format!("no transaction {id} is recorded"));
            dead_letter_after(report(results, &result).await, Settle::DeadLetter(why))
        }
        Ok(Execution::Mismatch { existing }) => {
            warn!(existing = %existing, "command contradicts the recorded transaction, dead-lettering");
            // Said as what it is: a bare INVALID_COMMAND under the key read as "the
            // transfer under this key failed", when that one may well have completed.
            let result = failed_command(cmd, None, FailureReason::IdempotencyKeyReused);
            let why = format!("contradicts transaction {existing}, recorded under the same id or key");
            let why = DeadLetterReason::new("IDEMPOTENCY_KEY_REUSED", why);
            dead_letter_after(report(results, &result).await, Settle::DeadLetter(why))
        }
        Err(e) if e.is_transient() => {
            warn!(error = %e, "transient failure");
            Settle::Retry
        }
        Err(e) => {
            error!(error = %e, "cannot process command, dead-lettering");
            Settle::DeadLetter(DeadLetterReason::new("UNPROCESSABLE", e.to_string()))
        }
    }
}

/// Reports a decided transaction and, for a completed POST_HOLD or VOID_HOLD, the hold it
/// settled (POSTED or VOIDED, as the commit returned it): a hold's watchers hear of its end as
/// they heard of its start.
async fn report_with_hold(results: &Publisher, record: &TransactionRecord, hold: Option<&TransactionRecord>) -> Settle {
    let settled = report(results, &result_of(record)).await;
    match hold {
        Some(hold) if matches!(settled, Settle::Ack) => report(results, &result_of(hold)).await,
        _ => settled,
    }
}

/// Completes a settlement that names only its hold from the hold's record (whose accounts,
/// currency and amount never change, so reading it outside the commit is safe). A hold its
/// initiator may not settle is as unknown to it as one that does not exist: FAILED
/// `HOLD_NOT_FOUND` and dead-lettered, like every message that cannot be carried out.
async fn complete(ctx: &Ctx, settle: &SettleCommand, origin: &Origin) -> Result<TransferCommand, Settle> {
    let hold = match ctx.store.find_transaction(settle.hold).await {
        Ok(hold) => hold.filter(|h| h.kind == TransferKind::Hold && h.initiator == settle.initiator),
        Err(e) => {
            warn!(error = %e, "store unavailable while reading the hold to settle");
            return Err(Settle::Retry);
        }
    };
    let Some(hold) = hold else {
        warn!(hold = %settle.hold, "settlement of a hold its initiator has not, dead-lettering");
        let result = failed(
            FailureReason::HoldNotFound,
            None,
            Some(settle.idempotency_key.clone()),
            Some(settle.initiator.clone()),
        );
        let why = DeadLetterReason::new("HOLD_NOT_FOUND", format!("no hold {} of {}", settle.hold, settle.initiator));
        return Err(dead_letter_after(report(&ctx.results, &result).await, Settle::DeadLetter(why)));
    };
    match settle.complete(&hold.request()) {
        Ok(cmd) => Ok(cmd),
        Err(e) => {
            let invalid = CommandError {
                reason: e.to_string(),
                transaction_id: settle.transaction_id,
                idempotency_key: Some(settle.idempotency_key.clone()),
                initiator: Some(settle.initiator.clone()),
            };
            Err(refuse(&ctx.store, &ctx.results, invalid, None, origin.own).await)
        }
    }
}

/// What may be carried out of a parsed command: the complete command, if its publisher may
/// send it (see `authority`); otherwise the command is settled here, as FAILED `UNAUTHORIZED`
/// and dead-lettered, or retried when the services cannot be read.
async fn admit(ctx: &Ctx, origin: &Origin, command: Command) -> Result<TransferCommand, Settle> {
    let (recorded, initiator, key) = match &command {
        Command::Complete(c) => (c.transaction_id, &c.initiator, &c.idempotency_key),
        Command::Settle(s) => (s.transaction_id, &s.initiator, &s.idempotency_key),
    };
    let service = match ctx.authority.identify(origin, recorded, initiator) {
        Ok(Ok(service)) => service,
        Ok(Err(refused)) => return Err(unauthorized(ctx, origin, refused, key.clone()).await),
        Err(e) => {
            warn!(error = %e, "cannot judge the publisher now");
            return Err(Settle::Retry);
        }
    };
    let cmd = match command {
        Command::Complete(cmd) => cmd,
        Command::Settle(settle) => complete(ctx, &settle, origin).await?,
    };
    let Some(service) = service else { return Ok(cmd) };
    match ctx.authority.permit(&service, &cmd.request).await {
        Ok(Ok(())) => Ok(cmd),
        Ok(Err(refused)) => Err(unauthorized(ctx, origin, refused, cmd.idempotency_key.clone()).await),
        Err(e) => {
            warn!(error = %e, "cannot judge the grant now");
            Err(Settle::Retry)
        }
    }
}

/// Refuses a command its publisher may not send: no money moves, a FAILED `UNAUTHORIZED`
/// result (naming the publishing service, if known, never a claimed initiator or a recorded
/// transaction) and a dead letter saying why.
async fn unauthorized(ctx: &Ctx, origin: &Origin, refused: Refused, key: IdempotencyKey) -> Settle {
    let code = refused.why.code();
    let publisher = origin.publisher.as_deref().unwrap_or("(none)");
    warn!(broker_user = publisher, code, reason = %refused.why, "unauthorized command, dead-lettering");
    metrics::counter!("ledgerflow_commands_unauthorized_total", "reason" => code).increment(1);
    let result = failed(FailureReason::Unauthorized, None, Some(key), refused.initiator());
    let why = DeadLetterReason::new("UNAUTHORIZED", format!("{code}: {} (broker user {publisher})", refused.why));
    dead_letter_after(report(&ctx.results, &result).await, Settle::DeadLetter(why))
}

/// A command that is not valid: fail its transaction when it can be identified beyond doubt
/// (and the message is LedgerFlow's own: nobody else's may end a recorded transaction),
/// report FAILED, and dead-letter it.
async fn refuse(
    store: &Store,
    results: &Publisher,
    invalid: CommandError,
    message_id: Option<&str>,
    own: bool,
) -> Settle {
    warn!(reason = %invalid.reason, "invalid command, dead-lettering");
    let why = DeadLetterReason::new("INVALID_COMMAND", invalid.reason.clone());
    let claimed = invalid.transaction_id.or_else(|| message_id.and_then(|m| m.parse().ok())).filter(|_| own);
    let mut result =
        failed(FailureReason::InvalidCommand, None, invalid.idempotency_key.clone(), invalid.initiator.clone());
    if let Some(id) = claimed {
        match identify(store, id, invalid.initiator.as_ref(), invalid.idempotency_key.as_ref()).await {
            Ok(Some(record)) => result = result_of(&record),
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "store unavailable while refusing");
                return Settle::Retry;
            }
        }
    }
    dead_letter_after(report(results, &result).await, Settle::DeadLetter(why))
}

/// Fails the claimed transaction only if the message also carries its initiator and key: a
/// bare id in a broken message must not let anyone fail somebody else's transfer.
async fn identify(
    store: &Store,
    id: TransactionId,
    initiator: Option<&Initiator>,
    key: Option<&IdempotencyKey>,
) -> Result<Option<TransactionRecord>, StoreError> {
    let Some(record) = store.find_transaction(id).await? else {
        return Ok(None);
    };
    if Some(&record.initiator) != initiator || Some(&record.idempotency_key) != key {
        return Ok(None);
    }
    tracing::Span::current().record("transaction_id", tracing::field::display(id));
    store.fail_pending(id, FailureReason::InvalidCommand).await
}

/// Sends a transiently failed command to the retry queue, from which it returns after the
/// delay; once `max_attempts` are spent, marks its transaction FAILED with
/// `PROCESSING_FAILED`, reports that, and dead-letters the command.
async fn retry_or_give_up(
    ctx: &Ctx,
    delivery: &CommandDelivery,
    origin: &Origin,
    cmd: Option<&TransferCommand>,
) -> Settle {
    let attempt = origin.attempt;
    if attempt < ctx.max_attempts {
        return match delivery.send_to_retry(&ctx.results, origin).await {
            Ok(()) => {
                warn!(attempt, max_attempts = ctx.max_attempts, delay = ?ctx.retry_delay, "sent to the retry queue");
                metrics::counter!("ledgerflow_messages_retried_total").increment(1);
                Settle::Ack
            }
            Err(e) => {
                warn!(error = %e, "could not reach the retry queue, requeueing");
                Settle::Requeue
            }
        };
    }
    error!(attempt, "attempts exhausted, failing the transaction and dead-lettering");
    let exhausted = || {
        let why = format!("transient failures outlasted {attempt} attempts");
        Settle::DeadLetter(DeadLetterReason::new("ATTEMPTS_EXHAUSTED", why))
    };
    let Some(cmd) = cmd else { return exhausted() };
    let found = match cmd.transaction_id {
        Some(id) => ctx.store.find_transaction(id).await,
        None => ctx.store.find_by_key(&cmd.initiator, &cmd.idempotency_key).await,
    };
    let result = match found {
        Ok(Some(record)) => match ctx.store.fail_pending(record.id, FailureReason::ProcessingFailed).await {
            Ok(Some(record)) => result_of(&record),
            Ok(None) => return exhausted(),
            Err(e) => {
                error!(error = %e, "cannot mark the transaction FAILED; it stays PENDING for reconcile and replay");
                return exhausted();
            }
        },
        // Never recorded (an upstream command): nothing to mark, but its publisher still hears.
        Ok(None) => failed_command(cmd, None, FailureReason::ProcessingFailed),
        Err(e) => {
            error!(error = %e, "database still unreachable; dead-lettering without a result");
            return exhausted();
        }
    };
    dead_letter_after(report(&ctx.results, &result).await, exhausted())
}

pub(crate) fn result_of(record: &TransactionRecord) -> TransferResult {
    let mut result = TransferResult::new(Some(record.id), record.status, record.failure_reason, record.completed_at);
    result.idempotency_key = Some(record.idempotency_key.clone());
    result.initiator = Some(record.initiator.clone());
    result.failed_leg = record.failed_leg;
    result.metadata = record.metadata.clone();
    result
}

/// A FAILED result for a command, naming it by its key and initiator.
fn failed_command(cmd: &TransferCommand, id: Option<TransactionId>, reason: FailureReason) -> TransferResult {
    failed(reason, id, Some(cmd.idempotency_key.clone()), Some(cmd.initiator.clone()))
}

fn failed(
    reason: FailureReason,
    id: Option<TransactionId>,
    key: Option<IdempotencyKey>,
    initiator: Option<Initiator>,
) -> TransferResult {
    let mut result = TransferResult::new(id, TransactionStatus::Failed, Some(reason), Some(chrono::Utc::now()));
    result.idempotency_key = key;
    result.initiator = initiator;
    result
}

/// Publishes a result; the delivery is acked only if that worked, so a result is never lost.
async fn report(results: &Publisher, result: &TransferResult) -> Settle {
    match results.publish_result(result).await {
        Ok(()) => Settle::Ack,
        Err(e) => {
            warn!(error = %e, "could not publish result, requeueing the command");
            Settle::Requeue
        }
    }
}

/// Dead-letters (with `then`, a [`Settle::DeadLetter`]) once the result is out; if it could
/// not be published, the command is requeued for that instead.
fn dead_letter_after(reported: Settle, then: Settle) -> Settle {
    match reported {
        Settle::Ack => then,
        other => other,
    }
}
