//! What LedgerFlow's end-to-end tests and its bench share to run real systems on the shared
//! MongoDB and RabbitMQ: the names a run works under ([`Sandbox`]), which
//! `scripts/services.sh sweep` recognises and ages, and child processes that log to a file of
//! their own and are killed when dropped ([`LoggedChild`]), so no failure path leaves a
//! gateway or worker running.

mod process;
mod sandbox;

pub use process::{LoggedChild, log_tail};
pub use sandbox::{KINDS, Sandbox};
