//! Test harness: a real server on port 0 over a temporary data dir, with the real runner binary
//! in a real bubblewrap sandbox, and a minimal HTTP/1.1 client.
//!
//! A server runs in a [`Mode`]: embedded (the event log file in the data dir) or JetStream (a
//! pinned nats-server of its own, started on a free port and killed with the last server
//! using it). [`in_both_modes!`] runs one scenario body per mode.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use workspace::config::{Config, EventStoreConfig};
use workspace::eventstore::jetstream::JetStreamOptions;
use workspace::runner::sandbox::SandboxMode;
use workspace::tools::Catalog;

use crate::nats::NatsServer;

/// Where a test server keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The embedded log file in the data dir.
    Embedded,
    /// A JetStream stream on the test's own nats-server.
    JetStream,
}

/// What the servers of one test share across restarts besides the data dir: in JetStream
/// mode, the nats-server (a restarted service reopens the same stream on it).
#[derive(Clone)]
pub struct Backends {
    nats: Option<Arc<NatsServer>>,
}

impl Backends {
    /// Starts what `mode` needs.
    pub fn start(mode: Mode) -> Self {
        let nats = (mode == Mode::JetStream).then(|| Arc::new(NatsServer::start()));
        Backends { nats }
    }

    /// The test configuration over `data_dir` in this mode.
    pub fn config(&self, data_dir: &Path) -> Config {
        let mut config = Config::for_tests(data_dir, runner_exe(), SandboxMode::Bubblewrap);
        if let Some(nats) = &self.nats {
            config.event_store = EventStoreConfig::JetStream(JetStreamOptions::new(nats.url()));
        }
        config
    }

    /// The arguments that point `workspace replay` at this mode's event store.
    pub fn replay_args(&self, data_dir: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--data-dir".into(), data_dir.into()];
        if let Some(nats) = &self.nats {
            args.extend(["--nats-url".into(), nats.url().into()]);
        }
        args
    }

    /// The nats-server, in JetStream mode (to stop and restart it).
    pub fn nats(&self) -> Option<&NatsServer> {
        self.nats.as_deref()
    }

    /// The nats-server's log, for failure messages (empty when embedded).
    pub fn log(&self) -> String {
        self.nats.as_ref().map(|n| n.log()).unwrap_or_default()
    }
}

/// Generates, for each `async fn name(mode: Mode)` given, the tests `embedded::name` and
/// `jetstream::name`: one scenario, run over each event store.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Mode::Embedded).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Mode::JetStream).await;
                }
            )*
        }
    };
}
pub(crate) use in_both_modes;

/// Fails loudly (never skips) when a binary the tests need is missing.
pub fn require_binary(name: &str, hint: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "`{name}` is not installed; {hint}");
}

/// The `workspace` binary cargo built for these tests.
pub fn runner_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_workspace"))
}

/// A running service over a data dir.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    app: std::sync::Arc<workspace::app::App>,
    executor: Option<std::sync::Arc<workspace::executor::Executor>>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Held so the nats-server outlives the service (declared last: dropped last).
    _backends: Backends,
}

impl TestServer {
    /// Starts an embedded service on a fresh temporary data dir (kept by the returned guard).
    pub async fn start() -> (Self, tempfile::TempDir) {
        Self::start_mode(Mode::Embedded).await
    }

    /// Starts a service in `mode` on a fresh temporary data dir (kept by the returned guard).
    pub async fn start_mode(mode: Mode) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Self::start_with(&Backends::start(mode), dir.path(), |_| {}).await;
        (server, dir)
    }

    /// Starts an embedded service over `data_dir`, letting the test adjust the configuration.
    pub async fn start_in(data_dir: &Path, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_with(&Backends::start(Mode::Embedded), data_dir, adjust).await
    }

    /// Starts a service over `data_dir` on `backends` (shared with the test's other servers),
    /// letting the test adjust the configuration.
    pub async fn start_with(
        backends: &Backends,
        data_dir: &Path,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_with_catalog(backends, data_dir, Catalog::builtin(), adjust).await
    }

    /// [`TestServer::start_with`] offering the tools of `catalog` (a test's own tools beside
    /// the built-in ones; the service itself always offers the built-in catalog).
    pub async fn start_with_catalog(
        backends: &Backends,
        data_dir: &Path,
        catalog: Catalog,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_with_kube(backends, data_dir, catalog, None, adjust).await
    }

    /// [`TestServer::start_with_catalog`] handing the kubernetes backend `kube` as its API
    /// client (a client over kube's mock API) instead of one from the environment.
    pub async fn start_with_kube(
        backends: &Backends,
        data_dir: &Path,
        catalog: Catalog,
        kube: Option<kube::Client>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        require_binary("bwrap", "install bubblewrap (apt-get install bubblewrap)");
        require_binary("git", "install git (apt-get install git)");
        let mut config = backends.config(data_dir);
        adjust(&mut config);
        let read_models = match workspace::app::open_read_models(&config.read_models).await {
            Ok(store) => store,
            Err(e) => panic!("read models open: {e}\n{}", backends.log()),
        };
        let server = match workspace::app::Server::bind_with_kube(
            config,
            read_models,
            catalog,
            kube,
        )
        .await
        {
            Ok(server) => server,
            Err(e) => panic!("server binds: {e}\n{}", backends.log()),
        };
        let addr = server.local_addr();
        let app = server.app();
        let executor = server.executor();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run_until_stopped(shutdown.clone()));
        TestServer {
            addr,
            data_dir: data_dir.to_path_buf(),
            app,
            executor,
            shutdown,
            task: Some(task),
            _backends: backends.clone(),
        }
    }

    /// The service's shared state, for tests that drive a role directly.
    pub fn app(&self) -> &workspace::app::App {
        &self.app
    }

    /// Holds the executor's only run slot (start the server with `executor_concurrency = 1`)
    /// until the returned permit is dropped: invocations meanwhile stay queued (the executor
    /// holds at most one delivery, waiting for the slot).
    pub fn hold_the_only_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.executor
            .as_ref()
            .expect("this server runs an executor")
            .hold_a_slot()
            .expect("the executor's only slot was free")
    }

    /// Asks the service to stop (as SIGTERM would) without waiting for it.
    pub fn request_stop(&self) {
        self.shutdown.cancel();
    }

    /// Stops the service and waits until it has released the data dir.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    /// Sends a request; returns status, headers and the body parsed as JSON (or a string).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
        self.raw(method, path, bytes, &[]).await
    }

    /// Sends raw bytes with extra headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        send(self.addr, method, path, body, headers).await
    }

    /// GETs a path; returns status, headers and the JSON body.
    pub async fn get(&self, path: &str) -> (StatusCode, HeaderMap, Value) {
        self.call(Method::GET, path, None).await
    }

    /// The `event_type`s of an `{"events": [...]}` answer, in order.
    pub async fn event_types(&self, path: &str) -> Vec<String> {
        let (status, _, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["event_type"].as_str().expect("event_type").to_owned())
            .collect()
    }

    /// Asks for a session for alice (a developer of acme), with `extra` fields; returns the
    /// status and body, whatever they are.
    pub async fn try_create_session(&self, extra: Value) -> (StatusCode, Value) {
        let mut body = json!({
            "principal": {"tenant_id": "acme", "actor_id": "alice", "roles": ["developer"]}
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (status, _, value) = self.call(Method::POST, "/v1/sessions", Some(body)).await;
        (status, value)
    }

    /// Creates a session and returns its id.
    pub async fn create_session(&self, extra: Value) -> String {
        let (status, value) = self.try_create_session(extra).await;
        assert_eq!(status, StatusCode::CREATED, "create session: {value}");
        value["session"]["id"].as_str().expect("id").to_owned()
    }

    /// Invokes a tool synchronously.
    pub async fn invoke(&self, session: &str, tool: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/v1/sessions/{session}/tools/{tool}/invoke");
        let (status, _, value) = self.call(Method::POST, &path, Some(body)).await;
        (status, value)
    }

    /// The host directory of a session's workspace.
    pub fn workspace_dir(&self, session: &str) -> PathBuf {
        self.data_dir
            .join("workspaces")
            .join("acme")
            .join(session)
            .join("repo")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Invokes `tool` synchronously with approval given (`{"approved": true, "args": args}`).
pub async fn invoke_approved(
    server: &TestServer,
    session: &str,
    tool: &str,
    args: Value,
) -> (StatusCode, Value) {
    server
        .invoke(session, tool, json!({"approved": true, "args": args}))
        .await
}

/// The invocation of an approved call that must succeed (200, `succeeded`).
pub async fn invoke_ok(server: &TestServer, session: &str, tool: &str, args: Value) -> Value {
    let (status, body) = invoke_approved(server, session, tool, args.clone()).await;
    assert_eq!(status, StatusCode::OK, "{tool} {args}: {body}");
    assert_eq!(body["invocation"]["status"], "succeeded", "{body}");
    body["invocation"].clone()
}

/// Status, error code and invocation status of an approved call that must not succeed.
pub async fn invoke_refused(
    server: &TestServer,
    session: &str,
    tool: &str,
    args: Value,
) -> (StatusCode, String, String) {
    let (status, body) = invoke_approved(server, session, tool, args).await;
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    (
        status,
        text(&body["error"]["code"]),
        text(&body["invocation"]["status"]),
    )
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one HTTP/1.1 request on a fresh connection.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let has_body = body.is_some();
    if has_body {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, value)
}

/// A client that can be moved into spawned tasks.
#[derive(Clone, Copy)]
pub struct Client {
    pub addr: SocketAddr,
}

impl Client {
    /// POSTs JSON; returns status and body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let bytes = serde_json::to_vec(&body).expect("json");
        let (status, _, value) = send(self.addr, Method::POST, path, Some(bytes), &[]).await;
        (status, value)
    }
}

/// Sends one HTTP/1.1 request with exactly `headers` (no default `Content-Type`, unlike
/// [`send`]); returns status, headers and the body parsed as JSON (or a string).
pub async fn send_exact(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut builder = Request::builder().method(method).uri(path);
    builder = builder.header("host", "localhost");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (parts.status, parts.headers, value)
}

/// GETs `path` on a fresh connection; returns the status and the body exactly as sent (for
/// byte-for-byte comparisons).
pub async fn get_bytes(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, bytes)
}
