//! The kubernetes backend through the real server (`WORKSPACE_BACKEND=kubernetes`), with its
//! one API client over kube's tower-test mock API server handed to the server builder
//! (`Server::bind_with_kube`): `POST /v1/sessions` creates the session's runner pod, waits for
//! the watch to report it ready and answers `ready`; a pod not ready in time fails the
//! session with the pod's reason and is deleted; the executor's `k8s.*` tools and the pod
//! janitor reach the same mock. Every pod "answer" here is scripted by the mock: nothing in
//! these tests ran a pod.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use workspace::config::{Backend, Config};
use workspace::kube::config::{KubeArgs, KubeSettings, parse_flags};
use workspace::tools::Catalog;

use crate::support::{Backends, Mode, TestServer, eventually};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const PODS: &str = "/api/v1/namespaces/runners/pods";

fn kubernetes(flags: &[&str]) -> impl FnOnce(&mut Config) + use<> {
    let flags: Vec<&str> = [
        "--k8s-namespace=runners",
        "--k8s-runner-image=registry.example.com/workspace/workspace-runner:base-0.1.0",
    ]
    .into_iter()
    .chain(flags.iter().copied())
    .collect();
    let args = parse_flags::<KubeArgs>(&flags).expect("flags parse");
    let settings = KubeSettings::try_from(args).expect("valid settings");
    move |config: &mut Config| config.backend = Backend::Kubernetes(Box::new(settings))
}

/// A request as the mock API saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Option<Value>,
}

impl Seen {
    fn is(&self, method: &Method, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

/// What the mock does with a request: answer it, or hold it unanswered (a watch that stays
/// silent until the caller gives up).
enum Answer {
    Json(u16, Value),
    Hold,
}

/// A mock API server answering every request with `answer`, recording them in order. The
/// service's requests come in no fixed order here (the janitor sweeps beside the sessions),
/// so the tests look for the requests they expect in the record.
struct MockApi {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockApi {
    fn start(answer: impl Fn(&Seen) -> Answer + Send + 'static) -> (Self, kube::Client) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(Self::serve(handle, seen.clone(), answer));
        (Self { seen }, kube::Client::new(svc, "runners"))
    }

    async fn serve(
        mut handle: Handle,
        seen: Arc<Mutex<Vec<Seen>>>,
        answer: impl Fn(&Seen) -> Answer + Send + 'static,
    ) {
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let request = Seen {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: decode(parts.uri.query().unwrap_or("")),
                body: (!bytes.is_empty())
                    .then(|| serde_json::from_slice(&bytes).expect("JSON body")),
            };
            let reply = answer(&request);
            seen.lock().unwrap().push(request);
            match reply {
                Answer::Json(code, body) => send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
                        .expect("response"),
                ),
                Answer::Hold => held.push(send),
            }
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until a request `matches`; returns it.
    async fn wait_for(&self, what: &str, matches: impl Fn(&Seen) -> bool) -> Seen {
        let found = eventually(Duration::from_secs(20), || {
            let ok = self.seen().iter().any(&matches);
            async move { ok }
        })
        .await;
        assert!(found, "no {what} request: {:#?}", self.seen());
        self.seen().into_iter().find(matches).expect("found")
    }
}

fn decode(q: &str) -> String {
    q.replace("%3D", "=")
        .replace("%2C", ",")
        .replace("%2F", "/")
        .replace("%3A", ":")
}

fn pod_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "100"}, "items": items})
}

/// The pod the mock API holds for a created `body`, in `phase`, ready or not.
fn as_stored(body: &Value, rv: &str, phase: &str, ready: bool) -> Value {
    let mut pod = body.clone();
    pod["metadata"]["resourceVersion"] = json!(rv);
    pod["metadata"]["uid"] = json!("0b5e0c8e-uid");
    pod["status"] = json!({"phase": phase,
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]});
    pod
}

fn pod_name(path: &str) -> Option<&str> {
    path.strip_prefix(PODS)?.strip_prefix('/')
}

/// The scripted cluster of these tests: a created pod is Pending on its first read, and the
/// watch that follows reports it `Running` and ready (or, with `ready: false`, stays silent
/// while the pod waits on `ImagePullBackOff`). Lists (the janitor's and the tools') see
/// `listed`; deletes succeed.
fn cluster(ready: bool, listed: Vec<Value>) -> impl Fn(&Seen) -> Answer + Send + 'static {
    let created: Mutex<Option<Value>> = Mutex::new(None);
    move |req: &Seen| {
        if req.is(&Method::POST, PODS) {
            let body = req.body.clone().expect("pod body");
            *created.lock().unwrap() = Some(body.clone());
            return Answer::Json(201, as_stored(&body, "1", "Pending", false));
        }
        let stored = created.lock().unwrap().clone();
        if req.method == Method::GET && req.path == PODS && req.query.contains("watch=true") {
            return match (ready, stored) {
                (true, Some(pod)) => Answer::Json(
                    200,
                    json!({"type": "MODIFIED", "object": as_stored(&pod, "3", "Running", true)}),
                ),
                _ => Answer::Hold,
            };
        }
        if req.method == Method::GET && req.path == PODS {
            return Answer::Json(200, pod_list(listed.clone()));
        }
        match (req.method.clone(), pod_name(&req.path), stored) {
            (Method::GET, Some(_), Some(pod)) => {
                let mut pending = as_stored(&pod, "2", "Pending", false);
                pending["status"]["containerStatuses"] = json!([{"name": "runner", "ready": false,
                    "restartCount": 0, "image": "x", "imageID": "",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]);
                Answer::Json(200, pending)
            }
            (Method::DELETE, Some(_), Some(pod)) => {
                Answer::Json(200, as_stored(&pod, "4", "Pending", false))
            }
            _ => Answer::Json(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": "not found (scripted)", "reason": "NotFound", "code": 404}),
            ),
        }
    }
}

fn devops(extra: Value) -> Value {
    let mut body =
        json!({"principal": {"tenant_id": "acme", "actor_id": "ops", "roles": ["devops"]}});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

async fn kube_server(dir: &std::path::Path, client: kube::Client, flags: &[&str]) -> TestServer {
    TestServer::start_with_kube(
        &Backends::start(Mode::Embedded),
        dir,
        Catalog::builtin(),
        Some(client),
        kubernetes(flags),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_session_creates_its_runner_pod_and_answers_ready_once_the_watch_says_so() {
    let (mock, client) = MockApi::start(cluster(true, vec![]));
    let dir = tempfile::tempdir().expect("tempdir");
    let server = kube_server(dir.path(), client, &[]).await;

    let (status, _, body) = server
        .call(Method::POST, "/v1/sessions", Some(devops(json!({}))))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let session = body["session"]["id"].as_str().expect("id").to_owned();
    assert_eq!(body["session"]["status"], "ready", "{body}");
    let runtime = &body["session"]["runtime"];
    assert_eq!(runtime["kind"], "kubernetes", "{body}");
    assert_eq!(runtime["namespace"], "runners", "{body}");
    let pod = runtime["pod_name"].as_str().expect("pod name").to_owned();

    // The one pod created is the session's pure spec.
    let seen = mock.seen();
    let creates: Vec<&Seen> = seen.iter().filter(|s| s.is(&Method::POST, PODS)).collect();
    assert_eq!(creates.len(), 1, "{seen:#?}");
    let created = creates[0].body.as_ref().expect("pod body");
    assert_eq!(created["metadata"]["name"], pod.as_str());
    assert_eq!(created["metadata"]["labels"]["app"], "workspace-session");
    assert_eq!(created["metadata"]["labels"]["workspace_tenant"], "acme");
    assert_eq!(created["metadata"]["labels"]["workspace_actor"], "ops");
    assert_eq!(
        created["metadata"]["annotations"]["workspace.io/session-id"],
        session.as_str()
    );
    assert_eq!(
        created["spec"]["containers"][0]["image"],
        "registry.example.com/workspace/workspace-runner:base-0.1.0"
    );
    assert!(created["spec"]["activeDeadlineSeconds"].as_i64().unwrap() > 0);
    // Then its read, then the watch from the version read, for that pod only.
    let after: Vec<&Seen> = seen
        .iter()
        .skip_while(|s| !s.is(&Method::POST, PODS))
        .filter(|s| !s.query.contains("labelSelector"))
        .collect();
    assert!(
        after[1].is(&Method::GET, &format!("{PODS}/{pod}")),
        "{seen:#?}"
    );
    assert!(
        after[2].query.contains("watch=true")
            && after[2]
                .query
                .contains(&format!("fieldSelector=metadata.name={pod}"))
            && after[2].query.contains("resourceVersion=2"),
        "{seen:#?}"
    );
    // Nothing was deleted.
    assert!(
        !seen.iter().any(|s| s.method == Method::DELETE),
        "{seen:#?}"
    );
    let (status, _, view) = server.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["session"]["status"], "ready", "{view}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_pod_not_ready_in_time_fails_the_session_with_its_reason_and_is_deleted() {
    let (mock, client) = MockApi::start(cluster(false, vec![]));
    let dir = tempfile::tempdir().expect("tempdir");
    let server = kube_server(dir.path(), client, &["--k8s-ready-timeout-seconds=1"]).await;

    let (status, _, body) = server
        .call(Method::POST, "/v1/sessions", Some(devops(json!({}))))
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("not ready within 1s"), "{message}");
    assert!(message.contains("ImagePullBackOff"), "{message}");
    assert_eq!(body["session"]["status"], "failed", "{body}");
    let session = body["session"]["id"].as_str().expect("id").to_owned();

    let seen = mock.seen();
    let created = seen
        .iter()
        .find(|s| s.is(&Method::POST, PODS))
        .and_then(|s| s.body.clone())
        .expect("a pod was created");
    let pod = created["metadata"]["name"].as_str().expect("name");
    assert!(
        seen.iter()
            .any(|s| s.is(&Method::DELETE, &format!("{PODS}/{pod}"))),
        "the pod that was not ready is deleted: {seen:#?}"
    );
    let (status, _, view) = server.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["session"]["status"], "failed", "{view}");
    assert_eq!(view["session"]["failure"]["code"], "timeout", "{view}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_k8s_tools_and_the_janitor_reach_the_one_api_client_of_the_server() {
    let web = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d9f", "namespace": "runners", "resourceVersion": "9",
                     "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "registry.example.com/acme/web:1"}]},
        "status": {"phase": "Running"}});
    let (mock, client) = MockApi::start(cluster(true, vec![web]));
    let dir = tempfile::tempdir().expect("tempdir");
    let server = kube_server(dir.path(), client, &[]).await;

    // The janitor (beside the executor) sweeps at start: its list of every runner pod.
    let sweep = mock
        .wait_for("janitor list", |s| {
            s.is(&Method::GET, PODS)
                && s.query.contains("labelSelector=app=workspace-session")
                && !s.query.contains("workspace_id")
                && !s.query.contains("watch=true")
        })
        .await;
    assert!(sweep.query.contains("limit=500"), "{sweep:?}");

    let (status, _, body) = server
        .call(Method::POST, "/v1/sessions", Some(devops(json!({}))))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let session = body["session"]["id"].as_str().expect("id").to_owned();
    let before = mock.seen().len();

    let (status, answer) = server
        .invoke(&session, "k8s.get_pods", json!({"args": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["invocation"]["status"], "succeeded", "{answer}");
    let output = answer["invocation"]["output"].to_string();
    assert!(output.contains("web-7d9f"), "{answer}");
    // The tool's list went to the mock, in the session's namespace.
    let seen = mock.seen();
    assert!(
        seen[before..]
            .iter()
            .any(|s| s.is(&Method::GET, PODS) && !s.query.contains("watch=true")),
        "{seen:#?}"
    );
    server.stop().await;
}
