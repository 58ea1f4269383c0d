//! Authentication: HS256 JWTs, and the [`AuthUser`] extractor that accepts a token from
//! `Authorization: Bearer` or the `token` cookie. Password hashes are [`crate::hashing`]'s.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum_extra::extract::cookie::{Cookie, SameSite};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ledgerflow_domain::{Initiator, Role, UserId};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// The name of the session cookie.
pub const COOKIE: &str = "token";

/// Signing and verification keys for one HMAC secret.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

/// How far apart two gateways' clocks may be: a token is honoured this long past its `exp`
/// and this long before its `nbf`, and no longer. Not the JWT library's 60 s default: an
/// expired or signed-out session must end when it says it does.
const CLOCK_SKEW: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    exp: u64,
    iat: u64,
    /// Not valid before (tokens issued before it was set carry none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    /// The user's session version when the token was issued (see `sessions`); tokens from
    /// before there were versions carry none, which is version 0.
    #[serde(default)]
    sv: i64,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for the user's current session version.
    pub fn issue(&self, user: UserId, role: Role, session_version: i64) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let claims = Claims {
            sub: user.to_string(),
            role,
            iat: now,
            nbf: Some(now),
            exp: now + self.ttl.as_secs(),
            sv: session_version,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| {
            tracing::error!(error = %e, "could not sign token");
            ApiError::Internal
        })
    }

    /// The caller a token was signed for, and the session version it carries.
    fn verify(&self, token: &str) -> Result<(AuthUser, i64), ApiError> {
        // Only HS256: a token that names another algorithm (or `none`) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = CLOCK_SKEW.as_secs();
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| ApiError::Unauthenticated)?;
        // A token that outlives the configured lifetime was not issued under it (a leaked
        // secret, or a lifetime since shortened): refused.
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        if data.claims.exp > now + self.ttl.as_secs() + CLOCK_SKEW.as_secs() {
            return Err(ApiError::Unauthenticated);
        }
        let id = data.claims.sub.parse().map_err(|_| ApiError::Unauthenticated)?;
        Ok((AuthUser { id, role: data.claims.role }, data.claims.sv))
    }
}

/// The caller, as proven by a valid token of a session that has not been ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub id: UserId,
    pub role: Role,
}

impl AuthUser {
    pub fn is_system(&self) -> bool {
        self.role == Role::System
    }

    pub fn require_system(&self) -> Result<(), ApiError> {
        if self.is_system() { Ok(()) } else { Err(ApiError::Forbidden("this operation requires the SYSTEM role")) }
    }

    pub fn initiator(&self) -> Initiator {
        Initiator::User(self.id)
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            // The scheme is case-insensitive (RFC 9110, 11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned());
        let token = match bearer {
            Some(t) => t,
            None => session_cookie_of(&parts.headers)?,
        };
        let (user, version) = state.keys.verify(&token)?;
        match state.sessions.current(&state.store, user.id).await? {
            Some(current) if current == version => Ok(user),
            // Signed out since (or the user is gone): the signature alone is not enough.
            _ => Err(ApiError::Unauthenticated),
        }
    }
}

/// The one session cookie a request carries. Two `token` cookies (one planted for a
/// narrower path or a parent domain, say) are refused rather than one of them picked: which
/// one a browser sends first is not the server's to guess.
fn session_cookie_of(headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    let mut tokens = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned());
    match (tokens.next(), tokens.next()) {
        (Some(token), None) => Ok(token),
        _ => Err(ApiError::Unauthenticated),
    }
}

/// The session cookie carrying `token`: HttpOnly (no script can read it), SameSite=Strict
/// (no cross-site request carries it), Secure unless configured off for plain-HTTP dev.
pub fn session_cookie(token: String, ttl: Duration, secure: bool) -> Cookie<'static> {
    Cookie::build((COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path("/")
        .max_age(time::Duration::seconds(ttl.as_secs() as i64))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a test secret of enough length for HS256";

    fn keys() -> JwtKeys {
        JwtKeys::new(SECRET, Duration::from_secs(3600))
    }

    /// A token signed with the right key whose times are `now` shifted by these seconds.
    fn token(exp: i64, nbf: Option<i64>) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: UserId::generate().to_string(),
            role: Role::User,
            iat: now as u64,
            nbf: nbf.map(|n| (now + n) as u64),
            exp: (now + exp) as u64,
            sv: 0,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn a_token_is_honoured_within_its_times_and_a_few_seconds_of_skew_only() {
        let keys = keys();
        let user = UserId::generate();
        assert!(keys.verify(&keys.issue(user, Role::User, 0).unwrap()).is_ok());
        assert!(keys.verify(&token(60, None)).is_ok(), "a token from before nbf was issued");
        assert!(keys.verify(&token(-2, Some(-100))).is_ok(), "expired within the skew");
        for (exp, nbf, why) in [
            (-10, Some(-100), "expired 10 s ago"),
            (60, Some(30), "not valid for another 30 s"),
            (3600 + 60, Some(0), "outlives the configured lifetime"),
        ] {
            assert!(matches!(keys.verify(&token(exp, nbf)), Err(ApiError::Unauthenticated)), "{why}");
        }
    }
}
