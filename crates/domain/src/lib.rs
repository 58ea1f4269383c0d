//! LedgerFlow's domain: the types every other crate speaks, and the rules that need no I/O.
//!
//! Everything that crosses a boundary (an HTTP body, a queue message, a stored document) is
//! parsed into these types once, at the edge. Past the edge nothing is a bare `String` or `i64`:
//! an [`Amount`] is always positive and bounded, an [`IdempotencyKey`] always well-formed, a
//! [`TransferCommand`] always internally consistent.
//!
//! This crate performs no I/O and has no async code; it is tested with plain unit tests.

mod chain;
mod command;
mod error;
pub mod fields;
pub mod grants;
pub mod holds;
mod ids;
pub mod journal;
mod ledger;
pub mod limits;
mod metadata;
mod money;
mod reversal;
mod statement;
mod transaction;
mod user;
pub mod webhooks;

pub use chain::{EntryFields, GENESIS_HASH};
pub use command::{
    COMMAND_VERSION, Command, CommandError, MAX_COMMAND_BYTES, SettleCommand, TransferCommand, TransferResult,
};
pub use error::DomainError;
pub use ids::WebhookId;
pub use ids::{AccountId, EntryId, IdempotencyKey, Initiator, RequestId, ServiceName, TransactionId, UserId};
pub use journal::Leg;
pub use ledger::{
    AccountSnapshot, EntryType, MAX_ACCOUNTS_PER_USER, Posting, StatusRefusal, post_held, post_leg, post_transfer,
    reserve,
};
pub use limits::{AccountLimits, LimitRefusal, Reserved};
pub use metadata::{Metadata, MetadataKey, MetadataValue, search_term};
pub use money::{Amount, Balance, Currency, MAX_AMOUNT_MINOR};
pub use reversal::{NotReversible, ReversalCandidate};
pub use statement::{MAX_STATEMENT_DAYS, Moment, StatementTotals, StatementWindow};
pub use transaction::{
    AccountStatus, Description, EventType, FailureReason, HoldTimeout, TransactionStatus, TransferKind, TransferRequest,
};
pub use user::{Email, Password, PersonName, Role};
