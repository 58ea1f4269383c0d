//! Consuming the partition queues: one connection and channel per worker, a subscription to
//! every partition (the broker makes one subscriber of each its single active consumer), and
//! a subscription to the roster queue that counts the workers.
//!
//! A partition can be handed on ([`Partitions::hand_off`]): its subscription is cancelled
//! and taken again, which puts this worker at the back of that queue's line, so the next
//! waiting worker becomes active. Each subscription is a generation; deliveries prefetched
//! under an old one still come through, tagged with it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{CommandDelivery, MessagingError, Topology, close, connect};

/// Longest wait for a consuming connection's channel, topology and subscriptions.
const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for the partition feeds to stop.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(3);

/// A delivery and the partition subscription it came from.
pub struct Fed {
    pub partition: u16,
    pub generation: u32,
    pub delivery: CommandDelivery,
}

/// One worker's subscriptions to every partition queue.
pub struct Partitions {
    connection: Connection,
    /// Where the deliveries of every partition arrive; `None` once every feed has ended.
    fed: mpsc::Receiver<Fed>,
    feeds: JoinSet<Result<(), MessagingError>>,
    hand_offs: Vec<Arc<Notify>>,
    stop: CancellationToken,
    /// Kept: dropping it would cancel the roster subscription. It never yields anything.
    _roster: Consumer,
}

impl Partitions {
    /// Connects as `name`, declares the topology and subscribes to every partition with
    /// `per_partition` unacked deliveries each, then joins the roster.
    pub async fn subscribe(
        uri: &str,
        name: &str,
        tag: &str,
        topology: &Topology,
        per_partition: u16,
    ) -> Result<Self, MessagingError> {
        let connection = connect(uri, name).await?;
        // Bounded, like every step on a connection: a broker still starting up may accept the
        // connection and not answer.
        let setup = async {
            let channel = connection.create_channel().await?;
            topology.declare(&channel).await?;
            channel.basic_qos(per_partition, BasicQosOptions::default()).await?;
            let mut subscribed = Vec::new();
            for (partition, queue) in (0..).zip(topology.partitions()) {
                let feed = Feed { channel: channel.clone(), partition, queue, tag: tag.to_owned() };
                let first = feed.subscribe(0).await?;
                subscribed.push((feed, first));
            }
            // Joining the roster last: once every worker counts there, each consumes every
            // partition.
            let roster = (topology.roster(), format!("{tag}-roster"));
            let options = BasicConsumeOptions::default();
            let roster = channel
                .basic_consume(roster.0.as_str().into(), roster.1.as_str().into(), options, FieldTable::default())
                .await?;
            Ok::<_, MessagingError>((subscribed, roster))
        };
        let (subscribed, roster) = match tokio::time::timeout(SETUP_LIMIT, setup).await {
            Ok(Ok(subscribed)) => subscribed,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                close(&connection, "setup timed out").await;
                return Err(MessagingError::Unavailable(format!("no subscriptions within {SETUP_LIMIT:?}")));
            }
        };
        let (to_worker, fed) = mpsc::channel(usize::from(per_partition));
        let stop = CancellationToken::new();
        let mut feeds = JoinSet::new();
        let mut hand_offs = Vec::new();
        for (feed, first) in subscribed {
            let hand_off = Arc::new(Notify::new());
            hand_offs.push(Arc::clone(&hand_off));
            feeds.spawn(feed.run(first, to_worker.clone(), hand_off, stop.clone()));
        }
        Ok(Self { connection, fed, feeds, hand_offs, stop, _roster: roster })
    }

    /// The next delivery from any partition, or why none will come: a feed ended (its
    /// subscription was cancelled by the broker, or the connection failed).
    pub async fn next(&mut self) -> Result<Fed, MessagingError> {
        tokio::select! {
            fed = self.fed.recv() => fed.ok_or_else(|| MessagingError::Unavailable("every partition feed ended".into())),
            Some(ended) = self.feeds.join_next() => Err(match ended {
                Ok(Err(e)) => e,
                Ok(Ok(())) => MessagingError::Unavailable("a partition feed ended".into()),
                Err(e) => MessagingError::Unavailable(format!("a partition feed failed: {e}")),
            }),
        }
    }

    /// Hands `partition` on to the next waiting worker (see the module's documentation).
    pub fn hand_off(&self, partition: u16) {
        if let Some(hand_off) = self.hand_offs.get(usize::from(partition)) {
            hand_off.notify_one();
        }
    }

    /// Stops taking deliveries: every subscription is cancelled, so the broker makes the next
    /// waiting worker active at once. Deliveries already taken can still be settled; those
    /// prefetched but not taken are requeued by the broker when the connection closes.
    pub async fn stop(&mut self) {
        self.fed.close();
        self.stop.cancel();
        let feeds = &mut self.feeds;
        if tokio::time::timeout(TEARDOWN_LIMIT, async { while feeds.join_next().await.is_some() {} }).await.is_err() {
            self.feeds.abort_all();
        }
    }

    /// Stops taking deliveries (if not yet done) and closes the connection.
    pub async fn close(mut self, reason: &str) {
        self.stop().await;
        close(&self.connection, reason).await;
    }
}

/// One partition queue's subscriptions on a channel.
struct Feed {
    channel: Channel,
    partition: u16,
    queue: String,
    tag: String,
}

impl Feed {
    fn tag(&self, generation: u32) -> String {
        format!("{}-p{}-{generation}", self.tag, self.partition)
    }

    async fn subscribe(&self, generation: u32) -> Result<Consumer, MessagingError> {
        let (queue, tag) = (self.queue.as_str().into(), self.tag(generation).into());
        Ok(self.channel.basic_consume(queue, tag, BasicConsumeOptions::default(), FieldTable::default()).await?)
    }

    /// Passes deliveries on until `stop`, starting with the `first` subscription.
    async fn run(
        self,
        first: Consumer,
        to_worker: mpsc::Sender<Fed>,
        hand_off: Arc<Notify>,
        stop: CancellationToken,
    ) -> Result<(), MessagingError> {
        let mut consumer = first;
        for generation in 0.. {
            if generation > 0 {
                // Stopping while a hand-off completed: no new subscription to cancel again.
                if stop.is_cancelled() {
                    return Ok(());
                }
                consumer = self.subscribe(generation).await?;
            }
            let tag = self.tag(generation);
            let mut cancelled = false;
            loop {
                tokio::select! {
                    () = stop.cancelled(), if !cancelled => {
                        let _ = self.channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                        return Ok(());
                    }
                    () = hand_off.notified(), if !cancelled => {
                        self.channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await?;
                        cancelled = true;
                    }
                    delivery = consumer.next() => match delivery {
                        Some(Ok(delivery)) => {
                            let fed = Fed { partition: self.partition, generation, delivery: CommandDelivery(delivery) };
                            if to_worker.send(fed).await.is_err() {
                                return Ok(());
                            }
                        }
                        Some(Err(e)) => return Err(e.into()),
                        None if cancelled => break,
                        None => {
                            let why = format!("consumer of {} cancelled by the broker", self.queue);
                            return Err(MessagingError::Unavailable(why));
                        }
                    },
                }
            }
            info!(partition = self.partition, "handed the partition on");
            metrics::counter!("ledgerflow_partition_handoffs_total").increment(1);
        }
        Ok(())
    }
}
