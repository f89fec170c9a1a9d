//! `git.apply_patch`: apply a patch to the repository's working tree (`git apply`), every path
//! it touches checked against `allowed_paths` first.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{Repo, base, denied, run_git, writes};
use crate::policy::paths;
use crate::tools::args::NonEmptyString;
use crate::tools::fs::{PATCH_MAX_CHARS, diff_paths};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Output kept of `git apply`.
const APPLY_BYTES: u64 = 256 * 1024;

/// Arguments of `git.apply_patch`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The patch (a unified diff with a/ b/ prefixes).
    pub patch: NonEmptyString<PATCH_MAX_CHARS>,
    /// Only check that it applies (`--check`), changing nothing.
    #[serde(default)]
    pub check: bool,
}

/// Output of `git.apply_patch`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The command line run.
    pub command: Vec<String>,
    /// Whether the patch was applied (false after a successful check).
    pub applied: bool,
    /// What git printed.
    pub output: String,
    /// Every path the patch touches, normalised.
    pub changed_paths: Vec<String>,
}

/// `git.apply_patch`.
pub struct ApplyPatch;

impl Tool for ApplyPatch {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            requires_approval: true,
            cost_hint: "medium",
            examples: vec![json!({
                "patch": "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n-hello\n+hello, world\n",
                "check": true
            })],
            ..writes(base(
                "git.apply_patch",
                "git apply --whitespace=nowarn [--check] with the patch on stdin, in the \
                 repository. Every path the patch touches must be inside the session's \
                 allowed_paths and outside .git.",
                45,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let patch = args.patch.as_str();
        let changed_paths = diff_paths(patch)?;
        if changed_paths
            .iter()
            .any(|p| !paths::is_allowed(p, &ctx.session.allowed_paths))
        {
            return Err(denied("patch touches paths outside allowed_paths"));
        }
        if changed_paths.iter().any(|p| paths::is_protected(p)) {
            return Err(denied(
                "patch touches .git, a protected path: file tools never write there",
            ));
        }
        let repo = Repo::open(ctx).await?;
        let mut command = repo.git("apply").arg("--whitespace=nowarn");
        if args.check {
            command = command.arg("--check");
        }
        let ran = run_git(ctx, command, Some(patch.as_bytes().to_vec()), APPLY_BYTES).await?;
        let summary = if args.check {
            format!("patch applies to {} paths", changed_paths.len())
        } else {
            format!("applied patch to {} paths", changed_paths.len())
        };
        Ok(Completed::new(
            Output {
                output: ran.combined(),
                command: ran.command,
                applied: !args.check,
                changed_paths,
            },
            summary,
        ))
    }
}
