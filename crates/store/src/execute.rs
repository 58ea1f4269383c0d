//! The double-entry commit: one command, one MongoDB multi-document transaction.
//!
//! Inside a single snapshot transaction the worker finds (or, for upstream commands, creates)
//! the transaction record, loads both accounts and their derived balances, lets the pure
//! posting rule decide, and writes either the FAILED status or the two entries, the two
//! account sequence bumps and the COMPLETED status. Either all of it commits or none of it.
//!
//! Why it cannot double-spend: every posting writes the sender's (and receiver's) account
//! document, so two transactions that read the same balance conflict on that write and one of
//! them is aborted with a `TransientTransactionError`, retried here, and re-reads the new
//! balance. Why it cannot double-apply: the transaction record's status is written in the same
//! transaction and checked first, so a redelivered command finds it terminal and writes nothing.

use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use chrono::Utc;
use ledgerflow_domain::{
    AccountId, AccountSnapshot, Balance, EntryFields, EntryId, EntryType, FailureReason, GENESIS_HASH, Posting,
    TransactionId, TransactionStatus, TransferCommand, TransferKind, post_transfer,
};
use mongodb::ClientSession;
use mongodb::bson::doc;
use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{ReadConcern, WriteConcern};
use tracing::debug;

use crate::docs::{EntryDoc, to_bson_time};
use crate::error::is_duplicate_key;
use crate::transactions::{key_filter, pending_doc};
use crate::{AccountRecord, Store, StoreError, TransactionRecord};

/// By default, how long one command may keep retrying write conflicts before the caller is
/// told to try again later (the worker then sends it through its retry queue).
pub(crate) const CONFLICT_RETRY_BUDGET: Duration = Duration::from_secs(20);
/// How many times an ambiguous commit is re-sent before the whole transaction is retried.
const COMMIT_RETRIES: u32 = 5;
const WRITE_CONFLICT: i32 = 112;

/// What executing a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// This call made the transaction terminal (COMPLETED or FAILED).
    Decided(TransactionRecord),
    /// It was terminal already (a redelivered or repeated command); nothing was written.
    AlreadyTerminal(TransactionRecord),
    /// The command names a transaction id that does not exist. Nothing was written.
    UnknownTransaction(TransactionId),
    /// The command disagrees with the transaction recorded under its id or idempotency key
    /// (same key, different body; or a tampered command). Nothing was written.
    Mismatch { existing: TransactionId },
}

impl Store {
    /// Executes a transfer command exactly once in effect, however often it is delivered and
    /// however many workers run it concurrently.
    pub async fn execute(&self, cmd: &TransferCommand) -> Result<Execution, StoreError> {
        let policy = ExponentialBackoffBuilder::new()
            .with_initial_interval(Duration::from_millis(2))
            .with_max_interval(Duration::from_millis(200))
            .with_max_elapsed_time(Some(self.conflict_retry_budget))
            .build();
        let mut attempts = 0u32;
        let result = backoff::future::retry(policy, || {
            attempts += 1;
            async {
                self.execute_once(cmd).await.map_err(|e| {
                    if is_retryable(&e) {
                        debug!(error = %e, "transaction conflict, retrying");
                        backoff::Error::transient(e)
                    } else {
                        backoff::Error::permanent(e)
                    }
                })
            }
        })
        .await;
        metrics::counter!("ledgerflow_mongo_transaction_retries_total")
            .increment(u64::from(attempts.saturating_sub(1)));
        result.map_err(|e| if is_retryable(&e) { StoreError::Contention { attempts } } else { e })
    }

    async fn execute_once(&self, cmd: &TransferCommand) -> Result<Execution, StoreError> {
        let mut session = self.client.start_session().await?;
        session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .await?;
        let outcome = match self.decide_in(&mut session, cmd).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // Best effort: the server also aborts it when the session ends.
                let _ = session.abort_transaction().await;
                return Err(e);
            }
        };
        if !matches!(outcome, Execution::Decided(_)) {
            session.abort_transaction().await?;
            return Ok(outcome);
        }
        let started = std::time::Instant::now();
        commit(&mut session).await?;
        metrics::histogram!("ledgerflow_mongo_commit_seconds").record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    async fn decide_in(&self, s: &mut ClientSession, cmd: &TransferCommand) -> Result<Execution, StoreError> {
        let existing = match cmd.transaction_id {
            Some(id) => match self.transactions().find_one(doc! { "_id": id.to_string() }).session(&mut *s).await? {
                Some(doc) => Some(doc),
                None => return Ok(Execution::UnknownTransaction(id)),
            },
            None => {
                self.transactions().find_one(key_filter(&cmd.initiator, &cmd.idempotency_key)).session(&mut *s).await?
            }
        };
        let mut record = match existing {
            Some(doc) => {
                let record = TransactionRecord::try_from(doc)?;
                let same = record.request_hash == cmd.request.fingerprint()
                    && record.initiator == cmd.initiator
                    && record.idempotency_key == cmd.idempotency_key;
                if !same {
                    return Ok(Execution::Mismatch { existing: record.id });
                }
                if record.status.is_terminal() {
                    return Ok(Execution::AlreadyTerminal(record));
                }
                record
            }
            None => {
                let doc = pending_doc(TransactionId::generate(), cmd);
                self.transactions().insert_one(&doc).session(&mut *s).await?;
                TransactionRecord::try_from(doc)?
            }
        };

        let request = &cmd.request;
        if request.kind == TransferKind::InitialFunds {
            self.ensure_funding_account(s, request.from, request).await?;
        }
        let from = self.account_in(s, request.from).await?;
        let to = self.account_in(s, request.to).await?;
        let now = Utc::now();
        let decision = match self.check_reversal(s, request).await? {
            Err(reason) => Err(reason),
            Ok(()) => post_transfer(request, from.as_ref().map(|(_, snap)| snap), to.as_ref().map(|(_, snap)| snap)),
        };
        let (status, reason) = match (decision, from, to) {
            (Ok(posting), Some((from, _)), Some((to, _))) => {
                self.write_entries(s, &record, &from, &to, posting, now).await?;
                if let Some(original) = request.reverses {
                    self.mark_reversed(s, original, record.id).await?;
                }
                (TransactionStatus::Completed, None)
            }
            (Err(reason), _, _) => (TransactionStatus::Failed, Some(reason)),
            // post_transfer refuses a missing account, so this arm is unreachable in practice.
            (Ok(_), _, _) => (TransactionStatus::Failed, Some(FailureReason::AccountNotFound)),
        };
        let updated = self
            .transactions()
            .update_one(
                doc! { "_id": record.id.to_string(), "status": TransactionStatus::Pending.as_str() },
                doc! { "$set": {
                    "status": status.as_str(),
                    "failureReason": reason.map(FailureReason::as_str),
                    "completedAt": to_bson_time(now),
                }},
            )
            .session(&mut *s)
            .await?;
        if updated.matched_count != 1 {
            return Err(StoreError::Contention { attempts: 0 });
        }
        record.status = status;
        record.failure_reason = reason;
        record.completed_at = Some(now);
        Ok(Execution::Decided(record))
    }

    /// For a REVERSAL: the original must be a COMPLETED, not yet reversed, non-reversal
    /// transaction whose accounts and amount this one mirrors.
    async fn check_reversal(
        &self,
        s: &mut ClientSession,
        request: &ledgerflow_domain::TransferRequest,
    ) -> Result<Result<(), FailureReason>, StoreError> {
        let Some(original_id) = request.reverses else { return Ok(Ok(())) };
        let Some(doc) = self.transactions().find_one(doc! { "_id": original_id.to_string() }).session(&mut *s).await?
        else {
            return Ok(Err(FailureReason::InvalidCommand));
        };
        let original = TransactionRecord::try_from(doc)?;
        if original.reversed_by.is_some() {
            return Ok(Err(FailureReason::AlreadyReversed));
        }
        let mirrors = original.status == TransactionStatus::Completed
            && original.kind != TransferKind::Reversal
            && original.from_account == request.to
            && original.to_account == request.from
            && original.amount == request.amount
            && original.currency == request.currency;
        Ok(if mirrors { Ok(()) } else { Err(FailureReason::InvalidCommand) })
    }

    /// Records on the original that it was reversed. Written in the reversal's transaction,
    /// so two concurrent reversals conflict here and only one can complete.
    async fn mark_reversed(
        &self,
        s: &mut ClientSession,
        original: TransactionId,
        by: TransactionId,
    ) -> Result<(), StoreError> {
        let marked = self
            .transactions()
            .update_one(
                doc! { "_id": original.to_string(), "reversedBy": null },
                doc! { "$set": { "reversedBy": by.to_string() } },
            )
            .session(&mut *s)
            .await?;
        if marked.matched_count == 1 { Ok(()) } else { Err(StoreError::Contention { attempts: 0 }) }
    }

    /// Creates the currency's funding account on first use.
    async fn ensure_funding_account(
        &self,
        s: &mut ClientSession,
        id: AccountId,
        request: &ledgerflow_domain::TransferRequest,
    ) -> Result<(), StoreError> {
        self.accounts()
            .update_one(
                doc! { "_id": id.to_string() },
                doc! { "$setOnInsert": {
                    "ownerId": null,
                    "status": "ACTIVE",
                    "currency": request.currency.code(),
                    "seq": 0_i64,
                    "createdAt": to_bson_time(Utc::now()),
                }},
            )
            .upsert(true)
            .session(&mut *s)
            .await?;
        Ok(())
    }

    /// An account and its balance as of this transaction's snapshot: the balance is the
    /// `balanceAfter` of the entry whose `seq` the account document names.
    async fn account_in(
        &self,
        s: &mut ClientSession,
        id: AccountId,
    ) -> Result<Option<(AccountHead, AccountSnapshot)>, StoreError> {
        let Some(doc) = self.accounts().find_one(doc! { "_id": id.to_string() }).session(&mut *s).await? else {
            return Ok(None);
        };
        let account = AccountRecord::try_from(doc)?;
        let (balance, hash) = if account.seq == 0 {
            (Balance::ZERO, GENESIS_HASH.to_owned())
        } else {
            let latest = self
                .entries()
                .find_one(doc! { "accountId": id.to_string(), "seq": account.seq })
                .session(&mut *s)
                .await?
                .ok_or_else(|| StoreError::Corrupt {
                    collection: "accounts",
                    id: id.to_string(),
                    reason: format!("no entry for its latest seq {}", account.seq),
                })?;
            (Balance(latest.balance_after), latest.hash)
        };
        let snapshot = AccountSnapshot { id, status: account.status, currency: account.currency, balance };
        Ok(Some((AccountHead { account, hash }, snapshot)))
    }

    async fn write_entries(
        &self,
        s: &mut ClientSession,
        record: &TransactionRecord,
        from: &AccountHead,
        to: &AccountHead,
        posting: Posting,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Bumping each account's seq is the write that makes concurrent postings on the same
        // account conflict; the filter on the old value guards against a stale snapshot.
        for AccountHead { account, .. } in [from, to] {
            let bumped = self
                .accounts()
                .update_one(
                    doc! { "_id": account.id.to_string(), "seq": account.seq },
                    doc! { "$inc": { "seq": 1_i64 } },
                )
                .session(&mut *s)
                .await?;
            if bumped.matched_count != 1 {
                return Err(StoreError::Contention { attempts: 0 });
            }
        }
        let entry = |head: &AccountHead, entry_type, balance_after: Balance| {
            let fields = EntryFields {
                id: EntryId::generate(),
                account_id: head.account.id,
                transaction_id: record.id,
                entry_type,
                amount: record.amount,
                currency: record.currency,
                seq: head.account.seq + 1,
                balance_after,
                created_at_ms: now.timestamp_millis(),
                prev_hash: &head.hash,
            };
            EntryDoc {
                id: fields.id.to_string(),
                account_id: fields.account_id.to_string(),
                transaction_id: record.id.to_string(),
                entry_type,
                amount: record.amount.minor(),
                currency: record.currency.code().to_owned(),
                seq: fields.seq,
                balance_after: balance_after.minor(),
                created_at: mongodb::bson::DateTime::from_millis(fields.created_at_ms),
                prev_hash: head.hash.clone(),
                hash: fields.hash(),
            }
        };
        self.entries()
            .insert_many([
                entry(from, EntryType::Debit, posting.debit_balance_after),
                entry(to, EntryType::Credit, posting.credit_balance_after),
            ])
            .session(&mut *s)
            .await?;
        Ok(())
    }
}

/// An account as read inside the transaction, with the hash its next entry must chain to.
struct AccountHead {
    account: AccountRecord,
    hash: String,
}

/// Commits, re-sending the commit while its outcome is unknown (safe: commit is idempotent).
async fn commit(session: &mut ClientSession) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) && tries < COMMIT_RETRIES => {
                tries += 1;
                debug!(error = %e, tries, "commit outcome unknown, retrying commit");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Errors after which re-running the whole transaction is safe and may succeed.
fn is_retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Contention { .. } => true,
        StoreError::Database(e) => {
            e.contains_label(TRANSIENT_TRANSACTION_ERROR)
                || e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                || is_duplicate_key(e)
                || matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == WRITE_CONFLICT)
        }
        _ => false,
    }
}
