//! The `fs.*` family: files and directories of the session's workspace.
//!
//! One file per tool, its arguments, output, metadata and run side by side (`read_file.rs` is
//! `fs.read_file`); the ten tools of the original catalog keep its metadata (scope, risk,
//! approval, side effects, idempotency, timeout, arguments and path fields), and `fs.edit`,
//! `fs.insert`, `fs.glob` and `fs.read_lines` come from its later version. This module holds
//! what they share: the family's metadata defaults, limits, and the runner calls several make.
//! `tests` holds the end-to-end tests against a real in-process runner.
//!
//! The family never touches the host filesystem: every operation is a runner request, confined
//! by the runner to the workspace. Every path a tool sends is first resolved against the
//! session's `allowed_paths` ([`resolve`]), as the policy did, because a defaulted path and the
//! paths inside a diff are only known here. Numeric caps the original applied silently (list
//! 1000 entries, read 1 MiB, search 2000 matches) stay silent clamps ([`Count`](super::args::Count))
//! rather than schema maxima, so a caller relying on the clamp is not broken.

use sha2::{Digest, Sha256};

use crate::error_code::ErrorCode;
use crate::runner::protocol::{Bytes, Reply, Request};
use crate::tools::args::{Access, WorkspacePath};
use crate::tools::catalog::Registry;
use crate::tools::{
    Constraints, Idempotency, Metadata, RiskLevel, Scope, SideEffects, ToolContext, ToolFailure,
    call_runner, runner_failure,
};

/// Declares the family's tools, one `module => Type` line each: the module is the tool's file,
/// and the line both declares it and registers the tool.
macro_rules! family {
    ($($module:ident => $tool:ident),* $(,)?) => {
        $(mod $module;)*

        /// Adds every tool of the family to `registry`.
        pub fn register(registry: &mut Registry) {
            $(registry.register($module::$tool);)*
        }
    };
}

family! {
    copy => Copy,
    delete => Delete,
    edit => Edit,
    glob => Glob,
    insert => Insert,
    list => List,
    mkdir => Mkdir,
    move_ => Move,
    patch => Patch,
    read_file => ReadFile,
    read_lines => ReadLines,
    search => Search,
    stat => Stat,
    write_file => WriteFile,
}

mod entry;
pub(crate) use patch::PATCH_MAX_CHARS;
#[cfg(test)]
mod tests;

/// `fs.write_file`, `fs.edit`, `fs.insert`: largest content written (decoded).
pub const WRITE_MAX_BYTES: usize = 1024 * 1024;

/// A tool of the family with the defaults most of them share (workspace scope, low risk, no
/// approval, no side effects, guaranteed idempotency, no repository code); each tool overrides
/// what differs.
fn base(name: &'static str, description: &'static str, timeout_seconds: u64) -> Metadata {
    Metadata {
        name,
        description,
        scope: Scope::Workspace,
        side_effects: SideEffects::None,
        risk_level: RiskLevel::Low,
        requires_approval: false,
        idempotency: Idempotency::Guaranteed,
        // No fs tool runs repository code: fs.patch runs git hardened (`tools::git`).
        runs_repository_code: false,
        constraints: Constraints {
            timeout_seconds,
            // Informational, as in the original: reads may be retried freely, writes not
            // automatically.
            max_retries: 2,
            output_limit_kb: None,
        },
        preconditions: Vec::new(),
        postconditions: Vec::new(),
        cost_hint: "low",
        arg_fields: Vec::new(),
        examples: Vec::new(),
    }
}

/// The defaults of a tool that changes the workspace.
fn writes(mut metadata: Metadata) -> Metadata {
    metadata.side_effects = SideEffects::Reversible;
    metadata.risk_level = RiskLevel::Medium;
    metadata.idempotency = Idempotency::BestEffort;
    metadata.constraints.max_retries = 0;
    metadata
}

/// The default of the family's directory arguments: the workspace root.
fn root() -> WorkspacePath {
    WorkspacePath::root()
}

/// The default of the family's `create_parents` and `exist_ok` flags.
fn yes() -> bool {
    true
}

pub(in crate::tools) fn invalid(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::InvalidArgument, message)
}

pub(in crate::tools) fn failed(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::ExecutionFailed, message)
}

/// Normalises a path argument and checks it against the session's `allowed_paths` (and the
/// protected path when the tool writes it): the policy's rule, again, on the path used.
pub(in crate::tools) fn resolve<A: Access>(
    ctx: &ToolContext,
    path: &WorkspacePath<A>,
) -> Result<String, ToolFailure> {
    path.resolve(&ctx.session.allowed_paths)
        .map_err(|d| ToolFailure::new(d.code, d.message))
}

/// [`resolve`], for the other families' path arguments (`git.diff`'s paths).
pub(crate) fn resolve_path<A: Access>(
    ctx: &ToolContext,
    path: &WorkspacePath<A>,
) -> Result<String, ToolFailure> {
    resolve(ctx, path)
}

/// Every path a unified diff touches, normalised, as `fs.patch` reads them (for
/// `git.apply_patch`): an unsafe diff is `invalid_argument`, a path climbing out of the
/// workspace `policy_denied`.
pub(crate) fn diff_paths(diff: &str) -> Result<Vec<String>, ToolFailure> {
    patch::diff_paths(diff).map_err(patch::DiffRefusal::into_failure)
}

/// A reply the request cannot produce: a runner speaking another protocol. Internal, never
/// retried as if it were the tool's failure.
pub(in crate::tools) fn unexpected(reply: &Reply) -> ToolFailure {
    // The variant only: a reply may carry a whole file.
    let kind = match reply {
        Reply::Hello { .. } => "hello",
        Reply::File { .. } => "file",
        Reply::Text { .. } => "text",
        Reply::Written { .. } => "written",
        Reply::Entries { .. } => "entries",
        Reply::Stat { .. } => "stat",
        Reply::Mkdir { .. } => "mkdir",
        Reply::Moved { .. } => "moved",
        Reply::Undone { .. } => "undone",
        Reply::Copied { .. } => "copied",
        Reply::Removed { .. } => "removed",
        Reply::Matches { .. } => "matches",
        Reply::Exited { .. } => "exited",
        Reply::Output { .. } => "output",
        Reply::Error { .. } => "error",
    };
    tracing::error!(reply = kind, "unexpected reply from the session runner");
    ToolFailure::new(
        ErrorCode::Internal,
        "unexpected reply from the session runner",
    )
}

pub(in crate::tools) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a whole file of at most `limit` bytes; a longer file is `execution_failed` with
/// `too_large` as the message.
async fn read_whole(
    ctx: &ToolContext,
    path: &str,
    limit: usize,
    too_large: &str,
) -> Result<Vec<u8>, ToolFailure> {
    let request = Request::ReadFile {
        path: path.to_owned(),
        max_bytes: limit as u64,
    };
    match call_runner(ctx, request).await? {
        Reply::File {
            truncated: true, ..
        } => Err(failed(too_large)),
        Reply::File { content, .. } => Ok(content.0),
        Reply::Error { code, message } => Err(runner_failure(code, message)),
        other => Err(unexpected(&other)),
    }
}

/// Replaces an existing file's content (no parents created: the file was just read), keeping
/// its previous content as the undo snapshot of `workspace.undo_edit`.
async fn write_whole(ctx: &ToolContext, path: &str, content: Vec<u8>) -> Result<u64, ToolFailure> {
    let request = Request::WriteFile {
        path: path.to_owned(),
        content: Bytes(content),
        create_parents: false,
        create_new: false,
        snapshot: true,
    };
    match call_runner(ctx, request).await? {
        Reply::Written { bytes_written, .. } => Ok(bytes_written),
        Reply::Error { code, message } => Err(runner_failure(code, message)),
        other => Err(unexpected(&other)),
    }
}

/// `fs.edit` and `fs.insert`: the message for a file over [`WRITE_MAX_BYTES`].
const TOO_LARGE_TO_EDIT: &str = "file too large to edit (over 1 MiB)";
