//! `reconcile`: re-derives every invariant from the stored ledger and reports what does not
//! hold. It only reads, and it streams: transactions, their entries and the `pending` notes
//! are walked with sorted cursors and merge-joined in id order, so memory stays bounded (one
//! account's running state at a time) however large the ledger is.

use std::cmp::Ordering;
use std::time::Duration;

use chrono::Utc;
use futures::{Stream, StreamExt};
use std::collections::HashMap;

use ledgerflow_domain::{AccountId, AccountStatus, EntryType, GENESIS_HASH, Reserved, TransactionStatus, TransferKind};
use mongodb::bson::{Document, doc, from_document};
use serde::Serialize;

use crate::docs::{AccountDoc, EntryDoc, TransactionDoc};
use crate::{AccountRecord, EntryRecord, Store, StoreError, TransactionRecord};

/// At most this many discrepancies are kept in the report (all are counted).
const MAX_LISTED: usize = 1_000;

/// What `reconcile` should consider a problem.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// PENDING transactions older than this are reported as stuck.
    pub max_pending_age: Duration,
    /// HELD holds this long past `expiresAt` are reported: the expiry sweep is not running.
    pub hold_expiry_grace: Duration,
}

/// Told about progress, e.g. to draw a progress bar.
pub trait Progress: Send + Sync {
    fn phase(&self, name: &'static str, estimated_total: u64);
    fn advance(&self, n: u64);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &'static str, _: u64) {}
    fn advance(&self, _: u64) {}
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CurrencyTotal {
    pub currency: String,
    /// Exact at any volume: a currency's lifetime volume may pass `i64::MAX`.
    pub debits: i128,
    pub credits: i128,
}

/// One invariant that does not hold.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Discrepancy {
    /// Which check failed, e.g. `hash_chain`.
    pub check: &'static str,
    /// What it concerns, e.g. `entry 0192…` or `account 0192…`.
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ReconcileReport {
    pub ok: bool,
    pub transactions: u64,
    pub entries: u64,
    pub accounts: u64,
    pub totals: Vec<CurrencyTotal>,
    pub stuck_pending: u64,
    pub discrepancy_count: u64,
    /// The first discrepancies found (at most 1,000).
    pub discrepancies: Vec<Discrepancy>,
}

impl ReconcileReport {
    fn flag(&mut self, check: &'static str, subject: impl Into<String>, detail: impl Into<String>) {
        self.discrepancy_count += 1;
        if self.discrepancies.len() < MAX_LISTED {
            self.discrepancies.push(Discrepancy { check, subject: subject.into(), detail: detail.into() });
        }
    }
}

impl Store {
    /// Checks the whole ledger. `Ok` carries the report whether or not it found problems;
    /// `Err` only means the database could not be read.
    pub async fn reconcile(
        &self,
        options: &ReconcileOptions,
        progress: &dyn Progress,
    ) -> Result<ReconcileReport, StoreError> {
        let mut report = ReconcileReport::default();
        for (currency, sides) in self.entry_totals().await? {
            let (debits, credits) = match sides {
                Ok(sides) => sides,
                Err(unreadable) => {
                    report.flag("debits_equal_credits", format!("currency {currency}"), unreadable);
                    continue;
                }
            };
            if debits != credits {
                report.flag(
                    "debits_equal_credits",
                    format!("currency {currency}"),
                    format!("debits {debits} != credits {credits}"),
                );
            }
            report.totals.push(CurrencyTotal { currency, debits, credits });
        }
        // What HELD holds reserve, per account: at most one entry per account with open holds.
        let mut reserved = HashMap::new();
        self.check_transactions(options, progress, &mut reserved, &mut report).await?;
        self.check_settlements(&mut report).await?;
        self.check_accounts(progress, &reserved, &mut report).await?;
        report.ok = report.discrepancy_count == 0;
        Ok(report)
    }

    /// Every COMPLETED transaction has exactly its DEBIT and CREDIT; others have none; no entry
    /// belongs to no transaction; nothing is PENDING for too long, and what is PENDING is noted
    /// in `pending`, where the republisher looks.
    async fn check_transactions(
        &self,
        options: &ReconcileOptions,
        progress: &dyn Progress,
        reserved: &mut HashMap<AccountId, Reserved>,
        report: &mut ReconcileReport,
    ) -> Result<(), StoreError> {
        progress.phase("transactions", self.transactions().estimated_document_count().await?);
        let now = Utc::now();
        let stale_before = now - chrono::Duration::from_std(options.max_pending_age).unwrap_or_default();
        let expiry_overdue_before = now - chrono::Duration::from_std(options.hold_expiry_grace).unwrap_or_default();
        let transactions = self.raw("transactions").find(doc! {}).sort(doc! { "_id": 1 }).await?;
        let entries = self.raw("entries").find(doc! {}).sort(doc! { "transactionId": 1, "type": 1 }).await?;
        let mut entries = Box::pin(parsed::<EntryDoc, EntryRecord>(entries, "entries")).peekable();
        let mut transactions = Box::pin(parsed::<TransactionDoc, TransactionRecord>(transactions, "transactions"));
        // The `pending` notes, walked beside the transactions in the same id order.
        let notes = self.raw("pending").find(doc! {}).sort(doc! { "_id": 1 }).projection(doc! { "_id": 1 }).await?;
        let mut notes =
            Box::pin(notes.map(|note| note.map(|n| n.get_str("_id").unwrap_or_default().to_owned()))).peekable();
        while let Some(t) = transactions.next().await {
            progress.advance(1);
            let t = match t {
                Ok(t) => t,
                Err(d) => {
                    report.flag(d.check, d.subject, d.detail);
                    continue;
                }
            };
            report.transactions += 1;
            let id = t.id.to_string();
            let mut own = Vec::new();
            while let Some(next) = std::pin::Pin::new(&mut entries).peek().await {
                let entry_txn = match next {
                    Ok(e) => e.transaction_id.to_string(),
                    Err(_) => String::new(),
                };
                match entry_txn.cmp(&id) {
                    Ordering::Less => match entries.next().await {
                        Some(Ok(e)) => report.flag(
                            "orphan_entry",
                            format!("entry {}", e.id),
                            format!("transaction {} does not exist", e.transaction_id),
                        ),
                        Some(Err(d)) => report.flag(d.check, d.subject, d.detail),
                        None => {}
                    },
                    Ordering::Equal => {
                        if let Some(Ok(e)) = entries.next().await {
                            own.push(e);
                        }
                    }
                    Ordering::Greater => break,
                }
            }
            check_transaction(&t, &own, stale_before, report);
            // Notes before this transaction's id are of none the walk found.
            let mut noted = false;
            while let Some(next) = std::pin::Pin::new(&mut notes).peek().await {
                let next = next.as_ref().map_or_else(|_| String::new(), Clone::clone);
                match next.cmp(&id) {
                    Ordering::Less => {
                        notes.next().await.transpose()?;
                        self.judge_pending_note(&next, report).await?;
                    }
                    Ordering::Equal => {
                        notes.next().await.transpose()?;
                        noted = true;
                        break;
                    }
                    Ordering::Greater => break,
                }
            }
            if noted != (t.status == TransactionStatus::Pending) {
                self.judge_pending_note(&id, report).await?;
            }
            if t.status == TransactionStatus::Held {
                check_held(&t, expiry_overdue_before, reserved, report);
            }
        }
        while let Some(rest) = entries.next().await {
            match rest {
                Ok(e) => report.flag(
                    "orphan_entry",
                    format!("entry {}", e.id),
                    format!("transaction {} does not exist", e.transaction_id),
                ),
                Err(d) => report.flag(d.check, d.subject, d.detail),
            }
        }
        while let Some(rest) = notes.next().await {
            self.judge_pending_note(&rest?, report).await?;
        }
        Ok(())
    }

    /// Every PENDING transaction is noted in `pending`, and every note is of a PENDING
    /// transaction. The walk read the two at different moments while the ledger moved on, so
    /// each difference it finds is judged again here, in one snapshot.
    async fn judge_pending_note(&self, id: &str, report: &mut ReconcileReport) -> Result<(), StoreError> {
        if let Some(detail) = self.pending_note_mismatch(id).await? {
            report.flag("pending_note", format!("transaction {id}"), detail);
        }
        Ok(())
    }

    /// Per account: sequence 1, 2, 3… without gaps, each `balanceAfter` equal to the running sum,
    /// the hash chain intact, never negative (but the funding account), and the account's
    /// `seq` pointing at its last entry.
    async fn check_accounts(
        &self,
        progress: &dyn Progress,
        reserved: &HashMap<AccountId, Reserved>,
        report: &mut ReconcileReport,
    ) -> Result<(), StoreError> {
        progress.phase("accounts", self.entries().estimated_document_count().await?);
        // Both walks go in descending account id: that is how the (accountId, seq desc)
        // index can be read with seq ascending.
        let accounts = self.raw("accounts").find(doc! {}).sort(doc! { "_id": -1 }).await?;
        let entries = self.raw("entries").find(doc! {}).sort(doc! { "accountId": -1, "seq": 1 }).await?;
        let mut entries = Box::pin(parsed::<EntryDoc, EntryRecord>(entries, "entries")).peekable();
        let mut accounts = Box::pin(parsed::<AccountDoc, AccountRecord>(accounts, "accounts"));
        while let Some(account) = accounts.next().await {
            let account = match account {
                Ok(a) => a,
                Err(d) => {
                    report.flag(d.check, d.subject, d.detail);
                    continue;
                }
            };
            report.accounts += 1;
            let id = account.id.to_string();
            let mut walk = AccountWalk::new(&account);
            while let Some(next) = std::pin::Pin::new(&mut entries).peek().await {
                let entry_account = match next {
                    Ok(e) => e.account_id.to_string(),
                    Err(_) => String::new(),
                };
                match entry_account.cmp(&id) {
                    // Descending order: a larger id is an account we have passed, i.e. unknown.
                    Ordering::Greater => {
                        if let Some(Ok(e)) = entries.next().await {
                            progress.advance(1);
                            report.flag(
                                "orphan_entry",
                                format!("entry {}", e.id),
                                format!("account {} does not exist", e.account_id),
                            );
                        }
                    }
                    Ordering::Equal => {
                        if let Some(Ok(e)) = entries.next().await {
                            progress.advance(1);
                            report.entries += 1;
                            walk.step(&e, report);
                        }
                    }
                    Ordering::Less => break,
                }
            }
            walk.finish(report);
            let held = reserved.get(&account.id).copied().unwrap_or_default();
            if held != account.reserved {
                report.flag(
                    "pending_amounts",
                    format!("account {}", account.id),
                    format!(
                        "pendingDebits {} and pendingCredits {}, but its HELD holds sum to {} and {}",
                        account.reserved.debits, account.reserved.credits, held.debits, held.credits
                    ),
                );
            }
        }
        while let Some(rest) = entries.next().await {
            if let Ok(e) = rest {
                report.flag(
                    "orphan_entry",
                    format!("entry {}", e.id),
                    format!("account {} does not exist", e.account_id),
                );
            }
        }
        Ok(())
    }

    /// No hold is settled twice, and every settled hold names the settlement that did it: a
    /// POSTED hold a COMPLETED POST_HOLD of its `postedAmount`, a VOIDED one a COMPLETED
    /// VOID_HOLD. Both run in the server, over the settlements and settled holds only.
    async fn check_settlements(&self, report: &mut ReconcileReport) -> Result<(), StoreError> {
        let completed = TransactionStatus::Completed.as_str();
        let twice = vec![
            doc! { "$match": { "kind": { "$in": ["POST_HOLD", "VOID_HOLD"] }, "status": completed } },
            doc! { "$group": { "_id": "$hold", "settlements": { "$push": "$_id" } } },
            doc! { "$match": { "settlements.1": { "$exists": true } } },
        ];
        let mut cursor = self.raw("transactions").aggregate(twice).await?;
        while let Some(group) = cursor.next().await.transpose()? {
            let hold = group.get_str("_id").unwrap_or_default().to_owned();
            let by = group.get_array("settlements").map(|a| a.len()).unwrap_or_default();
            report.flag("hold_settled_twice", format!("transaction {hold}"), format!("{by} COMPLETED settlements"));
        }
        let settled = vec![
            doc! { "$match": { "kind": "HOLD", "status": { "$in": ["POSTED", "VOIDED"] } } },
            doc! { "$lookup": { "from": "transactions", "localField": "resolvedBy", "foreignField": "_id", "as": "by" } },
            doc! { "$project": { "status": 1, "postedAmount": 1, "by.kind": 1, "by.status": 1, "by.amount": 1, "by.hold": 1 } },
        ];
        let mut cursor = self.raw("transactions").aggregate(settled).await?;
        while let Some(hold) = cursor.next().await.transpose()? {
            let id = hold.get_str("_id").unwrap_or_default().to_owned();
            let posted = hold.get_str("status") == Ok("POSTED");
            let by = hold.get_array("by").ok().and_then(|a| a.first()).and_then(|b| b.as_document());
            let (kind, want_amount) =
                if posted { ("POST_HOLD", hold.get_i64("postedAmount").ok()) } else { ("VOID_HOLD", None) };
            let fits = by.is_some_and(|b| {
                b.get_str("kind") == Ok(kind)
                    && b.get_str("status") == Ok(completed)
                    && b.get_str("hold") == Ok(id.as_str())
                    && want_amount.is_none_or(|amount| b.get_i64("amount") == Ok(amount))
            });
            if !fits {
                report.flag(
                    "hold_settlement",
                    format!("transaction {id}"),
                    format!(
                        "{} but resolvedBy is not a COMPLETED {kind} of it{}",
                        hold.get_str("status").unwrap_or_default(),
                        if posted { " of postedAmount" } else { "" }
                    ),
                );
            }
        }
        Ok(())
    }

    fn raw(&self, name: &str) -> mongodb::Collection<Document> {
        self.db.collection(name)
    }
}

/// Parses each raw document, turning a bad one into a discrepancy instead of an error.
fn parsed<D, R>(
    cursor: mongodb::Cursor<Document>,
    collection: &'static str,
) -> impl Stream<Item = Result<R, Discrepancy>>
where
    D: serde::de::DeserializeOwned,
    R: TryFrom<D, Error = StoreError>,
{
    cursor.map(move |doc| {
        let doc = doc.map_err(|e| Discrepancy {
            check: "unreadable_document",
            subject: collection.into(),
            detail: e.to_string(),
        })?;
        let id = doc.get("_id").map(ToString::to_string).unwrap_or_default();
        let corrupt =
            |detail: String| Discrepancy { check: "corrupt_document", subject: format!("{collection} {id}"), detail };
        let typed: D = from_document(doc).map_err(|e| corrupt(e.to_string()))?;
        R::try_from(typed).map_err(|e| corrupt(e.to_string()))
    })
}

/// A HELD hold: its reservation counted for both accounts, and its expiry not overdue.
fn check_held(
    t: &TransactionRecord,
    overdue_before: chrono::DateTime<Utc>,
    reserved: &mut HashMap<AccountId, Reserved>,
    report: &mut ReconcileReport,
) {
    let amount = t.amount.minor();
    let from = reserved.entry(t.from_account).or_default();
    from.debits = from.debits.saturating_add(amount);
    let to = reserved.entry(t.to_account).or_default();
    to.credits = to.credits.saturating_add(amount);
    match t.expires_at {
        Some(at) if at < overdue_before => report.flag(
            "hold_not_expired",
            format!("transaction {}", t.id),
            format!("HELD, but it expired at {}", at.to_rfc3339()),
        ),
        Some(_) => {}
        None => report.flag("hold_not_expired", format!("transaction {}", t.id), "HELD without expiresAt"),
    }
}

fn check_transaction(
    t: &TransactionRecord,
    entries: &[EntryRecord],
    stale_before: chrono::DateTime<Utc>,
    report: &mut ReconcileReport,
) {
    let subject = || format!("transaction {}", t.id);
    // A void moves no money; nor does a hold, whose POST_HOLD carries the entries.
    let moves_money = t.status == TransactionStatus::Completed && t.kind != TransferKind::VoidHold;
    match t.status {
        TransactionStatus::Completed if moves_money => {
            // One DEBIT and one CREDIT per movement (each leg of a journal), of its amount,
            // on its accounts; nothing else.
            let movements = t.request().movements();
            let leg_of = |i: usize| if t.legs.is_empty() { None } else { u16::try_from(i).ok() };
            let exact = |i: usize, side: EntryType, account: AccountId, amount, currency| {
                let found: Vec<&EntryRecord> =
                    entries.iter().filter(|e| e.leg == leg_of(i) && e.entry_type == side).collect();
                found.len() == 1
                    && found[0].account_id == account
                    && found[0].amount == amount
                    && found[0].currency == currency
            };
            let wrong = movements.iter().enumerate().find(|(i, m)| {
                !exact(*i, EntryType::Debit, m.from, m.amount, m.currency)
                    || !exact(*i, EntryType::Credit, m.to, m.amount, m.currency)
            });
            if entries.len() != 2 * movements.len() || wrong.is_some() {
                let (i, m) = wrong.unwrap_or((0, &movements[0]));
                let leg = if t.legs.is_empty() { String::new() } else { format!("leg {i}: ") };
                report.flag(
                    "completed_entries",
                    subject(),
                    format!(
                        "{leg}expected one DEBIT on {} and one CREDIT on {} of {} {}, found {} entries for {} movements",
                        m.from,
                        m.to,
                        m.amount,
                        m.currency,
                        entries.len(),
                        movements.len()
                    ),
                );
            }
        }
        TransactionStatus::Posted if t.posted_amount.is_none_or(|posted| posted > t.amount) => report.flag(
            "hold_settlement",
            subject(),
            format!("POSTED with postedAmount {:?} of a hold of {}", t.posted_amount.map(|a| a.minor()), t.amount),
        ),
        _ => {
            if !entries.is_empty() {
                report.flag(
                    "unfinished_entries",
                    subject(),
                    format!("{} transaction has {} entries", t.status, entries.len()),
                );
            }
            if t.status == TransactionStatus::Pending && t.created_at < stale_before {
                report.stuck_pending += 1;
                report.flag("stuck_pending", subject(), format!("PENDING since {}", t.created_at.to_rfc3339()));
            }
        }
    }
}

/// The running state of one account's entries.
struct AccountWalk<'a> {
    account: &'a AccountRecord,
    expected_seq: i64,
    balance: Option<i64>,
    prev_hash: String,
    chain_broken: bool,
}

impl<'a> AccountWalk<'a> {
    fn new(account: &'a AccountRecord) -> Self {
        Self { account, expected_seq: 1, balance: Some(0), prev_hash: GENESIS_HASH.into(), chain_broken: false }
    }

    fn step(&mut self, e: &EntryRecord, report: &mut ReconcileReport) {
        let subject = || format!("entry {} (account {}, seq {})", e.id, e.account_id, e.seq);
        if e.seq != self.expected_seq {
            report.flag("sequence", subject(), format!("expected seq {}", self.expected_seq));
        }
        self.expected_seq = e.seq + 1;
        let delta = match e.entry_type {
            EntryType::Credit => e.amount.minor(),
            EntryType::Debit => -e.amount.minor(),
        };
        self.balance = self.balance.and_then(|b| b.checked_add(delta));
        if self.balance != Some(e.balance_after.minor()) {
            report.flag(
                "running_balance",
                subject(),
                format!("balanceAfter {} but entries sum to {:?}", e.balance_after, self.balance),
            );
            self.balance = Some(e.balance_after.minor());
        }
        // Against the widest overdraft line the account ever had: a line may be lowered once
        // repaid, and an entry inside the line of its day is no discrepancy.
        let floor = -self.account.peak_overdraft;
        if e.balance_after.minor() < floor && !self.is_funding() {
            report.flag("negative_balance", subject(), format!("balance {} below {floor}", e.balance_after));
        }
        // Report only the first broken link of a chain: everything after it is suspect anyway.
        if !self.chain_broken {
            if e.prev_hash != self.prev_hash {
                self.chain_broken = true;
                report.flag("hash_chain", subject(), "prevHash does not match the previous entry's hash");
            } else if e.chain_fields().hash() != e.hash {
                self.chain_broken = true;
                report.flag("hash_chain", subject(), "hash does not match the entry's fields: it was altered");
            }
        }
        self.prev_hash = e.hash.clone();
    }

    fn is_funding(&self) -> bool {
        self.account.id == AccountId::funding(self.account.currency)
    }

    fn finish(&self, report: &mut ReconcileReport) {
        let overdraft = self.account.limits.overdraft();
        if let Some(balance) = self.balance.filter(|b| *b < -overdraft)
            && !self.is_funding()
        {
            report.flag(
                "overdraft_exceeded",
                format!("account {}", self.account.id),
                format!("balance {balance} below its overdraft line of -{overdraft}"),
            );
        }
        let last = self.expected_seq - 1;
        if self.account.seq != last {
            report.flag(
                "account_seq",
                format!("account {}", self.account.id),
                format!("seq {} but last entry is {last}", self.account.seq),
            );
        }
        // Closing is refused while an account holds money, and nothing moves money into a
        // closed one: money there was put there around the API.
        if self.account.status == AccountStatus::Closed
            && let Some(balance) = self.balance.filter(|b| *b != 0)
        {
            report.flag(
                "closed_with_balance",
                format!("account {}", self.account.id),
                format!("CLOSED with balance {balance}"),
            );
        }
    }
}
