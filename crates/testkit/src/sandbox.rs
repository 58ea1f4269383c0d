//! The names one run works under on the shared servers: a database and a queue-name prefix of
//! its own, so that runs (tests in parallel, a bench beside them) never touch each other's data.
//!
//! Names carry their kind and creation time, `lf_<kind>_<unix secs>_<tag>` for databases and
//! `lf-<kind>-<unix secs>-<tag>` for prefixes, so `scripts/services.sh sweep` can drop what a
//! failed or killed run left behind once it is old enough for its kind (an hour for tests, a
//! day for benchmarks), without touching a run still going on.

use std::time::{SystemTime, UNIX_EPOCH};

/// A run's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// `lf_<kind>_<unix secs>_<tag>`.
    pub db: String,
    /// `lf-<kind>-<unix secs>-<tag>`.
    pub prefix: String,
    /// Twelve hex digits, unique to the run.
    pub tag: String,
}

/// What a run is, as the sweep knows it: `test` and `fault` go after an hour, `bench` after a day.
pub const KINDS: [&str; 3] = ["test", "fault", "bench"];

impl Sandbox {
    /// Fresh names for a run of `kind` (one of [`KINDS`]).
    pub fn new(kind: &str) -> Self {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self { db: format!("lf_{kind}_{secs}_{tag}"), prefix: format!("lf-{kind}-{secs}-{tag}"), tag }
    }

    /// Another database of the same run (`<db>_<suffix>`), swept with it.
    pub fn extra_db(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_kind_and_creation_time_and_differ_per_run() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let a = Sandbox::new("bench");
        let parts: Vec<&str> = a.db.split('_').collect();
        assert_eq!((parts[0], parts[1], parts[3]), ("lf", "bench", a.tag.as_str()));
        assert!(parts[2].parse::<u64>().is_ok_and(|secs| secs >= before), "{}", a.db);
        assert_eq!(a.prefix, a.db.replace('_', "-"));
        assert!(a.tag.len() == 12 && a.tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a.extra_db("raw"), format!("{}_raw", a.db));
        assert_ne!(Sandbox::new("bench"), a);
    }
}
