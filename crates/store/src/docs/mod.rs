//! Stored document shapes and their parsing into domain records.
//!
//! Documents hold plain strings and integers so that they read well in any MongoDB tool; the
//! records hold domain types. Conversion fails loudly ([`StoreError::Corrupt`]) rather than
//! guessing.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use ledgerflow_domain::{DomainError, Metadata};
use mongodb::bson::DateTime as BsonDateTime;

use crate::StoreError;

mod accounts;
mod entries;
mod transactions;
mod users;

pub(crate) use accounts::AccountDoc;
pub use accounts::AccountRecord;
pub(crate) use entries::EntryDoc;
pub use entries::EntryRecord;
pub(crate) use transactions::TransactionDoc;
pub use transactions::TransactionRecord;
pub(crate) use users::UserDoc;
pub use users::UserRecord;

pub(crate) fn to_bson_time(t: DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(t.timestamp_millis())
}

pub(crate) fn from_bson_time(t: BsonDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or_default()
}

/// A hold's `expiresAt` while it may still expire (PENDING or HELD): set when it is recorded,
/// removed when it is settled, expires or fails. The expiry sweep's index is on this field, not
/// on `status`: see [`crate::pending`] for why no index of `transactions` may name `status`.
pub(crate) const HELD_UNTIL: &str = "heldUntil";

/// Set on a hold when it expires and removed once its EXPIRED result is published (see
/// `Store::expiries_unreported`); absent on every other transaction.
pub(crate) const EXPIRY_UNREPORTED: &str = "expiryUnreported";

/// A query guard on a reserved amount as read: a zero also matches an account stored before
/// holds, which has no such field.
pub(crate) fn reserved_guard(read: i64) -> mongodb::bson::Bson {
    if read == 0 { mongodb::bson::bson!({ "$in": [0_i64, null] }) } else { read.into() }
}

/// Parses one stored field, naming the document on failure.
pub(crate) fn field<T: FromStr<Err = DomainError>>(
    collection: &'static str,
    id: &str,
    raw: &str,
) -> Result<T, StoreError> {
    raw.parse().map_err(|e: DomainError| StoreError::Corrupt { collection, id: id.to_owned(), reason: e.to_string() })
}

/// Metadata as stored: an object of strings, read back through the domain's rules.
pub(crate) type MetadataDoc = BTreeMap<String, String>;

pub(crate) fn metadata_doc(m: &Metadata) -> MetadataDoc {
    m.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned())).collect()
}

fn parse_metadata(collection: &'static str, id: &str, d: &MetadataDoc) -> Result<Metadata, StoreError> {
    Metadata::from_pairs(d.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|e| StoreError::Corrupt {
        collection,
        id: id.to_owned(),
        reason: e.to_string(),
    })
}
