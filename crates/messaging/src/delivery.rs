//! A command as a worker receives it: its body, what its properties say, and the one way it
//! is settled (acked, dead-lettered, requeued, or sent through the retry queue).

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use ledgerflow_domain::RequestId;

use crate::{MessagingError, Publisher, REQUEST_ID_HEADER};

/// The AMQP header counting how many times a command has been tried (absent: first try).
/// Believed only on messages LedgerFlow's own processes published (see [`Origin`]).
pub const ATTEMPT_HEADER: &str = "x-ledgerflow-attempt";

/// The AMQP header naming the broker user that first published a command, on the copies
/// LedgerFlow's own processes republish (retries, dead letters, replays): a copy's `user_id`
/// is the republisher's. Believed only on messages LedgerFlow's own processes published.
pub const PUBLISHER_HEADER: &str = "x-ledgerflow-publisher";

/// The broker users LedgerFlow's own processes (gateways, workers, operators' tools) connect
/// as. Their messages may act for users' recorded transactions, and their bookkeeping headers
/// ([`ATTEMPT_HEADER`], [`PUBLISHER_HEADER`]) are believed; anyone else's are not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedUsers(BTreeSet<String>);

impl TrustedUsers {
    pub fn new(users: impl IntoIterator<Item = String>) -> Self {
        Self(users.into_iter().filter(|u| !u.is_empty()).collect())
    }

    /// `configured` and the user a process connecting with `uri` publishes as: a process's
    /// own copies (retries, dead letters, replays) must be believed when they come back,
    /// whatever the configuration says.
    pub fn with_own(configured: &[String], uri: &str) -> Self {
        Self::new(configured.iter().cloned().chain(crate::broker_user(uri)))
    }

    pub fn contains(&self, user: &str) -> bool {
        self.0.contains(user)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// Where a command came from, as the broker and LedgerFlow's own processes vouch for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The broker user that first published it; `None` when it carried no `user_id`.
    pub publisher: Option<String>,
    /// Whether that publisher is one of LedgerFlow's own processes.
    pub own: bool,
    /// Which try this is: 1, unless LedgerFlow's own processes counted more.
    pub attempt: u32,
}

impl Origin {
    /// Reads the origin off a message's `user_id` and headers.
    pub fn of(user_id: Option<&str>, headers: Option<&FieldTable>, trusted: &TrustedUsers) -> Origin {
        let header = |name: &str| headers.and_then(|h| h.inner().get(name));
        if !user_id.is_some_and(|u| trusted.contains(u)) {
            // Someone else's message: what its headers claim about its past is its own word.
            return Origin { publisher: user_id.map(str::to_owned), own: false, attempt: 1 };
        }
        // An empty name marks a copy of a message that carried no user_id at all.
        let publisher = match header(PUBLISHER_HEADER) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()).filter(|s| !s.is_empty()),
            _ => user_id.map(str::to_owned),
        };
        let attempt = match header(ATTEMPT_HEADER) {
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
            Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
            _ => 1,
        };
        Origin { own: publisher.as_deref().is_some_and(|p| trusted.contains(p)), publisher, attempt: attempt.max(1) }
    }

    /// Headers for a copy LedgerFlow republishes: the original ones, with this origin's
    /// publisher and `attempt` in place of whatever the message claimed.
    fn stamp(&self, headers: Option<&FieldTable>, attempt: u32) -> FieldTable {
        let mut headers = headers.cloned().unwrap_or_default();
        let publisher = self.publisher.as_deref().unwrap_or_default();
        headers.insert(PUBLISHER_HEADER.into(), AMQPValue::LongString(publisher.into()));
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempt)));
        headers
    }
}

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
    /// the delivery is acked. Should that publish fail, the delivery is requeued as by
    /// [`Settlement::Requeue`], to be given up again: never rejected, since a quorum queue
    /// dead-letters what it is refused at most once, and would drop it for good if the
    /// dead-letter queue could not take that copy either.
    DeadLetter(DeadLetterReason),
    /// Put back for another try (the broker failed, not the command), after a second.
    Requeue,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Acked,
    /// Its dead letter confirmed, then acked.
    DeadLettered,
    /// Back in its queue, to be delivered again.
    Requeued,
}

impl Settled {
    /// The `outcome` label of `ledgerflow_messages_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acked => "acked",
            Self::DeadLettered => "dead_lettered",
            Self::Requeued => "requeued",
        }
    }
}

/// How long a delivery waits before it goes back to its queue: a broker that is failing
/// would otherwise hand it straight back, and an outage would become a hot redelivery loop.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

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

    /// Where it came from: who published it and which try this is (1 for a first delivery,
    /// then one more per trip through the retry queue).
    pub fn origin(&self, trusted: &TrustedUsers) -> Origin {
        let user_id = self.0.properties.user_id().as_ref().map(|u| u.as_str());
        Origin::of(user_id, self.0.properties.headers().as_ref(), trusted)
    }

    fn header(&self, name: &str) -> Option<&AMQPValue> {
        self.0.properties.headers().as_ref()?.inner().get(name)
    }

    /// Publishes a copy, counted as the next attempt, to the retry queue, whence it returns
    /// to the transfers exchange after the queue's delay with its routing key (so to its
    /// partition). The copy sets no `expiration`: the queue's TTL alone times it. The delivery
    /// itself still has to be settled.
    pub async fn send_to_retry(&self, publisher: &Publisher, origin: &Origin) -> Result<(), MessagingError> {
        let headers = origin.stamp(self.0.properties.headers().as_ref(), origin.attempt.saturating_add(1));
        let props = self.0.properties.clone().with_headers(headers);
        let retry = publisher.topology().retry();
        publisher.publish(&retry, self.0.routing_key.as_str(), &self.0.data, props).await
    }

    /// Settles the delivery; a dead letter is published through `publisher` first, saying it
    /// came from `origin`. Answers how it ended, which for a dead letter that could not be
    /// published is [`Settled::Requeued`].
    pub async fn settle(
        self,
        how: Settlement,
        publisher: &Publisher,
        origin: &Origin,
    ) -> Result<Settled, MessagingError> {
        // lapin answers whether the delivery was still unsettled; settling twice cannot happen
        // here, as this takes the delivery.
        match how {
            Settlement::Ack => {
                self.0.ack(BasicAckOptions::default()).await?;
                Ok(Settled::Acked)
            }
            Settlement::DeadLetter(reason) => match self.dead_letter(&reason, publisher, origin).await {
                Ok(()) => {
                    self.0.ack(BasicAckOptions::default()).await?;
                    Ok(Settled::DeadLettered)
                }
                Err(e) => {
                    tracing::warn!(error = %e, code = reason.code, "could not publish the dead letter; requeueing it");
                    self.requeue().await
                }
            },
            Settlement::Requeue => self.requeue().await,
        }
    }

    async fn requeue(self) -> Result<Settled, MessagingError> {
        tokio::time::sleep(REQUEUE_PAUSE).await;
        self.0.nack(BasicNackOptions { requeue: true, multiple: false }).await?;
        Ok(Settled::Requeued)
    }

    /// A copy of the command, with its properties and routing key, and the reason headers.
    async fn dead_letter(
        &self,
        reason: &DeadLetterReason,
        publisher: &Publisher,
        origin: &Origin,
    ) -> Result<(), MessagingError> {
        let mut headers = origin.stamp(self.0.properties.headers().as_ref(), origin.attempt);
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.code.into()));
        headers.insert(REASON_DETAIL_HEADER.into(), AMQPValue::LongString(reason.detail.as_str().into()));
        let props = self.0.properties.clone().with_headers(headers);
        let dead = publisher.topology().dead_letters();
        publisher.publish(&dead, self.0.routing_key.as_str(), &self.0.data, props).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn trusted() -> TrustedUsers {
        TrustedUsers::new(["lf-gateway".to_owned(), "lf-worker".to_owned()])
    }

    #[test]
    fn a_strangers_bookkeeping_headers_are_not_believed() {
        let forged = headers(&[
            (ATTEMPT_HEADER, AMQPValue::LongLongInt(99)),
            (PUBLISHER_HEADER, AMQPValue::LongString("lf-gateway".into())),
        ]);
        let origin = Origin::of(Some("svc-payroll"), Some(&forged), &trusted());
        assert_eq!(origin, Origin { publisher: Some("svc-payroll".into()), own: false, attempt: 1 });
        let anonymous = Origin::of(None, Some(&forged), &trusted());
        assert_eq!(anonymous, Origin { publisher: None, own: false, attempt: 1 });
    }

    #[test]
    fn ledgerflows_own_copies_say_who_published_first_and_which_try() {
        let copy = headers(&[
            (ATTEMPT_HEADER, AMQPValue::LongLongInt(3)),
            (PUBLISHER_HEADER, AMQPValue::LongString("svc-payroll".into())),
        ]);
        let origin = Origin::of(Some("lf-worker"), Some(&copy), &trusted());
        assert_eq!(origin, Origin { publisher: Some("svc-payroll".into()), own: false, attempt: 3 });
        let gateways = Origin::of(Some("lf-gateway"), None, &trusted());
        assert_eq!(gateways, Origin { publisher: Some("lf-gateway".into()), own: true, attempt: 1 });
    }

    #[test]
    fn a_copy_is_stamped_with_the_origin_not_the_claims() {
        let forged = headers(&[(PUBLISHER_HEADER, AMQPValue::LongString("lf-gateway".into()))]);
        let origin = Origin::of(Some("svc-payroll"), Some(&forged), &trusted());
        let stamped = origin.stamp(Some(&forged), 2);
        assert_eq!(
            Origin::of(Some("lf-worker"), Some(&stamped), &trusted()),
            Origin { publisher: Some("svc-payroll".into()), own: false, attempt: 2 }
        );
        let anonymous = Origin::of(None, Some(&forged), &trusted()).stamp(Some(&forged), 2);
        let copied = Origin::of(Some("lf-worker"), Some(&anonymous), &trusted());
        assert_eq!(copied, Origin { publisher: None, own: false, attempt: 2 });
    }
}
