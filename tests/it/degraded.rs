//! The service while a dependency is down, and after it returns: `/readyz` names each
//! dependency with its backend and state; with NATS or Valkey down the API answers 503
//! `unavailable` with `Retry-After` within a bounded time, and the same process serves again
//! once they are back, without a restart. Real servers (JetStream on nats-server, Valkey as
//! redis-server), stopped and started again on the same port.

use std::time::{Duration, Instant};

use hyper::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::distributed::on_valkey;
use crate::support::{Backends, Mode, TestServer, eventually};
use crate::valkey::RedisServer;

/// The longest a request may take while a dependency is down: NATS requests are bounded by
/// the default `WORKSPACE_NATS_REQUEST_TIMEOUT_SECONDS` (5 s), Valkey's by its 2 s timeouts,
/// and a disconnected client fails at once.
const BOUNDED: Duration = Duration::from_secs(12);
/// How long a dependency that returned may take to be used again (NATS clients back off up to
/// 4 s between reconnects; the projector retries up to every 2 s).
const RECOVERY: Duration = Duration::from_secs(30);

/// Asserts a 503 `unavailable` answer in the envelope, with `Retry-After: 1`.
fn assert_unavailable(what: &str, status: StatusCode, headers: &HeaderMap, body: &Value) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert_eq!(body["error"]["code"], "unavailable", "{what}: {body}");
    assert!(body["error"]["request_id"].is_string(), "{what}: {body}");
    assert_eq!(
        headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "{what}: {headers:?}"
    );
}

/// `/readyz` until it answers `status`, within [`RECOVERY`]; its last answer.
async fn readyz_until(server: &TestServer, status: StatusCode) -> (HeaderMap, Value) {
    let reached = eventually(RECOVERY, || async move {
        let started = Instant::now();
        let answer = server.get("/readyz").await.0;
        // Each check of a dependency is bounded (1 s), and they run at once.
        assert!(started.elapsed() < Duration::from_secs(3), "/readyz hung");
        answer == status
    })
    .await;
    let (got, headers, body) = server.get("/readyz").await;
    assert!(reached, "/readyz never answered {status}: {got} {body}");
    (headers, body)
}

/// A session with a file written in it; returns the session id and the invocation id.
async fn session_with_a_file(server: &TestServer) -> (String, String) {
    let session = server.create_session(json!({})).await;
    let (status, body) = server
        .invoke(
            &session,
            "fs.write_file",
            json!({"approved": true, "args": {"path": "notes.txt", "content": "kept\n"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "notes.txt"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["status"], "succeeded", "{body}");
    let read = body["invocation"]["id"].as_str().expect("id").to_owned();
    (session, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_every_dependency_with_its_backend_and_the_projection_lag() {
    let backends = Backends::start(Mode::JetStream);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    session_with_a_file(&server).await;
    let (status, headers, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers.get("retry-after").is_none(), "{headers:?}");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(
        body["dependencies"],
        json!({
            "event_store": {"backend": "jetstream", "status": "ok"},
            "read_models": {"backend": "valkey", "status": "ok"},
            "artifact_store": {"backend": "jetstream_object_store", "status": "ok"},
        }),
        "{body}"
    );
    // The fields of the first version stay.
    assert_eq!(body["event_store"], "ok", "{body}");
    assert_eq!(body["artifact_store"], "ok", "{body}");
    let head = body["event_head"].as_u64().expect("event_head");
    let checkpoint = body["read_model_checkpoint"].as_u64().expect("checkpoint");
    assert!(head > 0, "{body}");
    assert_eq!(
        body["projection_lag"].as_u64(),
        Some(head - checkpoint),
        "{body}"
    );
    let (_, _, metrics) = server.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains("# TYPE projection_lag gauge\nprojection_lag "),
        "{metrics}"
    );
    // Every event the running projector applied was timed, decision to views written.
    let lagged = metrics
        .lines()
        .find_map(|l| l.strip_prefix("projection_lag_ms_count "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(lagged.is_some_and(|n| n >= head), "{metrics}");
    // And every batch it wrote: how many events, and how long the write took.
    let count = |family: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family}_count ")))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let batches = count("projection_batch_events");
    assert!(batches.is_some_and(|n| n > 0), "{metrics}");
    assert_eq!(count("projection_apply_ms"), batches, "{metrics}");
    let events = metrics
        .lines()
        .find_map(|l| l.strip_prefix("projection_batch_events_sum "))
        .and_then(|n| n.parse::<f64>().ok());
    assert_eq!(events.map(|e| e as u64), lagged, "{metrics}");
    server.stop().await;

    // Embedded: the log file, memory and the local directory.
    let (server, _dir) = TestServer::start_mode(Mode::Embedded).await;
    let (status, _, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["dependencies"],
        json!({
            "event_store": {"backend": "file", "status": "ok"},
            "read_models": {"backend": "memory", "status": "ok"},
            "artifact_store": {"backend": "local", "status": "ok"},
        }),
        "{body}"
    );
    assert_eq!(body["projection_lag"], 0, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_the_api_answers_503_unavailable_and_recovers_when_it_returns() {
    let backends = Backends::start(Mode::JetStream);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    let (before, read) = session_with_a_file(&server).await;
    readyz_until(&server, StatusCode::OK).await;
    let nats = backends.nats().expect("JetStream mode has a nats-server");

    nats.stop();
    let (headers, body) = readyz_until(&server, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(headers["retry-after"], "1", "{headers:?}");
    let deps = &body["dependencies"];
    assert_eq!(deps["event_store"]["backend"], "jetstream", "{body}");
    assert_eq!(deps["event_store"]["status"], "unavailable", "{body}");
    assert!(deps["event_store"]["error"].is_string(), "{body}");
    // The object store is on the same NATS; Valkey still answers.
    assert_eq!(deps["artifact_store"]["status"], "unavailable", "{body}");
    assert_eq!(deps["read_models"]["status"], "ok", "{body}");
    assert_eq!(body["event_store"], "unavailable", "{body}");

    // A command needs the log: refused within a bounded time, retryable.
    let started = Instant::now();
    let (status, headers, body) = server
        .call(
            hyper::Method::POST,
            "/v1/sessions",
            Some(json!({
                "principal": {"tenant_id": "acme", "actor_id": "alice", "roles": ["developer"]}
            })),
        )
        .await;
    assert!(started.elapsed() < BOUNDED, "took {:?}", started.elapsed());
    assert_unavailable("create session", status, &headers, &body);
    // Reads of the read models still answer.
    let (status, _, body) = server.get(&format!("/v1/sessions/{before}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Back on the same port, over the same store: the same process serves again.
    nats.restart();
    let (_, body) = readyz_until(&server, StatusCode::OK).await;
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(
        body["dependencies"]["event_store"]["status"], "ok",
        "{body}"
    );
    assert_eq!(
        body["dependencies"]["artifact_store"]["status"], "ok",
        "{body}"
    );
    let (session, _) = session_with_a_file(&server).await;
    assert_ne!(session, before);
    // What was recorded before the outage is still there, in the log and in the views.
    let (status, _, body) = server.get(&format!("/v1/invocations/{read}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server
            .event_types(&format!("/v1/invocations/{read}/events"))
            .await,
        [
            "invocation.queued",
            "invocation.started",
            "invocation.completed"
        ]
    );
    // The projector resumed: the read models caught up with the log.
    let caught_up = eventually(RECOVERY, || async {
        server.get("/readyz").await.2["projection_lag"] == 0
    })
    .await;
    assert!(caught_up, "{}", server.get("/readyz").await.2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_valkey_down_reads_answer_503_unavailable_and_an_empty_valkey_is_rebuilt_by_itself() {
    let backends = Backends::start(Mode::JetStream);
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    let (session, read) = session_with_a_file(&server).await;
    let session_path = format!("/v1/sessions/{session}");
    let read_path = format!("/v1/invocations/{read}");
    let (status, _, session_before) = server.get(&session_path).await;
    assert_eq!(status, StatusCode::OK, "{session_before}");
    let (status, _, read_before) = server.get(&read_path).await;
    assert_eq!(status, StatusCode::OK, "{read_before}");

    redis.kill();
    let started = Instant::now();
    let (status, headers, body) = server.get(&session_path).await;
    assert!(started.elapsed() < BOUNDED, "took {:?}", started.elapsed());
    assert_unavailable("get session", status, &headers, &body);
    let (headers, body) = readyz_until(&server, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(headers["retry-after"], "1", "{headers:?}");
    let deps = &body["dependencies"];
    assert_eq!(deps["read_models"]["backend"], "valkey", "{body}");
    assert_eq!(deps["read_models"]["status"], "unavailable", "{body}");
    assert!(deps["read_models"]["error"].is_string(), "{body}");
    assert_eq!(deps["event_store"]["status"], "ok", "{body}");

    // Valkey returns empty (nothing persisted). Until the projector has folded the log into
    // it again, a read answers 503 `unavailable`, never a wrong 404; then the same views.
    redis.restart();
    let rebuilt = eventually(RECOVERY, || {
        let (server, session_path, session_before) = (&server, &session_path, &session_before);
        async move {
            let (status, headers, body) = server.get(session_path).await;
            if status == StatusCode::OK {
                assert_eq!(&body, session_before);
                return true;
            }
            assert_unavailable(
                "get session while Valkey is rebuilt",
                status,
                &headers,
                &body,
            );
            false
        }
    })
    .await;
    assert!(rebuilt, "{}", server.get(&session_path).await.2);
    let (status, _, body) = server.get(&read_path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, read_before);
    let (_, body) = readyz_until(&server, StatusCode::OK).await;
    assert_eq!(
        body["dependencies"]["read_models"]["status"], "ok",
        "{body}"
    );
    assert_eq!(body["projection_lag"], 0, "{body}");
    // And it serves new work.
    session_with_a_file(&server).await;
    server.stop().await;
}
