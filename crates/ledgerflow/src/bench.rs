//! `ledgerflow bench`: runs `ledgerflow-bench`, the load generator (crates/bench), which is a
//! binary of its own so that this production one links no HTTP client and cannot write a
//! synthetic history. The documented command keeps working: the bench's arguments go through
//! as they are (`--help` included), this command's connection settings go along as the
//! `LEDGERFLOW_*` environment, and its exit code is the bench's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, ensure};
use clap::Args;

use ledgerflow::settings::Connections;

/// What builds `ledgerflow-bench` next to this executable, for the error when it is missing.
const BUILD_HINT: &str = if cfg!(debug_assertions) {
    "cargo build -p ledgerflow-bench"
} else {
    "cargo build --release -p ledgerflow-bench"
};

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// The bench's options, passed on to `ledgerflow-bench` as they are: see `ledgerflow bench
    /// --help`.
    #[arg(value_name = "ARGS", num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Runs the bench and returns its exit code; on Unix the bench replaces this process (same
/// pid, so a supervisor's SIGTERM reaches the bench itself, which then stops the processes it
/// started), and this returns only if it could not be started.
pub fn forward(conn: &Connections, threads: usize, args: &BenchArgs) -> ExitCode {
    match run(conn, threads, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(conn: &Connections, threads: usize, args: &BenchArgs) -> Result<ExitCode> {
    let exe = bench_exe()?;
    let mut command = Command::new(&exe);
    command.args(&args.args).envs(conn.env()).env("LEDGERFLOW_THREADS", threads.to_string());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        // Its usage line then reads `ledgerflow bench`, the command that was typed.
        let error = command.arg0("ledgerflow bench").exec();
        Err(error).with_context(|| format!("cannot run {}", exe.display()))
    }
    #[cfg(not(unix))]
    {
        let status = command.status().with_context(|| format!("cannot run {}", exe.display()))?;
        Ok(status.code().and_then(|c| u8::try_from(c).ok()).map_or(ExitCode::FAILURE, ExitCode::from))
    }
}

/// `ledgerflow-bench` next to this executable, where `cargo build` puts it.
fn bench_exe() -> Result<PathBuf> {
    let this = std::env::current_exe().context("cannot find the ledgerflow executable")?;
    let exe = this.with_file_name(format!("ledgerflow-bench{}", std::env::consts::EXE_SUFFIX));
    ensure!(exe.is_file(), "{} is missing: build the bench with `{BUILD_HINT}`", exe.display());
    Ok(exe)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::Parser;

    use crate::{Cli, Command};

    /// The connection prefix `ledgerflow` parsed, and the arguments it passes on.
    fn parse(args: &[&str]) -> (String, Vec<OsString>) {
        let cli = Cli::try_parse_from(args).expect("arguments parse");
        let Command::Bench(bench) = cli.command else { panic!("a bench command") };
        (cli.conn.amqp_prefix, bench.args)
    }

    #[test]
    fn the_bench_arguments_go_through_as_they_are() {
        let passed = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        let bench = ["--accounts", "10", "--help", "-h", "--rate", "50%", "--keep"];
        assert_eq!(parse(&[&["ledgerflow", "bench"], &bench[..]].concat()).1, passed(&bench));
        assert!(parse(&["ledgerflow", "bench"]).1.is_empty());
        // Connection settings before the subcommand are this command's, and go on as environment.
        assert_eq!(
            parse(&["ledgerflow", "--amqp-prefix", "p", "bench", "--raw"]),
            ("p".to_owned(), passed(&["--raw"]))
        );
        // After a bench option, they are the bench's (which takes them too), passed on as they are.
        let bench = ["--raw", "--amqp-prefix", "p"];
        assert_eq!(parse(&[&["ledgerflow", "bench"], &bench[..]].concat()).1, passed(&bench));
    }
}
