//! `git.diff_file`: one file's changes against a ref (HEAD by default), with an optional stat.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{OUTPUT_BYTES, Repo, base, check_ref, head, ref_value, run_git, run_git_keeping};
use crate::tools::args::WorkspacePath;
use crate::tools::fs::resolve_path;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Output kept of the `--stat` run.
const STAT_BYTES: u64 = 256 * 1024;

/// Largest `context` honoured (lines each side of a change); larger values are clamped.
const MAX_CONTEXT: u32 = 50;

/// Arguments of `git.diff_file`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The file, relative to the workspace.
    pub path: WorkspacePath,
    /// Compare against this ref (default HEAD); it must pass allowed_git_ref_prefixes.
    #[serde(default = "head", rename = "ref")]
    pub reference: String,
    /// Also return `git diff --stat` for the file.
    #[serde(default)]
    pub stat: bool,
    /// Lines of context (`-U`, clamped to 50; git's default 3 when absent).
    #[serde(default)]
    pub context: Option<u32>,
}

/// Output of `git.diff_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The main diff's command line.
    pub command: Vec<String>,
    /// The ref compared against.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The file, normalised.
    pub path: String,
    /// The diff ("" when the file did not change or is untracked).
    pub diff: String,
    /// The stat, only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stat: Option<String>,
    /// Whether the diff was cut at 1 MiB (the full text, up to 8 MiB, is then the
    /// artifact `git.diff_file.stdout.txt`).
    pub truncated: bool,
}

/// `git.diff_file`.
pub struct DiffFile;

impl Tool for DiffFile {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        let mut metadata = Metadata {
            examples: vec![json!({"path": "src/main.rs", "ref": "HEAD", "stat": true, "context": 3})],
            ..base(
                "git.diff_file",
                "git diff --no-color [-U<context>] <ref> -- <path> for one file (ref default \
                 HEAD, gated by allowed_git_ref_prefixes; context clamped to 50); stat=true \
                 adds the --stat summary. An unchanged or untracked file gives an empty diff.",
                30,
            )
        };
        metadata.constraints.max_retries = 1;
        metadata.constraints.output_limit_kb = Some(1024);
        metadata
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve_path(ctx, &args.path)?;
        let reference = ref_value(&args.reference, "ref")?;
        check_ref(ctx, &reference, "ref")?;
        let repo = Repo::open(ctx).await?;
        let stat = if args.stat {
            let command = repo
                .git("diff")
                .read_only()
                .args(["--no-color", "--stat", &reference, "--", &path]);
            Some(run_git(ctx, command, None, STAT_BYTES).await?.stdout().trim().to_owned())
        } else {
            None
        };
        let mut command = repo.git("diff").read_only().arg("--no-color");
        if let Some(context) = args.context {
            command = command.arg(format!("-U{}", context.min(MAX_CONTEXT)));
        }
        command = command.args([reference.as_str(), "--", &path]);
        let ran = run_git_keeping(ctx, command, OUTPUT_BYTES).await?;
        let artifacts = ran.stdout_artifacts("git.diff_file");
        let diff = ran.stdout();
        let summary = format!("diff of {path} against {reference}: {} bytes", diff.len());
        Ok(Completed {
            artifacts,
            ..Completed::new(
                Output {
                    command: ran.command,
                    reference,
                    path,
                    truncated: ran.output.stdout_truncated,
                    diff,
                    stat,
                },
                summary,
            )
        })
    }
}
