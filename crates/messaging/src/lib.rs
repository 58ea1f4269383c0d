//! RabbitMQ for LedgerFlow: the durable topology, a confirmed publisher that survives broker
//! restarts, and the message properties both sides agree on.
//!
//! Topology (every name starts with a configurable prefix, `ledgerflow` by default, so tests
//! and environments can share one broker):
//!
//! ```text
//!  publishers ──▶ [ledgerflow.transfers] fanout ──▶ [ledgerflow.transfers.partitioned] consistent hash
//!        routing key = sending account ──▶ (ledgerflow.transfers.p0 … p7) quorum, single active consumer ──▶ workers
//!                                                        │ rejected / dead-lettered
//!                                                        ▼
//!                 [ledgerflow.transfers.dead] fanout ──▶ (ledgerflow.transfers.dead)
//!  workers ─────▶ [ledgerflow.transfers.retry] fanout ─▶ (ledgerflow.transfers.retry) ── TTL ──▶ [ledgerflow.transfers]
//!  workers ─────▶ [ledgerflow.results] fanout ─────────▶ (ledgerflow.results)
//! ```
//!
//! The routing key (by convention the sending account id) only chooses the partition: every
//! key, even an empty one, lands in exactly one partition queue, so it never decides whether a
//! command is delivered. One partition has one active consumer at a time, so the commands of
//! one sending account are committed by one worker and do not fight each other.

pub mod dlq;
mod error;
mod publisher;
mod topology;

pub use error::MessagingError;
pub use lapin;
pub use publisher::{Publisher, QueueState, close, connect};
pub use topology::{DEFAULT_PARTITIONS, Topology};

/// The AMQP `type` property of a transfer command.
pub const COMMAND_TYPE: &str = "ledgerflow.transfer.command.v1";
/// The AMQP `type` property of a transfer result.
pub const RESULT_TYPE: &str = "ledgerflow.transfer.result.v1";

/// The AMQP header carrying the HTTP request id from the gateway to the worker's logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
