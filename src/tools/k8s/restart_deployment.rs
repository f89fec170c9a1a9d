//! `k8s.restart_deployment`: a rolling restart, as `kubectl rollout restart` does it (a
//! delivery tool).

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::rollout::{self, RolloutOut};
use super::rollout_status::wait_for;
use super::{
    FIELD_MANAGER, ObjectName, api_failure, base, delivery, deployment_name_rule, namespace,
    object_name,
};
use crate::tools::args::Count;
use crate::tools::{Completed, Metadata, SideEffects, Tool, ToolContext, ToolFailure};

/// The pod-template annotation whose change makes the Deployment replace its pods.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Arguments of `k8s.restart_deployment`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The Deployment.
    pub deployment_name: ObjectName,
    /// Namespace (default and only allowed value: the session's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Wait for the new rollout to complete.
    #[serde(default)]
    pub wait_for_rollout: bool,
    /// How long to wait, in seconds (default 120, capped at 1800 and at the tool's own
    /// timeout).
    #[serde(default)]
    pub timeout_seconds: Count<120, 1800>,
    /// Accepted for compatibility and unused: the wait follows a watch, it does not poll.
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
}

/// Output of `k8s.restart_deployment`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The Deployment.
    pub deployment_name: String,
    /// Its namespace.
    pub namespace: String,
    /// The `kubectl.kubernetes.io/restartedAt` value set (RFC 3339).
    pub restarted_at: String,
    /// The Deployment's `metadata.generation` after the patch.
    pub generation: i64,
    /// The rollout, when waited for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutOut>,
}

/// `k8s.restart_deployment`.
pub struct RestartDeployment;

impl Tool for RestartDeployment {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        let mut m = delivery(Metadata {
            examples: vec![
                json!({"deployment_name": "web"}),
                json!({"deployment_name": "web", "wait_for_rollout": true, "timeout_seconds": 150}),
            ],
            arg_fields: vec![deployment_name_rule()],
            ..base(
                "k8s.restart_deployment",
                "Restart a Deployment's pods (a rolling restart: its pod template gets the \
                 kubectl.kubernetes.io/restartedAt annotation, a strategic merge patch); with \
                 wait_for_rollout, wait for the new rollout as k8s.rollout_status does.",
                180,
            )
        });
        m.side_effects = SideEffects::Reversible;
        m.idempotency = crate::tools::Idempotency::BestEffort;
        m
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let (client, ns) = namespace(ctx, args.namespace.as_deref())?;
        let name = object_name("deployment_name", &args.deployment_name)?;
        let api: Api<Deployment> = Api::namespaced(client, &ns);
        let restarted_at = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let patch = json!({
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}}
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patched = api
            .patch(name, &params, &Patch::Strategic(patch))
            .await
            .map_err(|e| api_failure(&format!("restarting deployment {name}"), e))?;
        let mut out = Output {
            deployment_name: name.to_owned(),
            namespace: ns.clone(),
            restarted_at,
            generation: patched.metadata.generation.unwrap_or(0),
            rollout: None,
        };
        if args.wait_for_rollout {
            match rollout::wait(&api, &ns, name, wait_for(ctx, args.timeout_seconds.get())).await {
                Ok(r) => out.rollout = Some(r),
                Err(mut failure) => {
                    // The restart happened: the failure keeps it in its output.
                    let rollout = failure.output.take().and_then(|o| o.to_value().ok());
                    let partial = json!({
                        "deployment_name": out.deployment_name,
                        "namespace": out.namespace,
                        "restarted_at": out.restarted_at,
                        "generation": out.generation,
                        "rollout": rollout,
                    });
                    return Err(failure.with_output(&partial));
                }
            }
        }
        let summary = format!("restarted deployment {name} in namespace {ns}");
        Ok(Completed::new(out, summary))
    }
}
