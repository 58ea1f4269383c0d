//! The command line: what each subcommand takes. `main` runs them.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ledgerflow::settings::{Connections, DispatcherSettings, GatewaySettings, WebhookPolicySettings, WorkerSettings};
use secrecy::SecretString;

use crate::{admin, bench};

#[derive(Parser)]
#[command(
    name = "ledgerflow",
    version,
    about = "A double-entry ledger: HTTP gateway, queue workers and operator tools."
)]
#[command(
    after_help = "Examples:\n  ledgerflow up --dev --workers 2\n  ledgerflow gateway --http-addr 0.0.0.0:8080\n  ledgerflow worker --prefetch 64\n  ledgerflow admin create-system-user --email ops@example.com"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) conn: Connections,
    /// Threads the process runs its tasks on; 0 means one per CPU core. One (the default)
    /// spends the least CPU per transfer: a gateway or worker waits on the database and the
    /// broker far more than it computes, and one thread avoids waking others for every message
    /// (docs/benchmarks.md, "What the defaults rest on"). Scale out with processes;
    /// raise it for a gateway alone on a large machine.
    #[arg(long, global = true, env = "LEDGERFLOW_THREADS", default_value_t = 1)]
    pub(crate) threads: usize,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start and never moved about")]
pub(crate) enum Command {
    /// Run the HTTP gateway.
    Gateway(GatewaySettings),
    /// Run a worker that consumes transfer commands.
    Worker(WorkerSettings),
    /// Run a gateway and N workers in one process (for a laptop).
    Up(UpArgs),
    /// Check every ledger invariant; exit 1 on any discrepancy.
    #[command(after_help = "Checks: debits equal credits per currency; every COMPLETED transaction has exactly\n\
one DEBIT and one CREDIT of its amount, others none, and no entry lacks its transaction; each\n\
account's entries are numbered 1, 2, 3… with running balances that add up and an intact hash\n\
chain, and the account's seq is its latest entry's; no account but the funding account goes\n\
below its overdraft line, and no CLOSED account holds money; nothing is PENDING longer than\n\
--max-pending-age; HELD holds' reservations equal each account's pendingDebits and\n\
pendingCredits, no hold is settled twice or stays HELD longer than --hold-expiry-grace past its\n\
expiresAt, and every POSTED or VOIDED hold names its COMPLETED settlement; every document parses.\n\n\
Examples:\n  ledgerflow reconcile\n  ledgerflow reconcile --json --max-pending-age 15m")]
    Reconcile {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// PENDING transactions older than this count as stuck (e.g. 90s, 15m, 1h).
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        max_pending_age: Duration,
        /// HELD holds this long past their expiresAt count as not expired (the sweep that
        /// expires them is not running).
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        hold_expiry_grace: Duration,
    },
    /// Operator tasks.
    #[command(subcommand)]
    Admin(Admin),
    /// Load-test the whole pipeline (or time balance reads) and print a summary (runs
    /// `ledgerflow-bench`; `ledgerflow bench --help` lists its options).
    Bench(bench::BenchArgs),
    /// Run a webhook dispatcher: sends events to registered webhooks, signed, with retries.
    /// Several may run; they share the work without sending an attempt twice.
    Dispatcher(DispatcherArgs),
}

#[derive(Args)]
pub(crate) struct DispatcherArgs {
    #[command(flatten)]
    pub(crate) policy: WebhookPolicySettings,
    #[command(flatten)]
    pub(crate) dispatcher: DispatcherSettings,
}

#[derive(Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) gateway: GatewaySettings,
    #[command(flatten)]
    pub(crate) worker: WorkerSettings,
    /// Number of workers to run.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) workers: u16,
    /// Development mode: invent a JWT secret when none is set and allow non-Secure cookies.
    #[arg(long)]
    pub(crate) dev: bool,
    /// The webhook dispatcher it runs beside them (delivering under the gateway's webhook
    /// settings).
    #[command(flatten)]
    pub(crate) dispatcher: DispatcherSettings,
}

#[derive(Subcommand)]
pub(crate) enum Dlq {
    /// Show dead-lettered commands (they stay in the queue).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send dead-lettered commands back to the transfers queue, with fresh attempts.
    Replay {
        /// At most this many.
        #[arg(long, default_value_t = 1_000)]
        limit: usize,
    },
}

#[derive(Subcommand)]
pub(crate) enum Accounts {
    /// List accounts with their balances.
    #[command(
        after_help = "Examples:\n  ledgerflow admin accounts list\n  ledgerflow admin accounts list --owner alice@example.com"
    )]
    List {
        /// Only this user's (user id or email).
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100))]
        limit: i64,
    },
    /// Suspend an account: it can neither send nor receive until reactivated.
    Suspend { account: String },
    /// Make a suspended account ACTIVE again (a closed one stays closed).
    Reactivate { account: String },
    /// Close an empty account for good: refused while it holds money.
    Close { account: String },
}

/// What a `grant` or `revoke` names.
#[derive(clap::Args)]
pub(crate) struct GrantArgs {
    /// The service's name.
    pub(crate) name: String,
    /// Command kinds (TRANSFER, HOLD, POST_HOLD, VOID_HOLD, REVERSAL, INITIAL_FUNDS),
    /// comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) kinds: Vec<String>,
    /// Accounts it may debit, by id (repeat or comma-separate).
    #[arg(long = "debit-account", value_delimiter = ',')]
    pub(crate) debit_accounts: Vec<String>,
    /// Owners (user id or email) every account of which it may debit.
    #[arg(long = "debit-owner", value_delimiter = ',')]
    pub(crate) debit_owners: Vec<String>,
    /// Every client account (for a system acting for all customers; use with care).
    #[arg(long = "debit-any-account")]
    pub(crate) debit_any_account: bool,
}

impl From<GrantArgs> for admin::GrantChange {
    fn from(g: GrantArgs) -> Self {
        Self {
            name: g.name,
            kinds: g.kinds,
            accounts: g.debit_accounts,
            owners: g.debit_owners,
            any_account: g.debit_any_account,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum Services {
    /// Register an upstream service: its name (it sends as `service:<name>`) and the broker
    /// user it publishes as. It may do nothing until granted.
    #[command(after_help = "Example:\n  ledgerflow admin services add payroll --broker-user svc-payroll")]
    Add {
        name: String,
        #[arg(long)]
        broker_user: String,
    },
    /// List the registered services and their grants.
    List,
    /// Show one service and its grant.
    Show { name: String },
    /// Let a service send command kinds, or debit accounts.
    #[command(
        after_help = "Example:\n  ledgerflow admin services grant payroll --kinds TRANSFER --debit-account 0190c7a2-…"
    )]
    Grant(GrantArgs),
    /// Take away what `grant` gave (effective on every worker within seconds).
    Revoke(GrantArgs),
    /// Refuse everything a service sends from now on, what is queued already included.
    Disable { name: String },
    /// Let a disabled service send again, within its grant.
    Enable { name: String },
}

#[derive(Subcommand)]
pub(crate) enum Admin {
    /// Inspect or replay the dead-letter queue.
    #[command(subcommand)]
    Dlq(Dlq),
    /// Register upstream services and grant or revoke what each may do.
    #[command(subcommand)]
    Services(Services),
    /// List, suspend, reactivate and close accounts.
    #[command(subcommand)]
    Accounts(Accounts),
    /// Show a transaction with its ledger entries.
    Transaction {
        /// The transaction id.
        id: String,
    },
    /// Print an account's statement over a window of time: its entries with
    /// `from <= createdAt < to`, oldest first, the balances that open and close it and its
    /// totals, as `GET /api/accounts/{id}/statement` answers them.
    #[command(
        after_help = "Example:\n  ledgerflow admin statement 0190a0a0-0000-7000-8000-000000000001 --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --csv"
    )]
    Statement {
        /// The account id.
        account: String,
        /// The window's start, inclusive: RFC 3339, at most millisecond precision.
        #[arg(long)]
        from: String,
        /// The window's end, exclusive: later than --from, not in the future, at most 366 days
        /// after it.
        #[arg(long)]
        to: String,
        /// CSV with a header row instead of tables: an `opening` row, one `entry` row each,
        /// `debits` and `credits` rows (the totals), and a `closing` row.
        #[arg(long)]
        csv: bool,
    },
    /// End every session of a user: its tokens are refused from now on (by every gateway
    /// within seconds), say after one leaked. It signs in again for a new one.
    #[command(after_help = "Example:\n  ledgerflow admin sign-out --email ops@example.com")]
    SignOut {
        /// The user's email.
        #[arg(long)]
        email: String,
    },
    /// Create the SYSTEM user, or promote and re-password an existing one (which ends its
    /// sessions); with the password it already has, nothing changes.
    #[command(
        after_help = "Example:\n  LEDGERFLOW_SYSTEM_PASSWORD='a long secret' ledgerflow admin create-system-user --email ops@example.com"
    )]
    CreateSystemUser {
        /// The SYSTEM user's email.
        #[arg(long, env = "LEDGERFLOW_SYSTEM_EMAIL")]
        email: String,
        /// Its password (at least 8 characters); prefer the environment variable to the flag.
        #[arg(long, env = "LEDGERFLOW_SYSTEM_PASSWORD", hide_env_values = true, value_parser = ledgerflow::settings::secret)]
        password: SecretString,
    },
}
