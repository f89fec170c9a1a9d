//! The view types: what `GET /v1/sessions/{id}` and `GET /v1/invocations/{id}` return.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use workspace_events::{
    ArtifactMeta, ErrorInfo, InvocationStatus, LogLine, Principal, RawJson, RuntimeRef,
    SessionStatus,
};

/// A session as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// `provisioning`, `ready`, `failed`, `closed` or `expired`.
    pub status: SessionStatus,
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
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
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

impl SessionView {
    /// Whether the session has ended ([`SessionStatus::is_terminal`]).
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
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
    pub status: InvocationStatus,
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
    /// Run time in whole milliseconds, rounded down (0 until complete): `duration_ns / 10^6`.
    pub duration_ms: u64,
    /// Run time in nanoseconds, as measured (0 until complete).
    #[serde(default)]
    pub duration_ns: u64,
    /// Always `workspace.tools`.
    pub trace_name: String,
    /// The tool name.
    pub span_name: String,
    /// Exit code of the run, once the tool ran (the process's code for commands, 0 for
    /// in-process tools, 124 after a timeout, -1 when its process could not start). `null`
    /// while queued or running, when it never ran (denied, rejected, failed before starting)
    /// and when its outcome is unknown (`interrupted`).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Output, when small enough to be inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<RawJson>,
    /// Artifact id holding the full output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<String>,
    /// Inline log lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// Artifact id holding the full logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_ref: Option<String>,
    /// Artifacts of the invocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactMeta>,
    /// Why it failed or was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Aggregate version this view reflects.
    pub version: u64,
}

impl InvocationView {
    /// Appends the view's JSON: what serde writes for it, byte for byte (a test compares the two
    /// over varied views), written by [`workspace_events::json`] for the invoke answer.
    pub fn write_json(&self, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        use workspace_events::json::Object;
        let mut o = Object::new(buf);
        o.str("id", &self.id)
            .str("session_id", &self.session_id)
            .str("tool_name", &self.tool_name)
            .opt_str("correlation_id", self.correlation_id.as_deref())
            .str("status", self.status.as_str())
            .bool("approved", self.approved)
            .time("started_at", &self.started_at)
            .opt_time("run_started_at", self.run_started_at.as_ref())
            .opt_time("completed_at", self.completed_at.as_ref())
            .u64("duration_ms", self.duration_ms)
            .u64("duration_ns", self.duration_ns)
            .str("trace_name", &self.trace_name)
            .str("span_name", &self.span_name)
            .nullable_i64("exit_code", self.exit_code.map(i64::from));
        if let Some(output) = &self.output {
            o.raw("output", output.get());
        }
        o.opt_str("output_ref", self.output_ref.as_deref());
        if !self.logs.is_empty() {
            o.array("logs", &self.logs, |buf, line| line.write_json(buf));
        }
        o.opt_str("logs_ref", self.logs_ref.as_deref());
        if !self.artifacts.is_empty() {
            o.serde("artifacts", &self.artifacts);
        }
        if let Some(error) = &self.error {
            o.serde("error", error);
        }
        o.u64("version", self.version);
        o.end()
    }

    /// Whether the invocation reached a terminal state ([`InvocationStatus::is_terminal`]).
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use workspace_events::{
        ArtifactMeta, ErrorCode, ErrorInfo, InvocationStatus, LogChannel, LogLine,
    };

    use super::{InvocationView, SessionView};
    use workspace_events::{Code, SessionStatus};

    fn at(i: usize) -> OffsetDateTime {
        let nanos = [0, 250_000_000, 987_654_321][i % 3];
        OffsetDateTime::from_unix_timestamp_nanos(
            1_790_000_000_000_000_000 + i as i128 * 1_000_000_007 + nanos,
        )
        .unwrap()
    }

    #[test]
    fn a_view_written_by_hand_is_what_serde_writes() {
        let strings = [
            "",
            "plain",
            "quote \" and backslash \\",
            "control \u{0}\u{1f}\n\t\r\u{8}\u{c}",
            "ünïcode 😀 \u{2028}",
            "a somewhat longer string that spans several eight-byte words without escapes",
        ];
        for i in 0..60 {
            let s = strings[i % strings.len()].to_owned();
            let some = |k: usize| (i % k == 0).then(|| s.clone());
            let view = InvocationView {
                id: format!("inv-{i}"),
                session_id: s.clone(),
                tool_name: "fs.read_file".into(),
                correlation_id: some(2),
                status: InvocationStatus::ALL[i % 5],
                approved: i % 3 == 0,
                started_at: at(i),
                run_started_at: (i % 4 != 0).then(|| at(i + 1)),
                completed_at: (i % 5 >= 2).then(|| at(i + 2)),
                duration_ms: i as u64 * 13,
                duration_ns: i as u64 * 13_000_017,
                trace_name: "workspace.tools".into(),
                span_name: s.clone(),
                exit_code: [Some(0), Some(1), None, Some(124), Some(-1)][i % 5],
                output: (i % 2 == 0)
                    .then(|| serde_json::json!({"content": s, "n": i, "ok": true}).into()),
                output_ref: some(3),
                logs: (0..i % 3)
                    .map(|k| LogLine {
                        at: at(k),
                        channel: if k == 0 {
                            LogChannel::Stdout
                        } else {
                            LogChannel::Stderr
                        },
                        message: s.clone(),
                    })
                    .collect(),
                logs_ref: some(4),
                artifacts: (0..i % 2)
                    .map(|k| ArtifactMeta {
                        id: format!("artifact-{k}"),
                        name: s.clone(),
                        content_type: "application/json".into(),
                        size_bytes: 7,
                        sha256: "ef".into(),
                        created_at: at(k),
                    })
                    .collect(),
                error: some(5).map(|s| ErrorInfo {
                    code: if i % 2 == 0 {
                        ErrorCode::NotFound.into()
                    } else {
                        workspace_events::Code::parse("a_code_of_a_newer_build")
                    },
                    message: s,
                    retryable: i % 2 == 1,
                }),
                version: i as u64,
            };
            // A store keeps views as this JSON: it reads back as the same view.
            let back: InvocationView =
                serde_json::from_str(&serde_json::to_string(&view).unwrap()).unwrap();
            assert_eq!(back, view);
            let mut ours = Vec::new();
            view.write_json(&mut ours).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&view).unwrap()
            );
        }
    }

    /// Views as a build with string statuses stored them (Valkey keeps views as JSON): each
    /// reads with its typed status and code and writes back byte for byte.
    #[test]
    fn a_view_stored_by_an_earlier_build_reads_back_and_writes_the_same_json() {
        let invocations = [
            (
                r#"{"id":"inv-1","session_id":"session-1","tool_name":"fs.stat","status":"denied","approved":false,"started_at":"2026-11-23T10:00:01Z","completed_at":"2026-11-23T10:00:01Z","duration_ms":0,"duration_ns":0,"trace_name":"workspace.tools","span_name":"fs.stat","exit_code":null,"error":{"code":"policy_denied","message":"no","retryable":false},"version":1}"#,
                InvocationStatus::Denied,
                Some(Code::Known(ErrorCode::PolicyDenied)),
            ),
            (
                r#"{"id":"inv-2","session_id":"session-1","tool_name":"fs.stat","correlation_id":"k","status":"running","approved":true,"started_at":"2026-11-23T10:00:01Z","run_started_at":"2026-11-23T10:00:02.5Z","duration_ms":0,"duration_ns":0,"trace_name":"workspace.tools","span_name":"fs.stat","exit_code":null,"version":2}"#,
                InvocationStatus::Running,
                None,
            ),
            (
                r#"{"id":"inv-3","session_id":"session-1","tool_name":"fs.stat","status":"failed","approved":false,"started_at":"2026-11-23T10:00:01Z","completed_at":"2026-11-23T10:00:03Z","duration_ms":0,"duration_ns":0,"trace_name":"workspace.tools","span_name":"fs.stat","exit_code":null,"error":{"code":"quota_exhausted","message":"a newer build's code","retryable":true},"version":2}"#,
                InvocationStatus::Failed,
                Some(Code::parse("quota_exhausted")),
            ),
        ];
        for (json, status, code) in invocations {
            let view: InvocationView = serde_json::from_str(json).unwrap();
            assert_eq!(view.status, status, "{json}");
            assert_eq!(view.error.as_ref().map(|e| e.code.clone()), code, "{json}");
            assert_eq!(serde_json::to_string(&view).unwrap(), json);
            let mut ours = Vec::new();
            view.write_json(&mut ours).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), json);
        }
        let sessions = [
            (
                r#"{"id":"session-1","status":"failed","workspace_path":"/workspace","allowed_paths":["."],"principal":{"tenant_id":"t","actor_id":"a","roles":[]},"created_at":"2026-11-23T10:00:00Z","expires_at":"2026-11-23T11:00:00Z","failure":{"code":"execution_failed","message":"clone failed","retryable":false},"version":2}"#,
                SessionStatus::Failed,
            ),
            (
                r#"{"id":"session-2","status":"expired","workspace_path":"/workspace","allowed_paths":["src"],"principal":{"tenant_id":"t","actor_id":"a","roles":["developer"]},"created_at":"2026-11-23T10:00:00Z","expires_at":"2026-11-23T11:00:00Z","closed_at":"2026-11-23T11:00:00Z","version":3}"#,
                SessionStatus::Expired,
            ),
        ];
        for (json, status) in sessions {
            let view: SessionView = serde_json::from_str(json).unwrap();
            assert_eq!(view.status, status, "{json}");
            assert!(view.is_terminal());
            assert_eq!(serde_json::to_string(&view).unwrap(), json);
        }
    }
}
