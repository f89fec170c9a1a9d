//! `/healthz`, `/readyz` and `/metrics`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::App;
use crate::config::EventStoreConfig;

/// How long `/readyz` waits for each dependency (they are asked at once): it answers within
/// about this, whatever is down.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest error message shown for a dependency.
const MAX_ERROR_CHARS: usize = 300;

/// Liveness: the process answers. Any method, no auth (the original contract).
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: each dependency by name, with its backend and whether it answered within
/// [`PING_TIMEOUT`], plus the log head, the read models' checkpoint and the lag between them.
/// 503 (with `Retry-After`) when any dependency is down; the read models count as down while
/// they hold less than this process saw applied to them (a Valkey restarted empty or flushed,
/// being rebuilt from the log).
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let store = app.projector.store();
    // Read before the store's own checkpoint: the projector only records what the store
    // already applied, so a store behind this lost views.
    let projected = app.projector.checkpoint();
    let (events, read_models, artifacts) = tokio::join!(
        bounded(app.log.ping()),
        bounded(async {
            store.ping().await?;
            store.checkpoint().await
        }),
        bounded(app.artifacts.ping()),
    );
    // Just refreshed by the ping.
    let head = app.log.known_head();
    let (read_models, checkpoint) = match read_models {
        Ok(stored) if stored < projected => (
            Err(format!(
                "the store is at sequence {stored}, behind the {projected} it held before \
                 (restarted empty or flushed); it is being rebuilt from the event log"
            )),
            stored,
        ),
        Ok(stored) => (Ok(()), stored),
        Err(e) => (Err(e), projected),
    };
    let lag = head.saturating_sub(checkpoint);
    app.metrics.set_projection_lag(lag);
    let (event_backend, artifact_backend) = match &app.config.event_store {
        EventStoreConfig::File => ("file", "local"),
        EventStoreConfig::JetStream(_) => ("jetstream", "jetstream_object_store"),
    };
    let ready = events.is_ok() && read_models.is_ok() && artifacts.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "dependencies": {
            "event_store": dependency(event_backend, &events),
            "read_models": dependency(store.backend(), &read_models),
            "artifact_store": dependency(artifact_backend, &artifacts),
        },
        "event_store": state(&events),
        "artifact_store": state(&artifacts),
        "event_head": head,
        "read_model_checkpoint": checkpoint,
        "projection_lag": lag,
    });
    if ready {
        return (StatusCode::OK, Json(body)).into_response();
    }
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Runs one dependency's check within [`PING_TIMEOUT`]; the error as shown to callers.
async fn bounded<T, E: std::fmt::Display>(
    check: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(PING_TIMEOUT, check).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(shown(&e)),
        Err(_) => Err(format!("no answer within {PING_TIMEOUT:?}")),
    }
}

fn state<T>(check: &Result<T, String>) -> &'static str {
    if check.is_ok() { "ok" } else { "unavailable" }
}

fn dependency(backend: &str, check: &Result<(), String>) -> Value {
    match check {
        Ok(()) => json!({"backend": backend, "status": "ok"}),
        Err(error) => json!({"backend": backend, "status": "unavailable", "error": error}),
    }
}

/// An error message fit for an unauthenticated caller: no user info in URLs
/// (`nats://user:pass@host` becomes `nats://host`), on one line, at most
/// [`MAX_ERROR_CHARS`] characters. The stores' messages never carry a password or token of
/// their own; this guards against one quoting a URL it was given.
fn shown(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string().replace(['\n', '\r'], " ");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c == ',' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        out.push_str(
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
        );
        rest = &after[end..];
    }
    out.push_str(rest);
    match out.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &out[..cut]),
        None => out,
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    // A process that does not follow the log (an API replica, an executor) learns the head
    // from a ping; a failed one leaves the last head it knew.
    let _ = bounded(app.log.ping()).await;
    let head = app.log.known_head();
    app.metrics
        .set_projection_lag(head.saturating_sub(app.projector.checkpoint()));
    (
        [(header::CONTENT_TYPE, crate::telemetry::CONTENT_TYPE)],
        app.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_errors_drop_the_user_info_of_urls() {
        assert_eq!(
            shown(&"connecting to nats://alice:s3cret@nats.svc:4222,tls://tok@b:4222/x failed"),
            "connecting to nats://nats.svc:4222,tls://b:4222/x failed"
        );
        assert_eq!(shown(&"refused\nby peer"), "refused by peer");
        assert_eq!(shown(&"a @ sign, no url"), "a @ sign, no url");
        let long = "x".repeat(MAX_ERROR_CHARS + 10);
        assert_eq!(shown(&long).chars().count(), MAX_ERROR_CHARS + 1);
    }
}
