//! Transactions as the HTTP API shows them (`ledgerflow_api`'s wire types). Here rather than
//! in the gateway because an event carries its transaction exactly as `GET /transactions/{id}`
//! shows it, rendered by whoever writes the event in the transaction that changes it: the
//! gateway on acceptance, a worker on every decision after that.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use ledgerflow_api::{LegBody, TransactionBody};
use ledgerflow_domain::{Metadata, TransferKind};

use crate::TransactionRecord;

/// An instant as the API writes it: RFC 3339, UTC, milliseconds.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Metadata as answered: an object of strings.
pub fn labels(m: &Metadata) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned())).collect()
}

/// A transaction as answered.
pub fn transaction(t: &TransactionRecord) -> TransactionBody {
    TransactionBody {
        id: t.id.to_string(),
        kind: t.kind.as_str().to_owned(),
        from_account: t.from_account.to_string(),
        to_account: t.to_account.to_string(),
        amount: t.amount.minor(),
        currency: t.currency.code().to_owned(),
        legs: (!t.legs.is_empty()).then(|| {
            t.legs
                .iter()
                .map(|l| LegBody {
                    from_account: l.from.to_string(),
                    to_account: l.to.to_string(),
                    amount: l.amount.minor(),
                    currency: l.currency.code().to_owned(),
                })
                .collect()
        }),
        failed_leg: t.failed_leg,
        status: t.status.as_str().to_owned(),
        idempotency_key: t.idempotency_key.to_string(),
        description: t.description.as_ref().map(|d| d.as_str().to_owned()),
        failure_reason: t.failure_reason.map(|r| r.as_str().to_owned()),
        created_at: time(t.created_at),
        completed_at: t.completed_at.map(time),
        reverses: t.reverses.map(|r| r.to_string()),
        reversed_by: t.reversed_by.map(|r| r.to_string()),
        held_amount: (t.kind == TransferKind::Hold).then_some(t.amount.minor()),
        expires_at: t.expires_at.map(time),
        posted_amount: t.posted_amount.map(|a| a.minor()),
        resolved_by: t.resolved_by.map(|r| r.to_string()),
        resolved_at: t.resolved_at.map(time),
        hold: t.hold.map(|h| h.to_string()),
        metadata: t.metadata.as_ref().map(labels),
    }
}
