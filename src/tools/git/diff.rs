//! `git.diff`: the working tree's (or the index's) changes, raw.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{OUTPUT_BYTES, Repo, base, ref_value, run_git_keeping};
use crate::tools::args::WorkspacePath;
use crate::tools::fs::resolve_path;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `git.diff`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Diff the index against HEAD (`--staged`) instead of the working tree against the index.
    #[serde(default)]
    pub staged: bool,
    /// Limit the diff to these paths.
    #[serde(default)]
    pub paths: Vec<WorkspacePath>,
    /// Compare against this commit instead (`git diff <base>`).
    #[serde(default)]
    pub base: Option<String>,
}

/// Output of `git.diff`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The command line run.
    pub command: Vec<String>,
    /// The diff, as git printed it.
    pub diff: String,
    /// Whether the diff was cut at 1 MiB (the full text, up to 8 MiB, is then the
    /// artifact `git.diff.stdout.txt`).
    pub truncated: bool,
}

/// `git.diff`.
pub struct Diff;

impl Tool for Diff {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({"staged": false, "paths": ["src"]})],
            ..base(
                "git.diff",
                "git diff [--staged] [base] [-- paths]: the raw diff (cut at 1 MiB: truncated \
                 says so, and the whole diff is the artifact git.diff.stdout.txt). Paths must be inside the session's allowed_paths.",
                30,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let paths = args
            .paths
            .iter()
            .map(|p| resolve_path(ctx, p))
            .collect::<Result<Vec<_>, _>>()?;
        let base = args
            .base
            .as_deref()
            .map(|b| ref_value(b, "base"))
            .transpose()?;
        let repo = Repo::open(ctx).await?;
        let mut command = repo.git("diff").read_only().arg("--no-color");
        if args.staged {
            command = command.arg("--staged");
        }
        if let Some(base) = base {
            command = command.arg(base);
        }
        command = command.arg("--").args(paths);
        let ran = run_git_keeping(ctx, command, OUTPUT_BYTES).await?;
        let artifacts = ran.stdout_artifacts("git.diff");
        let diff = ran.stdout();
        let summary = format!("diff of {} bytes", diff.len());
        Ok(Completed {
            artifacts,
            ..Completed::new(
                Output {
                    command: ran.command,
                    truncated: ran.output.stdout_truncated,
                    diff,
                },
                summary,
            )
        })
    }
}
