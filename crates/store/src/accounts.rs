//! Accounts, their derived balances and their entry history.

use futures::{FutureExt, TryStreamExt};
use ledgerflow_domain::limits::may_set_limits;
use ledgerflow_domain::{
    AccountId, AccountLimits, AccountSnapshot, AccountStatus, Balance, Currency, LimitRefusal, MAX_ACCOUNTS_PER_USER,
    Metadata, StatusRefusal, UserId,
};
use mongodb::bson::{Document, doc};
use mongodb::options::{ReadConcern, WriteConcern};

use crate::docs::{AccountDoc, metadata_doc, reserved_guard};
use crate::{AccountRecord, EntryRecord, MAX_PAGE, Store, StoreError};

impl Store {
    /// Opens an account for `owner` unless they already own [`MAX_ACCOUNTS_PER_USER`] (`None`
    /// then). The count is taken inside a transaction that also bumps the owner's
    /// `accountsOpened`, so two openings by one user at once conflict and the later one
    /// counts again: the cap holds exactly.
    pub async fn open_account(&self, owner: UserId, currency: Currency) -> Result<Option<AccountRecord>, StoreError> {
        self.open_labelled_account(owner, currency, &Metadata::default()).await
    }

    /// [`Store::open_account`], with the owner's labels.
    pub async fn open_labelled_account(
        &self,
        owner: UserId,
        currency: Currency,
        metadata: &Metadata,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let mut doc = AccountDoc::active(AccountId::generate(), Some(owner), currency);
        doc.metadata = (!metadata.is_empty()).then(|| metadata_doc(metadata));
        let mut session = self.client.start_session().await?;
        // Owned context, not captures: the driver retries the closure on conflicts, and
        // borrowed captures trip a compiler bug (rust-lang/rust#96865) in axum handlers.
        let context = (self.users(), self.accounts(), owner.to_string(), doc.clone());
        let opened = session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .and_run(context, |s, (users, accounts, owner, doc)| {
                async move {
                    let owned = accounts.count_documents(doc! { "ownerId": &*owner }).session(&mut *s).await?;
                    if owned >= MAX_ACCOUNTS_PER_USER {
                        return Ok(false);
                    }
                    let bump = doc! { "$inc": { "accountsOpened": 1 } };
                    users.update_one(doc! { "_id": &*owner }, bump).session(&mut *s).await?;
                    accounts.insert_one(&*doc).session(&mut *s).await?;
                    Ok(true)
                }
                .boxed()
            })
            .await?;
        opened.then(|| doc.try_into()).transpose()
    }

    /// An account without the per-user cap: for the bench's raw phase, whose accounts belong
    /// to no user.
    pub async fn insert_account(&self, owner: UserId, currency: Currency) -> Result<AccountRecord, StoreError> {
        let doc = AccountDoc::active(AccountId::generate(), Some(owner), currency);
        self.accounts().insert_one(&doc).await?;
        doc.try_into()
    }

    /// Several accounts in one query, in the order asked.
    pub async fn find_accounts<const N: usize>(
        &self,
        ids: [AccountId; N],
    ) -> Result<[Option<AccountRecord>; N], StoreError> {
        let found = self.find_each_account(&ids).await?;
        let mut found = found.into_iter();
        Ok(std::array::from_fn(|_| found.next().flatten()))
    }

    /// Each of `ids`' accounts, in order, `None` where there is none: one query.
    pub async fn find_each_account(&self, ids: &[AccountId]) -> Result<Vec<Option<AccountRecord>>, StoreError> {
        let found = self.accounts_among(ids).await?;
        Ok(ids.iter().map(|id| found.iter().find(|record| record.id == *id).cloned()).collect())
    }

    /// Those of `ids` that exist, in one query, in no particular order.
    pub async fn accounts_among(&self, ids: &[AccountId]) -> Result<Vec<AccountRecord>, StoreError> {
        let wanted: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let cursor = self.accounts().find(doc! { "_id": { "$in": wanted } }).await?;
        let docs: Vec<_> = cursor.try_collect().await?;
        docs.into_iter().map(AccountRecord::try_from).collect()
    }

    pub async fn find_account(&self, id: AccountId) -> Result<Option<AccountRecord>, StoreError> {
        let doc = self.accounts().find_one(doc! { "_id": id.to_string() }).await?;
        doc.map(TryInto::try_into).transpose()
    }

    /// Accounts in id (creation) order, optionally only one owner's, after `cursor`.
    pub async fn list_accounts(
        &self,
        owner: Option<UserId>,
        limit: i64,
        after: Option<AccountId>,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let mut filter = doc! {};
        if let Some(owner) = owner {
            filter.insert("ownerId", owner.to_string());
        }
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": after.to_string() });
        }
        let docs: Vec<AccountDoc> = self
            .accounts()
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(limit.clamp(1, MAX_PAGE))
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(TryInto::try_into).collect()
    }

    /// All account ids one user owns, to scope transaction listings (bounded; `open_account`
    /// keeps every user far below the bound).
    pub async fn account_ids_of(&self, owner: UserId) -> Result<Vec<AccountId>, StoreError> {
        // Not the domain's cap of MAX_ACCOUNTS_PER_USER: a backstop ten times above it.
        const LISTED_AT_MOST: i64 = 1_000;
        let docs: Vec<AccountDoc> = self
            .accounts()
            .find(doc! { "ownerId": owner.to_string() })
            .limit(LISTED_AT_MOST)
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(|d| AccountRecord::try_from(d).map(|a| a.id)).collect()
    }

    /// Sets an account's status if the domain allows it ([`AccountSnapshot::may_become`]);
    /// `None` if there is no such account. Funding accounts are not client accounts and
    /// cannot be changed here. An account is never closed with money or open holds in it.
    pub async fn set_account_status(
        &self,
        id: AccountId,
        status: AccountStatus,
    ) -> Result<Option<Result<AccountRecord, StatusRefusal>>, StoreError> {
        self.change_account(id, |account, balance| {
            let snapshot = AccountSnapshot {
                id,
                status: account.status,
                currency: account.currency,
                balance,
                reserved: account.reserved,
                limits: account.limits,
            };
            snapshot.may_become(status)?;
            Ok((account.status != status).then(|| doc! { "$set": { "status": status.as_str() } }))
        })
        .await
    }

    /// Sets an account's limits if the domain allows it ([`ledgerflow_domain::limits`]);
    /// `None` if there is no such client account. The overdraft line is never lowered past
    /// money that was spent or held.
    pub async fn set_account_limits(
        &self,
        id: AccountId,
        limits: AccountLimits,
    ) -> Result<Option<Result<AccountRecord, LimitRefusal>>, StoreError> {
        self.change_account(id, |account, balance| {
            may_set_limits(balance, account.reserved, limits)?;
            Ok(Some(doc! {
                "$set": { "overdraftLimit": limits.overdraft(), "maxBalance": limits.max_balance() },
                "$max": { "peakOverdraft": limits.overdraft() },
            }))
        })
        .await
    }

    /// Applies the update `judge` makes of a client account as read and its balance (`None`:
    /// nothing to change; `Err`: refused), or `None` if there is no such client account.
    ///
    /// The write is guarded by what was read: the `seq`, which every posting bumps on both its
    /// accounts, the reserved amounts, which every hold and settlement moves, and the status.
    /// A decision that commits between the read and the write makes the write miss (it is
    /// judged again), and one still in flight conflicts with it and re-reads the account.
    async fn change_account<R>(
        &self,
        id: AccountId,
        judge: impl Fn(&AccountRecord, Balance) -> Result<Option<Document>, R>,
    ) -> Result<Option<Result<AccountRecord, R>>, StoreError> {
        const ATTEMPTS: u32 = 10;
        let client_account = doc! { "_id": id.to_string(), "ownerId": { "$ne": null } };
        for _ in 0..ATTEMPTS {
            let Some(doc) = self.accounts().find_one(client_account.clone()).await? else {
                return Ok(None);
            };
            let account = AccountRecord::try_from(doc)?;
            // Read after the account, so it holds at least every posting up to the `seq` the
            // write is guarded by.
            let balance = self.balance(id).await?;
            let update = match judge(&account, balance) {
                Err(refusal) => return Ok(Some(Err(refusal))),
                Ok(None) => return Ok(Some(Ok(account))),
                Ok(Some(update)) => update,
            };
            let guarded = doc! {
                "_id": id.to_string(),
                "seq": account.seq,
                "status": account.status.as_str(),
                "pendingDebits": reserved_guard(account.reserved.debits),
                "pendingCredits": reserved_guard(account.reserved.credits),
            };
            let updated = self
                .accounts()
                .find_one_and_update(guarded, update)
                .return_document(mongodb::options::ReturnDocument::After)
                .await?;
            if let Some(doc) = updated {
                return Ok(Some(Ok(doc.try_into()?)));
            }
        }
        Err(StoreError::Contention { attempts: ATTEMPTS })
    }

    /// The balance derived from the ledger: the `balanceAfter` of the latest entry, found by
    /// the unique `(accountId, seq)` index, so it costs the same at any history length.
    pub async fn balance(&self, id: AccountId) -> Result<Balance, StoreError> {
        let latest = self.entries().find_one(doc! { "accountId": id.to_string() }).sort(doc! { "seq": -1 }).await?;
        Ok(latest.map_or(Balance::ZERO, |e| Balance(e.balance_after)))
    }

    /// An account's entries, newest first, strictly before sequence `before` when given.
    pub async fn entries_of(
        &self,
        id: AccountId,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        let mut filter = doc! { "accountId": id.to_string() };
        if let Some(before) = before {
            filter.insert("seq", doc! { "$lt": before });
        }
        let docs: Vec<_> = self
            .entries()
            .find(filter)
            .sort(doc! { "seq": -1 })
            .limit(limit.clamp(1, MAX_PAGE))
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(TryInto::try_into).collect()
    }

    /// The entries written for one transaction (zero or two).
    pub async fn entries_of_transaction(
        &self,
        id: ledgerflow_domain::TransactionId,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        let docs: Vec<_> =
            self.entries().find(doc! { "transactionId": id.to_string() }).limit(10).await?.try_collect().await?;
        docs.into_iter().map(TryInto::try_into).collect()
    }
}
