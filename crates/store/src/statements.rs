//! Balances at a past instant and statements over a window: index-bounded reads whose cost
//! grows with the window asked for (or not at all), never with the account's history.
//!
//! Both rest on two facts the worker keeps: an account's entries are numbered 1, 2, 3… with
//! no gaps (`seq`), and their `createdAt` never decreases along `seq`
//! (`decide::AccountState::post`). "The last entry at or before T" is then one entry, found by
//! one backward step of the `(accountId, createdAt, seq)` index; and a window of time is a
//! range of `seq`, whose entries are all committed once its last one is (each posting on an
//! account is guarded by the `seq` before it).

use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt as _;
use ledgerflow_domain::{
    AccountId, Balance, EntryType, HoldTimeout, Reserved, StatementTotals, StatementWindow, TransactionStatus,
    TransferKind,
};
use mongodb::bson::{Bson, Document, doc};

use crate::docs::to_bson_time;
use crate::{EntryRecord, MAX_PAGE, Store, StoreError};

/// The name of the index behind "the last entry at or before an instant".
pub(crate) const ENTRIES_BY_TIME: &str = "accountId_1_createdAt_1_seq_1";
/// The name of the index behind "the holds HELD at an instant" (both sides of each hold).
pub(crate) const HOLDS_BY_EXPIRY: &str = "hold_accounts_expiresAt";

/// How MongoDB runs a read, from its `explain`: the index keys and documents it examines, 1 and
/// 1 at any history length for the reads by instant if their index does its job. -1 where the
/// server's answer lacks a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub keys_examined: i64,
    pub docs_examined: i64,
}

/// A count from `explain`, whichever numeric type the server chose; -1 if absent.
fn int_field(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(f)) => *f as i64,
        _ => -1,
    }
}

/// An account's entry as of an instant: its sequence number and balance (0 and 0 before the
/// first entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMark {
    pub seq: i64,
    pub balance: Balance,
}

/// One page of a statement, and the figures of its whole window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementPage {
    /// As of just before `from`.
    pub opening: Balance,
    /// As of just before `to`.
    pub closing: Balance,
    /// Over every entry of the window, not only this page's.
    pub totals: StatementTotals,
    /// Oldest first.
    pub entries: Vec<EntryRecord>,
    /// The `seq` of this page's last entry when more of the window follows it.
    pub next_after: Option<i64>,
}

/// Where an account's reads by time look: the filter of one account's entries.
fn of(account: AccountId) -> Document {
    doc! { "accountId": account.to_string() }
}

/// The find of the last entry of `account` stamped at or before `at`, or strictly before it
/// (`inclusive == false`), as the balance read and [`Store::explain_balance_as_of`] send it.
pub(crate) fn last_entry_query(account: AccountId, at: DateTime<Utc>, inclusive: bool) -> (Document, Document) {
    let mut filter = of(account);
    filter.insert("createdAt", doc! { (if inclusive { "$lte" } else { "$lt" }): to_bson_time(at) });
    (filter, doc! { "createdAt": -1, "seq": -1 })
}

impl Store {
    /// The `seq` and `balanceAfter` of `account`'s last entry stamped at or before `at` (or
    /// strictly before it); zero before the first. One backward index step.
    async fn mark(&self, account: AccountId, at: DateTime<Utc>, inclusive: bool) -> Result<EntryMark, StoreError> {
        let (filter, sort) = last_entry_query(account, at, inclusive);
        let found = self
            .entries()
            .find_one(filter)
            .sort(sort)
            .hint(mongodb::options::Hint::Name(ENTRIES_BY_TIME.into()))
            .await?;
        Ok(found.map_or(EntryMark { seq: 0, balance: Balance::ZERO }, |e| EntryMark {
            seq: e.seq,
            balance: Balance(e.balance_after),
        }))
    }

    /// Asks MongoDB how it runs [`Store::balance_as_of`] for `account` at `at` (the same
    /// filter, sort, hint and limit).
    pub async fn explain_balance_as_of(&self, account: AccountId, at: DateTime<Utc>) -> Result<ReadPlan, StoreError> {
        let (filter, sort) = last_entry_query(account, at, true);
        let query = doc! { "find": "entries", "filter": filter, "sort": sort, "hint": ENTRIES_BY_TIME, "limit": 1 };
        self.explain(query).await
    }

    /// Runs `query` (a `find` command) under `explain` at `executionStats` verbosity.
    pub(crate) async fn explain(&self, query: Document) -> Result<ReadPlan, StoreError> {
        let answer = self.db.run_command(doc! { "explain": query, "verbosity": "executionStats" }).await?;
        let stats = answer.get_document("executionStats").map_err(|e| {
            StoreError::Database(mongodb::error::Error::custom(format!("explain: executionStats: {e}")))
        })?;
        Ok(ReadPlan {
            keys_examined: int_field(stats, "totalKeysExamined"),
            docs_examined: int_field(stats, "totalDocsExamined"),
        })
    }

    /// An account's posted balance as of `at`: the `balanceAfter` of its last entry stamped at
    /// or before it, 0 before the first.
    pub async fn balance_as_of(&self, account: AccountId, at: DateTime<Utc>) -> Result<Balance, StoreError> {
        Ok(self.mark(account, at, true).await?.balance)
    }

    /// What holds reserved on `account` at `at`: the amounts of the holds that were HELD then
    /// (decided HELD at or before `at`, not settled or swept by then) and not yet past their
    /// `expiresAt` (from then on no settlement can use them). Holds write no entries, so this is
    /// read from the holds themselves: those expiring within [`HoldTimeout::MAX_SECONDS`] after
    /// `at`, the only ones that can have been HELD at `at`, through one index over both sides.
    pub async fn reserved_as_of(&self, account: AccountId, at: DateTime<Utc>) -> Result<Reserved, StoreError> {
        let latest_expiry = at + Duration::seconds(HoldTimeout::MAX_SECONDS.into());
        let held_once =
            [TransactionStatus::Held, TransactionStatus::Posted, TransactionStatus::Voided, TransactionStatus::Expired];
        let id = account.to_string();
        let filter = doc! {
            "accounts": &id,
            "kind": TransferKind::Hold.as_str(),
            "expiresAt": { "$gt": to_bson_time(at), "$lte": to_bson_time(latest_expiry) },
            "completedAt": { "$lte": to_bson_time(at) },
            "status": { "$in": held_once.iter().map(|s| s.as_str()).collect::<Vec<_>>() },
            "$or": [{ "resolvedAt": null }, { "resolvedAt": { "$gt": to_bson_time(at) } }],
        };
        let holds = self.db.collection::<Document>("transactions");
        let mut found = holds
            .find(filter)
            .projection(doc! { "amount": 1, "fromAccount": 1 })
            .hint(mongodb::options::Hint::Name(HOLDS_BY_EXPIRY.to_owned()))
            .await?;
        let mut reserved = Reserved::default();
        while let Some(hold) = found.try_next().await? {
            // A hold moves money between two distinct accounts: `account` is its sender or
            // its receiver, never both.
            let side = if hold.get_str("fromAccount") == Ok(id.as_str()) {
                &mut reserved.debits
            } else {
                &mut reserved.credits
            };
            let amount = hold.get_i64("amount").ok();
            *side = amount.and_then(|a| side.checked_add(a)).ok_or_else(|| StoreError::Corrupt {
                collection: "transactions",
                id: hold.get_str("_id").unwrap_or_default().to_owned(),
                reason: "a hold's amount is missing or the account's holds exceed 64 bits".into(),
            })?;
        }
        Ok(reserved)
    }

    /// One page of `account`'s statement over `window`: up to `limit` entries oldest first,
    /// after `seq` `after` when given, with the window's balances and totals. Reads two index
    /// steps for the window's edges, the page, and the window's entries once for the totals.
    pub async fn statement(
        &self,
        account: AccountId,
        window: StatementWindow,
        limit: i64,
        after: Option<i64>,
    ) -> Result<StatementPage, StoreError> {
        let opening = self.mark(account, window.from(), false).await?;
        let closing = self.mark(account, window.to(), false).await?;
        let totals = self.window_totals(account, opening.seq, closing.seq).await?;
        if totals.entries != closing.seq - opening.seq || !totals.reconcile(opening.balance, closing.balance) {
            return Err(StoreError::Corrupt {
                collection: "entries",
                id: account.to_string(),
                reason: format!(
                    "entries {}..={} do not take {} to {}: {totals:?}",
                    opening.seq + 1,
                    closing.seq,
                    opening.balance,
                    closing.balance
                ),
            });
        }
        let start = after.unwrap_or(0).max(opening.seq);
        let mut filter = of(account);
        filter.insert("seq", doc! { "$gt": start, "$lte": closing.seq });
        let docs: Vec<_> = self
            .entries()
            .find(filter)
            .sort(doc! { "seq": 1 })
            .limit(limit.clamp(1, MAX_PAGE))
            .await?
            .try_collect()
            .await?;
        let entries = docs.into_iter().map(TryInto::try_into).collect::<Result<Vec<EntryRecord>, _>>()?;
        let next_after = entries.last().map(|e| e.seq).filter(|&seq| seq < closing.seq);
        Ok(StatementPage { opening: opening.balance, closing: closing.balance, totals, entries, next_after })
    }

    /// The debits, credits and count of `account`'s entries with `after < seq <= last`,
    /// summed by the server over the `(accountId, seq)` index.
    async fn window_totals(&self, account: AccountId, after: i64, last: i64) -> Result<StatementTotals, StoreError> {
        let mut totals = StatementTotals::default();
        if last <= after {
            return Ok(totals);
        }
        let mut filter = of(account);
        filter.insert("seq", doc! { "$gt": after, "$lte": last });
        let pipeline = [
            doc! { "$match": filter },
            doc! { "$group": { "_id": "$type", "total": { "$sum": "$amount" }, "count": { "$sum": 1 } } },
        ];
        let mut groups = self.entries().aggregate(pipeline).await?;
        while let Some(group) = groups.try_next().await? {
            let corrupt =
                |reason: String| StoreError::Corrupt { collection: "entries", id: account.to_string(), reason };
            // `$sum` turns to a double past 64 bits; such a window has no exact total to show.
            let (total, count) = match (group.get("total"), group.get("count")) {
                (Some(Bson::Int64(t)), Some(Bson::Int32(c))) => (*t, i64::from(*c)),
                (Some(Bson::Int64(t)), Some(Bson::Int64(c))) => (*t, *c),
                (Some(Bson::Int32(t)), Some(Bson::Int32(c))) => (i64::from(*t), i64::from(*c)),
                other => return Err(corrupt(format!("window totals beyond 64 bits or malformed: {other:?}"))),
            };
            match group.get_str("_id") {
                Ok(t) if t == EntryType::Debit.as_str() => totals.debits = total,
                Ok(t) if t == EntryType::Credit.as_str() => totals.credits = total,
                other => return Err(corrupt(format!("an entry type that is neither DEBIT nor CREDIT: {other:?}"))),
            }
            totals.entries += count;
        }
        Ok(totals)
    }
}
