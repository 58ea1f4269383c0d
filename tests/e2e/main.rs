//! End-to-end tests against real MongoDB and RabbitMQ, in one binary (one link instead of one
//! per area). Each module is one area of behaviour; each test starts its own system on its
//! own database and queue names (`ledgerflow_tests::spawn_app`), so they run in parallel.
//! The fault tests (`tests/faults/`) are a binary of their own: they restart the shared
//! services, so they run last and alone.

mod api;
mod audit;
mod batch;
mod client;
mod contract;
mod edges;
mod events;
mod holds;
mod journals;
mod ledger;
mod limits;
mod pipeline;
mod queue;
mod reversals;
mod search;
mod services;
mod signin;
mod statements;
mod submit_batch;
mod waiters;
mod webhooks;
