//! Which sessions are still honoured. A token is signed, so it proves who it was issued to,
//! but not that the user still wants it honoured: it carries the user's session version of
//! that moment, and is refused once the version has moved on (sign-out, a new SYSTEM
//! password). Versions are read from MongoDB and remembered briefly, so a session ended
//! through another gateway, or by an operator, ends here within [`GatewayConfig::session_recheck`].
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
        let version = store.session_version(user).await?;
        if let Some(version) = version {
            self.known.insert(user, version);
        }
        Ok(version)
    }

    /// Remembers a version this gateway has just set, so that its own sign-out takes effect here at once.
    pub(crate) fn set(&self, user: UserId, version: i64) {
        self.known.insert(user, version);
    }
}
