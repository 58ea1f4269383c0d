use mongodb::error::{ErrorKind, WriteFailure};
use thiserror::Error;

/// Everything that can go wrong in the store.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The database could not be reached or refused the operation. Usually transient.
    /// The driver's message is part of this one and so not also a `source`: an error chain
    /// (`{:#}`) would print it twice.
    #[error("database error: {0}")]
    Database(mongodb::error::Error),
    /// A user with this email already exists.
    #[error("email already registered")]
    EmailTaken,
    /// A stored document does not parse into the domain: it was written by something else
    /// or edited by hand. Never silently skipped.
    #[error("corrupt {collection} document {id}: {reason}")]
    Corrupt { collection: &'static str, id: String, reason: String },
    /// Postings on one account kept conflicting past the retry budget.
    #[error("write contention persisted past {attempts} attempts")]
    Contention { attempts: u32 },
    /// The server refused one statement of a multi-statement write.
    #[error("write to {collection} refused ({code}): {message}")]
    Write { collection: &'static str, code: i32, message: String },
}

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        Self::Database(e)
    }
}

impl StoreError {
    /// Whether trying again later may succeed (as opposed to a fault in the data).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Database(_) | StoreError::Contention { .. } | StoreError::Write { .. })
    }
}

pub(crate) const DUPLICATE_KEY: i32 = 11000;
const INDEX_NOT_FOUND: i32 = 27;

/// Whether a driver error says the index to drop does not exist.
pub(crate) fn is_index_not_found(err: &mongodb::error::Error) -> bool {
    matches!(err.kind.as_ref(), ErrorKind::Command(e) if e.code == INDEX_NOT_FOUND)
}

/// Whether an insert (an unordered `insert_many`: every document was tried) failed only on
/// documents that exist already.
pub(crate) fn only_duplicates(e: &mongodb::error::Error) -> bool {
    duplicates_refused(e).is_some()
}

/// How many documents an insert (an unordered `insert_many`: every document was tried) was
/// refused because they exist already, when that is all that failed; `None` otherwise.
pub(crate) fn duplicates_refused(e: &mongodb::error::Error) -> Option<usize> {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(failure) => match (&failure.write_errors, &failure.write_concern_error) {
            (Some(errs), None) if errs.iter().all(|e| e.code == DUPLICATE_KEY) => Some(errs.len()),
            _ => None,
        },
        _ => is_duplicate_key(e).then_some(1),
    }
}

/// Whether a driver error is a unique-index violation.
pub(crate) fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => {
            e.write_errors.as_ref().is_some_and(|errs| errs.iter().any(|e| e.code == DUPLICATE_KEY))
        }
        _ => false,
    }
}
