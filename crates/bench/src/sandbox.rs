//! The names a run works under, and the SYSTEM user it funds accounts with. A run of its own
//! gets a fresh database and queue prefix from `ledgerflow_testkit::Sandbox` (kind `bench`),
//! which `scripts/services.sh sweep` recognises and ages: what a killed or `--keep` run leaves
//! behind goes once it is a day old.

use secrecy::SecretString;
use std::path::PathBuf;

use anyhow::{Result, bail};
use tracing::warn;

use crate::args::{BenchArgs, ConnInfo};

/// The names one run works under. Without `--target` the run owns a fresh database and queue
/// prefix (so it cannot disturb anything else on the shared servers) and deletes them after;
/// with `--target` it uses the configured ones and deletes nothing of them.
pub struct Sandbox {
    pub tag: String,
    pub db: String,
    pub prefix: String,
    pub owned: bool,
    /// The `--raw` phase's own database, so the two phases never touch the same accounts.
    pub raw_db: String,
    /// Where the started processes log.
    pub logs: PathBuf,
}

impl Sandbox {
    pub fn new(conn: &ConnInfo, args: &BenchArgs) -> Self {
        let names = ledgerflow_testkit::Sandbox::new("bench");
        let logs = std::env::temp_dir().join(&names.db);
        let raw_db = names.extra_db("raw");
        let (db, prefix, owned) = match args.target {
            Some(_) => (conn.services.mongodb_db.clone(), conn.services.amqp_prefix.clone(), false),
            None => (names.db, names.prefix, true),
        };
        Self { raw_db, logs, tag: names.tag, db, prefix, owned }
    }

    /// Says where the process logs are, if any were written.
    pub fn keep_logs(&self) {
        if self.logs.exists() {
            eprintln!("process logs kept in {}", self.logs.display());
        }
    }

    pub fn remove_logs(&self) {
        if self.logs.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.logs)
        {
            warn!(error = %e, dir = %self.logs.display(), "could not remove the process logs");
        }
    }
}

/// The SYSTEM user that funds accounts: invented for a run's own gateway, given for `--target`.
pub struct Credentials {
    pub email: String,
    pub password: SecretString,
}

impl Credentials {
    pub fn for_run(args: &BenchArgs, sandbox: &Sandbox) -> Result<Self> {
        if args.target.is_none() {
            return Ok(Self {
                email: format!("bench-system-{}@example.com", sandbox.tag),
                password: random_hex(16).into(),
            });
        }
        match (&args.system_email, &args.system_password) {
            (Some(email), Some(password)) => Ok(Self { email: email.clone(), password: password.clone() }),
            _ => bail!(
                "--target needs the SYSTEM user to fund accounts: --system-email/--system-password \
                 (or LEDGERFLOW_SYSTEM_EMAIL/LEDGERFLOW_SYSTEM_PASSWORD)"
            ),
        }
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}
