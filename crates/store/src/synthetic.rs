//! Synthetic history, for benchmarks only: `ledgerflow-bench --balance-reads` needs an account
//! with a million entries in seconds, which postings (one transaction each) cannot give it.
//!
//! Compiled only with the cargo feature `synthetic`, which only `ledgerflow-bench` enables, so
//! the production `ledgerflow` binary cannot write such a history. Never point it at a ledger
//! that matters: the history is consistent per account (entries numbered 1, 2, 3…, running
//! balances that add up, an intact hash chain, the account's `seq` at its latest entry), so
//! balance reads and `ledgerflow reconcile`'s per-account checks see the real thing; but its
//! entries are CREDITs out of nowhere, without counterpart DEBITs, and name transactions that
//! do not exist, so reconcile's ledger-wide checks (debits equal credits, each entry belongs
//! to a COMPLETED transaction) flag every one of them.
#![cfg(feature = "synthetic")]

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use ledgerflow_domain::{Amount, Balance, EntryFields, EntryId, EntryType, GENESIS_HASH, TransactionId};
use mongodb::bson::doc;

use crate::docs::EntryDoc;
use crate::{AccountRecord, Progress, Store, StoreError};

/// Entries written per `insert_many`.
const INSERT_BATCH: i64 = 10_000;
/// What each synthetic entry credits, in minor units.
const ENTRY_MINOR: i64 = 1;

pub use crate::statements::ReadPlan;

/// The latest entry of an account's chain: where the next one continues from.
struct Head {
    seq: i64,
    balance: Balance,
    hash: String,
}

impl Store {
    /// Appends CREDIT entries of one minor unit each to `account`'s history, in batches of
    /// 10,000, until it holds `length` entries (nothing if it already does), and moves the
    /// account's `seq` along as a posting would. Entries of one batch share a `createdAt`;
    /// each names a transaction id of its own that no transaction has. `progress` is
    /// advanced by each batch written. Returns the account's balance afterwards. See the
    /// module documentation for what such a history is, and is not, good for.
    pub async fn extend_synthetic_history(
        &self,
        account: &AccountRecord,
        length: i64,
        progress: &dyn Progress,
    ) -> Result<Balance, StoreError> {
        let mut head = self.chain_head(account).await?;
        let amount = Amount::new(ENTRY_MINOR).map_err(|e| StoreError::Corrupt {
            collection: "entries",
            id: account.id.to_string(),
            reason: e.to_string(),
        })?;
        if head.seq >= length {
            return Ok(head.balance);
        }
        while head.seq < length {
            let created_at_ms = Utc::now().timestamp_millis();
            let batch: Vec<EntryDoc> = (0..(length - head.seq).min(INSERT_BATCH))
                .map(|_| head.append(account, amount, created_at_ms))
                .collect();
            let written = batch.len() as u64;
            self.entries().insert_many(batch).await?;
            progress.advance(written);
        }
        self.accounts()
            .update_one(doc! { "_id": account.id.to_string() }, doc! { "$set": { "seq": head.seq } })
            .await?;
        Ok(head.balance)
    }

    /// Asks MongoDB how it runs the balance read on `account` (the same filter, sort and limit
    /// as [`Store::balance`]): the index keys and documents it examines.
    pub async fn explain_balance_read(&self, account: &AccountRecord) -> Result<ReadPlan, StoreError> {
        let query = doc! {
            "find": "entries", "filter": { "accountId": account.id.to_string() }, "sort": { "seq": -1 }, "limit": 1,
        };
        self.explain(query).await
    }

    /// When the entry `seq` of `account` was stamped, if it exists: an instant inside a
    /// synthetic history for the bench's reads as of an instant.
    pub async fn entry_time(&self, account: &AccountRecord, seq: i64) -> Result<Option<DateTime<Utc>>, StoreError> {
        let entry = self.entries().find_one(doc! { "accountId": account.id.to_string(), "seq": seq }).await?;
        Ok(entry.map(|e| crate::docs::from_bson_time(e.created_at)))
    }

    /// The account's latest entry, or the genesis of an empty chain.
    async fn chain_head(&self, account: &AccountRecord) -> Result<Head, StoreError> {
        let latest = self
            .entries()
            .find(doc! { "accountId": account.id.to_string() })
            .sort(doc! { "seq": -1 })
            .limit(1)
            .await?
            .try_next()
            .await?;
        Ok(match latest {
            Some(entry) => Head { seq: entry.seq, balance: Balance(entry.balance_after), hash: entry.hash },
            None => Head { seq: 0, balance: Balance::ZERO, hash: GENESIS_HASH.to_owned() },
        })
    }
}

impl Head {
    /// The next entry of the chain, crediting `amount`; moves the head onto it.
    fn append(&mut self, account: &AccountRecord, amount: Amount, created_at_ms: i64) -> EntryDoc {
        let balance_after = Balance(self.balance.minor() + amount.minor());
        let fields = EntryFields {
            id: EntryId::generate(),
            account_id: account.id,
            transaction_id: TransactionId::generate(),
            entry_type: EntryType::Credit,
            amount,
            currency: account.currency,
            seq: self.seq + 1,
            balance_after,
            created_at_ms,
            prev_hash: &self.hash,
            leg: None,
        };
        let hash = fields.hash();
        let entry = EntryDoc {
            id: fields.id.to_string(),
            account_id: account.id.to_string(),
            transaction_id: fields.transaction_id.to_string(),
            entry_type: EntryType::Credit,
            amount: amount.minor(),
            currency: account.currency.code().to_owned(),
            seq: fields.seq,
            balance_after: balance_after.minor(),
            created_at: mongodb::bson::DateTime::from_millis(created_at_ms),
            prev_hash: std::mem::replace(&mut self.hash, hash.clone()),
            hash,
            leg: None,
        };
        self.seq += 1;
        self.balance = balance_after;
        entry
    }
}
