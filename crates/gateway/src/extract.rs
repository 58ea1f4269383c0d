//! Request extractors whose failures are [`ApiError`]s, so even a malformed request gets the
//! standard error body.

use std::collections::HashMap;
use std::marker::PhantomData;

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

/// The names a request may use: the fields of its JSON body, or the parameters of its query
/// string. Any other name is refused (400 `VALIDATION_ERROR` naming it): a misspelt
/// `descripton` would otherwise be dropped, a misspelt `acount` filter would list every
/// transaction instead of one account's, and a field meant for another endpoint would look
/// honoured. Implemented by the request types the OpenAPI document describes, and checked
/// against it by a test.
pub trait Names {
    const NAMES: &'static [&'static str];
}

/// A JSON object body whose field names are all in `N::NAMES`, sent as JSON (415 otherwise,
/// a missing `Content-Type` included). An empty body counts as `{}` so that endpoints whose
/// fields are all optional accept a bare POST. Fields are then read
/// one by one into domain types, which gives a precise error for each bad field instead of a
/// generic deserialisation failure.
pub struct JsonObject<N>(pub Map<String, Value>, pub PhantomData<N>);

impl<N: Names> FromRequest<AppState> for JsonObject<N> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json);
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
            return Ok(Self(Map::new(), PhantomData));
        }
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let map = match parse_object(&bytes) {
            Ok(map) => map,
            Err(ObjectError::NotAnObject) => {
                return Err(ApiError::InvalidJson("request body must be a JSON object".into()));
            }
            Err(e) => return Err(ApiError::InvalidJson(format!("request body is {e}"))),
        };
        refuse_unknown::<N>("field", map.keys())?;
        Ok(Self(map, PhantomData))
    }
}

/// Whether a `Content-Type` says JSON in UTF-8: `application/json` or `application/*+json`,
/// with no `charset` or `charset=utf-8` (a body declared in another charset would otherwise be
/// read as UTF-8 regardless).
fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';').map(str::trim);
    let mime = parts.next().unwrap_or_default().to_ascii_lowercase();
    let json = mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    json && parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    })
}

fn refuse_unknown<'a, N: Names>(
    place: &'static str,
    mut names: impl Iterator<Item = &'a String>,
) -> Result<(), ApiError> {
    match names.find(|name| !N::NAMES.contains(&name.as_str())) {
        Some(name) => Err(ApiError::Unexpected { place, name: name.clone(), takes: N::NAMES }),
        None => Ok(()),
    }
}

/// Query-string parameters as plain strings, each named in `N::NAMES` and given at most once
/// (`?wait=1&wait=30` has no one meaning); handlers parse each into a domain type.
pub struct QueryMap<N>(HashMap<String, String>, PhantomData<N>);

impl<S: Send + Sync, N: Names> FromRequestParts<S> for QueryMap<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::Validation(DomainError::Invalid { field: "query", reason: e.body_text() }))?;
        refuse_unknown::<N>("query parameter", pairs.iter().map(|(name, _)| name))?;
        let mut map = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if map.contains_key(&name) {
                return Err(ApiError::Repeated(name));
            }
            map.insert(name, value);
        }
        Ok(Self(map, PhantomData))
    }
}

impl<N> QueryMap<N> {
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

/// Middleware, before the request-id layer: drops a client's `x-request-id` that is not a
/// [`ledgerflow_domain::RequestId`], so that a fresh one replaces it. The id is echoed,
/// logged with every line of the request and carried into the command: a client's 60 KB of
/// it would be written out again each time.
pub async fn drop_unfit_request_id(mut req: Request) -> Request {
    let fit = |v: &header::HeaderValue| v.to_str().is_ok_and(|s| s.parse::<ledgerflow_domain::RequestId>().is_ok());
    if req.headers().get(REQUEST_ID).is_some_and(|v| !fit(v)) {
        req.headers_mut().remove(REQUEST_ID);
    }
    req
}

const REQUEST_ID: &str = "x-request-id";

/// The request's `x-request-id` (set by the request-id layer when the client sent none).
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Self(id))
    }
}
