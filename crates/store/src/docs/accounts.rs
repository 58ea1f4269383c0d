//! Accounts: who owns one, its currency, its last sequence number, what its holds reserve
//! and its limits.

use chrono::{DateTime, Utc};
use ledgerflow_domain::{AccountId, AccountLimits, AccountStatus, Currency, Metadata, Reserved, UserId};
use mongodb::bson::DateTime as BsonDateTime;
use serde::{Deserialize, Serialize};

use super::{MetadataDoc, field, from_bson_time, metadata_doc, parse_metadata, to_bson_time};
use crate::StoreError;

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
