//! `k8s.get_services`: the Services of the session's namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::list::list_capped;
use super::{Selector, base, labels_if, namespace};
use crate::tools::args::Count;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `k8s.get_services`.
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
    /// Return at most this many Services (default 100, capped at 500).
    #[serde(default)]
    pub max_services: Count<100, 500>,
    /// Include each Service's labels.
    #[serde(default)]
    pub include_labels: bool,
}

/// A port of a Service.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PortOut {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port.
    pub port: i32,
    /// Target port (a number or a container port name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<String>,
    /// Protocol.
    pub protocol: String,
    /// Node port, for NodePort and LoadBalancer Services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

/// A Service.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServiceOut {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Cluster IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// Ports.
    pub ports: Vec<PortOut>,
    /// Pod selector.
    pub selector: BTreeMap<String, String>,
    /// Labels, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Output of `k8s.get_services`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The namespace listed.
    pub namespace: String,
    /// The Services.
    pub services: Vec<ServiceOut>,
    /// How many were returned.
    pub count: usize,
    /// Whether more matched than were returned.
    pub truncated: bool,
}

/// `k8s.get_services`.
pub struct GetServices;

impl Tool for GetServices {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({}), json!({"label_selector": "app=web"})],
            ..base(
                "k8s.get_services",
                "List the Services of the session's namespace: type, cluster IP, ports and \
                 selector, optionally labels. At most max_services (default 100, capped at \
                 500); truncated tells whether more matched.",
                30,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let (client, ns) = namespace(ctx, args.namespace.as_deref())?;
        let api: Api<Service> = Api::namespaced(client, &ns);
        let (items, truncated) = list_capped(
            &api,
            "listing services",
            args.label_selector.as_deref(),
            args.field_selector.as_deref(),
            args.max_services.get(),
            |_| true,
        )
        .await?;
        let services: Vec<ServiceOut> = items
            .iter()
            .map(|s| {
                let spec = s.spec.clone().unwrap_or_default();
                ServiceOut {
                    name: s.metadata.name.clone().unwrap_or_default(),
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    type_: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
                    cluster_ip: spec.cluster_ip.clone(),
                    ports: spec
                        .ports
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| PortOut {
                            name: p.name,
                            port: p.port,
                            target_port: p.target_port.map(|t| match t {
                                IntOrString::Int(i) => i.to_string(),
                                IntOrString::String(s) => s,
                            }),
                            protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                            node_port: p.node_port,
                        })
                        .collect(),
                    selector: spec.selector.unwrap_or_default(),
                    labels: labels_if(args.include_labels, &s.metadata),
                }
            })
            .collect();
        let summary = format!("{} services in namespace {ns}", services.len());
        Ok(Completed::new(
            Output {
                namespace: ns,
                count: services.len(),
                services,
                truncated,
            },
            summary,
        ))
    }
}
