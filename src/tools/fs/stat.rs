//! `fs.stat`: describe a path without following a final symlink.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::entry::{Kind, mode_string};
use super::{base, resolve, unexpected};
use crate::runner::protocol::{Reply, Request};
use crate::tools::args::WorkspacePath;
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Arguments of `fs.stat`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Path to describe, relative to the workspace.
    pub path: WorkspacePath,
}

/// Output of `fs.stat`: only `path` and `exists` when nothing is there.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// Whether something is there.
    pub exists: bool,
    /// Entry type.
    // Absent rather than null when nothing is there: the schema says so (`with`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Kind")]
    pub kind: Option<Kind>,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub size_bytes: Option<u64>,
    /// Go-style mode string.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub mode: Option<String>,
    /// Modification time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub modified_at: Option<String>,
}

/// `fs.stat`.
pub struct Stat;

impl Tool for Stat {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({"path": "Cargo.toml"})],
            ..base(
                "fs.stat",
                "Describe a path without following a final symlink: type (file, dir, symlink, \
                 other), size, mode and modification time. A missing path is a success with \
                 exists=false.",
                15,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let entry = match call_runner(ctx, Request::Stat { path: path.clone() }).await? {
            Reply::Stat { entry } => entry,
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        Ok(match entry {
            None => Completed::new(
                Output {
                    path: path.clone(),
                    exists: false,
                    kind: None,
                    size_bytes: None,
                    mode: None,
                    modified_at: None,
                },
                format!("{path} does not exist"),
            ),
            Some(entry) => {
                let kind = Kind::from(entry.entry_type);
                let summary = format!("{path} is a {} of {} bytes", kind.name(), entry.size_bytes);
                Completed::new(
                    Output {
                        path,
                        exists: true,
                        kind: Some(kind),
                        size_bytes: Some(entry.size_bytes),
                        mode: Some(mode_string(entry.entry_type, entry.mode)),
                        modified_at: Some(entry.modified_at),
                    },
                    summary,
                )
            }
        })
    }
}
