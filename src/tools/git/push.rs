//! `git.push`: push to a remote the session allows (on the local sandbox, only a repository
//! inside the workspace, whose hooks never run).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{
    Direction, NetworkOutput, OUTPUT_BYTES, Repo, base, check_refspec, network_rules, origin,
    ref_value, remote_args, remote_command, run_git, writes,
};
use crate::tools::{
    Completed, Idempotency, Metadata, RiskLevel, SideEffects, Tool, ToolContext, ToolFailure,
};

/// Arguments of `git.push`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The remote (default origin); it must pass allowed_git_remotes.
    #[serde(default = "origin")]
    pub remote: String,
    /// What to push; both sides must pass allowed_git_ref_prefixes.
    #[serde(default)]
    pub refspec: Option<String>,
    /// Set the upstream of the pushed branch (`--set-upstream`).
    #[serde(default)]
    pub set_upstream: bool,
    /// Overwrite only what was last fetched (`--force-with-lease`).
    #[serde(default)]
    pub force_with_lease: bool,
    /// Delete this remote branch first (best effort; it must pass allowed_git_ref_prefixes).
    #[serde(default)]
    pub cleanup_ref: Option<String>,
}

/// `git.push`.
pub struct Push;

impl Tool for Push {
    type Args = Args;
    type Output = NetworkOutput;

    fn metadata(&self) -> Metadata {
        Metadata {
            requires_approval: true,
            risk_level: RiskLevel::High,
            side_effects: SideEffects::Irreversible,
            idempotency: Idempotency::BestEffort,
            cost_hint: "medium",
            arg_fields: network_rules(),
            examples: vec![json!({"remote": "origin", "refspec": "feature/x", "set_upstream": true})],
            ..writes(base(
                "git.push",
                "git push [--set-upstream] [--force-with-lease] remote [refspec] (remote \
                 default origin, gated by allowed_git_remotes; refspec and cleanup_ref by \
                 allowed_git_ref_prefixes). The local sandbox has no network: only a \
                 repository inside the workspace can be pushed to, and its hooks never run; a \
                 URL remote is network_disabled.",
                60,
            ))
        }
    }

    async fn run(
        &self,
        ctx: &ToolContext,
        args: Args,
    ) -> Result<Completed<NetworkOutput>, ToolFailure> {
        let cleanup = match args.cleanup_ref.as_deref().map(str::trim) {
            Some(r) if !r.is_empty() => {
                let r = ref_value(r, "cleanup_ref")?;
                check_refspec(ctx, &r)?;
                Some(r)
            }
            _ => None,
        };
        let (remote, refspec) = remote_args(ctx, &args.remote, args.refspec.as_deref())?;
        let repo = Repo::open(ctx).await?;
        let command = remote_command(ctx, &repo, "push", &remote, Direction::Push).await?;
        if let Some(cleanup) = &cleanup {
            // Best effort, as the original: a missing branch is no failure.
            let _ = run_git(
                ctx,
                command.clone().args([remote.clone(), format!(":{cleanup}")]),
                None,
                OUTPUT_BYTES,
            )
            .await;
        }
        let mut command = command;
        if args.set_upstream {
            command = command.arg("--set-upstream");
        }
        if args.force_with_lease {
            command = command.arg("--force-with-lease");
        }
        command = command.arg(remote.as_str()).args(refspec.clone());
        let ran = run_git(ctx, command, None, OUTPUT_BYTES).await?;
        let summary = format!("pushed to {remote}");
        Ok(Completed::new(
            NetworkOutput::new(&ran, remote, refspec, "pushed"),
            summary,
        ))
    }
}
