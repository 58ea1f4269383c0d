//! What happens to one delivery.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use ledgerflow_domain::{
    CommandError, FailureReason, IdempotencyKey, Initiator, TransactionId, TransactionStatus, TransferCommand,
    TransferResult,
};
use ledgerflow_messaging::{MessagingError, Publisher, RESULT_TYPE};
use ledgerflow_store::{Execution, Store, StoreError, TransactionRecord};
use tracing::{Instrument, error, info, info_span, warn};

/// Pause before requeueing a command that hit a transient fault, so an outage does not turn
/// into a hot redelivery loop.
const TRANSIENT_PAUSE: Duration = Duration::from_secs(1);

/// What to do with the delivery once the work is done.
enum Settle {
    Ack,
    /// Reject without requeue: the queue dead-letters it.
    DeadLetter,
    /// Put it back for another try (transient fault).
    Requeue,
}

pub(crate) async fn handle(store: Store, results: Publisher, delivery: Delivery) {
    let message_id = delivery.properties.message_id().as_ref().map(ToString::to_string);
    let span = info_span!(
        "command",
        message_id = message_id.as_deref().unwrap_or(""),
        transaction_id = tracing::field::Empty,
        redelivered = delivery.redelivered,
    );
    async {
        let settle = match TransferCommand::parse(&delivery.data) {
            Ok(cmd) => {
                if let Some(id) = cmd.transaction_id {
                    tracing::Span::current().record("transaction_id", tracing::field::display(id));
                }
                execute(&store, &results, &cmd).await
            }
            Err(invalid) => refuse(&store, &results, invalid, message_id.as_deref()).await,
        };
        let settled = match settle {
            Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
            Settle::DeadLetter => delivery.reject(BasicRejectOptions { requeue: false }).await,
            Settle::Requeue => {
                tokio::time::sleep(TRANSIENT_PAUSE).await;
                delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await
            }
        };
        if let Err(e) = settled {
            // The channel is gone; the broker will redeliver the message to someone.
            warn!(error = %e, "could not settle delivery");
        }
    }
    .instrument(span)
    .await;
}

async fn execute(store: &Store, results: &Publisher, cmd: &TransferCommand) -> Settle {
    match store.execute(cmd).await {
        Ok(Execution::Decided(record)) => {
            if cmd.transaction_id.is_none() {
                tracing::Span::current().record("transaction_id", tracing::field::display(record.id));
            }
            let reason = record.failure_reason.map_or("", |r| r.as_str());
            info!(status = %record.status, failure_reason = reason, amount = record.amount.minor(), "transaction decided");
            report(results, &result_of(&record)).await
        }
        Ok(Execution::AlreadyTerminal(record)) => {
            info!(status = %record.status, "already terminal, republishing its result");
            report(results, &result_of(&record)).await
        }
        Ok(Execution::UnknownTransaction(id)) => {
            warn!(transaction_id = %id, "command names an unknown transaction, dead-lettering");
            let result = failed(Some(id), Some(cmd.idempotency_key.clone()), Some(cmd.initiator.clone()));
            dead_letter_after(report(results, &result).await)
        }
        Ok(Execution::Mismatch { existing }) => {
            warn!(existing = %existing, "command contradicts the recorded transaction, dead-lettering");
            let result = failed(None, Some(cmd.idempotency_key.clone()), Some(cmd.initiator.clone()));
            dead_letter_after(report(results, &result).await)
        }
        Err(e) if e.is_transient() => {
            warn!(error = %e, "transient failure, requeueing");
            Settle::Requeue
        }
        Err(e) => {
            error!(error = %e, "cannot process command, dead-lettering");
            Settle::DeadLetter
        }
    }
}

/// A command that is not valid: fail its transaction when it can be identified beyond doubt,
/// report FAILED, and dead-letter it.
async fn refuse(store: &Store, results: &Publisher, invalid: CommandError, message_id: Option<&str>) -> Settle {
    warn!(reason = %invalid.reason, "invalid command, dead-lettering");
    let claimed = invalid.transaction_id.or_else(|| message_id.and_then(|m| m.parse().ok()));
    let mut result = failed(None, invalid.idempotency_key.clone(), invalid.initiator.clone());
    if let Some(id) = claimed {
        match identify(store, id, invalid.initiator.as_ref(), invalid.idempotency_key.as_ref()).await {
            Ok(Some(record)) => result = result_of(&record),
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "store unavailable while refusing, requeueing");
                return Settle::Requeue;
            }
        }
    }
    dead_letter_after(report(results, &result).await)
}

/// Fails the claimed transaction only if the message also carries its initiator and key: a
/// bare id in a broken message must not let anyone fail somebody else's transfer.
async fn identify(
    store: &Store,
    id: TransactionId,
    initiator: Option<&Initiator>,
    key: Option<&IdempotencyKey>,
) -> Result<Option<TransactionRecord>, StoreError> {
    let Some(record) = store.find_transaction(id).await? else { return Ok(None) };
    if Some(&record.initiator) != initiator || Some(&record.idempotency_key) != key {
        return Ok(None);
    }
    tracing::Span::current().record("transaction_id", tracing::field::display(id));
    store.fail_pending(id, FailureReason::InvalidCommand).await
}

fn result_of(record: &TransactionRecord) -> TransferResult {
    let mut result = TransferResult::new(Some(record.id), record.status, record.failure_reason, record.completed_at);
    result.idempotency_key = Some(record.idempotency_key.clone());
    result.initiator = Some(record.initiator.clone());
    result
}

fn failed(id: Option<TransactionId>, key: Option<IdempotencyKey>, initiator: Option<Initiator>) -> TransferResult {
    let mut result = TransferResult::new(
        id,
        TransactionStatus::Failed,
        Some(FailureReason::InvalidCommand),
        Some(chrono::Utc::now()),
    );
    result.idempotency_key = key;
    result.initiator = initiator;
    result
}

/// Publishes a result; the delivery is acked only if that worked, so a result is never lost.
async fn report(results: &Publisher, result: &TransferResult) -> Settle {
    match publish_result(results, result).await {
        Ok(()) => Settle::Ack,
        Err(e) => {
            warn!(error = %e, "could not publish result, requeueing the command");
            Settle::Requeue
        }
    }
}

fn dead_letter_after(reported: Settle) -> Settle {
    match reported {
        Settle::Ack => Settle::DeadLetter,
        other => other,
    }
}

async fn publish_result(results: &Publisher, result: &TransferResult) -> Result<(), MessagingError> {
    let id = result.transaction_id.map(|id| id.to_string()).unwrap_or_default();
    let props = BasicProperties::default()
        .with_type(RESULT_TYPE.into())
        .with_correlation_id(id.as_str().into())
        .with_message_id(TransactionId::generate().to_string().into());
    results.publish(&results.topology().results(), &id, &result.to_json(), props).await
}
