//! `ledgerflow admin`: operator tasks that go straight to the store (printed as tables) or to
//! the dead-letter queue.

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use ledgerflow_domain::grants::{BrokerUser, Grant};
use ledgerflow_domain::{
    AccountId, AccountStatus, Command, Email, Moment, ServiceName, StatementWindow, TransactionId, TransferKind, UserId,
};
use ledgerflow_messaging::{Topology, TrustedUsers};
use ledgerflow_store::{ServiceRecord, Store};

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
    let legs =
        t.legs.iter().enumerate().map(|(i, l)| format!("{i}: {} -> {} {} {}", l.from, l.to, l.amount, l.currency));
    let rows: Vec<(&str, String)> = vec![
        ("id", t.id.to_string()),
        ("kind", t.kind.to_string()),
        ("status", t.status.to_string()),
        ("failure reason", t.failure_reason.map(|r| r.to_string()).unwrap_or_default()),
        ("from", t.from_account.to_string()),
        ("to", t.to_account.to_string()),
        ("amount", format!("{} {}", t.amount, t.currency)),
        ("legs", legs.collect::<Vec<_>>().join("\n")),
        ("failed leg", t.failed_leg.map(|l| l.to_string()).unwrap_or_default()),
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
    let mut e = table(&["entry", "account", "leg", "type", "amount", "seq", "balance after", "hash"]);
    for entry in &entries {
        e.add_row(vec![
            entry.id.to_string(),
            entry.account_id.to_string(),
            entry.leg.map(|l| l.to_string()).unwrap_or_default(),
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
        let from = letter.publisher.as_deref().unwrap_or("-");
        println!("{:>4}  {:<36}  {what}  why={why}  from={from}", i + 1, letter.message_id.as_deref().unwrap_or("-"));
    }
    Ok(())
}

/// Sends up to `limit` dead-lettered commands back to the transfers exchange, with fresh
/// attempts.
pub async fn replay_dead_letters(
    amqp_uri: &str,
    topology: &Topology,
    trusted: &TrustedUsers,
    limit: usize,
) -> Result<()> {
    let n = ledgerflow_messaging::dlq::replay(amqp_uri, topology, trusted, limit).await?;
    println!("replayed {n} command(s) to {}", topology.transfers());
    Ok(())
}

fn service_name(name: &str) -> Result<ServiceName> {
    name.parse().context("service names are 1 to 64 of [a-z0-9._-]")
}

/// Registers a service with nothing granted.
pub async fn add_service(store: &Store, name: &str, broker_user: &str) -> Result<()> {
    let user: BrokerUser = broker_user.parse().context("--broker-user")?;
    let record = store.add_service(&service_name(name)?, &user).await?.with_context(|| format!("cannot add {name}"))?;
    print_service(&record);
    println!("registered; it may do nothing until granted (ledgerflow admin services grant {name} ...)");
    Ok(())
}

pub async fn list_services(store: &Store) -> Result<()> {
    let services = store.list_services().await?;
    let mut t = table(&["service", "broker user", "enabled", "kinds", "debits"]);
    for r in &services {
        let s = &r.service;
        t.add_row(vec![
            format!("service:{}", s.name.as_str()),
            s.broker_user.to_string(),
            s.enabled.to_string(),
            join(s.grant.kinds.iter().map(|k| k.as_str())),
            debits(&s.grant),
        ]);
    }
    println!("{t}");
    println!("{} service(s)", services.len());
    Ok(())
}

pub async fn show_service(store: &Store, name: &str) -> Result<()> {
    let record = store.find_service(&service_name(name)?).await?.with_context(|| format!("no service {name}"))?;
    print_service(&record);
    Ok(())
}

/// What `admin services grant|revoke` names, as typed.
pub struct GrantChange {
    pub name: String,
    pub kinds: Vec<String>,
    pub accounts: Vec<String>,
    pub owners: Vec<String>,
    pub any_account: bool,
}

/// Grants (`grant`) or revokes what the flags name.
pub async fn change_grant(store: &Store, typed: &GrantChange, grant: bool) -> Result<()> {
    let name = typed.name.as_str();
    let mut change = Grant { any_account: typed.any_account, ..Grant::default() };
    for kind in &typed.kinds {
        change.kinds.insert(kind.parse::<TransferKind>().context("--kinds")?);
    }
    for account in &typed.accounts {
        change.accounts.insert(account.parse::<AccountId>().context("--debit-account must be an account id")?);
    }
    for owner in &typed.owners {
        change.owners.insert(owner_id(store, owner).await?);
    }
    if change.is_empty() {
        bail!("name what to {}: --kinds, --debit-account or --debit-owner", if grant { "grant" } else { "revoke" });
    }
    let record = store
        .change_grant(&service_name(name)?, &change, grant)
        .await?
        .with_context(|| format!("no service {name}"))?;
    print_service(&record);
    Ok(())
}

pub async fn set_service_enabled(store: &Store, name: &str, enabled: bool) -> Result<()> {
    let record = store
        .set_service_enabled(&service_name(name)?, enabled)
        .await?
        .with_context(|| format!("no service {name}"))?;
    print_service(&record);
    Ok(())
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    let all: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if all.is_empty() { "-".to_owned() } else { all.join(", ") }
}

/// The accounts a grant lets debit, in words.
fn debits(g: &Grant) -> String {
    if g.any_account {
        return "EVERY client account".to_owned();
    }
    let accounts = g.accounts.iter().map(|a| format!("account {a}"));
    let owners = g.owners.iter().map(|o| format!("accounts of {o}"));
    join(accounts.chain(owners))
}

fn print_service(r: &ServiceRecord) {
    let s = &r.service;
    println!("service:{}", s.name.as_str());
    println!("  broker user     {}", s.broker_user);
    println!("  enabled         {}", s.enabled);
    println!("  kinds           {}", join(s.grant.kinds.iter().map(|k| k.as_str())));
    println!("  may debit       {}", debits(&s.grant));
    println!("  changed         {}", r.updated_at.format("%Y-%m-%d %H:%M:%S"));
}

/// `ledgerflow admin statement`: the figures `GET /api/accounts/{id}/statement` answers, over
/// the whole window (every page), as a text table or as CSV.
pub async fn statement(store: &Store, account: &str, from: &str, to: &str, csv: bool) -> Result<()> {
    let id: AccountId = account.parse().context("not an account id")?;
    let (from, to) = (from.parse::<Moment>().context("--from")?, to.parse::<Moment>().context("--to")?);
    let window = StatementWindow::new(from, to, chrono::Utc::now()).context("the window")?;
    let Some(account) = store.find_account(id).await? else { bail!("no account {id}") };
    let mut page = store.statement(id, window, ledgerflow_store::MAX_PAGE, None).await?;
    let mut entries = std::mem::take(&mut page.entries);
    while let Some(after) = page.next_after {
        page = store.statement(id, window, ledgerflow_store::MAX_PAGE, Some(after)).await?;
        entries.append(&mut page.entries);
    }
    let millis = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let (from, to) = (millis(window.from()), millis(window.to()));
    let totals = page.totals;
    if csv {
        // Every value is a UUID, an integer, an entry type or an RFC 3339 instant: none holds
        // a comma, a quote or a line break, so no field needs quoting.
        println!("row,seq,createdAt,type,amount,balanceAfter,transactionId");
        println!("opening,,{from},,,{},", page.opening);
        for e in &entries {
            let (seq, at, kind, amount) = (e.seq, millis(e.created_at), e.entry_type.as_str(), e.amount);
            println!("entry,{seq},{at},{kind},{amount},{},{}", e.balance_after, e.transaction_id);
        }
        println!("debits,,,DEBIT,{},,", totals.debits);
        println!("credits,,,CREDIT,{},,", totals.credits);
        println!("closing,,{to},,,{},", page.closing);
        return Ok(());
    }
    println!("account {id} ({}), from {from} (inclusive) to {to} (exclusive)", account.currency);
    let mut t = table(&["seq", "created", "type", "amount", "balance after", "transaction"]);
    for e in &entries {
        t.add_row(vec![
            e.seq.to_string(),
            millis(e.created_at),
            e.entry_type.as_str().to_owned(),
            e.amount.to_string(),
            e.balance_after.to_string(),
            e.transaction_id.to_string(),
        ]);
    }
    let mut figures = table(&["opening balance", "total debits", "total credits", "closing balance", "entries"]);
    figures.add_row(vec![
        page.opening.to_string(),
        totals.debits.to_string(),
        totals.credits.to_string(),
        page.closing.to_string(),
        totals.entries.to_string(),
    ]);
    println!("{t}");
    println!("{figures}");
    Ok(())
}
