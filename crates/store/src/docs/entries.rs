//! Entries: one posting on one account, hash-chained to the account's previous one.

use chrono::{DateTime, Utc};
use ledgerflow_domain::{AccountId, Amount, Balance, Currency, DomainError, EntryId, EntryType, TransactionId};
use mongodb::bson::DateTime as BsonDateTime;
use serde::{Deserialize, Serialize};

use super::{field, from_bson_time, to_bson_time};
use crate::StoreError;

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
