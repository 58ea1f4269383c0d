//! The workers' own account of a load, from their Prometheus counters: how many transactions
//! their batches took and how often batches of two workers collided, which is where a latency
//! tail under load usually comes from.

use serde::Serialize;

use crate::figures::round;

/// The workers' batching counters (summed over workers, or the difference of two readings).
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
#[serde(into = "BatchingReport")]
pub struct Batching {
    /// Batches executed (each one MongoDB transaction unless it was retried or split).
    pub batches: u64,
    /// Commands in those batches.
    pub commands: u64,
    /// Transactions re-run after a write conflict (another worker's batch wrote one of the
    /// same accounts first) or, rarely, another transient error.
    pub conflict_retries: u64,
    /// Batches split in halves after conflicting for too long, or refused by the server.
    pub splits: u64,
}

impl Batching {
    /// Reads the counters from a Prometheus text exposition (absent ones are zero: the
    /// exporter only shows what has been recorded).
    pub fn parse(text: &str) -> Self {
        let sum = |name: &str| -> u64 {
            let total: f64 = text
                .lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (series, value) = line.rsplit_once(' ')?;
                    let metric = series.split('{').next()?;
                    if metric == name { value.parse::<f64>().ok() } else { None }
                })
                .sum();
            // Counts, exported as floats: rounding recovers them exactly.
            total.round() as u64
        };
        Self {
            batches: sum("ledgerflow_batch_size_count"),
            commands: sum("ledgerflow_batch_size_sum"),
            conflict_retries: sum("ledgerflow_mongo_transaction_retries_total"),
            splits: sum("ledgerflow_batch_splits_total"),
        }
    }

    pub fn mean_size(self) -> f64 {
        if self.batches == 0 { 0.0 } else { self.commands as f64 / self.batches as f64 }
    }
}

impl std::ops::Add for Batching {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            batches: self.batches + o.batches,
            commands: self.commands + o.commands,
            conflict_retries: self.conflict_retries + o.conflict_retries,
            splits: self.splits + o.splits,
        }
    }
}

impl std::ops::Sub for Batching {
    type Output = Self;
    /// Counters only grow, but a restarted worker's start again from zero: never below zero.
    fn sub(self, o: Self) -> Self {
        Self {
            batches: self.batches.saturating_sub(o.batches),
            commands: self.commands.saturating_sub(o.commands),
            conflict_retries: self.conflict_retries.saturating_sub(o.conflict_retries),
            splits: self.splits.saturating_sub(o.splits),
        }
    }
}

/// [`Batching`] as the JSON report shows it, with the mean batch size.
#[derive(Serialize)]
struct BatchingReport {
    batches: u64,
    commands: u64,
    mean_size: f64,
    conflict_retries: u64,
    splits: u64,
}

impl From<Batching> for BatchingReport {
    fn from(b: Batching) -> Self {
        Self {
            batches: b.batches,
            commands: b.commands,
            mean_size: round(b.mean_size(), 2),
            conflict_retries: b.conflict_retries,
            splits: b.splits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Batching;

    #[test]
    fn batching_counters_are_read_from_the_prometheus_text_and_summed_over_labels() {
        let text = "# TYPE ledgerflow_batch_size summary\n\
            ledgerflow_batch_size{quantile=\"0.5\"} 3\n\
            ledgerflow_batch_size_sum 120\n\
            ledgerflow_batch_size_count 40\n\
            # TYPE ledgerflow_batch_splits_total counter\n\
            ledgerflow_batch_splits_total{why=\"conflict\"} 3\n\
            ledgerflow_batch_splits_total{why=\"refused\"} 1\n\
            ledgerflow_mongo_transaction_retries_total 7\n\
            ledgerflow_mongo_transaction_retries_total_other 99\n";
        let read = Batching::parse(text);
        assert_eq!(read, Batching { batches: 40, commands: 120, conflict_retries: 7, splits: 4 });
        assert!((read.mean_size() - 3.0).abs() < 1e-9);
        // What a load added: the difference of two readings, never below zero.
        let later = Batching { batches: 50, commands: 150, conflict_retries: 7, splits: 4 };
        assert_eq!(later - read, Batching { batches: 10, commands: 30, conflict_retries: 0, splits: 0 });
        assert_eq!(read - later, Batching::default());
        assert_eq!(Batching::parse(""), Batching::default());
    }

    #[test]
    fn the_report_shows_the_mean_batch_size() {
        let b = Batching { batches: 3, commands: 10, conflict_retries: 1, splits: 0 };
        let json = serde_json::to_string(&b).expect("json");
        assert_eq!(json, r#"{"batches":3,"commands":10,"mean_size":3.33,"conflict_retries":1,"splits":0}"#);
    }
}
