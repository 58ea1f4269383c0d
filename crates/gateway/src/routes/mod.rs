//! Route table and the handlers behind it.

mod accounts;
mod auth;
mod batch;
mod events;
mod health;
mod holds;
mod labels;
mod lookup;
mod statements;
mod transactions;
mod webhooks;

pub use webhooks::MAX_WEBHOOKS_PER_USER;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post};

use crate::AppState;
use crate::error::ApiError;

/// The OpenAPI 3.1 description, generated from the handlers' annotations and the `dto`
/// types; served at `GET /openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "LedgerFlow",
        description = "A double-entry ledger. Money is in integer minor units. Every error is `{\"error\":{\"code\",\"message\"}}`. Paths under /transactions are also served under /api/transactions, and /transactions/system/intial-funds (the original spelling) is an alias.",
        license(name = "ISC")
    ),
    paths(
        auth::register,
        auth::login,
        auth::logout,
        auth::change_password,
        accounts::create,
        accounts::list,
        accounts::get,
        accounts::balance,
        accounts::entries,
        statements::statement,
        accounts::set_status,
        accounts::set_limits,
        labels::set_metadata,
        transactions::create,
        batch::submit,
        transactions::list,
        transactions::get,
        transactions::initial_funds,
        transactions::reverse,
        lookup::by_key,
        holds::post,
        holds::void,
        events::list,
        health::healthz,
        health::readyz,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::redeliver,
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Registration and sign-in"),
        (name = "accounts", description = "Accounts, balances and ledger entries"),
        (name = "transactions", description = "Transfers: accepted with 202, decided by a worker"),
        (name = "events", description = "The event stream: every change of every transaction, in commit order"),
        (name = "health", description = "Probes"),
        (name = "webhooks", description = "Signed HTTP deliveries of events, and their attempts"),
    )
)]
pub struct ApiDoc;

/// Declares the two ways to send the JWT.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme("cookie", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("token"))));
    }
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

pub(crate) fn routes() -> Router<AppState> {
    // The original system's paths are kept, including its `intial-funds` misspelling, and
    // each is also served under `/api`.
    let transactions = Router::new()
        .route("/", post(transactions::create).get(transactions::list))
        // A batch's body is up to a thousand of the others'.
        .route("/batch", post(batch::submit).layer(DefaultBodyLimit::max(batch::MAX_BATCH_BODY_BYTES)))
        .route("/{id}", get(transactions::get))
        .route("/by-key/{key}", get(lookup::by_key))
        .route("/{id}/reverse", post(transactions::reverse))
        .route("/{id}/post", post(holds::post))
        .route("/{id}/void", post(holds::void))
        .route("/system/initial-funds", post(transactions::initial_funds))
        .route("/system/intial-funds", post(transactions::initial_funds));
    Router::new()
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/password", post(auth::change_password))
        .route("/api/accounts", post(accounts::create).get(accounts::list))
        .route("/api/accounts/{id}", get(accounts::get))
        .route("/api/accounts/{id}/balance", get(accounts::balance))
        .route("/api/accounts/{id}/entries", get(accounts::entries))
        .route("/api/accounts/{id}/statement", get(statements::statement))
        .route("/api/accounts/{id}/status", patch(accounts::set_status))
        .route("/api/accounts/{id}/limits", patch(accounts::set_limits))
        .route("/api/accounts/{id}/metadata", patch(labels::set_metadata))
        .route("/api/events", get(events::list))
        .nest("/transactions", transactions.clone())
        .nest("/api/transactions", transactions)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(ledgerflow_telemetry::render))
        .route("/openapi.json", get(openapi_json))
        .route("/api/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/api/webhooks/{id}", get(webhooks::get).delete(webhooks::delete))
        .route("/api/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/api/events/{id}/redeliver", post(webhooks::redeliver))
        .fallback(|| async { ApiError::NotFound { code: "NOT_FOUND", what: "route" } })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

#[cfg(test)]
mod tests {
    use ledgerflow_domain::AccountId;
    use serde_json::Value;
    use utoipa::OpenApi;

    use super::ApiDoc;
    use crate::de::names;
    use crate::requests::{self, EntryCursor};

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        names.sort();
        names
    }

    /// The names each request type takes (the only ones its extractor accepts) are exactly the
    /// ones the OpenAPI document gives, and the document says no others are accepted.
    #[test]
    fn every_request_takes_exactly_the_names_its_document_gives() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        let bodies: [(&str, &[&str]); 16] = [
            ("RegisterRequest", names::<requests::RegisterRequest>()),
            ("LoginRequest", names::<requests::LoginRequest>()),
            ("PasswordChangeRequest", names::<requests::PasswordChangeRequest>()),
            ("CreateAccountRequest", names::<requests::CreateAccountRequest>()),
            ("StatusRequest", names::<requests::StatusRequest>()),
            ("LimitsRequest", names::<requests::LimitsRequest>()),
            ("TransferBody", names::<requests::TransferBody>()),
            ("LegRequest", names::<requests::LegRequest>()),
            ("InitialFundsBody", names::<requests::InitialFundsBody>()),
            ("ReverseBody", names::<requests::ReverseBody>()),
            ("HoldOptions", names::<requests::HoldOptions>()),
            ("PostHoldBody", names::<requests::PostHoldBody>()),
            ("VoidHoldBody", names::<requests::VoidHoldBody>()),
            ("MetadataRequest", names::<requests::MetadataRequest>()),
            ("BatchBody", names::<requests::BatchBody>()),
            ("WebhookRequest", names::<requests::WebhookRequest>()),
        ];
        for (name, takes) in bodies {
            let schema = &doc["components"]["schemas"][name];
            let documented: Vec<&str> =
                schema["properties"].as_object().expect(name).keys().map(String::as_str).collect();
            assert_eq!(sorted(&documented), sorted(takes), "{name}");
            assert_eq!(schema["additionalProperties"], Value::Bool(false), "{name}");
        }
        let none = names::<requests::NoQuery>();
        // The listing also takes `metadata.<key>` parameters, read apart (`search`).
        let with_metadata: Vec<&str> =
            names::<requests::TransactionQuery>().iter().copied().chain(["metadata.{key}"]).collect();
        let queries: [(&str, &str, &[&str]); 29] = [
            ("post", "/api/auth/register", none),
            ("post", "/api/auth/login", none),
            ("post", "/api/auth/logout", none),
            ("post", "/api/auth/password", none),
            ("post", "/api/accounts", none),
            ("get", "/api/accounts", names::<requests::PageQuery<AccountId>>()),
            ("get", "/api/accounts/{id}", none),
            ("get", "/api/accounts/{id}/balance", names::<requests::BalanceQuery>()),
            ("get", "/api/accounts/{id}/statement", names::<requests::StatementQuery>()),
            ("get", "/api/accounts/{id}/entries", names::<requests::PageQuery<EntryCursor>>()),
            ("patch", "/api/accounts/{id}/status", none),
            ("patch", "/api/accounts/{id}/limits", none),
            ("post", "/transactions", none),
            ("get", "/transactions", &with_metadata),
            ("get", "/transactions/{id}", names::<requests::WaitQuery>()),
            ("post", "/transactions/{id}/reverse", none),
            ("post", "/transactions/{id}/post", none),
            ("post", "/transactions/{id}/void", none),
            ("post", "/transactions/system/initial-funds", none),
            ("patch", "/api/accounts/{id}/metadata", none),
            ("get", "/transactions/by-key/{idempotencyKey}", none),
            ("post", "/transactions/batch", none),
            ("get", "/api/events", names::<requests::EventQuery>()),
            ("post", "/api/webhooks", none),
            ("get", "/api/webhooks", none),
            ("get", "/api/webhooks/{id}", none),
            ("delete", "/api/webhooks/{id}", none),
            ("get", "/api/webhooks/{id}/deliveries", names::<requests::PageQuery<EntryCursor>>()),
            ("post", "/api/events/{id}/redeliver", none),
        ];
        for (method, path, takes) in queries {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is documented");
            let params = op["parameters"].as_array().map(Vec::as_slice).unwrap_or_default();
            let documented: Vec<&str> =
                params.iter().filter(|p| p["in"] == "query").filter_map(|p| p["name"].as_str()).collect();
            assert_eq!(sorted(&documented), sorted(takes), "{method} {path}");
        }
        // Every operation but the probes is in the table above.
        let operations: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(operations, queries.len() + 2, "healthz and readyz take what they are given");
    }
}
