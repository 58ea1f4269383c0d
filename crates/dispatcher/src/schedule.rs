//! When a failed attempt is tried again: exponential backoff with full jitter (a uniformly
//! drawn delay up to `base × 2^tries`, at most `cap`), so that the deliveries that failed
//! together, when an endpoint went down, do not all come back together; until `horizon` after
//! the first attempt, then never. Pure: the random draw is an argument.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerflow_store::AttemptOutcome;

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The longest first delay; each further try doubles it.
    pub base: Duration,
    /// The longest any delay grows.
    pub cap: Duration,
    /// How long after its first attempt a delivery is given up.
    pub horizon: Duration,
}

/// What follows a failed attempt made at `now`, the `tries`-th since the delivery was queued
/// (1 for the first), whose first attempt was at `first`; `draw` is uniform in `[0, 1)`.
pub fn after_failure(
    policy: &RetryPolicy,
    tries: u32,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    draw: f64,
) -> AttemptOutcome {
    let ceiling = policy.base.saturating_mul(1 << tries.saturating_sub(1).min(30)).min(policy.cap);
    let delay = ceiling.mul_f64(draw.clamp(0.0, 1.0));
    let (Ok(delay), Ok(horizon)) = (chrono::Duration::from_std(delay), chrono::Duration::from_std(policy.horizon))
    else {
        return AttemptOutcome::Failed;
    };
    let next = now + delay;
    if next > first + horizon { AttemptOutcome::Failed } else { AttemptOutcome::RetryAt(next) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(10),
        cap: Duration::from_secs(3600),
        horizon: Duration::from_secs(72 * 3600),
    };

    fn delay(tries: u32, draw: f64) -> Option<Duration> {
        let now = Utc::now();
        match after_failure(&POLICY, tries, now, now, draw) {
            AttemptOutcome::RetryAt(at) => (at - now).to_std().ok(),
            _ => None,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_are_drawn_below_it() {
        assert_eq!(delay(1, 0.999_999), Some(Duration::from_secs(10).mul_f64(0.999_999)));
        assert_eq!(delay(2, 0.5), Some(Duration::from_secs(10)));
        assert_eq!(delay(3, 0.5), Some(Duration::from_secs(20)));
        assert_eq!(delay(20, 0.5), Some(Duration::from_secs(1800)), "capped at an hour");
        assert_eq!(delay(4_000_000_000, 0.5), Some(Duration::from_secs(1800)), "no overflow");
        assert_eq!(delay(5, 0.0), Some(Duration::ZERO), "full jitter reaches zero");
    }

    #[test]
    fn a_delivery_is_given_up_past_the_horizon_from_its_first_attempt() {
        let first = Utc::now();
        let almost = first + chrono::Duration::hours(72) - chrono::Duration::seconds(5);
        assert!(matches!(after_failure(&POLICY, 80, first, almost, 0.0), AttemptOutcome::RetryAt(_)));
        assert_eq!(after_failure(&POLICY, 80, first, almost, 0.5), AttemptOutcome::Failed);
    }
}
