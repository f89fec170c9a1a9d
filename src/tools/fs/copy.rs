//! `fs.copy`: copy a file or a directory tree inside the workspace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::move_::destination_failure;
use super::{base, invalid, resolve, unexpected, writes};
use crate::runner::protocol::{EntryType, Reply, Request};
use crate::tools::args::{WorkspacePath, Write};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner};

/// Arguments of `fs.copy`. Copying out of `.git` is a read; only the destination is written.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// What to copy.
    pub source_path: WorkspacePath,
    /// Where to copy it.
    pub destination_path: WorkspacePath<Write>,
    /// Required to copy a directory.
    #[serde(default)]
    pub recursive: bool,
    /// Replace an existing destination.
    #[serde(default)]
    pub overwrite: bool,
    /// Create missing parents of the destination.
    #[serde(default = "super::yes")]
    pub create_parents: bool,
}

/// What was copied: `file` or `dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Copied {
    File,
    Dir,
}

/// Output of `fs.copy`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised source.
    pub source_path: String,
    /// The normalised destination.
    pub destination_path: String,
    /// What was copied.
    #[serde(rename = "type")]
    pub kind: Copied,
}

/// `fs.copy`.
pub struct Copy;

impl Tool for Copy {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            preconditions: vec!["source_path exists and contains no symlinks"],
            examples: vec![
                json!({"source_path": "templates", "destination_path": "site", "recursive": true}),
            ],
            ..writes(base(
                "fs.copy",
                "Copy a file, or a directory tree with recursive=true, inside the workspace. \
                 Symlinks are refused; an existing destination is refused unless overwrite is \
                 true.",
                25,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let from = resolve(ctx, &args.source_path)?;
        let to = resolve(ctx, &args.destination_path)?;
        if from == to {
            return Err(invalid("source and destination must differ"));
        }
        let request = Request::Copy {
            from: from.clone(),
            to: to.clone(),
            recursive: args.recursive,
            overwrite: args.overwrite,
            create_parents: args.create_parents,
        };
        let kind = match call_runner(ctx, request).await? {
            Reply::Copied {
                entry_type: EntryType::Dir,
            } => Copied::Dir,
            Reply::Copied {
                entry_type: EntryType::File,
            } => Copied::File,
            Reply::Error { code, message } => return Err(destination_failure(code, message, &to)),
            other => return Err(unexpected(&other)),
        };
        let name = match kind {
            Copied::File => "file",
            Copied::Dir => "dir",
        };
        Ok(Completed::new(
            Output {
                source_path: from.clone(),
                destination_path: to.clone(),
                kind,
            },
            format!("copied {name} {from} to {to}"),
        ))
    }
}
