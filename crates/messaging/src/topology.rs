use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer, ExchangeKind};

use crate::MessagingError;

/// The names of LedgerFlow's exchanges and queues under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new("ledgerflow")
    }
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Exchange and queue of transfer commands.
    pub fn transfers(&self) -> String {
        format!("{}.transfers", self.prefix)
    }

    /// Exchange and queue of commands that could not be processed.
    pub fn dead_letters(&self) -> String {
        format!("{}.transfers.dead", self.prefix)
    }

    /// Queue (no exchange: published to by name) where commands that hit a transient fault
    /// wait out their per-message TTL, then dead-letter back into the transfers exchange.
    pub fn retry(&self) -> String {
        format!("{}.transfers.retry", self.prefix)
    }

    /// Exchange and queue of transfer outcomes.
    pub fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// Declares everything, idempotently; gateway and worker both call it at (re)connect, so
    /// neither depends on the other having started first.
    pub async fn declare(&self, ch: &Channel) -> Result<(), MessagingError> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let queue_opts = QueueDeclareOptions { durable: true, ..Default::default() };
        for name in [self.transfers(), self.dead_letters(), self.results()] {
            ch.exchange_declare(name.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()).await?;
        }

        // Quorum queues are replicated and durable; rejected messages go to the dead-letter
        // exchange instead of vanishing.
        let mut transfers_args = FieldTable::default();
        transfers_args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        transfers_args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead_letters().into()));
        let mut quorum = FieldTable::default();
        quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        for (queue, args) in
            [(self.transfers(), transfers_args), (self.dead_letters(), quorum.clone()), (self.results(), quorum)]
        {
            ch.queue_declare(queue.as_str().into(), queue_opts, args).await?;
            ch.queue_bind(
                queue.as_str().into(),
                queue.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        // Classic, not quorum: every message carries the same delay, so expiring only at the
        // head of the queue (classic semantics) releases them in order.
        let mut retry_args = FieldTable::default();
        retry_args.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
        retry_args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.transfers().into()));
        ch.queue_declare(self.retry().as_str().into(), queue_opts, retry_args).await?;
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

    /// Deletes everything (tests and throwaway environments only).
    pub async fn delete(&self, ch: &Channel) -> Result<(), MessagingError> {
        for name in [self.transfers(), self.dead_letters(), self.results()] {
            ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await?;
            ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await?;
        }
        ch.queue_delete(self.retry().as_str().into(), QueueDeleteOptions::default()).await?;
        Ok(())
    }
}
