//! Route table and the handlers behind it.

mod accounts;
mod auth;
mod health;
mod transactions;

use axum::Router;
use axum::routing::{get, patch, post};
use ledgerflow_domain::TransferCommand;
use ledgerflow_messaging::lapin::BasicProperties;
use ledgerflow_messaging::lapin::types::{AMQPValue, FieldTable};
use ledgerflow_messaging::{COMMAND_TYPE, MessagingError, REQUEST_ID_HEADER};

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
        accounts::create,
        accounts::list,
        accounts::get,
        accounts::balance,
        accounts::entries,
        accounts::set_status,
        transactions::create,
        transactions::list,
        transactions::get,
        transactions::initial_funds,
        transactions::reverse,
        health::healthz,
        health::readyz,
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Registration and sign-in"),
        (name = "accounts", description = "Accounts, balances and ledger entries"),
        (name = "transactions", description = "Transfers: accepted with 202, decided by a worker"),
        (name = "health", description = "Probes"),
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
        .route("/{id}", get(transactions::get))
        .route("/{id}/reverse", post(transactions::reverse))
        .route("/system/initial-funds", post(transactions::initial_funds))
        .route("/system/intial-funds", post(transactions::initial_funds));
    Router::new()
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route("/api/accounts", post(accounts::create).get(accounts::list))
        .route("/api/accounts/{id}", get(accounts::get))
        .route("/api/accounts/{id}/balance", get(accounts::balance))
        .route("/api/accounts/{id}/entries", get(accounts::entries))
        .route("/api/accounts/{id}/status", patch(accounts::set_status))
        .nest("/transactions", transactions.clone())
        .nest("/api/transactions", transactions)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::telemetry::render))
        .route("/openapi.json", get(openapi_json))
        .fallback(|| async { ApiError::NotFound { code: "NOT_FOUND", what: "route" } })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// Publishes a transfer command and waits for the broker's confirm.
pub(crate) async fn publish_command(
    state: &AppState,
    cmd: &TransferCommand,
    request_id: Option<&str>,
) -> Result<(), MessagingError> {
    let id = cmd.transaction_id.map(|id| id.to_string()).unwrap_or_default();
    let mut headers = FieldTable::default();
    if let Some(request_id) = request_id {
        // Carried to the worker so one request id follows the transfer through every log line.
        headers.insert(REQUEST_ID_HEADER.into(), AMQPValue::LongString(request_id.into()));
    }
    let props = BasicProperties::default()
        .with_headers(headers)
        .with_message_id(id.as_str().into())
        .with_type(COMMAND_TYPE.into())
        .with_app_id("ledgerflow-gateway".into())
        .with_timestamp(cmd.requested_at.timestamp().max(0) as u64);
    let topology = state.publisher.topology();
    state.publisher.publish(&topology.transfers(), &cmd.request.from.to_string(), &cmd.to_json(), props).await
}
