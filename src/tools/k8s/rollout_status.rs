//! `k8s.rollout_status`: waits for a Deployment's rollout to complete (a delivery tool).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::rollout::{self, RolloutOut};
use super::{ObjectName, base, delivery, deployment_name_rule, namespace, object_name};
use crate::tools::args::Count;
use crate::tools::{Completed, Idempotency, Metadata, Tool, ToolContext, ToolFailure};

/// Time kept back from the tool's deadline for the last look and the answer.
pub(super) const MARGIN: Duration = Duration::from_secs(3);

/// Arguments of `k8s.rollout_status`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The Deployment.
    pub deployment_name: ObjectName,
    /// Namespace (default and only allowed value: the session's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// How long to wait, in seconds (default 60, capped at 1800 and at the tool's own
    /// timeout).
    #[serde(default)]
    pub timeout_seconds: Count<60, 1800>,
    /// Accepted for compatibility and unused: the wait follows a watch, it does not poll.
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
}

/// `k8s.rollout_status`.
pub struct RolloutStatus;

/// How long a wait asked for `asked` seconds may last: up to the tool's deadline less
/// [`MARGIN`].
pub(super) fn wait_for(ctx: &ToolContext, asked: u64) -> Duration {
    let left = ctx
        .deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(MARGIN);
    Duration::from_secs(asked).min(left)
}

impl Tool for RolloutStatus {
    type Args = Args;
    type Output = RolloutOut;

    fn metadata(&self) -> Metadata {
        let mut m = delivery(Metadata {
            examples: vec![json!({"deployment_name": "web", "timeout_seconds": 90})],
            arg_fields: vec![deployment_name_rule()],
            ..base(
                "k8s.rollout_status",
                "Wait until a Deployment's rollout completes (every replica updated and \
                 available, as kubectl rollout status decides), up to timeout_seconds (default \
                 60; the tool's timeout is 120 s). A rollout still going at the end is \
                 `timeout`, one past its progress deadline `execution_failed`, both with the \
                 last observation. Observations are capped at 50 (truncated, \
                 total_observations).",
                120,
            )
        });
        m.idempotency = Idempotency::Guaranteed;
        m
    }

    async fn run(
        &self,
        ctx: &ToolContext,
        args: Args,
    ) -> Result<Completed<RolloutOut>, ToolFailure> {
        let (client, ns) = namespace(ctx, args.namespace.as_deref())?;
        let name = object_name("deployment_name", &args.deployment_name)?;
        let api: Api<Deployment> = Api::namespaced(client, &ns);
        let out = rollout::wait(&api, &ns, name, wait_for(ctx, args.timeout_seconds.get())).await?;
        let summary = out.message.clone();
        Ok(Completed::new(out, summary))
    }
}
