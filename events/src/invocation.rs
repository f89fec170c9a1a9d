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
use crate::contract::{
    DecodeError, EventContract, decode_payload, encode_payload, written_payload,
};
use crate::envelope::AggregateType;
use crate::json::Object;
use crate::raw_json::RawJson;
use crate::status::InvocationStatus;

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

/// `invocation.completed` v2: the invocation reached its terminal state. Terminal.
///
/// v1 had `duration_ms` (whole milliseconds, rounded down) where v2 has `duration_ns`, and
/// always an `exit_code`; the v1 → v2 upcaster turns `duration_ms` into nanoseconds and keeps
/// the exit code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationCompleted {
    /// Succeeded, failed or denied.
    pub outcome: InvocationOutcome,
    /// Exit code, once the tool ran: the process's code for commands, 0 for in-process tools,
    /// 124 when the run timed out, -1 when the tool could not start its process. `null` when
    /// no exit is known: the tool never ran (its start deadline passed, its session closed,
    /// its runner was unavailable) or its outcome is unknown (`interrupted`).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Run time in nanoseconds, as measured (0 when the tool never ran).
    pub duration_ns: u64,
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
    /// Current schema version of `invocation.completed` (v2: `duration_ns`, nullable
    /// `exit_code`).
    pub const COMPLETED_VERSION: u32 = 2;
    /// Every invocation event type with its current schema version.
    pub const CURRENT_VERSIONS: [(&'static str, u32); 5] = [
        (Self::QUEUED, 1),
        (Self::DENIED, 1),
        (Self::REJECTED, 1),
        (Self::STARTED, 1),
        (Self::COMPLETED, Self::COMPLETED_VERSION),
    ];

    /// The event types after which nothing follows in an invocation's aggregate: those whose
    /// [`InvocationEvent::status`] is terminal.
    pub const TERMINAL_TYPES: [&'static str; 3] = [Self::DENIED, Self::REJECTED, Self::COMPLETED];

    /// The status the invocation has after this event.
    pub fn status(&self) -> InvocationStatus {
        match self {
            InvocationEvent::Queued(_) => InvocationStatus::Queued,
            InvocationEvent::Denied(_) => InvocationStatus::Denied,
            InvocationEvent::Rejected(_) => InvocationStatus::Failed,
            InvocationEvent::Started(_) => InvocationStatus::Running,
            InvocationEvent::Completed(c) => c.outcome.into(),
        }
    }

    /// The request, when this is the first event of its aggregate.
    pub fn request(&self) -> Option<&InvocationRequest> {
        match self {
            InvocationEvent::Queued(q) => Some(q.request.as_ref()),
            InvocationEvent::Denied(r) | InvocationEvent::Rejected(r) => Some(r.request.as_ref()),
            InvocationEvent::Started(_) | InvocationEvent::Completed(_) => None,
        }
    }
}

impl InvocationRequest {
    /// The fields of the request, in serde's order.
    fn write_fields(&self, o: &mut Object<'_>) {
        o.str("invocation_id", &self.invocation_id)
            .str("session_id", &self.session_id)
            .str("tool_name", &self.tool_name)
            .opt_str("correlation_id", self.correlation_id.as_deref())
            .bool("approved", self.approved);
        if let Some(args) = &self.args {
            o.serde("args", args);
        }
        if let Some(args_ref) = &self.args_ref {
            o.serde("args_ref", args_ref);
        }
        o.time("requested_at", &self.requested_at);
    }
}

impl InvocationQueued {
    /// Appends the payload's JSON: what serde writes for it, byte for byte.
    pub fn write_json(&self, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let mut o = Object::new(buf);
        self.request.write_fields(&mut o);
        o.u64("timeout_seconds", self.timeout_seconds)
            .time("start_deadline", &self.start_deadline);
        o.end()
    }
}

impl InvocationStarted {
    /// Appends the payload's JSON: what serde writes for it, byte for byte.
    pub fn write_json(&self, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let mut o = Object::new(buf);
        o.str("executor_id", &self.executor_id)
            .time("started_at", &self.started_at)
            .time("deadline", &self.deadline);
        o.end()
    }
}

impl InvocationOutcome {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationOutcome::Succeeded => "succeeded",
            InvocationOutcome::Failed => "failed",
            InvocationOutcome::Denied => "denied",
        }
    }
}

impl InvocationCompleted {
    /// Appends the payload's JSON: what serde writes for it, byte for byte.
    pub fn write_json(&self, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let mut o = Object::new(buf);
        o.str("outcome", self.outcome.as_str())
            .nullable_i64("exit_code", self.exit_code.map(i64::from))
            .u64("duration_ns", self.duration_ns);
        if let Some(output) = &self.output {
            o.raw("output", output.get());
        }
        if let Some(output_ref) = &self.output_ref {
            o.serde("output_ref", output_ref);
        }
        if !self.logs.is_empty() {
            o.array("logs", &self.logs, |buf, line| line.write_json(buf));
        }
        if let Some(logs_ref) = &self.logs_ref {
            o.serde("logs_ref", logs_ref);
        }
        if !self.artifacts.is_empty() {
            o.serde("artifacts", &self.artifacts);
        }
        if let Some(error) = &self.error {
            o.serde("error", error);
        }
        o.time("completed_at", &self.completed_at);
        o.end()
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
        match self {
            InvocationEvent::Completed(_) => Self::COMPLETED_VERSION,
            InvocationEvent::Queued(_)
            | InvocationEvent::Denied(_)
            | InvocationEvent::Rejected(_)
            | InvocationEvent::Started(_) => 1,
        }
    }

    fn to_payload(&self) -> RawJson {
        match self {
            // The events of every run are written by hand (what serde writes, tests say);
            // refusals, rarer, by serde.
            InvocationEvent::Queued(p) => written_payload(512, |buf| p.write_json(buf)),
            InvocationEvent::Denied(p) | InvocationEvent::Rejected(p) => encode_payload(p),
            InvocationEvent::Started(p) => written_payload(160, |buf| p.write_json(buf)),
            InvocationEvent::Completed(p) => {
                let output = p.output.as_ref().map_or(0, |o| o.get().len());
                written_payload(output + 512, |buf| p.write_json(buf))
            }
        }
    }

    fn decode(event_type: &str, version: u32, payload: &RawJson) -> Result<Self, DecodeError> {
        Ok(match event_type {
            Self::QUEUED => Self::Queued(decode_payload(event_type, version, 1, payload)?),
            Self::DENIED => Self::Denied(decode_payload(event_type, version, 1, payload)?),
            Self::REJECTED => Self::Rejected(decode_payload(event_type, version, 1, payload)?),
            Self::STARTED => Self::Started(decode_payload(event_type, version, 1, payload)?),
            Self::COMPLETED => Self::Completed(decode_payload(
                event_type,
                version,
                Self::COMPLETED_VERSION,
                payload,
            )?),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::LogChannel;
    use crate::json::tests::tricky_strings;

    fn at(i: usize) -> OffsetDateTime {
        // Whole seconds, and fractions with and without trailing zeros.
        let nanos = [0, 500_000_000, 123_456_789, 1][i % 4];
        OffsetDateTime::from_unix_timestamp_nanos(
            1_790_000_000_000_000_000 + i as i128 * 1_000_003 + nanos,
        )
        .unwrap()
    }

    fn written(write: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>) -> String {
        let mut buf = Vec::new();
        write(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn the_terminal_event_types_are_those_that_lead_to_a_terminal_status() {
        let request = Arc::new(InvocationRequest {
            invocation_id: "inv-1".into(),
            session_id: "session-1".into(),
            tool_name: "fs.stat".into(),
            correlation_id: None,
            approved: false,
            args: None,
            args_ref: None,
            requested_at: at(0),
        });
        let refused = InvocationRefused {
            request: request.clone(),
            error: ErrorInfo {
                code: crate::ErrorCode::PolicyDenied.into(),
                message: "no".into(),
                retryable: false,
            },
        };
        let completed = |outcome| {
            InvocationEvent::Completed(Arc::new(InvocationCompleted {
                outcome,
                exit_code: None,
                duration_ns: 0,
                output: None,
                output_ref: None,
                logs: Vec::new(),
                logs_ref: None,
                artifacts: Vec::new(),
                error: None,
                completed_at: at(1),
            }))
        };
        let events = [
            InvocationEvent::Queued(InvocationQueued {
                request,
                timeout_seconds: 1,
                start_deadline: at(1),
            }),
            InvocationEvent::Denied(refused.clone()),
            InvocationEvent::Rejected(refused),
            InvocationEvent::Started(InvocationStarted {
                executor_id: "e".into(),
                started_at: at(1),
                deadline: at(2),
            }),
            completed(InvocationOutcome::Succeeded),
            completed(InvocationOutcome::Failed),
            completed(InvocationOutcome::Denied),
        ];
        use crate::InvocationStatus as S;
        let statuses = events.each_ref().map(InvocationEvent::status);
        assert_eq!(
            statuses,
            [
                S::Queued,
                S::Denied,
                S::Failed,
                S::Running,
                S::Succeeded,
                S::Failed,
                S::Denied
            ]
        );
        for event in &events {
            assert_eq!(
                InvocationEvent::TERMINAL_TYPES.contains(&EventContract::event_type(event)),
                event.status().is_terminal(),
                "{event:?}"
            );
        }
    }

    #[test]
    fn payloads_written_by_hand_are_what_serde_writes() {
        let strings = tricky_strings();
        for (i, s) in strings.iter().enumerate() {
            let some = |k: usize| (i % k == 0).then(|| s.clone());
            let request = Arc::new(InvocationRequest {
                invocation_id: format!("inv-{s}"),
                session_id: s.clone(),
                tool_name: "fs.read_file".into(),
                correlation_id: some(2),
                approved: i % 3 == 0,
                args: (i % 4 != 0)
                    .then(|| serde_json::json!({"path": s, "n": i, "deep": {"x": [s]}})),
                args_ref: (i % 5 == 0).then(|| ArtifactRef {
                    artifact_id: format!("artifact-{i}"),
                    sha256: s.clone(),
                    size_bytes: i as u64,
                }),
                requested_at: at(i),
            });
            let queued = InvocationQueued {
                request,
                timeout_seconds: i as u64 * 7,
                start_deadline: at(i + 1),
            };
            assert_eq!(
                written(|b| queued.write_json(b)),
                serde_json::to_string(&queued).unwrap()
            );
            let started = InvocationStarted {
                executor_id: s.clone(),
                started_at: at(i + 2),
                deadline: at(i + 3),
            };
            assert_eq!(
                written(|b| started.write_json(b)),
                serde_json::to_string(&started).unwrap()
            );
            let line = |k: usize| LogLine {
                at: at(i + k),
                channel: if k.is_multiple_of(2) {
                    LogChannel::Stdout
                } else {
                    LogChannel::Stderr
                },
                message: s.clone(),
            };
            let completed = InvocationCompleted {
                outcome: [
                    InvocationOutcome::Succeeded,
                    InvocationOutcome::Failed,
                    InvocationOutcome::Denied,
                ][i % 3],
                exit_code: [Some(0), Some(-1), None, Some(124), Some(i32::MIN)][i % 5],
                duration_ns: [0, 1_260_001, u64::MAX][i % 3],
                output: (i % 2 == 0).then(|| serde_json::json!({"content": s, "i": i}).into()),
                output_ref: some(3).map(|s| ArtifactRef {
                    artifact_id: s,
                    sha256: "ab".into(),
                    size_bytes: 3,
                }),
                logs: (0..i % 3).map(line).collect(),
                logs_ref: some(4).map(|s| ArtifactRef {
                    artifact_id: "artifact-l".into(),
                    sha256: s,
                    size_bytes: 9,
                }),
                artifacts: (0..i % 2)
                    .map(|k| ArtifactMeta {
                        id: format!("artifact-{k}"),
                        name: s.clone(),
                        content_type: "text/plain".into(),
                        size_bytes: 1,
                        sha256: "cd".into(),
                        created_at: at(k),
                    })
                    .collect(),
                error: some(5).map(|s| ErrorInfo {
                    code: crate::ErrorCode::Timeout.into(),
                    message: s,
                    retryable: i % 2 == 0,
                }),
                completed_at: at(i + 4),
            };
            assert_eq!(
                written(|b| completed.write_json(b)),
                serde_json::to_string(&completed).unwrap()
            );
            // The event's payload is that text, and decodes back to the event.
            let event = InvocationEvent::Completed(Arc::new(completed.clone()));
            let payload = event.to_payload();
            assert_eq!(payload.get(), serde_json::to_string(&completed).unwrap());
            assert_eq!(
                InvocationEvent::decode(InvocationEvent::COMPLETED, 2, &payload).unwrap(),
                event
            );
            let event = InvocationEvent::Queued(queued.clone());
            assert_eq!(
                InvocationEvent::decode(InvocationEvent::QUEUED, 1, &event.to_payload()).unwrap(),
                event
            );
        }
    }
}
