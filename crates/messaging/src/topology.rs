use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer, ExchangeKind};
use ledgerflow_domain::TransactionId;

use crate::MessagingError;

/// Partition queues when nothing else is configured: more than the workers a deployment
/// usually runs (each worker takes an equal share), few enough to keep the broker light.
pub const DEFAULT_PARTITIONS: u16 = 8;

/// How long a transiently failed command waits in the retry queue when nothing else is
/// configured: long enough for a failover of the database's primary.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(2);

/// The names of LedgerFlow's exchanges and queues under one prefix, how many partition
/// queues the transfer commands are spread over, and how long the retry queue holds a
/// command. Every process of a deployment must agree on all three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    partitions: u16,
    /// Whole milliseconds, as the broker's `x-message-ttl` takes them.
    retry_delay_ms: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new("ledgerflow")
    }
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        let retry_delay_ms = u32::try_from(DEFAULT_RETRY_DELAY.as_millis()).unwrap_or(u32::MAX);
        Self { prefix: prefix.into(), partitions: DEFAULT_PARTITIONS, retry_delay_ms }
    }

    /// The same names with `n` partition queues (at least one).
    #[must_use]
    pub fn with_partitions(mut self, n: u16) -> Self {
        self.partitions = n.max(1);
        self
    }

    /// The same names with commands waiting `delay` in the retry queue (whole milliseconds, at
    /// most `u32::MAX` of them, about 49 days: the broker's limit of a queue's TTL).
    #[must_use]
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self
    }

    /// How long a command waits in [`Self::retry`] before it returns to its partition.
    pub fn retry_delay(&self) -> Duration {
        Duration::from_millis(u64::from(self.retry_delay_ms))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The exchange publishers send transfer commands to (a fanout, forwarding to
    /// [`Self::partitioner`]); the routing key should be the sending account id.
    pub fn transfers(&self) -> String {
        format!("{}.transfers", self.prefix)
    }

    /// Consistent-hash exchange that spreads commands over the partition queues by routing
    /// key, so that all commands from one sending account land in one queue.
    pub fn partitioner(&self) -> String {
        format!("{}.transfers.partitioned", self.prefix)
    }

    /// How many partition queues there are.
    pub fn partition_count(&self) -> u16 {
        self.partitions
    }

    /// The partition queues, in partition order. Each has a single active consumer: one worker
    /// at a time takes a partition's commands.
    pub fn partitions(&self) -> Vec<String> {
        (0..self.partitions).map(|i| format!("{}.transfers.p{i}", self.prefix)).collect()
    }

    /// Exchange and queue of commands that could not be processed.
    pub fn dead_letters(&self) -> String {
        format!("{}.transfers.dead", self.prefix)
    }

    /// Queue that every worker consumes and nothing is published to: its consumer count is
    /// the number of workers connected, from which each works out its share of the partitions.
    /// (A queue with a single active consumer reports only the active one.)
    pub fn roster(&self) -> String {
        format!("{}.roster", self.prefix)
    }

    /// Exchange (fanout) and queue where commands that hit a transient fault wait out the
    /// queue's TTL ([`Self::retry_delay`]), then dead-letter back into the transfers exchange
    /// with their routing key, and so into the same partition. The delay is the queue's, not
    /// the message's: every message expires after it, whoever published it, so none can stall
    /// the others at the head of the queue. It is part of the name because a queue's arguments
    /// cannot change: another delay is another queue.
    pub fn retry(&self) -> String {
        format!("{}.transfers.retry.{}ms.quorum", self.prefix, self.retry_delay_ms)
    }

    /// The retry queues of earlier versions, classic queues that a process of such a version
    /// sends to during a rolling upgrade: the one whose messages carried their own TTL
    /// (`….transfers.retry`, where one without any stalled those behind it), and the one with
    /// the queue's TTL that lived on one broker node (`….transfers.retry.<ms>ms`). Workers move
    /// what they find in them into [`Self::retry`] (see `retry::move_retired`).
    pub fn retired_retries(&self) -> [String; 2] {
        [
            format!("{}.transfers.retry", self.prefix),
            format!("{}.transfers.retry.{}ms", self.prefix, self.retry_delay_ms),
        ]
    }

    /// Headers exchange and queue of the commands the broker dead-lettered because they
    /// expired (a publisher's `expiration`) in a partition queue, copied off the dead-letter
    /// exchange. Workers consume it competitively and report each one FAILED `EXPIRED`; the
    /// dead letter itself stays in [`Self::dead_letters`] for operators.
    pub fn expired(&self) -> String {
        format!("{}.transfers.expired", self.prefix)
    }

    /// Exchange and queue of transfer outcomes.
    pub fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// Direct exchange fed by the [`Self::results`] fanout (exchange to exchange), which routes
    /// each result by its routing key, the transaction id: a gateway binds its own queue here
    /// under the ids its long polls wait on, and so receives their results and no others.
    pub fn results_by_transaction(&self) -> String {
        format!("{}.results.by-transaction", self.prefix)
    }

    /// Topic exchange of the event stream: every change of every transaction, routed by
    /// `<type>.<currency>` (`transaction.completed.EUR`). LedgerFlow binds no queue to it:
    /// consumers bind their own, with the patterns they want.
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Declares everything, idempotently; gateway and worker both call it at (re)connect, so
    /// neither depends on the other having started first. Needs the broker's
    /// `rabbitmq_consistent_hash_exchange` plugin (shipped with RabbitMQ, enabled by
    /// `scripts/services.sh` and the deploy files), and RabbitMQ 3.10 or later (the `all-with-x`
    /// match of the expired commands' binding).
    pub async fn declare(&self, ch: &Channel) -> Result<(), MessagingError> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let queue_opts = QueueDeclareOptions { durable: true, ..Default::default() };
        for name in [self.transfers(), self.dead_letters(), self.results(), self.retry()] {
            ch.exchange_declare(name.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
        }
        ch.exchange_declare(self.events().as_str().into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
        let hashing = ExchangeKind::Custom("x-consistent-hash".into());
        ch.exchange_declare(self.partitioner().as_str().into(), hashing, durable, FieldTable::default()).await?;
        // Exchange-to-exchange: publishers keep one entry point whatever the partitioning.
        ch.exchange_bind(
            self.partitioner().as_str().into(),
            self.transfers().as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        // The fanout keeps delivering every result to the durable results queue (and to
        // whoever follows all of them); this copy only reaches the queues bound to its id.
        let by_transaction = self.results_by_transaction();
        ch.exchange_declare(by_transaction.as_str().into(), ExchangeKind::Direct, durable, FieldTable::default())
            .await?;
        ch.exchange_bind(
            by_transaction.as_str().into(),
            self.results().as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

        // Quorum queues are replicated and durable; what expires in a partition (a publisher's
        // `expiration`) goes to the dead-letter exchange instead of vanishing (the workers never
        // reject: they publish their dead letters themselves). A single active consumer per
        // partition means one worker at a time commits a sending account's transfers, so they
        // do not conflict.
        let quorum = args(&[("x-queue-type", "quorum")]);
        let mut partition = args(&[("x-queue-type", "quorum"), ("x-dead-letter-exchange", &self.dead_letters())]);
        partition.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        for queue in self.partitions() {
            ch.queue_declare(queue.as_str().into(), queue_opts, partition.clone()).await?;
            // The binding key of a consistent-hash exchange is the queue's weight.
            let weight = "1".into();
            let to = self.partitioner();
            ch.queue_bind(
                queue.as_str().into(),
                to.as_str().into(),
                weight,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        // Every queue is a quorum queue, replicated on three broker nodes: one that lived on a
        // single node would stop every process's declare, and so every publisher and
        // consumer, while that node is down. The roster holds no messages; it only counts
        // consumers, and is there for a passive declare whether or not a worker runs.
        let mut roster = quorum.clone();
        roster.insert("x-max-length".into(), AMQPValue::LongInt(0));
        ch.queue_declare(self.roster().as_str().into(), queue_opts, roster).await?;
        // Every message has the queue's delay, so expiring at the head of the queue releases
        // them in order. At-least-once dead-lettering (which needs `reject-publish`) keeps a
        // command in the retry queue until its partition queue has confirmed it: the broker's
        // default for quorum queues would drop it if that publish failed.
        let mut retry = args(&[
            ("x-queue-type", "quorum"),
            ("x-dead-letter-exchange", &self.transfers()),
            ("x-dead-letter-strategy", "at-least-once"),
            ("x-overflow", "reject-publish"),
        ]);
        retry.insert("x-message-ttl".into(), AMQPValue::LongLongInt(i64::from(self.retry_delay_ms)));
        let queues = [(self.dead_letters(), quorum.clone()), (self.results(), quorum.clone()), (self.retry(), retry)];
        for (queue, args) in queues {
            declare_fed(ch, &queue, args).await?;
        }
        self.declare_expired(ch, quorum).await
    }

    /// Declares the retry queues of earlier versions ([`Self::retired_retries`]) as those
    /// versions did (each a classic queue fed by a fanout exchange of its name, dead-lettering
    /// into the transfers exchange; the later one with the queue's TTL), so that what waits
    /// in them keeps returning to its partition. Not part of [`Self::declare`]: a classic
    /// queue lives on one broker node, and while that node is down declaring it fails, which
    /// must stop nothing of this version's. A failure closes `ch`.
    pub async fn declare_retired(&self, ch: &Channel) -> Result<(), MessagingError> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let [per_message_ttl, classic] = self.retired_retries();
        let plain = args(&[("x-queue-type", "classic"), ("x-dead-letter-exchange", &self.transfers())]);
        let mut with_ttl = plain.clone();
        with_ttl.insert("x-message-ttl".into(), AMQPValue::LongLongInt(i64::from(self.retry_delay_ms)));
        for (queue, args) in [(per_message_ttl, plain), (classic, with_ttl)] {
            ch.exchange_declare(queue.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
            declare_fed(ch, &queue, args).await?;
        }
        Ok(())
    }

    /// The observer of expired commands: a headers exchange fed by the dead-letter exchange,
    /// passing on what the broker dead-lettered as `expired` (first death; the worker checks
    /// the latest one), to a quorum queue the workers share.
    async fn declare_expired(&self, ch: &Channel, quorum: FieldTable) -> Result<(), MessagingError> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let expired = self.expired();
        ch.exchange_declare(expired.as_str().into(), ExchangeKind::Headers, durable, FieldTable::default()).await?;
        ch.exchange_bind(
            expired.as_str().into(),
            self.dead_letters().as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(expired.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, quorum)
            .await?;
        // `all-with-x` (RabbitMQ 3.10): plain `all` ignores headers named `x-…`.
        let matching = args(&[("x-match", "all-with-x"), ("x-first-death-reason", "expired")]);
        ch.queue_bind(
            expired.as_str().into(),
            expired.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            matching,
        )
        .await?;
        Ok(())
    }

    /// Follows every result from now on: a private queue (deleted with the channel) bound to
    /// the results exchange, consumed without acks. For long polling and the bench, which
    /// only care about results published while they listen.
    pub async fn follow_results(&self, ch: &Channel, consumer_tag: &str) -> Result<Consumer, MessagingError> {
        self.declare(ch).await?;
        let own = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = ch.queue_declare("".into(), own, FieldTable::default()).await?;
        ch.queue_bind(
            queue.name().clone(),
            self.results().as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let no_ack = BasicConsumeOptions { no_ack: true, exclusive: true, ..Default::default() };
        Ok(ch.basic_consume(queue.name().clone(), consumer_tag.into(), no_ack, FieldTable::default()).await?)
    }

    /// Follows the results of chosen transactions only: a private queue (deleted with the
    /// channel), consumed without acks, that receives nothing until
    /// [`ChosenResults::bind`] names a transaction. For long polling: a gateway receives
    /// what its own waiters need, however many gateways run.
    pub async fn follow_chosen_results(
        &self,
        ch: &Channel,
        consumer_tag: &str,
    ) -> Result<(ChosenResults, Consumer), MessagingError> {
        self.declare(ch).await?;
        let own = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = ch.queue_declare("".into(), own, FieldTable::default()).await?;
        let no_ack = BasicConsumeOptions { no_ack: true, exclusive: true, ..Default::default() };
        let consumer =
            ch.basic_consume(queue.name().clone(), consumer_tag.into(), no_ack, FieldTable::default()).await?;
        let chosen = ChosenResults {
            channel: ch.clone(),
            queue: queue.name().to_string(),
            exchange: self.results_by_transaction(),
        };
        Ok((chosen, consumer))
    }

    /// Deletes everything (tests and throwaway environments only).
    pub async fn delete(&self, ch: &Channel) -> Result<(), MessagingError> {
        for queue in self.partitions() {
            ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
        }
        let [per_message_ttl, classic] = self.retired_retries();
        let queues = [self.dead_letters(), self.results(), self.retry(), per_message_ttl, classic, self.expired()];
        for name in queues.iter().chain([&self.roster()]) {
            ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await?;
        }
        // Bound to the results exchange: deleted before it.
        ch.exchange_delete(self.results_by_transaction().as_str().into(), ExchangeDeleteOptions::default()).await?;
        for name in queues.iter().chain([&self.transfers(), &self.partitioner(), &self.events()]) {
            ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await?;
        }
        Ok(())
    }
}

/// The private queue of [`Topology::follow_chosen_results`], and which transactions' results
/// it receives. Each call waits for the broker's answer, so a result published after
/// [`Self::bind`] returns reaches the queue.
#[derive(Clone)]
pub struct ChosenResults {
    channel: Channel,
    queue: String,
    exchange: String,
}

impl ChosenResults {
    /// From now on, the results of transaction `id` reach the queue (binding it twice is one
    /// binding: the caller counts its waiters).
    pub async fn bind(&self, id: TransactionId) -> Result<(), MessagingError> {
        let key = id.to_string();
        let (queue, exchange) = (self.queue.as_str(), self.exchange.as_str());
        let options = QueueBindOptions::default();
        Ok(self
            .channel
            .queue_bind(queue.into(), exchange.into(), key.as_str().into(), options, FieldTable::default())
            .await?)
    }

    /// No more results of transaction `id` reach the queue.
    pub async fn unbind(&self, id: TransactionId) -> Result<(), MessagingError> {
        let key = id.to_string();
        let (queue, exchange) = (self.queue.as_str(), self.exchange.as_str());
        Ok(self.channel.queue_unbind(queue.into(), exchange.into(), key.as_str().into(), FieldTable::default()).await?)
    }
}

/// Declares durable `queue` with `arguments`, bound to the (fanout) exchange of its own name.
async fn declare_fed(ch: &Channel, queue: &str, arguments: FieldTable) -> Result<(), MessagingError> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(queue.into(), durable, arguments).await?;
    ch.queue_bind(queue.into(), queue.into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await?;
    Ok(())
}

/// Queue arguments from string pairs.
fn args(pairs: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert((*key).into(), AMQPValue::LongString((*value).into()));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_queue_is_named_after_its_delay_and_the_retired_ones_keep_their_names() {
        assert_eq!(Topology::new("lf").retry(), "lf.transfers.retry.2000ms.quorum");
        let quick = Topology::new("lf").with_retry_delay(Duration::from_micros(1_500_900));
        assert_eq!(
            (quick.retry().as_str(), quick.retry_delay()),
            ("lf.transfers.retry.1500ms.quorum", Duration::from_millis(1_500))
        );
        assert_eq!(quick.retired_retries(), ["lf.transfers.retry", "lf.transfers.retry.1500ms"]);
        assert_eq!(quick.roster(), "lf.roster");
        // Beyond the broker's limit of a TTL: its largest.
        let huge = Topology::new("lf").with_retry_delay(Duration::from_secs(u64::MAX));
        assert_eq!(huge.retry_delay(), Duration::from_millis(u64::from(u32::MAX)));
    }
}
