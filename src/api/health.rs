//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;

/// Liveness: the process answers. Any method, no auth (the original contract).
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the event store and artifact store answer and the read model is caught up to
/// within the last append.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let store = app.log.ping().await;
    let artifacts = app.artifacts.ping().await;
    let head = *app.log.head().borrow();
    let checkpoint = app.projector.checkpoint();
    let ready = store.is_ok() && artifacts.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "event_store": if store.is_ok() { "ok" } else { "unavailable" },
        "artifact_store": if artifacts.is_ok() { "ok" } else { "unavailable" },
        "event_head": head,
        "read_model_checkpoint": checkpoint,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
