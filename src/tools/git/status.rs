//! `git.status`: the working tree's status, porcelain v1 by default.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{OUTPUT_BYTES, Repo, base, run_git_keeping, yes};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `git.status`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Machine-readable `--porcelain=v1` output (default true); false gives git's long format.
    #[serde(default = "yes")]
    pub short: bool,
}

/// Output of `git.status`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The command line run.
    pub command: Vec<String>,
    /// What git printed.
    pub status: String,
    /// Whether the status was cut at 1 MiB (the full text, up to 8 MiB, is then the
    /// artifact `git.status.stdout.txt`).
    pub truncated: bool,
}

/// `git.status`.
pub struct Status;

impl Tool for Status {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({"short": true})],
            ..base(
                "git.status",
                "git status of the workspace repository: --porcelain=v1 when short (default \
                 true), git's long format otherwise. Raw text in status.",
                20,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let repo = Repo::open(ctx).await?;
        let mut command = repo.git("status").read_only();
        if args.short {
            command = command.arg("--porcelain=v1");
        }
        let ran = run_git_keeping(ctx, command, OUTPUT_BYTES).await?;
        let artifacts = ran.stdout_artifacts("git.status");
        let status = ran.stdout();
        let summary = format!("{} status lines", status.lines().count());
        Ok(Completed {
            artifacts,
            ..Completed::new(
                Output {
                    command: ran.command,
                    truncated: ran.output.stdout_truncated,
                    status,
                },
                summary,
            )
        })
    }
}
