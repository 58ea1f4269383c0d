//! Why an attempt did not reach its endpoint. Recorded on the attempt (its `Display`), shown
//! to the webhook's owner: it says what happened without the dispatcher's internals.

use ledgerflow_domain::DomainError;
use ledgerflow_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The URL's scheme or one of the addresses its host resolves to is not allowed.
    #[error("refused: {0}")]
    Refused(DomainError),
    #[error("host {0} does not resolve")]
    Unresolved(String),
    #[error("timed out after {0} s")]
    Timeout(u64),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    /// Nothing to send any more: the webhook was deleted, or the event is no longer kept.
    #[error("{0}")]
    Gone(&'static str),
    /// The store could not be read; the delivery stays claimed and is tried again when its
    /// lease ends.
    #[error("{0}")]
    Store(#[from] StoreError),
}
