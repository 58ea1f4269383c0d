//! Commands that expired in a partition queue. A publisher may set an AMQP `expiration` on a
//! command; RabbitMQ cannot be told to ignore it, and dead-letters the command unread when it
//! lapses (reason `expired`). So that no command disappears without a result, the topology
//! copies such dead letters to a queue of their own ([`Topology::expired`]), which the workers
//! consume competitively (each copy reaches one of them) to report the command FAILED
//! `EXPIRED`. The dead letter itself stays in the dead-letter queue for operators.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, Consumer};

use crate::{MessagingError, REASON_HEADER, Topology, close, connect};

/// Longest wait for the observer's channel, topology and subscription.
const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// Expired commands a worker holds unacked at once: they are rare, and handled one by one.
const PREFETCH: u16 = 16;

/// A worker's subscription to the expired commands.
pub struct Expirations {
    connection: Connection,
    consumer: Consumer,
    partitions: Vec<String>,
}

/// A command the broker dead-lettered because it expired in a partition queue. It has to be
/// settled: acked once reported, or put back.
pub struct ExpiredCommand {
    delivery: lapin::message::Delivery,
    queue: String,
}

impl Expirations {
    /// Connects as `name`, declares the topology and subscribes to the expired commands.
    pub async fn subscribe(uri: &str, name: &str, topology: &Topology) -> Result<Self, MessagingError> {
        let connection = connect(uri, name).await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            topology.declare(&channel).await?;
            channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            let queue = topology.expired();
            let tag = format!("{name}-expired");
            let options = BasicConsumeOptions::default();
            Ok::<_, MessagingError>(
                channel
                    .basic_consume(queue.as_str().into(), tag.as_str().into(), options, FieldTable::default())
                    .await?,
            )
        };
        match tokio::time::timeout(SETUP_LIMIT, setup).await {
            Ok(Ok(consumer)) => Ok(Self { connection, consumer, partitions: topology.partitions() }),
            Ok(Err(e)) => {
                close(&connection, "setup failed").await;
                Err(e)
            }
            Err(_) => {
                close(&connection, "setup timed out").await;
                Err(MessagingError::Unavailable(format!("no subscription to expired commands within {SETUP_LIMIT:?}")))
            }
        }
    }

    /// The next command that expired in a partition queue. Whatever else reaches the queue
    /// (a command whose first death was in the retry queue and that was later given up, say)
    /// is acked and skipped here: it is in the dead-letter queue already, with its reason.
    pub async fn next(&mut self) -> Result<ExpiredCommand, MessagingError> {
        loop {
            let delivery = match self.consumer.next().await {
                Some(delivery) => delivery?,
                None => return Err(MessagingError::Unavailable("the expired commands' consumer was cancelled".into())),
            };
            let headers = delivery.properties.headers().as_ref();
            match expired_in(headers, &self.partitions) {
                Some(queue) => return Ok(ExpiredCommand { delivery, queue }),
                None => {
                    delivery.ack(BasicAckOptions::default()).await?;
                }
            }
        }
    }

    pub async fn close(self, reason: &str) {
        close(&self.connection, reason).await;
    }
}

impl ExpiredCommand {
    pub fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    /// The publisher's message id (the gateway sets the transaction id).
    pub fn message_id(&self) -> Option<String> {
        self.delivery.properties.message_id().as_ref().map(ToString::to_string)
    }

    /// Who published it (the broker dead-letters the message as it was published).
    pub fn origin(&self, trusted: &crate::TrustedUsers) -> crate::Origin {
        let props = &self.delivery.properties;
        crate::Origin::of(props.user_id().as_ref().map(|u| u.as_str()), props.headers().as_ref(), trusted)
    }

    /// The partition queue it expired in.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Done with: reported.
    pub async fn ack(self) -> Result<(), MessagingError> {
        // lapin answers whether it was still unsettled; this takes it, so it was.
        self.delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Put back, to be reported later (by this worker or another).
    pub async fn requeue(self) -> Result<(), MessagingError> {
        self.delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await?;
        Ok(())
    }
}

/// The partition queue a dead letter expired in, if its latest death is an expiry in one of
/// `partitions` and LedgerFlow did not give it up itself (its own dead letters carry the
/// reason header, and keep the `x-death` of earlier trips through the retry queue).
fn expired_in(headers: Option<&FieldTable>, partitions: &[String]) -> Option<String> {
    let headers = headers?.inner();
    if headers.contains_key(REASON_HEADER) {
        return None;
    }
    // The broker keeps `x-death` ordered most recent first.
    let Some(AMQPValue::FieldArray(deaths)) = headers.get("x-death") else { return None };
    let Some(AMQPValue::FieldTable(latest)) = deaths.as_slice().first() else { return None };
    let reason = latest.inner().get("reason").and_then(text)?;
    let queue = latest.inner().get("queue").and_then(text)?;
    (reason == "expired" && partitions.contains(&queue)).then_some(queue)
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldArray;

    use super::*;

    fn death(reason: &str, queue: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("reason".into(), AMQPValue::LongString(reason.into()));
        t.insert("queue".into(), AMQPValue::LongString(queue.into()));
        t.insert("count".into(), AMQPValue::LongLongInt(1));
        AMQPValue::FieldTable(t)
    }

    fn headers(deaths: Vec<AMQPValue>) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(deaths)));
        h
    }

    #[test]
    fn only_an_expiry_in_a_partition_as_the_latest_death_counts() {
        let partitions = vec!["lf.transfers.p0".to_owned(), "lf.transfers.p1".to_owned()];
        let expired = headers(vec![death("expired", "lf.transfers.p1"), death("expired", "lf.transfers.retry.2000ms")]);
        assert_eq!(expired_in(Some(&expired), &partitions).as_deref(), Some("lf.transfers.p1"));
        // A trip through the retry queue, then rejected: not an expiry.
        let rejected =
            headers(vec![death("rejected", "lf.transfers.p1"), death("expired", "lf.transfers.retry.2000ms")]);
        assert_eq!(expired_in(Some(&rejected), &partitions), None);
        let retried = headers(vec![death("expired", "lf.transfers.retry.2000ms")]);
        assert_eq!(expired_in(Some(&retried), &partitions), None);
        let mut given_up = expired.clone();
        given_up.insert(REASON_HEADER.into(), AMQPValue::LongString("ATTEMPTS_EXHAUSTED".into()));
        assert_eq!(expired_in(Some(&given_up), &partitions), None);
        assert_eq!(expired_in(None, &partitions), None);
        assert_eq!(expired_in(Some(&FieldTable::default()), &partitions), None);
    }
}
