//! Stored document shapes and their parsing into domain records.
//!
//! Documents hold plain strings and integers so that they read well in any MongoDB tool; the
//! records hold domain types. Conversion fails loudly ([`StoreError::Corrupt`]) rather than
//! guessing.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use ledgerflow_domain::holds::HeldFacts;
use ledgerflow_domain::{
    AccountId, AccountLimits, AccountStatus, Amount, Balance, Currency, Description, DomainError, Email, EntryId,
    EntryType, FailureReason, HoldTimeout, IdempotencyKey, Initiator, Leg, Metadata, PersonName, Reserved,
    ReversalCandidate, Role, TransactionId, TransactionStatus, TransferCommand, TransferKind, TransferRequest, UserId,
};
use mongodb::bson::DateTime as BsonDateTime;
use serde::{Deserialize, Serialize};

use crate::StoreError;

pub(crate) fn to_bson_time(t: DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(t.timestamp_millis())
}

pub(crate) fn from_bson_time(t: BsonDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or_default()
}

/// A hold's `expiresAt` while it may still expire (PENDING or HELD): set when it is recorded,
/// removed when it is settled, expires or fails. The expiry sweep's index is on this field, not
/// on `status`: see [`crate::pending`] for why no index of `transactions` may name `status`.
pub(crate) const HELD_UNTIL: &str = "heldUntil";

/// Set on a hold when it expires and removed once its EXPIRED result is published (see
/// `Store::expiries_unreported`); absent on every other transaction.
pub(crate) const EXPIRY_UNREPORTED: &str = "expiryUnreported";

/// A query guard on a reserved amount as read: a zero also matches an account stored before
/// holds, which has no such field.
pub(crate) fn reserved_guard(read: i64) -> mongodb::bson::Bson {
    if read == 0 { mongodb::bson::bson!({ "$in": [0_i64, null] }) } else { read.into() }
}

/// Parses one stored field, naming the document on failure.
pub(crate) fn field<T: FromStr<Err = DomainError>>(
    collection: &'static str,
    id: &str,
    raw: &str,
) -> Result<T, StoreError> {
    raw.parse().map_err(|e: DomainError| StoreError::Corrupt { collection, id: id.to_owned(), reason: e.to_string() })
}

/// Metadata as stored: an object of strings, read back through the domain's rules.
pub(crate) type MetadataDoc = BTreeMap<String, String>;

pub(crate) fn metadata_doc(m: &Metadata) -> MetadataDoc {
    m.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned())).collect()
}

fn parse_metadata(collection: &'static str, id: &str, d: &MetadataDoc) -> Result<Metadata, StoreError> {
    Metadata::from_pairs(d.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|e| StoreError::Corrupt {
        collection,
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    pub password_hash: String,
    pub created_at: BsonDateTime,
    /// Bumped to end every session (see [`UserRecord::session_version`]); absent on users
    /// stored before there were sessions to end, which is version 0.
    #[serde(default)]
    pub session_version: i64,
}

/// A user as stored, including the password hash (which never leaves the gateway).
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub email: Email,
    pub name: Option<PersonName>,
    pub role: Role,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// Every token carries the version current when it was issued and is honoured only while
    /// it still is: bumping it (sign-out, a new SYSTEM password) ends every session at once.
    pub session_version: i64,
}

impl TryFrom<UserDoc> for UserRecord {
    type Error = StoreError;
    fn try_from(d: UserDoc) -> Result<Self, StoreError> {
        const C: &str = "users";
        Ok(Self {
            id: field(C, &d.id, &d.id)?,
            email: field(C, &d.id, &d.email)?,
            name: d.name.as_deref().map(|n| field(C, &d.id, n)).transpose()?,
            role: d.role,
            password_hash: d.password_hash,
            created_at: from_bson_time(d.created_at),
            session_version: d.session_version,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountDoc {
    #[serde(rename = "_id")]
    pub id: String,
    /// Absent for funding accounts, which belong to the system.
    pub owner_id: Option<String>,
    pub status: String,
    pub currency: String,
    /// Sequence number of the account's latest entry (0: none yet). Bumped by every posting.
    pub seq: i64,
    pub created_at: BsonDateTime,
    /// What HELD holds reserve on the account (see `ledgerflow_domain::limits`), kept in step
    /// with the holds in the same transactions. Absent on accounts stored before holds: 0.
    #[serde(default)]
    pub pending_debits: i64,
    #[serde(default)]
    pub pending_credits: i64,
    /// Set by SYSTEM; absent: no overdraft, no ceiling.
    #[serde(default)]
    pub overdraft_limit: i64,
    #[serde(default)]
    pub max_balance: Option<i64>,
    /// The widest overdraft line the account ever had, for `reconcile` to judge old entries by.
    #[serde(default)]
    pub peak_overdraft: i64,
    /// The owner's labels; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: AccountId,
    pub owner_id: Option<UserId>,
    pub status: AccountStatus,
    pub currency: Currency,
    pub seq: i64,
    pub created_at: DateTime<Utc>,
    pub reserved: Reserved,
    pub limits: AccountLimits,
    /// The widest overdraft line it ever had (at least `limits.overdraft()`).
    pub peak_overdraft: i64,
    /// The owner's labels (empty: none).
    pub metadata: Metadata,
}

impl AccountDoc {
    /// A new ACTIVE account with no entries yet; `owner` is `None` for a funding account.
    pub(crate) fn active(id: AccountId, owner: Option<UserId>, currency: Currency) -> Self {
        Self {
            id: id.to_string(),
            owner_id: owner.map(|o| o.to_string()),
            status: AccountStatus::Active.as_str().to_owned(),
            currency: currency.code().to_owned(),
            seq: 0,
            created_at: to_bson_time(Utc::now()),
            pending_debits: 0,
            pending_credits: 0,
            overdraft_limit: 0,
            max_balance: None,
            peak_overdraft: 0,
            metadata: None,
        }
    }
}

impl From<&AccountRecord> for AccountDoc {
    fn from(a: &AccountRecord) -> Self {
        Self {
            id: a.id.to_string(),
            owner_id: a.owner_id.map(|o| o.to_string()),
            status: a.status.as_str().to_owned(),
            currency: a.currency.code().to_owned(),
            seq: a.seq,
            created_at: to_bson_time(a.created_at),
            pending_debits: a.reserved.debits,
            pending_credits: a.reserved.credits,
            overdraft_limit: a.limits.overdraft(),
            max_balance: a.limits.max_balance(),
            peak_overdraft: a.peak_overdraft,
            metadata: (!a.metadata.is_empty()).then(|| metadata_doc(&a.metadata)),
        }
    }
}

impl TryFrom<AccountDoc> for AccountRecord {
    type Error = StoreError;
    fn try_from(d: AccountDoc) -> Result<Self, StoreError> {
        const C: &str = "accounts";
        let corrupt = |reason| StoreError::Corrupt { collection: C, id: d.id.clone(), reason };
        Ok(Self {
            id: field(C, &d.id, &d.id)?,
            owner_id: d.owner_id.as_deref().map(|o| field(C, &d.id, o)).transpose()?,
            status: field(C, &d.id, &d.status)?,
            currency: field(C, &d.id, &d.currency)?,
            seq: d.seq,
            created_at: from_bson_time(d.created_at),
            reserved: match (d.pending_debits, d.pending_credits) {
                (debits @ 0.., credits @ 0..) => Reserved { debits, credits },
                _ => return Err(corrupt("pendingDebits and pendingCredits must not be negative".to_owned())),
            },
            limits: AccountLimits::new(d.overdraft_limit, d.max_balance).map_err(|e| corrupt(e.to_string()))?,
            peak_overdraft: d.peak_overdraft.max(d.overdraft_limit),
            metadata: d.metadata.as_ref().map(|m| parse_metadata(C, &d.id, m)).transpose()?.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransactionDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub kind: String,
    pub from_account: String,
    pub to_account: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub failure_reason: Option<String>,
    /// The idempotency scope: the initiator, so keys are per caller, not global.
    pub idempotency_scope: String,
    pub idempotency_key: String,
    /// Fingerprint of the request (see `TransferRequest::fingerprint`).
    pub request_hash: String,
    pub initiator: String,
    pub description: Option<String>,
    pub requested_at: BsonDateTime,
    pub created_at: BsonDateTime,
    pub completed_at: Option<BsonDateTime>,
    /// For a REVERSAL: the transaction it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverses: Option<String>,
    /// On a reversed transaction: the REVERSAL that undid it (set when that completes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversed_by: Option<String>,
    /// For a HOLD: how long it may stay HELD, and when that ends (`createdAt` + timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<BsonDateTime>,
    /// See [`HELD_UNTIL`]: written only by inserts, never read back into a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<BsonDateTime>,
    /// For a POST_HOLD or VOID_HOLD: the hold it settles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// On a settled hold: how much was posted (POSTED only), by which POST_HOLD or VOID_HOLD
    /// (absent when it EXPIRED), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<BsonDateTime>,
    /// A JOURNAL's legs, or those its REVERSAL moves back (absent on every other
    /// transaction, whose one movement is `fromAccount` to `toAccount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<LegDoc>,
    /// Every account the transaction's movements touch (a journal's legs', each once), so
    /// that one multikey index finds any transaction by any of its accounts. One index rather
    /// than one per role: inside a multi-document transaction MongoDB 6.0 pays a check per
    /// index of the collection for every document it updates. Absent only on documents
    /// stored before it, which `Store::ensure_indexes` fills in.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// For a FAILED journal: the index of the leg that failed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_leg: Option<i64>,
    /// The client's labels, and their search terms (`key=value`, see
    /// `Metadata::search_terms`) for the one multikey index that serves a search by any key.
    /// Both absent when there are none, which keeps such transactions out of that index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_terms: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LegDoc {
    pub from_account: String,
    pub to_account: String,
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub id: TransactionId,
    pub kind: TransferKind,
    pub from_account: AccountId,
    pub to_account: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub status: TransactionStatus,
    pub failure_reason: Option<FailureReason>,
    pub idempotency_key: IdempotencyKey,
    pub request_hash: String,
    pub initiator: Initiator,
    pub description: Option<Description>,
    pub requested_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub reverses: Option<TransactionId>,
    pub reversed_by: Option<TransactionId>,
    pub timeout: Option<HoldTimeout>,
    pub expires_at: Option<DateTime<Utc>>,
    pub hold: Option<TransactionId>,
    pub posted_amount: Option<Amount>,
    pub resolved_by: Option<TransactionId>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// A journal's legs (see `TransferRequest::legs`); empty for every other transaction.
    pub legs: Vec<Leg>,
    pub failed_leg: Option<u16>,
    pub metadata: Option<Metadata>,
}

impl TryFrom<TransactionDoc> for TransactionRecord {
    type Error = StoreError;
    fn try_from(d: TransactionDoc) -> Result<Self, StoreError> {
        const C: &str = "transactions";
        let corrupt = |e: DomainError| StoreError::Corrupt { collection: C, id: d.id.clone(), reason: e.to_string() };
        Ok(Self {
            id: field(C, &d.id, &d.id)?,
            kind: field(C, &d.id, &d.kind)?,
            from_account: field(C, &d.id, &d.from_account)?,
            to_account: field(C, &d.id, &d.to_account)?,
            amount: Amount::new(d.amount).map_err(corrupt)?,
            currency: field(C, &d.id, &d.currency)?,
            status: field(C, &d.id, &d.status)?,
            failure_reason: d.failure_reason.as_deref().map(|r| field(C, &d.id, r)).transpose()?,
            idempotency_key: field(C, &d.id, &d.idempotency_key)?,
            request_hash: d.request_hash.clone(),
            initiator: field(C, &d.id, &d.initiator)?,
            description: d.description.as_deref().map(|s| field(C, &d.id, s)).transpose()?,
            requested_at: from_bson_time(d.requested_at),
            created_at: from_bson_time(d.created_at),
            completed_at: d.completed_at.map(from_bson_time),
            reverses: d.reverses.as_deref().map(|r| field(C, &d.id, r)).transpose()?,
            reversed_by: d.reversed_by.as_deref().map(|r| field(C, &d.id, r)).transpose()?,
            timeout: d.timeout_seconds.map(HoldTimeout::new).transpose().map_err(corrupt)?,
            expires_at: d.expires_at.map(from_bson_time),
            hold: d.hold.as_deref().map(|h| field(C, &d.id, h)).transpose()?,
            posted_amount: d.posted_amount.map(Amount::new).transpose().map_err(corrupt)?,
            resolved_by: d.resolved_by.as_deref().map(|r| field(C, &d.id, r)).transpose()?,
            resolved_at: d.resolved_at.map(from_bson_time),
            legs: d
                .legs
                .iter()
                .map(|l| {
                    let leg = Leg::new(
                        field(C, &d.id, &l.from_account)?,
                        field(C, &d.id, &l.to_account)?,
                        Amount::new(l.amount).map_err(corrupt)?,
                        field(C, &d.id, &l.currency)?,
                    );
                    leg.map_err(corrupt)
                })
                .collect::<Result<_, _>>()?,
            failed_leg: d
                .failed_leg
                .map(|i| u16::try_from(i).ok().filter(|i| usize::from(*i) < d.legs.len().max(1)))
                .map(|i| {
                    i.ok_or_else(|| corrupt(DomainError::Invalid { field: "failedLeg", reason: "names no leg".into() }))
                })
                .transpose()?,
            metadata: d
                .metadata
                .as_ref()
                .map(|m| parse_metadata(C, &d.id, m))
                .transpose()?
                .and_then(Metadata::non_empty),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntryDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub account_id: String,
    pub transaction_id: String,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    pub amount: i64,
    pub currency: String,
    /// Position in the account's history: 1, 2, 3… with no gaps.
    pub seq: i64,
    /// The account's balance once this entry is applied: what balance reads return.
    pub balance_after: i64,
    pub created_at: BsonDateTime,
    /// The previous entry's `hash` on this account (`GENESIS_HASH` for the first).
    pub prev_hash: String,
    /// SHA-256 over this entry's fields and `prev_hash` (see `ledgerflow_domain::EntryFields`).
    pub hash: String,
    /// Which leg of its journal (or of the journal's reversal) it posts; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    pub id: EntryId,
    pub account_id: AccountId,
    pub transaction_id: TransactionId,
    pub entry_type: EntryType,
    pub amount: Amount,
    pub currency: Currency,
    pub seq: i64,
    pub balance_after: Balance,
    pub created_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
    pub leg: Option<u16>,
}

impl EntryRecord {
    /// The fields the chain hash covers, as stored.
    pub fn chain_fields(&self) -> ledgerflow_domain::EntryFields<'_> {
        ledgerflow_domain::EntryFields {
            id: self.id,
            account_id: self.account_id,
            transaction_id: self.transaction_id,
            entry_type: self.entry_type,
            amount: self.amount,
            currency: self.currency,
            seq: self.seq,
            balance_after: self.balance_after,
            created_at_ms: self.created_at.timestamp_millis(),
            prev_hash: &self.prev_hash,
            leg: self.leg,
        }
    }
}

impl TryFrom<EntryDoc> for EntryRecord {
    type Error = StoreError;
    fn try_from(d: EntryDoc) -> Result<Self, StoreError> {
        const C: &str = "entries";
        let corrupt = |e: DomainError| StoreError::Corrupt { collection: C, id: d.id.clone(), reason: e.to_string() };
        Ok(Self {
            id: field(C, &d.id, &d.id)?,
            account_id: field(C, &d.id, &d.account_id)?,
            transaction_id: field(C, &d.id, &d.transaction_id)?,
            entry_type: d.entry_type,
            amount: Amount::new(d.amount).map_err(corrupt)?,
            currency: field(C, &d.id, &d.currency)?,
            seq: d.seq,
            balance_after: Balance(d.balance_after),
            created_at: from_bson_time(d.created_at),
            leg: d
                .leg
                .map(|leg| {
                    u16::try_from(leg).map_err(|_| {
                        corrupt(DomainError::Invalid { field: "leg", reason: "must be 0 to 65535".into() })
                    })
                })
                .transpose()?,
            prev_hash: d.prev_hash,
            hash: d.hash,
        })
    }
}

impl TransactionRecord {
    /// A new PENDING record for a command, created at `created_at`. Times are kept to the
    /// millisecond, as stored, so the record says exactly what its document holds.
    pub(crate) fn pending(id: TransactionId, cmd: &TransferCommand, created_at: DateTime<Utc>) -> Self {
        let r = &cmd.request;
        Self {
            id,
            kind: r.kind,
            from_account: r.from,
            to_account: r.to,
            amount: r.amount,
            currency: r.currency,
            status: TransactionStatus::Pending,
            failure_reason: None,
            idempotency_key: cmd.idempotency_key.clone(),
            request_hash: r.fingerprint(),
            initiator: cmd.initiator.clone(),
            description: r.description.clone(),
            requested_at: cmd.requested_at.trunc_subsecs(3),
            created_at: created_at.trunc_subsecs(3),
            completed_at: None,
            reverses: r.reverses,
            reversed_by: None,
            timeout: r.timeout,
            expires_at: r.timeout.map(|t| created_at.trunc_subsecs(3) + chrono::Duration::seconds(t.seconds().into())),
            hold: r.hold,
            posted_amount: None,
            resolved_by: None,
            resolved_at: None,
            legs: r.legs.clone(),
            failed_leg: None,
            metadata: r.metadata.clone(),
        }
    }

    /// The request this transaction carries out.
    pub fn request(&self) -> TransferRequest {
        TransferRequest {
            kind: self.kind,
            from: self.from_account,
            to: self.to_account,
            amount: self.amount,
            currency: self.currency,
            description: self.description.clone(),
            reverses: self.reverses,
            hold: self.hold,
            timeout: self.timeout,
            legs: self.legs.clone(),
            metadata: self.metadata.clone(),
        }
    }

    /// What the settling rule needs to know of this hold (`None` unless it is one).
    pub fn held_facts(&self) -> Option<HeldFacts> {
        let expires_at = self.expires_at.filter(|_| self.kind == TransferKind::Hold)?;
        Some(HeldFacts { request: self.request(), status: self.status, initiator: self.initiator.clone(), expires_at })
    }

    /// What the reversal rule needs to know of this transaction.
    pub fn reversal_candidate(&self) -> ReversalCandidate {
        ReversalCandidate { kind: self.kind, status: self.status, reversed_by: self.reversed_by }
    }

    /// The command that carries this transaction to a worker (used to publish, and to
    /// republish after a lost publish).
    pub fn to_command(&self) -> TransferCommand {
        TransferCommand {
            transaction_id: Some(self.id),
            request: self.request(),
            idempotency_key: self.idempotency_key.clone(),
            initiator: self.initiator.clone(),
            requested_at: self.requested_at,
        }
    }
}

impl From<&TransactionRecord> for TransactionDoc {
    fn from(r: &TransactionRecord) -> Self {
        Self {
            id: r.id.to_string(),
            kind: r.kind.as_str().to_owned(),
            from_account: r.from_account.to_string(),
            to_account: r.to_account.to_string(),
            amount: r.amount.minor(),
            currency: r.currency.code().to_owned(),
            status: r.status.as_str().to_owned(),
            failure_reason: r.failure_reason.map(|reason| reason.as_str().to_owned()),
            idempotency_scope: r.initiator.to_string(),
            idempotency_key: r.idempotency_key.as_str().to_owned(),
            request_hash: r.request_hash.clone(),
            initiator: r.initiator.to_string(),
            description: r.description.as_ref().map(|d| d.as_str().to_owned()),
            requested_at: to_bson_time(r.requested_at),
            created_at: to_bson_time(r.created_at),
            completed_at: r.completed_at.map(to_bson_time),
            reverses: r.reverses.map(|id| id.to_string()),
            reversed_by: r.reversed_by.map(|id| id.to_string()),
            timeout_seconds: r.timeout.map(|t| i64::from(t.seconds())),
            expires_at: r.expires_at.map(to_bson_time),
            held_until: r.expires_at.filter(|_| r.kind == TransferKind::Hold && !r.status.is_final()).map(to_bson_time),
            hold: r.hold.map(|id| id.to_string()),
            posted_amount: r.posted_amount.map(Amount::minor),
            resolved_by: r.resolved_by.map(|id| id.to_string()),
            resolved_at: r.resolved_at.map(to_bson_time),
            legs: r
                .legs
                .iter()
                .map(|l| LegDoc {
                    from_account: l.from.to_string(),
                    to_account: l.to.to_string(),
                    amount: l.amount.minor(),
                    currency: l.currency.code().to_owned(),
                })
                .collect(),
            accounts: r.request().accounts().iter().map(ToString::to_string).collect(),
            failed_leg: r.failed_leg.map(i64::from),
            metadata: r.metadata.as_ref().map(metadata_doc),
            metadata_terms: r.metadata.as_ref().map(Metadata::search_terms),
        }
    }
}

impl From<&EntryRecord> for EntryDoc {
    fn from(e: &EntryRecord) -> Self {
        Self {
            id: e.id.to_string(),
            account_id: e.account_id.to_string(),
            transaction_id: e.transaction_id.to_string(),
            entry_type: e.entry_type,
            amount: e.amount.minor(),
            currency: e.currency.code().to_owned(),
            seq: e.seq,
            balance_after: e.balance_after.minor(),
            created_at: to_bson_time(e.created_at),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
            leg: e.leg.map(i64::from),
        }
    }
}
