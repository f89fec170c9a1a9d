//! The REST API (axum): routes, extractors, and the mapping of every failure to a stable error
//! code. Handlers translate HTTP into commands and read models; they hold no state and decide
//! nothing a domain module should.

mod auth;
pub mod error;
mod extract;
mod health;
mod invocations;
mod sessions;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get, post};

use crate::app::App;
use crate::error_code::ErrorCode;
pub use auth::Caller;
pub use error::ApiError;
pub use extract::{ApiJson, ApiPath, ApiQuery};
pub use stream::StopStreams;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The request id: the caller's `X-Request-Id` when it is sane, else a fresh ULID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(ulid::Ulid::generate().to_string())))
    }
}

async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| ulid::Ulid::generate().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = std::time::Instant::now();
    let mut response = {
        use tracing::Instrument;
        next.run(request).instrument(span.clone()).await
    };
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request served"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

async fn not_found(RequestId(rid): RequestId) -> ApiError {
    ApiError::new(ErrorCode::NotFound, "route not found", &rid)
}

async fn method_not_allowed(RequestId(rid): RequestId) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed", &rid)
}

/// The router of the whole API.
pub fn router(app: Arc<App>) -> Router {
    use axum::routing::MethodRouter;
    let v1 = Router::new()
        .route("/v1/sessions", post(sessions::create))
        .route(
            "/v1/sessions/{session_id}",
            MethodRouter::new()
                .get(sessions::get)
                .delete(sessions::close),
        )
        .route("/v1/sessions/{session_id}/tools", get(sessions::tools))
        .route(
            "/v1/sessions/{session_id}/tools/{tool}/invoke",
            post(invocations::invoke),
        )
        .route(
            "/v1/sessions/{session_id}/invocations",
            get(invocations::list_for_session),
        )
        .route("/v1/sessions/{session_id}/events", get(sessions::events))
        .route("/v1/invocations/{invocation_id}", get(invocations::get))
        .route(
            "/v1/invocations/{invocation_id}/logs",
            get(invocations::logs),
        )
        .route(
            "/v1/invocations/{invocation_id}/artifacts",
            get(invocations::artifacts),
        )
        .route(
            "/v1/invocations/{invocation_id}/artifacts/{artifact_id}",
            get(invocations::artifact),
        )
        .route(
            "/v1/invocations/{invocation_id}/events",
            get(invocations::events),
        );
    health_routes().merge(v1).finish(app)
}

/// The routes of a process without the API role (an executor, a projector): its probes and
/// metrics.
pub fn health_router(app: Arc<App>) -> Router {
    health_routes().finish(app)
}

fn health_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", any(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
}

/// The fallbacks, limits and request ids every router has.
trait Finish {
    fn finish(self, app: Arc<App>) -> Router;
}

impl Finish for Router<Arc<App>> {
    fn finish(self, app: Arc<App>) -> Router {
        self.fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn(assign_request_id))
            .with_state(app)
    }
}
