//! Which sessions are still honoured. A token is signed, so it proves who it was issued to,
//! but not that the user still wants it honoured: it carries the user's session version of
//! that moment, and is refused once the version has moved on (sign-out, a new SYSTEM
//! password). Versions are read from MongoDB and remembered briefly, so a session ended
//! through another gateway, or by an operator, ends here within
//! [`GatewayConfig::session_recheck`].
//!
//! [`GatewayConfig::session_recheck`]: crate::GatewayConfig::session_recheck

use std::time::Duration;

use ledgerflow_domain::UserId;
use ledgerflow_store::{Store, StoreError};
use moka::sync::Cache;

/// Users remembered at most; a few dozen bytes each.
const CAPACITY: u64 = 100_000;

/// Each user's current session version, remembered for a short while.
pub(crate) struct SessionVersions {
    known: Cache<UserId, i64>,
}

impl SessionVersions {
    pub(crate) fn new(recheck: Duration) -> Self {
        Self { known: Cache::builder().max_capacity(CAPACITY).time_to_live(recheck).build() }
    }

    /// The user's current version; `None` if the user does not exist.
    pub(crate) async fn current(&self, store: &Store, user: UserId) -> Result<Option<i64>, StoreError> {
        if let Some(version) = self.known.get(&user) {
            return Ok(Some(version));
        }
        let Some(read) = store.session_version(user).await? else { return Ok(None) };
        Ok(Some(self.remember(user, read)))
    }

    /// Remembers a version this gateway has just set, so that its own sign-out takes effect
    /// here at once.
    pub(crate) fn set(&self, user: UserId, version: i64) {
        self.remember(user, version);
    }

    /// Versions only grow, so the larger of two is the newer: a read that began before a
    /// sign-out and ends after it cannot put the ended version back.
    fn remember(&self, user: UserId, version: i64) -> i64 {
        let entry =
            self.known.entry(user).and_upsert_with(|known| known.map_or(version, |k| (*k.value()).max(version)));
        entry.into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_read_before_a_sign_out_never_replaces_the_newer_one() {
        let sessions = SessionVersions::new(Duration::from_secs(60));
        let user = UserId::generate();
        assert_eq!(sessions.remember(user, 3), 3);
        sessions.set(user, 4);
        assert_eq!(sessions.remember(user, 3), 4, "the stale read loses");
        assert_eq!(sessions.known.get(&user), Some(4));
    }
}
