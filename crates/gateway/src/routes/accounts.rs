use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ledgerflow_domain::{AccountId, Currency};
use ledgerflow_store::AccountRecord;

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Body, Query};
use crate::{dto, requests};

/// Loads an account the caller may see: its own, or any for SYSTEM. Anything else is 404,
/// so nobody can probe which account ids exist.
pub(crate) async fn visible_account(state: &AppState, user: &AuthUser, id: AccountId) -> ApiResult<AccountRecord> {
    let account = state.store.find_account(id).await?.ok_or_else(ApiError::account_not_found)?;
    if user.is_system() || account.owner_id == Some(user.id) { Ok(account) } else { Err(ApiError::account_not_found()) }
}

/// Whose view a listing takes, for the listings of transactions and of events: filtered by
/// `account`, that account (the caller's own, 404 otherwise) and nothing more; unfiltered, for
/// a USER the accounts it owns, on which (with what it initiated) what it may see rests, and
/// for SYSTEM nothing, as it sees all.
pub(crate) struct ListingScope {
    pub account: Option<AccountId>,
    pub own_accounts: Option<Vec<AccountId>>,
}

pub(crate) async fn listing_scope(
    state: &AppState,
    user: &AuthUser,
    account: Option<AccountId>,
) -> ApiResult<ListingScope> {
    let account = match account {
        Some(id) => Some(visible_account(state, user, id).await?.id),
        None => None,
    };
    let own_accounts =
        if user.is_system() || account.is_some() { None } else { Some(state.store.account_ids_of(user.id).await?) };
    Ok(ListingScope { account, own_accounts })
}

#[utoipa::path(
    post,
    path = "/api/accounts",
    tag = "accounts",
    summary = "Open an account",
    request_body = requests::CreateAccountRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Created", body = dto::AccountBody),
        (status = 409, description = "ACCOUNT_LIMIT_REACHED: the caller owns 100 accounts already", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `POST /api/accounts` `{currency?, metadata?}`: a new ACTIVE account owned by the caller.
pub(super) async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    body: Body<requests::CreateAccountRequest>,
) -> ApiResult<(StatusCode, Json<dto::AccountBody>)> {
    let requests::CreateAccountRequest { currency, metadata } = body.read()?;
    let currency = currency.unwrap_or(Currency::USD).for_new_account()?;
    let metadata = metadata.unwrap_or_default();
    let opened = state.store.open_labelled_account(user.id, currency, &metadata).await?;
    let account = opened.ok_or(ApiError::AccountLimitReached)?;
    Ok((StatusCode::CREATED, Json(dto::account(&account))))
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
    query: Query<requests::PageQuery<AccountId>>,
) -> ApiResult<Json<dto::AccountList>> {
    let requests::PageQuery { limit, cursor: after } = query.read()?;
    let limit = limit.unwrap_or_default().get();
    let accounts = state.store.list_accounts(Some(user.id), limit, after).await?;
    let next = (accounts.len() as i64 == limit).then(|| accounts.last().map(|a| a.id)).flatten();
    Ok(Json(dto::AccountList {
        accounts: accounts.iter().map(dto::account).collect(),
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
        (status = 404, description = "ACCOUNT_NOT_FOUND (also for other users' accounts)", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/accounts/{id}`.
pub(super) async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    Path(id): Path<String>,
) -> ApiResult<Json<dto::AccountBody>> {
    let account = visible_account(&state, &user, AccountId::parse_field("accountId", &id)?).await?;
    Ok(Json(dto::account(&account)))
}

#[utoipa::path(
    get,
    path = "/api/accounts/{id}/balance",
    tag = "accounts",
    summary = "Get an account's balance",
    params(
        ("id" = String, Path, format = Uuid, description = "UUID"),
        ("asOf" = Option<String>, Query, format = DateTime, description = "RFC 3339, at most millisecond precision, not in the future: the balance as of that instant (the `balanceAfter` of the last entry at or before it, 0 before the first), reservations by the holds HELD then and not past their expiry, against today's overdraft line"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Posted balance from the latest ledger entry (or the last at or before asOf); reservations and limits from the account (or from the holds HELD at asOf)", body = dto::BalanceBody),
        (status = 404, description = "ACCOUNT_NOT_FOUND", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/accounts/{id}/balance?asOf=`: derived from the latest ledger entry, or from the
/// last one at or before `asOf`.
pub(super) async fn balance(
    State(state): State<AppState>,
    user: AuthUser,
    query: Query<requests::BalanceQuery>,
    Path(id): Path<String>,
) -> ApiResult<Json<dto::BalanceBody>> {
    let account = visible_account(&state, &user, AccountId::parse_field("accountId", &id)?).await?;
    let Some(as_of) = query.read()?.as_of else {
        let balance = state.store.balance(account.id).await?;
        return Ok(Json(dto::balance(&account, balance)));
    };
    let at = as_of.as_of(chrono::Utc::now())?;
    let (balance, reserved) =
        tokio::try_join!(state.store.balance_as_of(account.id, at), state.store.reserved_as_of(account.id, at))?;
    Ok(Json(dto::balance_as_of(&account, balance, reserved)))
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
        (status = 404, description = "ACCOUNT_NOT_FOUND", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/accounts/{id}/entries?limit=&cursor=`: newest first; the cursor is a sequence.
pub(super) async fn entries(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    query: Query<requests::PageQuery<requests::EntryCursor>>,
) -> ApiResult<Json<dto::EntryList>> {
    let account = visible_account(&state, &user, AccountId::parse_field("accountId", &id)?).await?;
    let requests::PageQuery { limit, cursor } = query.read()?;
    let limit = limit.unwrap_or_default().get();
    let before = cursor.map(requests::EntryCursor::seq);
    let entries = state.store.entries_of(account.id, limit, before).await?;
    let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.seq.to_string())).flatten();
    Ok(Json(dto::EntryList { entries: entries.iter().map(dto::entry).collect(), next_cursor: next }))
}

#[utoipa::path(
    patch,
    path = "/api/accounts/{id}/status",
    tag = "accounts",
    summary = "Change an account's status (SYSTEM)",
    request_body = requests::StatusRequest,
    params(("id" = String, Path, format = Uuid, description = "UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The account", body = dto::AccountBody),
        (status = 403, description = "FORBIDDEN: SYSTEM only", body = ErrorBody),
        (status = 404, description = "ACCOUNT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ACCOUNT_NOT_EMPTY (closing an account that holds money) or ACCOUNT_CLOSED (CLOSED is final)", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `PATCH /api/accounts/{id}/status` `{status}`: SYSTEM only.
pub(super) async fn set_status(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    Path(id): Path<String>,
    body: Body<requests::StatusRequest>,
) -> ApiResult<Json<dto::AccountBody>> {
    user.require_system()?;
    let id = AccountId::parse_field("accountId", &id)?;
    let status = body.read()?.status;
    let account = state.store.set_account_status(id, status).await?.ok_or_else(ApiError::account_not_found)??;
    tracing::info!(account_id = %id, status = %status, by = %user.id, "account status changed");
    Ok(Json(dto::account(&account)))
}

#[utoipa::path(
    patch,
    path = "/api/accounts/{id}/limits",
    tag = "accounts",
    summary = "Set an account's overdraft line and ceiling (SYSTEM)",
    request_body = requests::LimitsRequest,
    params(("id" = String, Path, format = Uuid, description = "UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The account, with its limits", body = dto::AccountBody),
        (status = 403, description = "FORBIDDEN: SYSTEM only", body = ErrorBody),
        (status = 404, description = "ACCOUNT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "LIMIT_BELOW_BALANCE: the account already owes (posted and held debits) more than the new overdraft line allows", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `PATCH /api/accounts/{id}/limits` `{overdraftLimit?, maxBalance?}`: SYSTEM only. A field
/// left out keeps its value; `maxBalance: null` removes the ceiling.
pub(super) async fn set_limits(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    Path(id): Path<String>,
    body: Body<requests::LimitsRequest>,
) -> ApiResult<Json<dto::AccountBody>> {
    user.require_system()?;
    let id = AccountId::parse_field("accountId", &id)?;
    let change = body.read()?;
    let current = state.store.find_account(id).await?.filter(|a| a.owner_id.is_some());
    let current = current.ok_or_else(ApiError::account_not_found)?;
    let limits = change.apply_to(current.limits)?;
    let account = state.store.set_account_limits(id, limits).await?.ok_or_else(ApiError::account_not_found)??;
    tracing::info!(
        account_id = %id,
        overdraft_limit = limits.overdraft(),
        max_balance = ?limits.max_balance(),
        by = %user.id,
        "account limits changed"
    );
    Ok(Json(dto::account(&account)))
}
