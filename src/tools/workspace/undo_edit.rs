//! `workspace.undo_edit`: a file put back as it was before its last `fs.edit`, `fs.insert` or
//! `fs.write_file`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::runner::protocol::{Reply, Request};
use crate::tools::args::{WorkspacePath, Write};
use crate::tools::fs::{resolve, unexpected};
use crate::tools::{
    Completed, Constraints, Idempotency, Metadata, RiskLevel, Scope, SideEffects, Tool,
    ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Arguments of `workspace.undo_edit`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// File to restore, relative to the workspace (as the edit named it).
    pub path: WorkspacePath<Write>,
}

/// Output of `workspace.undo_edit`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// Always true: the file is as it was before its last change.
    pub restored: bool,
    /// Whether the file was removed (the last change created it).
    pub deleted: bool,
    /// Size of the restored file (0 when removed).
    pub size_bytes: u64,
    /// SHA-256 of the restored content, hex; null when the file was removed.
    pub sha256: Option<String>,
}

/// `workspace.undo_edit`.
pub struct UndoEdit;

impl Tool for UndoEdit {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            name: "workspace.undo_edit",
            description: "Put a file back as it was before its last fs.edit, fs.insert or \
                          fs.write_file: its previous content (replaced atomically), or, when \
                          that change created it, no file. One level per file, used once; \
                          a file that was over 4 MiB before the change has no snapshot.",
            scope: Scope::Workspace,
            side_effects: SideEffects::Reversible,
            risk_level: RiskLevel::Medium,
            requires_approval: true,
            idempotency: Idempotency::BestEffort,
            runs_repository_code: false,
            constraints: Constraints {
                timeout_seconds: 15,
                max_retries: 0,
                output_limit_kb: None,
            },
            preconditions: vec![
                "fs.edit, fs.insert or fs.write_file changed path since the session's runner \
                 started",
            ],
            postconditions: vec!["path holds what it held before that change"],
            cost_hint: "low",
            arg_fields: Vec::new(),
            examples: vec![json!({"path": "src/lib.rs"})],
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let request = Request::UndoEdit { path: path.clone() };
        let (deleted, size_bytes, sha256) = match call_runner(ctx, request).await? {
            Reply::Undone {
                deleted,
                size_bytes,
                sha256,
            } => (deleted, size_bytes, sha256),
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        let summary = if deleted {
            format!("removed {path}, which its last change created")
        } else {
            format!("restored {size_bytes} bytes of {path}")
        };
        Ok(Completed::new(
            Output {
                path,
                restored: true,
                deleted,
                size_bytes,
                sha256,
            },
            summary,
        ))
    }
}
