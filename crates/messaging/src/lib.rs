//! RabbitMQ for LedgerFlow: the durable topology, a confirmed publisher that survives broker
//! restarts, and the message properties both sides agree on.
//!
//! Topology (every name starts with a configurable prefix, `ledgerflow` by default, so tests
//! and environments can share one broker):
//!
//! ```text
//!  publishers ──▶ [ledgerflow.transfers] fanout ──▶ [ledgerflow.transfers.partitioned] consistent hash
//!        routing key = sending account ──▶ (ledgerflow.transfers.p0 … p7) quorum, single active consumer ──▶ workers
//!                                                        │ expired (a publisher's `expiration`)                │ given up: a copy
//!                                                        ▼                                                     │ (confirmed), then ack
//!                 [ledgerflow.transfers.dead] fanout ──▶ (ledgerflow.transfers.dead) ◀─────────────────────────┘
//!                                   └──▶ [ledgerflow.transfers.expired] headers, first death `expired`
//!                                               ──▶ (ledgerflow.transfers.expired) ──▶ workers: FAILED EXPIRED
//!  workers ─▶ [ledgerflow.transfers.retry.2000ms.quorum] fanout ─▶ (…retry.2000ms.quorum) ── queue TTL ──▶ [ledgerflow.transfers]
//!  workers ─────▶ [ledgerflow.results] fanout ─────────▶ (ledgerflow.results)
//!       routing key = transaction id   └──▶ [ledgerflow.results.by-transaction] direct
//!                                               ──▶ each gateway's private queue, bound per awaited id
//! ```
//!
//! The retry queue's delay is a queue-level TTL, part of its name (`--retry-delay`); the
//! classic retry queues of earlier versions (`ledgerflow.transfers.retry` and
//! `….retry.2000ms`) are still declared where their node answers, so that what waits there
//! returns, and workers move what they find there.
//!
//! The routing key (by convention the sending account id) only chooses the partition: every
//! key, even an empty one, lands in exactly one partition queue, so it never decides whether a
//! command is delivered. One partition has one active consumer at a time, so the commands of
//! one sending account are committed by one worker and do not fight each other.

mod brokers;
mod delivery;
pub mod dlq;
mod envelope;
mod error;
mod expired;
mod partitions;
mod publisher;
pub mod retry;
mod topology;

pub use brokers::{Broker, BrokerListError, Brokers};
pub use delivery::{
    ATTEMPT_HEADER, CommandDelivery, DeadLetterReason, Origin, PUBLISHER_HEADER, REASON_DETAIL_HEADER, REASON_HEADER,
    Settled, Settlement, TrustedUsers,
};
pub use envelope::{COMMAND_TYPE, REQUEST_ID_HEADER, RESULT_TYPE};
pub use error::MessagingError;
pub use expired::{Expirations, ExpiredCommand};
/// For tests and tools that speak raw AMQP (hostile messages, queue inspection); LedgerFlow's
/// own crates go through the typed API above.
pub use lapin;
pub use partitions::{Fed, Partitions};
pub use publisher::{Publisher, QueueState, broker_user, close, connect};
pub use topology::{ChosenResults, DEFAULT_PARTITIONS, DEFAULT_RETRY_DELAY, Topology};
