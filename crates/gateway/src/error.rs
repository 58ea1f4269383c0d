//! The one place where errors become HTTP responses.
//!
//! Every failure a client can see is an [`ApiError`] and renders as
//! `{"error":{"code":"UPPER_SNAKE","message":"...","field":"..."}}` (`field` only for
//! validation errors). Internal details are logged, never sent.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ledgerflow_domain::{Currency, DomainError, LimitRefusal, MAX_ACCOUNTS_PER_USER, NotReversible, StatusRefusal};
use ledgerflow_messaging::MessagingError;
use ledgerflow_store::StoreError;
use tracing::error;

pub use ledgerflow_api::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing or unacceptable.
    #[error("{0}")]
    Validation(#[from] DomainError),
    /// The body is not JSON, or not a JSON object.
    #[error("{0}")]
    InvalidJson(String),
    /// A body field or query parameter the endpoint does not take; `takes` lists those it does.
    #[error("{place} `{name}` is not one this endpoint takes ({})", listed(.takes))]
    Unexpected { place: &'static str, name: String, takes: &'static [&'static str] },
    #[error("query parameter `{0}` is given more than once")]
    Repeated(String),
    /// A query parameter whose name is the client's (`metadata.<key>`) refused: `reason` is
    /// the domain's.
    #[error("query parameter `{name}`: {reason}")]
    BadParameter { name: String, reason: String },
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive in time (seconds).
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(f64),
    #[error("authentication required")]
    Unauthenticated,
    #[error("email or password is incorrect")]
    InvalidCredentials,
    /// Too many failed sign-ins for this email; it may try again after this many seconds.
    /// A signed-in user gave the wrong current password (to change it).
    #[error("currentPassword is incorrect")]
    WrongPassword,
    #[error("too many failed sign-ins for this email; try again in {0} s")]
    TooManyAttempts(u64),
    /// This client (its address) already has its share of sign-ins and sign-ups in progress.
    #[error("too many sign-ins and sign-ups from this address at once; try again")]
    TooManyRequests,
    /// Authenticated, but not allowed this; the message says who is.
    #[error("{0}")]
    Forbidden(&'static str),
    /// `code` is e.g. `ACCOUNT_NOT_FOUND`; `what` names the thing for the message.
    #[error("{what} not found")]
    NotFound { code: &'static str, what: &'static str },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The two accounts hold different currencies; a transfer moves one currency.
    #[error("fromAccount holds {from} and toAccount holds {to}; a transfer moves one currency")]
    CurrencyMismatch { from: Currency, to: Currency },
    /// The request names a currency the accounts do not hold.
    #[error("the request names {asked} but the accounts hold {held}")]
    CurrencyNotHeld { asked: Currency, held: Currency },
    #[error("a user may own at most {MAX_ACCOUNTS_PER_USER} accounts")]
    AccountLimitReached,
    /// The account may not take the status asked for.
    #[error("{0}")]
    StatusRefused(#[from] StatusRefusal),
    #[error("{0}")]
    LimitRefused(#[from] LimitRefusal),
    #[error("idempotencyKey was already used with a different request")]
    IdempotencyKeyReused,
    #[error("the transaction is already reversed, or a reversal of it is in progress")]
    AlreadyReversed,
    #[error("the hold is {0}, not HELD: it can no longer be posted or voided")]
    HoldNotHeld(ledgerflow_domain::TransactionStatus),
    #[error("the hold expired at {0}")]
    HoldExpired(String),
    #[error("amount {asked} exceeds the held amount of {held}")]
    AmountExceedsHold { asked: i64, held: i64 },
    /// The transaction cannot be reversed (not COMPLETED, or itself a reversal).
    #[error("{0}")]
    NotReversible(NotReversible),
    /// The transfer is recorded but could not be handed to the broker yet; it will be.
    #[error(
        "transaction {0} is recorded but the message broker is unavailable; it will be sent automatically, and retrying with the same idempotencyKey is safe"
    )]
    PublishDeferred(ledgerflow_domain::TransactionId),
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("a user may have at most {} webhooks", crate::routes::MAX_WEBHOOKS_PER_USER)]
    WebhookLimitReached,
    #[error("internal error")]
    Internal,
}

/// Why a request's named values (its body's fields, or its query string's parameters) did
/// not deserialise into its request type: the error of `crate::de`, structured so that each
/// kind becomes its `ApiError` here ([`ApiError::from_values`]) without reading messages.
#[derive(Debug, PartialEq, Eq)]
pub enum FieldError {
    /// A name the request type does not have; `takes` are those it has.
    Unknown { name: String, takes: &'static [&'static str] },
    /// A field absent (or `null`), or refused by its type (`reason` from the domain).
    Domain(DomainError),
    /// Anything else serde reports: none of it names a field, and none of it happens to the
    /// request types of this crate (flat structs), so it is a bug, not the client's.
    Other(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { name, takes } => write!(f, "`{name}` is not one of {}", listed(takes)),
            Self::Domain(e) => e.fmt(f),
            Self::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for FieldError {}

impl serde::de::Error for FieldError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self::Other(message.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        Self::Domain(DomainError::Missing { field })
    }

    fn unknown_field(name: &str, takes: &'static [&'static str]) -> Self {
        Self::Unknown { name: name.to_owned(), takes }
    }
}

/// The names an endpoint takes, for a message.
fn listed(names: &[&str]) -> String {
    if names.is_empty() { "it takes none".to_owned() } else { names.join(", ") }
}

impl ApiError {
    pub fn account_not_found() -> Self {
        Self::NotFound { code: "ACCOUNT_NOT_FOUND", what: "account" }
    }

    pub fn transaction_not_found() -> Self {
        Self::NotFound { code: "TRANSACTION_NOT_FOUND", what: "transaction" }
    }

    /// What a request's body fields (`place` is `"field"`) or query parameters (`"query
    /// parameter"`) failed with.
    pub fn from_values(place: &'static str, e: FieldError) -> Self {
        match e {
            FieldError::Unknown { name, takes } => Self::Unexpected { place, name, takes },
            FieldError::Domain(e) => Self::Validation(e),
            FieldError::Other(message) => {
                error!(error = %message, place, "a request type the request reader cannot read");
                Self::Internal
            }
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Validation(_) | Self::Unexpected { .. } | Self::Repeated(_) | Self::BadParameter { .. } => {
                (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
            }
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "INVALID_JSON"),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            Self::WrongPassword => (StatusCode::FORBIDDEN, "WRONG_PASSWORD"),
            Self::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_ATTEMPTS"),
            Self::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            Self::EmailTaken => (StatusCode::CONFLICT, "EMAIL_TAKEN"),
            Self::CurrencyMismatch { .. } | Self::CurrencyNotHeld { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "CURRENCY_MISMATCH")
            }
            Self::AccountLimitReached => (StatusCode::CONFLICT, "ACCOUNT_LIMIT_REACHED"),
            Self::StatusRefused(StatusRefusal::NotEmpty { .. } | StatusRefusal::OpenHolds) => {
                (StatusCode::CONFLICT, "ACCOUNT_NOT_EMPTY")
            }
            Self::StatusRefused(StatusRefusal::Closed) => (StatusCode::CONFLICT, "ACCOUNT_CLOSED"),
            Self::LimitRefused(LimitRefusal::BelowBalance { .. }) => (StatusCode::CONFLICT, "LIMIT_BELOW_BALANCE"),
            Self::IdempotencyKeyReused => (StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED"),
            Self::AlreadyReversed => (StatusCode::CONFLICT, "ALREADY_REVERSED"),
            Self::HoldNotHeld(_) => (StatusCode::CONFLICT, "HOLD_NOT_HELD"),
            Self::HoldExpired(_) => (StatusCode::CONFLICT, "HOLD_EXPIRED"),
            Self::AmountExceedsHold { .. } => (StatusCode::BAD_REQUEST, "AMOUNT_EXCEEDS_HOLD"),
            Self::NotReversible(_) => (StatusCode::CONFLICT, "NOT_REVERSIBLE"),
            Self::PublishDeferred(_) => (StatusCode::SERVICE_UNAVAILABLE, "BROKER_UNAVAILABLE"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            Self::WebhookLimitReached => (StatusCode::CONFLICT, "WEBHOOK_LIMIT_REACHED"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }
}

impl ApiError {
    /// The status and the error object this error answers with: a whole response's, or one
    /// item's of a batch.
    pub fn detail(&self) -> (StatusCode, ErrorDetail) {
        let (status, code) = self.status_and_code();
        let detail = ErrorDetail {
            code: code.to_owned(),
            message: self.to_string(),
            field: match self {
                Self::Validation(e) => Some(e.field().to_owned()),
                Self::Unexpected { name, .. } | Self::Repeated(name) | Self::BadParameter { name, .. } => {
                    Some(name.clone())
                }
                _ => None,
            },
            transaction_id: match self {
                Self::PublishDeferred(id) => Some(id.to_string()),
                _ => None,
            },
        };
        (status, detail)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::Database(_) | StoreError::Contention { .. } => {
                error!(error = %e, "database unavailable");
                Self::Unavailable("the database is unavailable, try again")
            }
            StoreError::Corrupt { .. } | StoreError::Write { .. } => {
                error!(error = %e, "corrupt stored data or refused write");
                Self::Internal
            }
        }
    }
}

impl From<MessagingError> for ApiError {
    fn from(e: MessagingError) -> Self {
        error!(error = %e, "message broker unavailable");
        Self::Unavailable("the message broker is unavailable, try again")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = self.detail();
        let body = ErrorBody { error };
        let retry_after = match self {
            Self::TooManyAttempts(secs) => Some(HeaderValue::from(secs)),
            // Its own earlier checks end within a second or so.
            Self::TooManyRequests => Some(HeaderValue::from_static("1")),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(HeaderValue::from_static("1")),
            _ => None,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(after) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, after);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // The body was not read (whole): what is left of it on the connection would be taken
        // for the next request, so the connection ends with this answer.
        if matches!(status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT) {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
