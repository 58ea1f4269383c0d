//! Tamper evidence: each account's entries form a hash chain.
//!
//! An entry's hash covers its own fields and the previous entry's hash (the genesis value for
//! an account's first entry). Editing, deleting or reordering any stored entry breaks the
//! chain from that entry on, and `ledgerflow reconcile` names the first broken link.

use sha2::{Digest, Sha256};

use crate::{AccountId, Amount, Balance, Currency, EntryId, EntryType, TransactionId};

/// The `prevHash` of an account's first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields an entry's hash covers, in a fixed order.
#[derive(Debug, Clone, Copy)]
pub struct EntryFields<'a> {
    pub id: EntryId,
    pub account_id: AccountId,
    pub transaction_id: TransactionId,
    pub entry_type: EntryType,
    pub amount: Amount,
    pub currency: Currency,
    pub seq: i64,
    pub balance_after: Balance,
    pub created_at_ms: i64,
    pub prev_hash: &'a str,
    /// Which leg of a journal (or of its reversal) the entry posts; `None` for every other
    /// transaction's entries, which hash as they always did.
    pub leg: Option<u16>,
}

impl EntryFields<'_> {
    /// SHA-256, hex-encoded, over every field, each length-prefixed so that no two different
    /// entries feed the hash the same bytes.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.id.to_string().as_str(),
            &self.account_id.to_string(),
            &self.transaction_id.to_string(),
            self.entry_type.as_str(),
            &self.amount.to_string(),
            self.currency.code(),
            &self.seq.to_string(),
            &self.balance_after.minor().to_string(),
            &self.created_at_ms.to_string(),
            self.prev_hash,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        if let Some(leg) = self.leg {
            let part = format!("leg:{leg}");
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(prev: &str) -> EntryFields<'_> {
        EntryFields {
            id: EntryId::generate(),
            account_id: AccountId::generate(),
            transaction_id: TransactionId::generate(),
            entry_type: EntryType::Credit,
            amount: Amount::new(100).expect("amount"),
            currency: Currency::USD,
            seq: 1,
            balance_after: Balance(100),
            created_at_ms: 1_700_000_000_000,
            prev_hash: prev,
            leg: None,
        }
    }

    #[test]
    fn any_changed_field_changes_the_hash() {
        let base = fields(GENESIS_HASH);
        let h = base.hash();
        assert_eq!(h.len(), 64);
        assert_eq!(h, base.hash());
        assert_ne!(h, EntryFields { amount: Amount::new(101).expect("amount"), ..base }.hash());
        assert_ne!(h, EntryFields { balance_after: Balance(99), ..base }.hash());
        assert_ne!(h, EntryFields { seq: 2, ..base }.hash());
        assert_ne!(h, EntryFields { leg: Some(0), ..base }.hash());
        assert_ne!(EntryFields { leg: Some(0), ..base }.hash(), EntryFields { leg: Some(1), ..base }.hash());
        assert_ne!(h, EntryFields { entry_type: EntryType::Debit, ..base }.hash());
        assert_ne!(h, EntryFields { prev_hash: &h, ..base }.hash());
    }
}
