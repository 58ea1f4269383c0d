//! Transfers and their life cycle: PENDING, then exactly one of COMPLETED or FAILED.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{AccountId, Amount, Currency, DomainError, Leg, Metadata, TransactionId};

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        // Deserialised through `FromStr` (`crate::fields`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(DomainError::invalid(
                        $field,
                        format!("must be one of {}", [$($text),+].join(", ")),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Whether an account may send and receive money. Only ACTIVE accounts take part in
    /// transfers; SUSPENDED ones keep their history and balance; CLOSED ones are empty and
    /// stay closed ([`crate::AccountSnapshot::may_become`]).
    AccountStatus, "status" {
        Active => "ACTIVE",
        Suspended => "SUSPENDED",
        Closed => "CLOSED",
    }
);

wire_enum!(
    /// Where a transaction is in its life. Terminal states never change again.
    TransactionStatus, "status" {
        Pending => "PENDING",
        Completed => "COMPLETED",
        Failed => "FAILED",
        // A hold's: HELD once decided, then exactly one of POSTED, VOIDED or EXPIRED.
        Held => "HELD",
        Posted => "POSTED",
        Voided => "VOIDED",
        Expired => "EXPIRED",
    }
);

wire_enum!(
    /// Why a transaction FAILED. Stable codes that clients may branch on.
    FailureReason, "failureReason" {
        InsufficientFunds => "INSUFFICIENT_FUNDS",
        AccountNotFound => "ACCOUNT_NOT_FOUND",
        AccountNotActive => "ACCOUNT_NOT_ACTIVE",
        CurrencyMismatch => "CURRENCY_MISMATCH",
        InvalidCommand => "INVALID_COMMAND",
        BalanceLimitExceeded => "BALANCE_LIMIT_EXCEEDED",
        ProcessingFailed => "PROCESSING_FAILED",
        AlreadyReversed => "ALREADY_REVERSED",
        // A POST_HOLD or VOID_HOLD: the hold is not HELD (posted, voided, expired or failed),
        // its time ran out, the amount is above the held one, or no such hold.
        HoldNotHeld => "HOLD_NOT_HELD",
        HoldExpired => "HOLD_EXPIRED",
        AmountExceedsHold => "AMOUNT_EXCEEDS_HOLD",
        HoldNotFound => "HOLD_NOT_FOUND",
        // A queued command whose publisher set an AMQP `expiration` that lapsed before a
        // worker took it: the broker dead-lettered it unread.
        Expired => "EXPIRED",
        // Only in results, never on a transaction: a command whose initiator and key (or
        // transaction id) name a recorded transaction of a different request.
        IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
        // Only in results: the publisher may not send this command (see `grants`).
        Unauthorized => "UNAUTHORIZED",
    }
);

wire_enum!(
    /// A transfer between two client accounts, money issued from the funding account, the
    /// reversal of either, the two phases of a hold (the reservation, then its post or void),
    /// or a journal of several movements committed together.
    TransferKind, "kind" {
        Transfer => "TRANSFER",
        InitialFunds => "INITIAL_FUNDS",
        Reversal => "REVERSAL",
        Hold => "HOLD",
        PostHold => "POST_HOLD",
        VoidHold => "VOID_HOLD",
        Journal => "JOURNAL",
    }
);

wire_enum!(
    /// What a change of a transaction is called on the event stream (`ledgerflow.events`, the
    /// events API and webhooks): one per status a transaction enters, and the original's
    /// `transaction.reversed` when a reversal of it completes.
    EventType, "type" {
        Accepted => "transaction.accepted",
        Completed => "transaction.completed",
        Failed => "transaction.failed",
        Held => "transaction.held",
        Posted => "transaction.posted",
        Voided => "transaction.voided",
        Expired => "transaction.expired",
        Reversed => "transaction.reversed",
    }
);

impl EventType {
    /// The event of a transaction entering `status`: PENDING is its acceptance.
    pub fn entering(status: TransactionStatus) -> Self {
        match status {
            TransactionStatus::Pending => EventType::Accepted,
            TransactionStatus::Completed => EventType::Completed,
            TransactionStatus::Failed => EventType::Failed,
            TransactionStatus::Held => EventType::Held,
            TransactionStatus::Posted => EventType::Posted,
            TransactionStatus::Voided => EventType::Voided,
            TransactionStatus::Expired => EventType::Expired,
        }
    }
}

impl TransactionStatus {
    /// Decided by a worker: no longer PENDING. Its command has had its effect, so a repeat of
    /// it does nothing more and a result can be reported. Not the same as final: a HELD hold
    /// is decided, but changes once more, when it is posted, voided or expires (see
    /// [`TransactionStatus::is_final`]).
    pub fn is_decided(self) -> bool {
        !matches!(self, TransactionStatus::Pending)
    }

    /// Never changes again.
    pub fn is_final(self) -> bool {
        !matches!(self, TransactionStatus::Pending | TransactionStatus::Held)
    }
}

impl TransferKind {
    /// POST_HOLD and VOID_HOLD: they name a hold and settle it.
    pub fn resolves_hold(self) -> bool {
        matches!(self, TransferKind::PostHold | TransferKind::VoidHold)
    }
}

/// How long a hold may stay HELD before it expires: 1 second to 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HoldTimeout(u32);

impl HoldTimeout {
    pub const MAX_SECONDS: u32 = 30 * 24 * 3600;

    pub fn new(seconds: i64) -> Result<Self, DomainError> {
        match u32::try_from(seconds) {
            Ok(s) if (1..=Self::MAX_SECONDS).contains(&s) => Ok(Self(s)),
            _ => Err(DomainError::invalid(
                "timeoutSeconds",
                format!("must be an integer number of seconds from 1 to {}", Self::MAX_SECONDS),
            )),
        }
    }

    pub fn seconds(self) -> u32 {
        self.0
    }

    /// Reads a JSON value: only a JSON integer in range is a timeout.
    pub fn from_json_value(value: &serde_json::Value) -> Result<Self, DomainError> {
        match value.as_i64() {
            Some(seconds) => Self::new(seconds),
            None => Self::new(0),
        }
    }
}

impl<'de> serde::Deserialize<'de> for HoldTimeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_json_value(&serde_json::Value::deserialize(d)?).map_err(|e| crate::fields::refusal(&e))
    }
}

/// A free-text note on a transfer: at most 500 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 500;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Description {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.chars().count() > Self::MAX_CHARS {
            return Err(DomainError::invalid("description", format!("must be at most {} characters", Self::MAX_CHARS)));
        }
        if s.chars().any(|c| c.is_control() && c != '\n') {
            return Err(DomainError::invalid("description", "must not contain control characters other than newline"));
        }
        // Shown verbatim to the counterparty: a right-to-left override can make "refund 001"
        // read as something else, and zero-width or separator characters hide or split text.
        if s.chars().any(|c| c != '\n' && is_invisible(c)) {
            return Err(DomainError::invalid(
                "description",
                "must not contain invisible characters (format, bidirectional, zero-width, private-use, unassigned) \
                 or line and paragraph separators",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

/// Whether `c` does not show as itself: Unicode's "other" categories (control, format such as
/// bidirectional overrides and zero-width characters, private use, unassigned) and the line
/// and paragraph separators. The same rule refuses them in emails.
pub(crate) fn is_invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
    c.general_category_group() == GeneralCategoryGroup::Other
        || matches!(c.general_category(), GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator)
}

/// A transfer as asked for, before anyone decided whether it happens.
///
/// For INITIAL_FUNDS `from` is the currency's funding account. A REVERSAL moves a completed
/// transaction's money back: `from`/`to` are the original's swapped and `reverses` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    pub kind: TransferKind,
    pub from: AccountId,
    pub to: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub description: Option<Description>,
    /// The transaction a REVERSAL undoes; `None` for every other kind.
    pub reverses: Option<TransactionId>,
    /// The hold a POST_HOLD or VOID_HOLD settles; `None` for every other kind.
    pub hold: Option<TransactionId>,
    /// How long a HOLD may stay HELD; `None` for every other kind.
    pub timeout: Option<HoldTimeout>,
    /// A JOURNAL's legs, or those its REVERSAL moves back; empty for every other request,
    /// whose one movement is `from`, `to`, `amount` and `currency` ([`TransferRequest::movements`]).
    pub legs: Vec<Leg>,
    /// The client's own labels, never empty when present (see [`TransferRequest::with_metadata`]).
    pub metadata: Option<Metadata>,
}

impl TransferRequest {
    pub fn new(
        kind: TransferKind,
        from: AccountId,
        to: AccountId,
        amount: Amount,
        currency: Currency,
        description: Option<Description>,
    ) -> Result<Self, DomainError> {
        if from == to {
            return Err(DomainError::invalid("toAccount", "must differ from fromAccount"));
        }
        if kind == TransferKind::InitialFunds && from != AccountId::funding(currency) {
            return Err(DomainError::invalid("fromAccount", "initial funds come from the funding account only"));
        }
        if !matches!(kind, TransferKind::Transfer | TransferKind::InitialFunds) {
            return Err(DomainError::invalid("kind", "reversals and holds have constructors of their own"));
        }
        Ok(Self {
            kind,
            from,
            to,
            amount,
            currency,
            description,
            reverses: None,
            hold: None,
            timeout: None,
            legs: Vec::new(),
            metadata: None,
        })
    }

    /// A hold: `amount` reserved on `from` in favour of `to` for `timeout`.
    pub fn hold(
        from: AccountId,
        to: AccountId,
        amount: Amount,
        currency: Currency,
        description: Option<Description>,
        timeout: HoldTimeout,
    ) -> Result<Self, DomainError> {
        let mut request = Self::new(TransferKind::Transfer, from, to, amount, currency, description)?;
        request.kind = TransferKind::Hold;
        request.timeout = Some(timeout);
        Ok(request)
    }

    /// The post (of `amount`, at most the held amount) or void (of the held amount) of
    /// `hold`, which reserved money on `from` for `to`: the same accounts, the same way.
    pub fn settle(
        kind: TransferKind,
        hold: TransactionId,
        from: AccountId,
        to: AccountId,
        amount: Amount,
        currency: Currency,
    ) -> Result<Self, DomainError> {
        if !kind.resolves_hold() {
            return Err(DomainError::invalid("kind", "must be POST_HOLD or VOID_HOLD"));
        }
        if from == to {
            return Err(DomainError::invalid("toAccount", "must differ from fromAccount"));
        }
        Ok(Self {
            kind,
            from,
            to,
            amount,
            currency,
            description: None,
            reverses: None,
            hold: Some(hold),
            timeout: None,
            legs: Vec::new(),
            metadata: None,
        })
    }

    /// The reversal of a completed transaction: the same amount, the other way.
    pub fn reversal(
        original: TransactionId,
        original_from: AccountId,
        original_to: AccountId,
        amount: Amount,
        currency: Currency,
        reason: Option<Description>,
    ) -> Self {
        Self {
            kind: TransferKind::Reversal,
            from: original_to,
            to: original_from,
            amount,
            currency,
            description: reason,
            reverses: Some(original),
            hold: None,
            timeout: None,
            legs: Vec::new(),
            metadata: None,
        }
    }

    /// The same request with the client's labels; an empty object is none, so that `{}`
    /// keeps the fingerprint of a request without metadata.
    pub fn with_metadata(mut self, metadata: Option<Metadata>) -> Self {
        self.metadata = metadata.and_then(Metadata::non_empty);
        self
    }

    /// A digest of everything that defines the request. Two requests under one idempotency
    /// key are "the same" exactly when their fingerprints match.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.kind.as_str(),
            &self.from.to_string(),
            &self.to.to_string(),
            &self.amount.to_string(),
            self.currency.code(),
            self.description.as_ref().map_or("", Description::as_str),
            &self.reverses.map(|id| id.to_string()).unwrap_or_default(),
        ] {
            // Length-prefix each part so that no two different requests hash the same input.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        // Only when present, so that every request recorded before holds keeps its print.
        // Metadata likewise: every request recorded before it keeps its print.
        let hold_parts = [
            self.hold.map(|id| format!("hold:{id}")),
            self.timeout.map(|t| format!("timeout:{}", t.0)),
            self.metadata.as_ref().map(Metadata::fingerprint_part),
        ];
        // A journal's legs (and its reversal's), in order; absent from every other request.
        let leg_parts = self.legs.iter().map(|l| format!("leg:{}:{}:{}:{}", l.from, l.to, l.amount, l.currency.code()));
        for part in hold_parts.into_iter().flatten().chain(leg_parts) {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(amount: i64, description: Option<&str>) -> TransferRequest {
        TransferRequest::new(
            TransferKind::Transfer,
            AccountId::parse_field("a", "0190a0a0-0000-7000-8000-000000000001").expect("id"),
            AccountId::parse_field("b", "0190a0a0-0000-7000-8000-000000000002").expect("id"),
            Amount::new(amount).expect("amount"),
            Currency::USD,
            description.map(|d| d.parse().expect("description")),
        )
        .expect("valid request")
    }

    #[test]
    fn every_status_entered_has_its_own_event_type() {
        let types: std::collections::HashSet<EventType> =
            TransactionStatus::ALL.iter().map(|s| EventType::entering(*s)).collect();
        assert_eq!(types.len(), TransactionStatus::ALL.len());
        assert!(!types.contains(&EventType::Reversed), "a reversal is not a status of the original");
        assert_eq!(EventType::entering(TransactionStatus::Pending).as_str(), "transaction.accepted");
        assert_eq!("transaction.posted".parse::<EventType>().ok(), Some(EventType::Posted));
        assert!("transaction.unknown".parse::<EventType>().is_err());
    }

    #[test]
    fn fingerprint_changes_with_any_field() {
        let base = request(100, None);
        assert_eq!(base.fingerprint(), request(100, None).fingerprint());
        assert_ne!(base.fingerprint(), request(101, None).fingerprint());
        assert_ne!(base.fingerprint(), request(100, Some("rent")).fingerprint());
        let labelled = |v: serde_json::Value| {
            request(100, None).with_metadata(Some(Metadata::from_json_value(&v).expect("metadata"))).fingerprint()
        };
        assert_eq!(labelled(serde_json::json!({})), base.fingerprint(), "{{}} is no metadata");
        assert_ne!(labelled(serde_json::json!({"order": "1"})), base.fingerprint());
        assert_ne!(labelled(serde_json::json!({"order": "1"})), labelled(serde_json::json!({"order": "2"})));
        assert_eq!(
            labelled(serde_json::json!({"a": "1", "b": "2"})),
            labelled(serde_json::json!({"b": "2", "a": "1"}))
        );
    }

    #[test]
    fn a_transfer_to_the_same_account_is_refused() {
        let a = AccountId::generate();
        let err = TransferRequest::new(TransferKind::Transfer, a, a, Amount::new(1).expect("1"), Currency::USD, None);
        assert_eq!(err.map_err(|e| e.field()), Err("toAccount"));
    }

    #[test]
    fn initial_funds_must_come_from_the_funding_account() {
        let to = AccountId::generate();
        let one = Amount::new(1).expect("1");
        let ok = TransferRequest::new(
            TransferKind::InitialFunds,
            AccountId::funding(Currency::USD),
            to,
            one,
            Currency::USD,
            None,
        );
        assert!(ok.is_ok());
        let bad = TransferRequest::new(TransferKind::InitialFunds, AccountId::generate(), to, one, Currency::USD, None);
        assert!(bad.is_err());
    }

    #[test]
    fn a_description_is_refused_for_what_is_wrong_with_it() {
        let reason = |s: &str| match s.parse::<Description>() {
            Err(DomainError::Invalid { field: "description", reason }) => reason,
            other => panic!("{s:?} gave {other:?}"),
        };
        assert!(reason(&"é".repeat(501)).contains("at most 500 characters"));
        assert!(reason("a\u{7}b").contains("control characters"));
        assert!(reason("tab\there").contains("control characters"));
        for hidden in ["refund \u{202e}100", "a\u{200b}b", "a\u{2028}b", "a\u{2029}b", "\u{e000}", "a\u{ad}b"] {
            assert!(reason(hidden).contains("invisible characters"), "{hidden:?}");
        }
        for fine in ["", "rent\nNovember", &"é".repeat(500), "café 😀"] {
            assert!(fine.parse::<Description>().is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn wire_enums_parse_their_own_spelling_only() {
        for s in TransactionStatus::ALL {
            assert_eq!(s.as_str().parse::<TransactionStatus>(), Ok(*s));
        }
        assert!("pending".parse::<TransactionStatus>().is_err());
        assert_eq!("SUSPENDED".parse::<AccountStatus>(), Ok(AccountStatus::Suspended));
    }
}
