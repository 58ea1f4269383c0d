use crate::dto;
use axum::Json;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    responses(
        (status = 200, description = "The process is up", body = dto::StatusBody),
    )
)]
/// Liveness: the process is up and serving.
pub(super) async fn healthz() -> Json<dto::StatusBody> {
    Json(dto::StatusBody { status: "ok".into() })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness: MongoDB and RabbitMQ reachable",
    responses(
        (status = 200, description = "Ready", body = dto::StatusBody),
        dto::Unavailable,
    )
)]
/// Readiness: MongoDB and RabbitMQ both answer. A load balancer stops sending traffic to a
/// gateway that cannot record or publish.
pub(super) async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> ApiResult<Json<dto::StatusBody>> {
    if state.store.ping().await.is_err() {
        return Err(ApiError::Unavailable("MongoDB is unreachable"));
    }
    if state.publisher.ensure_connected().await.is_err() {
        return Err(ApiError::Unavailable("RabbitMQ is unreachable"));
    }
    Ok(Json(dto::StatusBody { status: "ready".into() }))
}
