//! Events of the session aggregate (subject `es.session.<id>`).
//!
//! Lifecycle: `session.created` (status `provisioning`) → `session.provisioned` (`ready`) or
//! `session.provisioning_failed` (`failed`) → `session.closed` (`closed` or `expired`).
//! `session.runner_removed` (a Kubernetes runner pod deleted by the pod janitor) may come at
//! any point and never changes the status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::common::{ErrorInfo, Principal};
use crate::contract::{DecodeError, EventContract, decode_payload, encode_payload};
use crate::envelope::AggregateType;
use crate::raw_json::RawJson;
use crate::status::SessionStatus;

/// Where the workspace's initial content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkspaceSource {
    /// An empty workspace.
    Empty,
    /// A copy of a directory on the service host.
    Copy {
        /// Absolute host path that was copied.
        source_repo_path: String,
    },
    /// A `git clone` of a repository.
    Git {
        /// Repository URL (never carries credentials).
        repo_url: String,
        /// Branch or tag to check out; the default branch when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repo_ref: Option<String>,
    },
}

/// `session.created` v1: a session was requested and accepted; provisioning starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCreated {
    /// Session id.
    pub session_id: String,
    /// Owner of the session; its roles drive policy for every invocation.
    pub principal: Principal,
    /// Initial content of the workspace.
    pub source: WorkspaceSource,
    /// Workspace-relative paths tools may touch (`["."]` = the whole workspace).
    pub allowed_paths: Vec<String>,
    /// Caller metadata (allowlists, git identity, ...); secret-looking values are redacted.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the session was created.
    #[serde(with = "crate::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the session expires and is closed.
    #[serde(with = "crate::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Where and how a session's tools run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeRef {
    /// Runtime kind: `local` (a sandbox on the service host) or `kubernetes`.
    pub kind: String,
    /// Isolation used: `bubblewrap`, `unsandboxed` or `pod`.
    pub isolation: String,
    /// Working directory of tools inside the runtime (`/workspace`).
    pub workdir: String,
    /// Kubernetes namespace of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kubernetes runner pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
}

/// `session.provisioned` v1: the workspace holds its content and its runner is available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionProvisioned {
    /// The runtime the session's tools run in.
    pub runtime: RuntimeRef,
    /// When provisioning finished.
    #[serde(with = "crate::rfc3339")]
    pub provisioned_at: OffsetDateTime,
}

/// `session.provisioning_failed` v1: the workspace could not be prepared; terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionProvisioningFailed {
    /// Why (e.g. `execution_failed` for a failed clone, `unavailable` when no sandbox exists).
    pub error: ErrorInfo,
    /// When provisioning gave up.
    #[serde(with = "crate::rfc3339")]
    pub failed_at: OffsetDateTime,
}

/// Why a session was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// A caller asked for it (`DELETE /v1/sessions/{id}`).
    Requested,
    /// `expires_at` passed.
    Expired,
}

/// `session.closed` v1: the session is over; its sandbox and workspace are removed. Terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClosed {
    /// Why the session was closed.
    pub reason: CloseReason,
    /// When it was closed.
    #[serde(with = "crate::rfc3339")]
    pub closed_at: OffsetDateTime,
}

/// Why the pod janitor deleted a session's runner pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerRemovedReason {
    /// The session was closed on request.
    SessionClosed,
    /// The session expired (closed at its expiry, or past `expires_at`).
    SessionExpired,
    /// The session's provisioning failed.
    SessionFailed,
    /// No session view holds the pod's session (never created here, or past its retention),
    /// for longer than the missing-session grace.
    SessionNotFound,
    /// The pod ended (`Succeeded`, `Failed`, `Unknown`) longer ago than the terminal-pod TTL.
    TerminalPodTtlExpired,
}

/// `session.runner_removed` v1: the pod janitor deleted a runner pod of the session. Written
/// once per deletion that the API server accepted (a pod already gone or already deleted by
/// another replica writes nothing); it changes no status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRunnerRemoved {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod_name: String,
    /// The pod's uid (the deletion was conditional on it).
    pub pod_uid: String,
    /// The pod's phase when it was deleted (`Pending`, `Running`, `Succeeded`, `Failed`,
    /// `Unknown`).
    pub phase: String,
    /// Why it was deleted.
    pub reason: RunnerRemovedReason,
    /// When the deletion was accepted.
    #[serde(with = "crate::rfc3339")]
    pub removed_at: OffsetDateTime,
}

/// Every event of the session aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum SessionEvent {
    /// `session.created`
    #[serde(rename = "session.created")]
    Created(SessionCreated),
    /// `session.provisioned`
    #[serde(rename = "session.provisioned")]
    Provisioned(SessionProvisioned),
    /// `session.provisioning_failed`
    #[serde(rename = "session.provisioning_failed")]
    ProvisioningFailed(SessionProvisioningFailed),
    /// `session.closed`
    #[serde(rename = "session.closed")]
    Closed(SessionClosed),
    /// `session.runner_removed`
    #[serde(rename = "session.runner_removed")]
    RunnerRemoved(SessionRunnerRemoved),
}

impl SessionEvent {
    /// Event type name of `session.created`.
    pub const CREATED: &'static str = "session.created";
    /// Event type name of `session.provisioned`.
    pub const PROVISIONED: &'static str = "session.provisioned";
    /// Event type name of `session.provisioning_failed`.
    pub const PROVISIONING_FAILED: &'static str = "session.provisioning_failed";
    /// Event type name of `session.closed`.
    pub const CLOSED: &'static str = "session.closed";
    /// Event type name of `session.runner_removed`.
    pub const RUNNER_REMOVED: &'static str = "session.runner_removed";
    /// Every session event type with its current schema version.
    pub const CURRENT_VERSIONS: [(&'static str, u32); 5] = [
        (Self::CREATED, 1),
        (Self::PROVISIONED, 1),
        (Self::PROVISIONING_FAILED, 1),
        (Self::CLOSED, 1),
        (Self::RUNNER_REMOVED, 1),
    ];

    /// The status the session has after this event; `None` for an event that leaves the
    /// status as it was (`session.runner_removed`).
    pub fn status(&self) -> Option<SessionStatus> {
        Some(match self {
            SessionEvent::Created(_) => SessionStatus::Provisioning,
            SessionEvent::Provisioned(_) => SessionStatus::Ready,
            SessionEvent::ProvisioningFailed(_) => SessionStatus::Failed,
            SessionEvent::Closed(c) => match c.reason {
                CloseReason::Requested => SessionStatus::Closed,
                CloseReason::Expired => SessionStatus::Expired,
            },
            SessionEvent::RunnerRemoved(_) => return None,
        })
    }
}

impl EventContract for SessionEvent {
    const AGGREGATE_TYPE: AggregateType = AggregateType::Session;

    fn event_type(&self) -> &'static str {
        match self {
            SessionEvent::Created(_) => Self::CREATED,
            SessionEvent::Provisioned(_) => Self::PROVISIONED,
            SessionEvent::ProvisioningFailed(_) => Self::PROVISIONING_FAILED,
            SessionEvent::Closed(_) => Self::CLOSED,
            SessionEvent::RunnerRemoved(_) => Self::RUNNER_REMOVED,
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn to_payload(&self) -> RawJson {
        match self {
            SessionEvent::Created(p) => encode_payload(p),
            SessionEvent::Provisioned(p) => encode_payload(p),
            SessionEvent::ProvisioningFailed(p) => encode_payload(p),
            SessionEvent::Closed(p) => encode_payload(p),
            SessionEvent::RunnerRemoved(p) => encode_payload(p),
        }
    }

    fn decode(event_type: &str, version: u32, payload: &RawJson) -> Result<Self, DecodeError> {
        Ok(match event_type {
            Self::CREATED => Self::Created(decode_payload(event_type, version, 1, payload)?),
            Self::PROVISIONED => {
                Self::Provisioned(decode_payload(event_type, version, 1, payload)?)
            }
            Self::PROVISIONING_FAILED => {
                Self::ProvisioningFailed(decode_payload(event_type, version, 1, payload)?)
            }
            Self::CLOSED => Self::Closed(decode_payload(event_type, version, 1, payload)?),
            Self::RUNNER_REMOVED => {
                Self::RunnerRemoved(decode_payload(event_type, version, 1, payload)?)
            }
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

#[cfg(feature = "cqrs")]
impl cqrs_es::DomainEvent for SessionEvent {
    fn event_type(&self) -> String {
        EventContract::event_type(self).to_owned()
    }

    fn event_version(&self) -> String {
        EventContract::schema_version(self).to_string()
    }
}
