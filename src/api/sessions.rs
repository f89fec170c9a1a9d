//! Session routes: create, get, close, list tools, audit trail.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use workspace_events::{AggregateType, CloseReason, Principal, SessionStatus, WorkspaceSource};
use workspace_projections::SessionView;

use super::{ApiError, ApiJson, ApiPath, Caller, RequestId};
use crate::app::App;
use crate::error_code::ErrorCode;
use crate::ids::{SessionId, TenantId};
use crate::sessions::{NewSession, SessionFailure};

const DEFAULT_TTL_SECONDS: i64 = 3600;
const MAX_TTL_SECONDS: i64 = 30 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalBody {
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    actor_id: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// `POST /v1/sessions` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionBody {
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    repo_url: Option<String>,
    #[serde(default)]
    repo_ref: Option<String>,
    #[serde(default)]
    source_repo_path: Option<String>,
    #[serde(default)]
    allowed_paths: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::extract::object")]
    principal: Option<PrincipalBody>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    expires_in_seconds: Option<i64>,
}

fn bad(message: impl Into<String>, rid: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message, rid)
}

fn plain_text(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && !value.chars().any(char::is_control)
}

fn validate_principal(body: Option<PrincipalBody>, rid: &str) -> Result<Principal, ApiError> {
    let p = body.unwrap_or(PrincipalBody {
        tenant_id: String::new(),
        actor_id: String::new(),
        roles: Vec::new(),
    });
    let tenant_id = p.tenant_id.trim().to_owned();
    let actor_id = p.actor_id.trim().to_owned();
    if tenant_id.is_empty() {
        return Err(bad("principal.tenant_id is required", rid));
    }
    if actor_id.is_empty() {
        return Err(bad("principal.actor_id is required", rid));
    }
    validate_tenant(&tenant_id, rid)?;
    if !plain_text(&actor_id, 128) {
        return Err(bad(
            "principal.actor_id must be 1-128 printable characters",
            rid,
        ));
    }
    if p.roles.len() > 32 {
        return Err(bad("principal.roles has more than 32 entries", rid));
    }
    let mut roles = Vec::new();
    for role in p.roles {
        let role = role.trim();
        if !plain_text(role, 64) {
            return Err(bad(
                "principal.roles entries must be 1-64 printable characters",
                rid,
            ));
        }
        roles.push(role.to_owned());
    }
    Ok(Principal {
        tenant_id,
        actor_id,
        roles,
    })
}

fn validate_tenant(tenant_id: &str, rid: &str) -> Result<(), ApiError> {
    // The tenant id names a directory on the host: same alphabet as ids.
    TenantId::parse(tenant_id)
        .map(|_| ())
        .map_err(|e| bad(format!("principal.{e}"), rid))
}

fn validate_repo_url(url: &str, rid: &str) -> Result<(), ApiError> {
    if !plain_text(url, 2048) || url.contains(char::is_whitespace) || url.starts_with('-') {
        return Err(bad(
            "repo_url must be 1-2048 characters without spaces",
            rid,
        ));
    }
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(bad(
                "repo_url must not embed credentials; use a git auth secret",
                rid,
            ));
        }
    }
    Ok(())
}

fn validate(body: CreateSessionBody, caller: &Caller, rid: &str) -> Result<NewSession, ApiError> {
    let principal = match caller {
        // Trusted headers: the authenticated principal replaces the body's.
        Caller::Authenticated(p) => {
            validate_tenant(&p.tenant_id, rid)?;
            p.clone()
        }
        Caller::Anonymous => validate_principal(body.principal, rid)?,
    };
    let id = match body.session_id.as_deref().map(str::trim) {
        None | Some("") => SessionId::generate(),
        Some(s) => SessionId::parse(s).map_err(|e| bad(e.to_string(), rid))?,
    };
    let repo_url = body.repo_url.filter(|s| !s.trim().is_empty());
    let repo_ref = body.repo_ref.filter(|s| !s.trim().is_empty());
    let source_path = body.source_repo_path.filter(|s| !s.trim().is_empty());
    let source = match (source_path, repo_url) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "give either source_repo_path or repo_url, not both",
                rid,
            ));
        }
        (Some(path), None) => {
            let p = std::path::Path::new(&path);
            if !p.is_absolute() || path.contains('\0') || path.len() > 4096 {
                return Err(bad("source_repo_path must be an absolute path", rid));
            }
            // Whether it may be copied, and exists, is the session service's decision (it
            // answers nothing about paths outside WORKSPACE_SOURCE_ROOTS).
            if repo_ref.is_some() {
                return Err(bad("repo_ref needs repo_url", rid));
            }
            WorkspaceSource::Copy {
                source_repo_path: path,
            }
        }
        (None, Some(url)) => {
            validate_repo_url(&url, rid)?;
            if let Some(r) = &repo_ref
                && (!plain_text(r, 256) || r.starts_with('-') || r.contains(char::is_whitespace))
            {
                return Err(bad("repo_ref must be a branch or tag name", rid));
            }
            WorkspaceSource::Git {
                repo_url: url,
                repo_ref,
            }
        }
        (None, None) => {
            if repo_ref.is_some() {
                return Err(bad("repo_ref needs repo_url", rid));
            }
            WorkspaceSource::Empty
        }
    };
    let raw_paths = body.allowed_paths.unwrap_or_default();
    if raw_paths.len() > 64 {
        return Err(bad("allowed_paths has more than 64 entries", rid));
    }
    let mut allowed_paths = Vec::new();
    for p in raw_paths {
        let normalized = crate::policy::paths::normalize(&p)
            .map_err(|e| bad(format!("allowed_paths: {e}"), rid))?;
        allowed_paths.push(normalized);
    }
    if allowed_paths.is_empty() {
        allowed_paths.push(".".to_owned());
    }
    let metadata = body.metadata.unwrap_or_default();
    if metadata.len() > 64 {
        return Err(bad("metadata has more than 64 keys", rid));
    }
    for (k, v) in &metadata {
        if !plain_text(k, 128) || v.len() > 4096 || v.contains('\0') {
            return Err(bad(
                "metadata keys must be 1-128 characters, values at most 4096",
                rid,
            ));
        }
    }
    let ttl = match body.expires_in_seconds {
        None => DEFAULT_TTL_SECONDS,
        Some(s) if s <= 0 => DEFAULT_TTL_SECONDS,
        Some(s) if s > MAX_TTL_SECONDS => {
            return Err(bad(
                format!("expires_in_seconds must be at most {MAX_TTL_SECONDS}"),
                rid,
            ));
        }
        Some(s) => s,
    };
    Ok(NewSession {
        id,
        principal,
        source,
        allowed_paths,
        metadata,
        expires_in: time::Duration::seconds(ttl),
    })
}

fn failure(f: SessionFailure, rid: &str) -> ApiError {
    let mut err = ApiError::new(f.code, f.message, rid);
    err.session = f.session;
    err
}

/// Looks up a session for a route: validates the id, applies lazy expiry, checks ownership.
pub(super) async fn lookup(
    app: &Arc<App>,
    caller: &Caller,
    raw_id: &str,
    rid: &str,
) -> Result<Arc<SessionView>, ApiError> {
    let id = SessionId::parse(raw_id).map_err(|e| bad(e.to_string(), rid))?;
    let view = app
        .projector
        .store()
        .session(id.as_str())
        .await
        .map_err(ApiError::read_model(rid))?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "session not found", rid))?;
    caller.check_owner(&view, rid)?;
    if !view.status.is_closed() && view.expires_at <= time::OffsetDateTime::now_utc() {
        // Expired but not yet swept: expire it now, so nobody uses it past its deadline.
        let _ = app.sessions.close(&id, CloseReason::Expired, rid).await;
        return Ok(app
            .projector
            .store()
            .session(id.as_str())
            .await
            .map_err(ApiError::read_model(rid))?
            .unwrap_or(view));
    }
    Ok(view)
}

/// A session tools can run in: ready, not closed.
pub(super) fn require_ready(view: &SessionView, rid: &str) -> Result<(), ApiError> {
    match view.status {
        SessionStatus::Ready => Ok(()),
        status if status.is_closed() => {
            Err(ApiError::new(ErrorCode::NotFound, "session not found", rid))
        }
        other => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("session is {other}, not ready"),
            rid,
        )),
    }
}

/// `POST /v1/sessions`
pub async fn create(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSessionBody>,
) -> Result<Response, ApiError> {
    let request = validate(body, &caller, &rid)?;
    let view = app
        .sessions
        .create(request, &rid)
        .await
        .map_err(|f| failure(f, &rid))?;
    Ok((StatusCode::CREATED, Json(json!({ "session": view }))).into_response())
}

/// `GET /v1/sessions/{id}`
pub async fn get(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    ApiPath(session_id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = lookup(&app, &caller, &session_id, &rid).await?;
    Ok(Json(json!({ "session": &*view })))
}

/// `DELETE /v1/sessions/{id}`: idempotent; an unknown session is `not_found`.
pub async fn close(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    ApiPath(session_id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = lookup(&app, &caller, &session_id, &rid).await?;
    let id = SessionId::parse(&view.id).map_err(|e| bad(e.to_string(), &rid))?;
    app.sessions
        .close(&id, CloseReason::Requested, &rid)
        .await
        .map_err(|f| failure(f, &rid))?;
    Ok(Json(json!({ "closed": true })))
}

/// `GET /v1/sessions/{id}/tools`: the tools this session's principal may see, by name.
pub async fn tools(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    ApiPath(session_id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = lookup(&app, &caller, &session_id, &rid).await?;
    require_ready(&view, &rid)?;
    let ctx = super::invocations::session_context(&view, &rid)?;
    let tools: Vec<&crate::tools::ToolSpec> = app
        .catalog
        .specs()
        // The runtime gating hides what it would refuse, before the policy's rules 1-2.
        .filter(|spec| {
            crate::tools::k8s::gate(&ctx, spec, app.config.k8s_delivery_tools).is_ok()
                && crate::policy::visible(&ctx, spec)
        })
        .collect();
    Ok(Json(json!({ "tools": tools })))
}

/// `GET /v1/sessions/{id}/events`: the session's events, in order (its audit trail); with
/// `Accept: text/event-stream`, a live stream of them and of its invocations' events (see
/// [`super::stream`]).
pub async fn events(
    State(app): State<Arc<App>>,
    RequestId(rid): RequestId,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    stop: Option<Extension<super::StopStreams>>,
    ApiPath(session_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let view = lookup(&app, &caller, &session_id, &rid).await?;
    if super::stream::wanted(&headers) {
        let after = super::stream::resume_point(&headers, &uri, &rid)?;
        let id = SessionId::parse(&view.id).map_err(|e| bad(e.to_string(), &rid))?;
        let stop = stop.map(|Extension(stop)| stop);
        return super::stream::session(app.log.clone(), stop, &id, after, &rid).await;
    }
    let events = app
        .log
        .load(AggregateType::Session, &view.id)
        .await
        .map_err(|e| {
            ApiError::new(ErrorCode::Unavailable, "event store unavailable", &rid).tap_log(&e)
        })?;
    let events: Vec<&workspace_events::RecordedEvent> = events.iter().map(|e| e.as_ref()).collect();
    Ok(Json(json!({ "events": events })).into_response())
}
