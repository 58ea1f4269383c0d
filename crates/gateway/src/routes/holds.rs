//! Settling holds: `POST /transactions/{id}/post` and `/void` record a POST_HOLD or VOID_HOLD
//! and send it through the same queue and worker as every transaction. What the gateway can
//! already tell (who may, the hold no longer HELD or past its time, an amount above the held
//! one) it answers at once; the worker judges again inside the transaction that settles the
//! hold, where concurrent settlements and the expiry meet and only one wins.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use ledgerflow_domain::{
    Amount, IdempotencyKey, Metadata, TransactionId, TransactionStatus, TransferKind, TransferRequest,
};
use ledgerflow_store::TransactionRecord;

use super::transactions::{Owners, accept, owners, sees};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Body, Query, RequestId};
use crate::{dto, requests};

#[utoipa::path(
    post,
    path = "/transactions/{id}/post",
    tag = "transactions",
    summary = "Post a HELD hold, wholly or in part (initiator or SYSTEM)",
    request_body = requests::PostHoldBody,
    params(("id" = String, Path, format = Uuid, description = "the hold's UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Accepted: a POST_HOLD, PENDING; `Location` names it", body = dto::TransactionEnvelope),
        (status = 200, description = "A repeat of an earlier request with the same idempotencyKey", body = dto::TransactionEnvelope),
        (status = 400, description = "AMOUNT_EXCEEDS_HOLD, VALIDATION_ERROR or INVALID_JSON", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: only the hold's initiator or SYSTEM", body = ErrorBody),
        (status = 404, description = "TRANSACTION_NOT_FOUND: no hold the caller may see", body = ErrorBody),
        (status = 409, description = "HOLD_NOT_HELD, HOLD_EXPIRED or IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 503, description = "BROKER_UNAVAILABLE (recorded, sent later; error.transactionId names it) or SERVICE_UNAVAILABLE", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors,
    )
)]
/// `POST /transactions/{id}/post` `{idempotencyKey, amount?}`: moves `amount` (default: all
/// that is held) and releases the rest.
pub(super) async fn post(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    request_id: RequestId,
    Path(id): Path<String>,
    body: Body<requests::PostHoldBody>,
) -> ApiResult<Response> {
    let requests::PostHoldBody { idempotency_key: key, amount, metadata } = body.read()?;
    let (hold, _) = visible_hold(&state, &user, &id).await?;
    if !user.is_system() && hold.initiator != user.initiator() {
        return Err(ApiError::Forbidden("only the hold's initiator or SYSTEM may post it"));
    }
    let amount = amount.unwrap_or(hold.amount);
    if amount > hold.amount {
        return Err(ApiError::AmountExceedsHold { asked: amount.minor(), held: hold.amount.minor() });
    }
    let settlement = Settlement { kind: TransferKind::PostHold, amount, metadata };
    settle(&state, &user, &hold, settlement, key, request_id).await
}

#[utoipa::path(
    post,
    path = "/transactions/{id}/void",
    tag = "transactions",
    summary = "Void a HELD hold (initiator, receiver's owner or SYSTEM)",
    request_body = requests::VoidHoldBody,
    params(("id" = String, Path, format = Uuid, description = "the hold's UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Accepted: a VOID_HOLD, PENDING; `Location` names it", body = dto::TransactionEnvelope),
        (status = 200, description = "A repeat of an earlier request with the same idempotencyKey", body = dto::TransactionEnvelope),
        (status = 403, description = "FORBIDDEN: only the hold's initiator, the receiving account's owner or SYSTEM", body = ErrorBody),
        (status = 404, description = "TRANSACTION_NOT_FOUND: no hold the caller may see", body = ErrorBody),
        (status = 409, description = "HOLD_NOT_HELD, HOLD_EXPIRED or IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 503, description = "BROKER_UNAVAILABLE (recorded, sent later; error.transactionId names it) or SERVICE_UNAVAILABLE", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors,
    )
)]
/// `POST /transactions/{id}/void` `{idempotencyKey}`: releases the whole reservation. The
/// receiver's owner may give up a reservation in its favour, but not post it.
pub(super) async fn void(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    request_id: RequestId,
    Path(id): Path<String>,
    body: Body<requests::VoidHoldBody>,
) -> ApiResult<Response> {
    let requests::VoidHoldBody { idempotency_key: key, metadata } = body.read()?;
    let (hold, owners) = visible_hold(&state, &user, &id).await?;
    let receiver = owners.of(hold.to_account);
    if !user.is_system() && hold.initiator != user.initiator() && receiver != Some(user.id) {
        return Err(ApiError::Forbidden(
            "only the hold's initiator, the receiving account's owner or SYSTEM may void it",
        ));
    }
    let settlement = Settlement { kind: TransferKind::VoidHold, amount: hold.amount, metadata };
    settle(&state, &user, &hold, settlement, key, request_id).await
}

/// The hold `id` names and its two accounts' owners, or 404 if it is not a hold the caller
/// may see.
async fn visible_hold(state: &AppState, user: &AuthUser, id: &str) -> ApiResult<(TransactionRecord, Owners)> {
    let id = TransactionId::parse_field("transactionId", id)?;
    let hold = state.transactions.find(id).await?.filter(|t| t.kind == TransferKind::Hold);
    let hold = hold.ok_or_else(ApiError::transaction_not_found)?;
    let owners = owners(state, &hold).await?;
    if !sees(user, &hold, &owners) {
        return Err(ApiError::transaction_not_found());
    }
    Ok((hold, owners))
}

/// What a POST_HOLD or VOID_HOLD does: its kind, the amount it moves (a void's: all that is
/// held) and its own metadata (the hold keeps its own).
struct Settlement {
    kind: TransferKind,
    amount: Amount,
    metadata: Option<Metadata>,
}

/// Records and sends the settlement, unless it repeats an earlier request (answered as it
/// stands) or the hold is, as far as the gateway can tell, no longer to be settled.
async fn settle(
    state: &AppState,
    user: &AuthUser,
    hold: &TransactionRecord,
    settlement: Settlement,
    key: IdempotencyKey,
    request_id: RequestId,
) -> ApiResult<Response> {
    let Settlement { kind, amount, metadata } = settlement;
    let request = TransferRequest::settle(kind, hold.id, hold.from_account, hold.to_account, amount, hold.currency)?
        .with_metadata(metadata);
    let expired = hold.expires_at.filter(|at| *at <= Utc::now());
    if hold.status == TransactionStatus::Held && expired.is_none() {
        // `accept` answers a repeat of this very request (200) as it records.
        return accept(state, user, request, key, request_id.0).await;
    }
    // Too late for a new settlement, but a retry of one already made answers with what it
    // created, whatever happened since (typically: it settled the hold).
    if let Some(existing) = state.store.find_by_key(&user.initiator(), &key).await? {
        if existing.request_hash != request.fingerprint() {
            return Err(ApiError::IdempotencyKeyReused);
        }
        return Ok((StatusCode::OK, Json(dto::envelope(&existing))).into_response());
    }
    match expired {
        Some(at) if hold.status == TransactionStatus::Held => {
            Err(ApiError::HoldExpired(at.to_rfc3339_opts(SecondsFormat::Millis, true)))
        }
        _ => Err(ApiError::HoldNotHeld(hold.status)),
    }
}
