//! The service reading through `ReadModelStore`: retention of finished work through the real
//! API, a store that cannot answer, and executor recovery reading the store in two steps.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use workspace::app::Server;
use workspace::readmodel::{MemoryStore, Page, ReadModelError, ReadModelStore, Rebuild, Retention};
use workspace_events::RecordedEvent;
use workspace_projections::{Applied, InvocationView, SessionView, TypedEvent};

use crate::support::{eventually, runner_exe, send};

/// A memory store that can be taken down (every read answers `Unavailable`) or made to
/// report a checkpoint of 0 (as if read before everything it holds was applied).
#[derive(Clone)]
struct Switchable {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
    stale_checkpoint: Arc<AtomicBool>,
}

impl Switchable {
    fn new(retention: Retention) -> Self {
        Switchable {
            inner: MemoryStore::new(retention),
            down: Arc::default(),
            stale_checkpoint: Arc::default(),
        }
    }

    fn up(&self) -> Result<(), ReadModelError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ReadModelError::Unavailable {
                source: "connection refused (test)".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ReadModelStore for Switchable {
    async fn session(&self, id: &str) -> Result<Option<Arc<SessionView>>, ReadModelError> {
        self.up()?;
        self.inner.session(id).await
    }

    async fn invocation(&self, id: &str) -> Result<Option<Arc<InvocationView>>, ReadModelError> {
        self.up()?;
        self.inner.invocation(id).await
    }

    async fn invocation_by_correlation(
        &self,
        session_id: &str,
        tool_name: &str,
        correlation_id: &str,
    ) -> Result<Option<Arc<InvocationView>>, ReadModelError> {
        self.up()?;
        self.inner
            .invocation_by_correlation(session_id, tool_name, correlation_id)
            .await
    }

    async fn session_invocations(
        &self,
        session_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Page<InvocationView>, ReadModelError> {
        self.up()?;
        self.inner
            .session_invocations(session_id, offset, limit)
            .await
    }

    async fn principal_sessions(
        &self,
        tenant_id: &str,
        actor_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Page<SessionView>, ReadModelError> {
        self.up()?;
        self.inner
            .principal_sessions(tenant_id, actor_id, offset, limit)
            .await
    }

    async fn live_sessions(&self) -> Result<Vec<Arc<SessionView>>, ReadModelError> {
        self.up()?;
        self.inner.live_sessions().await
    }

    async fn sessions_due(
        &self,
        now: time::OffsetDateTime,
    ) -> Result<Vec<Arc<SessionView>>, ReadModelError> {
        self.up()?;
        self.inner.sessions_due(now).await
    }

    async fn open_invocations(&self) -> Result<Vec<Arc<InvocationView>>, ReadModelError> {
        self.up()?;
        self.inner.open_invocations().await
    }

    async fn apply(
        &self,
        after: u64,
        events: &[Arc<RecordedEvent>],
        typed: Vec<Option<TypedEvent>>,
    ) -> Result<Vec<Applied>, ReadModelError> {
        // The projector keeps writing: only readers see the outage.
        self.inner.apply(after, events, typed).await
    }

    async fn checkpoint(&self) -> Result<u64, ReadModelError> {
        if self.stale_checkpoint.load(Ordering::SeqCst) {
            return Ok(0);
        }
        self.inner.checkpoint().await
    }

    async fn wait_for(&self, sequence: u64, timeout: Duration) -> Result<bool, ReadModelError> {
        self.inner.wait_for(sequence, timeout).await
    }

    async fn rebuild(&self) -> Result<Box<dyn Rebuild>, ReadModelError> {
        self.inner.rebuild().await
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), ReadModelError> {
        self.up()
    }
}

/// A running service over `data_dir` reading through `store`.
struct Running {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(data_dir: &Path, store: Arc<dyn ReadModelStore>) -> Self {
        crate::support::require_binary("bwrap", "install bubblewrap (apt-get install bubblewrap)");
        let config = workspace::config::Config::for_tests(
            data_dir,
            runner_exe(),
            workspace::runner::sandbox::SandboxMode::Bubblewrap,
        );
        let server = Server::bind_with(config, store)
            .await
            .expect("server binds");
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run_until_stopped(shutdown.clone()));
        Running {
            addr,
            shutdown,
            task,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
        let (status, _, value) = send(self.addr, method, path, bytes, &[]).await;
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn create_session(&self) -> String {
        let body = json!({
            "principal": {"tenant_id": "acme", "actor_id": "alice", "roles": ["developer"]}
        });
        let (status, value) = self.call(Method::POST, "/v1/sessions", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "create session: {value}");
        value["session"]["id"].as_str().expect("id").to_owned()
    }

    async fn invoke(&self, session: &str, tool: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/v1/sessions/{session}/tools/{tool}/invoke");
        self.call(Method::POST, &path, Some(body)).await
    }

    async fn event_types(&self, path: &str) -> Vec<String> {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["event_type"].as_str().expect("event_type").to_owned())
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_invocation_leaves_the_read_model_after_its_retention_but_its_events_stay() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        invocations: Some(Duration::from_secs(1)),
        sessions: None,
    };
    let server = Running::start(dir.path(), Arc::new(MemoryStore::new(retention))).await;
    let session = server.create_session().await;
    let (status, body) = server
        .invoke(&session, "fs.list", json!({"args": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["status"], "succeeded", "{body}");
    let id = body["invocation"]["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/invocations/{id}");
    let (status, body) = server.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let gone = eventually(Duration::from_secs(10), || {
        let (server, path) = (&server, &path);
        async move { server.get(path).await.0 == StatusCode::NOT_FOUND }
    })
    .await;
    let (status, body) = server.get(&path).await;
    assert!(gone, "still served after its retention: {status} {body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    // Gone from the session's index too; the session (kept for good here) is still served.
    let (status, body) = server
        .get(&format!("/v1/sessions/{session}/invocations"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 0, "{body}");
    assert_eq!(
        server.get(&format!("/v1/sessions/{session}")).await.0,
        StatusCode::OK
    );
    // The log keeps every event: the events route reads it, not the view.
    assert_eq!(
        server.event_types(&format!("{path}/events")).await,
        [
            "invocation.queued",
            "invocation.started",
            "invocation.completed"
        ]
    );
    // An id that never had events is still unknown there.
    let (status, body) = server.get("/v1/invocations/inv-neverrecorded/events").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_that_cannot_be_reached_answers_503_unavailable_in_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let store = Switchable::new(Retention::default());
    let server = Running::start(dir.path(), Arc::new(store.clone())).await;
    let session = server.create_session().await;
    let (status, body) = server
        .invoke(&session, "fs.list", json!({"args": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["invocation"]["id"].as_str().expect("id").to_owned();

    store.down.store(true, Ordering::SeqCst);
    for path in [
        format!("/v1/invocations/{id}"),
        format!("/v1/sessions/{session}"),
        format!("/v1/sessions/{session}/invocations"),
    ] {
        let (status, headers, body) = send(server.addr, Method::GET, &path, None, &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "{path}: {body}");
        assert!(body["error"]["request_id"].is_string(), "{path}: {body}");
        assert_eq!(headers["retry-after"], "1", "{path}");
    }
    store.down.store(false, Ordering::SeqCst);
    let (status, body) = server.get(&format!("/v1/invocations/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

/// Recovery reads the store's checkpoint, then its open invocations: work queued in between is
/// both listed and found again in the log, so it is dispatched twice. The `started` claim,
/// appended with the version it loaded, lets only one dispatch run it. Here the checkpoint is
/// read as 0, so every queued invocation in the log is dispatched twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_dispatched_twice_at_recovery_runs_once() {
    use workspace::domain::InvocationCommand;
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), Arc::new(MemoryStore::default())).await;
    let session = server.create_session().await;
    server.stop().await;

    // A crash left invocations queued: appended through a bound server whose roles never ran.
    let ids = ["inv-queuedtwice1", "inv-queuedtwice2", "inv-queuedtwice3"];
    {
        let config = workspace::config::Config::for_tests(
            dir.path(),
            runner_exe(),
            workspace::runner::sandbox::SandboxMode::Bubblewrap,
        );
        let bound = Server::bind(config).await.expect("bind");
        let app = bound.app();
        for id in ids {
            let now = time::OffsetDateTime::now_utc();
            let queued = workspace_events::InvocationQueued {
                request: workspace_events::InvocationRequest {
                    invocation_id: id.into(),
                    session_id: session.clone(),
                    tool_name: "fs.stat".into(),
                    correlation_id: None,
                    approved: false,
                    args: Some(json!({"path": "."})),
                    args_ref: None,
                    requested_at: now,
                }
                .into(),
                timeout_seconds: 15,
                start_deadline: now + time::Duration::minutes(5),
            };
            app.invocations
                .store()
                .execute(
                    id,
                    InvocationCommand::Queue(queued),
                    &(),
                    &Default::default(),
                )
                .await
                .expect("queued");
        }
    }

    let store = Switchable::new(Retention::default());
    store.stale_checkpoint.store(true, Ordering::SeqCst);
    let server = Running::start(dir.path(), Arc::new(store)).await;
    let settled = eventually(Duration::from_secs(10), || {
        let server = &server;
        async move {
            for id in ids {
                let (_, body) = server.get(&format!("/v1/invocations/{id}")).await;
                if body["invocation"]["status"] != "succeeded" {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(settled, "the queued work did not run");
    for id in ids {
        assert_eq!(
            server
                .event_types(&format!("/v1/invocations/{id}/events"))
                .await,
            [
                "invocation.queued",
                "invocation.started",
                "invocation.completed"
            ],
            "{id} ran once"
        );
    }
    server.stop().await;
}
