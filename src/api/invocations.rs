//! Invocation routes: invoke a tool, read an invocation, its logs, artifacts and events.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use workspace_events::{AggregateType, ErrorInfo, LogLine};
use workspace_projections::{InvocationView, SessionView};

use super::sessions::{lookup, require_ready};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, Caller, RequestId};
use crate::app::App;
use crate::error_code::ErrorCode;
use crate::ids::{InvocationId, SessionId};
use crate::invocations::{Accepted, InvocationFailure, InvokeRequest};
use crate::tools::SessionContext;

/// `POST …/invoke` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    #[serde(default)]
    correlation_id: Option<String>,
    /// A JSON object; `null` is the same as absent (`{}`).
    #[serde(default, deserialize_with = "object_args")]
    args: Option<Map<String, Value>>,
    #[serde(default)]
    approved: Option<bool>,
    #[serde(default, rename = "async")]
    run_async: Option<bool>,
}

/// `args` is a JSON object (or `null`, as if absent): anything else is refused at the edge like
/// any malformed body, before an invocation is recorded.
fn object_args<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::Object(args)) => Ok(Some(args)),
        Some(_) => Err(serde::de::Error::custom("args must be a JSON object")),
    }
}

pub(super) fn session_context(view: &SessionView, rid: &str) -> Result<SessionContext, ApiError> {
    Ok(SessionContext {
        id: SessionId::parse(&view.id)
            .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.to_string(), rid))?,
        principal: view.principal.clone(),
        allowed_paths: view.allowed_paths.clone(),
        metadata: view.metadata.clone(),
        runtime: view.runtime.clone(),
    })
}

/// The bytes of an artifact the invocation refers to (its output or logs), checked against the
/// recorded digest. `Ok(None)` when the reference names no artifact of the invocation.
async fn referenced(
    app: &App,
    view: &InvocationView,
    reference: &str,
) -> Result<Option<Vec<u8>>, crate::artifacts::ArtifactError> {
    let Some(meta) = view.artifacts.iter().find(|a| a.id == reference) else {
        return Ok(None);
    };
    let Ok(inv) = InvocationId::parse(&view.id) else {
        return Ok(None);
    };
    app.artifacts.get(&inv, meta).await.map(Some)
}

/// Renders an invocation, reading large output back from its artifact.
async fn render(app: &App, view: &InvocationView) -> Value {
    let mut value = serde_json::to_value(view).unwrap_or(Value::Null);
    if view.output.is_none()
        && let Some(reference) = &view.output_ref
    {
        match referenced(app, view, reference).await {
            Ok(None) => {}
            Ok(Some(bytes)) => {
                if let Ok(output) = serde_json::from_slice::<Value>(&bytes) {
                    value["output"] = output;
                }
            }
            Err(e) => {
                tracing::error!(invocation_id = %view.id, error = %e, "output artifact unreadable")
            }
        }
    }
    value
}

/// The answer for an invocation in its current state: 200 when it succeeded (or is still in
/// progress for a replay), the error's status when it failed or was denied.
async fn answer(app: &App, view: &InvocationView, rid: &str) -> Response {
    match &view.error {
        Some(ErrorInfo { code, message, .. }) if view.is_terminal() => {
            ApiError::new(code.clone(), message.clone(), rid)
                .with_invocation_value(render(app, view).await)
                .into_response()
        }
        // Output kept as an artifact is read back into the answer.
        _ if view.output.is_none() && view.output_ref.is_some() => {
            let rendered = render(app, view).await;
            (StatusCode::OK, Json(json!({ "invocation": rendered }))).into_response()
        }
        _ => invocation_json(StatusCode::OK, view, rid),
    }
}

/// Room for a view's fields besides its output and arguments.
const VIEW_HEADROOM: usize = 1024;

/// `{"invocation": view}`, written by the view's own writer (what `Json` would write, byte for
/// byte) into a buffer sized for it.
fn invocation_json(status: StatusCode, view: &InvocationView, rid: &str) -> Response {
    let output = view.output.as_ref().map_or(0, |o| o.get().len());
    let mut buf = Vec::with_capacity(output + VIEW_HEADROOM);
    buf.extend_from_slice(b"{\"invocation\":");
    match view.write_json(&mut buf) {
        Ok(()) => {
            buf.push(b'}');
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                buf,
            )
                .into_response()
        }
        // Unreachable for plain data; still answered in the error envelope.
        Err(e) => ApiError::internal(&e, rid).into_response(),
    }
}

fn accepted(view: &InvocationView) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(json!({ "invocation": view }))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/invocations/{}", view.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn wants_async(body: &InvokeBody, headers: &HeaderMap) -> bool {
    body.run_async.unwrap_or(false)
        || headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
            })
}

/// `POST /v1/sessions/{session_id}/tools/{tool}/invoke`
pub async fn invoke(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((session_id, tool_name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<InvokeBody>,
) -> Result<Response, ApiError> {
    let view = lookup(&app, &caller, &session_id, &rid).await?;
    let tool = app
        .catalog
        .get(&tool_name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "tool not found", &rid))?;
    require_ready(&view, &rid)?;
    let ctx = session_context(&view, &rid)?;
    let run_async = wants_async(&body, &headers);
    let timeout_seconds = tool.spec().constraints.timeout_seconds;
    let request = InvokeRequest {
        correlation_id: body.correlation_id.or_else(|| {
            headers
                .get("x-correlation-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        }),
        args: body.args.unwrap_or_default(),
        approved: body.approved.unwrap_or(false),
    };
    let failure = |f: InvocationFailure| ApiError::new(f.code, f.message, &rid);
    let (invocation_id, receipt, refused, watch) = match app
        .invocations
        .accept(&ctx, tool.as_ref(), request, &rid)
        .await
        .map_err(failure)?
    {
        Accepted::Existing(existing) => {
            return Ok(replay(&app, existing, run_async, timeout_seconds, &rid).await);
        }
        Accepted::Refused {
            invocation_id,
            receipt,
            watch,
            ..
        } => (invocation_id, receipt, true, watch),
        Accepted::Queued {
            invocation_id,
            receipt,
            watch,
        } => (invocation_id, receipt, false, watch),
    };
    if run_async {
        drop(watch);
        // Read-your-writes: the 202 goes out once a GET of the Location sees the invocation.
        let view = app
            .invocations
            .wait_recorded(&invocation_id, &receipt, &rid)
            .await
            .map_err(failure)?;
        // A request refused before anything ran is answered at once; queued work always gets
        // its 202 and Location, even when the executor was quick enough to finish it already.
        if refused {
            return Ok(answer(&app, &view, &rid).await);
        }
        return Ok(accepted(&view));
    }
    // Synchronous: wait for the terminal state (a refusal is terminal at once).
    match app
        .invocations
        .wait_registered(watch, timeout_seconds, &rid)
        .await
        .map_err(failure)?
    {
        Some(done) if done.is_terminal() => Ok(answer(&app, &done, &rid).await),
        Some(pending) => Ok(accepted(&pending)),
        None => Err(failure(InvocationFailure::not_caught_up())),
    }
}

async fn replay(
    app: &App,
    existing: Arc<InvocationView>,
    run_async: bool,
    timeout_seconds: u64,
    rid: &str,
) -> Response {
    if existing.is_terminal() {
        return answer(app, &existing, rid).await;
    }
    if run_async {
        return accepted(&existing);
    }
    match app
        .invocations
        .wait_terminal(&existing.id, timeout_seconds, rid)
        .await
    {
        Ok(Some(done)) if done.is_terminal() => answer(app, &done, rid).await,
        Ok(Some(pending)) => accepted(&pending),
        Ok(None) | Err(_) => accepted(&existing),
    }
}

async fn find(
    app: &Arc<App>,
    caller: &Caller,
    raw_id: &str,
    rid: &str,
) -> Result<Arc<InvocationView>, ApiError> {
    let id = InvocationId::parse(raw_id)
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.to_string(), rid))?;
    let store = app.projector.store();
    let view = store
        .invocation(id.as_str())
        .await
        .map_err(ApiError::read_model(rid))?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "invocation not found", rid))?;
    if let Caller::Authenticated(_) = caller {
        let session = store
            .session(&view.session_id)
            .await
            .map_err(ApiError::read_model(rid))?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "session not found", rid))?;
        caller.check_owner(&session, rid)?;
    }
    Ok(view)
}

/// The invocation a route over its events names: found like [`find`] while the read models
/// hold its view, and otherwise in the log, which keeps every event after the view left the
/// store (retention): it exists when it has events, and belongs to the principal its first
/// event was recorded for (the API records the session's owner as the actor of every request).
async fn find_recorded(
    app: &Arc<App>,
    caller: &Caller,
    raw_id: &str,
    rid: &str,
) -> Result<String, ApiError> {
    let missing = match find(app, caller, raw_id, rid).await {
        Ok(view) => return Ok(view.id.clone()),
        Err(e) if e.code == ErrorCode::NotFound => e,
        Err(e) => return Err(e),
    };
    let id = InvocationId::parse(raw_id)
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.to_string(), rid))?;
    let events = app
        .log
        .load(AggregateType::Invocation, id.as_str())
        .await
        .map_err(|e| {
            ApiError::new(ErrorCode::Unavailable, "event store unavailable", rid).tap_log(&e)
        })?;
    let Some(first) = events.first() else {
        return Err(missing);
    };
    if let Caller::Authenticated(p) = caller {
        let owner = first.envelope.actor.as_ref();
        if !owner.is_some_and(|a| a.tenant_id == p.tenant_id && a.actor_id == p.actor_id) {
            return Err(ApiError::new(
                ErrorCode::PolicyDenied,
                "session does not belong to authenticated principal",
                rid,
            ));
        }
    }
    Ok(id.to_string())
}

/// `GET /v1/invocations/{id}`
pub async fn get(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    ApiPath(invocation_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let view = find(&app, &caller, &invocation_id, &rid).await?;
    Ok(Json(json!({ "invocation": render(&app, &view).await })))
}

/// `GET /v1/invocations/{id}/logs`
pub async fn logs(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    ApiPath(invocation_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let view = find(&app, &caller, &invocation_id, &rid).await?;
    let mut logs = view.logs.clone();
    if let Some(reference) = &view.logs_ref
        && let Some(bytes) = referenced(&app, &view, reference)
            .await
            .map_err(|e| ApiError::internal(&e, &rid))?
    {
        logs = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice::<LogLine>(l).ok())
            .collect();
    }
    Ok(Json(json!({ "logs": logs })))
}

/// `GET /v1/invocations/{id}/artifacts`
pub async fn artifacts(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    ApiPath(invocation_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let view = find(&app, &caller, &invocation_id, &rid).await?;
    Ok(Json(json!({ "artifacts": view.artifacts })))
}

/// `GET /v1/invocations/{id}/artifacts/{artifact_id}`: the bytes, checked against their
/// recorded SHA-256.
pub async fn artifact(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    ApiPath((invocation_id, artifact_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let view = find(&app, &caller, &invocation_id, &rid).await?;
    let meta = view
        .artifacts
        .iter()
        .find(|a| a.id == artifact_id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "artifact not found", &rid))?;
    let inv = InvocationId::parse(&view.id).map_err(|e| ApiError::internal(&e, &rid))?;
    let bytes = app.artifacts.get(&inv, meta).await.map_err(|e| match e {
        crate::artifacts::ArtifactError::NotFound => {
            ApiError::new(ErrorCode::NotFound, "artifact bytes not found", &rid)
        }
        crate::artifacts::ArtifactError::Unavailable(_) => {
            ApiError::new(ErrorCode::Unavailable, "artifact store unavailable", &rid).tap_log(&e)
        }
        other => ApiError::internal(&other, &rid),
    })?;
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&meta.sha256) {
        headers.insert("x-artifact-sha256", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", meta.name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// `GET /v1/invocations/{id}/events`: the invocation's events in order; with
/// `Accept: text/event-stream`, a live stream of them (see [`super::stream`]).
pub async fn events(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    stop: Option<Extension<super::StopStreams>>,
    ApiPath(invocation_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = find_recorded(&app, &caller, &invocation_id, &rid).await?;
    if super::stream::wanted(&headers) {
        let after = super::stream::resume_cursor(&headers, &uri, &rid)?;
        let id = InvocationId::parse(&id).map_err(|e| ApiError::internal(&e, &rid))?;
        let stop = stop.map(|Extension(stop)| stop);
        let sources = (app.log.clone(), app.live.clone());
        return super::stream::invocation(sources, stop, &id, after, &rid).await;
    }
    let events = app
        .log
        .load(AggregateType::Invocation, &id)
        .await
        .map_err(|e| {
            ApiError::new(ErrorCode::Unavailable, "event store unavailable", &rid).tap_log(&e)
        })?;
    let events: Vec<&workspace_events::RecordedEvent> = events.iter().map(|e| e.as_ref()).collect();
    Ok(Json(json!({ "events": events })).into_response())
}

/// Paging of `GET /v1/sessions/{id}/invocations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

/// `GET /v1/sessions/{id}/invocations`: newest first.
pub async fn list_for_session(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    ApiPath(session_id): ApiPath<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Value>, ApiError> {
    let view = lookup(&app, &caller, &session_id, &rid).await?;
    let limit = page.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "limit must be between 1 and 500",
            &rid,
        ));
    }
    let offset = page.offset.unwrap_or(0);
    let page = app
        .projector
        .store()
        .session_invocations(&view.id, offset, limit)
        .await
        .map_err(ApiError::read_model(&rid))?;
    let next = page.next_offset(offset);
    Ok(Json(
        json!({ "invocations": page.items, "total": page.total, "next_offset": next }),
    ))
}
