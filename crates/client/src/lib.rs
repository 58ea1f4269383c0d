//! A typed Rust client for LedgerFlow's HTTP API, for services that move money through a
//! gateway (and for LedgerFlow's own tests and bench). One method per endpoint; answers are
//! `ledgerflow_api`'s types, the very ones the gateway sends, and every refusal is an
//! [`Error::Api`] carrying the gateway's `{code, message}`.
//!
//! ```no_run
//! # async fn example() -> Result<(), ledgerflow_client::Error> {
//! use ledgerflow_client::{Client, Transfer};
//! let gateway = Client::new("http://127.0.0.1:8080");
//! let alice = gateway.login("alice@example.com", "correct horse battery").await?;
//! let alice = gateway.signed_in(&alice.token);
//! let accepted = alice
//!     .transfer(&Transfer { from: "…", to: "…", amount: 2_500, idempotency_key: "rent-2026-11", description: None })
//!     .await?;
//! let done = alice.wait(&accepted.transaction.id, 30).await?;
//! assert_eq!(done.status, "COMPLETED");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

pub use ledgerflow_api::{
    AccountBody, AccountList, AuthBody, BalanceBody, EntryBody, EntryList, ErrorBody, ErrorDetail, StatementBody,
    StatusBody, TransactionBody, TransactionEnvelope, TransactionList, UserBody,
};
pub use ledgerflow_api::{BatchItemResult, BatchResults, EventAccountBody, EventBody, EventList};
pub use ledgerflow_api::{
    DeliveryAttemptBody, DeliveryBody, DeliveryList, RedeliveryBody, WebhookBody, WebhookCreated, WebhookList,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Per-request limit unless [`Client::with_http`] says otherwise: longer than the longest
/// long poll (30 s), so only a hang times out.
const TIMEOUT: Duration = Duration::from_secs(40);

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway refused the request (any 4xx or 5xx), saying why.
    #[error("HTTP {status} {}: {}", .body.error.code, .body.error.message)]
    Api { status: u16, body: ErrorBody },
    /// The request did not get an answer (connection refused, timeout…).
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that is not what the API documents.
    #[error("unexpected answer (HTTP {status}): {detail}")]
    Unexpected { status: u16, detail: String },
}

impl Error {
    /// The gateway's error code (`INSUFFICIENT_FUNDS`, `IDEMPOTENCY_KEY_REUSED`…), if it
    /// answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }

    /// The HTTP status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Unexpected { status, .. } => Some(*status),
            Error::Transport(e) => e.status().map(|s| s.as_u16()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A transfer to submit. Amounts are integer minor units (cents).
#[derive(Debug, Clone)]
pub struct Transfer<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub amount: i64,
    pub idempotency_key: &'a str,
    pub description: Option<&'a str>,
}

/// Filters of `GET /transactions`, all optional and ANDed; `Default` lists everything the
/// caller may see. Times are RFC 3339 (`createdFrom` inclusive, `createdTo` exclusive),
/// amounts minor units (both bounds inclusive).
#[derive(Debug, Clone, Default)]
pub struct Search<'a> {
    pub account: Option<&'a str>,
    pub status: Option<&'a str>,
    pub kind: Option<&'a str>,
    /// Each key must hold exactly this value (`metadata.<key>=<value>`).
    pub metadata: Vec<(&'a str, &'a str)>,
    pub created_from: Option<&'a str>,
    pub created_to: Option<&'a str>,
    pub min_amount: Option<i64>,
    pub max_amount: Option<i64>,
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<&'a str>,
}

impl Search<'_> {
    /// The query string, encoded.
    fn query(&self) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut put = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                pairs.push((name.to_owned(), value));
            }
        };
        put("account", self.account.map(str::to_owned));
        put("status", self.status.map(str::to_owned));
        put("kind", self.kind.map(str::to_owned));
        put("createdFrom", self.created_from.map(str::to_owned));
        put("createdTo", self.created_to.map(str::to_owned));
        put("minAmount", self.min_amount.map(|a| a.to_string()));
        put("maxAmount", self.max_amount.map(|a| a.to_string()));
        put("limit", self.limit.map(|l| l.to_string()));
        put("cursor", self.cursor.map(str::to_owned));
        for (key, value) in &self.metadata {
            pairs.push((format!("metadata.{key}"), (*value).to_owned()));
        }
        let mut url = reqwest::Url::parse("http://query.invalid/").expect("a constant URL");
        url.query_pairs_mut().extend_pairs(pairs);
        url.query().unwrap_or_default().to_owned()
    }
}

impl Transfer<'_> {
    /// The transfer as a `POST /transactions` body, e.g. for an item of [`Client::batch`].
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "fromAccount": self.from,
            "toAccount": self.to,
            "amount": self.amount,
            "idempotencyKey": self.idempotency_key,
        });
        if let Some(description) = self.description {
            body["description"] = json!(description);
        }
        body
    }
}

/// A change of an account's limits, in minor units; `None`: left as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub overdraft_limit: Option<i64>,
    /// `Some(None)` removes the ceiling.
    pub max_balance: Option<Option<i64>>,
}

/// Which page of which statement: `from` and `to` are RFC 3339 instants (`from` inclusive,
/// `to` exclusive); `limit` and `cursor` as for any list, `None` for the defaults.
#[derive(Debug, Clone, Copy)]
pub struct StatementQuery<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub limit: Option<i64>,
    pub cursor: Option<&'a str>,
}

/// Which events: after an id (0: from the oldest kept), of some types (comma-separated), of
/// one account; `None` for the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventQuery<'a> {
    pub after: i64,
    pub types: Option<&'a str>,
    pub account: Option<&'a str>,
    pub limit: Option<i64>,
}

/// `path?name=value&…`, each pair form-encoded (an offset's `+` would otherwise be a space).
fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://query.invalid/").expect("a constant URL");
    url.query_pairs_mut().extend_pairs(pairs);
    format!("{path}?{}", url.query().unwrap_or_default())
}

/// A money movement the gateway took: new (202, PENDING) or a repeat of an earlier request
/// under the same idempotency key (200, in its current state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub repeat: bool,
    pub transaction: TransactionBody,
}

/// A client of one gateway, signed in or not. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the gateway at `base` (e.g. `http://127.0.0.1:8080`), not signed in.
    ///
    /// # Panics
    /// If the TLS backend cannot be set up (reqwest's `Client::new` likewise).
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().expect("an HTTP client");
        Self::with_http(http, base)
    }

    /// A client that sends through `http` (its pool, timeouts and proxies).
    pub fn with_http(http: reqwest::Client, base: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_owned();
        Self { http, base, token: None }
    }

    /// The same gateway, as the user whose token this is.
    pub fn signed_in(&self, token: &str) -> Self {
        Self { token: Some(token.to_owned()), ..self.clone() }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the status and JSON answer, whatever the status. For what
    /// the typed methods do not cover (and for tests of malformed requests).
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok((status, value))
    }

    /// Sends a request and reads a success into `T`; a refusal becomes [`Error::Api`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, T)> {
        let (status, value) = self.send(method, path, body).await?;
        let unexpected = |detail: String| Error::Unexpected { status: status.as_u16(), detail };
        if !status.is_success() {
            return Err(match serde_json::from_value::<ErrorBody>(value.clone()) {
                Ok(body) => Error::Api { status: status.as_u16(), body },
                Err(_) => unexpected(value.to_string()),
            });
        }
        let answer = serde_json::from_value(value).map_err(|e| unexpected(e.to_string()))?;
        Ok((status, answer))
    }

    async fn accepted(&self, path: &str, body: &Value) -> Result<Accepted> {
        let (status, envelope) = self.call::<TransactionEnvelope>(Method::POST, path, Some(body)).await?;
        Ok(Accepted { repeat: status == StatusCode::OK, transaction: envelope.transaction })
    }

    /// `POST /api/auth/register`: a new USER.
    pub async fn register(&self, email: &str, password: &str, name: Option<&str>) -> Result<AuthBody> {
        let mut body = json!({ "email": email, "password": password });
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        Ok(self.call(Method::POST, "/api/auth/register", Some(&body)).await?.1)
    }

    /// `POST /api/auth/login`.
    pub async fn login(&self, email: &str, password: &str) -> Result<AuthBody> {
        let body = json!({ "email": email, "password": password });
        Ok(self.call(Method::POST, "/api/auth/login", Some(&body)).await?.1)
    }

    /// `POST /api/accounts`: an account in `currency` (the gateway's default, USD, if `None`).
    pub async fn open_account(&self, currency: Option<&str>) -> Result<AccountBody> {
        let body = currency.map_or_else(|| json!({}), |c| json!({ "currency": c }));
        Ok(self.call(Method::POST, "/api/accounts", Some(&body)).await?.1)
    }

    /// `POST /api/accounts` with the owner's labels (at most 16 keys).
    pub async fn open_account_with_metadata(
        &self,
        currency: Option<&str>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<AccountBody> {
        let mut body = json!({ "metadata": metadata });
        if let Some(currency) = currency {
            body["currency"] = json!(currency);
        }
        Ok(self.call(Method::POST, "/api/accounts", Some(&body)).await?.1)
    }

    /// `PATCH /api/accounts/{id}/metadata` (owner or SYSTEM): replaces the account's labels
    /// whole (an empty map removes them).
    pub async fn set_account_metadata(
        &self,
        account: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<AccountBody> {
        let body = json!({ "metadata": metadata });
        Ok(self.call(Method::PATCH, &format!("/api/accounts/{account}/metadata"), Some(&body)).await?.1)
    }

    /// `GET /api/accounts/{id}/balance`.
    pub async fn balance(&self, account: &str) -> Result<BalanceBody> {
        Ok(self.call(Method::GET, &format!("/api/accounts/{account}/balance"), None).await?.1)
    }

    /// `GET /api/accounts/{id}/balance?asOf=`: the balance as of an RFC 3339 instant.
    pub async fn balance_as_of(&self, account: &str, as_of: &str) -> Result<BalanceBody> {
        let path = with_query(&format!("/api/accounts/{account}/balance"), &[("asOf", as_of)]);
        Ok(self.call(Method::GET, &path, None).await?.1)
    }

    /// `GET /api/accounts/{id}/statement`: one page of the statement over a window.
    pub async fn statement(&self, account: &str, query: &StatementQuery<'_>) -> Result<StatementBody> {
        let limit = query.limit.map(|l| l.to_string());
        let mut pairs = vec![("from", query.from), ("to", query.to)];
        pairs.extend(limit.as_deref().map(|l| ("limit", l)));
        pairs.extend(query.cursor.map(|c| ("cursor", c)));
        let path = with_query(&format!("/api/accounts/{account}/statement"), &pairs);
        Ok(self.call(Method::GET, &path, None).await?.1)
    }

    /// `GET /api/events`: a page of the events the caller may see, oldest first.
    pub async fn events(&self, query: &EventQuery<'_>) -> Result<EventList> {
        let (after, limit) = (query.after.to_string(), query.limit.map(|l| l.to_string()));
        let mut pairs = vec![("after", after.as_str())];
        pairs.extend(query.types.map(|t| ("types", t)));
        pairs.extend(query.account.map(|a| ("account", a)));
        pairs.extend(limit.as_deref().map(|l| ("limit", l)));
        Ok(self.call(Method::GET, &with_query("/api/events", &pairs), None).await?.1)
    }

    /// `GET /api/accounts/{id}/entries`: the newest entries first.
    pub async fn entries(&self, account: &str) -> Result<EntryList> {
        Ok(self.call(Method::GET, &format!("/api/accounts/{account}/entries"), None).await?.1)
    }

    /// `PATCH /api/accounts/{id}/limits` (SYSTEM only): a field left `None` keeps its value;
    /// `max_balance: Some(None)` removes the ceiling.
    pub async fn set_limits(&self, account: &str, limits: &Limits) -> Result<AccountBody> {
        let mut body = json!({});
        if let Some(overdraft) = limits.overdraft_limit {
            body["overdraftLimit"] = json!(overdraft);
        }
        if let Some(max) = limits.max_balance {
            body["maxBalance"] = json!(max);
        }
        Ok(self.call(Method::PATCH, &format!("/api/accounts/{account}/limits"), Some(&body)).await?.1)
    }

    /// `POST /transactions`.
    pub async fn transfer(&self, transfer: &Transfer<'_>) -> Result<Accepted> {
        self.accepted("/transactions", &transfer.to_json()).await
    }

    /// `POST /transactions` with `legs`: a JOURNAL, every leg committed or none. Each leg is
    /// `(fromAccount, toAccount, amount)`; its currency is its accounts'.
    pub async fn journal(
        &self,
        legs: &[(&str, &str, i64)],
        idempotency_key: &str,
        description: Option<&str>,
    ) -> Result<Accepted> {
        let legs: Vec<Value> = legs
            .iter()
            .map(|(from, to, amount)| json!({"fromAccount": from, "toAccount": to, "amount": amount}))
            .collect();
        let mut body = json!({ "legs": legs, "idempotencyKey": idempotency_key });
        if let Some(description) = description {
            body["description"] = json!(description);
        }
        self.accepted("/transactions", &body).await
    }

    /// `POST /transactions` with the client's labels (part of the request under its key).
    pub async fn transfer_with_metadata(
        &self,
        transfer: &Transfer<'_>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Accepted> {
        let mut body = transfer.to_json();
        body["metadata"] = json!(metadata);
        self.accepted("/transactions", &body).await
    }

    /// `POST /transactions/batch`: up to 1,000 `POST /transactions` bodies (transfers, holds)
    /// at once, each answered in order as it would be alone; the batch succeeds as a whole
    /// even when some of its items are refused (see each item's `status`).
    pub async fn batch(&self, items: &[Value]) -> Result<BatchResults> {
        let body = json!({ "items": items });
        Ok(self.call(Method::POST, "/transactions/batch", Some(&body)).await?.1)
    }

    /// `POST /transactions` with `hold`: reserves the transfer's amount for `timeout_seconds`
    /// instead of moving it (a HOLD, HELD once the worker decides).
    pub async fn hold(&self, transfer: &Transfer<'_>, timeout_seconds: u32) -> Result<Accepted> {
        let mut body = transfer.to_json();
        body["hold"] = json!({ "timeoutSeconds": timeout_seconds });
        self.accepted("/transactions", &body).await
    }

    /// `POST /transactions/{id}/post`: moves `amount` of a HELD hold (all of it if `None`)
    /// and releases the rest, as a new POST_HOLD transaction.
    pub async fn post_hold(&self, hold: &str, idempotency_key: &str, amount: Option<i64>) -> Result<Accepted> {
        let mut body = json!({ "idempotencyKey": idempotency_key });
        if let Some(amount) = amount {
            body["amount"] = json!(amount);
        }
        self.accepted(&format!("/transactions/{hold}/post"), &body).await
    }

    /// `POST /transactions/{id}/void`: releases a HELD hold, as a new VOID_HOLD transaction.
    pub async fn void_hold(&self, hold: &str, idempotency_key: &str) -> Result<Accepted> {
        let body = json!({ "idempotencyKey": idempotency_key });
        self.accepted(&format!("/transactions/{hold}/void"), &body).await
    }

    /// `POST /transactions/system/initial-funds` (SYSTEM only): money issued into `to`.
    pub async fn initial_funds(&self, to: &str, amount: i64, idempotency_key: &str) -> Result<Accepted> {
        let body = json!({ "toAccount": to, "amount": amount, "idempotencyKey": idempotency_key });
        self.accepted("/transactions/system/initial-funds", &body).await
    }

    /// `POST /transactions/{id}/reverse` (the receiver's owner or SYSTEM).
    pub async fn reverse(&self, id: &str, idempotency_key: &str, reason: Option<&str>) -> Result<Accepted> {
        let mut body = json!({ "idempotencyKey": idempotency_key });
        if let Some(reason) = reason {
            body["reason"] = json!(reason);
        }
        self.accepted(&format!("/transactions/{id}/reverse"), &body).await
    }

    /// `GET /transactions/{id}`: as it stands now.
    pub async fn transaction(&self, id: &str) -> Result<TransactionBody> {
        let (_, envelope) = self.call::<TransactionEnvelope>(Method::GET, &format!("/transactions/{id}"), None).await?;
        Ok(envelope.transaction)
    }

    /// `GET /transactions/{id}?wait=N`: as soon as it is no longer PENDING, or after
    /// `seconds` (at most 30) as it then stands.
    pub async fn wait(&self, id: &str, seconds: u32) -> Result<TransactionBody> {
        let path = format!("/transactions/{id}?wait={}", seconds.min(30));
        let (_, envelope) = self.call::<TransactionEnvelope>(Method::GET, &path, None).await?;
        Ok(envelope.transaction)
    }

    /// `GET /transactions/by-key/{idempotencyKey}`: the caller's own transaction under that
    /// key, as it stands (404 `TRANSACTION_NOT_FOUND` if it recorded none).
    pub async fn transaction_by_key(&self, idempotency_key: &str) -> Result<TransactionBody> {
        let mut url = reqwest::Url::parse("http://path.invalid/transactions/by-key").expect("a constant URL");
        url.path_segments_mut()
            .map_err(|()| Error::Unexpected { status: 0, detail: "a URL".into() })?
            .push(idempotency_key);
        let (_, envelope) = self.call::<TransactionEnvelope>(Method::GET, url.path(), None).await?;
        Ok(envelope.transaction)
    }

    /// `GET /transactions` with filters: one page, newest first.
    pub async fn search_transactions(&self, search: &Search<'_>) -> Result<TransactionList> {
        Ok(self.call(Method::GET, &format!("/transactions?{}", search.query()), None).await?.1)
    }

    /// `GET /readyz`: whether the gateway can reach its database and broker now.
    pub async fn ready(&self) -> bool {
        self.call::<StatusBody>(Method::GET, "/readyz", None).await.is_ok()
    }

    /// `GET /transactions`: the first page of the signed-in user's transactions, newest first.
    pub async fn transactions(&self) -> Result<TransactionList> {
        Ok(self.call(Method::GET, "/transactions", None).await?.1)
    }
}

/// Webhooks ([docs/api.md](../../docs/api.md#webhooks)).
impl Client {
    /// `POST /api/webhooks`: the answer carries the signing secret, shown this once.
    pub async fn register_webhook(
        &self,
        url: &str,
        types: &[&str],
        accounts: Option<&[&str]>,
    ) -> Result<WebhookCreated> {
        let mut body = json!({ "url": url, "types": types });
        if let Some(accounts) = accounts {
            body["accounts"] = json!(accounts);
        }
        Ok(self.call(Method::POST, "/api/webhooks", Some(&body)).await?.1)
    }

    /// `GET /api/webhooks`: the caller's own, without secrets.
    pub async fn webhooks(&self) -> Result<WebhookList> {
        Ok(self.call(Method::GET, "/api/webhooks", None).await?.1)
    }

    /// `GET /api/webhooks/{id}`.
    pub async fn webhook(&self, id: &str) -> Result<WebhookBody> {
        Ok(self.call(Method::GET, &format!("/api/webhooks/{id}"), None).await?.1)
    }

    /// `DELETE /api/webhooks/{id}`.
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.call::<Value>(Method::DELETE, &format!("/api/webhooks/{id}"), None).await.map(|_| ())
    }

    /// `GET /api/webhooks/{id}/deliveries`: the newest page, newest event first.
    pub async fn webhook_deliveries(&self, id: &str) -> Result<DeliveryList> {
        Ok(self.call(Method::GET, &format!("/api/webhooks/{id}/deliveries"), None).await?.1)
    }

    /// `POST /api/events/{id}/redeliver`: the caller's webhooks the event is queued for again.
    pub async fn redeliver(&self, event_id: i64) -> Result<RedeliveryBody> {
        Ok(self.call(Method::POST, &format!("/api/events/{event_id}/redeliver"), Some(&json!({}))).await?.1)
    }
}
