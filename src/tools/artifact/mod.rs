//! The `artifact.*` family: workspace files handed to the caller, as invocation artifacts
//! (`artifact.upload`) or inline (`artifact.download`), and the files there are to hand
//! (`artifact.list`).
//!
//! One file per tool, as in [`super::fs`], with the original catalog's metadata (workspace
//! scope, low risk, no approval, 45 s). Like the `fs.*` family it never touches the host
//! filesystem: every read is a runner request, confined by the runner, after the path was
//! resolved against the session's `allowed_paths`. The bytes `artifact.upload` returns are
//! stored by the service (ADR 0008) and served by `GET /v1/invocations/{id}/artifacts/{aid}`.

use crate::runner::protocol::{Reply, Request};
use crate::tools::catalog::Registry;
use crate::tools::{
    Constraints, Idempotency, Metadata, RiskLevel, Scope, SideEffects, ToolContext, ToolFailure,
    call_runner, runner_failure,
};

mod download;
mod list;
#[cfg(test)]
mod tests;
mod upload;

/// Adds every tool of the family to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(download::Download);
    registry.register(list::List);
    registry.register(upload::Upload);
}

/// Smallest `max_bytes` of `artifact.upload` and `artifact.download` (1 KiB): smaller values
/// are raised to it, as the original clamped them.
pub const MIN_BYTES: u64 = 1024;
/// Largest `max_bytes` of `artifact.upload` and `artifact.download` (10 MiB).
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;

/// A tool of the family: the original's metadata for all three (what differs is overridden).
fn base(name: &'static str, description: &'static str) -> Metadata {
    Metadata {
        name,
        description,
        scope: Scope::Workspace,
        side_effects: SideEffects::None,
        risk_level: RiskLevel::Low,
        requires_approval: false,
        idempotency: Idempotency::Guaranteed,
        runs_repository_code: false,
        constraints: Constraints {
            timeout_seconds: 45,
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

/// The `max_bytes` a caller asked for, clamped to [`MIN_BYTES`]..[`MAX_BYTES`].
fn clamp_bytes(requested: u64) -> u64 {
    requested.clamp(MIN_BYTES, MAX_BYTES)
}

/// The first `max_bytes` of a regular file: (bytes, the file's full size, whether cut).
async fn read_prefix(
    ctx: &ToolContext,
    path: &str,
    max_bytes: u64,
) -> Result<(Vec<u8>, u64, bool), ToolFailure> {
    let request = Request::ReadFile {
        path: path.to_owned(),
        max_bytes,
    };
    match call_runner(ctx, request).await? {
        Reply::File {
            content,
            size_bytes,
            truncated,
        } => Ok((content.0, size_bytes, truncated)),
        Reply::Error { code, message } => Err(runner_failure(code, message)),
        other => Err(super::fs::unexpected(&other)),
    }
}
