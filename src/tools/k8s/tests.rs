//! The `k8s.*` tools against kube's tower-test mock of the API server: each test scripts the
//! answers in order and then checks every request the tool made (method, path, query, body
//! and content type), so a tool that asks for something else, in another order, or one request
//! more or less, fails. No cluster is involved: these tests show what the tools ask and how
//! they read answers, never that anything ran.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use workspace_events::{Principal, RuntimeRef};

use super::*;
use crate::ids::SessionId;
use crate::runner::protocol::{Reply, Request as RunnerRequest};
use crate::runner::{RunnerError, SessionRunner};
use crate::tools::{Catalog, ToolSuccess};

const NS: &str = "workspace-runners";

/// A request as the mock API server saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON request body")
    }
}

/// One scripted answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

fn ok(body: Value) -> Answer {
    Answer {
        status: 200,
        body: serde_json::to_vec(&body).unwrap(),
    }
}

fn raw(status: u16, body: &str) -> Answer {
    Answer {
        status,
        body: body.as_bytes().to_vec(),
    }
}

/// A `Status` failure as the API server sends it.
fn failure(code: u16, reason: &str, message: &str) -> Answer {
    Answer {
        status: code,
        body: serde_json::to_vec(&json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code
        }))
        .unwrap(),
    }
}

struct NoRunner;

#[async_trait::async_trait]
impl SessionRunner for NoRunner {
    async fn call(&self, _: RunnerRequest, _: Duration) -> Result<Reply, RunnerError> {
        Err(RunnerError::Timeout)
    }

    fn isolation(&self) -> &'static str {
        "pod"
    }
}

fn session_id() -> SessionId {
    SessionId::parse("session-00000000000000aa").unwrap()
}

fn session(runtime: Option<RuntimeRef>, metadata: &[(&str, &str)]) -> SessionContext {
    SessionContext {
        id: session_id(),
        principal: Principal {
            tenant_id: "acme".into(),
            actor_id: "alice".into(),
            roles: vec!["devops".into()],
        },
        allowed_paths: vec![".".into()],
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        runtime,
    }
}

fn kubernetes() -> Option<RuntimeRef> {
    Some(RuntimeRef {
        kind: KUBERNETES_RUNTIME.into(),
        isolation: "pod".into(),
        workdir: "/workspace/repo".into(),
        namespace: Some(NS.into()),
        pod_name: Some("ws-session-00000000000000aa".into()),
    })
}

/// Runs `tool` with `args` on a kubernetes session (with `metadata`) against the mock
/// answering `answers` in order; returns the result and every request seen.
async fn run_with(
    tool: &str,
    args: Value,
    metadata: &[(&str, &str)],
    answers: Vec<Answer>,
) -> (Result<ToolSuccess, ToolFailure>, Vec<Seen>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, NS);
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for answer in answers {
            let Some((req, send)) = handle.next_request().await else {
                return seen;
            };
            let (parts, body) = req.into_parts();
            let query = parts
                .uri
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            seen.push(Seen {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query,
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: body.collect_bytes().await.unwrap().to_vec(),
            });
            send.send_response(
                Response::builder()
                    .status(answer.status)
                    .header("content-type", "application/json")
                    .body(Body::from(answer.body))
                    .unwrap(),
            );
        }
        // Every scripted answer was used: no further request may come.
        if let Some((req, _)) = handle.next_request().await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
        seen
    });
    let catalog = Catalog::builtin();
    let ctx = ToolContext {
        session: Arc::new(session(kubernetes(), metadata)),
        runner: Arc::new(NoRunner),
        deadline: Instant::now()
            + Duration::from_secs(
                catalog
                    .get(tool)
                    .unwrap()
                    .spec()
                    .constraints
                    .timeout_seconds,
            ),
        output: crate::live::OutputSink::discard(),
        kube: Some(client),
    };
    let result = catalog.get(tool).unwrap().run(ctx, args).await;
    // The tool's client is dropped with its context: the mock sees the end.
    let seen = server.await.expect("mock server");
    (result, seen)
}

async fn run(
    tool: &str,
    args: Value,
    answers: Vec<Answer>,
) -> (Result<ToolSuccess, ToolFailure>, Vec<Seen>) {
    run_with(tool, args, &[], answers).await
}

fn output(result: Result<ToolSuccess, ToolFailure>) -> Value {
    match result {
        Ok(s) => s.output.to_value().unwrap(),
        Err(f) => panic!("{}: {}", f.code, f.message),
    }
}

fn failed(result: Result<ToolSuccess, ToolFailure>) -> ToolFailure {
    match result {
        Ok(s) => panic!("succeeded: {}", s.output.to_value().unwrap()),
        Err(f) => f,
    }
}

fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pod(name: &str, labels: Value, annotations: Value, phase: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NS, "labels": labels, "annotations": annotations,
                     "creationTimestamp": "2026-11-23T10:00:00Z"},
        "spec": {"containers": [{"name": "main", "image": format!("registry.example.com/{name}:1")}]},
        "status": {"phase": phase, "containerStatuses": [
            {"name": "main", "ready": true, "restartCount": 2, "image": "x", "imageID": "",
             "state": {"running": {}}}]}
    })
}

fn pod_list(items: Vec<Value>) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "10"}, "items": items})
}

#[tokio::test]
async fn get_pods_lists_the_namespace_and_hides_other_sessions_runner_pods() {
    let items = vec![
        pod("web-1", json!({"app": "web"}), json!({}), "Running"),
        pod(
            "ws-session-00000000000000aa",
            json!({"app": "workspace-session"}),
            json!({SESSION_ANNOTATION: "session-00000000000000aa"}),
            "Running",
        ),
        pod(
            "ws-session-00000000000000bb",
            json!({"app": "workspace-session", "workspace_tenant": "other-tenant"}),
            json!({SESSION_ANNOTATION: "session-00000000000000bb"}),
            "Running",
        ),
    ];
    let (result, seen) = run(
        "k8s.get_pods",
        json!({"label_selector": "tier=front", "include_containers": true, "include_labels": true}),
        vec![ok(pod_list(items))],
    )
    .await;
    let out = output(result);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, format!("/api/v1/namespaces/{NS}/pods"));
    assert_eq!(
        seen[0].query,
        q(&[("labelSelector", "tier=front"), ("limit", "500")])
    );
    let names: Vec<&str> = out["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "ws-session-00000000000000aa"]);
    assert_eq!(out["count"], 2);
    assert_eq!(out["truncated"], false);
    assert_eq!(out["pods"][0]["restarts"], 2);
    assert_eq!(out["pods"][0]["containers"][0]["state"], "running");
    assert_eq!(out["pods"][0]["labels"]["app"], "web");
    assert!(!out.to_string().contains("other-tenant"));
}

#[tokio::test]
async fn get_pods_caps_its_output_and_says_so() {
    let items = (0..3)
        .map(|i| pod(&format!("web-{i}"), json!({}), json!({}), "Running"))
        .collect();
    let (result, _) = run(
        "k8s.get_pods",
        json!({"max_pods": 2}),
        vec![ok(pod_list(items))],
    )
    .await;
    let out = output(result);
    assert_eq!(
        (out["count"].as_u64(), out["truncated"].as_bool()),
        (Some(2), Some(true))
    );
    assert!(out["pods"][0].get("containers").is_none());
}

fn service(name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": NS},
           "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1",
                    "ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": name}}})
}

#[tokio::test]
async fn the_list_tools_read_every_page_and_cap_their_output_alike() {
    // Services across two pages: both are read, and more than the maximum is truncated.
    let page = |items: Vec<Value>, next: &str| {
        json!({"kind": "ServiceList", "apiVersion": "v1",
               "metadata": {"resourceVersion": "10", "continue": next}, "items": items})
    };
    let (result, seen) = run(
        "k8s.get_services",
        json!({"max_services": 3, "label_selector": "tier=front"}),
        vec![
            ok(page(vec![service("a"), service("b")], "token-2")),
            ok(page(vec![service("c"), service("d")], "")),
        ],
    )
    .await;
    let out = output(result);
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].query,
        q(&[("labelSelector", "tier=front"), ("limit", "500")])
    );
    assert_eq!(
        seen[1].query,
        q(&[
            ("continue", "token-2"),
            ("labelSelector", "tier=front"),
            ("limit", "500")
        ])
    );
    let names: Vec<&str> = out["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(
        (out["count"].as_u64(), out["truncated"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(out["services"][0]["ports"][0]["target_port"], "8080");

    // Exactly the maximum on the last page: not truncated.
    let (result, seen) = run(
        "k8s.get_deployments",
        json!({"max_deployments": 1}),
        vec![ok(
            json!({"kind": "DeploymentList", "apiVersion": "apps/v1",
                       "metadata": {"resourceVersion": "10"},
                       "items": [deployment(2, 2, 2, 2, "100")]}),
        )],
    )
    .await;
    let out = output(result);
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path,
        format!("/apis/apps/v1/namespaces/{NS}/deployments")
    );
    assert_eq!(
        (out["count"].as_u64(), out["truncated"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(out["deployments"][0]["ready_replicas"], 2);
}

#[tokio::test]
async fn another_namespace_is_denied_before_any_request() {
    for (args, metadata) in [
        (json!({"namespace": "kube-system"}), &[][..]),
        (json!({}), &[(ALLOWED_NAMESPACES_KEY, "team-*")][..]),
    ] {
        let (result, seen) = run_with("k8s.get_services", args, metadata, vec![]).await;
        let f = failed(result);
        assert_eq!(f.code, ErrorCode::PolicyDenied);
        assert!(
            f.message.starts_with("namespace not allowed"),
            "{}",
            f.message
        );
        assert!(seen.is_empty());
    }
    let (result, _) = run_with(
        "k8s.get_services",
        json!({}),
        &[(ALLOWED_NAMESPACES_KEY, "other, workspace-*")],
        vec![ok(
            json!({"kind": "ServiceList", "apiVersion": "v1", "metadata": {}, "items": []}),
        )],
    )
    .await;
    assert_eq!(output(result)["count"], 0);
}

#[tokio::test]
async fn a_403_from_the_api_server_is_policy_denied_and_a_404_not_found() {
    let (result, seen) = run(
        "k8s.get_services",
        json!({}),
        vec![failure(
            403,
            "Forbidden",
            "services is forbidden: User \"system:serviceaccount:workspace:workspace-runtime\" cannot list resource \"services\"",
        )],
    )
    .await;
    let f = failed(result);
    assert_eq!(f.code, ErrorCode::PolicyDenied);
    assert!(
        f.message.contains("forbids it") && f.message.contains("cannot list"),
        "{}",
        f.message
    );
    assert_eq!(seen[0].path, format!("/api/v1/namespaces/{NS}/services"));

    let (result, seen) = run(
        "k8s.rollout_status",
        json!({"deployment_name": "web"}),
        vec![failure(
            404,
            "NotFound",
            "deployments.apps \"web\" not found",
        )],
    )
    .await;
    let f = failed(result);
    assert_eq!(f.code, ErrorCode::NotFound);
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path,
        format!("/apis/apps/v1/namespaces/{NS}/deployments/web")
    );
}

#[tokio::test]
async fn get_logs_returns_the_last_max_bytes_with_the_total() {
    let own = pod("web-1", json!({"app": "web"}), json!({}), "Running");
    let log: String = (1..=100).map(|i| format!("line {i:03}\n")).collect();
    let (result, seen) = run(
        "k8s.get_logs",
        json!({"pod_name": "web-1", "container": "main", "tail_lines": 100, "previous": true, "max_bytes": 20}),
        vec![ok(own), raw(200, &log)],
    )
    .await;
    let out = output(result);
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, format!("/api/v1/namespaces/{NS}/pods/web-1"));
    assert_eq!(
        seen[1].path,
        format!("/api/v1/namespaces/{NS}/pods/web-1/log")
    );
    assert_eq!(
        seen[1].query,
        q(&[
            ("container", "main"),
            ("limitBytes", "8388608"),
            ("previous", "true"),
            ("tailLines", "100"),
        ])
    );
    assert_eq!(out["logs"], "line 099\nline 100\n");
    assert_eq!(out["total_bytes"], log.len());
    assert_eq!(out["returned_bytes"], 18);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["total_bytes_exact"], true);
}

#[tokio::test]
async fn another_sessions_runner_logs_are_not_found() {
    let foreign = pod(
        "ws-session-00000000000000bb",
        json!({"app": "workspace-session"}),
        json!({SESSION_ANNOTATION: "session-00000000000000bb"}),
        "Running",
    );
    let (result, seen) = run(
        "k8s.get_logs",
        json!({"pod_name": "ws-session-00000000000000bb"}),
        vec![ok(foreign)],
    )
    .await;
    let f = failed(result);
    assert_eq!(f.code, ErrorCode::NotFound);
    assert_eq!(seen.len(), 1, "the log itself is never asked for");
}

fn deployment(generation: i64, observed: i64, updated: i32, available: i32, rv: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS, "generation": generation, "resourceVersion": rv},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
        "status": {"observedGeneration": observed, "replicas": 2, "updatedReplicas": updated,
                   "readyReplicas": available, "availableReplicas": available}
    })
}

fn watch_lines(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(t, o)| format!("{}\n", json!({"type": t, "object": o})))
        .collect()
}

#[tokio::test]
async fn rollout_status_follows_one_watch_until_the_rollout_completes() {
    let body = watch_lines(&[
        ("MODIFIED", deployment(2, 2, 1, 1, "101")),
        ("MODIFIED", deployment(2, 2, 2, 1, "102")),
        ("MODIFIED", deployment(2, 2, 2, 2, "103")),
    ]);
    let (result, seen) = run(
        "k8s.rollout_status",
        json!({"deployment_name": "web", "timeout_seconds": 30}),
        vec![ok(deployment(2, 1, 0, 0, "100")), raw(200, &body)],
    )
    .await;
    let out = output(result);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].method, Method::GET);
    assert_eq!(
        seen[1].path,
        format!("/apis/apps/v1/namespaces/{NS}/deployments")
    );
    assert_eq!(seen[1].query["watch"], "true");
    assert_eq!(seen[1].query["fieldSelector"], "metadata.name=web");
    assert_eq!(seen[1].query["resourceVersion"], "100");
    let timeout: u64 = seen[1].query["timeoutSeconds"].parse().unwrap();
    assert!((1..=30).contains(&timeout), "{timeout}");
    assert_eq!(out["complete"], true);
    assert_eq!(out["total_observations"], 4);
    assert_eq!(
        out["observations"][0],
        "waiting for deployment \"web\" spec update to be observed"
    );
    assert_eq!(out["truncated"], false);
}

#[tokio::test]
async fn a_watch_that_times_out_before_the_rollout_completes_is_a_timeout() {
    let body = watch_lines(&[("MODIFIED", deployment(2, 2, 1, 1, "101"))]);
    let (result, seen) = run(
        "k8s.rollout_status",
        json!({"deployment_name": "web", "timeout_seconds": 5}),
        vec![
            ok(deployment(2, 2, 1, 1, "100")),
            raw(200, &body),
            ok(deployment(2, 2, 1, 1, "101")),
        ],
    )
    .await;
    let f = failed(result);
    assert_eq!(f.code, ErrorCode::Timeout);
    assert!(
        f.message.contains("did not finish its rollout"),
        "{}",
        f.message
    );
    let partial = f.output.expect("partial output").to_value().unwrap();
    assert_eq!(partial["complete"], false);
    assert_eq!(partial["updated_replicas"], 1);
    let methods: Vec<(&Method, &str)> = seen.iter().map(|s| (&s.method, s.path.as_str())).collect();
    let one = format!("/apis/apps/v1/namespaces/{NS}/deployments/web");
    let all = format!("/apis/apps/v1/namespaces/{NS}/deployments");
    assert_eq!(
        methods,
        [
            (&Method::GET, one.as_str()),
            (&Method::GET, all.as_str()),
            (&Method::GET, one.as_str())
        ]
    );
}

#[tokio::test]
async fn restart_deployment_patches_the_pod_template_annotation() {
    let (result, seen) = run(
        "k8s.restart_deployment",
        json!({"deployment_name": "web"}),
        vec![ok(deployment(3, 2, 2, 2, "200"))],
    )
    .await;
    let out = output(result);
    assert_eq!(seen[0].method, Method::PATCH);
    assert_eq!(
        seen[0].path,
        format!("/apis/apps/v1/namespaces/{NS}/deployments/web")
    );
    assert_eq!(seen[0].query, q(&[("fieldManager", "workspace")]));
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    let body = seen[0].json();
    let at =
        &body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
    assert_eq!(at, &out["restarted_at"]);
    assert_eq!(out["generation"], 3);
    assert!(out.get("rollout").is_none());
}

#[tokio::test]
async fn apply_manifest_server_side_applies_each_object_in_order() {
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  A: b\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n";
    let applied = |kind: &str, name: &str| {
        ok(json!({"apiVersion": "v1", "kind": kind,
                  "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "resourceVersion": "7", "generation": 1}}))
    };
    let (result, seen) = run(
        "k8s.apply_manifest",
        json!({"manifest": manifest, "dry_run": true}),
        vec![
            applied("ConfigMap", "web-config"),
            applied("Deployment", "web"),
        ],
    )
    .await;
    let out = output(result);
    assert_eq!(seen.len(), 2);
    for (s, path) in seen.iter().zip([
        format!("/api/v1/namespaces/{NS}/configmaps/web-config"),
        format!("/apis/apps/v1/namespaces/{NS}/deployments/web"),
    ]) {
        assert_eq!(s.method, Method::PATCH);
        assert_eq!(s.path, path);
        assert_eq!(
            s.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(
            s.query,
            q(&[
                ("dryRun", "All"),
                ("fieldManager", "workspace"),
                ("fieldValidation", "Strict")
            ])
        );
        assert_eq!(s.json()["metadata"]["namespace"], NS);
    }
    assert_eq!(seen[0].json()["data"]["A"], "b");
    assert_eq!(out["count"], 2);
    assert_eq!(out["dry_run"], true);
    assert_eq!(out["objects"][1]["uid"], "uid-web");
}

#[tokio::test]
async fn a_409_from_an_apply_is_a_conflict_keeping_what_was_applied() {
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
    let (result, seen) = run(
        "k8s.apply_manifest",
        json!({"manifest": manifest}),
        vec![
            ok(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "uid": "u-a"}})),
            failure(409, "AlreadyExists", "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .spec.ports"),
        ],
    )
    .await;
    let f = failed(result);
    assert_eq!(f.code, ErrorCode::Conflict);
    assert!(
        f.message.contains("applying Service web") && f.message.contains("conflict with"),
        "{}",
        f.message
    );
    assert_eq!(seen.len(), 2);
    assert!(!seen[0].query.contains_key("dryRun"));
    let partial = f.output.expect("partial output").to_value().unwrap();
    assert_eq!(partial["count"], 1);
    assert_eq!(partial["objects"][0]["name"], "a");
}

#[tokio::test]
async fn a_refused_manifest_sends_nothing() {
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: evil}\n";
    let (result, seen) = run("k8s.apply_manifest", json!({"manifest": manifest}), vec![]).await;
    assert_eq!(failed(result).code, ErrorCode::PolicyDenied);
    assert!(
        seen.is_empty(),
        "check before act: the ConfigMap is not applied either"
    );
}

#[tokio::test]
async fn without_a_client_or_a_kubernetes_runtime_nothing_is_asked() {
    let catalog = Catalog::builtin();
    let tool = catalog.get("k8s.get_pods").unwrap();
    for (runtime, code) in [
        (kubernetes(), ErrorCode::Unavailable),
        (None, ErrorCode::PolicyDenied),
    ] {
        let ctx = ToolContext {
            session: Arc::new(session(runtime, &[])),
            runner: Arc::new(NoRunner),
            deadline: Instant::now() + Duration::from_secs(5),
            output: crate::live::OutputSink::discard(),
            kube: None,
        };
        assert_eq!(failed(tool.run(ctx, json!({})).await).code, code);
    }
}

#[test]
fn the_gate_refuses_cluster_tools_off_kubernetes_and_delivery_tools_when_disabled() {
    let catalog = Catalog::builtin();
    let spec = |n: &str| catalog.get(n).unwrap().spec().clone();
    let reason = |s: &SessionContext, name: &str, enabled: bool| {
        gate(s, &spec(name), enabled).err().map(|d| d.message)
    };
    let local = session(
        Some(RuntimeRef {
            kind: LOCAL_RUNTIME.into(),
            isolation: "bubblewrap".into(),
            workdir: "/workspace".into(),
            namespace: None,
            pod_name: None,
        }),
        &[],
    );
    let docker = session(
        Some(RuntimeRef {
            kind: "docker".into(),
            ..kubernetes().unwrap()
        }),
        &[],
    );
    let kube = session(kubernetes(), &[]);
    let unprovisioned = session(None, &[]);
    let requires = Some("tool requires kubernetes runtime".to_owned());
    assert_eq!(reason(&local, "k8s.get_pods", true), requires);
    assert_eq!(reason(&unprovisioned, "k8s.get_pods", true), requires);
    assert_eq!(reason(&local, "k8s.apply_manifest", false), requires);
    assert_eq!(
        reason(&docker, "k8s.get_pods", true).as_deref(),
        Some("tool requires kubernetes runtime (session runtime=docker)")
    );
    assert_eq!(reason(&kube, "k8s.get_pods", false), None);
    assert_eq!(
        reason(&kube, "k8s.rollout_status", false).as_deref(),
        Some("k8s delivery tools are disabled by configuration")
    );
    assert_eq!(reason(&kube, "k8s.rollout_status", true), None);
    assert_eq!(
        reason(&local, "fs.read_file", false),
        None,
        "other scopes pass"
    );
    for name in DELIVERY_TOOLS {
        let s = spec(name);
        assert!(s.requires_approval && s.scope == Scope::Cluster, "{name}");
    }
    let cluster: Vec<&str> = catalog
        .specs()
        .filter(|s| s.scope == Scope::Cluster)
        .map(|s| s.name)
        .collect();
    assert_eq!(cluster.len(), 8, "{cluster:?}");
}
