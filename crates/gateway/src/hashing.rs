//! Password hashing: the one thread that runs argon2, the slots sign-ins and sign-ups take on
//! it (shared fairly between clients), and how long a check typically takes.
//!
//! A slot is taken before anything else of a sign-in happens, the lockout count included: a
//! sign-in refused for want of one has checked no password, so it counts for nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use ledgerflow_domain::Password;

use crate::error::ApiError;
use crate::source::Source;

/// Argon2id with OWASP's m=7 MiB, t=5, p=1: one of the configurations its password storage
/// cheat sheet rates equal in strength to m=19 MiB, t=2, picked because the gateway keeps the
/// buffer of each concurrent hash. Verification reads the parameters from the stored hash, so
/// hashes made with other parameters still verify.
fn argon2() -> Argon2<'static> {
    let params = argon2::Params::new(7 * 1024, 5, 1, None).unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

type Job = Box<dyn FnOnce() + Send>;

/// Sign-ups, sign-ins and password changes in flight on one gateway at once: waiting for the
/// hashing thread, on it, or between taking their slot and reaching it (the lockout count and
/// the user's record are read with the slot held). Past it one is answered 503 at once (shed)
/// instead of queueing behind a flood: each would hold its request for ever longer and, when
/// its turn came, a core for tens of milliseconds.
pub const HASH_SLOTS: usize = 32;

/// Slots one client (see [`Source`]) may hold at once by default (see
/// [`HashSlots::new`]): a quarter of them, so one client, however fast it sends, leaves three
/// quarters of the queue to everybody else, and each of them waits behind at most eight of its
/// checks. Enough for many people behind one address: a check takes tens of milliseconds, so
/// eight at once are far more sign-ins per second than people behind one NAT make.
pub const DEFAULT_SLOTS_PER_CLIENT: usize = 8;

/// One thread per gateway runs every argon2 computation, one at a time. Each holds 7 MiB and a
/// core for tens of milliseconds: a burst of sign-ups and logins queues here (up to
/// [`HASH_SLOTS`]) instead of growing the process, and the other core keeps serving transfers.
/// Sign-ups and logins are rare next to transfers (a token lasts hours); add gateways for
/// more. A thread of its own rather than tokio's blocking pool because the allocator keeps a
/// thread's freed 7 MiB for that thread's reuse: on the pool, each thread that ever hashed kept
/// a copy until it idled out (measured: RSS 59 MB for the first 10 s of a benchmark, 45 MB
/// after). The channel holds as many jobs as there are slots, and each job keeps its slot
/// until the thread has taken it, so it is never full while a slot is free.
static HASHER: LazyLock<Option<mpsc::SyncSender<Job>>> = LazyLock::new(|| {
    let (jobs, queue) = mpsc::sync_channel::<Job>(HASH_SLOTS);
    let spawned = std::thread::Builder::new().name("argon2".into()).spawn(move || {
        for job in queue {
            // A panicking job must not take the thread, and with it every later sign-in.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    });
    spawned.map_err(|e| tracing::error!(error = %e, "cannot start the argon2 thread")).ok()?;
    Some(jobs)
});

/// Runs an argon2 computation on the hashing thread and waits for it; `lease` (if any) is held
/// until the thread has run or skipped the job. A request that is gone by its turn (the client
/// gave up) costs no computation.
async fn hashing<T: Send + 'static>(
    lease: Option<Arc<Lease>>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _lease = lease;
        if !done.is_closed() {
            let _ = done.send(work());
        }
    });
    let Some(hasher) = HASHER.as_ref() else { return Err(ApiError::Internal) };
    match hasher.try_send(job) {
        Ok(()) => result.await.map_err(|_| ApiError::Internal),
        // Only unmetered computations (at start, by operators) can find it full.
        Err(mpsc::TrySendError::Full(_)) => Err(shed()),
        Err(mpsc::TrySendError::Disconnected(_)) => Err(ApiError::Internal),
    }
}

fn shed() -> ApiError {
    metrics::counter!("ledgerflow_password_hashes_shed_total").increment(1);
    ApiError::Unavailable("too many sign-ins at once, try again")
}

/// The hashing slots of one gateway, and who holds them.
pub struct HashSlots {
    per_client: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    /// Slots held by each client that holds any: at most [`HASH_SLOTS`] entries.
    by_client: HashMap<Source, usize>,
}

impl HashSlots {
    /// Slots for [`HASH_SLOTS`] computations in flight, at most `per_client` of them (at
    /// least one, at most all) for any one client.
    pub fn new(per_client: usize) -> Arc<Self> {
        Arc::new(Self { per_client: per_client.clamp(1, HASH_SLOTS), held: Mutex::default() })
    }

    /// A slot for `client`, or the refusal to answer at once: 429 when this client holds its
    /// share already, 503 when every slot is taken. A per-client count rather than a rate
    /// (`governor`'s kind of limit): what a flood takes from others is places in this queue,
    /// and a rate would have to be tuned to how fast this machine hashes.
    pub fn take(self: &Arc<Self>, client: Source) -> Result<HashSlot, ApiError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = held.by_client.get(&client).copied().unwrap_or(0);
        if mine >= self.per_client {
            metrics::counter!("ledgerflow_password_hashes_limited_total").increment(1);
            return Err(ApiError::TooManyRequests);
        }
        if held.total >= HASH_SLOTS {
            return Err(shed());
        }
        held.total += 1;
        held.by_client.insert(client, mine + 1);
        Ok(HashSlot(Arc::new(Lease { slots: Arc::clone(self), client })))
    }

    fn release(&self, client: Source) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(1);
        if let Some(mine) = held.by_client.get_mut(&client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                held.by_client.remove(&client);
            }
        }
    }
}

/// One slot, given back when the request and its last computation are both done.
struct Lease {
    slots: Arc<HashSlots>,
    client: Source,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slots.release(self.client);
    }
}

/// A slot on the hashing thread, held by one request (for one computation or several).
pub struct HashSlot(Arc<Lease>);

impl HashSlot {
    /// Hashes a password with argon2id (it is deliberately slow).
    pub async fn hash_password(&self, password: Password) -> Result<String, ApiError> {
        hash(Some(Arc::clone(&self.0)), password).await
    }

    /// Checks a password against a stored hash (or, for an unknown email, the decoy); an error
    /// only when it could not be checked.
    pub async fn verify_password(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        verify(Some(Arc::clone(&self.0)), password, hash).await
    }
}

/// Hashes a password without a slot: for operators and the gateway's start, never for a
/// request (which takes a [`HashSlot`]).
pub async fn hash_password(password: Password) -> Result<String, ApiError> {
    hash(None, password).await
}

/// Checks a password without a slot: for the gateway's start, never for a request.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    verify(None, password, hash).await
}

async fn hash(lease: Option<Arc<Lease>>, password: Password) -> Result<String, ApiError> {
    hashing(lease, move || {
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

async fn verify(lease: Option<Arc<Lease>>, password: String, hash: Option<String>) -> Result<bool, ApiError> {
    hashing(lease, move || {
        let real = hash.is_some();
        let Some(hash) = hash.or_else(|| DECOY_HASH.clone()) else { return false };
        let Ok(parsed) = PasswordHash::new(&hash) else { return false };
        let started = Instant::now();
        let right = argon2().verify_password(password.as_bytes(), &parsed).is_ok();
        TYPICAL_CHECK.record(started.elapsed());
        right && real
    })
    .await
}

/// How long a password check takes on this machine, in microseconds: measured once at start
/// ([`measure_a_check`]), then a moving average of every check since (1/8 weight each), so
/// that it follows the machine's load. Zero until the first check.
static TYPICAL_CHECK: TypicalCheck = TypicalCheck(AtomicU64::new(0));

/// Until a check has been measured: a guess of the right order (tens of milliseconds).
const CHECK_GUESS: Duration = Duration::from_millis(50);

struct TypicalCheck(AtomicU64);

impl TypicalCheck {
    fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Only the hashing thread records, so a load and a store cannot race another record.
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.0.store(new.max(1), Ordering::Relaxed);
    }

    fn get(&self) -> Duration {
        match self.0.load(Ordering::Relaxed) {
            0 => CHECK_GUESS,
            micros => Duration::from_micros(micros),
        }
    }
}

/// Measures a password check (against the decoy, which it also computes) so that
/// [`wait_out_a_check`] has a figure before the first sign-in. Run at start, off the request
/// path; costs two argon2 computations once.
pub async fn measure_a_check() {
    if let Err(e) = verify(None, String::new(), None).await {
        tracing::warn!(error = %e, "could not measure a password check; guessing {CHECK_GUESS:?}");
    }
}

/// Waits about as long as a password check takes, without making one (or using a CPU): what
/// a sign-in that cannot concern any account costs, so that it answers no sooner than a wrong
/// password does.
pub async fn wait_out_a_check() {
    tokio::time::sleep(TYPICAL_CHECK.get()).await;
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn client(ip: &str) -> Source {
        Source::of(ip.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn one_client_holds_at_most_its_share_and_every_slot_comes_back() {
        let slots = HashSlots::new(3);
        let mine: Vec<_> = (0..3).map(|_| slots.take(client("192.0.2.1")).unwrap()).collect();
        assert!(matches!(slots.take(client("192.0.2.1")), Err(ApiError::TooManyRequests)));
        // Others still get theirs, until every slot is taken.
        let others: Vec<_> =
            (0..HASH_SLOTS - 3).map(|i| slots.take(client(&format!("198.51.100.{i}"))).unwrap()).collect();
        assert!(matches!(slots.take(client("203.0.113.9")), Err(ApiError::Unavailable(_))));
        drop(mine);
        drop(others);
        let held = slots.held.lock().unwrap();
        assert_eq!((held.total, held.by_client.len()), (0, 0));
    }

    #[test]
    fn a_share_is_at_least_one_slot_and_at_most_all() {
        assert_eq!(HashSlots::new(0).per_client, 1);
        assert_eq!(HashSlots::new(1000).per_client, HASH_SLOTS);
    }

    #[test]
    fn the_typical_check_follows_the_measurements() {
        let typical = TypicalCheck(AtomicU64::new(0));
        assert_eq!(typical.get(), CHECK_GUESS);
        typical.record(Duration::from_millis(40));
        assert_eq!(typical.get(), Duration::from_millis(40));
        typical.record(Duration::from_millis(120));
        assert_eq!(typical.get(), Duration::from_millis(50));
    }
}
