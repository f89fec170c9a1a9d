//! `git.fetch`: fetch from a remote the session allows (on the local sandbox, only a
//! repository inside the workspace: a URL remote is `network_disabled`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{
    Direction, NetworkOutput, OUTPUT_BYTES, Repo, base, network_rules, origin, remote_args,
    remote_command, run_git, writes,
};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `git.fetch`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The remote (default origin); it must pass allowed_git_remotes.
    #[serde(default = "origin")]
    pub remote: String,
    /// What to fetch; both sides must pass allowed_git_ref_prefixes.
    #[serde(default)]
    pub refspec: Option<String>,
    /// Remove remote-tracking refs that no longer exist (`--prune`).
    #[serde(default)]
    pub prune: bool,
    /// Fetch tags too (`--tags`).
    #[serde(default)]
    pub tags: bool,
}

/// `git.fetch`.
pub struct Fetch;

impl Tool for Fetch {
    type Args = Args;
    type Output = NetworkOutput;

    fn metadata(&self) -> Metadata {
        let mut metadata = Metadata {
            requires_approval: true,
            cost_hint: "medium",
            arg_fields: network_rules(),
            examples: vec![json!({"remote": "origin", "refspec": "main", "prune": true})],
            ..writes(base(
                "git.fetch",
                "git fetch [--prune] [--tags] remote [refspec] (remote default origin, gated by \
                 allowed_git_remotes; refspec by allowed_git_ref_prefixes). The local sandbox \
                 has no network: only a repository inside the workspace can be fetched from; \
                 a URL remote is network_disabled.",
                60,
            ))
        };
        metadata.idempotency = crate::tools::Idempotency::BestEffort;
        metadata
    }

    async fn run(
        &self,
        ctx: &ToolContext,
        args: Args,
    ) -> Result<Completed<NetworkOutput>, ToolFailure> {
        let (remote, refspec) = remote_args(ctx, &args.remote, args.refspec.as_deref())?;
        let repo = Repo::open(ctx).await?;
        let mut command = remote_command(ctx, &repo, "fetch", &remote, Direction::Fetch).await?;
        if args.prune {
            command = command.arg("--prune");
        }
        if args.tags {
            command = command.arg("--tags");
        }
        command = command.arg(remote.as_str()).args(refspec.clone());
        let ran = run_git(ctx, command, None, OUTPUT_BYTES).await?;
        let summary = format!("fetched from {remote}");
        Ok(Completed::new(
            NetworkOutput::new(&ran, remote, refspec, "fetched"),
            summary,
        ))
    }
}
