//! `k8s.get_pods`: the pods of the session's namespace (other sessions' runner pods left out).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::list::list_capped;
use super::{Selector, base, foreign_runner, labels_if, namespace};
use crate::tools::args::Count;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `k8s.get_pods`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Namespace (default and only allowed value: the session's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Label selector (`app=web,tier!=cache`).
    #[serde(default)]
    pub label_selector: Option<Selector>,
    /// Field selector (`status.phase=Running`).
    #[serde(default)]
    pub field_selector: Option<Selector>,
    /// Return at most this many pods (default 100, capped at 500).
    #[serde(default)]
    pub max_pods: Count<100, 500>,
    /// Include each pod's containers.
    #[serde(default)]
    pub include_containers: bool,
    /// Include each pod's labels.
    #[serde(default)]
    pub include_labels: bool,
}

/// A container of a pod.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContainerOut {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Whether it is ready.
    pub ready: bool,
    /// Restarts.
    pub restart_count: i32,
    /// `waiting`, `running`, `terminated` or `unknown`.
    pub state: String,
}

/// A pod.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PodOut {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`, as the API server reports it.
    pub phase: String,
    /// Ready containers.
    pub ready_containers: usize,
    /// Containers.
    pub total_containers: usize,
    /// Restarts of all containers.
    pub restarts: i32,
    /// Node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Pod IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Containers, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerOut>>,
    /// Labels, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Output of `k8s.get_pods`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The namespace listed.
    pub namespace: String,
    /// The pods, in the API server's order.
    pub pods: Vec<PodOut>,
    /// How many were returned.
    pub count: usize,
    /// Whether more pods matched than were returned.
    pub truncated: bool,
}

/// `k8s.get_pods`.
pub struct GetPods;

fn pod_out(pod: &Pod, include_containers: bool, include_labels: bool) -> PodOut {
    let status = pod.status.as_ref();
    let statuses = status
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let spec_containers = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let containers = include_containers.then(|| {
        pod.spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let st = statuses.iter().find(|s| s.name == c.name);
                let state = st.and_then(|s| s.state.as_ref()).map_or("unknown", |s| {
                    if s.running.is_some() {
                        "running"
                    } else if s.terminated.is_some() {
                        "terminated"
                    } else if s.waiting.is_some() {
                        "waiting"
                    } else {
                        "unknown"
                    }
                });
                ContainerOut {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    ready: st.is_some_and(|s| s.ready),
                    restart_count: st.map_or(0, |s| s.restart_count),
                    state: state.into(),
                }
            })
            .collect()
    });
    PodOut {
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into()),
        ready_containers: statuses.iter().filter(|s| s.ready).count(),
        total_containers: spec_containers,
        restarts: statuses.iter().map(|s| s.restart_count).sum(),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        pod_ip: status.and_then(|s| s.pod_ip.clone()),
        created_at: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        containers,
        labels: labels_if(include_labels, &pod.metadata),
    }
}

/// The pods of `namespace` matching the selectors that are not other sessions' runners: at
/// most `max`, and whether more matched.
pub(super) async fn visible_pods(
    ctx: &ToolContext,
    pods: &Api<Pod>,
    label_selector: Option<&str>,
    field_selector: Option<&str>,
    max: u64,
) -> Result<(Vec<Pod>, bool), ToolFailure> {
    list_capped(pods, "listing pods", label_selector, field_selector, max, |p| {
        !foreign_runner(ctx, &p.metadata)
    })
    .await
}

impl Tool for GetPods {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![
                json!({}),
                json!({"label_selector": "app=web", "include_containers": true, "max_pods": 20}),
            ],
            ..base(
                "k8s.get_pods",
                "List the pods of the session's namespace: phase, readiness, restarts, node and \
                 IP, optionally containers and labels. At most max_pods (default 100, capped at \
                 500); truncated tells whether more matched. Runner pods of other sessions are \
                 never listed.",
                30,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let (client, ns) = namespace(ctx, args.namespace.as_deref())?;
        let api: Api<Pod> = Api::namespaced(client, &ns);
        let (pods, truncated) = visible_pods(
            ctx,
            &api,
            args.label_selector.as_deref(),
            args.field_selector.as_deref(),
            args.max_pods.get(),
        )
        .await?;
        let pods: Vec<PodOut> = pods
            .iter()
            .map(|p| pod_out(p, args.include_containers, args.include_labels))
            .collect();
        let summary = format!("{} pods in namespace {ns}", pods.len());
        Ok(Completed::new(
            Output {
                namespace: ns,
                count: pods.len(),
                pods,
                truncated,
            },
            summary,
        ))
    }
}
