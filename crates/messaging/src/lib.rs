//! RabbitMQ for LedgerFlow: the durable topology, a confirmed publisher that survives broker
//! restarts, and the message properties both sides agree on.
//!
//! Topology (every name starts with a configurable prefix, `ledgerflow` by default, so tests
//! and environments can share one broker):
//!
//! ```text
//!  publishers ──▶ [ledgerflow.transfers] fanout ──▶ (ledgerflow.transfers) quorum queue ──▶ workers
//!                                                        │ rejected / dead-lettered
//!                                                        ▼
//!                 [ledgerflow.transfers.dead] fanout ──▶ (ledgerflow.transfers.dead)
//!  workers ─────▶ [ledgerflow.results] fanout ─────────▶ (ledgerflow.results)
//! ```
//!
//! The transfers exchange is a fanout, so an upstream publisher's routing key (by convention
//! the sending account id) never decides whether a command is delivered.

pub mod dlq;
mod error;
mod publisher;
mod topology;

pub use error::MessagingError;
pub use lapin;
pub use publisher::{Publisher, connect};
pub use topology::Topology;

/// The AMQP `type` property of a transfer command.
pub const COMMAND_TYPE: &str = "ledgerflow.transfer.command.v1";
/// The AMQP `type` property of a transfer result.
pub const RESULT_TYPE: &str = "ledgerflow.transfer.result.v1";

/// The AMQP header carrying the HTTP request id from the gateway to the worker's logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
