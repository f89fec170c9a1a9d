//! `git.pull`: fetch and integrate from a remote the session allows (on the local sandbox, only
//! a repository inside the workspace).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{
    Direction, NetworkOutput, OUTPUT_BYTES, Repo, author, base, network_rules, origin,
    remote_args, remote_command, run_git, writes,
};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `git.pull`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The remote (default origin); it must pass allowed_git_remotes.
    #[serde(default = "origin")]
    pub remote: String,
    /// What to pull; both sides must pass allowed_git_ref_prefixes.
    #[serde(default)]
    pub refspec: Option<String>,
    /// Rebase instead of merging (`--rebase`).
    #[serde(default)]
    pub rebase: bool,
}

/// `git.pull`.
pub struct Pull;

impl Tool for Pull {
    type Args = Args;
    type Output = NetworkOutput;

    fn metadata(&self) -> Metadata {
        Metadata {
            requires_approval: true,
            cost_hint: "medium",
            arg_fields: network_rules(),
            examples: vec![json!({"remote": "origin", "refspec": "main", "rebase": true})],
            ..writes(base(
                "git.pull",
                "git pull [--rebase] remote [refspec] (remote default origin, gated by \
                 allowed_git_remotes; refspec by allowed_git_ref_prefixes). A merge commit is \
                 authored like git.commit. The local sandbox has no network: only a repository \
                 inside the workspace can be pulled from; a URL remote is network_disabled.",
                60,
            ))
        }
    }

    async fn run(
        &self,
        ctx: &ToolContext,
        args: Args,
    ) -> Result<Completed<NetworkOutput>, ToolFailure> {
        let (remote, refspec) = remote_args(ctx, &args.remote, args.refspec.as_deref())?;
        let (name, email) = author(ctx);
        let repo = Repo::open(ctx).await?;
        let mut command = remote_command(ctx, &repo, "pull", &remote, Direction::Fetch)
            .await?
            .identity(name, email)
            .args(["--no-edit", "--no-verify"]);
        command = command.arg(if args.rebase { "--rebase" } else { "--no-rebase" });
        command = command.arg(remote.as_str()).args(refspec.clone());
        let ran = run_git(ctx, command, None, OUTPUT_BYTES).await?;
        let summary = format!("pulled from {remote}");
        Ok(Completed::new(
            NetworkOutput::new(&ran, remote, refspec, "pulled"),
            summary,
        ))
    }
}
