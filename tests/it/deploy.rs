//! `deploy/`: every manifest validates against the Kubernetes schemas (kubernetes-validate, the
//! 1.33 OpenAPI schemas it ships, strict: an unknown field fails) and the Prometheus Operator
//! resources against their CRDs' schemas (tests/crd-validate, a node script over
//! @kubernetes-models/prometheus-operator); then what the schemas cannot say: the pods are
//! hardened, every role has an egress allowlist, runner pods get nothing in or out and no
//! token, the RBAC split holds, the roles set only settings the binary reads, and the alerts
//! parse and select metrics the service exports.
//!
//! The validators are installed by `.ci/run` (`pip install kubernetes-validate==1.37.0`,
//! `npm ci --prefix tests/crd-validate`); a missing one fails these tests with that hint,
//! never skips them. Each validator is also shown a broken manifest, which it must refuse.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Deserialize as _;
use serde_json::{Value, json};

/// The Kubernetes release whose schemas the manifests must satisfy: the lowest supported API
/// server (the same as the k8s-openapi feature).
const KUBERNETES_VERSION: &str = "1.33.0";
const KUBERNETES_VALIDATE_HINT: &str = "python3 -m pip install kubernetes-validate==1.37.0";
const CRD_VALIDATE_HINT: &str = "npm ci --prefix tests/crd-validate";
/// Kinds that are not part of Kubernetes: validated against their CRDs' schemas instead.
const CRD_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A program installed by pip: `$<env>` if set, else Python's scripts directories, else `PATH`.
/// Panics with the install hint when it is nowhere.
pub fn python_tool(name: &str, env: &str, hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env}={} is not a file ({hint})",
            path.display()
        );
        return path;
    }
    let mut candidates: Vec<PathBuf> = crate::nats::python_scripts_dirs()
        .into_iter()
        .map(|dir| dir.join(name))
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(name)));
    }
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run `{hint}` (or set {env} to the program)")
        })
}

fn kubernetes_validate() -> PathBuf {
    python_tool(
        "kubernetes-validate",
        "WORKSPACE_TEST_KUBERNETES_VALIDATE",
        KUBERNETES_VALIDATE_HINT,
    )
}

/// Every `.yaml` file under `deploy/`, sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![repository().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("deploy/ is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "deploy/ holds no manifest");
    files
}

/// Every document of every manifest, as JSON.
fn resources() -> Vec<Value> {
    let mut all = Vec::new();
    for file in manifest_files() {
        let text = std::fs::read_to_string(&file).expect("manifest is UTF-8");
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", file.display()));
            if !value.is_null() {
                all.push(value);
            }
        }
    }
    all
}

fn of_kind<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|r| r["kind"] == kind).collect()
}

fn name(resource: &Value) -> String {
    format!(
        "{}/{}/{}",
        resource["kind"].as_str().unwrap_or("?"),
        resource["metadata"]["namespace"].as_str().unwrap_or("-"),
        resource["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn one<'a>(all: &'a [Value], kind: &str, namespace: &str, object: &str) -> &'a Value {
    all.iter()
        .find(|r| {
            r["kind"] == kind
                && r["metadata"]["namespace"] == namespace
                && r["metadata"]["name"] == object
        })
        .unwrap_or_else(|| panic!("deploy/ has no {kind} {namespace}/{object}"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Runs kubernetes-validate on `files`: (success, output).
fn run_kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(kubernetes_validate())
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let files = manifest_files();
    let (ok, output) = run_kubernetes_validate(&files);
    assert!(ok, "kubernetes-validate refused deploy/:\n{output}");
    // A kind it has no schema for is only a warning to it: only the CRD kinds (validated
    // below) may be unknown, so a misspelt kind or apiVersion fails here.
    for line in output
        .lines()
        .filter(|l| l.contains("Couldn't find schema"))
    {
        assert!(
            CRD_KINDS.iter().any(|kind| line.contains(&format!(
                "kind {kind} with api version monitoring.coreos.com/v1"
            ))),
            "no schema checked this resource: {line}"
        );
    }
    let passed = output
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    let all = resources();
    let core = all
        .iter()
        .filter(|r| !CRD_KINDS.contains(&r["kind"].as_str().unwrap_or("")))
        .count();
    assert_eq!(passed, core, "every core resource is validated:\n{output}");
}

#[test]
fn the_kubernetes_validator_refuses_an_unknown_field_and_a_wrong_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: 50053\n      targetPot: http\n",
    )
    .expect("write");
    let (ok, output) = run_kubernetes_validate(&[unknown]);
    assert!(
        !ok && output.contains("targetPot"),
        "accepted a misspelt field:\n{output}"
    );
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: two\n  selector: {}\n  template: {}\n",
    )
    .expect("write");
    let (ok, output) = run_kubernetes_validate(&[wrong]);
    assert!(!ok, "accepted replicas: two:\n{output}");
}

/// Runs tests/crd-validate on `resources`: (success, output).
fn run_crd_validate(resources: &[&Value]) -> (bool, String) {
    let dir = repository().join("tests/crd-validate");
    assert!(
        dir.join("node_modules/@kubernetes-models/prometheus-operator")
            .is_dir(),
        "the CRD schemas are not installed: run `{CRD_VALIDATE_HINT}` (needs node and npm)"
    );
    let mut child = Command::new("node")
        .arg("validate.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("node does not run ({e}): install nodejs, then `{CRD_VALIDATE_HINT}`")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&serde_json::to_vec(resources).expect("JSON"))
        .expect("write to node");
    let output = child.wait_with_output().expect("node finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_prometheus_operator_resources_validate_against_their_crd_schemas() {
    let all = resources();
    let crds: Vec<&Value> = all
        .iter()
        .filter(|r| CRD_KINDS.contains(&r["kind"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(crds.len(), 2, "one ServiceMonitor and one PrometheusRule");
    let (ok, output) = run_crd_validate(&crds);
    assert!(ok, "CRD schema validation failed:\n{output}");
    assert_eq!(
        output.lines().filter(|l| l.starts_with("ok ")).count(),
        2,
        "{output}"
    );

    // The validator is not a no-op: a rule without `expr` and a malformed interval fail.
    let mut rule = one(&all, "PrometheusRule", "workspace", "workspace").clone();
    rule["spec"]["groups"][0]["rules"][0]
        .as_object_mut()
        .expect("rule")
        .remove("expr");
    let mut monitor = one(&all, "ServiceMonitor", "workspace", "workspace").clone();
    monitor["spec"]["endpoints"][0]["interval"] = json!("half a minute");
    for broken in [&rule, &monitor] {
        let (ok, output) = run_crd_validate(&[broken]);
        assert!(
            !ok && output.contains("invalid"),
            "accepted a broken {}:\n{output}",
            name(broken)
        );
    }
}

/// The Deployments of the service.
fn deployments(all: &[Value]) -> Vec<&Value> {
    let found = of_kind(all, "Deployment");
    let components: BTreeSet<&str> = found
        .iter()
        .filter_map(|d| {
            d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
        })
        .collect();
    assert_eq!(
        components,
        BTreeSet::from(["api", "executor", "projector"]),
        "one Deployment per role"
    );
    found
}

/// Whether an image reference names its registry and a tag or digest (never `latest`).
fn fully_qualified(image: &str) -> bool {
    let Some((registry, rest)) = image.split_once('/') else {
        return false;
    };
    let tagged = rest.contains('@')
        || rest
            .rsplit_once(':')
            .is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest" && !tag.contains('/'));
    (registry.contains('.') || registry.contains(':')) && tagged
}

#[test]
fn every_pod_of_the_service_is_hardened() {
    let all = resources();
    for deployment in deployments(&all) {
        let at = name(deployment);
        let pod = &deployment["spec"]["template"]["spec"];
        let security = &pod["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{at}: runAsNonRoot");
        assert!(
            security["runAsUser"].as_u64().is_some_and(|u| u > 0),
            "{at}: runAsUser is not root"
        );
        assert!(
            security["runAsGroup"].as_u64().is_some_and(|g| g > 0),
            "{at}: runAsGroup is not root"
        );
        assert_eq!(
            security["seccompProfile"]["type"], "RuntimeDefault",
            "{at}: seccomp"
        );
        assert_ne!(pod["hostNetwork"], true, "{at}: hostNetwork");
        assert_ne!(pod["hostPID"], true, "{at}: hostPID");
        assert_ne!(pod["hostIPC"], true, "{at}: hostIPC");
        let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
        assert!(
            volumes.iter().all(|v| v.get("hostPath").is_none()),
            "{at}: a hostPath volume"
        );
        let containers: Vec<&Value> = pod["containers"]
            .as_array()
            .into_iter()
            .chain(pod["initContainers"].as_array())
            .flatten()
            .collect();
        assert!(!containers.is_empty(), "{at}: no container");
        for container in containers {
            let at = format!("{at} container {}", container["name"]);
            let c = &container["securityContext"];
            assert_eq!(
                c["allowPrivilegeEscalation"], false,
                "{at}: allowPrivilegeEscalation"
            );
            assert_eq!(
                c["readOnlyRootFilesystem"], true,
                "{at}: readOnlyRootFilesystem"
            );
            assert_ne!(c["privileged"], true, "{at}: privileged");
            assert_ne!(c["runAsNonRoot"], false, "{at}: runAsNonRoot overridden");
            assert_ne!(c["runAsUser"], 0, "{at}: runs as root");
            assert_eq!(
                strings(&c["capabilities"]["drop"]),
                ["ALL"],
                "{at}: drops every capability"
            );
            assert!(
                c["capabilities"].get("add").is_none(),
                "{at}: adds a capability"
            );
            let resources = &container["resources"];
            for bound in ["requests", "limits"] {
                for what in ["cpu", "memory"] {
                    assert!(
                        resources[bound][what].is_string(),
                        "{at}: resources.{bound}.{what}"
                    );
                }
            }
            let image = container["image"].as_str().unwrap_or("");
            assert!(
                fully_qualified(image),
                "{at}: image {image:?} is not fully qualified"
            );
        }
        let main = &pod["containers"][0];
        assert_eq!(
            main["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{at}: readiness probe"
        );
        assert_eq!(
            main["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{at}: liveness probe"
        );
        let ports = main["ports"].as_array().cloned().unwrap_or_default();
        assert!(
            ports
                .iter()
                .any(|p| p["containerPort"] == 50053 && p["name"] == "http"),
            "{at}: serves on 50053"
        );
        // Only the executors talk to the Kubernetes API.
        let component =
            &deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"];
        let account = pod["serviceAccountName"].as_str().unwrap_or("default");
        assert_ne!(
            account, "default",
            "{at}: runs as the namespace's default account"
        );
        if component == "executor" {
            assert_eq!(
                account, "workspace-runtime",
                "{at}: executors run as workspace-runtime"
            );
        } else {
            assert_eq!(
                pod["automountServiceAccountToken"], false,
                "{at}: mounts an API token"
            );
        }
    }
}

#[test]
fn the_api_service_is_on_50053_and_api_and_executors_autoscale_with_disruption_budgets() {
    let all = resources();
    let service = one(&all, "Service", "workspace", "workspace");
    assert_eq!(service["spec"]["ports"][0]["port"], 50053);
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"],
        "api"
    );
    for role in ["api", "executor"] {
        let deployment = format!("workspace-{role}");
        let hpa = one(&all, "HorizontalPodAutoscaler", "workspace", &deployment);
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], deployment.as_str());
        assert!(
            hpa["spec"]["minReplicas"].as_u64().is_some_and(|n| n >= 2),
            "{role}: at least 2 replicas"
        );
        let pdb = one(&all, "PodDisruptionBudget", "workspace", &deployment);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            role
        );
    }
    one(
        &all,
        "PodDisruptionBudget",
        "workspace",
        "workspace-projector",
    );
}

/// The NetworkPolicies of `namespace` that select a pod with `labels` for `direction`.
fn policies_for<'a>(
    all: &'a [Value],
    namespace: &str,
    labels: &serde_json::Map<String, Value>,
    direction: &str,
) -> Vec<&'a Value> {
    of_kind(all, "NetworkPolicy")
        .into_iter()
        .filter(|p| p["metadata"]["namespace"] == namespace)
        .filter(|p| strings(&p["spec"]["policyTypes"]).contains(&direction))
        .filter(|p| {
            p["spec"]["podSelector"]["matchLabels"]
                .as_object()
                .map(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
                .unwrap_or(true)
        })
        .collect()
}

#[test]
fn every_role_has_an_egress_allowlist_and_only_executors_reach_the_kubernetes_api() {
    let all = resources();
    for deployment in deployments(&all) {
        let at = name(deployment);
        let labels = deployment["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .expect("pod labels");
        let egress = policies_for(&all, "workspace", labels, "Egress");
        assert!(
            egress.iter().any(|p| p["spec"]["podSelector"] == json!({}) && p["spec"].get("egress").is_none()),
            "{at}: no default-deny egress policy"
        );
        let mut ports = BTreeSet::new();
        for policy in &egress {
            for rule in policy["spec"]["egress"].as_array().into_iter().flatten() {
                let to = rule["to"].as_array().cloned().unwrap_or_default();
                assert!(
                    !to.is_empty(),
                    "{}: an egress rule to anywhere",
                    name(policy)
                );
                for peer in &to {
                    if let Some(cidr) = peer["ipBlock"]["cidr"].as_str() {
                        assert!(!cidr.ends_with("/0"), "{}: egress to {cidr}", name(policy));
                    }
                }
                let rule_ports = rule["ports"].as_array().cloned().unwrap_or_default();
                assert!(
                    !rule_ports.is_empty(),
                    "{}: an egress rule on every port",
                    name(policy)
                );
                ports.extend(rule_ports.iter().filter_map(|p| p["port"].as_u64()));
            }
        }
        let component = labels["app.kubernetes.io/component"].as_str().unwrap_or("");
        let mut expected = BTreeSet::from([53, 4222, 6379]);
        if component == "executor" {
            expected.extend([443, 6443]);
        }
        assert_eq!(
            ports,
            expected,
            "{at}: egress ports (DNS, NATS, Valkey{})",
            if component == "executor" {
                ", the Kubernetes API"
            } else {
                ""
            }
        );
        let ingress = policies_for(&all, "workspace", labels, "Ingress");
        assert!(
            ingress.iter().any(
                |p| p["spec"]["podSelector"] == json!({}) && p["spec"].get("ingress").is_none()
            ),
            "{at}: no default-deny ingress policy"
        );
        for policy in ingress {
            for rule in policy["spec"]["ingress"].as_array().into_iter().flatten() {
                let ports: Vec<u64> = rule["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["port"].as_u64())
                    .collect();
                assert_eq!(ports, [50053], "{}: ingress only on 50053", name(policy));
            }
        }
    }
}

#[test]
fn runner_pods_get_no_traffic_in_or_out_and_no_api_token() {
    let all = resources();
    let policies: Vec<&Value> = of_kind(&all, "NetworkPolicy")
        .into_iter()
        .filter(|p| p["metadata"]["namespace"] == "workspace-runners")
        .collect();
    let deny = policies
        .iter()
        .find(|p| p["spec"]["podSelector"] == json!({}))
        .expect("a deny-all policy for every runner pod");
    assert_eq!(strings(&deny["spec"]["policyTypes"]), ["Ingress", "Egress"]);
    assert!(
        deny["spec"].get("ingress").is_none() && deny["spec"].get("egress").is_none(),
        "no rule lets anything through"
    );
    // The only other one: egress for the clone, to DNS and to listed git hosts on 443 and 22,
    // for pods the pod spec labels as cloning; never ingress, never the whole network.
    let others: Vec<&&Value> = policies
        .iter()
        .filter(|p| p["spec"]["podSelector"] != json!({}))
        .collect();
    assert_eq!(
        others.len(),
        1,
        "deny-all and the clone's egress, nothing else"
    );
    for policy in others {
        let at = name(policy);
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"],
            json!({ workspace::kube::pod::GIT_EGRESS_LABEL: "true" }),
            "{at}: selects only cloning pods"
        );
        assert_eq!(strings(&policy["spec"]["policyTypes"]), ["Egress"], "{at}");
        for rule in policy["spec"]["egress"].as_array().into_iter().flatten() {
            let ports: BTreeSet<u64> = rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            for peer in rule["to"].as_array().expect("a destination") {
                match peer["ipBlock"]["cidr"].as_str() {
                    Some(cidr) => {
                        assert!(!cidr.ends_with("/0"), "{at}: egress to {cidr}");
                        assert_eq!(
                            ports,
                            BTreeSet::from([22, 443]),
                            "{at}: git hosts on 22 and 443"
                        );
                    }
                    None => {
                        assert_eq!(
                            peer["podSelector"]["matchLabels"]["k8s-app"], "kube-dns",
                            "{at}"
                        );
                        assert_eq!(ports, BTreeSet::from([53]), "{at}: DNS");
                    }
                }
            }
        }
    }

    let account = one(
        &all,
        "ServiceAccount",
        "workspace-runners",
        "workspace-runner",
    );
    assert_eq!(
        account["automountServiceAccountToken"], false,
        "runner pods mount no token"
    );
    for binding in of_kind(&all, "RoleBinding")
        .into_iter()
        .chain(of_kind(&all, "ClusterRoleBinding"))
    {
        for subject in binding["subjects"].as_array().into_iter().flatten() {
            assert_ne!(
                subject["name"],
                "workspace-runner",
                "{} grants the runner account a role",
                name(binding)
            );
        }
    }
    let namespace = one_namespace(&all, "workspace-runners");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

fn one_namespace<'a>(all: &'a [Value], namespace: &str) -> &'a Value {
    all.iter()
        .find(|r| r["kind"] == "Namespace" && r["metadata"]["name"] == namespace)
        .unwrap_or_else(|| panic!("deploy/ has no Namespace {namespace}"))
}

/// (apiGroup, resource) → verbs a Role grants.
fn grants(role: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.entry((group.to_owned(), resource.to_owned()))
                    .or_default()
                    .extend(strings(&rule["verbs"]).into_iter().map(str::to_owned));
            }
        }
    }
    out
}

#[test]
fn the_runtime_role_cannot_change_workloads_and_the_delivery_role_can() {
    let all = resources();
    assert!(
        of_kind(&all, "ClusterRole").is_empty() && of_kind(&all, "ClusterRoleBinding").is_empty(),
        "no cluster-wide grants"
    );
    let runtime = grants(one(&all, "Role", "workspace-runners", "workspace-runtime"));
    let writes = [
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "*",
    ];
    for ((group, resource), verbs) in &runtime {
        assert!(
            !verbs.contains("*") && resource != "*" && group != "*",
            "runtime: wildcard grant on {group}/{resource}"
        );
        assert_ne!(resource, "secrets", "runtime reads no Secret");
        if resource != "pods" && resource != "pods/exec" {
            assert!(
                verbs.iter().all(|v| !writes.contains(&v.as_str())),
                "runtime may {verbs:?} {group}/{resource}"
            );
        }
    }
    assert!(
        runtime[&(String::new(), "pods".into())].contains("create"),
        "runtime creates runner pods"
    );
    assert!(
        runtime[&(String::new(), "pods/exec".into())].contains("create"),
        "runtime execs into runner pods"
    );

    let delivery = grants(one(&all, "Role", "workspace-runners", "workspace-delivery"));
    for (group, resource) in [
        ("apps", "deployments"),
        ("", "configmaps"),
        ("", "services"),
    ] {
        let verbs = &delivery[&(group.to_owned(), resource.to_owned())];
        for verb in ["create", "update", "patch"] {
            assert!(verbs.contains(verb), "delivery may {verb} {resource}");
        }
    }
    assert!(
        delivery.keys().all(|(_, r)| r != "secrets"),
        "delivery reads no Secret"
    );

    let bound = |binding: &str| -> Vec<String> {
        one(&all, "RoleBinding", "workspace-runners", binding)["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "{}/{}",
                    s["namespace"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    assert_eq!(
        bound("workspace-delivery"),
        ["workspace/workspace-delivery"],
        "only the delivery account gets delivery"
    );
    assert!(bound("workspace-runtime").contains(&"workspace/workspace-runtime".to_owned()));
}

/// The environment variables the binary's `role` subcommand reads (from its `--help`).
fn settings_of(role: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_workspace"))
        .args([role, "--help"])
        .output()
        .expect("workspace --help runs");
    assert!(output.status.success(), "workspace {role} --help failed");
    // Joined on one line: clap may wrap a long help line between `[env:` and the name.
    let help = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect();
    assert!(
        names.contains("NATS_URL"),
        "workspace {role} --help lists its settings"
    );
    names
}

#[test]
fn the_roles_run_the_binarys_subcommands_with_settings_it_reads() {
    let all = resources();
    let shared = one(&all, "ConfigMap", "workspace", "workspace-env")["data"]
        .as_object()
        .expect("workspace-env data")
        .clone();
    for deployment in deployments(&all) {
        let at = name(deployment);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let role = strings(&container["args"]);
        assert_eq!(role.len(), 1, "{at}: one argument, the role");
        let known = settings_of(role[0]);
        let from = strings(
            &container["envFrom"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["configMapRef"]["name"].clone())
                .collect::<Value>(),
        )
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        assert_eq!(from, ["workspace-env"], "{at}: the shared settings");
        let mut names: Vec<String> = shared.keys().cloned().collect();
        names.extend(
            container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["name"].as_str().map(str::to_owned)),
        );
        for name in names {
            assert!(
                known.contains(&name),
                "{at} sets {name}, which `workspace {}` does not read",
                role[0]
            );
        }
    }
}

#[test]
fn the_api_authenticates_with_trusted_headers_and_a_token_from_a_secret() {
    let all = resources();
    let api = one(&all, "Deployment", "workspace", "workspace-api");
    let env = api["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("api env");
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("the api does not set {name}"))
    };
    assert_eq!(var("WORKSPACE_AUTH_MODE")["value"], "trusted_headers");
    let token = var("WORKSPACE_AUTH_SHARED_TOKEN");
    assert!(
        token.get("value").is_none(),
        "the token is never written in a manifest"
    );
    assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], "workspace-auth");
    assert_eq!(token["valueFrom"]["secretKeyRef"]["key"], "shared_token");
    // No secret value anywhere: no Secret objects, no literal password or token variables.
    assert!(
        of_kind(&all, "Secret").is_empty(),
        "deploy/ ships no Secret"
    );
    for deployment in deployments(&all) {
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let n = e["name"].as_str().unwrap_or("");
            if n.contains("PASSWORD") || n.contains("TOKEN") {
                assert!(
                    e.get("value").is_none(),
                    "{}: {n} is a literal",
                    name(deployment)
                );
            }
        }
    }
}

/// The metric families `/metrics` exports, from the service's own renderer, by the name a
/// query selects and type: in OpenMetrics a counter family `x` is sampled as `x_total`.
fn exported_metrics() -> BTreeMap<String, String> {
    let metrics = workspace::telemetry::Metrics::default();
    // A family is exported once it has a series: one finished and one denied invocation.
    for (status, error) in [
        ("succeeded", Value::Null),
        (
            "denied",
            json!({"code": "policy_denied", "message": "no", "retryable": false}),
        ),
    ] {
        let view: workspace_projections::InvocationView = serde_json::from_value(json!({
            "id": "inv-1", "session_id": "session-1", "tool_name": "fs.read_file",
            "correlation_id": null, "status": status, "approved": false,
            "started_at": "2026-01-01T00:00:00Z", "run_started_at": null, "completed_at": null,
            "duration_ms": 1, "duration_ns": 1_000_000, "trace_name": "workspace.tools",
            "span_name": "fs.read_file", "exit_code": null, "output": null, "output_ref": null,
            "logs": [], "logs_ref": null, "artifacts": [], "error": error, "version": 3
        }))
        .expect("an invocation view");
        metrics.observe_invocation(&view);
    }
    metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| match t {
            "counter" => (format!("{n}_total"), t.to_owned()),
            _ => (n.to_owned(), t.to_owned()),
        })
        .collect()
}

/// Every vector selector of `expr`: (metric name, label matchers).
fn selectors(expr: &promql_parser::parser::Expr, out: &mut Vec<(String, Vec<(String, String)>)>) {
    use promql_parser::parser::Expr;
    let labels = |m: &promql_parser::label::Matchers| {
        m.matchers
            .iter()
            .map(|m| (m.name.clone(), m.value.clone()))
            .collect::<Vec<_>>()
    };
    match expr {
        Expr::VectorSelector(v) => {
            out.push((v.name.clone().unwrap_or_default(), labels(&v.matchers)))
        }
        Expr::MatrixSelector(m) => out.push((
            m.vs.name.clone().unwrap_or_default(),
            labels(&m.vs.matchers),
        )),
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::Extension(_) | Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
    }
}

#[test]
fn the_four_alerts_parse_and_select_only_metrics_the_service_exports() {
    let all = resources();
    let rule = one(&all, "PrometheusRule", "workspace", "workspace");
    let rules: Vec<&Value> = rule["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    let alerts: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        alerts,
        BTreeSet::from([
            "WorkspaceDown",
            "WorkspaceInvocationDeniedRateHigh",
            "WorkspaceInvocationFailureRateHigh",
            "WorkspaceP95InvocationLatencyHigh",
        ])
    );
    let exported = exported_metrics();
    for family in ["invocations_total", "denied_total", "duration_ms"] {
        assert!(
            exported.contains_key(family),
            "/metrics no longer exports {family}: {exported:?}"
        );
    }
    let statuses: Vec<&str> = workspace_events::InvocationStatus::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect();
    for rule in rules {
        let alert = rule["alert"].as_str().unwrap_or("?");
        let expr = rule["expr"].as_str().expect("expr");
        let parsed = promql_parser::parser::parse(expr)
            .unwrap_or_else(|e| panic!("{alert}: {expr} is not PromQL: {e}"));
        let mut found = Vec::new();
        selectors(&parsed, &mut found);
        assert!(!found.is_empty(), "{alert} selects nothing");
        for (metric, matchers) in found {
            // `up` is Prometheus's own, one per scrape target.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    metric
                        .strip_suffix(s)
                        .filter(|f| exported.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(&metric);
            assert!(
                metric == "up" || exported.contains_key(family),
                "{alert} selects {metric}, which /metrics does not export"
            );
            for (label, value) in matchers {
                if label == "status" {
                    assert!(
                        statuses.contains(&value.as_str()),
                        "{alert}: status {value:?} is not a terminal status {statuses:?}"
                    );
                }
                if label == "namespace" {
                    assert_eq!(value, "workspace", "{alert}: the service's namespace");
                }
            }
        }
        assert!(rule["labels"]["severity"].is_string(), "{alert}: severity");
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{alert}: summary"
        );
    }
}
