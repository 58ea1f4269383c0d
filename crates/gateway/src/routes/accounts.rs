use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ledgerflow_domain::fields::{opt_parse, req_parse};
use ledgerflow_domain::{AccountId, AccountStatus, Currency, DomainError};
use ledgerflow_store::AccountRecord;

use crate::AppState;
use crate::auth::AuthUser;
use crate::dto;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonObject, QueryMap};

/// Loads an account the caller may see: its own, or any for SYSTEM. Anything else is 404,
/// so nobody can probe which account ids exist. `field` names the id in a 400.
pub(crate) async fn visible_account(
    state: &AppState,
    user: &AuthUser,
    field: &'static str,
    raw_id: &str,
) -> ApiResult<AccountRecord> {
    let id = AccountId::parse_field(field, raw_id)?;
    let account = state.store.find_account(id).await?.ok_or_else(ApiError::account_not_found)?;
    if user.is_system() || account.owner_id == Some(user.id) { Ok(account) } else { Err(ApiError::account_not_found()) }
}

#[utoipa::path(
    post,
    path = "/api/accounts",
    tag = "accounts",
    summary = "Open an account",
    request_body = dto::CreateAccountRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Created", body = dto::AccountBody),
        (status = 409, description = "ACCOUNT_LIMIT_REACHED: the caller owns 100 accounts already", body = dto::ErrorBody),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `POST /api/accounts` `{currency?}`: a new ACTIVE account owned by the caller.
pub(super) async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    _: QueryMap<dto::NoQuery>,
    JsonObject(body, ..): JsonObject<dto::CreateAccountRequest>,
) -> ApiResult<(StatusCode, Json<dto::AccountBody>)> {
    let currency = opt_parse::<Currency>(&body, "currency")?.unwrap_or(Currency::USD).for_new_account()?;
    let account = state.store.open_account(user.id, currency).await?.ok_or(ApiError::AccountLimitReached)?;
    Ok((StatusCode::CREATED, Json(dto::AccountBody::from(&account))))
}

#[utoipa::path(
    get,
    path = "/api/accounts",
    tag = "accounts",
    summary = "List the caller's accounts",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "page size, default 20"), ("cursor" = Option<String>, Query, min_length = 1, description = "nextCursor of the previous page")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The caller's accounts, oldest first", body = dto::AccountList),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/accounts?limit=&cursor=`: the caller's accounts, oldest first.
pub(super) async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    query: QueryMap<dto::PageQuery>,
) -> ApiResult<Json<dto::AccountList>> {
    let limit = query.limit()?;
    let after = query.get("cursor").map(|c| AccountId::parse_field("cursor", c)).transpose()?;
    let accounts = state.store.list_accounts(Some(user.id), limit, after).await?;
    let next = (accounts.len() as i64 == limit).then(|| accounts.last().map(|a| a.id)).flatten();
    Ok(Json(dto::AccountList {
        accounts: accounts.iter().map(Into::into).collect(),
        next_cursor: next.map(|id| id.to_string()),
    }))
}

#[utoipa::path(
    get,
    path = "/api/accounts/{id}",
    tag = "accounts",
    summary = "Get an account",
    params(("id" = String, Path, format = Uuid, description = "UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The account", body = dto::AccountBody),
        (status = 404, description = "ACCOUNT_NOT_FOUND (also for other users' accounts)", body = dto::ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/accounts/{id}`.
pub(super) async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    _: QueryMap<dto::NoQuery>,
    Path(id): Path<String>,
) -> ApiResult<Json<dto::AccountBody>> {
    let account = visible_account(&state, &user, "accountId", &id).await?;
    Ok(Json(dto::AccountBody::from(&account)))
}

#[utoipa::path(
    get,
    path = "/api/accounts/{id}/balance",
    tag = "accounts",
    summary = "Get an account's balance",
    params(("id" = String, Path, format = Uuid, description = "UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Derived from the latest ledger entry", body = dto::BalanceBody),
        (status = 404, description = "ACCOUNT_NOT_FOUND", body = dto::ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/accounts/{id}/balance`: derived from the latest ledger entry.
pub(super) async fn balance(
    State(state): State<AppState>,
    user: AuthUser,
    _: QueryMap<dto::NoQuery>,
    Path(id): Path<String>,
) -> ApiResult<Json<dto::BalanceBody>> {
    let account = visible_account(&state, &user, "accountId", &id).await?;
    let balance = state.store.balance(account.id).await?;
    Ok(Json(dto::BalanceBody {
        account_id: account.id.to_string(),
        currency: account.currency.code().to_owned(),
        balance: balance.minor(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/accounts/{id}/entries",
    tag = "accounts",
    summary = "List an account's ledger entries",
    params(("id" = String, Path, format = Uuid, description = "UUID"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "page size, default 20"), ("cursor" = Option<String>, Query, min_length = 1, description = "nextCursor of the previous page")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Newest first", body = dto::EntryList),
        (status = 404, description = "ACCOUNT_NOT_FOUND", body = dto::ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/accounts/{id}/entries?limit=&cursor=`: newest first; the cursor is a sequence.
pub(super) async fn entries(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    query: QueryMap<dto::PageQuery>,
) -> ApiResult<Json<dto::EntryList>> {
    let account = visible_account(&state, &user, "accountId", &id).await?;
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
    Ok(Json(dto::EntryList { entries: entries.iter().map(Into::into).collect(), next_cursor: next }))
}

#[utoipa::path(
    patch,
    path = "/api/accounts/{id}/status",
    tag = "accounts",
    summary = "Change an account's status (SYSTEM)",
    request_body = dto::StatusRequest,
    params(("id" = String, Path, format = Uuid, description = "UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The account", body = dto::AccountBody),
        (status = 403, description = "FORBIDDEN: SYSTEM only", body = dto::ErrorBody),
        (status = 404, description = "ACCOUNT_NOT_FOUND", body = dto::ErrorBody),
        (status = 409, description = "ACCOUNT_NOT_EMPTY (closing an account that holds money) or ACCOUNT_CLOSED (CLOSED is final)", body = dto::ErrorBody),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `PATCH /api/accounts/{id}/status` `{status}`: SYSTEM only.
pub(super) async fn set_status(
    State(state): State<AppState>,
    user: AuthUser,
    _: QueryMap<dto::NoQuery>,
    Path(id): Path<String>,
    JsonObject(body, ..): JsonObject<dto::StatusRequest>,
) -> ApiResult<Json<dto::AccountBody>> {
    user.require_system()?;
    let id = AccountId::parse_field("accountId", &id)?;
    let status: AccountStatus = req_parse(&body, "status")?;
    let account = state.store.set_account_status(id, status).await?.ok_or_else(ApiError::account_not_found)??;
    tracing::info!(account_id = %id, status = %status, by = %user.id, "account status changed");
    Ok(Json(dto::AccountBody::from(&account)))
}
