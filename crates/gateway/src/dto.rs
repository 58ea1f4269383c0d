//! Response bodies of the HTTP API, as documented in the OpenAPI description
//! (`GET /openapi.json`). Responses are built from these types, so the document cannot drift
//! from what is sent. What requests carry is in `requests`; the error body in `error`.

use chrono::{DateTime, SecondsFormat, Utc};
use ledgerflow_store::{AccountRecord, EntryRecord, TransactionRecord, UserRecord};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A user, without secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    /// `USER` or `SYSTEM`.
    #[schema(example = "USER")]
    pub role: String,
}

impl From<&UserRecord> for UserBody {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.to_string(),
            name: u.name.as_ref().map(|n| n.as_str().to_owned()),
            role: u.role.as_str().to_owned(),
        }
    }
}

/// A signed-in user and its JWT (also set as the `token` cookie).
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthBody {
    pub user: UserBody,
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// Null only for the system's funding accounts.
    pub owner_id: Option<String>,
    /// `ACTIVE`, `SUSPENDED` or `CLOSED`.
    #[schema(example = "ACTIVE")]
    pub status: String,
    /// ISO 4217.
    #[schema(example = "USD")]
    pub currency: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&AccountRecord> for AccountBody {
    fn from(a: &AccountRecord) -> Self {
        Self {
            id: a.id.to_string(),
            owner_id: a.owner_id.map(|o| o.to_string()),
            status: a.status.as_str().to_owned(),
            currency: a.currency.code().to_owned(),
            created_at: time(a.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountList {
    pub accounts: Vec<AccountBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A balance derived from the ledger, in integer minor units.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceBody {
    #[schema(format = Uuid)]
    pub account_id: String,
    pub currency: String,
    pub balance: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryBody {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub transaction_id: String,
    /// `DEBIT` or `CREDIT`.
    #[serde(rename = "type")]
    #[schema(example = "CREDIT")]
    pub entry_type: String,
    pub amount: i64,
    pub currency: String,
    /// 1, 2, 3… per account, without gaps.
    pub seq: i64,
    pub balance_after: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&EntryRecord> for EntryBody {
    fn from(e: &EntryRecord) -> Self {
        Self {
            id: e.id.to_string(),
            transaction_id: e.transaction_id.to_string(),
            entry_type: e.entry_type.as_str().to_owned(),
            amount: e.amount.minor(),
            currency: e.currency.code().to_owned(),
            seq: e.seq,
            balance_after: e.balance_after.minor(),
            created_at: time(e.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryList {
    pub entries: Vec<EntryBody>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// `TRANSFER`, `INITIAL_FUNDS` or `REVERSAL`.
    #[schema(example = "TRANSFER")]
    pub kind: String,
    #[schema(format = Uuid)]
    pub from_account: String,
    #[schema(format = Uuid)]
    pub to_account: String,
    /// Integer minor units.
    pub amount: i64,
    pub currency: String,
    /// `PENDING`, `COMPLETED` or `FAILED`.
    #[schema(example = "PENDING")]
    pub status: String,
    pub idempotency_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Set when FAILED: `INSUFFICIENT_FUNDS`, `ACCOUNT_NOT_FOUND`, `ACCOUNT_NOT_ACTIVE`,
    /// `CURRENCY_MISMATCH`, `INVALID_COMMAND`, `BALANCE_LIMIT_EXCEEDED`, `PROCESSING_FAILED`,
    /// `ALREADY_REVERSED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    /// For a REVERSAL: the transaction it moves back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverses: Option<String>,
    /// For a reversed transaction: its completed REVERSAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversed_by: Option<String>,
}

impl From<&TransactionRecord> for TransactionBody {
    fn from(t: &TransactionRecord) -> Self {
        Self {
            id: t.id.to_string(),
            kind: t.kind.as_str().to_owned(),
            from_account: t.from_account.to_string(),
            to_account: t.to_account.to_string(),
            amount: t.amount.minor(),
            currency: t.currency.code().to_owned(),
            status: t.status.as_str().to_owned(),
            idempotency_key: t.idempotency_key.to_string(),
            description: t.description.as_ref().map(|d| d.as_str().to_owned()),
            failure_reason: t.failure_reason.map(|r| r.as_str().to_owned()),
            created_at: time(t.created_at),
            completed_at: t.completed_at.map(time),
            reverses: t.reverses.map(|r| r.to_string()),
            reversed_by: t.reversed_by.map(|r| r.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionEnvelope {
    pub transaction: TransactionBody,
}

impl From<&TransactionRecord> for TransactionEnvelope {
    fn from(t: &TransactionRecord) -> Self {
        Self { transaction: t.into() }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionList {
    pub transactions: Vec<TransactionBody>,
    pub next_cursor: Option<String>,
}

// Error answers many endpoints share, for the OpenAPI document only (never constructed):
// handlers list them by name next to their own.

/// Any endpoint behind authentication.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses in the OpenAPI document")]
pub enum AuthErrors {
    #[response(status = 400, description = "VALIDATION_ERROR or INVALID_JSON")]
    Invalid(ErrorBody),
    #[response(status = 401, description = "UNAUTHENTICATED: missing or invalid token")]
    Unauthenticated(ErrorBody),
}

/// Any endpoint that reads a JSON body.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses in the OpenAPI document")]
pub enum BodyErrors {
    #[response(status = 408, description = "REQUEST_TIMEOUT: the body did not arrive whole within the deadline")]
    TooSlow(ErrorBody),
    #[response(status = 413, description = "PAYLOAD_TOO_LARGE")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "UNSUPPORTED_MEDIA_TYPE")]
    UnsupportedMediaType(ErrorBody),
}

/// Any endpoint that needs the database.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses in the OpenAPI document")]
pub enum Unavailable {
    #[response(status = 503, description = "SERVICE_UNAVAILABLE: database or broker unreachable")]
    Unavailable(ErrorBody),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    #[schema(example = "ok")]
    pub status: String,
}
