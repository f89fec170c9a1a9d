//! `k8s.apply_manifest`: server-side apply of ConfigMaps, Services and Deployments into the
//! session's namespace (a delivery tool).
//!
//! Every document is checked before anything is sent (check before act): YAML or JSON, one or
//! more documents (`---`), at most `max_objects` (20). A document must be one of the allowed
//! kinds (`v1` ConfigMap, `v1` Service, `apps/v1` Deployment; a cluster-scoped kind is named
//! as such), have a valid name, and either no namespace or the session's. It must not carry
//! the runner pods' ownership (`app: workspace-session`, `workspace.io/*` annotations, in its
//! metadata or a Deployment's pod template: the pod janitor trusts those), and a Service must
//! be `ClusterIP` without `externalIPs` (nothing is exposed outside the cluster). The objects
//! are then applied in order: `PATCH` with `application/apply-patch+yaml`, field manager
//! `workspace`, `fieldValidation=Strict`, never `force` (a field another manager owns is a
//! 409 `conflict`), `dryRun=All` when asked. A failure part-way keeps the objects already
//! applied in its partial output. Pod security is the namespace's (deploy/ enforces the
//! `restricted` Pod Security Standard on it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    FIELD_MANAGER, SESSION_ANNOTATION, api_failure, base, delivery, denied, invalid,
    is_object_name, namespace,
};
use crate::kube::pod::APP_LABEL;
use crate::tools::args::{Count, NonEmptyString};
use crate::tools::{ArgField, Completed, Metadata, SideEffects, Tool, ToolContext, ToolFailure};

/// The longest manifest, in characters (the original's policy limit).
pub const MANIFEST_MAX_CHARS: usize = 262_144;

/// The kinds that may be applied: `(apiVersion, kind)`.
pub const ALLOWED_KINDS: [(&str, &str); 3] = [
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
];

/// Kinds that exist cluster-wide (no namespace), named as such when refused.
const CLUSTER_SCOPED: [&str; 16] = [
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "APIService",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "CertificateSigningRequest",
];

/// Arguments of `k8s.apply_manifest`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The manifest: YAML or JSON, one or more documents separated by `---`.
    pub manifest: NonEmptyString<MANIFEST_MAX_CHARS>,
    /// Namespace (default and only allowed value: the session's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Validate and admit on the server without persisting anything (`dryRun=All`).
    #[serde(default)]
    pub dry_run: bool,
    /// Refuse manifests with more than this many objects (default 20, capped at 20).
    #[serde(default)]
    pub max_objects: Count<20, 20>,
}

/// An applied object.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AppliedOut {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The object's uid, as the API server answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Its resource version after the apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Its generation after the apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// Output of `k8s.apply_manifest`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The namespace applied to.
    pub namespace: String,
    /// Whether this was a dry run (nothing persisted).
    pub dry_run: bool,
    /// The objects, in manifest order.
    pub objects: Vec<AppliedOut>,
    /// How many were applied.
    pub count: usize,
}

/// `k8s.apply_manifest`.
pub struct ApplyManifest;

/// A document checked and ready to apply.
#[derive(Debug)]
struct Checked {
    api_version: String,
    kind: String,
    name: String,
    body: Value,
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Whether metadata carries the runner pods' ownership.
fn carries_runner_ownership(meta: Option<&Value>) -> bool {
    let Some(meta) = meta else { return false };
    let app = meta
        .get("labels")
        .and_then(|l| l.get("app"))
        .and_then(Value::as_str);
    let annotated = meta
        .get("annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.keys().any(|k| k.starts_with("workspace.io/")));
    app == Some(APP_LABEL) || annotated
}

/// The documents of a manifest, checked (see the module's rules).
fn check(manifest: &str, ns: &str, max_objects: usize) -> Result<Vec<Checked>, ToolFailure> {
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(manifest).enumerate() {
        let value = Value::deserialize(doc)
            .map_err(|e| invalid(format!("manifest document {}: not YAML or JSON: {e}", i + 1)))?;
        if value.is_null() {
            continue;
        }
        docs.push(value);
    }
    if docs.is_empty() {
        return Err(invalid("manifest holds no object"));
    }
    if docs.len() > max_objects {
        return Err(invalid(format!(
            "manifest holds {} objects; at most {max_objects} are applied at once",
            docs.len()
        )));
    }
    let mut checked = Vec::with_capacity(docs.len());
    for (i, mut doc) in docs.into_iter().enumerate() {
        let at = format!("manifest document {}", i + 1);
        if !doc.is_object() {
            return Err(invalid(format!("{at}: not an object")));
        }
        let api_version = str_at(&doc, "apiVersion").unwrap_or_default().to_owned();
        let kind = str_at(&doc, "kind").unwrap_or_default().to_owned();
        if api_version.is_empty() || kind.is_empty() {
            return Err(invalid(format!("{at}: apiVersion and kind are required")));
        }
        if CLUSTER_SCOPED.contains(&kind.as_str()) {
            return Err(denied(format!(
                "{at}: {kind} is cluster-scoped; only ConfigMap, Service and Deployment objects of the session's namespace may be applied"
            )));
        }
        if !ALLOWED_KINDS.contains(&(api_version.as_str(), kind.as_str())) {
            return Err(denied(format!(
                "{at}: kind {kind} ({api_version}) is not allowed; only v1 ConfigMap, v1 Service and apps/v1 Deployment"
            )));
        }
        let meta = doc.get("metadata");
        let name = meta
            .and_then(|m| str_at(m, "name"))
            .unwrap_or_default()
            .to_owned();
        if !is_object_name(&name) {
            return Err(invalid(format!(
                "{at}: metadata.name {name:?} is not a Kubernetes object name"
            )));
        }
        if meta.and_then(|m| m.get("generateName")).is_some() {
            return Err(invalid(format!("{at}: generateName cannot be applied")));
        }
        match meta.and_then(|m| m.get("namespace")) {
            None | Some(Value::Null) => {}
            Some(Value::String(n)) if n == ns => {}
            Some(other) => {
                return Err(denied(format!(
                    "{at}: namespace not allowed: {other} (objects go to namespace {ns:?} only)"
                )));
            }
        }
        let template_meta = doc.pointer("/spec/template/metadata");
        if carries_runner_ownership(meta) || carries_runner_ownership(template_meta) {
            return Err(denied(format!(
                "{at}: the label app={APP_LABEL} and workspace.io/ annotations (such as {SESSION_ANNOTATION}) belong to runner pods"
            )));
        }
        if kind == "Service" {
            let kind_of = doc.pointer("/spec/type").and_then(Value::as_str);
            if kind_of.is_some_and(|t| t != "ClusterIP") {
                return Err(denied(format!(
                    "{at}: Service type {} is not allowed; only ClusterIP",
                    kind_of.unwrap_or_default()
                )));
            }
            if doc
                .pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                return Err(denied(format!("{at}: Service externalIPs are not allowed")));
            }
        }
        if let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("namespace".into(), Value::String(ns.to_owned()));
        }
        checked.push(Checked {
            api_version,
            kind,
            name,
            body: doc,
        });
    }
    Ok(checked)
}

fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn applied_out(c: &Checked, ns: &str, meta: &ObjectMeta) -> AppliedOut {
    AppliedOut {
        api_version: c.api_version.clone(),
        kind: c.kind.clone(),
        name: c.name.clone(),
        namespace: ns.to_owned(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
    }
}

impl Tool for ApplyManifest {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        let mut m = delivery(Metadata {
            examples: vec![json!({
                "manifest": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  LOG_LEVEL: debug\n",
                "dry_run": true
            })],
            arg_fields: vec![ArgField {
                field: "manifest",
                max_length: Some(MANIFEST_MAX_CHARS),
                ..ArgField::default()
            }],
            ..base(
                "k8s.apply_manifest",
                "Server-side apply (field manager workspace, strict field validation, never \
                 forced) of ConfigMap, Service (ClusterIP) and Deployment objects into the \
                 session's namespace: YAML or JSON, up to 20 documents, all checked before any \
                 is sent; dry_run validates on the server without persisting. Cluster-scoped \
                 and other kinds, other namespaces and the runner pods' labels are refused \
                 (policy_denied); a field owned by another manager is a conflict.",
                90,
            )
        });
        m.side_effects = SideEffects::Reversible;
        m.idempotency = crate::tools::Idempotency::BestEffort;
        m
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let (client, ns) = namespace(ctx, args.namespace.as_deref())?;
        let max = usize::try_from(args.max_objects.get()).unwrap_or(20);
        let objects = check(args.manifest.as_str(), &ns, max)?;
        let mut params = PatchParams::apply(FIELD_MANAGER).validation_strict();
        if args.dry_run {
            params = params.dry_run();
        }
        let mut out = Output {
            namespace: ns.clone(),
            dry_run: args.dry_run,
            objects: Vec::with_capacity(objects.len()),
            count: 0,
        };
        for object in &objects {
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &ns,
                &resource(&object.api_version, &object.kind),
            );
            match api
                .patch(&object.name, &params, &Patch::Apply(&object.body))
                .await
            {
                Ok(applied) => {
                    out.objects.push(applied_out(object, &ns, &applied.metadata));
                    out.count = out.objects.len();
                }
                Err(e) => {
                    let what = format!("applying {} {}", object.kind, object.name);
                    return Err(api_failure(&what, e).with_output(&out));
                }
            }
        }
        let summary = format!(
            "{} {} objects in namespace {ns}",
            if args.dry_run { "dry-run applied" } else { "applied" },
            out.count
        );
        Ok(Completed::new(out, summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;

    const NS: &str = "workspace-runners";

    fn refused(manifest: &str) -> (ErrorCode, String) {
        let f = check(manifest, NS, 20).expect_err(manifest);
        (f.code, f.message)
    }

    #[test]
    fn allowed_kinds_get_the_sessions_namespace() {
        let docs = check(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\",\"namespace\":\"workspace-runners\"}}\n",
            NS,
            20,
        )
        .expect("valid");
        assert_eq!(docs.len(), 2, "the empty document is skipped");
        assert_eq!(docs[0].body["metadata"]["namespace"], NS);
        assert_eq!((docs[1].kind.as_str(), docs[1].name.as_str()), ("Deployment", "web"));
    }

    #[test]
    fn cluster_scoped_and_unlisted_kinds_other_namespaces_and_runner_labels_are_denied() {
        for (manifest, wants) in [
            ("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", "cluster-scoped"),
            ("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: x}\n", "cluster-scoped"),
            ("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n", "kind Secret (v1) is not allowed"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "is not allowed"),
            ("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: x}\n", "is not allowed"),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: kube-system}\n", "namespace not allowed"),
            ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    metadata:\n      labels: {app: workspace-session}\n", "belong to runner pods"),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  annotations: {workspace.io/session-id: session-1}\n", "belong to runner pods"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: LoadBalancer}\n", "only ClusterIP"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {externalIPs: [1.2.3.4]}\n", "externalIPs"),
        ] {
            let (code, message) = refused(manifest);
            assert_eq!(code, ErrorCode::PolicyDenied, "{manifest}: {message}");
            assert!(message.contains(wants), "{manifest}: {message}");
        }
    }

    #[test]
    fn malformed_manifests_are_invalid_arguments() {
        for (manifest, wants) in [
            ("{not: [yaml", "not YAML or JSON"),
            ("---\n", "no object"),
            ("- a\n- b\n", "not an object"),
            ("kind: ConfigMap\nmetadata: {name: x}\n", "apiVersion and kind"),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n", "not a Kubernetes object name"),
        ] {
            let (code, message) = refused(manifest);
            assert_eq!(code, ErrorCode::InvalidArgument, "{manifest}: {message}");
            assert!(message.contains(wants), "{manifest}: {message}");
        }
        let many = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n".repeat(3);
        let f = check(&many, NS, 2).expect_err("too many");
        assert!(f.message.contains("holds 3 objects"), "{}", f.message);
    }
}
