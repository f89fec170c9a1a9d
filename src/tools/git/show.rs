//! `git.show`: a commit (HEAD by default), with its stat and patch, optionally for one path.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{OUTPUT_BYTES, Repo, SHELL, base, head, ref_value, run_git_keeping, yes};
use crate::tools::args::WorkspacePath;
use crate::tools::fs::resolve_path;
use crate::tools::{ArgField, Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `git.show`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The commit (default HEAD).
    #[serde(default = "head", rename = "ref")]
    pub reference: String,
    /// Only this path's part of the commit.
    #[serde(default)]
    pub path: Option<WorkspacePath>,
    /// Include the diffstat (default true).
    #[serde(default = "yes")]
    pub stat: bool,
    /// Include the patch (default true).
    #[serde(default = "yes")]
    pub patch: bool,
}

/// Output of `git.show`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The command line run.
    pub command: Vec<String>,
    /// The commit shown.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The path, normalised ("" for the whole commit).
    pub path: String,
    /// What git printed.
    pub show: String,
    /// Whether it was cut at 1 MiB (the full text, up to 8 MiB, is then the
    /// artifact `git.show.stdout.txt`).
    pub truncated: bool,
}

/// `git.show`.
pub struct Show;

/// The `ref` rule the original's catalog declares (max 256 characters, no shell characters).
pub(super) fn ref_rule(field: &'static str) -> ArgField {
    ArgField {
        field,
        multi: false,
        max_items: None,
        max_length: Some(256),
        allowed_values: Vec::new(),
        allowed_prefix: Vec::new(),
        denied_prefix: Vec::new(),
        deny_characters: SHELL.to_vec(),
    }
}

impl Tool for Show {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            arg_fields: vec![ref_rule("ref")],
            examples: vec![json!({"ref": "HEAD", "stat": true, "patch": false})],
            ..base(
                "git.show",
                "git show <ref> [-- path] (ref default HEAD): stat and patch (both default \
                 true) pick --stat, --patch, both, or neither (--pretty=fuller --no-patch).",
                30,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let reference = ref_value(&args.reference, "ref")?;
        let path = args
            .path
            .as_ref()
            .map(|p| resolve_path(ctx, p))
            .transpose()?;
        let repo = Repo::open(ctx).await?;
        let mut command = repo.git("show").read_only().arg("--no-color");
        command = match (args.stat, args.patch) {
            (true, true) => command.args(["--stat", "--patch"]),
            (true, false) => command.arg("--stat"),
            (false, true) => command.arg("--patch"),
            (false, false) => command.args(["--pretty=fuller", "--no-patch"]),
        };
        command = command.arg(reference.as_str());
        if let Some(path) = &path {
            command = command.args(["--", path.as_str()]);
        }
        let ran = run_git_keeping(ctx, command, OUTPUT_BYTES).await?;
        let artifacts = ran.stdout_artifacts("git.show");
        let show = ran.stdout();
        let summary = format!("showed {reference}: {} bytes", show.len());
        Ok(Completed {
            artifacts,
            ..Completed::new(
                Output {
                    command: ran.command,
                    reference,
                    path: path.unwrap_or_default(),
                    truncated: ran.output.stdout_truncated,
                    show,
                },
                summary,
            )
        })
    }
}
