//! What never changes about an account once it exists, its owner and its currency, kept in
//! memory so that accepting a transfer costs no read of the accounts collection after the
//! first one for its two accounts.
//!
//! The status is deliberately not here: it changes (suspend, close), and the worker judges it
//! inside the transaction that moves the money. Unknown accounts are not remembered either:
//! one may be opened a moment later.

use ledgerflow_domain::{AccountId, Currency, UserId};
use ledgerflow_store::{AccountRecord, Store, StoreError};
use moka::sync::Cache;

/// Accounts remembered at most; about 100 bytes each.
const CAPACITY: u64 = 100_000;

/// An account's immutable facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `None` for a currency's funding account.
    pub owner: Option<UserId>,
    pub currency: Currency,
}

impl From<&AccountRecord> for Facts {
    fn from(a: &AccountRecord) -> Self {
        Self { owner: a.owner_id, currency: a.currency }
    }
}

/// A bounded cache of [`Facts`], shared by every request of a gateway.
pub(crate) struct AccountFacts {
    known: Cache<AccountId, Facts>,
}

impl Default for AccountFacts {
    fn default() -> Self {
        Self { known: Cache::new(CAPACITY) }
    }
}

impl AccountFacts {
    /// The facts of each account, `None` where none exists; what is not yet known is read in
    /// one query.
    pub(crate) async fn get<const N: usize>(
        &self,
        store: &Store,
        ids: [AccountId; N],
    ) -> Result<[Option<Facts>; N], StoreError> {
        let found = self.get_each(store, &ids).await?;
        let mut found = found.into_iter();
        Ok(std::array::from_fn(|_| found.next().flatten()))
    }

    /// [`AccountFacts::get`] for any number of accounts.
    pub(crate) async fn get_each(&self, store: &Store, ids: &[AccountId]) -> Result<Vec<Option<Facts>>, StoreError> {
        let mut found: Vec<Option<Facts>> = ids.iter().map(|id| self.known.get(id)).collect();
        if found.iter().all(Option::is_some) {
            return Ok(found);
        }
        let read = store.find_each_account(ids).await?;
        for ((slot, id), record) in found.iter_mut().zip(ids).zip(&read) {
            if let Some(record) = record {
                let facts = Facts::from(record);
                self.known.insert(*id, facts);
                *slot = Some(facts);
            }
        }
        Ok(found)
    }

    /// Reads the facts of those of `ids` not yet known in one query, so that the requests
    /// naming them next (a batch's items) find them here instead of reading one by one.
    pub(crate) async fn prefetch(&self, store: &Store, ids: &[AccountId]) -> Result<(), StoreError> {
        let mut unknown: Vec<AccountId> = ids.iter().copied().filter(|id| !self.known.contains_key(id)).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        for record in store.accounts_among(&unknown).await? {
            self.known.insert(record.id, Facts::from(&record));
        }
        Ok(())
    }
}
