//! The names a run works under, and the SYSTEM user it funds accounts with. A run of its own
//! gets a fresh database and queue prefix named `ledgerflow_bench_<unix secs>_<tag>`, a name
//! `scripts/services.sh sweep` recognises and ages: what a killed or `--keep` run leaves
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
        let tag = random_hex(4);
        let name = sandbox_name(&tag);
        let (db, prefix, owned) = match args.target {
            Some(_) => (conn.services.mongodb_db.clone(), conn.services.amqp_prefix.clone(), false),
            None => (name.clone(), name.clone(), true),
        };
        Self { raw_db: format!("{name}_raw"), logs: std::env::temp_dir().join(&name), tag, db, prefix, owned }
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

/// `ledgerflow_bench_<unix seconds>_<tag>`: the creation time lets `scripts/services.sh sweep`
/// drop what a killed or `--keep` run left behind once it is a day old.
pub fn sandbox_name(tag: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("ledgerflow_bench_{secs}_{tag}")
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::sandbox_name;

    #[test]
    fn sandbox_names_carry_their_creation_time_for_the_sweep() {
        // scripts/services.sh sweep matches ledgerflow_bench_(\d+)_[0-9a-f]+ and ages it by the number.
        let name = sandbox_name("0a1b2c3d");
        let secs = name.strip_prefix("ledgerflow_bench_").and_then(|rest| rest.strip_suffix("_0a1b2c3d"));
        let secs: u64 = secs.and_then(|s| s.parse().ok()).expect("ledgerflow_bench_<secs>_<tag>");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        assert!(now.abs_diff(secs) < 60, "{name}");
    }
}
