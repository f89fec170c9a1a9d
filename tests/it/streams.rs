//! Live event streams: `GET …/events` with `Accept: text/event-stream`, read incrementally from
//! the real server while the real executor runs tools in the real sandbox.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use workspace::tools::catalog::Registry;
use workspace::tools::exec::{self, Program};
use workspace::tools::{
    Catalog, Completed, Constraints, Idempotency, Metadata, RiskLevel, Scope, SideEffects, Tool,
    ToolContext, ToolFailure,
};

use crate::support::{Backends, Mode, TestServer, in_both_modes};

/// How long any one event may take to arrive.
const PATIENCE: Duration = Duration::from_secs(20);

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

impl Sse {
    fn id(&self) -> u64 {
        self.id.parse().expect("numeric id")
    }
}

/// What reading a stream gave next.
#[derive(Debug)]
enum Next {
    Event(Sse),
    /// The server ended the stream.
    End,
}

/// A server-sent event stream read as it arrives.
struct EventStream {
    body: Incoming,
    buffer: String,
}

impl EventStream {
    /// Opens `path` asking for a stream; panics unless the answer is one.
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let (status, response_headers, body) = open(addr, path, headers).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let content_type = response_headers["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{path} answered {content_type}: {}",
            String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes())
        );
        EventStream {
            body,
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), or the end of the stream; panics when
    /// nothing arrives within [`PATIENCE`].
    async fn next(&mut self) -> Next {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Next::Event(event);
                }
                continue;
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no event within {PATIENCE:?}; have {:?}", self.buffer));
            match frame {
                None => {
                    assert!(
                        self.buffer.trim().is_empty(),
                        "the stream ended inside an event: {:?}",
                        self.buffer
                    );
                    return Next::End;
                }
                Some(frame) => {
                    if let Ok(data) = frame.expect("stream frame").into_data() {
                        self.buffer.push_str(std::str::from_utf8(&data).unwrap());
                    }
                }
            }
        }
    }

    /// The next event; panics if the stream ended instead.
    async fn event(&mut self) -> Sse {
        match self.next().await {
            Next::Event(e) => e,
            Next::End => panic!("the stream ended; an event was expected"),
        }
    }

    /// Every event up to the end of the stream.
    async fn rest(&mut self) -> Vec<Sse> {
        let mut events = Vec::new();
        while let Next::Event(e) = self.next().await {
            events.push(e);
        }
        events
    }
}

/// One SSE block; `None` for a block of comments only (keep-alive).
fn parse(block: &str) -> Option<Sse> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value),
            other => panic!("unexpected SSE field {other:?} in {block:?}"),
        }
    }
    if id.is_none() && event.is_none() && data.is_empty() {
        return None;
    }
    Some(Sse {
        id: id.expect("every event has an id"),
        event: event.expect("every event has a type"),
        data: serde_json::from_str(&data.join("\n")).expect("data is JSON"),
    })
}

/// Sends a GET and returns the answer without reading its body.
async fn open(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap, Incoming) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(Empty::<Bytes>::new()).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body)
}

const SSE: (&str, &str) = ("accept", "text/event-stream");

fn types(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

/// The `{"events": […]}` the JSON route answers.
async fn json_events(server: &TestServer, path: &str) -> Vec<Value> {
    let (status, _, body) = server.get(path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().expect("events").clone()
}

/// Runs `fs.write_file` synchronously; returns the invocation id.
async fn write_file(server: &TestServer, session: &str, path: &str) -> String {
    let (status, body) = server
        .invoke(
            session,
            "fs.write_file",
            json!({"approved": true, "args": {"path": path, "content": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["invocation"]["id"].as_str().unwrap().to_owned()
}

async fn an_async_invocations_stream_yields_queued_started_and_completed_as_they_happen_then_ends(
    mode: Mode,
) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&Backends::start(mode), dir.path(), |c| {
        c.executor_concurrency = 1
    })
    .await;
    let session = server.create_session(json!({})).await;
    let busy = server.hold_the_only_slot();
    let (status, body) = server
        .invoke(&session, "fs.list", json!({"async": true, "args": {}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["invocation"]["status"], "queued", "{body}");
    let id = body["invocation"]["id"].as_str().unwrap().to_owned();

    let path = format!("/v1/invocations/{id}/events");
    let mut stream = EventStream::open(server.addr, &path, &[SSE]).await;
    let queued = stream.event().await;
    assert_eq!(
        (queued.event.as_str(), queued.id()),
        ("invocation.queued", 1)
    );
    assert_eq!(queued.data["aggregate_id"], id.as_str());
    // Nothing else can happen while the executor's only slot is held: the stream is waiting,
    // and what follows arrives because it happened after the stream opened.
    drop(busy);
    let started = stream.event().await;
    assert_eq!(
        (started.event.as_str(), started.id()),
        ("invocation.started", 2)
    );
    let completed = stream.event().await;
    assert_eq!(
        (completed.event.as_str(), completed.id()),
        ("invocation.completed", 3)
    );
    assert_eq!(completed.data["payload"]["outcome"], "succeeded");
    assert!(
        matches!(stream.next().await, Next::End),
        "the stream ends after the terminal event"
    );

    // Each event's data is the envelope the JSON route returns.
    let recorded = json_events(&server, &path).await;
    let streamed: Vec<Value> = [queued, started, completed]
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(streamed, recorded);
}

async fn connecting_after_an_invocation_completed_replays_all_its_events_and_ends(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let id = write_file(&server, &session, "a.txt").await;

    let path = format!("/v1/invocations/{id}/events");
    let events = EventStream::open(server.addr, &path, &[SSE])
        .await
        .rest()
        .await;
    assert_eq!(
        types(&events),
        [
            "invocation.queued",
            "invocation.started",
            "invocation.completed"
        ]
    );
    assert_eq!(
        events.iter().map(Sse::id).collect::<Vec<_>>(),
        [1, 2, 3],
        "ids are the aggregate versions"
    );
    let recorded = json_events(&server, &path).await;
    assert_eq!(
        events.into_iter().map(|e| e.data).collect::<Vec<_>>(),
        recorded
    );
}

async fn last_event_id_resumes_an_invocation_stream_after_the_given_event_without_duplicate_or_gap(
    mode: Mode,
) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let id = write_file(&server, &session, "a.txt").await;
    let path = format!("/v1/invocations/{id}/events");

    for last in 0..3u64 {
        let last_id = last.to_string();
        let events = EventStream::open(server.addr, &path, &[SSE, ("last-event-id", &last_id)])
            .await
            .rest()
            .await;
        assert_eq!(
            events.iter().map(Sse::id).collect::<Vec<_>>(),
            (last + 1..=3).collect::<Vec<_>>(),
            "after {last}"
        );
    }
    // Clients that cannot set headers say `?after=`; a `Last-Event-ID` (an EventSource
    // reconnecting to the same URL) takes precedence.
    let events = EventStream::open(server.addr, &format!("{path}?after=1"), &[SSE])
        .await
        .rest()
        .await;
    assert_eq!(events.iter().map(Sse::id).collect::<Vec<_>>(), [2, 3]);
    let events = EventStream::open(
        server.addr,
        &format!("{path}?after=1"),
        &[SSE, ("last-event-id", "2")],
    )
    .await
    .rest()
    .await;
    assert_eq!(events.iter().map(Sse::id).collect::<Vec<_>>(), [3]);

    // Resuming after the terminal event: nothing more will come, and 204 tells an EventSource
    // to stop reconnecting.
    let (status, _, _) = open(server.addr, &path, &[SSE, ("last-event-id", "3")]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, headers, body) = server
        .raw(Method::GET, &path, None, &[SSE, ("last-event-id", "three")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["error"]["code"], "invalid_argument", "{body}");
}

async fn a_session_stream_sees_its_lifecycle_and_its_invocations_live_and_ends_when_it_closes(
    mode: Mode,
) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let other = server.create_session(json!({})).await;
    let path = format!("/v1/sessions/{session}/events");
    let mut stream = EventStream::open(server.addr, &path, &[SSE]).await;

    let created = stream.event().await;
    let provisioned = stream.event().await;
    assert_eq!(
        types(&[created, provisioned]),
        ["session.created", "session.provisioned"]
    );

    // Invocations of this session arrive as they happen; another session's never do.
    write_file(&server, &other, "elsewhere.txt").await;
    let id = write_file(&server, &session, "a.txt").await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(stream.event().await);
    }
    assert_eq!(
        types(&seen),
        [
            "invocation.queued",
            "invocation.started",
            "invocation.completed"
        ]
    );
    assert!(
        seen.iter().all(|e| e.data["aggregate_id"] == id.as_str()),
        "{seen:?}"
    );
    // A refusal is the invocation's only event, and is streamed too.
    let (status, denied) = server
        .invoke(&session, "fs.delete", json!({"args": {"path": "a.txt"}}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{denied}");
    let refusal = stream.event().await;
    assert_eq!(refusal.event, "invocation.denied");
    assert_eq!(refusal.data["aggregate_id"], denied["invocation"]["id"]);
    seen.push(refusal);

    let (status, _, body) = server
        .call(Method::DELETE, &path.replace("/events", ""), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let closed = stream.event().await;
    assert_eq!(closed.event, "session.closed");
    assert!(
        matches!(stream.next().await, Next::End),
        "the stream ends after session.closed"
    );
    seen.push(closed);

    // Ids are global sequences: increasing, and each the event's own `sequence`.
    let ids: Vec<u64> = seen.iter().map(Sse::id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(
        seen.iter().all(|e| e.data["sequence"] == e.id()),
        "{seen:?}"
    );

    // Resuming replays exactly what followed the given event, in the same order, then ends.
    let after = seen[1].id().to_string();
    let resumed = EventStream::open(server.addr, &path, &[SSE, ("last-event-id", &after)])
        .await
        .rest()
        .await;
    assert_eq!(
        resumed.iter().map(Sse::id).collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    let last = ids.last().unwrap().to_string();
    let (status, _, _) = open(server.addr, &path, &[SSE, ("last-event-id", &last)]).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "nothing follows session.closed"
    );
}

async fn a_stream_for_an_unknown_id_is_a_404_json_envelope(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    for path in [
        "/v1/invocations/inv-unknown/events",
        "/v1/sessions/session-unknown/events",
    ] {
        let (status, headers, body) = server.raw(Method::GET, path, None, &[SSE]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(headers["content-type"], "application/json", "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
}

async fn trusted_headers_mode_enforces_ownership_on_the_stream_routes(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&Backends::start(mode), dir.path(), |c| {
        c.auth = workspace::config::AuthMode::TrustedHeaders {
            token: "t0ken".into(),
            tenant_header: "X-Workspace-Tenant-Id".into(),
            actor_header: "X-Workspace-Actor-Id".into(),
            roles_header: "X-Workspace-Roles".into(),
            token_header: "X-Workspace-Auth-Token".into(),
        }
    })
    .await;
    let as_user = |actor: &'static str| {
        [
            ("x-workspace-auth-token", "t0ken"),
            ("x-workspace-tenant-id", "acme"),
            ("x-workspace-actor-id", actor),
            ("x-workspace-roles", "developer"),
        ]
    };
    let alice = as_user("alice");
    let (status, _, body) = server
        .raw(Method::POST, "/v1/sessions", Some(b"{}".to_vec()), &alice)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let session = body["session"]["id"].as_str().unwrap().to_owned();
    let (status, _, body) = server
        .raw(
            Method::POST,
            &format!("/v1/sessions/{session}/tools/fs.list/invoke"),
            Some(br#"{"args": {}}"#.to_vec()),
            &alice,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let invocation = body["invocation"]["id"].as_str().unwrap().to_owned();

    for path in [
        format!("/v1/invocations/{invocation}/events"),
        format!("/v1/sessions/{session}/events"),
    ] {
        let mut bob = as_user("bob").to_vec();
        bob.push(SSE);
        let (status, headers, body) = server.raw(Method::GET, &path, None, &bob).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(headers["content-type"], "application/json", "{path}");
        assert_eq!(body["error"]["code"], "policy_denied", "{path}: {body}");

        let (status, _, body) = server.raw(Method::GET, &path, None, &[SSE]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{path}: {body}");

        let mut owner = alice.to_vec();
        owner.push(SSE);
        let mut stream = EventStream::open(server.addr, &path, &owner).await;
        let first = stream.event().await;
        assert!(first.id() >= 1, "{path}: {first:?}");
    }
}

async fn a_json_get_of_the_events_is_unchanged(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let id = write_file(&server, &session, "a.txt").await;
    for path in [
        format!("/v1/invocations/{id}/events"),
        format!("/v1/sessions/{session}/events"),
    ] {
        for accept in [None, Some("application/json"), Some("*/*")] {
            let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
            let (status, response_headers, body) =
                server.raw(Method::GET, &path, None, &headers).await;
            assert_eq!(status, StatusCode::OK, "{path} {accept:?}: {body}");
            assert_eq!(response_headers["content-type"], "application/json");
            let events = body["events"].as_array().expect("events");
            assert!(!events.is_empty(), "{path}: {body}");
            let versions: Vec<u64> = events
                .iter()
                .map(|e| e["aggregate_version"].as_u64().unwrap())
                .collect();
            assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>());
        }
    }
    // The session's JSON audit trail stays its own events, not its invocations'.
    let types: Vec<String> = server
        .event_types(&format!("/v1/sessions/{session}/events"))
        .await;
    assert_eq!(types, ["session.created", "session.provisioned"]);
}

async fn stopping_the_service_ends_its_open_streams(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let path = format!("/v1/sessions/{session}/events");
    let mut stream = EventStream::open(server.addr, &path, &[SSE]).await;
    assert_eq!(stream.event().await.event, "session.created");
    // A graceful shutdown waits for open answers; a session's stream would never end.
    tokio::time::timeout(PATIENCE, server.stop())
        .await
        .expect("the service stopped with a stream open");
}

/// A tool of this test's own catalog (never of the service's): runs a program that prints a
/// line, waits until the test lets it go (a file `go` in the workspace), prints another and
/// one on stderr. The output goes through the process helper like any tool's.
struct Ticker;

/// `test.ticker` takes no arguments.
#[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// What `test.ticker` answers.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct TickerOutput {
    /// Its program's standard output, inline.
    stdout: String,
    /// Its program's exit code.
    exit_code: i32,
}

impl Tool for Ticker {
    type Args = NoArgs;
    type Output = TickerOutput;

    fn metadata(&self) -> Metadata {
        Metadata {
            name: "test.ticker",
            description: "Prints a line, waits for a file `go`, prints another and one on stderr.",
            scope: Scope::Workspace,
            side_effects: SideEffects::None,
            risk_level: RiskLevel::Low,
            requires_approval: false,
            idempotency: Idempotency::Guaranteed,
            runs_repository_code: false,
            constraints: Constraints {
                timeout_seconds: 30,
                max_retries: 0,
                output_limit_kb: None,
            },
            preconditions: Vec::new(),
            postconditions: Vec::new(),
            cost_hint: "low",
            arg_fields: Vec::new(),
            examples: Vec::new(),
        }
    }

    async fn run(
        &self,
        ctx: &ToolContext,
        _args: NoArgs,
    ) -> Result<Completed<TickerOutput>, ToolFailure> {
        let program = Program::new([
            "sh",
            "-c",
            "printf 'tick 1\\n'; while [ ! -e go ]; do sleep 0.02; done; printf 'tick 2\\n'; printf 'warn\\n' >&2",
        ]);
        let finished = exec::run(ctx, &program).await?;
        Ok(Completed {
            output: TickerOutput {
                stdout: String::from_utf8_lossy(&finished.stdout.inline).into_owned(),
                exit_code: finished.exit_code,
            },
            logs: Vec::new(),
            artifacts: finished.artifacts("ticker"),
            exit_code: finished.exit_code,
        })
    }
}

fn catalog_with_ticker() -> Catalog {
    let mut registry = Registry::default();
    workspace::tools::fs::register(&mut registry);
    registry.register(Ticker);
    registry.build()
}

/// The `(event, id, data)` of the events, for comparing streams.
fn described(events: &[Sse]) -> Vec<(String, String, Value)> {
    events
        .iter()
        .map(|e| (e.event.clone(), e.id.clone(), e.data.clone()))
        .collect()
}

/// The text of the stream's output chunks on `channel`, in order.
fn output(events: &[Sse], channel: &str) -> String {
    events
        .iter()
        .filter(|e| e.event == "invocation.output_chunk" && e.data["channel"] == channel)
        .map(|e| {
            assert_eq!(e.data["encoding"], "utf-8", "{:?}", e.data);
            e.data["data"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn a_running_programs_output_streams_before_completed_from_any_replica_and_resumes_without_duplicate_or_gap(
    mode: Mode,
) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_catalog(&backends, dir.path(), catalog_with_ticker(), |_| {}).await;
    // In distributed mode the stream is read from another replica: an API and projector over
    // the same NATS, without an executor (the run happens in the first process).
    let other_dir = tempfile::tempdir().unwrap();
    let replica = match mode {
        Mode::Embedded => None,
        Mode::JetStream => Some(
            TestServer::start_with(&backends, other_dir.path(), |c| {
                c.roles.executor = false;
            })
            .await,
        ),
    };
    let reader = replica.as_ref().unwrap_or(&server);
    let session = server.create_session(json!({})).await;
    let (status, body) = server
        .invoke(&session, "test.ticker", json!({"async": true, "args": {}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["invocation"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/invocations/{id}/events");
    assert!(
        crate::support::eventually(PATIENCE, || async {
            reader.get(&path).await.0 == StatusCode::OK
        })
        .await,
        "the reader knows the invocation"
    );

    let mut stream = EventStream::open(reader.addr, &path, &[SSE]).await;
    let mut seen = vec![stream.event().await, stream.event().await];
    assert_eq!(types(&seen), ["invocation.queued", "invocation.started"]);
    // The program is waiting for the test: this chunk arrives while it runs.
    let first = stream.event().await;
    assert_eq!(first.event, "invocation.output_chunk");
    assert_eq!(
        first.id, "2.7.0",
        "version of started, then the bytes of each stream"
    );
    assert_eq!(
        (
            &first.data["channel"],
            &first.data["offset"],
            &first.data["data"]
        ),
        (&json!("stdout"), &json!(0), &json!("tick 1\n"))
    );
    assert_eq!(first.data["invocation_id"], id.as_str());
    let (_, _, view) = server.get(&format!("/v1/invocations/{id}")).await;
    assert_eq!(view["invocation"]["status"], "running", "{view}");
    seen.push(first);
    std::fs::write(server.workspace_dir(&session).join("go"), "").unwrap();
    seen.extend(stream.rest().await);

    let (last, chunks) = seen[2..].split_last().unwrap();
    assert_eq!(last.event, "invocation.completed", "{:?}", types(&seen));
    assert_eq!(last.id, "3");
    assert_eq!(last.data["payload"]["outcome"], "succeeded");
    assert!(
        chunks.iter().all(|c| c.event == "invocation.output_chunk"),
        "{:?}",
        types(&seen)
    );
    assert_eq!(output(&seen, "stdout"), "tick 1\ntick 2\n");
    assert_eq!(output(&seen, "stderr"), "warn\n");

    // Resumed after any message: exactly what followed it, no duplicate, no gap.
    for (at, message) in seen.iter().enumerate().take(seen.len() - 1) {
        let resumed = EventStream::open(
            reader.addr,
            &path,
            &[SSE, ("last-event-id", message.id.as_str())],
        )
        .await
        .rest()
        .await;
        assert_eq!(
            described(&resumed),
            described(&seen[at + 1..]),
            "after {}",
            message.id
        );
    }
    // Resumed inside a chunk (3 bytes of "tick 1\n" seen): the rest of it, then on.
    let resumed = EventStream::open(reader.addr, &path, &[SSE, ("last-event-id", "2.3.0")])
        .await
        .rest()
        .await;
    assert_eq!(output(&resumed, "stdout"), "k 1\ntick 2\n");
    assert_eq!(output(&resumed, "stderr"), "warn\n");
    assert_eq!(types(&resumed).last(), Some(&"invocation.completed"));
    let (status, _, _) = open(reader.addr, &path, &[SSE, ("last-event-id", "2.x.0")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

in_both_modes!(
    a_running_programs_output_streams_before_completed_from_any_replica_and_resumes_without_duplicate_or_gap,
    an_async_invocations_stream_yields_queued_started_and_completed_as_they_happen_then_ends,
    connecting_after_an_invocation_completed_replays_all_its_events_and_ends,
    last_event_id_resumes_an_invocation_stream_after_the_given_event_without_duplicate_or_gap,
    a_session_stream_sees_its_lifecycle_and_its_invocations_live_and_ends_when_it_closes,
    a_stream_for_an_unknown_id_is_a_404_json_envelope,
    trusted_headers_mode_enforces_ownership_on_the_stream_routes,
    a_json_get_of_the_events_is_unchanged,
    stopping_the_service_ends_its_open_streams,
);
