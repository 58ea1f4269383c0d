//! Hold expiry: a HELD hold past `expiresAt` becomes EXPIRED and its reservation is released,
//! by the system itself. Workers sweep for due holds (`ledgerflow-worker`); each expiry is one
//! MongoDB transaction guarded by the hold being HELD, so with several workers sweeping at once
//! every hold expires exactly once, and never both expires and posts: a post and an expiry of
//! one hold write the same documents and only one of them commits.

use chrono::{DateTime, SubsecRound, Utc};
use futures::{FutureExt, TryStreamExt};
use ledgerflow_domain::TransactionStatus;
use mongodb::bson::doc;
use mongodb::options::{ReadConcern, WriteConcern};

use crate::docs::{TransactionDoc, to_bson_time};
use crate::{Store, StoreError, TransactionRecord};

/// How long one hold's expiry may keep retrying write conflicts before the sweep moves on.
const EXPIRY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

impl Store {
    /// Expires up to `limit` HELD holds whose `expiresAt` has passed, oldest first, and
    /// returns them as EXPIRED (those another process expired or settled meanwhile are left
    /// out). A stored hold that does not parse is skipped; `reconcile` reports it.
    pub async fn expire_due_holds(&self, limit: i64) -> Result<Vec<TransactionRecord>, StoreError> {
        let now = Utc::now().trunc_subsecs(3);
        let due = doc! { "status": TransactionStatus::Held.as_str(), "expiresAt": { "$lte": to_bson_time(now) } };
        let found: Vec<TransactionDoc> =
            self.transactions().find(due).sort(doc! { "expiresAt": 1 }).limit(limit).await?.try_collect().await?;
        let mut expired = Vec::new();
        for doc in found {
            let Ok(hold) = TransactionRecord::try_from(doc) else { continue };
            let id = hold.id;
            // One hold whose accounts are locked (by a crashed worker's transaction, until
            // mongod aborts it) must not hold up the expiry of every hold behind it.
            match tokio::time::timeout(EXPIRY_PATIENCE, self.expire(hold, now)).await {
                Ok(outcome) => expired.extend(outcome?),
                Err(_) => tracing::debug!(transaction_id = %id, "hold expiry keeps conflicting; next sweep"),
            }
        }
        Ok(expired)
    }

    /// Expires one hold read outside the transaction: in it, the hold must still be HELD.
    async fn expire(
        &self,
        hold: TransactionRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let mut session = self.client.start_session().await?;
        let context = (self.transactions(), self.accounts(), hold.clone());
        // Owned context, not captures: the driver re-runs the closure on transient errors.
        let expired = session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .and_run(context, |s, (transactions, accounts, hold)| {
                async move {
                    let held = doc! { "_id": hold.id.to_string(), "status": TransactionStatus::Held.as_str() };
                    let expire = doc! {
                        "$set": { "status": TransactionStatus::Expired.as_str(), "resolvedAt": to_bson_time(now) },
                    };
                    if transactions.update_one(held, expire).session(&mut *s).await?.modified_count == 0 {
                        return Ok(false);
                    }
                    let amount = hold.amount.minor();
                    let release = |side: &str| doc! { "$inc": { side: -amount } };
                    accounts
                        .update_one(doc! { "_id": hold.from_account.to_string() }, release("pendingDebits"))
                        .session(&mut *s)
                        .await?;
                    accounts
                        .update_one(doc! { "_id": hold.to_account.to_string() }, release("pendingCredits"))
                        .session(&mut *s)
                        .await?;
                    Ok(true)
                }
                .boxed()
            })
            .await?;
        Ok(expired.then_some(TransactionRecord { status: TransactionStatus::Expired, resolved_at: Some(now), ..hold }))
    }
}
