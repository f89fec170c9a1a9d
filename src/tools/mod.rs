//! The tool catalog and one module per tool family.
//!
//! A [`Tool`] is written with typed arguments and output ([`tool`]); the catalog holds it
//! type-erased ([`ErasedTool`]) with its [`ToolSpec`] (served by `GET /v1/sessions/{id}/tools`),
//! whose schemas are derived from the types. Tools run inside an executor, after their
//! arguments parsed and policy allowed them; they talk to the workspace only through the
//! session's runner, never the host filesystem.

pub mod args;
pub mod artifact;
pub mod catalog;
pub mod catalog_docs;
pub mod exec;
pub mod fs;
pub mod git;
pub mod k8s;
pub mod repo;
pub mod tool;
pub mod workspace;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use workspace_events::{LogLine, Principal, RawJson};

use crate::error_code::ErrorCode;
use crate::ids::SessionId;
use crate::runner::protocol::{Reply, Request, RunnerErrorCode};
use crate::runner::{RunnerError, SessionRunner};

pub use args::{PathArg, WorkspacePath};
pub use catalog::Catalog;
pub use tool::{Completed, ErasedTool, Metadata, Tool};

/// Who may call a tool: `workspace`/`repo` anyone, `cluster`/`external` need a privileged role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The repository.
    Repo,
    /// The workspace filesystem.
    Workspace,
    /// A Kubernetes cluster.
    Cluster,
    /// Services outside the workspace.
    External,
}

/// What a tool changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SideEffects {
    /// Nothing.
    None,
    /// Something that can be undone.
    Reversible,
    /// Something that cannot be undone.
    Irreversible,
}

/// Risk class; `high` needs `platform_admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
}

/// Whether running a tool twice with the same arguments is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Idempotency {
    /// Same result, no extra effect.
    Guaranteed,
    /// Usually safe.
    BestEffort,
    /// Not safe.
    None,
}

/// Execution limits of a tool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Constraints {
    /// Enforced server-side: the run is killed (process tree included) after this long.
    pub timeout_seconds: u64,
    /// Informational.
    pub max_retries: u32,
    /// Output beyond this many KiB is stored as an artifact and cut inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_limit_kb: Option<u64>,
}

/// An argument that names a workspace path (policy rule 4), derived from the input schema
/// (a [`WorkspacePath`] member). Informational: the policy reads the paths from the typed
/// arguments themselves ([`args::workspace_paths`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathField {
    /// Dot-separated field path into the arguments.
    pub field: String,
    /// Whether the field is an array of paths.
    pub multi: bool,
    /// Always true: paths are workspace-relative.
    pub workspace_relative: bool,
    /// Whether the tool writes (creates, replaces, moves or removes) what the path names. Such
    /// paths must not be protected (`.git` at any depth, see [`crate::policy::paths`]).
    pub writes: bool,
}

/// A string argument with rules (policy rule 5).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ArgField {
    /// Dot-separated field path.
    pub field: &'static str,
    /// Whether the field is an array of strings.
    pub multi: bool,
    /// Maximum array length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    /// Maximum length of each value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Values must be one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_values: Vec<&'static str>,
    /// Values must start with one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_prefix: Vec<&'static str>,
    /// Values must not start with any of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denied_prefix: Vec<&'static str>,
    /// Values must not contain any of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_characters: Vec<&'static str>,
}

/// Declarative policy metadata of a tool.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PolicyMetadata {
    /// Path arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path_fields: Vec<PathField>,
    /// String arguments with rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arg_fields: Vec<ArgField>,
}

/// Trace and span names of a tool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observability {
    /// Always `workspace.tools`.
    pub trace_name: &'static str,
    /// The tool name.
    pub span_name: &'static str,
}

/// A tool's metadata, as served by the catalog endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    /// Catalog name (`fs.read_file`).
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// JSON Schema of the arguments, derived from the tool's `Args` (parsed before policy).
    pub input_schema: Value,
    /// JSON Schema of the output, derived from the tool's `Output`.
    pub output_schema: Value,
    /// Scope.
    pub scope: Scope,
    /// Side effects.
    pub side_effects: SideEffects,
    /// Risk.
    pub risk_level: RiskLevel,
    /// Whether `"approved": true` is required.
    pub requires_approval: bool,
    /// Idempotency.
    pub idempotency: Idempotency,
    /// Whether the tool runs code the repository chose, by design: a build or test tool runs
    /// the repository's scripts. Every other tool (all `fs.*` tools) never does: the git it
    /// runs is hardened ([`git`]) so no hook, filter or driver of the repository runs.
    pub runs_repository_code: bool,
    /// Limits.
    pub constraints: Constraints,
    /// Preconditions, informational.
    pub preconditions: Vec<&'static str>,
    /// Postconditions, informational.
    pub postconditions: Vec<&'static str>,
    /// `low`, `medium` or `high`.
    pub cost_hint: &'static str,
    /// Policy metadata.
    pub policy: PolicyMetadata,
    /// Trace and span names.
    pub observability: Observability,
    /// Example argument objects.
    pub examples: Vec<Value>,
}

/// The session facts a tool and policy may use.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// Session id.
    pub id: SessionId,
    /// Owner.
    pub principal: Principal,
    /// Workspace-relative allowlist (`["."]` = everything).
    pub allowed_paths: Vec<String>,
    /// Session metadata.
    pub metadata: BTreeMap<String, String>,
    /// Where the session's tools run, once provisioned (`kind` `local` or `kubernetes`, and
    /// for `kubernetes` the runner pod's namespace): the `k8s.*` tools' gating and namespace.
    pub runtime: Option<workspace_events::RuntimeRef>,
}

/// Everything a tool's run gets besides its arguments.
#[derive(Clone)]
pub struct ToolContext {
    /// The session.
    pub session: Arc<SessionContext>,
    /// The session's runner.
    pub runner: Arc<dyn SessionRunner>,
    /// The run must be over by then (the tool's `timeout_seconds` from its start).
    pub deadline: Instant,
    /// Where the output of the programs the tool runs goes while they run ([`exec`]).
    pub output: crate::live::OutputSink,
    /// The Kubernetes API, for the `k8s.*` tools: set by an executor that has a client, for
    /// sessions whose runtime is `kubernetes` only.
    pub kube: Option<kube::Client>,
}

/// A file a tool wants stored as an artifact of the invocation.
#[derive(Debug, Clone)]
pub struct NewArtifact {
    /// File name (no directories).
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What a successful run returns, the output encoded ([`Completed`] with its types erased).
#[derive(Debug, Clone, Default)]
pub struct ToolSuccess {
    /// The output object (matches the tool's output schema), encoded once.
    pub output: RawJson,
    /// Log lines.
    pub logs: Vec<LogLine>,
    /// Artifacts to store.
    pub artifacts: Vec<NewArtifact>,
    /// 0 for in-process work, the process's exit code for commands.
    pub exit_code: i32,
}

/// What a failed run returns: partial output and logs are kept.
#[derive(Debug, Clone)]
pub struct ToolFailure {
    /// Stable code (`not_found`, `policy_denied`, `execution_failed`, `timeout`, ...).
    pub code: ErrorCode,
    /// Message with workspace-relative paths only.
    pub message: String,
    /// Partial output, if any.
    pub output: Option<RawJson>,
    /// Log lines produced before the failure.
    pub logs: Vec<LogLine>,
    /// Artifacts produced before the failure.
    pub artifacts: Vec<NewArtifact>,
    /// Exit code (124 on timeout, -1 when nothing ran).
    pub exit_code: i32,
}

impl ToolFailure {
    /// The same failure keeping `output` as its partial output.
    pub fn with_output<O: Serialize>(mut self, output: &O) -> Self {
        self.output = RawJson::encode(output).ok();
        self
    }

    /// A failure with only a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            output: None,
            logs: Vec::new(),
            artifacts: Vec::new(),
            exit_code: if code == ErrorCode::Timeout { 124 } else { -1 },
        }
    }
}

/// The future an erased tool's run returns.
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<ToolSuccess, ToolFailure>> + Send>>;

/// A `stdout` log line stamped now: the one-line summary most handlers log.
pub fn stdout_line(message: impl Into<String>) -> LogLine {
    LogLine {
        at: time::OffsetDateTime::now_utc(),
        channel: workspace_events::LogChannel::Stdout,
        message: message.into(),
    }
}

/// Sends one request to the session's runner, waiting at most until the invocation's deadline.
///
/// Transport failures become [`ToolFailure`]s: no answer in time is `timeout` (exit code 124);
/// anything else is `unavailable` with a fixed message (the cause, which may name host paths,
/// is logged, never returned). A [`Reply::Error`] is returned as is: its meaning depends on the
/// tool (see [`runner_failure`] for the usual mapping).
pub async fn call_runner(ctx: &ToolContext, request: Request) -> Result<Reply, ToolFailure> {
    let remaining = ctx.deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(ToolFailure::new(
            ErrorCode::Timeout,
            "the tool's timeout expired",
        ));
    }
    ctx.runner
        .call(request, remaining)
        .await
        .map_err(|e| runner_error(ctx, e))
}

/// A runner that did not answer in time is `timeout` (exit code 124); one that could not be
/// reached `unavailable` with a fixed message (the cause, which may name host paths, is
/// logged, never returned).
pub fn runner_error(ctx: &ToolContext, error: RunnerError) -> ToolFailure {
    match error {
        RunnerError::Timeout => ToolFailure::new(ErrorCode::Timeout, "the tool's timeout expired"),
        e => {
            tracing::warn!(session_id = %ctx.session.id, error = %e, "runner call failed");
            ToolFailure::new(ErrorCode::Unavailable, "session runner unavailable")
        }
    }
}

/// The usual mapping of a runner error onto the API's codes: `not_found`, `policy_denied` and
/// `invalid_argument` keep their meaning; an existing destination, an I/O failure and a program
/// that could not start are `execution_failed`. The runner's message names workspace-relative
/// paths only, so it is passed through.
pub fn runner_failure(code: RunnerErrorCode, message: String) -> ToolFailure {
    let code = match code {
        RunnerErrorCode::NotFound => ErrorCode::NotFound,
        RunnerErrorCode::PolicyDenied => ErrorCode::PolicyDenied,
        RunnerErrorCode::InvalidArgument => ErrorCode::InvalidArgument,
        RunnerErrorCode::AlreadyExists | RunnerErrorCode::Io | RunnerErrorCode::SpawnFailed => {
            ErrorCode::ExecutionFailed
        }
    };
    ToolFailure::new(code, message)
}
