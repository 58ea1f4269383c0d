//! What the HTTP API accepts: request bodies and query strings, typed with domain values, as
//! documented in the OpenAPI description (`GET /openapi.json`).
//!
//! Each type is read by `extract::Body` or `extract::Query` (through `de`), which refuses a
//! name the type does not have and reports a bad value by its field, in the domain's words.
//! `deny_unknown_fields` says the same to serde and, as `additionalProperties: false`, to the
//! document; a test holds the names of each type to the document. Where a field's type is a
//! domain type, `#[schema(value_type)]` says how it is written.

use std::str::FromStr;

use ledgerflow_domain::{
    AccountId, AccountLimits, AccountStatus, Amount, Currency, Description, DomainError, Email, HoldTimeout,
    IdempotencyKey, Metadata, Moment, Password, PersonName, TransactionId, TransactionStatus, TransferKind, fields,
};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterRequest {
    #[schema(value_type = String, example = "alice@example.com")]
    pub email: Email,
    /// At least 8 characters.
    #[schema(value_type = String, min_length = 8, max_length = 1024)]
    pub password: Password,
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100)]
    pub name: Option<PersonName>,
}

// Strings as given: an email that is not one, or a password too short to be set today, is
// merely one that does not sign in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoginRequest {
    #[serde(deserialize_with = "fields::string")]
    pub email: String,
    #[serde(deserialize_with = "fields::string")]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PasswordChangeRequest {
    #[serde(deserialize_with = "fields::string")]
    pub current_password: String,
    /// At least 8 characters.
    #[schema(value_type = String, min_length = 8, max_length = 1024)]
    pub new_password: Password,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateAccountRequest {
    /// A circulating ISO 4217 code (not XXX, XTS, metals, fund or superseded codes); default `USD`.
    #[schema(value_type = Option<String>, example = "USD", pattern = "^[A-Z]{3}$")]
    pub currency: Option<Currency>,
    /// The owner's labels, as on a transfer (at most 16 keys); replaced whole by
    /// `PATCH /api/accounts/{id}/metadata`.
    #[schema(value_type = Option<BTreeMap<String, String>>, example = json!({"purpose": "payroll"}))]
    pub metadata: Option<Metadata>,
}

/// `PATCH /api/accounts/{id}/metadata`: the account's labels, replacing all it had (`{}`
/// removes them).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetadataRequest {
    #[schema(value_type = BTreeMap<String, String>, example = json!({"purpose": "payroll"}))]
    pub metadata: Metadata,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusRequest {
    /// `ACTIVE`, `SUSPENDED` or `CLOSED`.
    #[schema(value_type = String, example = "SUSPENDED", pattern = "^(ACTIVE|SUSPENDED|CLOSED)$")]
    pub status: AccountStatus,
}

/// New limits for an account; a field left out keeps its value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsRequest {
    /// How far below zero the account may go, in minor units (0: not at all).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub overdraft_limit: Option<i64>,
    /// The most `balance + pendingCredits` may reach, in minor units; null removes the ceiling.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub max_balance: Option<Option<i64>>,
}

impl LimitsRequest {
    /// The limits once this change is applied to `current`.
    pub fn apply_to(&self, current: AccountLimits) -> Result<AccountLimits, DomainError> {
        AccountLimits::new(
            self.overdraft_limit.unwrap_or(current.overdraft()),
            self.max_balance.unwrap_or(current.max_balance()),
        )
    }
}

/// A field that may be absent (outer `None`, by `default`) or `null` (inner `None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /transactions`: a transfer (`fromAccount`, `toAccount`, `amount`), a hold (the same
/// with `hold`), or a journal (`legs` instead of the three).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransferBody {
    /// An account the caller owns. Required unless `legs` is given.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub from_account: Option<AccountId>,
    /// Required unless `legs` is given.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub to_account: Option<AccountId>,
    /// Integer minor units. Required unless `legs` is given.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: Option<Amount>,
    /// Optional: the currency the caller means to move. If given, it must be the accounts'
    /// (422 `CURRENCY_MISMATCH` otherwise), so that an amount meant in one currency is never
    /// moved in another. With `legs`, each leg names its own.
    #[schema(value_type = Option<String>, example = "USD", pattern = "^[A-Z]{3}$")]
    pub currency: Option<Currency>,
    /// 1–128 visible ASCII characters; unique per caller.
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub idempotency_key: IdempotencyKey,
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Option<Description>,
    /// Present: reserve the amount as a HOLD instead of moving it, to be posted or voided
    /// later, or to expire.
    pub hold: Option<HoldOptions>,
    /// A JOURNAL of 2 to 16 legs, committed all or none, in order (a later leg may spend what
    /// an earlier one credited). The caller must own every debited account; SYSTEM may also
    /// debit a currency's funding account.
    #[schema(min_items = 2, max_items = 16)]
    pub legs: Option<Vec<LegRequest>>,
    /// The client's own labels: at most 16 keys of 1–64 characters of `A-Z a-z 0-9 _ . -`,
    /// each with a string of at most 512 characters without control or invisible characters.
    /// Part of the request under its idempotencyKey; `{}` is none. Searchable:
    /// `GET /transactions?metadata.<key>=<value>`.
    #[schema(value_type = Option<BTreeMap<String, String>>, example = json!({"orderId": "A-17"}))]
    pub metadata: Option<Metadata>,
}

/// One leg of a journal.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LegRequest {
    #[schema(value_type = String, format = Uuid)]
    pub from_account: AccountId,
    #[schema(value_type = String, format = Uuid)]
    pub to_account: AccountId,
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: Amount,
    /// Optional: if given, it must be both accounts' currency (422 `CURRENCY_MISMATCH`).
    #[schema(value_type = Option<String>, example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: Option<Currency>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HoldOptions {
    /// How long the hold may stay HELD before it EXPIRES: 1 second to 30 days.
    #[schema(value_type = i64, minimum = 1, maximum = 2_592_000)]
    pub timeout_seconds: HoldTimeout,
}

/// `POST /transactions/{id}/post`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PostHoldBody {
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub idempotency_key: IdempotencyKey,
    /// At most the held amount; default: all of it. The rest is released.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: Option<Amount>,
    /// The POST_HOLD's own labels (the hold keeps its own); as on a transfer.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
}

/// `POST /transactions/{id}/void`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VoidHoldBody {
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub idempotency_key: IdempotencyKey,
    /// The VOID_HOLD's own labels (the hold keeps its own); as on a transfer.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InitialFundsBody {
    #[schema(value_type = String, format = Uuid)]
    pub to_account: AccountId,
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: Amount,
    /// Optional: if given, it must be the account's currency (422 `CURRENCY_MISMATCH`).
    #[schema(value_type = Option<String>, example = "USD", pattern = "^[A-Z]{3}$")]
    pub currency: Option<Currency>,
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub idempotency_key: IdempotencyKey,
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Option<Description>,
    /// As on a transfer.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReverseBody {
    #[schema(value_type = String, min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub idempotency_key: IdempotencyKey,
    #[schema(value_type = Option<String>, max_length = 500)]
    pub reason: Option<Description>,
    /// The REVERSAL's own labels (the original keeps its own); as on a transfer.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
}

/// No fields: the body of a state-changing request that needs none (empty or `{}`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoBody {}

// Query strings: parameters are strings, each read through its type's `FromStr`. Documented
// by each handler's `params`.

/// No query string: an endpoint that reads none refuses any (`?asOf=` on a balance would
/// otherwise answer today's balance as if it were the one asked for).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// `?limit=&cursor=`: one page of a list; `C` is what the list's `nextCursor` holds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery<C> {
    pub limit: Option<Limit>,
    pub cursor: Option<C>,
}

/// `?account=&status=&kind=&createdFrom=&createdTo=&minAmount=&maxAmount=&limit=&cursor=`:
/// `GET /transactions`. Its `metadata.<key>` parameters, whose names are the client's, are
/// read apart (`search::SearchQuery`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransactionQuery {
    pub account: Option<AccountId>,
    pub status: Option<TransactionStatus>,
    pub kind: Option<TransferKind>,
    pub created_from: Option<crate::search::Instant>,
    pub created_to: Option<crate::search::Instant>,
    pub min_amount: Option<crate::search::AmountBound>,
    pub max_amount: Option<crate::search::AmountBound>,
    pub limit: Option<Limit>,
    pub cursor: Option<TransactionId>,
}

/// `?asOf=`: `GET /api/accounts/{id}/balance`, now or as of a past instant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BalanceQuery {
    pub as_of: Option<Moment>,
}

/// `?from=&to=&limit=&cursor=`: `GET /api/accounts/{id}/statement`, the entries with
/// `from <= createdAt < to`; the cursor is the `seq` of the previous page's last entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    pub from: Moment,
    pub to: Moment,
    pub limit: Option<Limit>,
    pub cursor: Option<EntryCursor>,
}

/// `?wait=`: `GET /transactions/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    pub wait: Option<WaitSecs>,
}

/// `?after=&types=&account=&limit=`: `GET /api/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    pub after: Option<EventCursor>,
    pub types: Option<EventTypes>,
    pub account: Option<AccountId>,
    pub limit: Option<Limit>,
}

/// Implements `Deserialize` through `FromStr`, as the domain's string-borne types do.
macro_rules! deserialize_from_str {
    ($($name:ty),+) => {
        $(
            impl<'de> Deserialize<'de> for $name {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    fields::from_str(d)
                }
            }
        )+
    };
}

deserialize_from_str!(Limit, EntryCursor, WaitSecs, EventCursor, EventTypes);

/// `limit`: a page size from 1 to `MAX_PAGE`, 20 unless given.
#[derive(Debug, Clone, Copy)]
pub struct Limit(i64);

impl Limit {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl Default for Limit {
    fn default() -> Self {
        Self(20)
    }
}

impl FromStr for Limit {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        match s.parse::<i64>() {
            Ok(n) if (1..=ledgerflow_store::MAX_PAGE).contains(&n) => Ok(Self(n)),
            _ => Err(DomainError::Invalid {
                field: "limit",
                reason: format!("must be an integer from 1 to {}", ledgerflow_store::MAX_PAGE),
            }),
        }
    }
}

/// The `cursor` of `GET /api/accounts/{id}/entries`: the sequence number of the last entry
/// of the page before.
#[derive(Debug, Clone, Copy)]
pub struct EntryCursor(i64);

impl EntryCursor {
    pub fn seq(self) -> i64 {
        self.0
    }
}

impl FromStr for EntryCursor {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        s.parse::<i64>().ok().filter(|n| *n > 0).map(Self).ok_or(DomainError::Invalid {
            field: "cursor",
            reason: "must be a cursor returned by this endpoint".into(),
        })
    }
}

/// `after` of `GET /api/events`: an event id (`0`, or none: from the oldest kept).
#[derive(Debug, Clone, Copy, Default)]
pub struct EventCursor(i64);

impl EventCursor {
    pub fn id(self) -> i64 {
        self.0
    }
}

impl FromStr for EventCursor {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        s.parse::<i64>().ok().filter(|n| *n >= 0).map(Self).ok_or(DomainError::Invalid {
            field: "after",
            reason: "must be an event id (a whole number, 0 for the oldest kept)".into(),
        })
    }
}

/// `types` of `GET /api/events`: event types, comma-separated.
#[derive(Debug, Clone, Default)]
pub struct EventTypes(Vec<ledgerflow_domain::EventType>);

impl EventTypes {
    pub fn into_vec(self) -> Vec<ledgerflow_domain::EventType> {
        self.0
    }
}

impl FromStr for EventTypes {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        // `split` yields at least one piece, and an empty one is no type: never an empty list.
        let types = s.split(',').map(|t| t.trim().parse()).collect::<Result<Vec<_>, DomainError>>();
        types.map(Self).map_err(|e| DomainError::Invalid { field: "types", reason: e.reason().to_owned() })
    }
}

/// `wait`: how long to hold a PENDING transaction for its outcome, in whole seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitSecs(u64);

impl WaitSecs {
    /// The longest wait a client may ask for.
    pub const MAX: u64 = 30;

    pub fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for WaitSecs {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        s.parse::<u64>().ok().filter(|w| *w <= Self::MAX).map(Self).ok_or_else(|| DomainError::Invalid {
            field: "wait",
            reason: format!("must be a whole number of seconds from 0 to {}", Self::MAX),
        })
    }
}

/// `POST /transactions/batch`. Read by `routes::batch`'s own reader, which keeps each item as
/// written so that it is judged exactly as `POST /transactions` judges a body alone; this
/// type gives the batch's names to that reader and to the document.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchBody {
    /// 1 to 1,000 requests, each exactly a `POST /transactions` body (a transfer, or a hold
    /// with `hold`), each answered as it would be alone.
    #[schema(min_items = 1, max_items = 1000)]
    #[expect(dead_code, reason = "the reader reads the items apart, each as a body of its own; this names them")]
    pub items: Vec<TransferBody>,
}

/// `POST /api/webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookRequest {
    /// Where events are POSTed: an absolute `https://` URL without credentials or fragment
    /// (`http://` only where the deployment allows it), whose host resolves to public
    /// addresses only (unless the deployment allows private ones).
    #[schema(value_type = String, max_length = 2048, example = "https://hooks.example.com/ledgerflow")]
    pub url: ledgerflow_domain::webhooks::WebhookUrl,
    /// The event types to receive, at least one: `transaction.accepted`, `.completed`,
    /// `.failed`, `.held`, `.posted`, `.voided`, `.expired`, `.reversed`.
    #[schema(value_type = Vec<String>, min_items = 1, max_items = 8, example = json!(["transaction.completed"]))]
    pub types: Vec<ledgerflow_domain::EventType>,
    /// Only events naming one of these accounts (the caller's own; SYSTEM any); left out:
    /// every event the caller may see.
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 100)]
    pub accounts: Option<Vec<AccountId>>,
}
