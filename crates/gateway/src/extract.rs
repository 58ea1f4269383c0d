//! Request extractors whose failures are [`ApiError`]s, so even a malformed request gets the
//! standard error body.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use ledgerflow_domain::DomainError;
use ledgerflow_domain::fields::{ObjectError, parse_object};
use serde_json::{Map, Value};

use crate::AppState;
use crate::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON object body. An empty body counts as `{}` so that endpoints whose fields are all
/// optional accept a bare POST. Fields are then read one by one into domain types, which
/// gives a precise error for each bad field instead of a generic deserialisation failure.
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        let has_content_type = req.headers().contains_key(header::CONTENT_TYPE);
        // The whole body within the deadline, not merely some bytes now and then: a client
        // trickling one byte at a time would otherwise hold its request, and a graceful
        // shutdown waiting for it, for as long as it liked.
        let deadline = state.config.body_deadline;
        let read = tokio::time::timeout(deadline, Bytes::from_request(req, state)).await;
        let bytes = read.map_err(|_| ApiError::RequestTimeout(deadline.as_secs_f64()))?.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::PayloadTooLarge(MAX_BODY_BYTES)
            }
            other => ApiError::InvalidJson(other.body_text()),
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        if has_content_type && !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        match parse_object(&bytes) {
            Ok(map) => Ok(Self(map)),
            Err(ObjectError::NotAnObject) => Err(ApiError::InvalidJson("request body must be a JSON object".into())),
            Err(e) => Err(ApiError::InvalidJson(format!("request body is {e}"))),
        }
    }
}

/// Query-string parameters as plain strings; handlers parse each into a domain type.
pub struct QueryMap(pub std::collections::HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(map)| Self(map))
            .map_err(|e| ApiError::Validation(DomainError::Invalid { field: "query", reason: e.body_text() }))
    }
}

impl QueryMap {
    /// `limit`: 1..=100, default 20.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.0.get("limit") {
            None => Ok(20),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=ledgerflow_store::MAX_PAGE).contains(&n) => Ok(n),
                _ => Err(DomainError::Invalid {
                    field: "limit",
                    reason: format!("must be an integer from 1 to {}", ledgerflow_store::MAX_PAGE),
                }
                .into()),
            },
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// The request's `x-request-id` (set by the request-id layer when the client sent none).
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(|v| v.chars().take(128).collect());
        Ok(Self(id))
    }
}
