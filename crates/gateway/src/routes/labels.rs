//! `PATCH /api/accounts/{id}/metadata`: an account's labels, set by its owner or SYSTEM.

use axum::Json;
use axum::extract::{Path, State};
use ledgerflow_domain::AccountId;

use super::accounts::visible_account;
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Body, Query};
use crate::{dto, requests};

#[utoipa::path(
    patch,
    path = "/api/accounts/{id}/metadata",
    tag = "accounts",
    summary = "Replace an account's metadata (owner or SYSTEM)",
    request_body = requests::MetadataRequest,
    params(("id" = String, Path, format = Uuid, description = "UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The account, with its new metadata", body = dto::AccountBody),
        (status = 404, description = "ACCOUNT_NOT_FOUND (also another user's account, and funding accounts)", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `PATCH /api/accounts/{id}/metadata` `{metadata}`: replaces the whole object (`{}` removes
/// every key), so a client never has to merge with what another wrote; any status, CLOSED
/// included (labels are bookkeeping, not money).
pub(super) async fn set_metadata(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    Path(id): Path<String>,
    body: Body<requests::MetadataRequest>,
) -> ApiResult<Json<dto::AccountBody>> {
    let id = AccountId::parse_field("accountId", &id)?;
    visible_account(&state, &user, id).await?;
    let metadata = body.read()?.metadata;
    let account = state.store.set_account_metadata(id, &metadata).await?.ok_or_else(ApiError::account_not_found)?;
    tracing::info!(account_id = %id, keys = metadata.len(), by = %user.id, "account metadata replaced");
    Ok(Json(dto::account(&account)))
}
