use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ledgerflow_domain::fields::{opt_parse, req_parse};
use ledgerflow_domain::{AccountId, AccountStatus, Currency, DomainError};
use ledgerflow_store::AccountRecord;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::AuthUser;
use crate::dto;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonObject, QueryMap};

/// Loads an account the caller may see: its own, or any for SYSTEM. Anything else is 404,
/// so nobody can probe which account ids exist.
pub(crate) async fn visible_account(state: &AppState, user: &AuthUser, raw_id: &str) -> ApiResult<AccountRecord> {
    let id = AccountId::parse_field("accountId", raw_id)?;
    let account = state.store.find_account(id).await?.ok_or_else(ApiError::account_not_found)?;
    if user.is_system() || account.owner_id == Some(user.id) { Ok(account) } else { Err(ApiError::account_not_found()) }
}

/// `POST /api/accounts` `{currency?}`: a new ACTIVE account owned by the caller.
pub(super) async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let currency: Currency = opt_parse(&body, "currency")?.unwrap_or(Currency::USD);
    let account = state.store.insert_account(user.id, currency).await?;
    Ok((StatusCode::CREATED, Json(dto::account(&account))))
}

/// `GET /api/accounts?limit=&cursor=`: the caller's accounts, oldest first.
pub(super) async fn list(State(state): State<AppState>, user: AuthUser, query: QueryMap) -> ApiResult<Json<Value>> {
    let limit = query.limit()?;
    let after = query.get("cursor").map(|c| AccountId::parse_field("cursor", c)).transpose()?;
    let accounts = state.store.list_accounts(Some(user.id), limit, after).await?;
    let next = (accounts.len() as i64 == limit).then(|| accounts.last().map(|a| a.id)).flatten();
    Ok(Json(json!({
        "accounts": accounts.iter().map(dto::account).collect::<Vec<_>>(),
        "nextCursor": next,
    })))
}

/// `GET /api/accounts/{id}`.
pub(super) async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let account = visible_account(&state, &user, &id).await?;
    Ok(Json(dto::account(&account)))
}

/// `GET /api/accounts/{id}/balance`: derived from the latest ledger entry.
pub(super) async fn balance(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<dto::BalanceBody>> {
    let account = visible_account(&state, &user, &id).await?;
    let balance = state.store.balance(account.id).await?;
    Ok(Json(dto::BalanceBody { account_id: account.id, currency: account.currency, balance }))
}

/// `GET /api/accounts/{id}/entries?limit=&cursor=`: newest first; the cursor is a sequence.
pub(super) async fn entries(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    query: QueryMap,
) -> ApiResult<Json<Value>> {
    let account = visible_account(&state, &user, &id).await?;
    let limit = query.limit()?;
    let before = match query.get("cursor") {
        None => None,
        Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n > 0).ok_or(DomainError::Invalid {
            field: "cursor",
            reason: "must be a cursor returned by this endpoint".into(),
        })?),
    };
    let entries = state.store.entries_of(account.id, limit, before).await?;
    let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.seq.to_string())).flatten();
    Ok(Json(json!({
        "entries": entries.iter().map(dto::entry).collect::<Vec<_>>(),
        "nextCursor": next,
    })))
}

/// `PATCH /api/accounts/{id}/status` `{status}`: SYSTEM only.
pub(super) async fn set_status(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    user.require_system()?;
    let id = AccountId::parse_field("accountId", &id)?;
    let status: AccountStatus = req_parse(&body, "status")?;
    let account = state.store.set_account_status(id, status).await?.ok_or_else(ApiError::account_not_found)?;
    tracing::info!(account_id = %id, status = %status, by = %user.id, "account status changed");
    Ok(Json(dto::account(&account)))
}
