//! Transactions: every kind's record, its legs, and the request and command it carries.

use chrono::{DateTime, SubsecRound, Utc};
use ledgerflow_domain::holds::HeldFacts;
use ledgerflow_domain::{
    AccountId, Amount, Currency, Description, DomainError, FailureReason, HoldTimeout, IdempotencyKey, Initiator, Leg,
    Metadata, ReversalCandidate, TransactionId, TransactionStatus, TransferCommand, TransferKind, TransferRequest,
};
use mongodb::bson::DateTime as BsonDateTime;
use serde::{Deserialize, Serialize};

use super::{MetadataDoc, field, from_bson_time, metadata_doc, parse_metadata, to_bson_time};
use crate::StoreError;

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
    /// See [`super::HELD_UNTIL`]: written only by inserts, never read back into a record.
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
