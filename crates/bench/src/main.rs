//! `ledgerflow-bench`: a load generator, and where the README's benchmark figures come from.
//! A binary of its own, so that the production `ledgerflow` links no HTTP client and cannot
//! write a synthetic history; `ledgerflow bench …` runs this one (the executable next to it)
//! with the same arguments and connection settings.
//!
//! By default it starts its own gateway and worker *processes* (the `ledgerflow` executable
//! next to this one, with the `gateway` and `worker` subcommands) on a fresh database and queue
//! prefix, so it measures the deployment shape: HTTP, the broker, separate processes and their
//! memory. A run has phases:
//!
//! 1. setup: register users, open accounts and fund them, all through the HTTP API;
//! 2. load: submit transfers over HTTP (or, with `--direct`, publish them to the exchange as
//!    an upstream system would), timing submit → 202 (or → publisher confirm) and submit →
//!    outcome, the outcome taken from the result exchange as the worker publishes it; with
//!    `--rate N%`, an unpaced load first measures the maximum and the timed load is paced at
//!    N% of it, on the same processes, seconds apart;
//! 3. `--holds`: as many hold-then-post pairs on the same processes, each post sent once its
//!    hold is heard HELD, timed to the POST_HOLD heard COMPLETED, and costed against the
//!    transfers (their rate over the pairs');
//! 4. `--raw`: the same transfers as a tight loop of `Store::execute` calls on a separate
//!    database, no HTTP and no queue: the floor the pipeline is compared with;
//! 5. the ledger check: the run's own database must hold every `ledgerflow reconcile`
//!    invariant after the load, or the run fails.
//!
//! `--balance-reads` instead shows that reading a balance costs the same at any history length.
//!
//! Every wait has a deadline; the child processes are killed if anything fails (they are
//! killed on drop), and the database and queues a run made are deleted unless `--keep`.

mod api;
mod args;
mod cleanup;
mod cluster;
mod figures;
mod ledger;
mod listener;
mod load;
mod metrics;
mod output;
mod pair_figures;
mod pairs;
mod plan;
mod pool;
mod progress;
mod raw;
mod reads;
mod report;
mod run;
mod samples;
mod sampling;
mod sandbox;
mod setup;

use std::process::ExitCode;

use clap::Parser;
use ledgerflow::app::runtime;

use crate::args::Cli;
use crate::run::Bench;

/// The allocator of the `ledgerflow` processes, so that the bench's own CPU figures are comparable
/// with theirs and with those of the bench when it was part of that binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Logs on stderr (stdout carries only the report), as every `ledgerflow` process logs.
    ledgerflow_telemetry::init_tracing();
    let cli = Cli::parse();
    let bench = Bench::new(cli.conn, cli.bench);
    match runtime(bench.conn.threads).and_then(|rt| rt.block_on(bench.run())) {
        Ok(()) => ExitCode::SUCCESS,
        // The message and its causes on one line, as `ledgerflow` prints its errors.
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
