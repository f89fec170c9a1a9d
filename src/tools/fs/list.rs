//! `fs.list`: the entries of a workspace directory.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::entry::Entry;
use super::{base, resolve, unexpected};
use crate::runner::protocol::{Reply, Request};
use crate::tools::args::{Count, WorkspacePath};
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Arguments of `fs.list`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Directory to list, relative to the workspace.
    #[serde(default = "super::root")]
    pub path: WorkspacePath,
    /// Descend into subdirectories.
    #[serde(default)]
    pub recursive: bool,
    /// Stop after this many entries (capped at 1000).
    #[serde(default)]
    pub max_entries: Count<200, 1000>,
}

/// Output of `fs.list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// Entries, sorted by path.
    pub entries: Vec<Entry>,
    /// Number of entries returned.
    pub count: usize,
    /// Whether entries were left out (max_entries reached).
    pub truncated: bool,
}

/// `fs.list`.
pub struct List;

impl Tool for List {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            postconditions: vec!["entries are workspace-relative and sorted by path"],
            examples: vec![json!({"path": "src", "recursive": true, "max_entries": 100})],
            ..base(
                "fs.list",
                "List the entries of a workspace directory (path, type, size, mode, modification \
                 time), flat or recursive, sorted by path. Symlinks are listed, never followed.",
                15,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let request = Request::List {
            path: path.clone(),
            recursive: args.recursive,
            max_entries: args.max_entries.get(),
        };
        let (entries, truncated) = match call_runner(ctx, request).await? {
            Reply::Entries { entries, truncated } => (entries, truncated),
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        let count = entries.len();
        Ok(Completed::new(
            Output {
                entries: entries.into_iter().map(Entry::from).collect(),
                count,
                truncated,
            },
            format!("listed {count} entries under {path}"),
        ))
    }
}
