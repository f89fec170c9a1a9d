//! `git.commit`: record the staged changes (optionally everything, or some paths), authored by
//! the session's metadata or its actor.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{OUTPUT_BYTES, Repo, author, base, run_git, writes};
use crate::tools::args::{NonEmptyString, WorkspacePath};
use crate::tools::fs::resolve_path;
use crate::tools::{
    ArgField, Completed, Idempotency, Metadata, SideEffects, Tool, ToolContext, ToolFailure,
};

/// Arguments of `git.commit`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The commit message (at most 1024 characters).
    pub message: NonEmptyString<1024>,
    /// Stage every change first (`git add --all`).
    #[serde(default)]
    pub all: bool,
    /// Commit only these paths (`-- paths`).
    #[serde(default)]
    pub paths: Vec<WorkspacePath>,
}

/// Output of `git.commit`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The commit command line.
    pub command: Vec<String>,
    /// Whether a commit was made.
    pub committed: bool,
    /// The new commit's hash.
    pub commit: String,
    /// What git printed.
    pub output: String,
}

/// `git.commit`.
pub struct Commit;

impl Tool for Commit {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            requires_approval: true,
            side_effects: SideEffects::Irreversible,
            idempotency: Idempotency::None,
            arg_fields: vec![ArgField {
                field: "message",
                multi: false,
                max_items: None,
                max_length: Some(1024),
                allowed_values: Vec::new(),
                allowed_prefix: Vec::new(),
                denied_prefix: Vec::new(),
                deny_characters: vec!["\0"],
            }],
            examples: vec![json!({"message": "fix: handle empty input", "all": true})],
            ..writes(base(
                "git.commit",
                "git commit -m message (after git add --all when all; only paths when given). \
                 The author is metadata git_author_name/git_author_email, else the session's \
                 actor (<actor>@workspace.local). Nothing to commit is execution_failed.",
                30,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let paths = args
            .paths
            .iter()
            .map(|p| resolve_path(ctx, p))
            .collect::<Result<Vec<_>, _>>()?;
        let (name, email) = author(ctx);
        let repo = Repo::open(ctx).await?;
        let mut output = String::new();
        if args.all {
            let ran = run_git(ctx, repo.git("add").arg("--all"), None, OUTPUT_BYTES).await?;
            output.push_str(&ran.combined());
        }
        let mut command = repo
            .git("commit")
            .identity(name.as_str(), email.as_str())
            .args(["--no-verify", "--no-gpg-sign", "-m", args.message.as_str()]);
        if !paths.is_empty() {
            command = command.arg("--").args(paths);
        }
        let ran = run_git(ctx, command, None, OUTPUT_BYTES).await?;
        output.push_str(&ran.combined());
        let head = run_git(
            ctx,
            repo.git("rev-parse").read_only().arg("HEAD"),
            None,
            4096,
        )
        .await?;
        let commit = head.stdout().trim().to_owned();
        let summary = format!("committed {commit} as {name} <{email}>");
        Ok(Completed::new(
            Output {
                command: ran.command,
                committed: true,
                commit,
                output,
            },
            summary,
        ))
    }
}
