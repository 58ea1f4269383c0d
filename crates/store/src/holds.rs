//! Hold expiry: a HELD hold past `expiresAt` becomes EXPIRED and its reservation is released,
//! by the system itself. Workers sweep for due holds (`ledgerflow-worker`); each expiry is one
//! commit through the same load → decide → write path as every command ([`decide::expire`]),
//! guarded by the hold being HELD and by the accounts' `seq` and reserved amounts as read, so
//! with several workers sweeping at once every hold expires exactly once, and never both
//! expires and posts: a post and an expiry of one hold write the same documents and only one
//! of them commits; the other re-reads and finds the hold settled.

use chrono::{DateTime, SubsecRound, Utc};
use futures::TryStreamExt;
use ledgerflow_domain::{TransactionId, TransactionStatus};
use mongodb::bson::doc;

use crate::decide;
use crate::docs::{EXPIRY_UNREPORTED, HELD_UNTIL, TransactionDoc, to_bson_time};
use crate::execute::{Reads, retrying};
use crate::{Store, StoreError, TransactionRecord};

/// How long one hold's expiry may keep retrying write conflicts before the sweep moves on.
const EXPIRY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

impl Store {
    /// Expires up to `limit` HELD holds whose `expiresAt` has passed, oldest first, and
    /// returns them as EXPIRED (those another process expired or settled meanwhile are left
    /// out). A stored hold that does not parse is skipped; `reconcile` reports it.
    pub async fn expire_due_holds(&self, limit: i64) -> Result<Vec<TransactionRecord>, StoreError> {
        let now = Utc::now().trunc_subsecs(3);
        // By `heldUntil`, which only holds that may still expire carry: a PENDING one past it
        // is left for its worker to decide (HELD, then expired by a later sweep).
        let due = doc! { HELD_UNTIL: { "$lte": to_bson_time(now) }, "status": TransactionStatus::Held.as_str() };
        let found: Vec<TransactionDoc> =
            self.transactions().find(due).sort(doc! { HELD_UNTIL: 1 }).limit(limit).await?.try_collect().await?;
        let mut expired = Vec::new();
        for doc in found {
            let Ok(hold) = TransactionRecord::try_from(doc) else { continue };
            let id = hold.id;
            // One hold whose accounts are locked (by a crashed worker's transaction, until
            // mongod aborts it) must not hold up the expiry of every hold behind it.
            match tokio::time::timeout(EXPIRY_PATIENCE, self.expire(&hold)).await {
                Ok(outcome) => expired.extend(outcome?),
                Err(_) => tracing::debug!(transaction_id = %id, "hold expiry keeps conflicting; next sweep"),
            }
        }
        Ok(expired)
    }

    /// Expired holds whose EXPIRED result has not been published yet, expired at or before
    /// `until` (oldest first, at most `limit`): the expiring worker failed to publish or died
    /// first. A stored hold that does not parse is skipped; `reconcile` reports it.
    pub async fn expiries_unreported(
        &self,
        until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<TransactionRecord>, StoreError> {
        let filter = doc! {
            EXPIRY_UNREPORTED: true,
            "status": TransactionStatus::Expired.as_str(),
            "resolvedAt": { "$lte": to_bson_time(until) },
        };
        let found: Vec<TransactionDoc> =
            self.transactions().find(filter).sort(doc! { "resolvedAt": 1 }).limit(limit).await?.try_collect().await?;
        Ok(found.into_iter().filter_map(|doc| TransactionRecord::try_from(doc).ok()).collect())
    }

    /// Notes that the EXPIRED results of `holds` are published.
    pub async fn expiries_reported(&self, holds: &[TransactionId]) -> Result<(), StoreError> {
        if holds.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = holds.iter().map(ToString::to_string).collect();
        let filter = doc! { "_id": { "$in": ids }, EXPIRY_UNREPORTED: true };
        self.transactions().update_many(filter, doc! { "$unset": { EXPIRY_UNREPORTED: "" } }).await?;
        Ok(())
    }

    /// Expires one hold, read outside the transaction; in it, the hold is judged again.
    async fn expire(&self, hold: &TransactionRecord) -> Result<Option<TransactionRecord>, StoreError> {
        let reads = Reads::of_hold(hold);
        let expire = || async { self.transact(&reads, |loaded, now| decide::expire(loaded, hold.id, now)).await? };
        retrying(EXPIRY_PATIENCE, expire).await.map_err(|(e, _)| e)
    }
}
