//! The REST contract through the real HTTP server: the smoke flow and every error code the API
//! and the fs tools produce, each in both modes (`embedded::` and `jetstream::`).

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Backends, Mode, TestServer, eventually, in_both_modes, send_exact};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn the_smoke_flow_works_end_to_end(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;

    let (status, _, body) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
    let (status, _, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event_store"], "ok", "{mode:?}: {body}");

    let (status, _, body) = server
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({
                "principal": {"tenant_id": "acme", "actor_id": "alice", "roles": ["developer"]},
                "metadata": {"team": "core", "api_token": "s3cr3t"},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let session = body["session"]["id"].as_str().unwrap().to_owned();
    assert!(session.starts_with("session-"));
    assert_eq!(body["session"]["status"], "ready");
    assert_eq!(body["session"]["runtime"]["isolation"], "bubblewrap");
    assert_eq!(body["session"]["allowed_paths"], json!(["."]));
    assert_eq!(body["session"]["metadata"]["api_token"], "[REDACTED]");
    assert!(
        !body.to_string().contains("s3cr3t"),
        "a secret leaked: {body}"
    );

    let (status, _, body) = server.get(&format!("/v1/sessions/{session}/tools")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "tools are sorted by name");
    assert!(names.contains(&"fs.read_file") && names.contains(&"fs.write_file"));
    assert!(
        !names.contains(&"fs.delete"),
        "high risk tools are hidden from developers"
    );
    let read_tool = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fs.read_file")
        .unwrap();
    for field in [
        "description",
        "input_schema",
        "output_schema",
        "scope",
        "side_effects",
        "risk_level",
        "requires_approval",
        "idempotency",
        "constraints",
        "observability",
    ] {
        assert!(!read_tool[field].is_null(), "fs.read_file lacks {field}");
    }

    let (status, body) = server
        .invoke(
            &session,
            "fs.write_file",
            json!({"approved": true, "args": {"path": "notes/demo.txt", "content": "hola"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let write = &body["invocation"];
    assert_eq!(write["status"], "succeeded");
    assert_eq!(write["output"]["bytes_written"], 4);
    assert_eq!(write["trace_name"], "workspace.tools");
    assert_eq!(write["span_name"], "fs.write_file");

    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "notes/demo.txt"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["output"]["content"], "hola");
    let read_id = body["invocation"]["id"].as_str().unwrap().to_owned();

    let (status, _, body) = server.get(&format!("/v1/invocations/{read_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["invocation"]["status"], "succeeded");
    let (status, _, body) = server.get(&format!("/v1/invocations/{read_id}/logs")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["logs"].is_array());
    let (status, _, body) = server
        .get(&format!("/v1/invocations/{read_id}/artifacts"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["artifacts"].is_array());
    let types = server
        .event_types(&format!("/v1/invocations/{read_id}/events"))
        .await;
    assert_eq!(
        types,
        [
            "invocation.queued",
            "invocation.started",
            "invocation.completed"
        ]
    );

    // The same events as a server-sent event stream that ends after the terminal event, and
    // resumes after `Last-Event-ID`.
    let events_path = format!("/v1/invocations/{read_id}/events");
    let (status, headers, body) = server
        .raw(
            Method::GET,
            &events_path,
            None,
            &[("accept", "text/event-stream")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = body.as_str().unwrap();
    assert!(
        text.contains("event: invocation.queued") && text.contains("event: invocation.completed"),
        "{text}"
    );
    let (_, _, body) = server
        .raw(
            Method::GET,
            &events_path,
            None,
            &[("accept", "text/event-stream"), ("last-event-id", "2")],
        )
        .await;
    let text = body.as_str().unwrap();
    assert!(
        !text.contains("invocation.queued") && text.contains("id: 3"),
        "{text}"
    );

    let (status, _, body) = server
        .get(&format!("/v1/sessions/{session}/invocations"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 2);
    assert_eq!(
        body["invocations"][0]["id"],
        read_id.as_str(),
        "newest first"
    );

    let (status, headers, body) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = body.as_str().unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("invocations_total{tool=\"fs.read_file\",status=\"succeeded\"} 1"),
        "{text}"
    );

    // A successful invoke answers JSON, like every other answer.
    let (status, headers, _) = server
        .raw(
            Method::POST,
            &format!("/v1/sessions/{session}/tools/fs.read_file/invoke"),
            Some(br#"{"args": {"path": "notes/demo.txt"}}"#.to_vec()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");

    let (status, _, body) = server
        .call(Method::DELETE, &format!("/v1/sessions/{session}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"closed": true}));
    let (_, _, body) = server.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(body["session"]["status"], "closed");
    assert!(
        !server.workspace_dir(&session).exists(),
        "workspace removed on close"
    );
    let types = server
        .event_types(&format!("/v1/sessions/{session}/events"))
        .await;
    assert_eq!(
        types,
        ["session.created", "session.provisioned", "session.closed"]
    );
    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "notes/demo.txt"}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}

async fn every_api_error_code_has_its_status_and_envelope(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;

    // invalid_argument: malformed JSON, unknown field, missing principal, bad id.
    let (status, _, body) = server
        .raw(
            Method::POST,
            "/v1/sessions",
            Some(b"{not json".to_vec()),
            &[],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument")
    );
    assert!(body["error"]["request_id"].is_string());
    let (status, _, body) = server
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({"principal": {"tenant_id": "a", "actor_id": "b"}, "surprise": 1})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument")
    );
    let (status, _, body) = server
        .call(Method::POST, "/v1/sessions", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["message"], "principal.tenant_id is required");
    let (status, _, body) = server
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({"session_id": "../etc", "principal": {"tenant_id": "a", "actor_id": "b"}})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument")
    );
    let (status, _, body) = server
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({"principal": {"tenant_id": "../x", "actor_id": "b"}})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument")
    );
    let (status, _, body) = server
        .call(Method::POST, "/v1/sessions", Some(json!({"repo_url": "https://u:p@example.invalid/r.git", "principal": {"tenant_id": "a", "actor_id": "b"}})))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument")
    );

    // invalid_argument from the tool's input schema: recorded as a failed invocation.
    let (status, body) = server
        .invoke(&session, "fs.read_file", json!({"args": {}}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument"),
        "{body}"
    );
    assert_eq!(body["invocation"]["status"], "failed");
    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "a", "bogus": true}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument"),
        "{body}"
    );
    let (status, body) = server
        .invoke(&session, "fs.read_file", json!({"args": {"path": 7}}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument"),
        "{body}"
    );
    let (status, body) = server
        .invoke(&session, "fs.read_file", json!({"arguments": {}}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument"),
        "{body}"
    );

    // policy_denied: path escape, and a high-risk tool without platform_admin.
    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "../../etc/passwd"}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "policy_denied"),
        "{body}"
    );
    assert_eq!(body["invocation"]["status"], "denied");
    let (status, body) = server
        .invoke(
            &session,
            "fs.delete",
            json!({"approved": true, "args": {"path": "x"}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "policy_denied"),
        "{body}"
    );

    // approval_required.
    let (status, body) = server
        .invoke(
            &session,
            "fs.write_file",
            json!({"args": {"path": "a.txt", "content": "x"}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PRECONDITION_REQUIRED, "approval_required")
    );
    assert_eq!(body["invocation"]["status"], "denied");

    // not_found: session, tool, invocation, route, file.
    let (status, body) = server
        .invoke(
            "session-doesnotexist",
            "fs.read_file",
            json!({"args": {"path": "a"}}),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = server
        .invoke(&session, "fs.teleport", json!({"args": {}}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, _, body) = server.get("/v1/invocations/inv-0000000000000000").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, _, body) = server.get("/v1/nothing/here").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "missing.txt"}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{body}"
    );
    assert_eq!(body["invocation"]["status"], "failed");

    // method_not_allowed.
    let (status, _, body) = server.get("/v1/sessions").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (status, _, body) = server
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{session}/tools/fs.stat/invoke"),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );

    // conflict: a session id that exists.
    let (status, _, body) = server
        .call(Method::POST, "/v1/sessions", Some(json!({"session_id": session, "principal": {"tenant_id": "acme", "actor_id": "alice"}})))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "conflict"),
        "{body}"
    );

    // payload_too_large.
    let big = format!(
        "{{\"args\": {{\"path\": \"a\", \"content\": \"{}\"}}}}",
        "x".repeat(2 * 1024 * 1024 + 10)
    );
    let (status, _, body) = server
        .raw(
            Method::POST,
            &format!("/v1/sessions/{session}/tools/fs.write_file/invoke"),
            Some(big.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    // execution_failed: the tool ran and failed.
    server
        .invoke(&session, "fs.mkdir", json!({"args": {"path": "d"}}))
        .await;
    let (status, body) = server
        .invoke(
            &session,
            "fs.mkdir",
            json!({"args": {"path": "d", "exist_ok": false}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INTERNAL_SERVER_ERROR, "execution_failed"),
        "{body}"
    );
    assert_eq!(body["invocation"]["status"], "failed");

    // git_repo_error: cloning a repository that does not exist fails the session.
    let missing = "http://127.0.0.1:9/no-such-repo.git";
    let (status, _, body) = server
        .call(Method::POST, "/v1/sessions", Some(json!({"repo_url": missing, "principal": {"tenant_id": "acme", "actor_id": "alice"}})))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INTERNAL_SERVER_ERROR, "git_repo_error"),
        "{body}"
    );
    assert_eq!(body["session"]["status"], "failed");
    server.stop().await;
}

async fn trusted_headers_mode_authenticates_and_binds_sessions_to_owners(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&backends, dir.path(), |c| {
        c.auth = workspace::config::AuthMode::TrustedHeaders {
            token: "t0ken".into(),
            tenant_header: "X-Workspace-Tenant-Id".into(),
            actor_header: "X-Workspace-Actor-Id".into(),
            roles_header: "X-Workspace-Roles".into(),
            token_header: "X-Workspace-Auth-Token".into(),
        }
    })
    .await;
    let body = br#"{"principal": {"tenant_id": "ignored", "actor_id": "ignored"}}"#.to_vec();
    let (status, _, resp) = server
        .raw(Method::POST, "/v1/sessions", Some(body.clone()), &[])
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, _, resp) = server
        .raw(
            Method::POST,
            "/v1/sessions",
            Some(body.clone()),
            &[("X-Workspace-Auth-Token", "wrong")],
        )
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, _, resp) = server
        .raw(
            Method::POST,
            "/v1/sessions",
            Some(body.clone()),
            &[("X-Workspace-Auth-Token", "t0ken")],
        )
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let alice = [
        ("X-Workspace-Auth-Token", "t0ken"),
        ("X-Workspace-Tenant-Id", "acme"),
        ("X-Workspace-Actor-Id", "alice"),
        ("X-Workspace-Roles", "developer, developer"),
    ];
    let (status, _, resp) = server
        .raw(Method::POST, "/v1/sessions", Some(body), &alice)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    assert_eq!(resp["session"]["principal"]["actor_id"], "alice");
    assert_eq!(resp["session"]["principal"]["roles"], json!(["developer"]));
    let session = resp["session"]["id"].as_str().unwrap();
    let bob = [
        ("X-Workspace-Auth-Token", "t0ken"),
        ("X-Workspace-Tenant-Id", "acme"),
        ("X-Workspace-Actor-Id", "bob"),
    ];
    let (status, _, resp) = server
        .raw(Method::GET, &format!("/v1/sessions/{session}"), None, &bob)
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::FORBIDDEN, "policy_denied")
    );
    let (status, _, resp) = server
        .raw(
            Method::GET,
            &format!("/v1/sessions/{session}"),
            None,
            &alice,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, _, _) = server.raw(Method::GET, "/healthz", None, &[]).await;
    assert_eq!(status, StatusCode::OK, "health needs no auth");
    server.stop().await;
}

async fn an_async_invoke_answers_202_with_a_location_to_poll(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let path = format!("/v1/sessions/{session}/tools/fs.list/invoke");
    let (status, headers, body) = server
        .call(
            Method::POST,
            &path,
            Some(json!({"async": true, "args": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let location = headers["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!(
            "/v1/invocations/{}",
            body["invocation"]["id"].as_str().unwrap()
        )
    );
    let done = eventually(Duration::from_secs(10), || {
        let location = location.clone();
        let server = &server;
        async move {
            let (_, _, body) = server.get(&location).await;
            body["invocation"]["status"] == "succeeded"
        }
    })
    .await;
    assert!(done, "the async invocation finished");
    // Prefer: respond-async works too.
    let (status, _, body) = server
        .raw(
            Method::POST,
            &path,
            Some(br#"{"args": {}}"#.to_vec()),
            &[("Prefer", "respond-async")],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // A request refused before anything ran is answered at once, async or not.
    let write = format!("/v1/sessions/{session}/tools/fs.write_file/invoke");
    let (status, _, body) = server
        .call(
            Method::POST,
            &write,
            Some(json!({"async": true, "args": {"path": "a.txt", "content": "x"}})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PRECONDITION_REQUIRED, Some("approval_required")),
        "{body}"
    );
    assert_eq!(body["invocation"]["status"], "denied", "{body}");
    server.stop().await;
}

async fn a_runner_that_cannot_start_fails_the_session_as_internal_without_leaking_paths(
    mode: Mode,
) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-runner-binary");
    let server =
        TestServer::start_with(&backends, dir.path(), |c| c.runner_exe = missing.clone()).await;
    let (status, body) = server.try_create_session(json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        "{body}"
    );
    assert_eq!(body["session"]["status"], "failed");
    assert!(
        !body.to_string().contains(&*dir.path().to_string_lossy()),
        "{body}"
    );
    let id = body["session"]["id"].as_str().unwrap();
    assert!(
        !server.workspace_dir(id).exists(),
        "a failed session leaves no workspace"
    );
    server.stop().await;
}

/// A synchronous invoke in flight when the service is asked to stop is answered with its
/// outcome before the service stops: the executor and the projector outlive the HTTP drain.
async fn a_stopping_service_answers_the_invocations_in_flight_first(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with(&backends, dir.path(), |c| c.executor_concurrency = 1).await;
    let session = server.create_session(json!({})).await;
    // The invocation is still waiting for the only slot when the stop comes.
    let busy = server.hold_the_only_slot();
    let invoke = server.invoke(&session, "fs.list", json!({"args": {}}));
    let stop_then_release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.request_stop();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(busy);
    };
    let ((status, body), ()) = tokio::join!(invoke, stop_then_release);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["status"], "succeeded", "{body}");
    server.stop().await;
}

/// Without bubblewrap, a session fails as `unavailable` with the install hint, never silently
/// unsandboxed.
async fn without_bubblewrap_a_session_fails_as_unavailable_with_an_install_hint(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-bwrap-here/bwrap");
    let server = TestServer::start_with(&backends, dir.path(), |c| c.bwrap = missing.clone()).await;
    let (status, body) = server.try_create_session(json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{body}"
    );
    assert_eq!(body["session"]["status"], "failed");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("apt-get install bubblewrap"), "{body}");
    assert!(message.contains("WORKSPACE_RUNNER=unsandboxed"), "{body}");
    server.stop().await;
}

async fn an_invocation_no_executor_started_before_its_deadline_is_a_timeout(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&backends, dir.path(), |c| {
        c.queue_timeout = Duration::ZERO;
        c.executor_concurrency = 1;
    })
    .await;
    let session = server.create_session(json!({})).await;
    // The invocation is queued unclaimed and waits for the only slot past its deadline.
    let busy = server.hold_the_only_slot();
    let invoke = server.invoke(&session, "fs.list", json!({"args": {}}));
    let release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(busy);
    };
    let ((status, body), ()) = tokio::join!(invoke, release);
    assert_eq!(
        (status, code(&body)),
        (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        "{body}"
    );
    assert_eq!(body["invocation"]["status"], "failed");
    // It never ran: no exit code.
    assert!(body["invocation"]["exit_code"].is_null(), "{body}");
    server.stop().await;
}

/// Asserts an answer is the JSON error envelope with `status`, `code` and the request id the
/// caller sent, and nothing else.
fn assert_envelope(
    answer: &(StatusCode, hyper::HeaderMap, Value),
    status: StatusCode,
    expected: &str,
    request_id: &str,
) {
    let (got, headers, body) = answer;
    assert_eq!((*got, code(body)), (status, expected), "{body}");
    assert_eq!(headers["content-type"], "application/json", "{body}");
    let error = body["error"].as_object().expect("an error envelope");
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "message", "request_id"], "{body}");
    assert!(
        !error["message"].as_str().unwrap_or_default().is_empty(),
        "{body}"
    );
    assert_eq!(error["request_id"], request_id, "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
}

async fn a_body_not_declared_as_json_is_refused_before_anything_is_recorded(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let head = || *server.app().log.head().borrow();
    let before = head();

    // What a web page can send without a preflight: text/plain, a form, multipart, or no
    // Content-Type at all (a Blob or ArrayBuffer body); and JSON-ish types we do not take.
    let create = br#"{"session_id": "session-crosssite", "principal": {"tenant_id": "acme", "actor_id": "alice", "roles": ["developer"]}}"#;
    let write = br#"{"approved": true, "args": {"path": "pwned.txt", "content": "x"}}"#;
    let invoke = format!("/v1/sessions/{session}/tools/fs.write_file/invoke");
    let refused: [&[(&str, &str)]; 7] = [
        &[("content-type", "text/plain")],
        &[("content-type", "text/plain;charset=UTF-8")],
        &[("content-type", "application/x-www-form-urlencoded")],
        &[("content-type", "multipart/form-data; boundary=x")],
        &[],
        &[("content-type", "application/merge-patch+json")],
        &[("content-type", "application/json; charset=iso-8859-1")],
    ];
    for (n, headers) in refused.iter().enumerate() {
        let rid = format!("media-{n}");
        let mut with_rid = headers.to_vec();
        with_rid.push(("x-request-id", &rid));
        for (path, body) in [("/v1/sessions", &create[..]), (invoke.as_str(), &write[..])] {
            let answer = send_exact(server.addr, Method::POST, path, body, &with_rid).await;
            assert_envelope(
                &answer,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                &rid,
            );
        }
    }
    // An empty POST without a Content-Type is refused the same way.
    let answer = send_exact(server.addr, Method::POST, "/v1/sessions", b"", &[]).await;
    assert_eq!(
        (answer.0, code(&answer.2)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );

    assert_eq!(head(), before, "a refused request appended events");
    let (status, _, _) = server.get("/v1/sessions/session-crosssite").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a session was created");
    assert!(!server.workspace_dir(&session).join("pwned.txt").exists());
    let (_, _, body) = server
        .get(&format!("/v1/sessions/{session}/invocations"))
        .await;
    assert_eq!(body["total"], 0, "{body}");

    // JSON with a UTF-8 charset, in any case, is JSON; DELETE needs no body nor Content-Type.
    let (status, _, body) = send_exact(
        server.addr,
        Method::POST,
        &format!("/v1/sessions/{session}/tools/fs.list/invoke"),
        br#"{"args": {}}"#,
        &[("content-type", "Application/JSON; charset=utf-8")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = send_exact(
        server.addr,
        Method::DELETE,
        &format!("/v1/sessions/{session}"),
        b"",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

async fn every_rejection_is_the_json_error_envelope(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let json: &[u8] = br#"{"args": {}}"#;
    let none: &[u8] = b"";
    let big = vec![b' '; 2 * 1024 * 1024 + 10];
    let s = format!("/v1/sessions/{session}");
    let bad = (StatusCode::BAD_REQUEST, "invalid_argument");
    // (expected status and code, method, path, body, content type)
    type Case<'a> = ((StatusCode, &'a str), Method, String, &'a [u8], &'a str);
    let cases: Vec<Case> = vec![
        // Path parameters that are not UTF-8, on every route that has them.
        (bad, Method::GET, "/v1/sessions/%FF%FE".into(), none, JSON),
        (
            bad,
            Method::DELETE,
            "/v1/sessions/%FF%FE".into(),
            none,
            JSON,
        ),
        (
            bad,
            Method::GET,
            "/v1/sessions/%FF%FE/tools".into(),
            none,
            JSON,
        ),
        (
            bad,
            Method::GET,
            "/v1/sessions/%FF/invocations".into(),
            none,
            JSON,
        ),
        (
            bad,
            Method::GET,
            "/v1/sessions/%FF%FE/events".into(),
            none,
            JSON,
        ),
        (
            bad,
            Method::POST,
            format!("{s}/tools/%C3%28/invoke"),
            json,
            JSON,
        ),
        (bad, Method::GET, "/v1/invocations/%FF".into(), none, JSON),
        (
            bad,
            Method::GET,
            "/v1/invocations/%FF/logs".into(),
            none,
            JSON,
        ),
        (
            bad,
            Method::GET,
            "/v1/invocations/%FF/artifacts".into(),
            none,
            JSON,
        ),
        (
            bad,
            Method::GET,
            "/v1/invocations/x/artifacts/%FF".into(),
            none,
            JSON,
        ),
        (
            bad,
            Method::GET,
            "/v1/invocations/%FF/events".into(),
            none,
            JSON,
        ),
        // Query strings that do not parse.
        (
            bad,
            Method::GET,
            format!("{s}/invocations?limit=many"),
            none,
            JSON,
        ),
        (
            bad,
            Method::GET,
            format!("{s}/invocations?limit=%FF"),
            none,
            JSON,
        ),
        (
            bad,
            Method::GET,
            format!("{s}/invocations?surprise=1"),
            none,
            JSON,
        ),
        // Bodies: malformed, over the limit, not declared as JSON.
        (bad, Method::POST, "/v1/sessions".into(), b"{not json", JSON),
        (
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Method::POST,
            "/v1/sessions".into(),
            &big,
            JSON,
        ),
        (
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Method::POST,
            "/v1/sessions".into(),
            json,
            "text/plain",
        ),
        // Methods and routes.
        (NOT_ALLOWED, Method::GET, "/v1/sessions".into(), none, JSON),
        (NOT_ALLOWED, Method::PUT, s.clone(), json, JSON),
        (
            NOT_ALLOWED,
            Method::GET,
            format!("{s}/tools/fs.list/invoke"),
            none,
            JSON,
        ),
        (
            NOT_FOUND,
            Method::GET,
            "/v1/nothing/here".into(),
            none,
            JSON,
        ),
        (
            NOT_FOUND,
            Method::GET,
            "/v1/sessions/%FF/nothing".into(),
            none,
            JSON,
        ),
    ];
    for (n, ((status, expected), method, path, body, content_type)) in cases.into_iter().enumerate()
    {
        let rid = format!("reject-{n}");
        let headers = [("content-type", content_type), ("x-request-id", &rid)];
        let answer = send_exact(server.addr, method.clone(), &path, body, &headers).await;
        assert_envelope(&answer, status, expected, &rid);
        assert_eq!(answer.1["x-request-id"], rid.as_str(), "{method} {path}");
    }
    server.stop().await;
}

const JSON: &str = "application/json";
const NOT_ALLOWED: (StatusCode, &str) = (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
const NOT_FOUND: (StatusCode, &str) = (StatusCode::NOT_FOUND, "not_found");

async fn a_body_or_args_that_is_not_a_json_object_is_refused(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let invoke = format!("/v1/sessions/{session}/tools/fs.list/invoke");
    let post = |path: String, body: &'static str| {
        let addr = server.addr;
        async move {
            send_exact(
                addr,
                Method::POST,
                &path,
                body.as_bytes(),
                &[("content-type", "application/json")],
            )
            .await
        }
    };

    // serde reads a struct from an array by position: `[]` is all defaults, and this one
    // names a session and its principal.
    for body in [
        "[]",
        " \n\t[]",
        r#"["session-byposition", null, null, null, null, {"tenant_id": "acme", "actor_id": "alice"}]"#,
        "null",
        r#""{}""#,
    ] {
        let (status, _, answer) = post("/v1/sessions".into(), body).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::BAD_REQUEST, "invalid_argument"),
            "{body}: {answer}"
        );
        assert_eq!(
            answer["error"]["message"], "request body must be a JSON object",
            "{body}"
        );
    }
    let (status, _, _) = server.get("/v1/sessions/session-byposition").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A nested object is an object too.
    let (status, answer) = server
        .try_create_session(json!({"principal": ["acme", "alice", ["developer"]]}))
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::BAD_REQUEST, "invalid_argument"),
        "{answer}"
    );

    let (status, _, answer) = post(invoke.clone(), r#"[null, {"path": "."}]"#).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::BAD_REQUEST, "invalid_argument"),
        "{answer}"
    );
    assert_eq!(
        answer["error"]["message"],
        "request body must be a JSON object"
    );
    // `args` that is not an object is a malformed body: refused before anything is recorded.
    for body in [r#"{"args": []}"#, r#"{"args": "x"}"#, r#"{"args": 7}"#] {
        let (status, _, answer) = post(invoke.clone(), body).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::BAD_REQUEST, "invalid_argument"),
            "{body}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("args must be a JSON object"), "{answer}");
        assert!(answer.get("invocation").is_none(), "{answer}");
    }
    let (_, _, listed) = server
        .get(&format!("/v1/sessions/{session}/invocations"))
        .await;
    assert_eq!(listed["total"], 0, "{listed}");

    // `"args": null` is as if absent; whitespace before the object is fine.
    for body in [r#"{"args": null}"#, "\r\n {\"args\": {}}"] {
        let (status, _, answer) = post(invoke.clone(), body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
    }
    server.stop().await;
}

in_both_modes!(
    the_smoke_flow_works_end_to_end,
    every_api_error_code_has_its_status_and_envelope,
    trusted_headers_mode_authenticates_and_binds_sessions_to_owners,
    an_async_invoke_answers_202_with_a_location_to_poll,
    a_runner_that_cannot_start_fails_the_session_as_internal_without_leaking_paths,
    a_stopping_service_answers_the_invocations_in_flight_first,
    without_bubblewrap_a_session_fails_as_unavailable_with_an_install_hint,
    an_invocation_no_executor_started_before_its_deadline_is_a_timeout,
    a_body_not_declared_as_json_is_refused_before_anything_is_recorded,
    every_rejection_is_the_json_error_envelope,
    a_body_or_args_that_is_not_a_json_object_is_refused,
);
