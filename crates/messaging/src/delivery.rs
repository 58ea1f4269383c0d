//! A command as a worker receives it: its body, what its properties say, and the one way it
//! is settled (acked, dead-lettered, requeued, or sent through the retry queue).

use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use ledgerflow_domain::RequestId;

use crate::{MessagingError, Publisher, REQUEST_ID_HEADER};

/// The AMQP header counting how many times a command has been tried (absent: first try).
pub const ATTEMPT_HEADER: &str = "x-ledgerflow-attempt";

/// The AMQP headers a dead letter carries to say why LedgerFlow gave it up: a stable code
/// (`INVALID_COMMAND`, `UNKNOWN_TRANSACTION`, …) and a sentence for people.
pub const REASON_HEADER: &str = "x-ledgerflow-reason";
pub const REASON_DETAIL_HEADER: &str = "x-ledgerflow-reason-detail";

/// Longest reason detail carried (the reasons are one sentence; a body is never echoed whole).
const MAX_DETAIL_CHARS: usize = 512;

/// Why a command is dead-lettered: a stable, machine-readable code and a detail for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterReason {
    pub code: &'static str,
    pub detail: String,
}

impl DeadLetterReason {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into().chars().take(MAX_DETAIL_CHARS).collect() }
    }
}

/// How a delivery ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Done with: the broker forgets it.
    Ack,
    /// Given up: a copy carrying the reason goes to the dead-letter exchange (confirmed), then
    /// the delivery is acked. Should that publish fail, the delivery is rejected instead and
    /// its queue dead-letters it without the reason: never lost.
    DeadLetter(DeadLetterReason),
    /// Put back for another try (the broker failed, not the command).
    Requeue,
}

/// A command taken from a partition queue.
pub struct CommandDelivery(pub(crate) lapin::message::Delivery);

impl CommandDelivery {
    pub fn body(&self) -> &[u8] {
        &self.0.data
    }

    /// The publisher's message id (the gateway sets the transaction id).
    pub fn message_id(&self) -> Option<String> {
        self.0.properties.message_id().as_ref().map(ToString::to_string)
    }

    /// The publisher's `x-request-id`, if it is a sane one (it goes into every log line).
    pub fn request_id(&self) -> Option<RequestId> {
        match self.header(REQUEST_ID_HEADER)? {
            AMQPValue::LongString(s) => s.to_string().parse().ok(),
            _ => None,
        }
    }

    /// Whether the broker delivered it before (to this worker or another).
    pub fn redelivered(&self) -> bool {
        self.0.redelivered
    }

    /// Which try this is: 1 for a first delivery, then one more per trip through the retry
    /// queue.
    pub fn attempt(&self) -> u32 {
        match self.header(ATTEMPT_HEADER) {
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
            Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
            _ => 1,
        }
    }

    fn header(&self, name: &str) -> Option<&AMQPValue> {
        self.0.properties.headers().as_ref()?.inner().get(name)
    }

    /// Publishes a copy, counted as the next attempt, to the retry queue, whence it returns
    /// to the transfers exchange after the queue's delay with its routing key (so to its
    /// partition). The copy sets no `expiration`: the queue's TTL alone times it. The delivery
    /// itself still has to be settled.
    pub async fn send_to_retry(&self, publisher: &Publisher) -> Result<(), MessagingError> {
        let mut headers = self.0.properties.headers().clone().unwrap_or_default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(i64::from(self.attempt()) + 1));
        let props = self.0.properties.clone().with_headers(headers);
        let retry = publisher.topology().retry();
        publisher.publish(&retry, self.0.routing_key.as_str(), &self.0.data, props).await
    }

    /// Settles the delivery; a dead letter is published through `publisher` first.
    pub async fn settle(self, how: Settlement, publisher: &Publisher) -> Result<(), MessagingError> {
        // lapin answers whether the delivery was still unsettled; settling twice cannot happen
        // here, as this takes the delivery.
        match how {
            Settlement::Ack => self.0.ack(BasicAckOptions::default()).await?,
            Settlement::DeadLetter(reason) => match self.dead_letter(&reason, publisher).await {
                Ok(()) => self.0.ack(BasicAckOptions::default()).await?,
                Err(e) => {
                    tracing::warn!(error = %e, code = reason.code, "could not publish the dead letter; rejecting it");
                    self.0.reject(BasicRejectOptions { requeue: false }).await?
                }
            },
            Settlement::Requeue => self.0.nack(BasicNackOptions { requeue: true, multiple: false }).await?,
        };
        Ok(())
    }

    /// A copy of the command, with its properties and routing key, and the reason headers.
    async fn dead_letter(&self, reason: &DeadLetterReason, publisher: &Publisher) -> Result<(), MessagingError> {
        let mut headers = self.0.properties.headers().clone().unwrap_or_default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.code.into()));
        headers.insert(REASON_DETAIL_HEADER.into(), AMQPValue::LongString(reason.detail.as_str().into()));
        let props = self.0.properties.clone().with_headers(headers);
        let dead = publisher.topology().dead_letters();
        publisher.publish(&dead, self.0.routing_key.as_str(), &self.0.data, props).await
    }
}
