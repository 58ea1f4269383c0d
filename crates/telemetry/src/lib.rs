//! Logs and metrics, set up the same way in every LedgerFlow process.
//!
//! Counters and histograms are recorded where things happen (`metrics::counter!` in every
//! crate); this crate only installs one Prometheus recorder per process and exposes it at
//! `GET /metrics`, served by the gateway beside its API and by a worker on its own listener.
//! It sits below the gateway and the worker so that neither reaches into the other for it.

use std::future::Future;
use std::sync::OnceLock;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Latency buckets in seconds: from sub-millisecond reads to multi-second outages.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Logs to stderr, filtered by `LEDGERFLOW_LOG` (default `info`), as JSON lines when
/// `LEDGERFLOW_LOG_FORMAT=json`, in colour only on a terminal.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LEDGERFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if std::env::var("LEDGERFLOW_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The process's Prometheus recorder, installed on first use. `None` if another recorder
/// was installed first (metrics then go there).
pub fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// `GET /metrics` in the Prometheus text format; 503 in LedgerFlow's error shape when this
/// process's recorder could not be installed.
pub async fn render() -> Response {
    match prometheus() {
        Some(handle) => {
            handle.run_upkeep();
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
        }
        None => {
            let body = serde_json::json!({
                "error": { "code": "SERVICE_UNAVAILABLE", "message": "metrics recorder not installed" }
            });
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

/// Serves only `GET /metrics` on `listener` until `shutdown` completes: for processes
/// without the gateway (workers).
pub async fn serve_metrics(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    prometheus();
    let app = Router::new().route("/metrics", get(render));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
