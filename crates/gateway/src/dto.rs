//! Response bodies of the HTTP API: the types are `ledgerflow_api`'s (shared with the client),
//! built here from the store's records; and the error answers the OpenAPI document lists for
//! many endpoints at once. What requests carry is in `requests`; the error mapping in `error`.

use ledgerflow_api::ErrorBody;
pub use ledgerflow_api::{
    AccountBody, AccountList, AuthBody, BalanceBody, EntryBody, EntryList, EventList, StatementBody, StatusBody,
    TransactionEnvelope, TransactionList, UserBody,
};
use ledgerflow_domain::{Balance, Reserved, StatementWindow, limits};
pub use ledgerflow_store::render::transaction;
use ledgerflow_store::render::{labels, time};
use ledgerflow_store::{AccountRecord, EntryRecord, StatementPage, TransactionRecord, UserRecord};

/// A user as answered.
pub fn user(u: &UserRecord) -> UserBody {
    UserBody {
        id: u.id.to_string(),
        email: u.email.to_string(),
        name: u.name.as_ref().map(|n| n.as_str().to_owned()),
        role: u.role.as_str().to_owned(),
    }
}

/// An account as answered.
pub fn account(a: &AccountRecord) -> AccountBody {
    AccountBody {
        id: a.id.to_string(),
        owner_id: a.owner_id.map(|o| o.to_string()),
        status: a.status.as_str().to_owned(),
        currency: a.currency.code().to_owned(),
        created_at: time(a.created_at),
        overdraft_limit: a.limits.overdraft(),
        max_balance: a.limits.max_balance(),
        metadata: labels(&a.metadata),
    }
}

/// An account's balance as answered: posted money from the ledger, reservations and limits
/// from the account.
pub fn balance(a: &AccountRecord, posted: Balance) -> BalanceBody {
    BalanceBody {
        account_id: a.id.to_string(),
        currency: a.currency.code().to_owned(),
        balance: posted.minor(),
        pending_debits: a.reserved.debits,
        pending_credits: a.reserved.credits,
        available: limits::available(posted, a.reserved, a.limits),
        overdraft_limit: a.limits.overdraft(),
    }
}

/// An account's balance as of a past instant: posted money and reservations as they stood
/// then, against today's overdraft line (limits keep no history).
pub fn balance_as_of(a: &AccountRecord, posted: Balance, reserved: Reserved) -> BalanceBody {
    BalanceBody {
        pending_debits: reserved.debits,
        pending_credits: reserved.credits,
        available: limits::available(posted, reserved, a.limits),
        ..balance(a, posted)
    }
}

/// One page of a statement as answered.
pub fn statement(a: &AccountRecord, window: StatementWindow, page: &StatementPage) -> StatementBody {
    StatementBody {
        account_id: a.id.to_string(),
        currency: a.currency.code().to_owned(),
        from: time(window.from()),
        to: time(window.to()),
        opening_balance: page.opening.minor(),
        closing_balance: page.closing.minor(),
        total_debits: page.totals.debits,
        total_credits: page.totals.credits,
        entry_count: page.totals.entries,
        entries: page.entries.iter().map(entry).collect(),
        next_cursor: page.next_after.map(|seq| seq.to_string()),
    }
}

/// A ledger entry as answered.
pub fn entry(e: &EntryRecord) -> EntryBody {
    EntryBody {
        id: e.id.to_string(),
        transaction_id: e.transaction_id.to_string(),
        entry_type: e.entry_type.as_str().to_owned(),
        amount: e.amount.minor(),
        currency: e.currency.code().to_owned(),
        seq: e.seq,
        balance_after: e.balance_after.minor(),
        created_at: time(e.created_at),
        leg: e.leg,
    }
}

/// A transaction as answered, in its envelope.
pub fn envelope(t: &TransactionRecord) -> TransactionEnvelope {
    TransactionEnvelope { transaction: transaction(t) }
}

// Error answers many endpoints share, for the OpenAPI document only (never constructed):
// handlers list them by name next to their own.

/// Any endpoint behind authentication.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses in the OpenAPI document")]
pub enum AuthErrors {
    #[response(status = 400, description = "VALIDATION_ERROR or INVALID_JSON")]
    Invalid(ErrorBody),
    #[response(status = 401, description = "UNAUTHENTICATED: missing or invalid token")]
    Unauthenticated(ErrorBody),
}

/// Any endpoint that reads a JSON body.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses in the OpenAPI document")]
pub enum BodyErrors {
    #[response(status = 408, description = "REQUEST_TIMEOUT: the body did not arrive whole within the deadline")]
    TooSlow(ErrorBody),
    #[response(status = 413, description = "PAYLOAD_TOO_LARGE")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "UNSUPPORTED_MEDIA_TYPE")]
    UnsupportedMediaType(ErrorBody),
}

/// Any endpoint that needs the database.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses in the OpenAPI document")]
pub enum Unavailable {
    #[response(status = 503, description = "SERVICE_UNAVAILABLE: database or broker unreachable")]
    Unavailable(ErrorBody),
}
