//! `k8s.get_images`: the container images the pods of the session's namespace run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::get_pods::visible_pods;
use super::{Selector, base, namespace};
use crate::tools::args::Count;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// The most pods looked at for one call.
const MAX_PODS: u64 = 2000;

/// Arguments of `k8s.get_images`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Namespace (default and only allowed value: the session's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Label selector of the pods.
    #[serde(default)]
    pub label_selector: Option<Selector>,
    /// Field selector of the pods.
    #[serde(default)]
    pub field_selector: Option<Selector>,
    /// Return at most this many images (default 100, capped at 500).
    #[serde(default)]
    pub max_images: Count<100, 500>,
    /// Include the workloads using each image (`Pod/<name>`, or the pod's controller such as
    /// `ReplicaSet/<name>`).
    #[serde(default)]
    pub include_workloads: bool,
}

/// An image and where it runs.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ImageOut {
    /// The image reference, as the pod spec gives it.
    pub image: String,
    /// Containers (init containers included) using it.
    pub containers: usize,
    /// Workloads using it, when asked for, sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workloads: Option<Vec<String>>,
}

/// Output of `k8s.get_images`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The namespace looked at.
    pub namespace: String,
    /// The images, sorted.
    pub images: Vec<ImageOut>,
    /// How many were returned.
    pub count: usize,
    /// How many pods were looked at.
    pub pods_scanned: usize,
    /// Whether images (or pods) were left out.
    pub truncated: bool,
}

/// `k8s.get_images`.
pub struct GetImages;

impl Tool for GetImages {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({}), json!({"include_workloads": true})],
            ..base(
                "k8s.get_images",
                "The container images (init containers included) the pods of the session's \
                 namespace run, with how many containers use each and optionally which \
                 workloads. At most max_images (default 100, capped at 500), sorted; runner \
                 pods of other sessions are left out.",
                45,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let (client, ns) = namespace(ctx, args.namespace.as_deref())?;
        let api: Api<Pod> = Api::namespaced(client, &ns);
        let (pods, pods_truncated) = visible_pods(
            ctx,
            &api,
            args.label_selector.as_deref(),
            args.field_selector.as_deref(),
            MAX_PODS,
        )
        .await?;
        let mut images: BTreeMap<String, (usize, std::collections::BTreeSet<String>)> =
            BTreeMap::new();
        for pod in &pods {
            let workload = pod
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.iter().find(|r| r.controller == Some(true)))
                .map_or_else(
                    || format!("Pod/{}", pod.metadata.name.clone().unwrap_or_default()),
                    |r| format!("{}/{}", r.kind, r.name),
                );
            let Some(spec) = &pod.spec else { continue };
            for c in spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
            {
                let Some(image) = c.image.clone() else { continue };
                let entry = images.entry(image).or_default();
                entry.0 += 1;
                entry.1.insert(workload.clone());
            }
        }
        let max = usize::try_from(args.max_images.get()).unwrap_or(usize::MAX);
        let truncated = pods_truncated || images.len() > max;
        let images: Vec<ImageOut> = images
            .into_iter()
            .take(max)
            .map(|(image, (containers, workloads))| ImageOut {
                image,
                containers,
                workloads: args
                    .include_workloads
                    .then(|| workloads.into_iter().collect()),
            })
            .collect();
        let summary = format!("{} images in {} pods of namespace {ns}", images.len(), pods.len());
        Ok(Completed::new(
            Output {
                namespace: ns,
                count: images.len(),
                pods_scanned: pods.len(),
                images,
                truncated,
            },
            summary,
        ))
    }
}
