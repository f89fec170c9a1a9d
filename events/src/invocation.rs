//! Events of the invocation aggregate (subject `es.invocation.<id>`).
//!
//! Lifecycle: `invocation.queued` → `invocation.started` (an executor claimed it) →
//! `invocation.completed` (`succeeded` or `failed`). A request that policy refuses is recorded as
//! `invocation.denied`, one that fails argument validation as `invocation.rejected`; both are
//! the first and last event of their aggregate, and nothing runs.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::common::{ArtifactMeta, ArtifactRef, ErrorInfo, LogLine};
use crate::contract::{DecodeError, EventContract, decode_payload, encode_payload};
use crate::envelope::AggregateType;
use crate::raw_json::RawJson;

/// What was asked: carried by the first event of every invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRequest {
    /// Invocation id (`inv-…`).
    pub invocation_id: String,
    /// Session the tool runs in.
    pub session_id: String,
    /// Catalog name of the tool, e.g. `fs.read_file`.
    pub tool_name: String,
    /// Client idempotency key, scoped to (session, tool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Whether the caller approved a tool that requires approval.
    #[serde(default)]
    pub approved: bool,
    /// Tool arguments, inline when small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
    /// Tool arguments kept as an artifact when too large to travel inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_ref: Option<ArtifactRef>,
    /// When the request was accepted.
    #[serde(with = "crate::rfc3339")]
    pub requested_at: OffsetDateTime,
}

/// `invocation.queued` v1: the request passed validation and policy and waits for an executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationQueued {
    /// The request. Shared: the events, commands and states that carry it copy a pointer,
    /// not the arguments.
    #[serde(flatten)]
    pub request: Arc<InvocationRequest>,
    /// The tool's timeout (`constraints.timeout_seconds`) at the time of the request.
    pub timeout_seconds: u64,
    /// If no executor has started it by then, it fails with `timeout`.
    #[serde(with = "crate::rfc3339")]
    pub start_deadline: OffsetDateTime,
}

/// `invocation.denied` v1 and `invocation.rejected` v1: the request was refused before anything
/// ran. Terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRefused {
    /// The request. Shared: the events, commands and states that carry it copy a pointer,
    /// not the arguments.
    #[serde(flatten)]
    pub request: Arc<InvocationRequest>,
    /// Why it was refused.
    pub error: ErrorInfo,
}

/// `invocation.started` v1: an executor claimed the invocation and runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationStarted {
    /// Which executor runs it.
    pub executor_id: String,
    /// When it started.
    #[serde(with = "crate::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The run ends with `timeout` at this instant at the latest.
    #[serde(with = "crate::rfc3339")]
    pub deadline: OffsetDateTime,
}

/// Terminal status of an invocation that was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationOutcome {
    /// The tool did what was asked.
    Succeeded,
    /// The tool ran and failed, timed out, or could not run.
    Failed,
    /// The tool refused the request for a policy reason it could only see at run time (a
    /// symlink escaping the workspace, a patch touching a path outside `allowed_paths`).
    Denied,
}

/// `invocation.completed` v1: the invocation reached its terminal state. Terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationCompleted {
    /// Succeeded, failed or denied.
    pub outcome: InvocationOutcome,
    /// Exit code: 0 for in-process tools, the process's code for commands, 124 on timeout, -1
    /// when nothing could be started.
    pub exit_code: i32,
    /// Run time in milliseconds.
    pub duration_ms: u64,
    /// Tool output, inline when small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<RawJson>,
    /// Tool output kept as the artifact `invocation-output.json` when too large to be inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<ArtifactRef>,
    /// Log lines, inline when small.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// Log lines kept as the artifact `invocation-logs.jsonl` when too large to be inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_ref: Option<ArtifactRef>,
    /// Artifacts stored for this invocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactMeta>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// When it finished.
    #[serde(with = "crate::rfc3339")]
    pub completed_at: OffsetDateTime,
}

/// Every event of the invocation aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum InvocationEvent {
    /// `invocation.queued`
    #[serde(rename = "invocation.queued")]
    Queued(InvocationQueued),
    /// `invocation.denied`: refused by policy, approval, quota or ownership (status `denied`).
    #[serde(rename = "invocation.denied")]
    Denied(InvocationRefused),
    /// `invocation.rejected`: arguments failed validation (status `failed`).
    #[serde(rename = "invocation.rejected")]
    Rejected(InvocationRefused),
    /// `invocation.started`
    #[serde(rename = "invocation.started")]
    Started(InvocationStarted),
    /// `invocation.completed`
    #[serde(rename = "invocation.completed")]
    Completed(Arc<InvocationCompleted>),
}

impl InvocationEvent {
    /// Event type name of `invocation.queued`.
    pub const QUEUED: &'static str = "invocation.queued";
    /// Event type name of `invocation.denied`.
    pub const DENIED: &'static str = "invocation.denied";
    /// Event type name of `invocation.rejected`.
    pub const REJECTED: &'static str = "invocation.rejected";
    /// Event type name of `invocation.started`.
    pub const STARTED: &'static str = "invocation.started";
    /// Event type name of `invocation.completed`.
    pub const COMPLETED: &'static str = "invocation.completed";
    /// Every invocation event type with its current schema version.
    pub const CURRENT_VERSIONS: [(&'static str, u32); 5] = [
        (Self::QUEUED, 1),
        (Self::DENIED, 1),
        (Self::REJECTED, 1),
        (Self::STARTED, 1),
        (Self::COMPLETED, 1),
    ];

    /// The request, when this is the first event of its aggregate.
    pub fn request(&self) -> Option<&InvocationRequest> {
        match self {
            InvocationEvent::Queued(q) => Some(q.request.as_ref()),
            InvocationEvent::Denied(r) | InvocationEvent::Rejected(r) => Some(r.request.as_ref()),
            InvocationEvent::Started(_) | InvocationEvent::Completed(_) => None,
        }
    }
}

impl EventContract for InvocationEvent {
    const AGGREGATE_TYPE: AggregateType = AggregateType::Invocation;

    fn event_type(&self) -> &'static str {
        match self {
            InvocationEvent::Queued(_) => Self::QUEUED,
            InvocationEvent::Denied(_) => Self::DENIED,
            InvocationEvent::Rejected(_) => Self::REJECTED,
            InvocationEvent::Started(_) => Self::STARTED,
            InvocationEvent::Completed(_) => Self::COMPLETED,
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn to_payload(&self) -> RawJson {
        match self {
            InvocationEvent::Queued(p) => encode_payload(p),
            InvocationEvent::Denied(p) | InvocationEvent::Rejected(p) => encode_payload(p),
            InvocationEvent::Started(p) => encode_payload(p),
            InvocationEvent::Completed(p) => encode_payload(p),
        }
    }

    fn decode(event_type: &str, version: u32, payload: &RawJson) -> Result<Self, DecodeError> {
        Ok(match event_type {
            Self::QUEUED => Self::Queued(decode_payload(event_type, version, 1, payload)?),
            Self::DENIED => Self::Denied(decode_payload(event_type, version, 1, payload)?),
            Self::REJECTED => Self::Rejected(decode_payload(event_type, version, 1, payload)?),
            Self::STARTED => Self::Started(decode_payload(event_type, version, 1, payload)?),
            Self::COMPLETED => Self::Completed(decode_payload(event_type, version, 1, payload)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

#[cfg(feature = "cqrs")]
impl cqrs_es::DomainEvent for InvocationEvent {
    fn event_type(&self) -> String {
        EventContract::event_type(self).to_owned()
    }

    fn event_version(&self) -> String {
        EventContract::schema_version(self).to_string()
    }
}
