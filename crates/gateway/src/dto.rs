//! Response bodies. Field names are the API's (camelCase), independent of storage.

use chrono::{DateTime, SecondsFormat, Utc};
use ledgerflow_domain::{Balance, Currency};
use ledgerflow_store::{AccountRecord, EntryRecord, TransactionRecord, UserRecord};
use serde::Serialize;
use serde_json::{Value, json};

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn user(u: &UserRecord) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "name": u.name,
        "role": u.role,
    })
}

pub fn account(a: &AccountRecord) -> Value {
    json!({
        "id": a.id,
        "ownerId": a.owner_id,
        "status": a.status,
        "currency": a.currency,
        "createdAt": time(a.created_at),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BalanceBody {
    pub account_id: ledgerflow_domain::AccountId,
    pub currency: Currency,
    pub balance: Balance,
}

pub fn entry(e: &EntryRecord) -> Value {
    json!({
        "id": e.id,
        "transactionId": e.transaction_id,
        "type": e.entry_type,
        "amount": e.amount,
        "currency": e.currency,
        "seq": e.seq,
        "balanceAfter": e.balance_after,
        "createdAt": time(e.created_at),
    })
}

pub fn transaction(t: &TransactionRecord) -> Value {
    let mut body = json!({
        "id": t.id,
        "kind": t.kind,
        "fromAccount": t.from_account,
        "toAccount": t.to_account,
        "amount": t.amount,
        "currency": t.currency,
        "status": t.status,
        "idempotencyKey": t.idempotency_key,
        "createdAt": time(t.created_at),
    });
    if let Some(d) = &t.description {
        body["description"] = json!(d);
    }
    if let Some(r) = t.failure_reason {
        body["failureReason"] = json!(r);
    }
    if let Some(c) = t.completed_at {
        body["completedAt"] = json!(time(c));
    }
    if let Some(r) = t.reverses {
        body["reverses"] = json!(r);
    }
    if let Some(r) = t.reversed_by {
        body["reversedBy"] = json!(r);
    }
    body
}
