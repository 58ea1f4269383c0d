//! `GET /api/accounts/{id}/statement`: an account's entries over a window of time, with the
//! balances that open and close it and its totals.

use axum::Json;
use axum::extract::{Path, State};
use ledgerflow_domain::{AccountId, StatementWindow};

use super::accounts::visible_account;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::Query;
use crate::{dto, requests};

#[utoipa::path(
    get,
    path = "/api/accounts/{id}/statement",
    tag = "accounts",
    summary = "An account's statement over a window of time",
    params(
        ("id" = String, Path, format = Uuid, description = "UUID"),
        ("from" = String, Query, format = DateTime, description = "RFC 3339, at most millisecond precision: the window's start, inclusive"),
        ("to" = String, Query, format = DateTime, description = "RFC 3339, at most millisecond precision: the window's end, exclusive; later than from, not in the future, at most 366 days after from"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "page size, default 20"),
        ("cursor" = Option<String>, Query, min_length = 1, description = "nextCursor of the previous page (same from and to)"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The window's opening and closing balances and totals, and a page of its entries, oldest first", body = dto::StatementBody),
        (status = 404, description = "ACCOUNT_NOT_FOUND", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/accounts/{id}/statement?from=&to=&limit=&cursor=`: the entries with
/// `from <= createdAt < to`, oldest first; the cursor is a sequence.
pub(super) async fn statement(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    query: Query<requests::StatementQuery>,
) -> ApiResult<Json<dto::StatementBody>> {
    let account = visible_account(&state, &user, AccountId::parse_field("accountId", &id)?).await?;
    let requests::StatementQuery { from, to, limit, cursor } = query.read()?;
    let window = StatementWindow::new(from, to, chrono::Utc::now())?;
    let limit = limit.unwrap_or_default().get();
    let page = state.store.statement(account.id, window, limit, cursor.map(requests::EntryCursor::seq)).await?;
    Ok(Json(dto::statement(&account, window, &page)))
}
