//! `GET /transactions/by-key/{idempotencyKey}`: the caller's transaction under a key it
//! chose, for a client or an upstream system that lost the answer to its request and must not
//! scan a listing to find out what happened (one look-up on the unique key index).

use axum::Json;
use axum::extract::{Path, State};
use ledgerflow_domain::IdempotencyKey;

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Query;
use crate::{dto, requests};

#[utoipa::path(
    get,
    path = "/transactions/by-key/{idempotencyKey}",
    tag = "transactions",
    summary = "Get the caller's transaction under an idempotency key",
    params(("idempotencyKey" = String, Path, min_length = 1, max_length = 128, description = "the key the caller sent with the request (1-128 visible ASCII characters, percent-encoded where a path needs it)")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The transaction the caller recorded under this key, as it stands", body = dto::TransactionEnvelope),
        (status = 404, description = "TRANSACTION_NOT_FOUND: the caller recorded none under this key", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /transactions/by-key/{idempotencyKey}`: keys are scoped by initiator, so the scope is
/// the caller's own: another user's transaction under the same key is not the caller's, and
/// stays unseen (404). SYSTEM finds its own keys only too: a key names a request only within
/// its initiator's scope, and SYSTEM finds any other transaction by id or by a listing.
pub(super) async fn by_key(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    Path(key): Path<String>,
) -> ApiResult<Json<dto::TransactionEnvelope>> {
    let key: IdempotencyKey = key.parse()?;
    let found = state.store.find_by_key(&user.initiator(), &key).await?;
    let t = found.ok_or_else(ApiError::transaction_not_found)?;
    Ok(Json(dto::envelope(&t)))
}
