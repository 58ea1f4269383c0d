//! Webhooks: `POST/GET /api/webhooks`, `GET/DELETE /api/webhooks/{id}`,
//! `GET /api/webhooks/{id}/deliveries` and `POST /api/events/{id}/redeliver`.
//!
//! A webhook belongs to the user that registered it, SYSTEM included: each sees, lists and
//! deletes only its own (SYSTEM's webhooks may receive every event, not see others'
//! endpoints). Another's webhook is 404, as is an event the caller may not see, so nobody can
//! probe which ids exist. The gateway only records; the dispatcher (`ledgerflow dispatcher`)
//! sends.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use ledgerflow_domain::webhooks::{EventTypes, UrlHost, UrlPolicy, WebhookUrl};
use ledgerflow_domain::{AccountId, DomainError, Role, WebhookId};
use ledgerflow_store::{DeliveryRecord, DeliveryStatus, NewWebhook, WebhookRecord, WebhookSecret};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Body, Query};
use crate::{dto, requests};

pub use ledgerflow_api::{
    DeliveryAttemptBody, DeliveryBody, DeliveryList, RedeliveryBody, WebhookBody, WebhookCreated, WebhookList,
};

/// Live webhooks one user may have: each costs the dispatcher a match per event.
pub const MAX_WEBHOOKS_PER_USER: u64 = 20;
/// Accounts one webhook may be narrowed to.
const MAX_WEBHOOK_ACCOUNTS: usize = 100;
/// Longest wait for the name of an endpoint to resolve at registration.
const RESOLVE_LIMIT: Duration = Duration::from_secs(5);

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn webhook_body(w: &WebhookRecord) -> WebhookBody {
    WebhookBody {
        id: w.id.to_string(),
        url: w.url.to_string(),
        types: w.types.iter().map(|t| t.as_str().to_owned()).collect(),
        accounts: w.accounts.as_ref().map(|a| a.iter().map(ToString::to_string).collect()),
        created_at: time(w.created_at),
    }
}

fn delivery_body(d: &DeliveryRecord) -> DeliveryBody {
    DeliveryBody {
        event_id: d.event_id,
        status: d.status.as_str().to_owned(),
        attempts: d
            .attempts
            .iter()
            .map(|a| DeliveryAttemptBody {
                at: time(a.at),
                status_code: a.status_code.and_then(|c| u16::try_from(c).ok()),
                duration_ms: a.duration_ms,
                error: a.error.clone(),
            })
            .collect(),
        next_attempt_at: (d.status == DeliveryStatus::Pending).then(|| time(d.next_attempt_at)),
    }
}

fn webhook_not_found() -> ApiError {
    ApiError::NotFound { code: "WEBHOOK_NOT_FOUND", what: "webhook" }
}

/// Whether `url` may be registered under `policy`: its scheme, and every address its host
/// resolves to now (the dispatcher judges them again at each delivery).
async fn check_endpoint(policy: UrlPolicy, url: &WebhookUrl) -> Result<(), DomainError> {
    policy.check_scheme(url)?;
    let addresses: Vec<IpAddr> = match url.host() {
        UrlHost::Address(ip) => vec![ip],
        UrlHost::Name(name) => {
            let unresolved = || DomainError::Invalid { field: "url", reason: format!("host {name} does not resolve") };
            let resolved = tokio::time::timeout(RESOLVE_LIMIT, tokio::net::lookup_host((name, url.port())))
                .await
                .map_err(|_| unresolved())?
                .map_err(|_| unresolved())?;
            resolved.map(|a| a.ip()).collect()
        }
    };
    if addresses.is_empty() {
        return Err(DomainError::Invalid { field: "url", reason: "resolves to no address".into() });
    }
    addresses.into_iter().try_for_each(|ip| policy.check_address(ip))
}

/// The accounts a webhook is narrowed to: at least one, at most [`MAX_WEBHOOK_ACCOUNTS`],
/// each existing and, for a USER, its own (another's is refused as if it did not exist).
async fn webhook_accounts(
    state: &AppState,
    user: &AuthUser,
    accounts: Vec<AccountId>,
) -> ApiResult<BTreeSet<AccountId>> {
    let refuse = |reason: &str| ApiError::Validation(DomainError::Invalid { field: "accounts", reason: reason.into() });
    let wanted: BTreeSet<AccountId> = accounts.into_iter().collect();
    if wanted.is_empty() {
        return Err(refuse("must name at least one account, or be left out"));
    }
    if wanted.len() > MAX_WEBHOOK_ACCOUNTS {
        return Err(refuse("may name at most 100 accounts"));
    }
    let ids: Vec<AccountId> = wanted.iter().copied().collect();
    let found = state.store.accounts_among(&ids).await?;
    let usable = found.iter().filter(|a| user.is_system() || a.owner_id == Some(user.id)).count();
    if usable != wanted.len() {
        return Err(refuse("must name accounts of the caller's own"));
    }
    Ok(wanted)
}

/// The caller's live webhook `id`; 404 for any other.
async fn own_webhook(state: &AppState, user: &AuthUser, id: &str) -> ApiResult<WebhookRecord> {
    let id = WebhookId::parse_field("webhookId", id)?;
    match state.store.find_webhook(id).await? {
        Some(w) if !w.deleted && w.owner == user.id => Ok(w),
        _ => Err(webhook_not_found()),
    }
}

#[utoipa::path(
    post,
    path = "/api/webhooks",
    tag = "webhooks",
    summary = "Register a webhook",
    request_body = requests::WebhookRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Registered; the answer carries its signing secret, shown this once", body = WebhookCreated),
        (status = 409, description = "WEBHOOK_LIMIT_REACHED: the caller has 20 webhooks already", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `POST /api/webhooks` `{url, types, accounts?}`: an `https://` URL (plain `http` only where
/// `LEDGERFLOW_WEBHOOK_ALLOW_HTTP` is set) whose host resolves only to public addresses
/// (unless `LEDGERFLOW_WEBHOOK_ALLOW_PRIVATE`).
pub(super) async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    body: Body<requests::WebhookRequest>,
) -> ApiResult<(StatusCode, Json<WebhookCreated>)> {
    let requests::WebhookRequest { url, types, accounts } = body.read()?;
    let types = EventTypes::new(types)?;
    check_endpoint(state.config.webhook_policy, &url).await?;
    let accounts = match accounts {
        Some(accounts) => Some(webhook_accounts(&state, &user, accounts).await?),
        None => None,
    };
    // Counted before the insert, so two registrations at once may both pass at 19: a bound
    // on work, not an invariant.
    if state.store.count_webhooks(user.id).await? >= MAX_WEBHOOKS_PER_USER {
        return Err(ApiError::WebhookLimitReached);
    }
    let mut random = [0u8; 32];
    rand::fill(&mut random);
    let new = NewWebhook {
        owner: user.id,
        owner_role: user.role,
        url,
        types,
        accounts,
        secret: WebhookSecret::from_random(random),
    };
    let webhook = state.store.insert_webhook(new).await?;
    tracing::info!(webhook_id = %webhook.id, by = %user.id, url = %webhook.url, "webhook registered");
    let WebhookBody { id, url, types, accounts, created_at } = webhook_body(&webhook);
    let secret = webhook.secret.expose().to_owned();
    Ok((StatusCode::CREATED, Json(WebhookCreated { id, url, types, accounts, secret, created_at })))
}

#[utoipa::path(
    get,
    path = "/api/webhooks",
    tag = "webhooks",
    summary = "List the caller's webhooks",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The caller's webhooks (SYSTEM's too: its own only), oldest first, without secrets", body = WebhookList),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/webhooks`.
pub(super) async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
) -> ApiResult<Json<WebhookList>> {
    let webhooks = state.store.list_webhooks(user.id, MAX_WEBHOOKS_PER_USER as i64).await?;
    Ok(Json(WebhookList { webhooks: webhooks.iter().map(webhook_body).collect() }))
}

#[utoipa::path(
    get,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    summary = "Get one of the caller's webhooks",
    params(("id" = String, Path, format = Uuid, description = "UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The webhook, without its secret", body = WebhookBody),
        (status = 404, description = "WEBHOOK_NOT_FOUND (also another user's, and deleted ones)", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/webhooks/{id}`.
pub(super) async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookBody>> {
    Ok(Json(webhook_body(&own_webhook(&state, &user, &id).await?)))
}

#[utoipa::path(
    delete,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete one of the caller's webhooks",
    params(("id" = String, Path, format = Uuid, description = "UUID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Deleted: nothing more is sent to it, deliveries still due included"),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `DELETE /api/webhooks/{id}`.
pub(super) async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let webhook = own_webhook(&state, &user, &id).await?;
    if !state.store.delete_webhook(webhook.id).await? {
        return Err(webhook_not_found());
    }
    tracing::info!(webhook_id = %webhook.id, by = %user.id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "A webhook's deliveries and their attempts",
    params(
        ("id" = String, Path, format = Uuid, description = "UUID"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "page size, default 20"),
        ("cursor" = Option<String>, Query, min_length = 1, description = "nextCursor of the previous page"),
    ),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Newest event first: each delivery's status, attempts (time, status code, duration, error) and next attempt", body = DeliveryList),
        (status = 404, description = "WEBHOOK_NOT_FOUND", body = ErrorBody),
        dto::AuthErrors, dto::Unavailable,
    )
)]
/// `GET /api/webhooks/{id}/deliveries?limit=&cursor=`.
pub(super) async fn deliveries(
    State(state): State<AppState>,
    user: AuthUser,
    query: Query<requests::PageQuery<requests::EntryCursor>>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    let requests::PageQuery { limit, cursor } = query.read()?;
    let webhook = own_webhook(&state, &user, &id).await?;
    let limit = limit.unwrap_or_default().get();
    let found = state.store.list_deliveries(webhook.id, limit, cursor.map(|c| c.seq())).await?;
    let next = (found.len() as i64 == limit).then(|| found.last().map(|d| d.event_id.to_string())).flatten();
    Ok(Json(DeliveryList { deliveries: found.iter().map(delivery_body).collect(), next_cursor: next }))
}

#[utoipa::path(
    post,
    path = "/api/events/{id}/redeliver",
    tag = "webhooks",
    summary = "Send an event again to the caller's webhooks",
    request_body(content = requests::NoBody, description = "Empty or `{}`"),
    params(("id" = i64, Path, minimum = 1, description = "The event id")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 202, description = "Queued again, due now, with a fresh retry horizon, for each of the caller's webhooks that receive its type and accounts (none: an empty list)", body = RedeliveryBody),
        (status = 404, description = "EVENT_NOT_FOUND (also one the caller may not see, and one no longer kept)", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `POST /api/events/{id}/redeliver`: whatever became of its earlier deliveries (FAILED,
/// DELIVERED, or none because the webhook is newer than the event).
pub(super) async fn redeliver(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    Path(id): Path<String>,
    body: Body<requests::NoBody>,
) -> ApiResult<(StatusCode, Json<RedeliveryBody>)> {
    body.read()?;
    let not_found = || ApiError::NotFound { code: "EVENT_NOT_FOUND", what: "event" };
    let id = id.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::Validation(DomainError::Invalid { field: "eventId", reason: "must be a positive integer".into() })
    })?;
    let event = state.store.find_event(id).await?.ok_or_else(not_found)?;
    let owned: BTreeSet<AccountId> = match user.role {
        Role::System => BTreeSet::new(),
        Role::User => state.store.account_ids_of(user.id).await?.into_iter().collect(),
    };
    let owned_list: Vec<AccountId> = owned.iter().copied().collect();
    if !user.is_system() && !event.visible_to(user.id, &owned_list) {
        return Err(not_found());
    }
    let webhooks = state.store.list_webhooks(user.id, MAX_WEBHOOKS_PER_USER as i64).await?;
    let matching: Vec<WebhookId> =
        webhooks.iter().filter(|w| w.receives(&event.facts(), &owned)).map(|w| w.id).collect();
    state.store.redeliver(&matching, event.id, event.created_at).await?;
    tracing::info!(event_id = event.id, webhooks = matching.len(), by = %user.id, "event queued for redelivery");
    let webhook_ids = matching.iter().map(ToString::to_string).collect();
    Ok((StatusCode::ACCEPTED, Json(RedeliveryBody { event_id: event.id, webhook_ids })))
}
