//! The gateway's HTTP metrics: every request counted and timed. The recorder they go to, and
//! `GET /metrics`, are `ledgerflow_telemetry`'s, shared with the worker.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// Middleware: counts requests and times them by route template (never by raw path, which
/// would make one time series per account id), method (standard ones only) and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    // Any token is a valid method: a label per made-up one would let anyone grow the
    // registry (and every scrape) without bound.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("ledgerflow_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("ledgerflow_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Registers at zero the gateway's counters that only failures increment. `rate()` needs a
/// sample before the first failure to count it, and the alerts on them (deploy/monitoring)
/// should find the series on a healthy gateway rather than nothing.
pub(crate) fn register_failure_counters() {
    metrics::counter!("ledgerflow_publish_failures_total").increment(0);
    metrics::counter!("ledgerflow_password_hashes_shed_total").increment(0);
    metrics::counter!("ledgerflow_password_hashes_limited_total").increment(0);
    metrics::counter!("ledgerflow_logins_malformed_email_total").increment(0);
}
