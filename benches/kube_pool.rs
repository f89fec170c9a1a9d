//! Session create-to-first-tool-result on the Kubernetes backend, cold (create the pod, wait
//! until ready) and warm (claim a pool pod), against kube's tower-test **mock** API server with
//! simulated latencies: every API answer waits `API_MS`, and a cold pod becomes ready
//! `POD_START_MS` after it was created (scheduling, image pull from cache, container start on
//! a real node; the value is an assumption, not a measurement). The first tool result is a
//! `read_file` through the multiplexed transport to a real runner server over an in-memory
//! stream (the exec stream's stand-in). No pod runs: these are mock timings.
//!
//! `cargo test --release --bench kube_pool` is not needed: `cargo test --bench kube_pool`
//! runs it (the simulated latencies dominate). Prints p50/p99 per path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use workspace::ids::SessionId;
use workspace::kube::client::RunnerPods;
use workspace::kube::config::{KubeArgs, KubeSettings};
use workspace::kube::pool::WarmPool;
use workspace::kube::provider::{KubeRunnerProvider, PodExec};
use workspace::kube::transport::{BoxRead, BoxWrite, serve_stdio};
use workspace::runner::protocol::Request as RunnerRequest;
use workspace::runner::{ProvisionSpec, RunnerProvider, SandboxSpec};
use workspace::sessions::SourcePolicy;
use workspace_events::WorkspaceSource;

const API_MS: u64 = 5;
const POD_START_MS: u64 = 1500;
const RUNS: usize = 20;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    kube: KubeArgs,
}

fn pod(name: &str, session: &str, rv: &str, ready: bool, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "runners", "resourceVersion": rv,
            "labels": {"app": app}, "annotations": {"workspace.io/session-id": session}},
        "spec": {"containers": [{"name": "runner"}]},
        "status": {"phase": if ready { "Running" } else { "Pending" },
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

/// A mock API server: answers by method and path after `API_MS`; a watch answers when the
/// pod's simulated start is over.
async fn mock(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) {
    let created = Arc::new(std::sync::Mutex::new(Instant::now()));
    while let Some((req, send)) = handle.next_request().await {
        let created = created.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(API_MS)).await;
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            let session = "session-bench";
            let body = match (req.method().as_str(), query.contains("watch=true")) {
                ("POST", _) => {
                    *created.lock().unwrap() = Instant::now();
                    pod("ws-session-bench", session, "1", false, "workspace-session")
                }
                ("GET", true) => {
                    let started = *created.lock().unwrap() + Duration::from_millis(POD_START_MS);
                    tokio::time::sleep_until(started.into()).await;
                    json!({"type": "MODIFIED", "object": pod("ws-session-bench", session, "3", true, "workspace-session")})
                }
                ("GET", false) if path.ends_with("/pods") => {
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                    "items": [pod("ws-warm-a", "", "7", true, "workspace-warm-runner")]})
                }
                ("GET", false) => pod("ws-session-bench", session, "2", false, "workspace-session"),
                ("PATCH", _) => pod("ws-warm-a", session, "8", true, "workspace-session"),
                _ => json!({}),
            };
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        });
    }
}

/// The exec stream's stand-in: an in-memory stream to `serve_stdio` and a real runner.
struct Duplex(PathBuf);

#[async_trait::async_trait]
impl PodExec for Duplex {
    async fn dial(&self, _pod: &str) -> std::io::Result<(BoxRead, BoxWrite)> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let (fr, fw) = tokio::io::split(far);
        let socket = self.0.clone();
        tokio::spawn(async move { serve_stdio(Box::pin(fr), Box::pin(fw), &socket).await });
        let (r, w) = tokio::io::split(near);
        Ok((Box::pin(r), Box::pin(w)))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(warm: bool, dir: &std::path::Path, socket: PathBuf) -> Vec<Duration> {
    let cli = Cli::try_parse_from([
        "workspace",
        "--k8s-namespace=runners",
        "--k8s-runner-image=registry.example.com/workspace/workspace-runner:base-0.1.0",
    ])
    .unwrap();
    let settings = Arc::new(KubeSettings::try_from(cli.kube).unwrap());
    let mut times = Vec::new();
    for i in 0..RUNS {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(mock(handle));
        let pods = RunnerPods::new(kube::Client::new(svc, "runners"), "runners");
        let pool = warm.then(|| Arc::new(WarmPool::new(settings.clone(), pods.clone(), 1)));
        let run_dir = dir.join(format!("run-{warm}-{i}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let provider = KubeRunnerProvider::new(
            settings.clone(),
            pods,
            Arc::new(Duplex(socket.clone())),
            run_dir,
            pool,
        );
        let metadata = BTreeMap::new();
        let sources = SourcePolicy::default();
        let sandbox = SandboxSpec {
            session_id: SessionId::parse("session-bench").unwrap(),
            workspace_dir: PathBuf::from("/nonexistent"),
        };
        let spec = ProvisionSpec {
            sandbox: sandbox.clone(),
            tenant_id: "acme",
            actor_id: "alice",
            metadata: &metadata,
            source: &WorkspaceSource::Empty,
            expires_in: Some(Duration::from_secs(3600)),
            sources: &sources,
        };
        let start = Instant::now();
        provider.provision(&spec).await.expect("provisioned");
        let runner = provider.ensure(&sandbox).await.expect("runner");
        runner
            .call(
                RunnerRequest::ReadFile {
                    path: "hello.txt".into(),
                    max_bytes: 1024,
                },
                Duration::from_secs(10),
            )
            .await
            .expect("first tool result");
        times.push(start.elapsed());
    }
    times.sort();
    times
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        std::fs::write(ws.join("hello.txt"), "hello").unwrap();
        let socket = dir.path().join("runner.sock");
        let server = workspace::runner::server::RunnerServer::bind(&socket, &ws, "pod").unwrap();
        tokio::spawn(server.run_until_stopped(std::future::pending()));
        println!("kube_pool: MOCK API timings (api answer {API_MS} ms, simulated pod start {POD_START_MS} ms), {RUNS} sessions each; no pod ran");
        for warm in [false, true] {
            let t = run(warm, dir.path(), socket.clone()).await;
            println!(
                "{:>5}: create-to-first-tool-result p50 {:>8.1} ms  p99 {:>8.1} ms",
                if warm { "warm" } else { "cold" },
                percentile(&t, 0.5).as_secs_f64() * 1e3,
                percentile(&t, 0.99).as_secs_f64() * 1e3
            );
        }
    });
}
