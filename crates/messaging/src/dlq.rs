//! The dead-letter queue, for operators: look at what could not be processed, and send it
//! back once the cause is fixed.

use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::{
    ATTEMPT_HEADER, MessagingError, Origin, PUBLISHER_HEADER, Publisher, REASON_DETAIL_HEADER, REASON_HEADER, Topology,
    TrustedUsers, close, connect,
};

/// One dead-lettered message, as found (left in the queue by [`peek`]).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    /// Why LedgerFlow gave it up (`INVALID_COMMAND`, `UNKNOWN_TRANSACTION`, …) and in words;
    /// absent on what the broker dead-lettered by itself (see `death_reason`).
    pub reason: Option<String>,
    pub reason_detail: Option<String>,
    /// The broker user that published it, as LedgerFlow recorded it or the broker vouched.
    pub publisher: Option<String>,
    /// Why the broker dead-lettered it (`rejected`, `expired`, …) and how often.
    pub death_reason: Option<String>,
    pub death_count: i64,
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn death(headers: Option<&FieldTable>) -> (Option<String>, i64) {
    let first = headers.and_then(|h| match h.inner().get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().first().cloned(),
        _ => None,
    });
    match first {
        Some(AMQPValue::FieldTable(t)) => {
            let reason = t.inner().get("reason").and_then(text);
            let count = match t.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                Some(AMQPValue::LongInt(n)) => i64::from(*n),
                _ => 0,
            };
            (reason, count)
        }
        _ => (None, 0),
    }
}

/// Reads up to `limit` dead letters without removing them (they return to the queue when
/// the channel closes).
pub async fn peek(uri: &str, topology: &Topology, limit: usize) -> Result<Vec<DeadLetter>, MessagingError> {
    let connection = connect(uri, "ledgerflow-admin-dlq").await?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    let mut found = Vec::new();
    while found.len() < limit {
        let Some(msg) =
            channel.basic_get(topology.dead_letters().as_str().into(), BasicGetOptions { no_ack: false }).await?
        else {
            break;
        };
        let headers = msg.delivery.properties.headers().as_ref();
        let (death_reason, death_count) = death(headers);
        let header = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(text);
        found.push(DeadLetter {
            reason: header(REASON_HEADER),
            reason_detail: header(REASON_DETAIL_HEADER),
            publisher: header(PUBLISHER_HEADER)
                .or_else(|| msg.delivery.properties.user_id().as_ref().map(ToString::to_string))
                .filter(|p| !p.is_empty()),
            message_id: msg.delivery.properties.message_id().as_ref().map(ToString::to_string),
            body: msg.delivery.data.clone(),
            death_reason,
            death_count,
        });
    }
    close(&connection, "peeked").await;
    Ok(found)
}

/// Moves up to `limit` dead letters back to the transfers exchange, each acked only after
/// its republish is confirmed. Bookkeeping headers (`x-death`, the attempt counter, the
/// reason) are dropped, so a replayed command gets a fresh set of attempts; the broker user
/// that first published it is kept in [`PUBLISHER_HEADER`], which workers believe only when
/// `uri`'s user is one of LedgerFlow's own (`trusted`): a replay acts for no one else.
pub async fn replay(
    uri: &str,
    topology: &Topology,
    trusted: &TrustedUsers,
    limit: usize,
) -> Result<usize, MessagingError> {
    let connection = connect(uri, "ledgerflow-admin-dlq").await?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    let publisher = Publisher::new(uri, "ledgerflow-admin-replay", topology.clone());
    let mut replayed = 0;
    while replayed < limit {
        let Some(msg) =
            channel.basic_get(topology.dead_letters().as_str().into(), BasicGetOptions { no_ack: false }).await?
        else {
            break;
        };
        let props = &msg.delivery.properties;
        let origin = Origin::of(props.user_id().as_ref().map(|u| u.as_str()), props.headers().as_ref(), trusted);
        let mut headers = FieldTable::default();
        for (k, v) in props.headers().as_ref().map(|h| h.inner().clone()).unwrap_or_default() {
            let bookkeeping = [ATTEMPT_HEADER, PUBLISHER_HEADER, REASON_HEADER, REASON_DETAIL_HEADER, "x-death"];
            if !bookkeeping.contains(&k.as_str()) && !k.as_str().starts_with("x-first-death") {
                headers.insert(k, v);
            }
        }
        let first = origin.publisher.unwrap_or_default();
        headers.insert(PUBLISHER_HEADER.into(), AMQPValue::LongString(first.as_str().into()));
        let mut out = BasicProperties::default().with_headers(headers);
        if let Some(id) = props.message_id() {
            out = out.with_message_id(id.clone());
        }
        if let Some(kind) = props.kind() {
            out = out.with_type(kind.clone());
        }
        publisher.publish(&topology.transfers(), msg.delivery.routing_key.as_str(), &msg.delivery.data, out).await?;
        msg.delivery.ack(BasicAckOptions::default()).await?;
        replayed += 1;
    }
    publisher.close().await;
    close(&connection, "replayed").await;
    Ok(replayed)
}
