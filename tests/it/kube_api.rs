//! The Kubernetes runner provider against kube's tower-test mock API server (no cluster):
//! the requests it makes, in order, with their methods, paths, queries and bodies, and what it
//! does with the answers (201, 409 already exists, 404, 403 forbidden, a pod that fails, a
//! watch that never says ready). Every pod "answer" here is scripted: nothing in these tests
//! ran a pod. The exec stream is checked up to its upgrade request (the mock cannot upgrade
//! to a WebSocket); the multiplexed transport behind it is checked over in-memory streams
//! with a real runner server at the far end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use workspace::ids::SessionId;
use workspace::kube::client::RunnerPods;
use workspace::kube::config::{KubeArgs, KubeSettings, parse_flags};
use workspace::kube::pool::WarmPool;
use workspace::kube::provider::{KubeExec, KubeRunnerProvider, PodExec};
use workspace::kube::transport::{BoxRead, BoxWrite, Bridge, Dial, serve_stdio};
use workspace::runner::protocol::{Reply, Request as RunnerRequest};
use workspace::runner::{ProvisionSpec, RunnerProvider, SandboxSpec, SessionRunner, SocketRunner};
use workspace::sessions::SourcePolicy;
use workspace_events::{ErrorCode, WorkspaceSource};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn settings(flags: &[&str]) -> Arc<KubeSettings> {
    let flags: Vec<&str> = [
        "--k8s-namespace=runners",
        "--k8s-runner-image=registry.example.com/workspace/workspace-runner:base-0.1.0",
    ]
    .into_iter()
    .chain(flags.iter().copied())
    .collect();
    let args = parse_flags::<KubeArgs>(&flags).expect("flags parse");
    Arc::new(KubeSettings::try_from(args).expect("valid settings"))
}

/// One expected request and the scripted answer.
struct Step {
    method: Method,
    path: &'static str,
    /// Substrings the (decoded) query must contain.
    query: &'static [&'static str],
    /// `None`: never answered (a watch that stays silent until the caller's deadline).
    answer: Option<(u16, Value)>,
}

fn step(method: Method, path: &'static str, status: u16, body: Value) -> Step {
    Step {
        method,
        path,
        query: &[],
        answer: Some((status, body)),
    }
}

/// A request as the mock saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    query: String,
    body: Option<Value>,
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{reason} (scripted)"), "reason": reason, "code": code})
}

/// Serves `script` in order, asserting each request's method, path and query; returns what
/// it saw. Ends with an assertion that no further request came before the client went away.
fn serve(mut handle: Handle, script: Vec<Step>) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut silent = Vec::new();
        for (i, s) in script.into_iter().enumerate() {
            let (req, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("request {i} ({} {}) never came", s.method, s.path));
            let (parts, body) = req.into_parts();
            let query = urlencoding_decode(parts.uri.query().unwrap_or(""));
            let bytes = body.collect_bytes().await.expect("request body");
            let body =
                (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).expect("JSON body"));
            assert_eq!(
                (parts.method.clone(), parts.uri.path()),
                (s.method.clone(), s.path),
                "request {i}: {seen:#?}"
            );
            for q in s.query {
                assert!(
                    query.contains(q),
                    "request {i}: query {query:?} lacks {q:?}"
                );
            }
            seen.push(Seen {
                method: parts.method,
                query,
                body,
            });
            match s.answer {
                Some((code, body)) => send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
                        .expect("response"),
                ),
                None => silent.push(send),
            }
        }
        drop(silent);
        if let Some((req, _)) = handle.next_request().await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
        seen
    })
}

fn urlencoding_decode(q: &str) -> String {
    q.replace("%3D", "=")
        .replace("%2C", ",")
        .replace("%2F", "/")
        .replace("%3A", ":")
}

fn pod_json(name: &str, session: &str, rv: &str, phase: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "runners", "resourceVersion": rv,
                     "labels": {"app": "workspace-session"},
                     "annotations": {"workspace.io/session-id": session}},
        "spec": {"containers": [{"name": "runner", "image": "registry.example.com/w/r:1"}]},
        "status": {"phase": phase,
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

fn watch_event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

/// An exec that must never be used (provisioning does not dial the runner).
struct NoExec;

#[async_trait::async_trait]
impl PodExec for NoExec {
    async fn dial(&self, _pod: &str) -> std::io::Result<(BoxRead, BoxWrite)> {
        panic!("provisioning dialled the runner")
    }
}

struct Fixture {
    provider: KubeRunnerProvider,
    _run: tempfile::TempDir,
}

fn provider(settings: Arc<KubeSettings>, pool: Option<usize>) -> (Fixture, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "runners");
    let pods = RunnerPods::new(client, &settings.namespace);
    let run = tempfile::tempdir().expect("run dir");
    let pool = pool.map(|n| Arc::new(WarmPool::new(settings.clone(), pods.clone(), n)));
    let provider = KubeRunnerProvider::new(
        settings,
        pods,
        Arc::new(NoExec),
        run.path().to_path_buf(),
        pool,
    );
    (
        Fixture {
            provider,
            _run: run,
        },
        handle,
    )
}

const SESSION: &str = "session-0123456789abcdef";
const POD: &str = "ws-session-0123456789abcdef";
const PODS: &str = "/api/v1/namespaces/runners/pods";
const THE_POD: &str = "/api/v1/namespaces/runners/pods/ws-session-0123456789abcdef";

async fn provision(
    fixture: &Fixture,
    source: WorkspaceSource,
    metadata: BTreeMap<String, String>,
) -> Result<workspace_events::RuntimeRef, workspace_events::ErrorInfo> {
    let sources = SourcePolicy::default();
    let spec = ProvisionSpec {
        sandbox: SandboxSpec {
            session_id: SessionId::parse(SESSION).unwrap(),
            workspace_dir: PathBuf::from("/nonexistent/never-used"),
        },
        tenant_id: "acme",
        actor_id: "alice",
        metadata: &metadata,
        source: &source,
        expires_in: Some(Duration::from_secs(3600)),
        sources: &sources,
    };
    fixture.provider.provision(&spec).await
}

#[tokio::test]
async fn a_cold_session_creates_its_pod_then_waits_for_ready_through_a_watch() {
    let (fixture, handle) = provider(settings(&[]), None);
    let server = serve(
        handle,
        vec![
            step(
                Method::POST,
                PODS,
                201,
                pod_json(POD, SESSION, "1", "Pending", false),
            ),
            step(
                Method::GET,
                THE_POD,
                200,
                pod_json(POD, SESSION, "2", "Pending", false),
            ),
            Step {
                method: Method::GET,
                path: PODS,
                query: &[
                    "watch=true",
                    "fieldSelector=metadata.name=ws-session-0123456789abcdef",
                    "resourceVersion=2",
                ],
                answer: Some((
                    200,
                    watch_event("MODIFIED", pod_json(POD, SESSION, "3", "Running", true)),
                )),
            },
        ],
    );
    let source = WorkspaceSource::Git {
        repo_url: "https://git.example.com/acme/app.git".into(),
        repo_ref: Some("main".into()),
    };
    let runtime = provision(&fixture, source, BTreeMap::new())
        .await
        .expect("ready");
    assert_eq!(runtime.kind, "kubernetes");
    assert_eq!(runtime.pod_name.as_deref(), Some(POD));
    assert_eq!(runtime.namespace.as_deref(), Some("runners"));
    assert_eq!(runtime.workdir, "/workspace/repo");
    drop(fixture);
    let seen = server.await.expect("mock");
    // The created pod is the pure spec: owner labels, hardening, the clone's inputs.
    let body = seen[0].body.as_ref().expect("pod body");
    assert_eq!(body["metadata"]["labels"]["workspace_id"], SESSION);
    assert_eq!(body["metadata"]["labels"]["workspace_tenant"], "acme");
    assert_eq!(body["metadata"]["labels"]["workspace_actor"], "alice");
    assert_eq!(
        body["metadata"]["labels"]["workspace.io/git-egress"],
        "true"
    );
    assert_eq!(body["spec"]["activeDeadlineSeconds"], 3600);
    let runner = &body["spec"]["containers"][0];
    assert_eq!(
        runner["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(runner["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        body["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let env = &body["spec"]["initContainers"][0]["env"];
    assert!(
        env.as_array().unwrap().iter().any(
            |e| e["name"] == "REPO_URL" && e["value"] == "https://git.example.com/acme/app.git"
        )
    );
    assert!(!serde_json::to_string(body).unwrap().contains("hostPath"));
    assert_eq!(seen.len(), 3, "{seen:#?}");
}

#[tokio::test]
async fn an_existing_pod_of_the_same_session_is_adopted_on_409() {
    let (fixture, handle) = provider(settings(&[]), None);
    let server = serve(
        handle,
        vec![
            step(Method::POST, PODS, 409, status(409, "AlreadyExists")),
            step(
                Method::GET,
                THE_POD,
                200,
                pod_json(POD, SESSION, "5", "Running", true),
            ),
            step(
                Method::GET,
                THE_POD,
                200,
                pod_json(POD, SESSION, "5", "Running", true),
            ),
        ],
    );
    let runtime = provision(&fixture, WorkspaceSource::Empty, BTreeMap::new())
        .await
        .expect("adopted");
    assert_eq!(runtime.pod_name.as_deref(), Some(POD));
    drop(fixture);
    server.await.expect("mock");
}

#[tokio::test]
async fn a_409_for_another_sessions_pod_fails_the_session_and_deletes_nothing() {
    let (fixture, handle) = provider(settings(&[]), None);
    let server = serve(
        handle,
        vec![
            step(Method::POST, PODS, 409, status(409, "AlreadyExists")),
            step(
                Method::GET,
                THE_POD,
                200,
                pod_json(POD, "session-somebodyelse", "5", "Running", true),
            ),
        ],
    );
    let err = provision(&fixture, WorkspaceSource::Empty, BTreeMap::new())
        .await
        .expect_err("taken");
    assert_eq!(err.code, ErrorCode::Internal);
    assert!(
        err.message.contains("belongs to another session"),
        "{}",
        err.message
    );
    drop(fixture);
    server.await.expect("mock");
}

#[tokio::test]
async fn a_403_on_create_fails_the_session_without_naming_the_role_to_the_caller() {
    let (fixture, handle) = provider(settings(&[]), None);
    let server = serve(
        handle,
        vec![step(Method::POST, PODS, 403, status(403, "Forbidden"))],
    );
    let err = provision(&fixture, WorkspaceSource::Empty, BTreeMap::new())
        .await
        .expect_err("forbidden");
    assert_eq!(err.code, ErrorCode::Internal);
    assert!(
        err.message.contains("may not manage runner pods"),
        "{}",
        err.message
    );
    drop(fixture);
    server.await.expect("mock");
}

#[tokio::test]
async fn a_pod_never_ready_fails_the_session_with_its_last_reason_and_is_deleted() {
    let (fixture, handle) = provider(settings(&["--k8s-ready-timeout-seconds=1"]), None);
    let mut pending = pod_json(POD, SESSION, "2", "Pending", false);
    pending["status"]["containerStatuses"] = json!([{"name": "runner", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]);
    let server = serve(
        handle,
        vec![
            step(
                Method::POST,
                PODS,
                201,
                pod_json(POD, SESSION, "1", "Pending", false),
            ),
            step(Method::GET, THE_POD, 200, pending),
            // The watch stays silent past the ready timeout.
            Step {
                method: Method::GET,
                path: PODS,
                query: &["watch=true"],
                answer: None,
            },
            step(
                Method::DELETE,
                THE_POD,
                200,
                pod_json(POD, SESSION, "3", "Pending", false),
            ),
        ],
    );
    let err = provision(&fixture, WorkspaceSource::Empty, BTreeMap::new())
        .await
        .expect_err("not ready");
    assert_eq!(err.code, ErrorCode::Timeout);
    assert!(
        err.message.contains("not ready within 1s"),
        "{}",
        err.message
    );
    assert!(err.message.contains("ImagePullBackOff"), "{}", err.message);
    drop(fixture);
    let seen = server.await.expect("mock");
    assert_eq!(seen.last().map(|s| s.method.clone()), Some(Method::DELETE));
}

#[tokio::test]
async fn a_failed_clone_fails_the_session_with_gits_message_and_a_gone_pod_is_fine() {
    let (fixture, handle) = provider(settings(&[]), None);
    let mut failed = pod_json(POD, SESSION, "2", "Failed", false);
    failed["status"]["initContainerStatuses"] = json!([{"name": "repo-init", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"terminated": {"exitCode": 128, "message": "fatal: repository not found"}}}]);
    let server = serve(
        handle,
        vec![
            step(
                Method::POST,
                PODS,
                201,
                pod_json(POD, SESSION, "1", "Pending", false),
            ),
            step(Method::GET, THE_POD, 200, failed),
            step(Method::DELETE, THE_POD, 404, status(404, "NotFound")),
        ],
    );
    let source = WorkspaceSource::Git {
        repo_url: "https://git.example.com/nope.git".into(),
        repo_ref: None,
    };
    let err = provision(&fixture, source, BTreeMap::new())
        .await
        .expect_err("failed");
    assert_eq!(err.code, ErrorCode::ExecutionFailed);
    assert!(
        err.message
            .contains("repo-init exited 128: fatal: repository not found"),
        "{}",
        err.message
    );
    drop(fixture);
    server.await.expect("mock");
}

#[tokio::test]
async fn an_unknown_profile_is_an_invalid_argument_and_creates_nothing() {
    let (fixture, handle) = provider(
        settings(&[r#"--k8s-runner-image-bundles-json={"fat":"registry.example.com/w/r:fat-1"}"#]),
        Some(1),
    );
    let server = serve(handle, vec![]);
    let metadata = BTreeMap::from([("runner_profile".to_owned(), "secops".to_owned())]);
    let admitted = fixture.provider.admit(&WorkspaceSource::Empty, &metadata);
    assert_eq!(
        admitted.expect_err("unknown").code,
        ErrorCode::InvalidArgument
    );
    let err = provision(&fixture, WorkspaceSource::Empty, metadata)
        .await
        .expect_err("unknown");
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(
        err.message.contains("known profiles: fat"),
        "{}",
        err.message
    );
    let copy = WorkspaceSource::Copy {
        source_repo_path: "/etc".into(),
    };
    assert_eq!(
        fixture
            .provider
            .admit(&copy, &BTreeMap::new())
            .expect_err("host path")
            .code,
        ErrorCode::InvalidArgument
    );
    drop(fixture);
    // The mock saw no request at all.
    assert!(server.await.expect("mock").is_empty());
}

#[tokio::test]
async fn a_warm_pod_is_claimed_with_a_resource_version_precondition_and_a_lost_race_moves_on() {
    let (fixture, handle) = provider(settings(&[]), Some(2));
    let warm = |name: &str, rv: &str| {
        let mut p = pod_json(name, "", rv, "Running", true);
        p["metadata"]["labels"] =
            json!({"app": "workspace-warm-runner", "workspace.io/pool-profile": "default"});
        p["metadata"]["annotations"] = json!({});
        p
    };
    // Started ten minutes before the claim: the kubelet counts the deadline from there.
    let started = (time::OffsetDateTime::now_utc() - time::Duration::minutes(10))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut warm_b = warm("ws-warm-b", "7");
    warm_b["status"]["startTime"] = json!(started);
    let mut claimed = warm("ws-warm-b", "8");
    claimed["metadata"]["labels"]["app"] = json!("workspace-session");
    let server = serve(
        handle,
        vec![
            Step {
                method: Method::GET,
                path: PODS,
                query: &[
                    "labelSelector=app=workspace-warm-runner,workspace.io/pool-profile=default",
                ],
                answer: Some((
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"},
                    "items": [warm("ws-warm-a", "6"), warm_b]}),
                )),
            },
            // Another replica claimed the first one since it was listed.
            step(
                Method::PATCH,
                "/api/v1/namespaces/runners/pods/ws-warm-a",
                409,
                status(409, "Conflict"),
            ),
            step(
                Method::PATCH,
                "/api/v1/namespaces/runners/pods/ws-warm-b",
                200,
                claimed,
            ),
        ],
    );
    let runtime = provision(&fixture, WorkspaceSource::Empty, BTreeMap::new())
        .await
        .expect("warm");
    assert_eq!(runtime.pod_name.as_deref(), Some("ws-warm-b"));
    drop(fixture);
    let seen = server.await.expect("mock");
    let patch = seen[2].body.as_ref().expect("patch body");
    assert_eq!(patch["metadata"]["resourceVersion"], "7");
    assert_eq!(patch["metadata"]["labels"]["app"], "workspace-session");
    assert_eq!(patch["metadata"]["labels"]["workspace_id"], SESSION);
    assert_eq!(
        patch["metadata"]["annotations"]["workspace.io/session-id"],
        SESSION
    );
    assert_eq!(
        seen[1].body.as_ref().unwrap()["metadata"]["resourceVersion"],
        "6"
    );
    // The warm pod was created without a deadline: the claim gives it the session's lifetime
    // (3600 s, the cold pod's activeDeadlineSeconds) from the claim on, i.e. plus its age.
    let deadline = patch["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .expect("the claim sets activeDeadlineSeconds");
    assert!(
        (3600 + 600..3600 + 600 + 120).contains(&deadline),
        "{deadline}"
    );
    assert_eq!(
        seen[1].body.as_ref().unwrap()["spec"]["activeDeadlineSeconds"],
        3600,
        "a pod of unknown age (no startTime) gets the lifetime itself"
    );
}

#[tokio::test]
async fn an_empty_pool_falls_back_to_the_cold_path() {
    let (fixture, handle) = provider(settings(&[]), Some(1));
    let server = serve(
        handle,
        vec![
            step(
                Method::GET,
                PODS,
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
            ),
            step(
                Method::POST,
                PODS,
                201,
                pod_json(POD, SESSION, "1", "Running", true),
            ),
            step(
                Method::GET,
                THE_POD,
                200,
                pod_json(POD, SESSION, "1", "Running", true),
            ),
        ],
    );
    let runtime = provision(&fixture, WorkspaceSource::Empty, BTreeMap::new())
        .await
        .expect("cold");
    assert_eq!(runtime.pod_name.as_deref(), Some(POD));
    drop(fixture);
    server.await.expect("mock");
}

#[tokio::test]
async fn the_refill_creates_the_missing_warm_pods_of_every_profile() {
    let settings =
        settings(&[r#"--k8s-runner-image-bundles-json={"fat":"registry.example.com/w/r:fat-1"}"#]);
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let pods = RunnerPods::new(kube::Client::new(svc, "runners"), "runners");
    let pool = WarmPool::new(settings, pods, 1);
    let empty = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []});
    let one = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod_json("ws-warm-x", "", "1", "Pending", false)]});
    let server = serve(
        handle,
        vec![
            Step {
                method: Method::GET,
                path: PODS,
                query: &["workspace.io/pool-profile=default"],
                answer: Some((200, one)),
            },
            Step {
                method: Method::GET,
                path: PODS,
                query: &["workspace.io/pool-profile=fat"],
                answer: Some((200, empty)),
            },
            step(
                Method::POST,
                PODS,
                201,
                pod_json("ws-warm-y", "", "1", "Pending", false),
            ),
        ],
    );
    assert_eq!(pool.refill().await.expect("refill").created, 1);
    drop(pool);
    let seen = server.await.expect("mock");
    let body = seen[2].body.as_ref().expect("pod");
    assert_eq!(body["metadata"]["labels"]["app"], "workspace-warm-runner");
    assert_eq!(
        body["metadata"]["labels"]["workspace.io/pool-profile"],
        "fat"
    );
    assert_eq!(
        body["spec"]["containers"][0]["image"],
        "registry.example.com/w/r:fat-1"
    );
    assert!(body["metadata"]["labels"].get("workspace_id").is_none());
    assert!(body["spec"].get("activeDeadlineSeconds").is_none());
}

#[tokio::test]
async fn the_refill_deletes_failed_and_overdue_warm_pods_and_replaces_them() {
    let settings = settings(&["--k8s-ready-timeout-seconds=60"]);
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let pods = RunnerPods::new(kube::Client::new(svc, "runners"), "runners");
    let pool = WarmPool::new(settings, pods, 3);
    let ago = |minutes: i64| {
        (time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let warm = |name: &str, phase: &str, ready: bool, created: String| {
        let mut p = pod_json(name, "", "5", phase, ready);
        p["metadata"]["uid"] = json!(format!("uid-{name}"));
        p["metadata"]["creationTimestamp"] = json!(created);
        p
    };
    let mut failed = warm("ws-warm-failed", "Failed", false, ago(3));
    failed["status"]["reason"] = json!("Evicted");
    let mut overdue = warm("ws-warm-overdue", "Pending", false, ago(10));
    overdue["status"]["containerStatuses"] = json!([{"name": "runner", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"waiting": {"reason": "ImagePullBackOff"}}}]);
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        failed,
        overdue,
        // Pending for less than the ready timeout, and ready: both count.
        warm("ws-warm-starting", "Pending", false, ago(0)),
        warm("ws-warm-ready", "Running", true, ago(30)),
    ]});
    let server = serve(
        handle,
        vec![
            Step {
                method: Method::GET,
                path: PODS,
                query: &["workspace.io/pool-profile=default"],
                answer: Some((200, list)),
            },
            step(
                Method::DELETE,
                "/api/v1/namespaces/runners/pods/ws-warm-failed",
                200,
                pod_json("ws-warm-failed", "", "6", "Failed", false),
            ),
            // Claimed by a session on another replica since it was listed: left alone.
            step(
                Method::DELETE,
                "/api/v1/namespaces/runners/pods/ws-warm-overdue",
                409,
                status(409, "Conflict"),
            ),
            step(
                Method::POST,
                PODS,
                201,
                pod_json("ws-warm-new", "", "1", "Pending", false),
            ),
        ],
    );
    let refill = pool.refill().await.expect("refill");
    assert_eq!(refill.removed, vec!["ws-warm-failed".to_owned()]);
    assert_eq!(refill.created, 1);
    drop(pool);
    let seen = server.await.expect("mock");
    for (i, name) in [(1, "ws-warm-failed"), (2, "ws-warm-overdue")] {
        let body = seen[i].body.as_ref().expect("delete options");
        assert_eq!(
            body["preconditions"]["uid"],
            format!("uid-{name}"),
            "{body}"
        );
        assert_eq!(body["preconditions"]["resourceVersion"], "5", "{body}");
    }
    let created = seen[3].body.as_ref().expect("pod");
    assert_eq!(
        created["metadata"]["labels"]["app"],
        "workspace-warm-runner"
    );
}

#[tokio::test]
async fn the_exec_stream_is_requested_for_the_runner_container_with_stdin_and_stdout() {
    let settings = settings(&[]);
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let pods = RunnerPods::new(kube::Client::new(svc, "runners"), "runners");
    let exec = KubeExec::new(pods, settings);
    let server = serve(
        handle,
        vec![Step {
            method: Method::GET,
            path: "/api/v1/namespaces/runners/pods/ws-x/exec",
            query: &[
                "container=runner",
                "stdin=true",
                "stdout=true",
                "command=/usr/local/bin/workspace&command=runner&command=--stdio&command=--root&command=/workspace/repo&command=--isolation&command=pod",
            ],
            // The mock cannot upgrade to a WebSocket: it refuses, and the dial fails.
            answer: Some((403, status(403, "Forbidden"))),
        }],
    );
    assert!(exec.dial("ws-x").await.is_err());
    drop(exec);
    let seen = server.await.expect("mock");
    assert!(!seen[0].query.contains("stderr=true"), "{}", seen[0].query);
    assert!(!seen[0].query.contains("tty=true"), "{}", seen[0].query);
}

/// A dial to a real runner server over in-memory streams: each dial is a fresh duplex whose
/// far end is `serve_stdio` connected to the runner's socket; the last one can be cut.
struct DuplexDial {
    socket: PathBuf,
    cut: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

#[async_trait::async_trait]
impl Dial for DuplexDial {
    async fn dial(&self) -> std::io::Result<(BoxRead, BoxWrite)> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let (far_read, far_write) = tokio::io::split(far);
        let socket = self.socket.clone();
        let task = tokio::spawn(async move {
            serve_stdio(Box::pin(far_read), Box::pin(far_write), &socket).await;
        });
        *self.cut.lock().unwrap() = Some(task.abort_handle());
        let (read, write) = tokio::io::split(near);
        Ok((Box::pin(read), Box::pin(write)))
    }
}

#[tokio::test]
async fn runner_calls_go_over_one_multiplexed_stream_and_a_cut_stream_is_dialled_again() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    let runner_socket = dir.path().join("runner.sock");
    let server =
        workspace::runner::server::RunnerServer::bind(&runner_socket, &workspace, "pod").unwrap();
    tokio::spawn(server.run_until_stopped(std::future::pending()));
    let dial = Arc::new(DuplexDial {
        socket: runner_socket,
        cut: Default::default(),
    });
    let bridge = Bridge::bind(dir.path().join("bridge.sock"), dial.clone()).unwrap();
    let runner = SocketRunner::new(bridge.socket(), "pod");
    let t = Duration::from_secs(10);
    assert_eq!(runner.hello(t).await.expect("hello"), "pod");
    // Concurrent calls, each its own channel of the one stream.
    let calls = (0..8).map(|i| {
        let runner = &runner;
        async move {
            runner
                .call(
                    RunnerRequest::WriteFile {
                        path: format!("f{i}.txt"),
                        content: workspace::runner::protocol::Bytes(
                            format!("file {i}").into_bytes(),
                        ),
                        create_parents: false,
                        create_new: false,
                        snapshot: false,
                    },
                    t,
                )
                .await
        }
    });
    for reply in futures::future::join_all(calls).await {
        assert!(matches!(reply, Ok(Reply::Written { .. })), "{reply:?}");
    }
    assert_eq!(
        std::fs::read_to_string(workspace.join("f7.txt")).unwrap(),
        "file 7"
    );
    assert_eq!(bridge.dials(), 1);
    // The stream dies (an API server restart, a dropped WebSocket): calls afterwards dial a
    // new one. A call caught on the dead stream may fail; none is retried.
    dial.cut.lock().unwrap().take().expect("dialled").abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match runner.hello(t).await {
            Ok(isolation) => {
                assert_eq!(isolation, "pod");
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "never reconnected: {e}"
            ),
        }
    }
    assert_eq!(bridge.dials(), 2);
}

/// Host processes whose command line contains `marker` (zombies excluded: they run nothing).
fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn long_exec(marker: &str) -> RunnerRequest {
    RunnerRequest::Exec {
        argv: vec![
            "sh".into(),
            "-c".into(),
            format!("sleep {marker} & sleep {marker}"),
        ],
        env: BTreeMap::new(),
        cwd: ".".into(),
        stdin: None,
        timeout_ms: 60_000,
        max_output_bytes: 100,
        stream_output: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_call_over_the_multiplexed_stream_kills_its_process_group_and_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    let runner_socket = dir.path().join("runner.sock");
    let server =
        workspace::runner::server::RunnerServer::bind(&runner_socket, &workspace, "pod").unwrap();
    tokio::spawn(server.run_until_stopped(std::future::pending()));
    let dial = Arc::new(DuplexDial {
        socket: runner_socket,
        cut: Default::default(),
    });
    let bridge = Bridge::bind(dir.path().join("bridge.sock"), dial.clone()).unwrap();
    let runner = Arc::new(SocketRunner::new(bridge.socket(), "pod"));
    let t = Duration::from_secs(10);
    assert_eq!(runner.hello(t).await.expect("hello"), "pod");

    // A call that runs past the executor's deadline: the executor gives up on it, and the
    // close of its channel (the hang-up the local runner sees as well) reaches the pod's
    // runner, which kills the program's process group.
    let timed_out = format!("41.{}", std::process::id());
    let (result, ()) = tokio::join!(
        runner.call(long_exec(&timed_out), Duration::from_millis(500)),
        wait_until("the exec never started", || processes_with(&timed_out)
            .len()
            >= 2),
    );
    assert!(
        matches!(result, Err(workspace::runner::RunnerError::Timeout)),
        "{result:?}"
    );
    wait_until("the abandoned exec's processes survived", || {
        processes_with(&timed_out).is_empty()
    })
    .await;

    // A caller that goes away (its invocation cancelled, its task dropped) beside a call that
    // keeps running on the same stream: only the dropped call's processes are killed.
    let dropped = format!("42.{}", std::process::id());
    let kept = format!("43.{}", std::process::id());
    let abandoned = tokio::spawn({
        let runner = runner.clone();
        let request = long_exec(&dropped);
        async move { runner.call(request, t).await }
    });
    let survivor = tokio::spawn({
        let runner = runner.clone();
        let request = RunnerRequest::Exec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                // Runs until the test creates `go` in the workspace.
                format!(": {kept}; while [ ! -e go ]; do sleep 0.05; done; echo done"),
            ],
            env: BTreeMap::new(),
            cwd: ".".into(),
            stdin: None,
            timeout_ms: 60_000,
            max_output_bytes: 100,
            stream_output: false,
        };
        async move { runner.call(request, t).await }
    });
    wait_until("the execs never started", || {
        processes_with(&dropped).len() >= 2 && !processes_with(&kept).is_empty()
    })
    .await;
    abandoned.abort();
    assert!(abandoned.await.unwrap_err().is_cancelled());
    wait_until("the dropped call's processes survived", || {
        processes_with(&dropped).is_empty()
    })
    .await;
    assert!(
        !processes_with(&kept).is_empty(),
        "the other call's program was killed too"
    );
    std::fs::write(workspace.join("go"), b"").unwrap();
    let reply = survivor.await.unwrap().expect("the other call");
    match reply {
        Reply::Exited {
            exit_code, stdout, ..
        } => {
            assert_eq!(exit_code, 0);
            assert_eq!(String::from_utf8_lossy(&stdout.0).trim(), "done");
        }
        other => panic!("{other:?}"),
    }
    // All of it on the one stream: the cancels closed channels, not the stream.
    assert_eq!(bridge.dials(), 1);
    assert_eq!(runner.hello(t).await.expect("hello"), "pod");
    assert_eq!(bridge.dials(), 1);
}
