//! Authentication: argon2id password hashes, HS256 JWTs, and the [`AuthUser`] extractor that
//! accepts a token from `Authorization: Bearer` or the `token` cookie.

use std::sync::{LazyLock, mpsc};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum_extra::extract::cookie::{Cookie, SameSite};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ledgerflow_domain::{Initiator, Password, Role, UserId};
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

/// Argon2id with OWASP's m=7 MiB, t=5, p=1: one of the configurations its password storage
/// cheat sheet rates equal in strength to m=19 MiB, t=2, picked because the gateway keeps the
/// buffer of each concurrent hash. Verification reads the parameters from the stored hash, so
/// hashes made with other parameters still verify.
fn argon2() -> Argon2<'static> {
    let params = argon2::Params::new(7 * 1024, 5, 1, None).unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

type Job = Box<dyn FnOnce() + Send>;

/// Most argon2 computations waiting for the hashing thread. Past it a sign-up or login is
/// answered 503 at once (shed) instead of queueing behind a flood: each would hold its request
/// for ever longer and, when its turn came, a core for tens of milliseconds.
const HASH_QUEUE: usize = 32;

/// One thread per gateway runs every argon2 computation, one at a time. Each holds 7 MiB and a
/// core for tens of milliseconds: a burst of sign-ups and logins queues here (up to
/// [`HASH_QUEUE`]) instead of growing the process, and the other core keeps serving transfers.
/// Sign-ups and logins are rare next to transfers (a token lasts hours); add gateways for
/// more. A thread of its own rather than tokio's blocking pool because the allocator keeps a
/// thread's freed 7 MiB for that thread's reuse: on the pool, each thread that ever hashed kept
/// a copy until it idled out (measured: RSS 59 MB for the first 10 s of a benchmark, 45 MB
/// after).
static HASHER: LazyLock<Option<mpsc::SyncSender<Job>>> = LazyLock::new(|| {
    let (jobs, queue) = mpsc::sync_channel::<Job>(HASH_QUEUE);
    let spawned = std::thread::Builder::new().name("argon2".into()).spawn(move || {
        for job in queue {
            // A panicking job must not take the thread, and with it every later sign-in.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    });
    spawned.map_err(|e| tracing::error!(error = %e, "cannot start the argon2 thread")).ok()?;
    Some(jobs)
});

/// Runs an argon2 computation on the hashing thread and waits for it: 503 when the queue is
/// full. A request that is gone by its turn (the client gave up) costs no computation.
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        if !done.is_closed() {
            let _ = done.send(work());
        }
    });
    let Some(hasher) = HASHER.as_ref() else { return Err(ApiError::Internal) };
    match hasher.try_send(job) {
        Ok(()) => result.await.map_err(|_| ApiError::Internal),
        Err(mpsc::TrySendError::Full(_)) => {
            metrics::counter!("ledgerflow_password_hashes_shed_total").increment(1);
            Err(ApiError::Unavailable("too many sign-ins at once, try again"))
        }
        Err(mpsc::TrySendError::Disconnected(_)) => Err(ApiError::Internal),
    }
}

/// Hashes a password with argon2id on the hashing thread (it is deliberately slow).
pub async fn hash_password(password: Password) -> Result<String, ApiError> {
    hashing(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2().hash_password(password.expose().as_bytes(), &salt).map(|h| h.to_string())
    })
    .await?
    .map_err(|e| {
        tracing::error!(error = %e, "could not hash password");
        ApiError::Internal
    })
}

/// A hash of a random password nobody knows, verified against when the email is unknown so
/// that a login takes as long whether or not the account exists.
static DECOY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    let secret = SaltString::generate(&mut OsRng);
    argon2().hash_password(secret.as_str().as_bytes(), &salt).map(|h| h.to_string()).ok()
});

/// Checks a password against a stored hash (or the decoy), on the hashing thread; an error
/// only when it could not be checked (shed, or the thread is gone).
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    hashing(move || {
        let real = hash.is_some();
        let Some(hash) = hash.or_else(|| DECOY_HASH.clone()) else { return false };
        let Ok(parsed) = PasswordHash::new(&hash) else { return false };
        argon2().verify_password(password.as_bytes(), &parsed).is_ok() && real
    })
    .await
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
