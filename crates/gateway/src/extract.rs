//! Request extractors whose failures are [`ApiError`]s, so even a malformed request gets the
//! standard error body.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use ledgerflow_domain::DomainError;
use ledgerflow_domain::fields::{ObjectError, parse_object};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::AppState;
use crate::de::from_values;
use crate::error::{ApiError, ApiResult, FieldError};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON object body read into the request type `T` (see `requests` and `de`), sent as JSON
/// (415 otherwise, a missing `Content-Type` included). An empty body counts as `{}` so that
/// endpoints whose fields are all optional accept a bare POST.
///
/// A name `T` does not have is refused at once (400 `VALIDATION_ERROR` naming it): a misspelt
/// `descripton` would otherwise be dropped, and a field meant for another endpoint would look
/// honoured. A missing or bad field is reported when the handler [reads](Body::read) the
/// body, so that what it checks first (the caller's role, the id in the path) is reported
/// first.
pub struct Body<T>(ApiResult<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (is_json, bytes) = receive(req, state, MAX_BODY_BYTES).await?;
        Self::from_bytes(is_json, &bytes)
    }
}

/// A request's whole body, of at most `limit` bytes (the route's `DefaultBodyLimit` must
/// admit as much), and whether its `Content-Type` says JSON.
pub(crate) async fn receive(req: Request, state: &AppState, limit: usize) -> Result<(bool, Bytes), ApiError> {
    let is_json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json);
    // A body declared too large is refused before waiting for any of it.
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    // The whole body within the deadline, not merely some bytes now and then: a client
    // trickling one byte at a time would otherwise hold its request, and a graceful
    // shutdown waiting for it, for as long as it liked.
    let deadline = state.config.body_deadline;
    let read = tokio::time::timeout(deadline, Bytes::from_request(req, state)).await;
    let bytes = read.map_err(|_| ApiError::RequestTimeout(deadline.as_secs_f64()))?.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => ApiError::PayloadTooLarge(limit),
        other => ApiError::InvalidJson(other.body_text()),
    })?;
    Ok((is_json, bytes))
}

impl<T: DeserializeOwned> Body<T> {
    /// The body once received whole; `is_json` says whether its `Content-Type` is JSON.
    fn from_bytes(is_json: bool, bytes: &[u8]) -> Result<Self, ApiError> {
        // Every request with a body extractor changes state, and only JSON is taken, even
        // when the body is empty: a cross-site HTML form can send a cookie with a form's
        // content type, never with `application/json` (that needs the server's CORS consent).
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return read_into("field", Map::new()).map(Self);
        }
        match parse_object(bytes) {
            Ok(fields) => read_into("field", fields).map(Self),
            Err(ObjectError::NotAnObject) => Err(ApiError::InvalidJson("request body must be a JSON object".into())),
            Err(e) => Err(ApiError::InvalidJson(format!("request body is {e}"))),
        }
    }
}

impl<T> Body<T> {
    /// The request type, or the first of its fields (in its order) missing or refused.
    pub fn read(self) -> ApiResult<T> {
        self.0
    }
}

/// Reads `values` into `T`: `Err` for a name `T` does not have, `Ok(Err)` for a bad value,
/// which the handler reports when it reads it.
pub(crate) fn read_into<T: DeserializeOwned>(
    place: &'static str,
    values: Map<String, Value>,
) -> Result<ApiResult<T>, ApiError> {
    match from_values(values) {
        Ok(read) => Ok(Ok(read)),
        Err(e @ FieldError::Unknown { .. }) => Err(ApiError::from_values(place, e)),
        Err(e) => Ok(Err(ApiError::from_values(place, e))),
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

/// The query string read into the request type `T` (see `requests`): each parameter one of
/// `T`'s fields, given at most once (`?wait=1&wait=30` has no one meaning). As with [`Body`],
/// an unknown or repeated name is refused at once (a misspelt `acount` filter would otherwise
/// list every transaction instead of one account's) and a bad value when the handler
/// [reads](Query::read) it.
pub struct Query<T>(ApiResult<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Self::from_pairs(query_pairs(parts, state).await?)
    }
}

/// A request's query string as the name and value pairs given, in order.
pub(crate) async fn query_pairs<S: Send + Sync>(parts: &mut Parts, state: &S) -> ApiResult<Vec<(String, String)>> {
    let axum::extract::Query(pairs) = axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::Validation(DomainError::Invalid { field: "query", reason: e.body_text() }))?;
    Ok(pairs)
}

impl<T: DeserializeOwned> Query<T> {
    pub(crate) fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut values = Map::new();
        let mut repeated = None;
        for (name, value) in pairs {
            if values.contains_key(&name) {
                repeated.get_or_insert(name);
            } else {
                values.insert(name, Value::String(value));
            }
        }
        // An unknown name first, even after a repeated one.
        let read = read_into("query parameter", values)?;
        match repeated {
            Some(name) => Err(ApiError::Repeated(name)),
            None => Ok(Self(read)),
        }
    }
}

impl<T> Query<T> {
    /// The request type, or the first of its parameters (in its order) refused.
    pub fn read(self) -> ApiResult<T> {
        self.0
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

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use ledgerflow_domain::AccountId;
    use serde_json::json;

    use super::*;
    use crate::requests::{
        CreateAccountRequest, EntryCursor, InitialFundsBody, LoginRequest, NoQuery, PageQuery, PasswordChangeRequest,
        RegisterRequest, ReverseBody, StatusRequest, TransactionQuery, TransferBody, WaitQuery,
    };

    /// What a client is answered: status, code, field (or `null`) and message.
    async fn answer(e: ApiError) -> (u16, String, Value, String) {
        let response = e.into_response();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
        let body: Value = serde_json::from_slice(&bytes).expect("a JSON body");
        let error = &body["error"];
        (
            status,
            error["code"].as_str().unwrap().into(),
            error["field"].clone(),
            error["message"].as_str().unwrap().into(),
        )
    }

    /// The answer to a body of `T` sent as JSON (or not), whether the extractor refuses it or
    /// the handler when it reads it.
    async fn body<T: DeserializeOwned>(is_json: bool, bytes: &[u8]) -> (u16, String, Value, String) {
        let e = match Body::<T>::from_bytes(is_json, bytes) {
            Ok(body) => body.read().err().expect("refused when read"),
            Err(e) => e,
        };
        answer(e).await
    }

    async fn json<T: DeserializeOwned>(value: Value) -> (u16, String, Value, String) {
        body::<T>(true, value.to_string().as_bytes()).await
    }

    fn invalid(field: &str, message: &str) -> (u16, String, Value, String) {
        (400, "VALIDATION_ERROR".into(), json!(field), message.into())
    }

    fn invalid_json(message: &str) -> (u16, String, Value, String) {
        (400, "INVALID_JSON".into(), Value::Null, message.into())
    }

    const A: &str = "0190a0a0-0000-7000-8000-000000000001";
    const B: &str = "0190a0a0-0000-7000-8000-000000000002";

    fn transfer(field: &str, value: Value) -> Value {
        let mut body = json!({"fromAccount": A, "toAccount": B, "amount": 10, "idempotencyKey": "k"});
        match value {
            Value::Null => body.as_object_mut().unwrap().remove(field),
            value => body.as_object_mut().unwrap().insert(field.into(), value),
        };
        body
    }

    #[tokio::test]
    async fn a_transfer_is_read_into_domain_values() {
        let body = json!({"fromAccount": A, "toAccount": B, "amount": 10, "idempotencyKey": "k", "currency": "EUR", "description": "rent"});
        let read =
            Body::<TransferBody>::from_bytes(true, body.to_string().as_bytes()).ok().unwrap().read().ok().unwrap();
        let accounts = (read.from_account.map(|a| a.to_string()), read.to_account.map(|a| a.to_string()));
        assert_eq!(accounts, (Some(A.to_owned()), Some(B.to_owned())));
        assert_eq!((read.amount.map(|a| a.minor()), read.idempotency_key.as_str()), (Some(10), "k"));
        assert_eq!(
            (read.currency.map(|c| c.code()), read.description.map(|d| d.as_str().to_owned())),
            (Some("EUR"), Some("rent".into()))
        );
    }

    #[tokio::test]
    async fn each_bad_field_is_named_with_its_message() {
        let cases = [
            ("fromAccount", json!(42), "fromAccount must be a string"),
            ("toAccount", json!("nope"), "toAccount must be a UUID"),
            ("toAccount", json!(B.replace('-', "")), "toAccount must be a UUID"),
            ("amount", json!("100"), "amount must be a JSON integer of minor units"),
            ("amount", json!(0), "amount must be a positive integer of minor units"),
            ("amount", json!(1.5), "amount must be an integer number of minor units, not a fraction"),
            ("amount", json!(1_000_000_000_000_001_i64), "amount must not exceed 1000000000000000 minor units"),
            ("idempotencyKey", json!(""), "idempotencyKey must be 1 to 128 characters"),
            ("idempotencyKey", json!("has space"), "idempotencyKey must contain only visible ASCII characters"),
            ("currency", json!("usd"), "currency must be an ISO 4217 code such as USD or EUR"),
            ("description", json!("d".repeat(501)), "description must be at most 500 characters"),
        ];
        for (field, value, message) in cases {
            assert_eq!(json::<TransferBody>(transfer(field, value.clone())).await, invalid(field, message), "{value}");
        }
        // `null` is as good as absent (a transfer's accounts and amount are required by its
        // handler, as they are optional beside a journal's legs).
        let mut body = json!({"toAccount": A, "idempotencyKey": "k"});
        body["amount"] = Value::Null;
        assert_eq!(json::<InitialFundsBody>(body).await, invalid("amount", "amount is required"));
        // A field in the type's order, then the next.
        let got = json::<TransferBody>(json!({"toAccount": "nope"})).await;
        assert_eq!(got, invalid("toAccount", "toAccount must be a UUID"));
        let got = json::<InitialFundsBody>(json!({"amount": 5, "toAccount": "nope"})).await;
        assert_eq!(got, invalid("toAccount", "toAccount must be a UUID"));
    }

    #[tokio::test]
    async fn an_amount_is_judged_as_written() {
        for (written, message) in [
            ("1e3", "amount must be written as a JSON integer such as 1500, without a decimal point or exponent"),
            ("100.0", "amount must be written as a JSON integer such as 1500, without a decimal point or exponent"),
            ("-0", "amount must be a positive integer of minor units"),
            ("-0.5", "amount must be an integer number of minor units, not a fraction"),
            ("-1e30", "amount must be a positive integer of minor units"),
            ("99999999999999999999999", "amount must not exceed 1000000000000000 minor units"),
            ("18446744073709551615", "amount must not exceed 1000000000000000 minor units"),
        ] {
            let raw = format!(r#"{{"toAccount":"{B}","amount":{written},"idempotencyKey":"k"}}"#);
            assert_eq!(body::<InitialFundsBody>(true, raw.as_bytes()).await, invalid("amount", message), "{written}");
        }
    }

    #[tokio::test]
    async fn a_value_is_named_by_the_field_that_carried_it() {
        // Domain types name their usual field; the request's name is the one reported.
        let got = json::<PasswordChangeRequest>(json!({"currentPassword": "old one", "newPassword": "short"})).await;
        assert_eq!(got, invalid("newPassword", "newPassword must be at least 8 characters"));
        let got = json::<PasswordChangeRequest>(json!({"currentPassword": 7, "newPassword": "long enough"})).await;
        assert_eq!(got, invalid("currentPassword", "currentPassword must be a string"));
        let got = json::<ReverseBody>(json!({"idempotencyKey": "k", "reason": "r".repeat(501)})).await;
        assert_eq!(got, invalid("reason", "reason must be at most 500 characters"));
        let got = json::<RegisterRequest>(json!({"email": 7, "password": "long enough"})).await;
        assert_eq!(got, invalid("email", "email must be a string"));
        let got =
            json::<RegisterRequest>(json!({"email": "a@example.com", "password": "long enough", "name": ""})).await;
        assert_eq!(got, invalid("name", "name must be 1 to 100 printable characters"));
        let got = json::<StatusRequest>(json!({"status": "FROZEN"})).await;
        assert_eq!(got, invalid("status", "status must be one of ACTIVE, SUSPENDED, CLOSED"));
        // A sign-in takes any string: one that is no email merely does not sign in.
        let login = json!({"email": "not-an-email", "password": "short"}).to_string();
        let read = Body::<LoginRequest>::from_bytes(true, login.as_bytes()).ok().unwrap().read().ok().unwrap();
        assert_eq!((read.email.as_str(), read.password.as_str()), ("not-an-email", "short"));
        let got = json::<LoginRequest>(json!({"password": 5})).await;
        assert_eq!(got, invalid("email", "email is required"));
    }

    #[tokio::test]
    async fn an_unknown_field_is_refused_at_once_before_any_value() {
        let takes = "(fromAccount, toAccount, amount, currency, idempotencyKey, description, hold, legs, metadata)";
        let Err(e) = Body::<TransferBody>::from_bytes(true, br#"{"amount":"x","fee":5,"descripton":"rent"}"#) else {
            panic!("refused by the extractor")
        };
        assert_eq!(answer(e).await, invalid("fee", &format!("field `fee` is not one this endpoint takes {takes}")));
        // Even when a field is sent as null, and on a body whose fields are all optional.
        let got = json::<CreateAccountRequest>(json!({"currency": "EUR", "role": null})).await;
        assert_eq!(got, invalid("role", "field `role` is not one this endpoint takes (currency, metadata)"));
    }

    #[tokio::test]
    async fn a_body_must_be_one_json_object_sent_as_json() {
        let body = body::<TransferBody>;
        assert_eq!(body(true, b"[1,2]").await, invalid_json("request body must be a JSON object"));
        assert_eq!(body(true, b"null").await, invalid_json("request body must be a JSON object"));
        let eof = "request body is not valid JSON: EOF while parsing an object at line 1 column 1";
        assert_eq!(body(true, b"{").await, invalid_json(eof));
        let trailing = "request body is not valid JSON: trailing characters at line 1 column 4";
        assert_eq!(body(true, b"{} x").await, invalid_json(trailing));
        let twice = format!(r#"{{"fromAccount":"{A}","amount":1,"amount":2}}"#);
        let message = "request body is not valid JSON: key `amount` appears twice at line 1 column 73";
        assert_eq!(body(true, twice.as_bytes()).await, invalid_json(message));
        // Inside a journal's leg too: which amount was meant cannot be known.
        let nested = format!(r#"{{"idempotencyKey":"k","legs":[{{"fromAccount":"{A}","amount":1,"amount":2}}]}}"#);
        let (status, code, _, message) = body(true, nested.as_bytes()).await;
        assert_eq!((status, code.as_str()), (400, "INVALID_JSON"));
        assert!(message.contains("key `amount` appears twice"), "{message}");
        let media = (415, "UNSUPPORTED_MEDIA_TYPE".into(), Value::Null, "request body must be application/json".into());
        assert_eq!(body(false, b"{}").await, media);
        // An empty body sent as JSON is `{}`; sent as anything else (a form's shape), it is
        // refused like any other body.
        assert_eq!(body(false, b"").await, media);
        assert_eq!(body(true, b" \n").await, invalid("idempotencyKey", "idempotencyKey is required"));
        let read = Body::<CreateAccountRequest>::from_bytes(true, b"").ok().unwrap().read().ok().unwrap();
        assert!(read.currency.is_none());
    }

    #[test]
    fn content_types_are_json_in_utf8() {
        for yes in
            ["application/json", "Application/JSON", "application/problem+json", "application/json; charset=\"UTF-8\""]
        {
            assert!(is_json(yes), "{yes}");
        }
        for no in ["text/plain", "application/json; charset=latin1", "application/jsonx", ""] {
            assert!(!is_json(no), "{no}");
        }
    }

    async fn extract<T: DeserializeOwned>(query: &str) -> Result<Query<T>, ApiError> {
        let request = axum::http::Request::builder().uri(format!("/path?{query}")).body(()).expect("a request");
        Query::<T>::from_request_parts(&mut request.into_parts().0, &()).await
    }

    /// The answer to a query string of `T`, whether the extractor refuses it or the handler.
    async fn query<T: DeserializeOwned>(query: &str) -> (u16, String, Value, String) {
        let e = match extract::<T>(query).await {
            Ok(query) => query.read().err().expect("refused when read"),
            Err(e) => e,
        };
        answer(e).await
    }

    #[tokio::test]
    async fn query_parameters_are_named_known_once_and_typed() {
        let transactions = "(account, status, kind, createdFrom, createdTo, minAmount, maxAmount, limit, cursor)";
        let unknown = |name: &str, takes: &str| {
            invalid(name, &format!("query parameter `{name}` is not one this endpoint takes {takes}"))
        };
        assert_eq!(query::<NoQuery>("dryRun=true").await, unknown("dryRun", "(it takes none)"));
        assert_eq!(query::<TransactionQuery>("acount=x").await, unknown("acount", transactions));
        let twice = invalid("limit", "query parameter `limit` is given more than once");
        assert_eq!(query::<TransactionQuery>("limit=1&limit=2").await, twice);
        // An unknown name first, wherever it is.
        assert_eq!(query::<TransactionQuery>("limit=1&limit=2&foo=1").await, unknown("foo", transactions));
        assert_eq!(query::<TransactionQuery>("a&b").await, unknown("a", transactions));
        assert_eq!(query::<NoQuery>("%C3%A9t%C3%A9=1").await, unknown("été", "(it takes none)"));
        let limit = invalid("limit", "limit must be an integer from 1 to 100");
        for bad in ["limit=0", "limit=101", "limit=x", "limit=", "limit=1.0"] {
            assert_eq!(query::<PageQuery<AccountId>>(bad).await, limit, "{bad}");
        }
        assert_eq!(query::<PageQuery<AccountId>>("cursor=nope").await, invalid("cursor", "cursor must be a UUID"));
        let entries = invalid("cursor", "cursor must be a cursor returned by this endpoint");
        for bad in ["cursor=0", "cursor=-1", "cursor=x"] {
            assert_eq!(query::<PageQuery<EntryCursor>>(bad).await, entries, "{bad}");
        }
        let wait = invalid("wait", "wait must be a whole number of seconds from 0 to 30");
        for bad in ["wait=31", "wait=-1", "wait=1.5", "wait=soon"] {
            assert_eq!(query::<WaitQuery>(bad).await, wait, "{bad}");
        }
        assert_eq!(query::<TransactionQuery>("account=zz").await, invalid("account", "account must be a UUID"));
        let status =
            invalid("status", "status must be one of PENDING, COMPLETED, FAILED, HELD, POSTED, VOIDED, EXPIRED");
        assert_eq!(query::<TransactionQuery>("status=DONE").await, status);

        let read =
            extract::<TransactionQuery>(&format!("limit=5&account={A}")).await.ok().unwrap().read().ok().unwrap();
        assert_eq!((read.limit.map(|l| l.get()), read.account.map(|a| a.to_string())), (Some(5), Some(A.to_owned())));
        assert!(read.status.is_none() && read.cursor.is_none());
        let read = extract::<PageQuery<EntryCursor>>("").await.ok().unwrap().read().ok().unwrap();
        assert_eq!((read.limit.unwrap_or_default().get(), read.cursor.map(EntryCursor::seq)), (20, None));
        let read = extract::<WaitQuery>("wait=30").await.ok().unwrap().read().ok().unwrap();
        assert_eq!(read.wait.map(|w| w.get()), Some(30));
    }
}
