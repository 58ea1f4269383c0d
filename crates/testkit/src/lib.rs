//! What LedgerFlow's end-to-end tests and its bench share to run real systems on the shared
//! MongoDB and RabbitMQ: the names a run works under ([`Sandbox`]), which
//! `scripts/services.sh sweep` recognises and ages; child processes that log to a file of
//! their own and are killed when dropped ([`LoggedChild`]), so no failure path leaves a
//! gateway or worker running; and real `ledgerflow` gateway and worker processes started from
//! the settings they are meant to run with ([`Cluster`]).

mod cluster;
mod process;
mod sandbox;

pub use cluster::{Cluster, Gateway, Launcher, Worker, free_local_addr, wait_for_workers};
pub use process::{LoggedChild, log_tail};
pub use sandbox::{KINDS, Sandbox};
