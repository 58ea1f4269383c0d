//! The wire types of LedgerFlow's HTTP API: every response body, and the error body, as the
//! OpenAPI document (`GET /openapi.json`) describes them. The gateway builds its answers from
//! these types, so the document cannot drift from what is sent, and `ledgerflow-client` reads
//! answers into the same types, so client and server cannot disagree about a field.
//!
//! Values are as they travel: ids and times as strings (UUIDs, RFC 3339 with milliseconds),
//! amounts and balances as integer minor units.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user, without secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserBody {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    /// `USER` or `SYSTEM`.
    #[schema(example = "USER")]
    pub role: String,
}

/// A signed-in user and its JWT (also set as the `token` cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuthBody {
    pub user: UserBody,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    /// How far below zero the balance may go (0: not at all). Set by SYSTEM.
    pub overdraft_limit: i64,
    /// The most `balance + pendingCredits` may reach; null: no ceiling. Set by SYSTEM.
    pub max_balance: Option<i64>,
    /// The owner's labels (`{}`: none); replaced by `PATCH /api/accounts/{id}/metadata`.
    #[serde(default)]
    #[schema(example = json!({"purpose": "payroll"}))]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountList {
    pub accounts: Vec<AccountBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A balance derived from the ledger, and what holds and limits make of it, in integer
/// minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceBody {
    #[schema(format = Uuid)]
    pub account_id: String,
    pub currency: String,
    /// Posted money: the latest ledger entry's `balanceAfter` (with `asOf`: that of the last
    /// entry at or before the instant, 0 before the first).
    pub balance: i64,
    /// Reserved by HELD holds that debit this account (with `asOf`: by the holds HELD at the
    /// instant and not yet past their `expiresAt`).
    pub pending_debits: i64,
    /// Reserved by HELD holds that credit this account (with `asOf`: as for `pendingDebits`).
    pub pending_credits: i64,
    /// What a new debit may take: `balance − pendingDebits + overdraftLimit` (with `asOf`: of
    /// the figures at the instant, and today's overdraft line).
    pub available: i64,
    pub overdraft_limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    /// For an entry of a JOURNAL (or of its REVERSAL): the index of the leg it posts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryList {
    pub entries: Vec<EntryBody>,
    pub next_cursor: Option<String>,
}

/// An account's statement over `from <= createdAt < to`, in integer minor units:
/// `openingBalance + totalCredits − totalDebits = closingBalance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatementBody {
    #[schema(format = Uuid)]
    pub account_id: String,
    pub currency: String,
    /// The window's start, inclusive.
    #[schema(format = DateTime)]
    pub from: String,
    /// The window's end, exclusive.
    #[schema(format = DateTime)]
    pub to: String,
    /// The balance as of just before `from`: the `balanceAfter` of the last earlier entry, or 0.
    pub opening_balance: i64,
    /// The balance as of just before `to`.
    pub closing_balance: i64,
    /// Over the whole window, not only this page.
    pub total_debits: i64,
    pub total_credits: i64,
    pub entry_count: i64,
    /// This page of the window's entries, oldest first.
    pub entries: Vec<EntryBody>,
    /// Pass as `cursor` (with the same `from` and `to`) for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// `TRANSFER`, `INITIAL_FUNDS`, `REVERSAL`, `HOLD`, `POST_HOLD`, `VOID_HOLD` or `JOURNAL`.
    #[schema(example = "TRANSFER")]
    pub kind: String,
    /// For a JOURNAL (and the REVERSAL of one), this and `toAccount`, `amount` and `currency`
    /// are its first leg's; `legs` has them all.
    #[schema(format = Uuid)]
    pub from_account: String,
    #[schema(format = Uuid)]
    pub to_account: String,
    /// Integer minor units.
    pub amount: i64,
    pub currency: String,
    /// For a JOURNAL: its legs, applied in order, all or none; for the REVERSAL of a journal,
    /// the legs it moves back (the journal's, swapped, in the opposite order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legs: Option<Vec<LegBody>>,
    /// For a FAILED journal: the index of the leg that failed it (nothing moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_leg: Option<u16>,
    /// `PENDING`, `COMPLETED` or `FAILED`; a HOLD is `HELD` once decided, then `POSTED`,
    /// `VOIDED` or `EXPIRED`.
    #[schema(example = "PENDING")]
    pub status: String,
    pub idempotency_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Set when FAILED: `INSUFFICIENT_FUNDS`, `ACCOUNT_NOT_FOUND`, `ACCOUNT_NOT_ACTIVE`,
    /// `CURRENCY_MISMATCH`, `INVALID_COMMAND`, `BALANCE_LIMIT_EXCEEDED`, `PROCESSING_FAILED`,
    /// `ALREADY_REVERSED`, `HOLD_NOT_HELD`, `HOLD_EXPIRED`, `AMOUNT_EXCEEDS_HOLD`, `HOLD_NOT_FOUND`,
    /// `EXPIRED`.
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
    /// For a HOLD: the amount it reserves (its `amount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_amount: Option<i64>,
    /// For a HOLD: when it EXPIRES unless posted or voided first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// For a POSTED hold: how much its POST_HOLD moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_amount: Option<i64>,
    /// For a POSTED or VOIDED hold: the POST_HOLD or VOID_HOLD that settled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// For a settled hold (POSTED, VOIDED or EXPIRED): when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub resolved_at: Option<String>,
    /// For a POST_HOLD or VOID_HOLD: the hold it settles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// The client's labels, when the request had any (search them with
    /// `GET /transactions?metadata.<key>=<value>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!({"orderId": "A-17"}))]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// One movement of a journal: a DEBIT on `fromAccount` and a CREDIT on `toAccount` of `amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegBody {
    #[schema(format = Uuid)]
    pub from_account: String,
    #[schema(format = Uuid)]
    pub to_account: String,
    /// Integer minor units.
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransactionEnvelope {
    pub transaction: TransactionBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionList {
    pub transactions: Vec<TransactionBody>,
    pub next_cursor: Option<String>,
}

/// A change of a transaction, as the events API, the `ledgerflow.events` exchange and webhooks
/// carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventBody {
    /// Increases in commit order: an event of a change committed after another's has a larger
    /// id. Unique; not gap-free. Receivers dedupe by it.
    #[schema(example = 42)]
    pub id: i64,
    /// `transaction.accepted`, `transaction.completed`, `transaction.failed`,
    /// `transaction.held`, `transaction.posted`, `transaction.voided`, `transaction.expired` or
    /// `transaction.reversed`.
    #[serde(rename = "type")]
    #[schema(example = "transaction.completed")]
    pub event_type: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = Uuid)]
    pub transaction_id: String,
    /// The transaction as `GET /transactions/{id}` showed it right after the change.
    pub transaction: TransactionBody,
    /// The accounts the change touched, as of the change (empty when it moved nothing: an
    /// acceptance, a failure decided before any account was read).
    pub accounts: Vec<EventAccountBody>,
}

/// An account as of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventAccountBody {
    #[schema(format = Uuid)]
    pub account_id: String,
    /// The sequence number of its latest entry.
    pub seq: i64,
    /// Posted balance, integer minor units.
    pub balance: i64,
    /// `balance - pendingDebits + overdraftLimit`.
    pub available: i64,
}

/// A page of events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub events: Vec<EventBody>,
    /// Whether more events matched than this page holds.
    pub has_more: bool,
    /// Pass as `after` for the next page: the last event's id (or the `after` given, when the
    /// page is empty), so a consumer keeps polling with it.
    pub next_cursor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusBody {
    #[schema(example = "ok")]
    pub status: String,
}

/// Every error: `{"error":{"code":"UPPER_SNAKE","message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// A stable code, e.g. `VALIDATION_ERROR`, `ACCOUNT_NOT_FOUND`, `IDEMPOTENCY_KEY_REUSED`.
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// With `VALIDATION_ERROR`: the offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `BROKER_UNAVAILABLE`: the transaction that was recorded and will be sent later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// The answer to `POST /transactions/batch`: one result per item, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchResults {
    pub items: Vec<BatchItemResult>,
}

/// What one item of a batch got: the status and body it would have got sent alone to
/// `POST /transactions`, the body unwrapped (`transaction` for 202 and 200, `error` otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchItemResult {
    /// The item's place in the request's `items`, from 0.
    pub index: usize,
    /// 202 new and PENDING, 200 a repeat of an earlier request with the same idempotencyKey,
    /// or the 4xx/503 of the error.
    #[schema(example = 202)]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// A registered webhook, as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(example = "https://hooks.example.com/ledgerflow")]
    pub url: String,
    /// The event types it receives.
    #[schema(example = json!(["transaction.completed", "transaction.failed"]))]
    pub types: Vec<String>,
    /// Only events naming one of these accounts; null: every event its owner may see.
    pub accounts: Option<Vec<String>>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A webhook just registered: the only answer that shows its signing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCreated {
    #[schema(format = Uuid)]
    pub id: String,
    pub url: String,
    pub types: Vec<String>,
    pub accounts: Option<Vec<String>>,
    /// The HMAC-SHA256 key of its `LedgerFlow-Signature` headers (`whsec_` and 64 hex
    /// digits). Shown once: keep it.
    #[schema(example = "whsec_5f0c…")]
    pub secret: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookBody>,
}

/// One try at sending an event to a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttemptBody {
    #[schema(format = DateTime)]
    pub at: String,
    /// The endpoint's HTTP status, when it answered.
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    /// Why the attempt did not succeed, beyond its status (a timeout, a refused connection,
    /// an address the endpoint may not have).
    pub error: Option<String>,
}

/// The delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryBody {
    pub event_id: i64,
    /// `PENDING` (to be tried, or tried again at `nextAttemptAt`), `DELIVERED` or `FAILED`
    /// (given up; `POST /api/events/{id}/redeliver` queues it again).
    #[schema(example = "DELIVERED")]
    pub status: String,
    /// The latest attempts (at most 100), oldest first.
    pub attempts: Vec<DeliveryAttemptBody>,
    /// While PENDING: when the next attempt is due.
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryList {
    /// Newest event first.
    pub deliveries: Vec<DeliveryBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The answer to `POST /api/events/{id}/redeliver`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedeliveryBody {
    pub event_id: i64,
    /// The caller's webhooks the event is queued for again (those whose types and accounts
    /// match it).
    pub webhook_ids: Vec<String>,
}
