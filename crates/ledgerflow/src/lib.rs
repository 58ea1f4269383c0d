//! The assembly of LedgerFlow: typed [`settings`] read once from flags and the environment,
//! and the one [`App`] that `ledgerflow gateway`, `worker` and `up` build from them. The tests
//! build their systems through it too.

pub mod app;
pub mod dispatch;
pub mod settings;

pub use app::App;
pub use settings::Settings;
