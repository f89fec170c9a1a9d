//! The view types: what `GET /v1/sessions/{id}` and `GET /v1/invocations/{id}` return.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use workspace_events::{ArtifactMeta, ErrorInfo, LogLine, Principal, RawJson, RuntimeRef};

/// A session as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// `provisioning`, `ready`, `failed`, `closed` or `expired`.
    pub status: String,
    /// Where tools see the workspace (inside the sandbox); never a host path.
    pub workspace_path: String,
    /// Where tools run, once provisioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRef>,
    /// Repository cloned into the workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// Branch or tag cloned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo_ref: Option<String>,
    /// Host directory copied into the workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_repo_path: Option<String>,
    /// Workspace-relative allowlist.
    pub allowed_paths: Vec<String>,
    /// Owner.
    pub principal: Principal,
    /// Caller metadata (secret-looking values redacted).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Creation time.
    #[serde(with = "workspace_events::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expiry time.
    #[serde(with = "workspace_events::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was closed or expired.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "workspace_events::rfc3339::option"
    )]
    pub closed_at: Option<OffsetDateTime>,
    /// Why provisioning failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<ErrorInfo>,
    /// Aggregate version this view reflects.
    pub version: u64,
}

/// An invocation as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationView {
    /// Invocation id.
    pub id: String,
    /// Session id.
    pub session_id: String,
    /// Tool name.
    pub tool_name: String,
    /// Client idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `denied`.
    pub status: String,
    /// Whether the caller approved it.
    pub approved: bool,
    /// When the request was accepted.
    #[serde(with = "workspace_events::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When an executor started running it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "workspace_events::rfc3339::option"
    )]
    pub run_started_at: Option<OffsetDateTime>,
    /// When it reached its terminal state.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "workspace_events::rfc3339::option"
    )]
    pub completed_at: Option<OffsetDateTime>,
    /// Run time in milliseconds (0 until complete).
    pub duration_ms: u64,
    /// Always `workspace.tools`.
    pub trace_name: String,
    /// The tool name.
    pub span_name: String,
    /// Exit code of the run (0 for in-process tools, 124 after a timeout).
    pub exit_code: i32,
    /// Output, when small enough to be inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<RawJson>,
    /// Artifact id holding the full output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<String>,
    /// Inline log lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// Artifact id holding the full logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_ref: Option<String>,
    /// Artifacts of the invocation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactMeta>,
    /// Why it failed or was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Aggregate version this view reflects.
    pub version: u64,
}

impl InvocationView {
    /// Whether the invocation reached a terminal state.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "denied")
    }
}
