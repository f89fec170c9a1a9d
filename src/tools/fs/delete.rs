//! `fs.delete`: delete a file, a symlink or a directory tree.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base, invalid, resolve, unexpected, writes};
use crate::error_code::ErrorCode;
use crate::runner::protocol::{Entry, EntryType, Reply, Request};
use crate::tools::args::{WorkspacePath, Write};
use crate::tools::{
    Completed, Metadata, RiskLevel, SideEffects, Tool, ToolContext, ToolFailure, call_runner,
    runner_failure,
};

/// Arguments of `fs.delete`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// What to delete, relative to the workspace.
    pub path: WorkspacePath<Write>,
    /// Required to delete a directory.
    #[serde(default)]
    pub recursive: bool,
    /// Succeed when the path does not exist.
    #[serde(default)]
    pub force: bool,
}

/// Output of `fs.delete`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// Whether something was deleted.
    pub deleted: bool,
    /// Whether something was there.
    pub existed: bool,
}

/// `fs.delete`.
pub struct Delete;

impl Tool for Delete {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        let mut metadata = writes(base(
            "fs.delete",
            "Delete a file, a symlink (not its target) or, with recursive=true, a directory \
             tree. With force=true a missing path is a success. The workspace root cannot be \
             deleted.",
            20,
        ));
        metadata.risk_level = RiskLevel::High;
        metadata.side_effects = SideEffects::Irreversible;
        metadata.requires_approval = true;
        metadata.cost_hint = "medium";
        metadata.postconditions = vec!["path no longer exists"];
        metadata.examples = vec![json!({"path": "build", "recursive": true, "force": true})];
        metadata
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let Args {
            recursive, force, ..
        } = args;
        if path == "." {
            return Err(ToolFailure::new(
                ErrorCode::PolicyDenied,
                "refusing to delete workspace root",
            ));
        }
        // Look first: a directory needs recursive=true even when empty (the runner alone would
        // remove an empty one), and a missing path is answered without a second request.
        let entry = match call_runner(ctx, Request::Stat { path: path.clone() }).await? {
            Reply::Stat { entry } => entry,
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        match entry {
            None if force => {
                let summary = format!("{path} does not exist; nothing deleted");
                return Ok(Completed::new(
                    Output {
                        path,
                        deleted: false,
                        existed: false,
                    },
                    summary,
                ));
            }
            None => {
                return Err(ToolFailure::new(
                    ErrorCode::NotFound,
                    format!("{path}: not found"),
                ));
            }
            Some(Entry {
                entry_type: EntryType::Dir,
                ..
            }) if !recursive => {
                return Err(invalid(format!(
                    "{path}: is a directory; set recursive=true to delete it"
                )));
            }
            Some(_) => {}
        }
        let request = Request::Remove {
            path: path.clone(),
            recursive,
            force,
        };
        let (deleted, existed) = match call_runner(ctx, request).await? {
            Reply::Removed { deleted, existed } => (deleted, existed),
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        let summary = if deleted {
            format!("deleted {path}")
        } else {
            format!("{path} was already gone")
        };
        Ok(Completed::new(
            Output {
                path,
                deleted,
                existed,
            },
            summary,
        ))
    }
}
