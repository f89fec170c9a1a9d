//! The `k8s.*` family: the Kubernetes API, for sessions whose runtime is `kubernetes`.
//!
//! One file per tool, as in `tools::fs`. The five read tools (`get_pods`, `get_services`,
//! `get_deployments`, `get_images`, `get_logs`) need only what deploy/'s `workspace-runtime`
//! Role grants; the three delivery tools (`apply_manifest`, `rollout_status`,
//! `restart_deployment`) need `workspace-delivery`'s writes and are offered only when
//! `WORKSPACE_ENABLE_K8S_DELIVERY_TOOLS=true`.
//!
//! What this module owns:
//! - the runtime gating ([`gate`]): a `cluster`-scope tool is refused on a session that does
//!   not run on Kubernetes, and a delivery tool while they are disabled, before policy runs
//!   (invocation acceptance) and in the tool listing;
//! - the namespace every tool works in ([`namespace`]): the session's runner namespace, the
//!   only one the executors' Roles cover; another one is `policy_denied`, as is one the
//!   session's `allowed_k8s_namespaces` metadata leaves out;
//! - the other sessions' runner pods, which no tool shows or reads ([`foreign_runner`]);
//! - the mapping of API errors onto the stable codes ([`api_failure`]).
//!
//! Tools never build a client: the executor hands its own ([`ToolContext::kube`]), and only
//! to kubernetes sessions. Nothing here ever reports that a pod ran: the tools say what the
//! API server answered.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;
use crate::kube::pod::APP_LABEL;
use crate::policy::Denial;
use crate::tools::catalog::Registry;
use crate::tools::{
    Constraints, Idempotency, Metadata, RiskLevel, Scope, SessionContext, SideEffects, ToolContext,
    ToolFailure, ToolSpec,
};

macro_rules! family {
    ($($module:ident => $tool:ident),* $(,)?) => {
        $(mod $module;)*

        /// Adds every tool of the family to `registry`.
        pub fn register(registry: &mut Registry) {
            $(registry.register($module::$tool);)*
        }
    };
}

family! {
    apply_manifest => ApplyManifest,
    get_deployments => GetDeployments,
    get_images => GetImages,
    get_logs => GetLogs,
    get_pods => GetPods,
    get_services => GetServices,
    restart_deployment => RestartDeployment,
    rollout_status => RolloutStatus,
}

mod list;
mod rollout;
#[cfg(test)]
mod tests;

/// `RuntimeRef.kind` of a session whose runner is a pod.
pub const KUBERNETES_RUNTIME: &str = "kubernetes";
/// `RuntimeRef.kind` of a session whose runner is a local sandbox.
pub const LOCAL_RUNTIME: &str = "local";

/// The tools that change the cluster: offered only with `WORKSPACE_ENABLE_K8S_DELIVERY_TOOLS`.
pub const DELIVERY_TOOLS: [&str; 3] = [
    "k8s.apply_manifest",
    "k8s.rollout_status",
    "k8s.restart_deployment",
];

/// The field manager of the service's server-side applies and patches.
pub const FIELD_MANAGER: &str = "workspace";

/// Session metadata key of the (opt-in) namespace allowlist.
pub const ALLOWED_NAMESPACES_KEY: &str = "allowed_k8s_namespaces";

/// Annotation of a runner pod naming its session exactly (labels are lossy).
pub const SESSION_ANNOTATION: &str = "workspace.io/session-id";

/// Whether `tool` is one of the delivery tools.
pub fn is_delivery_tool(tool: &str) -> bool {
    DELIVERY_TOOLS.contains(&tool)
}

/// The runtime gating of the original service, in its order: a `cluster`-scope tool needs a
/// kubernetes session ("tool requires kubernetes runtime" for a local or unprovisioned one,
/// "... (session runtime=<kind>)" for another kind), and on one a delivery tool needs
/// `delivery_enabled`. Other scopes always pass. The API applies it before policy, and the
/// tool listing hides what it refuses.
pub fn gate(
    session: &SessionContext,
    spec: &ToolSpec,
    delivery_enabled: bool,
) -> Result<(), Denial> {
    if spec.scope != Scope::Cluster {
        return Ok(());
    }
    let kind = session.runtime.as_ref().map_or("", |r| r.kind.as_str());
    match kind {
        "" | LOCAL_RUNTIME => Err(Denial::new(
            ErrorCode::PolicyDenied,
            "tool requires kubernetes runtime",
        )),
        KUBERNETES_RUNTIME => {
            if is_delivery_tool(spec.name) && !delivery_enabled {
                Err(Denial::new(
                    ErrorCode::PolicyDenied,
                    "k8s delivery tools are disabled by configuration",
                ))
            } else {
                Ok(())
            }
        }
        other => Err(Denial::new(
            ErrorCode::PolicyDenied,
            format!("tool requires kubernetes runtime (session runtime={other})"),
        )),
    }
}

/// The family's metadata defaults: cluster scope, low risk, read-only.
fn base(name: &'static str, description: &'static str, timeout_seconds: u64) -> Metadata {
    Metadata {
        name,
        description,
        scope: Scope::Cluster,
        side_effects: SideEffects::None,
        risk_level: RiskLevel::Low,
        requires_approval: false,
        idempotency: Idempotency::Guaranteed,
        runs_repository_code: false,
        constraints: Constraints {
            timeout_seconds,
            max_retries: 2,
            output_limit_kb: None,
        },
        preconditions: vec!["the session runs on Kubernetes"],
        postconditions: Vec::new(),
        cost_hint: "low",
        arg_fields: Vec::new(),
        examples: Vec::new(),
    }
}

/// The defaults of a delivery tool: approval, medium risk.
fn delivery(mut metadata: Metadata) -> Metadata {
    metadata.requires_approval = true;
    metadata.risk_level = RiskLevel::Medium;
    metadata.cost_hint = "medium";
    metadata.constraints.max_retries = 0;
    metadata
        .preconditions
        .push("WORKSPACE_ENABLE_K8S_DELIVERY_TOOLS=true");
    metadata
}

/// A Kubernetes object name argument (DNS-1123 subdomain, at most 253 characters); its shape
/// is checked when the tool runs ([`object_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ObjectName(#[schemars(length(min = 1, max = 253))] String);

impl ObjectName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A DNS-1123 label: lower-case alphanumerics and `-`, alphanumeric at both ends.
fn dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// Whether `value` is a Kubernetes object name (a DNS-1123 subdomain).
pub fn is_object_name(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(dns_label)
}

/// `name` checked: a name that is not an object name is `invalid_argument` naming `field`
/// (it could not name anything, and must not reach a URL path).
fn object_name<'a>(field: &str, name: &'a ObjectName) -> Result<&'a str, ToolFailure> {
    if is_object_name(name.as_str()) {
        Ok(name.as_str())
    } else {
        Err(invalid(format!(
            "{field} {:?} is not a Kubernetes object name (lower-case letters, digits, '-' and '.')",
            name.as_str()
        )))
    }
}

fn invalid(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::InvalidArgument, message)
}

fn denied(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::PolicyDenied, message)
}

/// The session's runner namespace and the executor's client: what every tool needs. A
/// session without them never passed the gating; an executor without a client cannot reach
/// the cluster (`unavailable`).
fn cluster(ctx: &ToolContext) -> Result<(kube::Client, String), ToolFailure> {
    let runtime = ctx
        .session
        .runtime
        .as_ref()
        .filter(|r| r.kind == KUBERNETES_RUNTIME);
    let Some(namespace) = runtime.and_then(|r| r.namespace.clone()) else {
        return Err(denied("tool requires kubernetes runtime"));
    };
    let Some(client) = ctx.kube.clone() else {
        return Err(ToolFailure::new(
            ErrorCode::Unavailable,
            "this executor has no Kubernetes API client",
        ));
    };
    Ok((client, namespace))
}

/// The namespace a tool works in: `asked`, or the session's by default. It must be the
/// session's runner namespace (the only one the executors' Roles grant), and pass the
/// session's `allowed_k8s_namespaces` metadata when that is set (comma list; `*`, exact names,
/// `prefix-*`); otherwise `policy_denied` "namespace not allowed".
fn namespace(
    ctx: &ToolContext,
    asked: Option<&str>,
) -> Result<(kube::Client, String), ToolFailure> {
    let (client, own) = cluster(ctx)?;
    let wanted = asked
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(&own);
    if wanted != own {
        return Err(denied(format!(
            "namespace not allowed: {wanted:?} (this session's tools work in namespace {own:?} only)"
        )));
    }
    if let Some(list) = ctx
        .session
        .metadata
        .get(ALLOWED_NAMESPACES_KEY)
        .filter(|l| !l.trim().is_empty())
        && !list
            .split(',')
            .map(str::trim)
            .any(|rule| namespace_matches(rule, wanted))
    {
        return Err(denied(format!(
            "namespace not allowed: {wanted:?} (session metadata {ALLOWED_NAMESPACES_KEY})"
        )));
    }
    Ok((client, own))
}

/// The original's wildcard rule for namespaces: `*`, equality, or one `*` as prefix + suffix.
fn namespace_matches(rule: &str, value: &str) -> bool {
    if rule.is_empty() || value.is_empty() {
        return false;
    }
    if rule == "*" || rule == value {
        return true;
    }
    match rule.split_once('*') {
        Some((prefix, suffix)) if !suffix.contains('*') => {
            value.len() >= prefix.len() + suffix.len()
                && value.starts_with(prefix)
                && value.ends_with(suffix)
        }
        _ => false,
    }
}

/// Whether a pod is the runner pod of another session: those are never shown or read (their
/// labels name other tenants, their logs are other sessions' output).
fn foreign_runner(ctx: &ToolContext, meta: &ObjectMeta) -> bool {
    let runner = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("app"))
        .is_some_and(|app| app == APP_LABEL);
    let owner = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(SESSION_ANNOTATION));
    runner && owner.is_none_or(|id| id != ctx.session.id.as_str())
}

/// A failed API call as a tool failure. The API server's own message is passed on (it names
/// only the object and the verb); transport errors are logged and answered with a fixed
/// message.
///
/// - 403 (the executor's Role does not grant it) → `policy_denied`: the deployment's RBAC is
///   the policy here (e.g. a delivery tool on an executor running as `workspace-runtime`);
/// - 404 → `not_found`; 409 (already exists, or a field-manager conflict) → `conflict`;
/// - 400 and 422 (an invalid object or argument) → `invalid_argument`;
/// - 401, 429 and 5xx, and an unreachable API server → `unavailable` (retryable);
/// - anything else → `execution_failed`.
fn api_failure(what: &str, error: kube::Error) -> ToolFailure {
    match error {
        kube::Error::Api(status) => {
            let (code, detail) = match status.code {
                403 => (ErrorCode::PolicyDenied, "the Kubernetes API forbids it"),
                404 => (ErrorCode::NotFound, "not found"),
                409 => (ErrorCode::Conflict, "conflict"),
                400 | 422 => (ErrorCode::InvalidArgument, "refused as invalid"),
                401 | 429 | 500..=599 => {
                    (ErrorCode::Unavailable, "the Kubernetes API is unavailable")
                }
                _ => (ErrorCode::ExecutionFailed, "failed"),
            };
            let message = if status.message.is_empty() {
                format!("{what}: {detail} (HTTP {})", status.code)
            } else {
                format!("{what}: {detail}: {}", status.message)
            };
            ToolFailure::new(code, message)
        }
        other => {
            tracing::warn!(error = %other, "kubernetes API call failed");
            ToolFailure::new(
                ErrorCode::Unavailable,
                format!("{what}: the Kubernetes API could not be reached"),
            )
        }
    }
}

/// Labels of an object when asked for, else `None` (left out of the output).
fn labels_if(
    include: bool,
    meta: &ObjectMeta,
) -> Option<std::collections::BTreeMap<String, String>> {
    include.then(|| meta.labels.clone().unwrap_or_default())
}

/// A list request's selectors and page size.
fn list_params(
    label_selector: Option<&str>,
    field_selector: Option<&str>,
    limit: u64,
) -> kube::api::ListParams {
    let mut lp = kube::api::ListParams::default().limit(u32::try_from(limit).unwrap_or(u32::MAX));
    if let Some(l) = label_selector.filter(|s| !s.trim().is_empty()) {
        lp = lp.labels(l);
    }
    if let Some(f) = field_selector.filter(|s| !s.trim().is_empty()) {
        lp = lp.fields(f);
    }
    lp
}

/// A selector argument: at most 1024 characters (the API server parses it).
pub type Selector = crate::tools::args::NonEmptyString<1024>;

/// The original's policy rule on `deployment_name` (policy rule 5).
fn deployment_name_rule() -> crate::tools::ArgField {
    crate::tools::ArgField {
        field: "deployment_name",
        max_length: Some(253),
        deny_characters: vec![" ", "\n", "\r", "/", "\\", ";", "|", "&"],
        ..crate::tools::ArgField::default()
    }
}
