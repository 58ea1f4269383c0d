//! Progress bars, on stderr when it is a terminal and hidden otherwise (CI, pipes, tests);
//! never on stdout, which carries only the report.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ledgerflow_store::Progress;

/// The run's progress bars, one under the other.
pub struct Bars(MultiProgress);

impl Bars {
    pub fn new() -> Self {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Self(MultiProgress::with_draw_target(target))
    }

    /// A new bar of `len` steps, labelled.
    pub fn bar(&self, len: usize, label: &'static str) -> ProgressBar {
        let style = ProgressStyle::with_template("{msg:>14} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        self.0.add(ProgressBar::new(len as u64).with_style(style).with_message(label))
    }
}

/// A bar the store moves on as it writes (the synthetic history).
pub struct BarProgress(pub ProgressBar);

impl Progress for BarProgress {
    fn phase(&self, _: &'static str, _: u64) {}

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}
