//! `git.blame`: who last changed each line of a file (annotate format, `-c`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{Repo, base, run_git_keeping};
use crate::tools::args::WorkspacePath;
use crate::tools::fs::resolve_path;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Output kept (the original's 512 KiB).
const BLAME_BYTES: u64 = 512 * 1024;

/// Arguments of `git.blame`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The file, relative to the workspace.
    pub path: WorkspacePath,
    /// First line (1-based); with end_line, limits the blame to a range.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub start_line: Option<u64>,
    /// Last line (at least start_line).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub end_line: Option<u64>,
}

/// Output of `git.blame`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The command line run.
    pub command: Vec<String>,
    /// The file, normalised.
    pub path: String,
    /// What git printed.
    pub blame: String,
    /// Whether it was cut at 512 KiB (the full text, up to 8 MiB, is then the
    /// artifact `git.blame.stdout.txt`).
    pub truncated: bool,
}

/// `git.blame`.
pub struct Blame;

impl Tool for Blame {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        let mut metadata = Metadata {
            examples: vec![json!({"path": "src/main.rs", "start_line": 1, "end_line": 20})],
            ..base(
                "git.blame",
                "git blame -c [-L start,end] -- path: annotate-style lines (short hash, author, \
                 date, line number, text), cut at 512 KiB (the whole blame is then an \
                 artifact). The range applies only when both lines are given and end_line >= \
                 start_line; a range past the end of the file or an untracked file is \
                 git_repo_error.",
                30,
            )
        };
        metadata.constraints.output_limit_kb = Some(512);
        metadata
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve_path(ctx, &args.path)?;
        let repo = Repo::open(ctx).await?;
        let mut command = repo.git("blame").read_only().arg("-c");
        if let (Some(start), Some(end)) = (args.start_line, args.end_line)
            && start >= 1
            && end >= start
        {
            command = command.arg(format!("-L{start},{end}"));
        }
        command = command.args(["--", path.as_str()]);
        let ran = run_git_keeping(ctx, command, BLAME_BYTES).await?;
        let artifacts = ran.stdout_artifacts("git.blame");
        let blame = ran.stdout();
        let summary = format!("blamed {} lines of {path}", blame.lines().count());
        Ok(Completed {
            artifacts,
            ..Completed::new(
                Output {
                    command: ran.command,
                    path,
                    truncated: ran.output.stdout_truncated,
                    blame,
                },
                summary,
            )
        })
    }
}
