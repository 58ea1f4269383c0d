//! Fault tests (real processes); see tests/support/processes.rs.
