//! Identifiers. Each id is its own type so an account id can never be passed where a
//! transaction id is expected.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use uuid::Uuid;

use crate::{Currency, DomainError};

/// Length of a UUID's hyphenated form, `8-4-4-4-12` hex digits.
const HYPHENATED_LEN: usize = 36;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        // Deserialised through `FromStr`, so in the hyphenated form only (`crate::fields`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (v7) id, so ids sort by creation and make stable cursors.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses an id in the hyphenated form only (any case), so that each id has one
            /// spelling in URLs and requests; `field` names it in the error.
            pub fn parse_field(field: &'static str, s: &str) -> Result<Self, DomainError> {
                Some(s)
                    .filter(|s| s.len() == HYPHENATED_LEN)
                    .and_then(|s| Uuid::try_parse(s).ok())
                    .map(Self)
                    .ok_or_else(|| DomainError::invalid(field, "must be a UUID"))
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_field($field, s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A user (a person or the SYSTEM operator).
    UserId, "userId"
);
uuid_id!(
    /// An account: the unit that owns ledger entries and a derived balance.
    AccountId, "accountId"
);
uuid_id!(
    /// A transaction: one transfer request and its outcome.
    TransactionId, "transactionId"
);
uuid_id!(
    /// One ledger entry (a DEBIT or a CREDIT row).
    EntryId, "entryId"
);
uuid_id!(
    /// A registered webhook endpoint.
    WebhookId, "webhookId"
);

/// Namespace for the deterministic funding-account ids (UUID v5).
const FUNDING_NAMESPACE: Uuid = Uuid::from_u128(0x6c65_6467_6572_666c_6f77_2d66_756e_6473);

impl AccountId {
    /// The system funding account of a currency: the one account allowed to go negative, the
    /// source of every INITIAL_FUNDS transfer. Its id is derived from the currency so every
    /// process agrees on it without a lookup.
    pub fn funding(currency: Currency) -> Self {
        Self(Uuid::new_v5(&FUNDING_NAMESPACE, currency.code().as_bytes()))
    }
}

/// A client-chosen key that makes a transfer request safe to retry. Unique per initiator,
/// not globally (unlike the original system, where one user's key could block another's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IdempotencyKey {
    type Err = DomainError;

    /// 1 to 128 visible ASCII characters: keys end up in logs, headers and indexes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(DomainError::invalid("idempotencyKey", format!("must be 1 to {} characters", Self::MAX_LEN)));
        }
        if !visible_ascii(s) {
            return Err(DomainError::invalid("idempotencyKey", "must contain only visible ASCII characters"));
        }
        Ok(Self(s.to_owned()))
    }
}

fn visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// A correlation id a client (`x-request-id`) or a publisher (the command's header) chose:
/// 1 to 128 visible ASCII characters. It is echoed and written with every log line of the
/// request, so anything else is dropped for a fresh one rather than written out each time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub const MAX_LEN: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RequestId {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if (1..=Self::MAX_LEN).contains(&s.len()) && visible_ascii(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(DomainError::invalid("x-request-id", "must be 1 to 128 visible ASCII characters"))
        }
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of an upstream system that publishes commands straight to the queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ServiceName {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(DomainError::invalid("initiator", "service names are 1 to 64 of [a-z0-9._-]"))
        }
    }
}

/// Who asked for a transfer. It is also the idempotency scope: the same key from two
/// initiators names two different transactions.
///
/// On the wire it is a string: the user id, or `service:<name>` for an upstream system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Initiator {
    User(UserId),
    Service(ServiceName),
}

impl FromStr for Initiator {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("service:") {
            Some(name) => name.parse().map(Initiator::Service),
            None => UserId::parse_field("initiator", s)
                .map(Initiator::User)
                .map_err(|_| DomainError::invalid("initiator", "must be a user id or service:<name>")),
        }
    }
}

impl fmt::Display for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Initiator::User(id) => id.fmt(f),
            Initiator::Service(name) => write!(f, "service:{}", name.as_str()),
        }
    }
}

impl Serialize for Initiator {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn funding_accounts_are_stable_and_distinct_per_currency() {
        let usd = AccountId::funding(Currency::USD);
        assert_eq!(usd, AccountId::funding(Currency::USD));
        assert_ne!(usd, AccountId::funding("EUR".parse().expect("EUR")));
    }

    #[test]
    fn ids_have_one_spelling_whatever_the_case() {
        let id: AccountId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().expect("hyphenated");
        assert_eq!("67E55044-10B1-426F-9247-BB680E5FE0C8".parse(), Ok(id));
        for other in [
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0c",
            "",
        ] {
            assert!(other.parse::<AccountId>().is_err(), "{other}");
        }
    }

    #[test]
    fn request_ids_are_bounded_visible_ascii() {
        assert!("req-42".parse::<RequestId>().is_ok());
        for unfit in ["", "has space", "x".repeat(129).as_str(), "ключ"] {
            assert!(unfit.parse::<RequestId>().is_err(), "{unfit}");
        }
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!("txn-2026-001".parse::<IdempotencyKey>().is_ok());
        assert!("".parse::<IdempotencyKey>().is_err());
        assert!("has space".parse::<IdempotencyKey>().is_err());
        assert!("ключ".parse::<IdempotencyKey>().is_err());
        assert!("k".repeat(129).parse::<IdempotencyKey>().is_err());
        assert!("k".repeat(128).parse::<IdempotencyKey>().is_ok());
    }

    #[test]
    fn initiator_round_trips_users_and_services() {
        let user = UserId::generate();
        assert_eq!(user.to_string().parse::<Initiator>(), Ok(Initiator::User(user)));
        let svc: Initiator = "service:payroll-sync".parse().expect("service");
        assert_eq!(svc.to_string(), "service:payroll-sync");
        for bad in ["service:", "service:Has Caps", "bob", ""] {
            assert!(bad.parse::<Initiator>().is_err(), "{bad}");
        }
    }
}
