//! The test's own handles on RabbitMQ: publishing as an upstream system would, and taking
//! what the system published (results, dead letters, commands) off its queues.

use std::time::{Duration, Instant};

use futures::StreamExt;
use ledgerflow_messaging::lapin::message::Delivery;
use ledgerflow_messaging::lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions};
use ledgerflow_messaging::lapin::{BasicProperties, Channel};
use ledgerflow_messaging::{Topology, connect};
use serde_json::{Value, json};

use crate::{DEADLINE, TestApp};

/// How long `drain_commands` waits for one more command once it has the least it wanted.
const QUIET: Duration = Duration::from_millis(300);
/// Commands ready in `topology`'s partition queues on the test broker now (passive declares:
/// live, unlike `rabbitmqctl list_queues`, whose counters are refreshed only every few seconds).
pub async fn ready_commands(topology: &Topology) -> u32 {
    ready_commands_at(&crate::amqp_uri(), topology).await
}

/// Like [`ready_commands`], on the broker at `uri` (a test's own node).
pub async fn ready_commands_at(uri: &str, topology: &Topology) -> u32 {
    let publisher = ledgerflow_messaging::Publisher::new(uri, "test-ready-commands", topology.clone());
    let mut ready = 0;
    for queue in topology.partitions() {
        ready += publisher.ready_messages(&queue).await.unwrap();
    }
    publisher.close().await;
    ready
}

impl TestApp {
    /// A channel on the shared test connection, for publishing as an upstream system or
    /// inspecting queues.
    pub async fn channel(&self) -> Channel {
        self.amqp.create_channel().await.unwrap()
    }

    /// Publishes raw bytes to the transfers exchange, as `service:test-upstream` would.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        let ch = self.upstream.create_channel().await.unwrap();
        let props = persistent().with_user_id(crate::UPSTREAM_BROKER_USER.into());
        publish_on(&ch, &self.topology.transfers(), routing_key, body, props).await;
    }

    /// Publishes raw bytes to the transfers exchange as broker user `user` (one of
    /// `scripts/services.sh`'s), on a connection of its own.
    pub async fn publish_raw_as(&self, user: &str, routing_key: &str, body: &[u8]) {
        let props = persistent().with_user_id(user.into());
        self.publish_with(&self.topology.transfers(), routing_key, body, props).await;
    }

    /// Publishes raw bytes with the given properties to any exchange (a publisher's own
    /// `expiration`, a retry queue's exchange), and waits for the confirm.
    pub async fn publish_with(&self, exchange: &str, routing_key: &str, body: &[u8], properties: BasicProperties) {
        // As the broker user the properties name (the broker refuses a user_id other than the
        // connection's), else as the administrator.
        let connection = match properties.user_id() {
            Some(user) => Some(connect(&crate::amqp_uri_as(user.as_str()), "test-publish-with").await.unwrap()),
            None => None,
        };
        let ch = match &connection {
            Some(c) => c.create_channel().await.unwrap(),
            None => self.channel().await,
        };
        publish_on(&ch, exchange, routing_key, body, properties).await;
        if let Some(c) = connection {
            ledgerflow_messaging::close(&c, "done").await;
        }
    }

    /// Messages ready in one of this app's queues now (a passive declare: live).
    pub async fn ready_in(&self, queue: &str) -> u32 {
        let name = "test-ready-in";
        let publisher = ledgerflow_messaging::Publisher::new(&crate::amqp_uri(), name, self.topology.clone());
        let ready = publisher.ready_messages(queue).await.unwrap();
        publisher.close().await;
        ready
    }

    /// Takes up to `max` messages off a queue (acking them), waiting until at least `min`
    /// arrived or the deadline passed.
    pub async fn drain_queue(&self, queue: &str, min: usize, max: usize) -> Vec<Value> {
        let ch = self.channel().await;
        let bodies = take(&ch, queue, max, DEADLINE, |got| got.len() >= min).await;
        let _ = ch.close(200, "done".into()).await;
        bodies.iter().map(|body| serde_json::from_slice(body).unwrap_or(Value::Null)).collect()
    }

    /// Takes up to `max` transfer commands off the partition queues (acking them), waiting until
    /// at least `min` arrived (then until none came for a moment) or the deadline passed. With
    /// consumers, since quorum queues with a single active consumer refuse `basic.get`; only
    /// while no worker consumes them.
    pub async fn drain_commands(&self, min: usize, max: usize) -> Vec<Delivery> {
        let ch = self.channel().await;
        ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut consumers = Vec::new();
        for queue in self.topology.partitions() {
            let consumer = ch.basic_consume(queue.as_str().into(), "".into(), Default::default(), Default::default());
            consumers.push(consumer.await.unwrap());
        }
        let mut deliveries = futures::stream::select_all(consumers);
        let start = Instant::now();
        let mut out = Vec::new();
        while out.len() < max {
            let wait = if out.len() >= min { QUIET } else { DEADLINE.saturating_sub(start.elapsed()) };
            match tokio::time::timeout(wait, deliveries.next()).await {
                Ok(Some(Ok(delivery))) => {
                    delivery.ack(BasicAckOptions::default()).await.unwrap();
                    out.push(delivery);
                }
                _ => break,
            }
        }
        // Anything delivered and not taken goes back to its queue.
        let _ = ch.close(200, "done".into()).await;
        out
    }

    /// Raw bodies currently dead-lettered (taken off the queue).
    pub async fn dead_letters(&self, min: usize) -> Vec<Vec<u8>> {
        let ch = self.channel().await;
        let bodies = take(&ch, &self.topology.dead_letters(), usize::MAX, DEADLINE, |got| got.len() >= min).await;
        let _ = ch.close(200, "done".into()).await;
        bodies
    }

    /// The commands a test publishes as an upstream system.
    pub fn upstream_command(&self, from: &str, to: &str, amount: i64, key: &str) -> Value {
        json!({
            "version": 1,
            "kind": "TRANSFER",
            "fromAccount": from,
            "toAccount": to,
            "amount": amount,
            "currency": "USD",
            "idempotencyKey": key,
            "initiator": "service:test-upstream",
            "requestedAt": chrono::Utc::now().to_rfc3339(),
        })
    }

    /// Waits until the upstream transaction under `key` is terminal; returns its record.
    pub async fn wait_upstream(&self, key: &str) -> ledgerflow_store::TransactionRecord {
        let initiator = "service:test-upstream".parse().unwrap();
        let key = key.parse().unwrap();
        let start = Instant::now();
        loop {
            if let Some(t) = self.store.find_by_key(&initiator, &key).await.unwrap().filter(|t| t.status.is_decided()) {
                return t;
            }
            assert!(start.elapsed() < DEADLINE, "upstream transaction {key} not terminal in time");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Closes, from the broker side, every AMQP connection whose client-given name contains
/// `fragment`, as a network fault or broker restart would. Returns how many it closed.
pub fn close_broker_connections(fragment: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q"])
        .output()
        .expect("rabbitmqctl runs");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((pid, properties)) = line.split_once('\t') else { continue };
        if pid.starts_with('<') && properties.contains(&format!("\"{fragment}")) {
            let ok = std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "test: simulated connection loss", "-q"])
                .status()
                .is_ok_and(|s| s.success());
            closed += usize::from(ok);
        }
    }
    closed
}

/// Persistent message properties, to add to.
pub fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes on `ch` (then closed) and waits for the broker's ack. A worker refuses a command
/// without a `user_id`, and the broker one naming a user other than the connection's.
pub async fn publish_on(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8], properties: BasicProperties) {
    ch.confirm_select(Default::default()).await.unwrap();
    let confirm =
        ch.basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), body, properties);
    assert!(confirm.await.unwrap().await.unwrap().is_ack(), "the broker refused a publish to {exchange}");
    let _ = ch.close(200, "done".into()).await;
}

/// Takes up to `max` messages off `queue` (acking them), until `enough` says the bodies taken
/// suffice and the queue is empty for now, or `limit` passes (`basic.get`: these queues have
/// no single active consumer that would refuse it).
pub async fn take(
    ch: &Channel,
    queue: &str,
    max: usize,
    limit: Duration,
    enough: impl Fn(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < max {
        match ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            Some(msg) => out.push(msg.delivery.data),
            None if enough(&out) || start.elapsed() > limit => break,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    out
}
