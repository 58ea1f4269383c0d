//! `ledgerflow admin`: operator tasks that go straight to the store (printed as tables) or to
//! the dead-letter queue.

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use ledgerflow_domain::{AccountId, AccountStatus, Command, Email, TransactionId, UserId};
use ledgerflow_messaging::Topology;
use ledgerflow_store::Store;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(header.iter().copied());
    t
}

/// Resolves `--owner`, given as a user id or an email.
async fn owner_id(store: &Store, owner: &str) -> Result<UserId> {
    if let Ok(id) = owner.parse::<UserId>() {
        return Ok(id);
    }
    let email: Email = owner.parse().context("--owner must be a user id or an email")?;
    match store.find_user_by_email(&email).await? {
        Some(user) => Ok(user.id),
        None => bail!("no user with email {email}"),
    }
}

/// Lists accounts with their derived balances.
pub async fn list_accounts(store: &Store, owner: Option<&str>, limit: i64) -> Result<()> {
    let owner = match owner {
        Some(o) => Some(owner_id(store, o).await?),
        None => None,
    };
    let accounts = store.list_accounts(owner, limit, None).await?;
    let mut t = table(&["account", "owner", "status", "currency", "balance", "entries", "created"]);
    for a in &accounts {
        let balance = store.balance(a.id).await?;
        let owner = a.owner_id.map_or_else(|| "(funding)".to_owned(), |o| o.to_string());
        t.add_row(vec![
            a.id.to_string(),
            owner,
            a.status.to_string(),
            a.currency.to_string(),
            balance.to_string(),
            a.seq.to_string(),
            a.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    println!("{t}");
    println!("{} account(s)", accounts.len());
    Ok(())
}

/// Sets an account's status and shows it.
pub async fn set_status(store: &Store, account: &str, status: AccountStatus) -> Result<()> {
    let id: AccountId = account.parse().context("not an account id")?;
    let Some(changed) = store.set_account_status(id, status).await? else {
        bail!("no client account {id}");
    };
    let a = changed.with_context(|| format!("account {id} cannot become {status}"))?;
    println!("account {} is now {}", a.id, a.status);
    Ok(())
}

/// Ends every session of the user with this email.
pub async fn sign_out(store: &Store, email: &str) -> Result<()> {
    let email: Email = email.parse().context("not an email")?;
    let Some(user) = store.find_user_by_email(&email).await? else {
        bail!("no user {email}");
    };
    store.end_sessions(user.id).await?.with_context(|| format!("no user {email}"))?;
    println!("every session of {email} is ended; its tokens are refused from now on");
    Ok(())
}

/// Shows a transaction and its ledger entries.
pub async fn show_transaction(store: &Store, id: &str) -> Result<()> {
    let id: TransactionId = id.parse().context("not a transaction id")?;
    let Some(t) = store.find_transaction(id).await? else {
        bail!("no transaction {id}");
    };
    let mut info = table(&["field", "value"]);
    let rows: Vec<(&str, String)> = vec![
        ("id", t.id.to_string()),
        ("kind", t.kind.to_string()),
        ("status", t.status.to_string()),
        ("failure reason", t.failure_reason.map(|r| r.to_string()).unwrap_or_default()),
        ("from", t.from_account.to_string()),
        ("to", t.to_account.to_string()),
        ("amount", format!("{} {}", t.amount, t.currency)),
        ("initiator", t.initiator.to_string()),
        ("idempotency key", t.idempotency_key.to_string()),
        ("description", t.description.as_ref().map(|d| d.as_str().to_owned()).unwrap_or_default()),
        ("reverses", t.reverses.map(|r| r.to_string()).unwrap_or_default()),
        ("reversed by", t.reversed_by.map(|r| r.to_string()).unwrap_or_default()),
        ("created", t.created_at.to_rfc3339()),
        ("completed", t.completed_at.map(|c| c.to_rfc3339()).unwrap_or_default()),
    ];
    for (k, v) in rows {
        info.add_row(vec![k.to_owned(), v]);
    }
    println!("{info}");
    let entries = store.entries_of_transaction(id).await?;
    let mut e = table(&["entry", "account", "type", "amount", "seq", "balance after", "hash"]);
    for entry in &entries {
        e.add_row(vec![
            entry.id.to_string(),
            entry.account_id.to_string(),
            entry.entry_type.as_str().to_owned(),
            entry.amount.to_string(),
            entry.seq.to_string(),
            entry.balance_after.to_string(),
            entry.hash.chars().take(12).collect::<String>() + "…",
        ]);
    }
    println!("{e}");
    println!("{} entr{}", entries.len(), if entries.len() == 1 { "y" } else { "ies" });
    Ok(())
}

/// Shows up to `limit` dead-lettered commands, one line each (they stay in the queue).
pub async fn list_dead_letters(amqp_uri: &str, topology: &Topology, limit: usize) -> Result<()> {
    let letters = ledgerflow_messaging::dlq::peek(amqp_uri, topology, limit).await?;
    println!("{} dead-lettered command(s) in {}", letters.len(), topology.dead_letters());
    for (i, letter) in letters.iter().enumerate() {
        let what = match Command::parse(&letter.body) {
            Ok(Command::Settle(settle)) => format!(
                "{} of hold {} key={} initiator={}",
                settle.kind, settle.hold, settle.idempotency_key, settle.initiator
            ),
            Ok(Command::Complete(cmd)) => format!(
                "{} {} {} -> {} key={} initiator={}",
                cmd.request.kind,
                cmd.request.amount,
                cmd.request.currency,
                cmd.request.to,
                cmd.idempotency_key,
                cmd.initiator
            ),
            Err(e) => format!("invalid: {}", e.reason),
        };
        // LedgerFlow's own reason where it gave the message up; the broker's otherwise.
        let why = match (&letter.reason, &letter.reason_detail) {
            (Some(code), Some(detail)) => format!("{code} ({detail})"),
            (Some(code), None) => code.clone(),
            _ => format!("{}×{}", letter.death_reason.as_deref().unwrap_or("-"), letter.death_count),
        };
        println!("{:>4}  {:<36}  {what}  why={why}", i + 1, letter.message_id.as_deref().unwrap_or("-"));
    }
    Ok(())
}

/// Sends up to `limit` dead-lettered commands back to the transfers exchange, with fresh
/// attempts.
pub async fn replay_dead_letters(amqp_uri: &str, topology: &Topology, limit: usize) -> Result<()> {
    let n = ledgerflow_messaging::dlq::replay(amqp_uri, topology, limit).await?;
    println!("replayed {n} command(s) to {}", topology.transfers());
    Ok(())
}
