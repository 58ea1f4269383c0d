//! `--samples FILE`: one CSV line per transfer of the timed load, to see where a latency tail
//! comes from (when it was sent, its accept and completion latencies, and when the worker
//! decided it).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::figures::on_monotonic;
use crate::listener::{MatchOn, Outcomes};
use crate::load::Sent;

/// One CSV line per transfer: milliseconds from the first submit to this one's, to its 202 (or
/// confirm), to the worker's decision (`completedAt`, on the worker's clock, truncated to the
/// millisecond) and to the bench hearing the result; empty where there is none.
pub fn write_samples(
    path: &Path,
    anchor: (Instant, DateTime<Utc>),
    sent: &[Sent],
    outcomes: &Outcomes,
    on: MatchOn,
) -> std::io::Result<()> {
    let ms = |from: Instant, to: Instant| format!("{:.2}", to.saturating_duration_since(from).as_secs_f64() * 1e3);
    let mut out = std::io::BufWriter::new(File::create(path)?);
    writeln!(out, "sent_ms,accept_ms,decided_ms,result_ms,status")?;
    for s in sent {
        let outcome = outcomes.get(on, &s.key);
        let decided = outcome.and_then(|o| o.decided_at).and_then(|at| on_monotonic(anchor, at));
        writeln!(
            out,
            "{},{},{},{},{}",
            ms(anchor.0, s.sent),
            s.accepted.map(|a| ms(s.sent, a)).unwrap_or_default(),
            decided.map(|d| ms(s.sent, d)).unwrap_or_default(),
            outcome.map(|o| ms(s.sent, o.at)).unwrap_or_default(),
            outcome.map_or("", |o| o.status.as_str()),
        )?;
    }
    out.flush()
}
