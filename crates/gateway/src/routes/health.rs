use axum::Json;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Liveness: the process is up and serving.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: MongoDB and RabbitMQ both answer. A load balancer stops sending traffic to a
/// gateway that cannot record or publish.
pub(super) async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> ApiResult<Json<Value>> {
    if state.store.ping().await.is_err() {
        return Err(ApiError::Unavailable("MongoDB is unreachable"));
    }
    if state.publisher.ensure_connected().await.is_err() {
        return Err(ApiError::Unavailable("RabbitMQ is unreachable"));
    }
    Ok(Json(json!({ "status": "ready", "mongodb": "ok", "rabbitmq": "ok" })))
}
