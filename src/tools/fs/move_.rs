//! `fs.move`: rename or move a file or directory inside the workspace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base, failed, resolve, unexpected, writes};
use crate::runner::protocol::{Reply, Request, RunnerErrorCode};
use crate::tools::args::{WorkspacePath, Write};
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Arguments of `fs.move`. Both paths are written: moving something out of `.git` changes
/// `.git` as much as moving into it.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// What to move.
    pub source_path: WorkspacePath<Write>,
    /// Where to move it.
    pub destination_path: WorkspacePath<Write>,
    /// Replace an existing destination.
    #[serde(default)]
    pub overwrite: bool,
    /// Create missing parents of the destination.
    #[serde(default = "super::yes")]
    pub create_parents: bool,
}

/// Output of `fs.move`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised source.
    pub source_path: String,
    /// The normalised destination.
    pub destination_path: String,
    /// Whether anything moved (false: the same path).
    pub moved: bool,
}

/// `fs.move`.
pub struct Move;

/// An existing destination is `execution_failed` with the original's message; anything else
/// maps as usual (`fs.move` and `fs.copy`).
pub(super) fn destination_failure(
    code: RunnerErrorCode,
    message: String,
    destination: &str,
) -> ToolFailure {
    if code == RunnerErrorCode::AlreadyExists {
        failed(format!("{destination}: destination already exists"))
    } else {
        runner_failure(code, message)
    }
}

impl Tool for Move {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            preconditions: vec!["source_path exists"],
            postconditions: vec!["destination_path holds what source_path held"],
            examples: vec![json!({"source_path": "a.txt", "destination_path": "archive/a.txt"})],
            ..writes(base(
                "fs.move",
                "Rename or move a file or directory inside the workspace. An existing \
                 destination is refused unless overwrite is true; the same source and \
                 destination is a success with moved=false.",
                20,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let from = resolve(ctx, &args.source_path)?;
        let to = resolve(ctx, &args.destination_path)?;
        let request = Request::Move {
            from: from.clone(),
            to: to.clone(),
            overwrite: args.overwrite,
            create_parents: args.create_parents,
        };
        let moved = match call_runner(ctx, request).await? {
            Reply::Moved { moved } => moved,
            Reply::Error { code, message } => return Err(destination_failure(code, message, &to)),
            other => return Err(unexpected(&other)),
        };
        let summary = if moved {
            format!("moved {from} to {to}")
        } else {
            format!("{from} and {to} are the same path; nothing moved")
        };
        Ok(Completed::new(
            Output {
                source_path: from,
                destination_path: to,
                moved,
            },
            summary,
        ))
    }
}
