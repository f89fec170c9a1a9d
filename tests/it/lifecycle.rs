//! Durability and lifecycle: restart safety, expiry, correlation idempotency, concurrency.
//! Every scenario runs in both modes (`embedded::` and `jetstream::`); a restart reopens the
//! same data dir and the same event store (the log file, or the stream on the same server),
//! and a crash is left behind through a server whose roles never ran, in either store.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::{Backends, Mode, TestServer, eventually, in_both_modes};

async fn everything_survives_a_restart_on_the_same_data_dir(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    let session = server.create_session(json!({})).await;
    let big = "line of text\n".repeat(2000); // 26 KB: output goes to an artifact
    let (status, body) = server
        .invoke(
            &session,
            "fs.write_file",
            json!({"approved": true, "args": {"path": "big.txt", "content": big}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "big.txt"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let read_id = body["invocation"]["id"].as_str().unwrap().to_owned();
    let output_ref = body["invocation"]["output_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(body["invocation"]["output"]["content"], big.as_str());
    server.stop().await;

    let server = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    let (status, _, body) = server.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["session"]["status"], "ready");
    let (status, _, body) = server.get(&format!("/v1/invocations/{read_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["invocation"]["status"], "succeeded");
    assert_eq!(
        body["invocation"]["output"]["content"],
        big.as_str(),
        "output read back from its artifact"
    );
    let (status, _, _) = server
        .get(&format!("/v1/invocations/{read_id}/artifacts/{output_ref}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    if mode == Mode::JetStream {
        // The bytes came from the JetStream object store: nothing was written locally.
        assert!(
            !dir.path().join("artifacts").exists(),
            "artifacts written to the local directory in JetStream mode"
        );
    }
    let (_, _, body) = server.get(&format!("/v1/invocations/{read_id}/logs")).await;
    assert!(
        !body["logs"].as_array().unwrap().is_empty(),
        "logs survive: {body}"
    );
    assert!(server.workspace_dir(&session).join("big.txt").is_file());
    // The session's runner starts again on first use.
    let (status, body) = server
        .invoke(&session, "fs.stat", json!({"args": {"path": "big.txt"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["output"]["exists"], true);
    let (_, _, body) = server
        .get(&format!("/v1/sessions/{session}/invocations"))
        .await;
    assert_eq!(body["total"], 3);
    server.stop().await;
}

async fn an_expired_session_is_closed_and_its_workspace_removed(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server
        .create_session(json!({"expires_in_seconds": 1}))
        .await;
    assert!(server.workspace_dir(&session).is_dir());
    let expired = eventually(Duration::from_secs(10), || {
        let server = &server;
        let session = session.clone();
        async move {
            let (_, _, body) = server.get(&format!("/v1/sessions/{session}")).await;
            body["session"]["status"] == "expired"
        }
    })
    .await;
    assert!(expired, "the session expired");
    // The closing event comes first, then the teardown.
    let dir = server.workspace_dir(&session);
    let removed = eventually(Duration::from_secs(10), || {
        let exists = dir.exists();
        async move { !exists }
    })
    .await;
    assert!(removed, "workspace removed");
    let (_, _, body) = server.get(&format!("/v1/sessions/{session}/events")).await;
    let last = body["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event_type"], "session.closed");
    assert_eq!(last["payload"]["reason"], "expired");
    let (status, _) = server
        .invoke(&session, "fs.list", json!({"args": {}}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

async fn a_repeated_correlation_id_returns_the_first_invocation_and_runs_once(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let first = json!({"approved": true, "correlation_id": "k-1", "args": {"path": "c.txt", "content": "first"}});
    let (status, a) = server.invoke(&session, "fs.write_file", first).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let again = json!({"approved": true, "correlation_id": "k-1", "args": {"path": "c.txt", "content": "second"}});
    let (status, b) = server.invoke(&session, "fs.write_file", again).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(a["invocation"]["id"], b["invocation"]["id"]);
    let content = std::fs::read_to_string(server.workspace_dir(&session).join("c.txt")).unwrap();
    assert_eq!(content, "first", "the tool ran once");

    // Concurrent retries with one key: one invocation, one run.
    let mut handles = Vec::new();
    for i in 0..8 {
        let path = format!("/v1/sessions/{session}/tools/fs.write_file/invoke");
        let addr = server.addr;
        let body = json!({"approved": true, "correlation_id": "k-2", "args": {"path": "d.txt", "content": format!("v{i}")}});
        handles.push(tokio::spawn(async move {
            let client = crate::support::Client { addr };
            client.post(&path, body).await
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(body["invocation"]["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(
        ids.len(),
        1,
        "every retry answered with the same invocation"
    );
    let (_, _, body) = server
        .get(&format!("/v1/invocations/{}/events", ids[0]))
        .await;
    let started = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "invocation.started")
        .count();
    assert_eq!(started, 1, "the tool ran once: {body}");
    server.stop().await;
}

async fn concurrent_invocations_on_one_session_all_complete(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let mut handles = Vec::new();
    for i in 0..40 {
        let addr = server.addr;
        let session = session.clone();
        handles.push(tokio::spawn(async move {
            let client = crate::support::Client { addr };
            let write = format!("/v1/sessions/{session}/tools/fs.write_file/invoke");
            let (s1, b1) = client
                .post(&write, json!({"approved": true, "args": {"path": format!("many/{i}.txt"), "content": format!("{i}")}}))
                .await;
            let read = format!("/v1/sessions/{session}/tools/fs.read_file/invoke");
            let (s2, b2) = client
                .post(&read, json!({"args": {"path": format!("many/{i}.txt")}}))
                .await;
            (s1, b1, s2, b2, i)
        }));
    }
    for h in handles {
        let (s1, b1, s2, b2, i) = h.await.unwrap();
        assert_eq!(s1, StatusCode::OK, "{b1}");
        assert_eq!(s2, StatusCode::OK, "{b2}");
        assert_eq!(b2["invocation"]["output"]["content"], format!("{i}"));
    }
    let (_, _, body) = server
        .get(&format!("/v1/sessions/{session}/invocations?limit=500"))
        .await;
    assert_eq!(body["total"], 80);
    server.stop().await;
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

async fn a_session_clones_a_repository_at_a_ref_or_copies_a_host_directory(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().expect("tempdir");
    // The repository lies outside the data dir: the service never copies its own directories.
    let data = dir.path().join("data");
    let server = TestServer::start_with(&backends, &data, |c| {
        c.source_roots = vec![dir.path().join("origin")];
    })
    .await;
    let repo = dir.path().join("origin");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "on main\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "main"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.join("README.md"), "on feature\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "feature"]);

    let (status, _, body) = server
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({
                "principal": {"tenant_id": "acme", "actor_id": "alice"},
                "repo_url": repo.to_string_lossy(),
                "repo_ref": "main",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["session"]["repo_ref"], "main");
    let session = body["session"]["id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "README.md"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["output"]["content"], "on main\n");
    assert!(server.workspace_dir(&session).join(".git").is_dir());

    // A branch that does not exist fails the session with git's reason.
    let (status, _, body) = server
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({
                "principal": {"tenant_id": "acme", "actor_id": "alice"},
                "repo_url": repo.to_string_lossy(),
                "repo_ref": "no-such-branch",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["session"]["status"], "failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("git clone failed")
    );
    assert!(
        !body
            .to_string()
            .contains(&*data.join("workspaces").to_string_lossy()),
        "host paths stay out of errors: {body}"
    );

    // source_repo_path copies the directory (files only; links are not followed).
    std::os::unix::fs::symlink("/etc/passwd", repo.join("escape")).unwrap();
    let session = server
        .create_session(json!({"source_repo_path": repo.to_string_lossy()}))
        .await;
    let ws = server.workspace_dir(&session);
    assert_eq!(
        std::fs::read_to_string(ws.join("README.md")).unwrap(),
        "on feature\n"
    );
    assert!(
        std::fs::symlink_metadata(ws.join("escape")).is_err(),
        "the link was not copied"
    );
    server.stop().await;
}

/// Appends commands the way a crashed process would have left them: through a bound server
/// whose roles never ran.
async fn leave_behind(
    backends: &Backends,
    dir: &std::path::Path,
    commands: Vec<(String, workspace::domain::InvocationCommand)>,
) {
    let config = backends.config(dir);
    let server = workspace::app::Server::bind(config).await.expect("bind");
    let app = server.app();
    for (id, command) in commands {
        app.invocations
            .store()
            .execute(&id, command, &(), &Default::default())
            .await
            .expect("command recorded");
    }
    drop(app);
    drop(server);
}

fn queued(session: &str, id: &str) -> workspace_events::InvocationQueued {
    let now = time::OffsetDateTime::now_utc();
    workspace_events::InvocationQueued {
        request: workspace_events::InvocationRequest {
            invocation_id: id.into(),
            session_id: session.into(),
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
    }
}

/// The `started` of an executor that died while running the invocation: its deadline and the
/// liveness grace (30 s by default) are behind, so any executor may now end it (ADR 0009).
fn started_by_a_dead_executor() -> workspace_events::InvocationStarted {
    let now = time::OffsetDateTime::now_utc();
    workspace_events::InvocationStarted {
        executor_id: "executor-dead".into(),
        started_at: now - time::Duration::minutes(2),
        deadline: now - time::Duration::minutes(1),
    }
}

/// ADR 0003: after a crash, the correlation id still names the interrupted invocation. A retry
/// with it gets the interrupted outcome and never runs the tool again (its write may have
/// landed); a retry with a new correlation id is a new invocation, and runs.
async fn a_retry_of_an_interrupted_write_with_its_correlation_id_never_runs_it_again(mode: Mode) {
    let backends = Backends::start(mode);
    use workspace::domain::InvocationCommand;
    use workspace::ids::{InvocationId, SessionId};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    let session = server.create_session(json!({})).await;
    let workspace = server.workspace_dir(&session);
    server.stop().await;

    // kill -9 while a write was in flight: claimed, its file already written, no outcome.
    let session_id = SessionId::parse(&session).unwrap();
    let id = InvocationId::for_correlation(&session_id, "fs.write_file", "k-crash").to_string();
    let mut write = queued(&session, &id);
    write.request = workspace_events::InvocationRequest {
        tool_name: "fs.write_file".into(),
        correlation_id: Some("k-crash".into()),
        approved: true,
        args: Some(json!({"path": "w.txt", "content": "first"})),
        ..(*write.request).clone()
    }
    .into();
    leave_behind(
        &backends,
        dir.path(),
        vec![
            (id.clone(), InvocationCommand::Queue(write)),
            (
                id.clone(),
                InvocationCommand::Start(started_by_a_dead_executor()),
            ),
        ],
    )
    .await;
    std::fs::write(workspace.join("w.txt"), "first").unwrap();

    let server = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    let path = format!("/v1/invocations/{id}");
    let settled = eventually(Duration::from_secs(10), || {
        let (server, path) = (&server, &path);
        async move { server.get(path).await.2["invocation"]["status"] == "failed" }
    })
    .await;
    let (_, _, view) = server.get(&path).await;
    assert!(settled, "{view}");
    assert_eq!(view["invocation"]["error"]["code"], "interrupted", "{view}");
    assert_eq!(view["invocation"]["error"]["retryable"], true, "{view}");
    assert!(view["invocation"]["exit_code"].is_null(), "{view}");

    // The same key: the recorded interrupted invocation, not a second run.
    let retry = json!({"approved": true, "correlation_id": "k-crash", "args": {"path": "w.txt", "content": "second"}});
    let (status, body) = server.invoke(&session, "fs.write_file", retry).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "interrupted", "{body}");
    assert_eq!(body["invocation"]["id"], id.as_str(), "{body}");
    assert_eq!(
        std::fs::read_to_string(workspace.join("w.txt")).unwrap(),
        "first",
        "the interrupted write did not run again"
    );
    let types = server.event_types(&format!("{path}/events")).await;
    assert_eq!(
        types,
        [
            "invocation.queued",
            "invocation.started",
            "invocation.completed"
        ]
    );

    // A new key is a new invocation: it runs.
    let fresh = json!({"approved": true, "correlation_id": "k-crash-2", "args": {"path": "w.txt", "content": "second"}});
    let (status, body) = server.invoke(&session, "fs.write_file", fresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["invocation"]["id"], id.as_str());
    assert_eq!(
        std::fs::read_to_string(workspace.join("w.txt")).unwrap(),
        "second"
    );
    server.stop().await;
}

/// An exit code is known only once the tool ran: never for a denial or a rejection, not while
/// queued; 0 for an in-process tool that completed.
async fn an_invocation_has_no_exit_code_until_its_tool_ran(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with(&backends, dir.path(), |c| c.executor_concurrency = 1).await;
    let session = server.create_session(json!({})).await;

    let unapproved = json!({"args": {"path": "a.txt", "content": "x"}});
    let (status, denied) = server.invoke(&session, "fs.write_file", unapproved).await;
    assert_eq!(
        denied["invocation"]["status"], "denied",
        "{status} {denied}"
    );
    let (status, rejected) = server
        .invoke(&session, "fs.read_file", json!({"args": {}}))
        .await;
    assert_eq!(
        rejected["invocation"]["status"], "failed",
        "{status} {rejected}"
    );

    let busy = server.hold_the_only_slot();
    let (status, queued) = server
        .invoke(&session, "fs.list", json!({"async": true, "args": {}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["invocation"]["status"], "queued", "{queued}");
    for (what, body) in [
        ("denied", &denied),
        ("rejected", &rejected),
        ("queued", &queued),
    ] {
        let invocation = body["invocation"].as_object().unwrap();
        assert!(
            invocation.get("exit_code").is_some_and(|c| c.is_null()),
            "{what}: {body}"
        );
        // The stored view says the same as the answer.
        let (_, _, view) = server
            .get(&format!(
                "/v1/invocations/{}",
                body["invocation"]["id"].as_str().unwrap()
            ))
            .await;
        assert!(view["invocation"]["exit_code"].is_null(), "{what}: {view}");
    }
    drop(busy);
    let id = queued["invocation"]["id"].as_str().unwrap().to_owned();
    let done = eventually(Duration::from_secs(10), || {
        let (server, id) = (&server, &id);
        async move {
            server.get(&format!("/v1/invocations/{id}")).await.2["invocation"]["status"]
                == "succeeded"
        }
    })
    .await;
    let (_, _, view) = server.get(&format!("/v1/invocations/{id}")).await;
    assert!(done, "{view}");
    assert_eq!(view["invocation"]["exit_code"], 0, "{view}");
    server.stop().await;
}

/// A sub-millisecond run is not a zero: the view carries its exact duration and the histogram
/// sums it.
async fn a_quick_run_reports_its_exact_duration_and_feeds_the_histogram(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let (status, body) = server
        .invoke(&session, "fs.stat", json!({"args": {"path": "."}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ns = body["invocation"]["duration_ns"].as_u64();
    assert!(ns.is_some_and(|ns| ns > 0), "{body}");
    assert_eq!(
        body["invocation"]["duration_ms"].as_u64(),
        ns.map(|ns| ns / 1_000_000),
        "{body}"
    );
    // The projector observes the run just after the answer could see it.
    let exact = ns.unwrap_or_default() as f64 / 1e6;
    let summed = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("duration_ms_sum{tool=\"fs.stat\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|sum| sum > 0.0 && (sum - exact).abs() < 0.001)
    };
    let observed = eventually(Duration::from_secs(5), || {
        let server = &server;
        async move { summed(server.get("/metrics").await.2.as_str().unwrap_or_default()) }
    })
    .await;
    let (_, _, metrics) = server.get("/metrics").await;
    assert!(observed, "{exact} ms\n{metrics}");
    server.stop().await;
}

async fn after_a_crash_queued_work_runs_and_interrupted_work_fails_once(mode: Mode) {
    let backends = Backends::start(mode);
    use workspace::domain::InvocationCommand;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    let session = server.create_session(json!({})).await;
    server.stop().await;

    // A crash left one invocation queued and one claimed by an executor that died.
    let started = started_by_a_dead_executor();
    leave_behind(
        &backends,
        dir.path(),
        vec![
            (
                "inv-queuedbeforecrash".into(),
                InvocationCommand::Queue(queued(&session, "inv-queuedbeforecrash")),
            ),
            (
                "inv-runningatcrash".into(),
                InvocationCommand::Queue(queued(&session, "inv-runningatcrash")),
            ),
            (
                "inv-runningatcrash".into(),
                InvocationCommand::Start(started),
            ),
        ],
    )
    .await;

    let server = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    let settled = eventually(Duration::from_secs(10), || {
        let server = &server;
        async move {
            let (_, _, a) = server.get("/v1/invocations/inv-queuedbeforecrash").await;
            let (_, _, b) = server.get("/v1/invocations/inv-runningatcrash").await;
            a["invocation"]["status"] == "succeeded" && b["invocation"]["status"] == "failed"
        }
    })
    .await;
    let (_, _, a) = server.get("/v1/invocations/inv-queuedbeforecrash").await;
    let (_, _, b) = server.get("/v1/invocations/inv-runningatcrash").await;
    assert!(settled, "queued: {a}\nrunning: {b}");
    assert_eq!(a["invocation"]["output"]["exists"], true);
    assert_eq!(a["invocation"]["exit_code"], 0);
    // Its outcome is unknown, and said so: interrupted, retryable, no exit code.
    assert_eq!(b["invocation"]["error"]["code"], "interrupted", "{b}");
    assert_eq!(b["invocation"]["error"]["retryable"], true, "{b}");
    let message = b["invocation"]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("outcome is unknown"), "{b}");
    assert!(b["invocation"]["exit_code"].is_null(), "{b}");
    // One outcome each: the interrupted run was not retried.
    let types = server
        .event_types("/v1/invocations/inv-runningatcrash/events")
        .await;
    assert_eq!(
        types,
        [
            "invocation.queued",
            "invocation.started",
            "invocation.completed"
        ]
    );
    server.stop().await;
}

/// A request cancelled or failed after its `queued` append may have committed it: its guard
/// offers a look-up, and so does every executor at start. Work committed but never offered
/// (the memory queue) still runs, and look-ups offered again and again run it once: an insert
/// that ran twice would leave two lines.
async fn committed_work_offered_as_look_ups_runs_once(mode: Mode) {
    use workspace::domain::InvocationCommand;
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let app = server.app();
    let id = "inv-lookedupthrice";
    let file = server.workspace_dir(&session).join("once.txt");
    std::fs::write(&file, "base\n").expect("file");
    let mut insert = queued(&session, id);
    let request = std::sync::Arc::make_mut(&mut insert.request);
    request.tool_name = "fs.insert".into();
    request.args = Some(json!({"path": "once.txt", "line": 0, "content": "ran"}));
    app.invocations
        .store()
        .execute(
            id,
            InvocationCommand::Queue(insert),
            &(),
            &Default::default(),
        )
        .await
        .expect("queued");
    let look_up = workspace::workqueue::Job {
        invocation_id: id.into(),
        session_id: session.clone(),
        sequence: 0,
        queued: None,
    };
    for _ in 0..3 {
        app.work.offer(look_up.clone());
    }
    let path = format!("/v1/invocations/{id}");
    let done = eventually(Duration::from_secs(10), || {
        let (server, path) = (&server, &path);
        async move { server.get(path).await.2["invocation"]["status"] == "succeeded" }
    })
    .await;
    assert!(done, "{}", server.get(&path).await.2);
    // Offered once more after it ended: nothing runs.
    app.work.offer(look_up);
    let types = server.event_types(&format!("{path}/events")).await;
    assert_eq!(
        types,
        [
            "invocation.queued",
            "invocation.started",
            "invocation.completed"
        ]
    );
    let content = std::fs::read_to_string(&file).expect("file");
    assert_eq!(content, "base\nran\n", "the tool ran exactly once");
    server.stop().await;
}

/// No executor fails another's live run: an invocation claimed by an executor that is gone
/// stays `running` until its `started.deadline` plus the grace has passed, whatever restarts
/// meanwhile, and only then ends `interrupted`.
async fn a_claim_is_left_alone_until_its_deadline_and_grace_have_passed(mode: Mode) {
    let backends = Backends::start(mode);
    use workspace::domain::InvocationCommand;
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(2);
    let short_grace = move |c: &mut workspace::config::Config| c.work_queue.liveness_grace = grace;
    let server = TestServer::start_with(&backends, dir.path(), short_grace).await;
    let session = server.create_session(json!({})).await;
    server.stop().await;

    let now = time::OffsetDateTime::now_utc();
    let started = workspace_events::InvocationStarted {
        executor_id: "executor-elsewhere".into(),
        started_at: now,
        deadline: now + time::Duration::seconds(2),
    };
    let not_before = started.deadline + grace;
    leave_behind(
        &backends,
        dir.path(),
        vec![
            (
                "inv-claimedelsewhere".into(),
                InvocationCommand::Queue(queued(&session, "inv-claimedelsewhere")),
            ),
            (
                "inv-claimedelsewhere".into(),
                InvocationCommand::Start(started),
            ),
        ],
    )
    .await;

    let server = TestServer::start_with(&backends, dir.path(), short_grace).await;
    let path = "/v1/invocations/inv-claimedelsewhere";
    let (_, _, view) = server.get(path).await;
    assert_eq!(view["invocation"]["status"], "running", "{view}");
    let ended = eventually(Duration::from_secs(20), || {
        let server = &server;
        async move { server.get(path).await.2["invocation"]["status"] == "failed" }
    })
    .await;
    let (_, _, view) = server.get(path).await;
    assert!(ended, "{view}");
    assert_eq!(view["invocation"]["error"]["code"], "interrupted", "{view}");
    let completed_at = time::OffsetDateTime::parse(
        view["invocation"]["completed_at"]
            .as_str()
            .expect("completed_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    assert!(
        completed_at >= not_before,
        "interrupted at {completed_at}, before the deadline plus the grace ({not_before})"
    );
    server.stop().await;
}

// A session left `provisioning` is failed by the deadline rule, never by a restart:
// tests/it/provisioning.rs.

async fn replay_rebuilds_the_read_models_from_the_log_alone(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    let session = server.create_session(json!({})).await;
    server
        .invoke(&session, "fs.list", json!({"args": {}}))
        .await;
    server
        .invoke(
            &session,
            "fs.write_file",
            json!({"args": {"path": "a", "content": "x"}}),
        )
        .await;
    server.stop().await;

    if mode == Mode::JetStream {
        assert!(
            !dir.path().join("events").exists(),
            "in JetStream mode no event log file is written"
        );
    }
    let output = std::process::Command::new(crate::support::runner_exe())
        .arg("replay")
        .args(backends.replay_args(dir.path()))
        .output()
        .expect("replay runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json summary");
    assert_eq!(summary["sessions"]["ready"], 1, "{summary}");
    assert_eq!(summary["invocations"]["succeeded"], 1, "{summary}");
    assert_eq!(summary["invocations"]["denied"], 1, "{summary}");
    // session created + provisioned; list queued/started/completed; write denied.
    assert_eq!(summary["events"], 6, "{summary}");
}

/// The events of invocation `id`, as `GET /v1/invocations/{id}/events` answers them.
async fn events_of(server: &TestServer, id: &str) -> Vec<serde_json::Value> {
    let (status, _, body) = server.get(&format!("/v1/invocations/{id}/events")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().expect("events").clone()
}

fn timestamp(value: &serde_json::Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a timestamp: {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Whether the invocation's `started` was decided before its `queued` was written: only a
/// claim made as the `queued` event was committed (ADR 0009's early claim), in the same append.
fn claimed_early(events: &[serde_json::Value]) -> bool {
    assert_eq!(events[0]["event_type"], "invocation.queued", "{events:?}");
    assert_eq!(events[1]["event_type"], "invocation.started", "{events:?}");
    assert_eq!(
        events[1]["sequence"].as_u64().expect("sequence"),
        events[0]["sequence"].as_u64().expect("sequence") + 1
    );
    timestamp(&events[1]["payload"]["started_at"]) < timestamp(&events[0]["occurred_at"])
}

/// In process, an executor with a free run slot claims an invocation in the same append as its
/// `queued` event (ADR 0009); with every slot busy, or with executors in other processes (the
/// JetStream queue), the claim is a later append after the `queued` version. Either way the
/// events and the outcome are the same.
async fn a_free_run_slot_claims_in_process_work_as_it_is_queued(mode: Mode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backends = Backends::start(mode);
    let server =
        TestServer::start_with(&backends, dir.path(), |c| c.executor_concurrency = 1).await;
    let session = server.create_session(json!({})).await;
    let (status, body) = server
        .invoke(&session, "fs.stat", json!({"args": {"path": "."}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let free = events_of(&server, body["invocation"]["id"].as_str().expect("id")).await;
    assert_eq!(free.len(), 3, "{free:?}");
    assert_eq!(claimed_early(&free), mode == Mode::Embedded, "{free:?}");

    // With the only slot held, the invocation is queued alone and claimed once it is free.
    let slot = server.hold_the_only_slot();
    let (status, body) = server
        .invoke(
            &session,
            "fs.stat",
            json!({"args": {"path": "."}, "async": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["invocation"]["id"].as_str().expect("id").to_owned();
    drop(slot);
    let path = format!("/v1/invocations/{id}");
    let done = eventually(Duration::from_secs(10), || {
        let (server, path) = (&server, &path);
        async move { server.get(path).await.2["invocation"]["status"] == "succeeded" }
    })
    .await;
    assert!(done, "{}", server.get(&path).await.2);
    let busy = events_of(&server, &id).await;
    assert!(!claimed_early(&busy), "{busy:?}");
    server.stop().await;
}

/// An early claim of `job` by the server's executor, once its run slot is free (10 s at most).
async fn claim_within(
    app: &workspace::app::App,
    job: &workspace::workqueue::Job,
) -> workspace::workqueue::EarlyClaim<workspace::workqueue::Job> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(claim) = app.work.claim_early(job) {
            return claim;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the executor's run slot was not free within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An early claim whose commit is not confirmed (a request cancelled during the append) is
/// looked up: committed, it runs once, by the executor that holds the claim; never committed,
/// nothing runs and its run slot is free again.
#[tokio::test]
async fn an_early_claim_never_confirmed_runs_once_if_committed_and_frees_its_slot() {
    use workspace::domain::InvocationCommand;
    let dir = tempfile::tempdir().expect("tempdir");
    let backends = Backends::start(Mode::Embedded);
    let server =
        TestServer::start_with(&backends, dir.path(), |c| c.executor_concurrency = 1).await;
    let session = server.create_session(json!({})).await;
    let app = server.app();
    let file = server.workspace_dir(&session).join("once.txt");
    std::fs::write(&file, "base\n").expect("file");
    let job = |id: &str, queued: &workspace_events::InvocationQueued| workspace::workqueue::Job {
        invocation_id: id.into(),
        session_id: session.clone(),
        sequence: 0,
        queued: Some(queued.clone()),
    };

    // Claimed and committed, but the confirmation never comes (the claim is dropped).
    let id = "inv-earlyunconfirmed";
    let mut insert = queued(&session, id);
    let request = std::sync::Arc::make_mut(&mut insert.request);
    request.tool_name = "fs.insert".into();
    request.args = Some(json!({"path": "once.txt", "line": 0, "content": "ran"}));
    let claim = claim_within(app, &job(id, &insert)).await;
    assert!(
        app.work.claim_early(&job(id, &insert)).is_none(),
        "the only slot is held by the first claim"
    );
    let start = InvocationCommand::Start(claim.claim.started.clone());
    app.invocations
        .store()
        .execute_all(
            id,
            None,
            &[
                (
                    InvocationCommand::Queue(insert.clone()),
                    &Default::default(),
                ),
                (start, &claim.claim.metadata),
            ],
            &(),
        )
        .await
        .expect("queued and started in one append");
    drop(claim);
    let path = format!("/v1/invocations/{id}");
    let done = eventually(Duration::from_secs(10), || {
        let (server, path) = (&server, &path);
        async move { server.get(path).await.2["invocation"]["status"] == "succeeded" }
    })
    .await;
    assert!(done, "{}", server.get(&path).await.2);
    let types = server.event_types(&format!("{path}/events")).await;
    assert_eq!(
        types,
        [
            "invocation.queued",
            "invocation.started",
            "invocation.completed"
        ]
    );
    assert_eq!(std::fs::read_to_string(&file).expect("file"), "base\nran\n");

    // Claimed, never committed: nothing is recorded, and the slot comes back.
    let never = queued(&session, "inv-earlynevercommitted");
    let claim = claim_within(app, &job("inv-earlynevercommitted", &never)).await;
    drop(claim);
    let claim = claim_within(app, &job("inv-earlynevercommitted", &never)).await;
    drop(claim);
    let (status, _, _) = server.get("/v1/invocations/inv-earlynevercommitted").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = server
        .invoke(&session, "fs.stat", json!({"args": {"path": "."}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

in_both_modes!(
    a_free_run_slot_claims_in_process_work_as_it_is_queued,
    everything_survives_a_restart_on_the_same_data_dir,
    an_expired_session_is_closed_and_its_workspace_removed,
    a_repeated_correlation_id_returns_the_first_invocation_and_runs_once,
    concurrent_invocations_on_one_session_all_complete,
    a_session_clones_a_repository_at_a_ref_or_copies_a_host_directory,
    a_retry_of_an_interrupted_write_with_its_correlation_id_never_runs_it_again,
    an_invocation_has_no_exit_code_until_its_tool_ran,
    a_quick_run_reports_its_exact_duration_and_feeds_the_histogram,
    after_a_crash_queued_work_runs_and_interrupted_work_fails_once,
    committed_work_offered_as_look_ups_runs_once,
    a_claim_is_left_alone_until_its_deadline_and_grace_have_passed,
    replay_rebuilds_the_read_models_from_the_log_alone,
);
