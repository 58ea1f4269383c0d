//! MongoDB persistence for LedgerFlow.
//!
//! Collections: `users`, `accounts`, `transactions`, `entries`, `services` (upstream systems
//! and their grants) and `loginFailures` (failed sign-ins, expiring by a TTL index). Entries
//! are the only source of money truth and are never updated or deleted. Each account document
//! carries a `seq`, the sequence number of its latest entry; every posting bumps it inside the
//! same multi-document transaction, which makes two concurrent postings on one account
//! conflict (one retries) instead of both reading the same balance. The balance itself is the `balanceAfter` of the account's latest
//! entry: one indexed read, however long the history.
//!
//! Stored documents are parsed back into domain types here (`docs`); nothing above this
//! crate sees BSON.

mod accounts;
mod audit;
mod decide;
mod deliveries;
mod docs;
mod error;
pub mod events;
mod execute;
mod group;
mod holds;
mod labels;
mod pending;
mod reconcile;
mod relay;
pub mod render;
pub mod search;
mod services;
mod statements;
pub mod synthetic;
mod transactions;
mod users;
mod webhooks;

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

pub use deliveries::{Attempt, AttemptOutcome, DeliveryBacklog, DeliveryRecord, DeliveryStatus, NewDelivery};
pub use docs::{AccountRecord, EntryRecord, TransactionRecord, UserRecord};
pub use error::StoreError;
pub use events::{EventAccount, EventFilter, EventRecord};
pub use execute::{Execution, Outcome};
pub use group::{GroupCommit, Grouping};
pub use mongodb::change_stream::event::ResumeToken;
pub use reconcile::{CurrencyTotal, Discrepancy, NoProgress, Progress, ReconcileOptions, ReconcileReport};
pub use relay::{OutboxFeed, RelayLease};
pub use search::{SearchFilter, SearchPlan};
pub use services::{ServiceRecord, ServiceTaken};
pub use statements::{EntryMark, ReadPlan, StatementPage};
pub use transactions::{InsertPending, PendingWriter, TransactionFilter, TransactionReader};
pub use webhooks::{EventFacts, NewWebhook, WebhookRecord, WebhookSecret};

/// Connections per process to MongoDB unless the URI sets `maxPoolSize`.
const DEFAULT_MAX_POOL_SIZE: u32 = 100;

/// Largest page any listing returns, whatever the caller asks for.
pub const MAX_PAGE: i64 = 100;
/// Longest a [`Store::shutdown`] waits for the server.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(2);

/// A handle on the LedgerFlow database; cheap to clone (the driver pools connections).
#[derive(Clone)]
pub struct Store {
    client: Client,
    db: Database,
    /// How long `execute` keeps retrying write conflicts before giving the command back.
    conflict_retry_budget: Duration,
}

/// An index older versions created on entries: one of each type per transaction.
const RETIRED_ENTRY_PAIR_INDEX: &str = "transactionId_1_type_1";
/// Indexes older versions created on transactions: `(status, publishedAt, createdAt)`, which
/// the republisher read while it marked publishes, those the `accounts` index and its
/// holds-by-expiry twin replaced (one per account role), and the two on `status` that
/// `pending` and `heldUntil` replaced (see `pending`).
const RETIRED_TRANSACTION_INDEXES: [&str; 8] = [
    "status_1_publishedAt_1_createdAt_1",
    pending::RETIRED_STATUS_INDEX,
    pending::RETIRED_HELD_INDEX,
    "fromAccount_1__id_-1",
    "toAccount_1__id_-1",
    "legAccounts_1__id_-1",
    "hold_fromAccount_expiresAt",
    "hold_toAccount_expiresAt",
];

/// Drops `name` on `collection`; an index that is not there is no error (a database made
/// after it was retired, or a second start).
async fn drop_index_if_any<T: Send + Sync>(collection: &Collection<T>, name: &str) -> Result<(), StoreError> {
    match collection.drop_index(name).await {
        Err(e) if !error::is_index_not_found(&e) => Err(e.into()),
        _ => Ok(()),
    }
}

impl Store {
    /// Connects lazily: the driver reconnects by itself after outages, so this only fails on
    /// a malformed URI. Call [`Store::ensure_indexes`] before serving.
    pub async fn connect(uri: &str, database: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri).await?;
        options.app_name.get_or_insert_with(|| "ledgerflow".to_owned());
        options.server_selection_timeout.get_or_insert(Duration::from_secs(5));
        options.connect_timeout.get_or_insert(Duration::from_secs(5));
        // The driver's default of 10 connections queues a busy gateway's requests behind
        // each other's majority writes; connections are still opened only as needed.
        options.max_pool_size.get_or_insert(DEFAULT_MAX_POOL_SIZE);
        let client = Client::with_options(options)?;
        let db = client.database(database);
        Ok(Self { client, db, conflict_retry_budget: execute::CONFLICT_RETRY_BUDGET })
    }

    /// Sets how long [`Store::execute`] retries write conflicts before failing with
    /// [`StoreError::Contention`] (the worker then retries later through its retry queue).
    pub fn with_conflict_retry_budget(mut self, budget: Duration) -> Self {
        self.conflict_retry_budget = budget;
        self
    }

    /// Creates the indexes the invariants rely on (idempotent). The unique ones are not
    /// optimisations: they are what makes a duplicate idempotency key, a second entry pair
    /// for one transaction or a repeated sequence number impossible.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = || IndexOptions::builder().unique(true).build();
        let index = |keys, options: Option<IndexOptions>| IndexModel::builder().keys(keys).options(options).build();
        self.users().create_index(index(doc! { "email": 1 }, Some(unique()))).await?;
        self.accounts().create_index(index(doc! { "ownerId": 1, "_id": 1 }, None)).await?;
        self.db
            .collection::<mongodb::bson::Document>("services")
            .create_index(index(doc! { "brokerUser": 1 }, Some(unique())))
            .await?;
        let expire_at_until = IndexOptions::builder().expire_after(Duration::ZERO).build();
        self.login_failures().create_index(index(doc! { "until": 1 }, Some(expire_at_until))).await?;
        self.transactions()
            .create_indexes([
                index(doc! { "idempotencyScope": 1, "idempotencyKey": 1 }, Some(unique())),
                // Transactions by any account they touch, newest first (multikey).
                index(doc! { "accounts": 1, "_id": -1 }, None),
                index(doc! { "initiator": 1, "_id": -1 }, None),
                index(doc! { "reverses": 1 }, Some(IndexOptions::builder().sparse(true).build())),
                search::metadata_index(),
                // The sweep's look for expiries whose result may not be out: normally empty.
                index(
                    doc! { "resolvedAt": 1 },
                    Some(
                        IndexOptions::builder()
                            .name("expiryUnreported_resolvedAt".to_owned())
                            .partial_filter_expression(doc! { (docs::EXPIRY_UNREPORTED): true })
                            .build(),
                    ),
                ),
            ])
            .await?;
        // One DEBIT and one CREDIT per transaction and leg (`leg` is absent, so null, on every
        // transaction but a journal and its reversal).
        self.entries()
            .create_indexes([
                index(doc! { "accountId": 1, "seq": -1 }, Some(unique())),
                index(doc! { "transactionId": 1, "type": 1, "leg": 1 }, Some(unique())),
                // Balances as of an instant: an account's last entry at or before it.
                index(
                    doc! { "accountId": 1, "createdAt": 1, "seq": 1 },
                    Some(IndexOptions::builder().name(statements::ENTRIES_BY_TIME.to_owned()).build()),
                ),
            ])
            .await?;
        // Reservations as of an instant: the holds that can have been HELD then, by expiry.
        let holds = IndexOptions::builder()
            .name(statements::HOLDS_BY_EXPIRY.to_owned())
            .partial_filter_expression(doc! { "kind": ledgerflow_domain::TransferKind::Hold.as_str() })
            .build();
        self.transactions().create_index(index(doc! { "accounts": 1, "expiresAt": 1 }, Some(holds))).await?;
        self.fill_in_accounts().await?;
        // Before the retired status index goes: on an older database, it finds what to fill in.
        self.ensure_pending_indexes().await?;
        // Each index of `transactions` costs every update inside a transaction that changes an
        // indexed field a check (see `pending`), so those nothing reads any more go; the ones
        // replacing them are in place first.
        for retired in RETIRED_TRANSACTION_INDEXES {
            drop_index_if_any(&self.transactions(), retired).await?;
        }
        // Its predecessor allowed one DEBIT and one CREDIT per transaction, which a journal's
        // second leg would break; the new index is in place before it goes.
        drop_index_if_any(&self.entries(), RETIRED_ENTRY_PAIR_INDEX).await?;
        self.ensure_webhook_indexes().await?;
        Ok(())
    }

    /// Gives every transaction stored before the `accounts` field its accounts (from its
    /// `fromAccount`, `toAccount` and, for a journal, the `legAccounts` that field replaces).
    /// Once done, finding none left is one step of the `accounts` index, where such documents
    /// sit under null.
    async fn fill_in_accounts(&self) -> Result<(), StoreError> {
        let fill = doc! {
            "$set": { "accounts": {
                "$setUnion": [["$fromAccount", "$toAccount"], { "$ifNull": ["$legAccounts", []] }],
            } },
        };
        let filled = self
            .transactions()
            .update_many(doc! { "accounts": null }, vec![fill, doc! { "$unset": "legAccounts" }])
            .await?;
        if filled.modified_count > 0 {
            tracing::info!(transactions = filled.modified_count, "stored transactions given their accounts");
        }
        Ok(())
    }

    /// Round-trips to the server; used by readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    /// Makes the server write every change it holds in its cache to its data files now (a
    /// WiredTiger checkpoint, the `fsync` command). For the bench, between a load and the
    /// next: otherwise the second pays for writing out what the first left.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.client.database("admin").run_command(doc! { "fsync": 1 }).await?;
        Ok(())
    }

    /// The database this store uses.
    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    /// Drops the whole database. For tests and throwaway environments only.
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        self.db.drop().await?;
        Ok(())
    }

    /// Ends the client's server sessions and closes its connections now, for a process about
    /// to exit: left to `Drop`, the driver cleans up in tasks of its own, which may still ask
    /// for a connection while the runtime stops, and that panics inside the driver. Clones of
    /// this store are shut down with it. Bounded, as ending sessions needs the server, and an
    /// unreachable server may be why the process stops.
    pub async fn shutdown(self) {
        if tokio::time::timeout(SHUTDOWN_LIMIT, self.client.shutdown().immediate(true)).await.is_err() {
            tracing::warn!(limit = ?SHUTDOWN_LIMIT, "MongoDB client shutdown took too long; leaving the rest to exit");
        }
    }

    fn users(&self) -> Collection<docs::UserDoc> {
        self.db.collection("users")
    }

    fn accounts(&self) -> Collection<docs::AccountDoc> {
        self.db.collection("accounts")
    }

    fn transactions(&self) -> Collection<docs::TransactionDoc> {
        self.db.collection("transactions")
    }

    fn entries(&self) -> Collection<docs::EntryDoc> {
        self.db.collection("entries")
    }

    /// Failed sign-ins per email: `{_id: email, failures, until}`, removed by a TTL index once
    /// `until` has passed (reads check `until` themselves: the TTL monitor runs each minute).
    fn login_failures(&self) -> Collection<mongodb::bson::Document> {
        self.db.collection("loginFailures")
    }
}
