use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum_extra::extract::cookie::CookieJar;
use ledgerflow_domain::{Email, Role};
use ledgerflow_store::UserRecord;

use crate::AppState;
use crate::auth::{AuthUser, session_cookie};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Body, Query};
use crate::hashing::wait_out_a_check;
use crate::source::Source;
use crate::{dto, requests};

#[utoipa::path(
    post,
    path = "/api/auth/register",
    tag = "auth",
    summary = "Register a user (role USER)",
    request_body = requests::RegisterRequest,
    responses(
        (status = 201, description = "Registered; the token is also set as the `token` cookie", body = dto::AuthBody),
        (status = 400, description = "VALIDATION_ERROR or INVALID_JSON", body = ErrorBody),
        (status = 409, description = "EMAIL_TAKEN", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: this client address has its share of sign-ins and sign-ups in progress already; `Retry-After` says when to try again", body = ErrorBody),
        dto::BodyErrors, dto::Unavailable,
    )
)]
/// `POST /api/auth/register`: always creates a USER; SYSTEM users are made by operators.
pub(super) async fn register(
    State(state): State<AppState>,
    source: Source,
    _: Query<requests::NoQuery>,
    jar: CookieJar,
    body: Body<requests::RegisterRequest>,
) -> ApiResult<(StatusCode, CookieJar, Json<dto::AuthBody>)> {
    let requests::RegisterRequest { email, password, name } = body.read()?;
    let hash = state.hash_slots.take(source)?.hash_password(password).await?;
    let user = state.store.insert_user(&email, name.as_ref(), Role::User, hash).await?;
    let (jar, body) = signed_in(&state, jar, &user)?;
    Ok((StatusCode::CREATED, jar, body))
}

#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    summary = "Sign in",
    request_body = requests::LoginRequest,
    responses(
        (status = 200, description = "Signed in; the token is also set as the `token` cookie", body = dto::AuthBody),
        (status = 400, description = "VALIDATION_ERROR or INVALID_JSON", body = ErrorBody),
        (status = 401, description = "INVALID_CREDENTIALS", body = ErrorBody),
        (status = 429, description = "TOO_MANY_ATTEMPTS: this email had too many failed sign-ins lately; TOO_MANY_REQUESTS: this client address has its share of sign-ins and sign-ups in progress already. `Retry-After` says when to try again", body = ErrorBody),
        dto::BodyErrors, dto::Unavailable,
    )
)]
/// `POST /api/auth/login`: the same 401 whether the email is unknown or the password wrong.
///
/// Failed sign-ins are counted per email in MongoDB, so every gateway sees them: after
/// `login_max_failures` within `login_window`, the email is refused (429, without checking the
/// password) until the window ends. Each check is counted before it is made (and the count
/// cleared when it succeeds), so parallel guesses cannot all slip past the limit. Unknown
/// emails are counted alike, so a lockout tells nothing about which emails exist. A sign-in
/// refused for want of a hashing slot (429 `TOO_MANY_REQUESTS`, 503) is refused before it is
/// counted: it checked nothing, and counting it let a flood lock real users out.
///
/// An email that does not parse cannot be an account: it is refused without a password check
/// (nor a slot, nor a count), as a wrong password is and no sooner than one typically is.
pub(super) async fn login(
    State(state): State<AppState>,
    source: Source,
    _: Query<requests::NoQuery>,
    jar: CookieJar,
    body: Body<requests::LoginRequest>,
) -> ApiResult<(CookieJar, Json<dto::AuthBody>)> {
    let requests::LoginRequest { email, password } = body.read()?;
    let Ok(email) = email.parse::<Email>() else {
        metrics::counter!("ledgerflow_logins_malformed_email_total").increment(1);
        wait_out_a_check().await;
        return Err(ApiError::InvalidCredentials);
    };
    let slot = state.hash_slots.take(source)?;
    claim_password_check(&state, &email).await?;
    let user = state.store.find_user_by_email(&email).await?;
    let right = slot.verify_password(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    drop(slot);
    if !right {
        return Err(ApiError::InvalidCredentials);
    }
    let user = user.ok_or(ApiError::InvalidCredentials)?;
    state.store.clear_login_failures(&email).await?;
    signed_in(&state, jar, &user)
}

#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    summary = "Sign out everywhere",
    request_body(content = requests::NoBody, description = "Empty or `{}`, sent as `application/json` like every state-changing request"),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Every token issued to the caller until now is refused from now on (by other gateways within seconds); the `token` cookie is cleared"),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `POST /api/auth/logout`: ends every session of the caller, not only this token's: a token
/// cannot be taken back one by one without a list of them, and a user who signs out because a
/// device was lost wants them all gone.
pub(super) async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    _: Query<requests::NoQuery>,
    jar: CookieJar,
    body: Body<requests::NoBody>,
) -> ApiResult<(StatusCode, CookieJar)> {
    body.read()?;
    let ended = state.store.end_sessions(user.id).await?.ok_or(ApiError::Unauthenticated)?;
    state.sessions.set(user.id, ended.session_version);
    tracing::info!(user_id = %user.id, "signed out everywhere");
    // An expired, empty cookie, sent whether or not this request came with one.
    let cleared = session_cookie(String::new(), std::time::Duration::ZERO, state.config.cookie_secure);
    Ok((StatusCode::NO_CONTENT, jar.add(cleared)))
}

#[utoipa::path(
    post,
    path = "/api/auth/password",
    tag = "auth",
    summary = "Change the caller's password",
    request_body = requests::PasswordChangeRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Changed; every earlier session is ended and the answer carries a new token (also set as the `token` cookie)", body = dto::AuthBody),
        (status = 403, description = "WRONG_PASSWORD: currentPassword is incorrect (counted with failed sign-ins); FORBIDDEN for a SYSTEM user, whose password operators set", body = ErrorBody),
        (status = 429, description = "TOO_MANY_ATTEMPTS: too many failed sign-ins or password checks for this email lately; TOO_MANY_REQUESTS: this client address has its share of sign-ins and sign-ups in progress already", body = ErrorBody),
        dto::AuthErrors, dto::BodyErrors, dto::Unavailable,
    )
)]
/// `POST /api/auth/password` `{currentPassword,newPassword}`: the current password is asked
/// for even with a valid token, so that a stolen token cannot take the account over; wrong
/// guesses count towards the same lockout as failed sign-ins. Every earlier session ends.
/// Not for SYSTEM users: operators set their passwords (`LEDGERFLOW_SYSTEM_PASSWORD`, which
/// every gateway re-applies at start, would silently undo one changed here).
pub(super) async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    source: Source,
    _: Query<requests::NoQuery>,
    jar: CookieJar,
    body: Body<requests::PasswordChangeRequest>,
) -> ApiResult<(CookieJar, Json<dto::AuthBody>)> {
    if user.is_system() {
        return Err(ApiError::Forbidden(
            "a SYSTEM user's password is set by operators (ledgerflow admin create-system-user)",
        ));
    }
    let requests::PasswordChangeRequest { current_password: current, new_password: new } = body.read()?;
    let record = state.store.find_user(user.id).await?.ok_or(ApiError::Unauthenticated)?;
    // The slot before the count, as for a sign-in; one slot for both computations.
    let slot = state.hash_slots.take(source)?;
    claim_password_check(&state, &record.email).await?;
    if !slot.verify_password(current, Some(record.password_hash)).await? {
        return Err(ApiError::WrongPassword);
    }
    let hash = slot.hash_password(new).await?;
    drop(slot);
    let changed = state.store.set_password(user.id, hash).await?.ok_or(ApiError::Unauthenticated)?;
    state.sessions.set(user.id, changed.session_version);
    state.store.clear_login_failures(&changed.email).await?;
    tracing::info!(user_id = %user.id, "password changed; earlier sessions ended");
    signed_in(&state, jar, &changed)
}

/// Counts a password check for `email` as failed until it succeeds (then the caller clears
/// the count); 429 if the email is locked out after failed sign-ins (or password checks).
async fn claim_password_check(state: &AppState, email: &Email) -> ApiResult<()> {
    let (max, window) = (state.config.login_max_failures, state.config.login_window);
    match state.store.claim_password_check(email, max, window).await? {
        Some(until) => {
            let secs = (until - chrono::Utc::now()).num_seconds().max(0).unsigned_abs() + 1;
            Err(ApiError::TooManyAttempts(secs))
        }
        None => Ok(()),
    }
}

fn signed_in(state: &AppState, jar: CookieJar, user: &UserRecord) -> ApiResult<(CookieJar, Json<dto::AuthBody>)> {
    let token = state.keys.issue(user.id, user.role, user.session_version)?;
    let jar = jar.add(session_cookie(token.clone(), state.keys.ttl(), state.config.cookie_secure));
    Ok((jar, Json(dto::AuthBody { user: dto::user(user), token })))
}
