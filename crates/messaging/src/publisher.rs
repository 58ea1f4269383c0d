use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{Brokers, MessagingError, Topology};

/// How long a publish waits for the broker's confirm before the caller gives up (and, in the
/// gateway, answers 503 and leaves the message to the republisher).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long opening a channel and declaring the topology may take once connected.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed connection attempt, publishes fail at once for this long instead of each
/// request waiting on a broker that is down.
const RECONNECT_COOLDOWN: Duration = Duration::from_millis(500);

/// Opens an AMQP connection named `name` (shown in the broker's management UI) to the first
/// broker of `uri` (one AMQP URI, or a comma-separated list of a cluster's nodes: [`Brokers`])
/// that answers, each given an equal share of 3 s ([`Brokers::attempt_limit`]).
/// Every (re)connection starts again from the first, so a process whose node died moves on to
/// the next live one, and a dead node costs each reconnection one refused attempt (or its
/// share of the budget, if its host is silent).
pub async fn connect(uri: &str, name: &str) -> Result<Connection, MessagingError> {
    let brokers = Brokers::parse(uri).map_err(|e| MessagingError::InvalidBrokers(e.to_string()))?;
    let limit = brokers.attempt_limit(CONNECT_TIMEOUT);
    let mut unreachable = Vec::new();
    for broker in brokers.iter() {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match tokio::time::timeout(limit, Connection::connect_uri(broker.uri().clone(), props)).await {
            Ok(Ok(connection)) => {
                if !unreachable.is_empty() {
                    warn!(connection = name, %broker, ?unreachable, "connected to a later broker of the list");
                }
                return Ok(connection);
            }
            // A single broker's own error, as callers have always seen it.
            Ok(Err(e)) if brokers.len() == 1 => return Err(e.into()),
            Ok(Err(e)) => unreachable.push(format!("{broker}: {e}")),
            Err(_) => unreachable.push(format!("{broker}: no connection within {limit:?}")),
        }
    }
    Err(MessagingError::Unavailable(match brokers.len() {
        1 => format!("no connection within {limit:?}"),
        _ => format!("no broker of the list answered: {}", unreachable.join("; ")),
    }))
}

/// Closes a connection gracefully, giving up after 3 s: a close whose close-ok
/// never came once held a test's teardown forever, and nothing that stops may wait on it.
pub async fn close(connection: &Connection, reason: &str) {
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, connection.close(200, reason.into())).await;
}

/// What a passive declare tells about a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Messages waiting for a consumer.
    pub ready: u32,
    /// Consumers subscribed, including those waiting behind a single active consumer.
    pub consumers: u32,
}

struct Link {
    connection: Connection,
    channel: Channel,
    /// Which of this publisher's links it is, counted from 1.
    generation: u64,
    /// Whether earlier versions' retry queues could be declared on this link and have
    /// answered since ([`Publisher::retired_retries`]): one whose broker node is down is not
    /// asked about again until the next link.
    retired: bool,
}

#[derive(Default)]
struct State {
    link: Option<Link>,
    last_failure: Option<Instant>,
    /// Links opened so far.
    opened: u64,
}

/// A publisher with confirms on one lazily (re)connected channel. A publish returns only once
/// the broker has taken responsibility for the message (confirm `ack`), so a success means it
/// is durably queued. After any failure the link is dropped and the next publish reconnects:
/// the process survives broker restarts without restarting itself.
#[derive(Clone)]
pub struct Publisher {
    uri: Arc<str>,
    name: Arc<str>,
    /// The broker user this publisher connects as, set as every message's `user_id`: the
    /// broker refuses a `user_id` other than the connection's, so a worker knows for sure which
    /// broker user published a command.
    user: Option<Arc<str>>,
    topology: Topology,
    state: Arc<Mutex<State>>,
}

/// The user name a broker URI connects as (`guest` when it names none), or `None` for a URI
/// that does not parse (connecting with it fails anyway). Of a comma-separated list of
/// brokers, the first one's.
pub fn broker_user(uri: &str) -> Option<String> {
    let first = uri.split(',').next()?.trim();
    first.parse::<lapin::uri::AMQPUri>().ok().map(|u| u.authority.userinfo.username)
}

impl Publisher {
    pub fn new(uri: &str, name: &str, topology: Topology) -> Self {
        let user = broker_user(uri).map(Arc::from);
        Self { uri: uri.into(), name: name.into(), user, topology, state: Arc::default() }
    }

    /// The name its connection shows on the broker, and its messages' `app_id`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The broker URI this publisher connects to.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Connects now (declaring the topology) rather than on first publish.
    pub async fn ensure_connected(&self) -> Result<(), MessagingError> {
        self.channel().await.map(|_| ())
    }

    /// Messages ready (not yet delivered to a consumer) in an existing queue.
    pub async fn ready_messages(&self, queue: &str) -> Result<u32, MessagingError> {
        Ok(self.queue_state(queue).await?.ready)
    }

    /// Ready messages and consumers (active or waiting) of an existing queue.
    pub async fn queue_state(&self, queue: &str) -> Result<QueueState, MessagingError> {
        let (channel, generation) = self.channel().await?;
        match tokio::time::timeout(CONFIRM_TIMEOUT, passive_declare(channel, queue)).await {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(e)) => {
                // A failed declare closes the channel: start afresh next time.
                self.reset(Some(generation)).await;
                Err(e)
            }
            Err(_) => {
                self.reset(Some(generation)).await;
                Err(MessagingError::Unavailable(format!("no answer about queue {queue} within {CONFIRM_TIMEOUT:?}")))
            }
        }
    }

    /// Ready messages and consumers of each of earlier versions' retry queues
    /// ([`Topology::retired_retries`]), as far as they answer: none when this link could not
    /// declare them (their broker node was down), and none from the first that fails to
    /// answer until the next link, so a dead node costs one warning per link. Each is asked on
    /// a channel of its own, as a failed passive declare closes its channel, and these queues
    /// must not take the publishing channel with them.
    pub async fn retired_retries(&self) -> Result<Vec<(String, QueueState)>, MessagingError> {
        let (_, generation) = self.channel().await?;
        let mut states = Vec::new();
        for queue in self.topology.retired_retries() {
            match self.retired_state(generation, &queue).await {
                Ok(Some(state)) => states.push((queue, state)),
                Ok(None) => break,
                Err(e) => {
                    warn!(publisher = %self.name, queue, error = %e, "an earlier version's retry queue does not answer (its broker node down?); not asking again on this connection");
                    if let Some(link) = self.state.lock().await.link.as_mut().filter(|l| l.generation == generation) {
                        link.retired = false;
                    }
                    break;
                }
            }
        }
        Ok(states)
    }

    /// What a passive declare of `queue` tells, asked on a fresh channel of link `generation`
    /// and closed after, within `CONFIRM_TIMEOUT`; `None` when that link is gone or does not
    /// look at earlier versions' queues.
    async fn retired_state(&self, generation: u64, queue: &str) -> Result<Option<QueueState>, MessagingError> {
        let asked = async {
            let channel = {
                let state = self.state.lock().await;
                match &state.link {
                    Some(link) if link.generation == generation && link.retired => {
                        link.connection.create_channel().await?
                    }
                    _ => return Ok(None),
                }
            };
            let answer = passive_declare(channel.clone(), queue).await?;
            // Tidiness: a channel left open goes with its connection.
            let _ = channel.close(200, "asked".into()).await;
            Ok(Some(answer))
        };
        tokio::time::timeout(CONFIRM_TIMEOUT, asked)
            .await
            .unwrap_or_else(|_| Err(MessagingError::Unavailable(format!("no answer within {CONFIRM_TIMEOUT:?}"))))
    }

    /// Declares earlier versions' retry queues ([`Topology::declare_retired`]) on a channel of
    /// its own, closed after; whether it could. Their broker node being down stops nothing:
    /// this version does not need them.
    async fn declare_retired(&self, connection: &Connection) -> bool {
        let declared = async {
            let channel = connection.create_channel().await?;
            self.topology.declare_retired(&channel).await?;
            let _ = channel.close(200, "declared".into()).await;
            Ok::<_, MessagingError>(())
        };
        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, declared)
            .await
            .unwrap_or_else(|_| Err(MessagingError::Unavailable(format!("no answer within {CONFIRM_TIMEOUT:?}"))));
        match outcome {
            Ok(()) => true,
            Err(e) => {
                warn!(publisher = %self.name, error = %e, "cannot declare earlier versions' retry queues (their broker node down?); not looking at them on this connection");
                false
            }
        }
    }

    /// Whether the current link is up (for readiness checks; does not reconnect).
    pub async fn is_connected(&self) -> bool {
        let state = self.state.lock().await;
        state.link.as_ref().is_some_and(|l| l.connection.status().connected() && l.channel.status().connected())
    }

    /// The current link's channel and generation, opening a link if there is none.
    pub(crate) async fn channel(&self) -> Result<(Channel, u64), MessagingError> {
        let mut state = self.state.lock().await;
        if let Some(link) = &state.link {
            if link.connection.status().connected() && link.channel.status().connected() {
                return Ok((link.channel.clone(), link.generation));
            }
            state.link = None;
        }
        if state.last_failure.is_some_and(|t| t.elapsed() < RECONNECT_COOLDOWN) {
            return Err(MessagingError::Unavailable("reconnecting to the broker".into()));
        }
        match self.open().await {
            Ok((connection, channel, retired)) => {
                info!(publisher = %self.name, "connected to broker");
                state.opened += 1;
                let generation = state.opened;
                state.link = Some(Link { connection, channel: channel.clone(), generation, retired });
                state.last_failure = None;
                Ok((channel, generation))
            }
            Err(e) => {
                warn!(publisher = %self.name, error = %e, "broker connection failed");
                state.last_failure = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Connects, opens a confirming channel and declares the topology, all within
    /// `OPEN_TIMEOUT`: a broker still starting up may accept connections and not answer.
    /// Also declares earlier versions' retry queues, but only as far as it can: whether it
    /// could is the third value.
    async fn open(&self) -> Result<(Connection, Channel, bool), MessagingError> {
        let connection = connect(&self.uri, &self.name).await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            self.topology.declare(&channel).await?;
            let retired = self.declare_retired(&connection).await;
            Ok::<_, MessagingError>((channel, retired))
        };
        match tokio::time::timeout(OPEN_TIMEOUT, setup).await {
            Ok(Ok((channel, retired))) => Ok((connection, channel, retired)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                close(&connection, "setup timed out").await;
                Err(MessagingError::Unavailable(format!("no channel and topology within {OPEN_TIMEOUT:?}")))
            }
        }
    }

    /// Drops the link so the next publish reconnects: the link of `generation` only, if still
    /// current (a publish that failed on an older link must not close the fresh one another
    /// opened since: with many in flight, each failure would close the next link in turn), or
    /// whichever link there is for `None`. The close happens outside the lock and is bounded:
    /// a broker that does not answer must not wedge every other publisher.
    async fn reset(&self, generation: Option<u64>) {
        if let Some(link) = self.detach(generation).await {
            close(&link.connection, "resetting").await;
        }
    }

    async fn detach(&self, generation: Option<u64>) -> Option<Link> {
        let mut state = self.state.lock().await;
        if generation.is_some_and(|g| state.link.as_ref().is_none_or(|l| l.generation != g)) {
            return None;
        }
        state.link.take()
    }

    /// Drops the link of `generation` (if still current) for the next publish, but closes it
    /// only once the confirms of the publishes still in flight on it are due: a nack says
    /// nothing against them.
    async fn retire(&self, generation: u64) {
        if let Some(link) = self.detach(Some(generation)).await {
            tokio::spawn(async move {
                tokio::time::sleep(CONFIRM_TIMEOUT).await;
                close(&link.connection, "replaced after a nack").await;
            });
        }
    }

    /// Publishes persistently to `exchange` and waits for the broker's confirm. Crate-private:
    /// what is published, and with which properties, is `envelope`'s and `delivery`'s to say.
    /// Mandatory: a message no queue takes fails with [`MessagingError::Unroutable`].
    pub(crate) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), MessagingError> {
        let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
        self.publish_confirmed(exchange, mandatory, [(routing_key, body, properties)]).await
    }

    /// Publishes `messages` (routing key, body, properties) persistently to `exchange`, in
    /// order on the one channel, then waits for all their confirms: one round trip's wait for
    /// the lot. Not mandatory: an exchange nobody has bound a queue to yet takes them (the
    /// event stream's, whose consumers come and go). Errs if any is not confirmed; which of
    /// them the broker took is then unknown, so the caller sends them all again.
    pub(crate) async fn publish_all(
        &self,
        exchange: &str,
        messages: Vec<(String, Vec<u8>, BasicProperties)>,
    ) -> Result<(), MessagingError> {
        self.publish_confirmed(exchange, BasicPublishOptions::default(), messages).await
    }

    /// Publishes each message, then waits for every confirm, within one bound: a half-dead
    /// connection can stall either.
    async fn publish_confirmed<K: AsRef<str>, B: AsRef<[u8]>>(
        &self,
        exchange: &str,
        options: BasicPublishOptions,
        messages: impl IntoIterator<Item = (K, B, BasicProperties)>,
    ) -> Result<(), MessagingError> {
        let (channel, generation) = self.channel().await?;
        let attempt = async {
            let mut confirms = Vec::new();
            for (routing_key, body, properties) in messages {
                let properties = self.persistent(properties);
                let publish = channel.basic_publish(
                    exchange.into(),
                    routing_key.as_ref().into(),
                    options,
                    body.as_ref(),
                    properties,
                );
                confirms.push(publish.await?);
            }
            for confirm in confirms {
                match confirm.await? {
                    Confirmation::Ack(None) => {}
                    // A mandatory message no queue took is returned, then acked.
                    Confirmation::Ack(Some(_)) => return Err(MessagingError::Unroutable),
                    Confirmation::Nack(_) | Confirmation::NotRequested => return Err(MessagingError::Nacked),
                }
            }
            Ok(())
        };
        self.settle(generation, tokio::time::timeout(CONFIRM_TIMEOUT, attempt).await).await
    }

    /// Persistent JSON, with this publisher's broker user as `user_id`.
    fn persistent(&self, properties: BasicProperties) -> BasicProperties {
        let mut properties = properties.with_delivery_mode(2).with_content_type("application/json".into());
        if let Some(user) = &self.user {
            properties = properties.with_user_id(user.as_ref().into());
        }
        properties
    }

    /// What a publish's outcome means for the link it went over.
    async fn settle(
        &self,
        generation: u64,
        outcome: Result<Result<(), MessagingError>, tokio::time::error::Elapsed>,
    ) -> Result<(), MessagingError> {
        let result = match outcome {
            Ok(result) => result,
            Err(_) => Err(MessagingError::ConfirmTimeout(CONFIRM_TIMEOUT)),
        };
        match result {
            Err(MessagingError::Amqp(_) | MessagingError::ConfirmTimeout(_)) => self.reset(Some(generation)).await,
            // On RabbitMQ 3.10, a channel that published to a quorum queue while its leader's
            // node was dying got every later publish nacked, long after a new leader was
            // elected (the cluster fault test); a fresh channel publishes at once.
            Err(MessagingError::Nacked) => self.retire(generation).await,
            _ => {}
        }
        result
    }

    /// Closes the connection (graceful shutdown).
    pub async fn close(&self) {
        self.reset(None).await;
    }
}

/// What a passive declare of `queue` on `channel` tells.
async fn passive_declare(channel: Channel, queue: &str) -> Result<QueueState, MessagingError> {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = channel.queue_declare(queue.into(), passive, FieldTable::default()).await?;
    Ok(QueueState { ready: q.message_count(), consumers: q.consumer_count() })
}
