//! `k8s.get_deployments`: the Deployments of the session's namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::list::list_capped;
use super::{Selector, base, labels_if, namespace};
use crate::tools::args::Count;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `k8s.get_deployments`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Namespace (default and only allowed value: the session's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Label selector.
    #[serde(default)]
    pub label_selector: Option<Selector>,
    /// Field selector.
    #[serde(default)]
    pub field_selector: Option<Selector>,
    /// Return at most this many Deployments (default 100, capped at 500).
    #[serde(default)]
    pub max_deployments: Count<100, 500>,
    /// Include each Deployment's containers (name and image).
    #[serde(default)]
    pub include_containers: bool,
    /// Include each Deployment's labels.
    #[serde(default)]
    pub include_labels: bool,
}

/// A container of a Deployment's pod template.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContainerOut {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
}

/// A Deployment.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeploymentOut {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
    /// Replicas of the current template.
    pub updated_replicas: i32,
    /// Available replicas.
    pub available_replicas: i32,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`.
    pub observed_generation: i64,
    /// Containers, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerOut>>,
    /// Labels, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Output of `k8s.get_deployments`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The namespace listed.
    pub namespace: String,
    /// The Deployments.
    pub deployments: Vec<DeploymentOut>,
    /// How many were returned.
    pub count: usize,
    /// Whether more matched than were returned.
    pub truncated: bool,
}

/// `k8s.get_deployments`.
pub struct GetDeployments;

impl Tool for GetDeployments {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({}), json!({"include_containers": true})],
            ..base(
                "k8s.get_deployments",
                "List the Deployments of the session's namespace: desired, ready, updated and \
                 available replicas and generations, optionally containers and labels. At most \
                 max_deployments (default 100, capped at 500); truncated tells whether more \
                 matched.",
                30,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let (client, ns) = namespace(ctx, args.namespace.as_deref())?;
        let api: Api<Deployment> = Api::namespaced(client, &ns);
        let (items, truncated) = list_capped(
            &api,
            "listing deployments",
            args.label_selector.as_deref(),
            args.field_selector.as_deref(),
            args.max_deployments.get(),
            |_| true,
        )
        .await?;
        let deployments: Vec<DeploymentOut> = items
            .iter()
            .map(|d| {
                let status = d.status.clone().unwrap_or_default();
                let spec = d.spec.as_ref();
                DeploymentOut {
                    name: d.metadata.name.clone().unwrap_or_default(),
                    namespace: d.metadata.namespace.clone().unwrap_or_default(),
                    replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
                    ready_replicas: status.ready_replicas.unwrap_or(0),
                    updated_replicas: status.updated_replicas.unwrap_or(0),
                    available_replicas: status.available_replicas.unwrap_or(0),
                    generation: d.metadata.generation.unwrap_or(0),
                    observed_generation: status.observed_generation.unwrap_or(0),
                    containers: args.include_containers.then(|| {
                        spec.and_then(|s| s.template.spec.as_ref())
                            .map(|p| p.containers.as_slice())
                            .unwrap_or_default()
                            .iter()
                            .map(|c| ContainerOut {
                                name: c.name.clone(),
                                image: c.image.clone().unwrap_or_default(),
                            })
                            .collect()
                    }),
                    labels: labels_if(args.include_labels, &d.metadata),
                }
            })
            .collect();
        let summary = format!("{} deployments in namespace {ns}", deployments.len());
        Ok(Completed::new(
            Output {
                namespace: ns,
                count: deployments.len(),
                deployments,
                truncated,
            },
            summary,
        ))
    }
}
