//! The command line: the connection settings every LedgerFlow process takes (the same flags
//! and `LEDGERFLOW_*` variables as `ledgerflow`, which passes its own on when it forwards
//! `ledgerflow bench`), and the bench's own options, with their defaults.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser};
use ledgerflow::settings::{Connections, secret};
use ledgerflow_messaging::Topology;
use secrecy::SecretString;

#[derive(Parser, Debug)]
#[command(
    name = "ledgerflow-bench",
    version,
    about = "Load-test the whole pipeline (or time balance reads) and print a summary",
    after_help = "By default a gateway and --workers worker processes are started on a fresh database and \
queue prefix (deleted afterwards unless --keep), against the configured MongoDB and RabbitMQ, \
and their ledger is reconciled after the load: the run fails if any invariant does not hold.\n\
With --target the bench drives a running gateway instead; its users, accounts and transfers stay \
in that ledger, and outcomes are read from the configured --amqp-prefix's results exchange.\n\
The gateway and workers it starts are the `ledgerflow` executable next to this one.\n\n\
Examples:\n  ledgerflow bench --raw\n  ledgerflow bench --rate 50%\n  ledgerflow bench --hot --transfers 5000\n  ledgerflow bench --direct\n  ledgerflow bench --batch 100\n  \
ledgerflow bench --holds --transfers 5000\n  \
ledgerflow bench --balance-reads --entries 1000,1000000\n  \
LEDGERFLOW_SYSTEM_PASSWORD=… ledgerflow bench --target http://127.0.0.1:8080 --system-email ops@example.com"
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnInfo,
    #[command(flatten)]
    pub bench: BenchArgs,
}

/// Where the services are, and how the processes the bench starts run: the settings of
/// `ledgerflow`, under the same names (a run of its own makes a fresh database and prefix;
/// with --target these name the running system's).
#[derive(Args, Debug, Clone)]
pub struct ConnInfo {
    #[command(flatten)]
    pub services: Connections,
    /// Threads the bench, and each gateway and worker process it starts, run their tasks on;
    /// 0 means one per CPU core (see `ledgerflow --help`).
    #[arg(long, env = "LEDGERFLOW_THREADS", default_value_t = 1)]
    pub threads: usize,
}

impl ConnInfo {
    pub fn topology(&self, prefix: &str) -> Topology {
        Topology::new(prefix)
            .with_partitions(self.services.partitions)
            .with_retry_delay(self.services.retry_delay.into())
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Accounts to create and fund before the load.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(2..))]
    pub accounts: u32,
    /// Accounts per registered user (registration is deliberately slow: argon2); at most
    /// the per-user cap, 100.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=ledgerflow_domain::MAX_ACCOUNTS_PER_USER as i64))]
    pub accounts_per_user: u32,
    /// Transfers to submit.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub transfers: u32,
    /// Requests (or publishes, or raw transactions) in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Submit at most this many transfers per second (open loop), to measure latency below
    /// the maximum throughput; or `N%`: first measure the maximum with an unpaced load of the
    /// same size, then pace the measured load at N% of it. Unlimited when unset.
    #[arg(long, value_name = "PER_S|N%")]
    pub rate: Option<Rate>,
    /// Worker processes to start (ignored with --target).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Send most transfers (--hot-percent) from one account: the worst case for contention.
    #[arg(long)]
    pub hot: bool,
    /// Share of transfers sent from the hot account with --hot, in percent.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub hot_percent: u8,
    /// Publish commands straight to the transfers exchange (as an upstream system) instead of HTTP.
    #[arg(long)]
    pub direct: bool,
    /// Submit over HTTP in batches of N (`POST /transactions/batch`, each batch one user's);
    /// then, in the same run, the same number of transfers as single requests and with
    /// --direct, and report completed/s of the three and the batch's ratios to the other two.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000), conflicts_with_all = ["direct", "rate", "holds", "balance_reads"])]
    pub batch: Option<u32>,
    /// Also run the floor reference: the same transfers through Store::execute, no HTTP, no queue.
    #[arg(long)]
    pub raw: bool,
    /// After the transfers, run as many hold-then-post pairs on the same processes (each post
    /// sent once its hold is HELD), then as many transfers again, and report what a pair costs
    /// against a transfer of both loads. Unpaced: the comparison is of the two maxima.
    #[arg(long, conflicts_with_all = ["rate", "balance_reads"])]
    pub holds: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Keep the database, queues and process logs the run made (`scripts/services.sh sweep`
    /// drops the database and queues once they are a day old).
    #[arg(long)]
    pub keep: bool,
    /// Also write one CSV line per transfer to this file (when it was sent, its accept and
    /// completion latencies, and when the worker decided it): where a latency tail comes from.
    #[arg(long, value_name = "FILE", conflicts_with = "balance_reads")]
    pub samples: Option<PathBuf>,
    /// Drive a running gateway at this base URL instead of starting processes.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// SYSTEM user for funding accounts with --target.
    #[arg(long, env = "LEDGERFLOW_SYSTEM_EMAIL")]
    pub system_email: Option<String>,
    /// Its password (prefer the environment variable to the flag).
    #[arg(long, env = "LEDGERFLOW_SYSTEM_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub system_password: Option<SecretString>,
    /// Give up (and clean up) after this long (e.g. 90s, 10m).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Instead of the load: time balance reads on one account at several history lengths.
    #[arg(long, conflicts_with_all = ["direct", "raw", "hot", "target"])]
    pub balance_reads: bool,
    /// History lengths (entries) for --balance-reads, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000", value_parser = clap::value_parser!(u64).range(1..))]
    pub entries: Vec<u64>,
    /// Balance reads timed at each history length.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub reads: u32,
}

impl BenchArgs {
    pub fn accounts(&self) -> usize {
        self.accounts as usize
    }

    pub fn transfers(&self) -> usize {
        self.transfers as usize
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency as usize
    }

    /// How transfers are submitted: `http`, `direct` (to the exchange) or `batch`.
    pub fn mode(&self) -> &'static str {
        if self.direct {
            "direct"
        } else if self.batch.is_some() {
            "batch"
        } else {
            "http"
        }
    }

    /// Which accounts send: `random` or `hot` (mostly one).
    pub fn pattern(&self) -> &'static str {
        if self.hot { "hot" } else { "random" }
    }

    /// The share of transfers sent from the hot account, with `--hot`.
    pub fn hot_share(&self) -> Option<u8> {
        self.hot.then_some(self.hot_percent)
    }
}

/// How `--rate` paces the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    PerSecond(u32),
    /// A percentage of the maximum completed/s, measured first in the same run: measuring it
    /// minutes before, in a separate run, let the machine's drift between the two decide.
    OfMaximum(u8),
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(percent) = s.strip_suffix('%') {
            return match percent.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(Self::OfMaximum(p)),
                _ => Err(format!("{s}: a percentage of the maximum is 1% to 100%")),
            };
        }
        match s.parse::<u32>() {
            Ok(n @ 1..) => Ok(Self::PerSecond(n)),
            _ => Err(format!("{s}: expected transfers per second (at least 1) or a percentage such as 50%")),
        }
    }
}

impl Rate {
    /// Transfers per second: as given, or the share of a measured maximum (at least 1).
    pub fn per_second(self, maximum: f64) -> u32 {
        match self {
            Self::PerSecond(n) => n,
            Self::OfMaximum(p) => (maximum * f64::from(p) / 100.0).round().clamp(1.0, f64::from(u32::MAX)) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Rate};

    #[test]
    fn a_rate_is_per_second_or_a_share_of_the_maximum() {
        assert_eq!("700".parse::<Rate>(), Ok(Rate::PerSecond(700)));
        assert_eq!(" 50% ".parse::<Rate>(), Ok(Rate::OfMaximum(50)));
        for bad in ["0", "0%", "101%", "-5", "1.5", "half", "%", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Rate::PerSecond(700).per_second(1_234.0), 700);
        assert_eq!(Rate::OfMaximum(50).per_second(1_401.0), 701);
        // A load that completed nothing still paces the next at one per second, never zero.
        assert_eq!(Rate::OfMaximum(50).per_second(0.0), 1);
    }

    #[test]
    fn the_connection_flags_are_those_of_ledgerflow() {
        let cli = Cli::try_parse_from([
            "ledgerflow-bench",
            "--mongodb-uri",
            "mongodb://h/?replicaSet=rs0",
            "--amqp-prefix",
            "p",
            "--partitions",
            "4",
            "--threads",
            "2",
            "--raw",
        ])
        .expect("arguments parse");
        assert_eq!(
            (cli.conn.services.mongodb_uri.as_str(), cli.conn.services.amqp_prefix.as_str()),
            ("mongodb://h/?replicaSet=rs0", "p")
        );
        assert_eq!((cli.conn.services.partitions, cli.conn.threads), (4, 2));
        assert!(cli.bench.raw && !cli.bench.direct);
        assert!(Cli::try_parse_from(["ledgerflow-bench", "--balance-reads", "--raw"]).is_err());
        // Pairs are compared with transfers at the maximum of each: a pace would hide it.
        assert!(Cli::try_parse_from(["ledgerflow-bench", "--holds", "--rate", "50%"]).is_err());
        let holds = Cli::try_parse_from(["ledgerflow-bench", "--holds", "--direct"]).expect("arguments parse");
        assert!(holds.bench.holds && holds.bench.direct);
    }
}
