//! Sessions across processes: provisioning reacts to `session.created` in an executor (the
//! create call still answers `ready`), a provisioning nobody finishes is failed by the deadline
//! rule and never by a restart, a runner that died is started again over the same workspace,
//! and stopping one process leaves the others' sessions running (JetStream, two processes on
//! one host sharing WORKSPACE_ROOT).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;
use workspace::domain::{Session, SessionCommand};
use workspace::eventstore::{AggregateStore, EventLog};
use workspace::sessions::provisioner::ProvisioningLock;
use workspace_events::{Principal, RuntimeRef, SessionCreated, WorkspaceSource};

use crate::support::{Backends, Mode, TestServer, eventually, in_both_modes};

fn created(id: &str, created_at: time::OffsetDateTime) -> SessionCreated {
    SessionCreated {
        session_id: id.into(),
        principal: Principal {
            tenant_id: "acme".into(),
            actor_id: "alice".into(),
            roles: vec!["developer".into()],
        },
        source: WorkspaceSource::Empty,
        allowed_paths: vec![".".into()],
        metadata: Default::default(),
        created_at,
        expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    }
}

/// Records `command` on the session through a bound server whose roles never run: what a
/// process that appended it and then died (or one that is busy elsewhere) leaves in the log.
async fn append_elsewhere(backends: &Backends, dir: &Path, id: &str, command: SessionCommand) {
    let server = workspace::app::Server::bind(backends.config(dir))
        .await
        .expect("bind");
    let log: std::sync::Arc<dyn EventLog> = server.app().log.clone();
    AggregateStore::<Session>::new(log)
        .execute(id, command, &(), &Default::default())
        .await
        .expect("recorded");
    drop(server);
}

async fn status(server: &TestServer, id: &str) -> serde_json::Value {
    let (status, _, body) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["session"].clone()
}

/// A `created` that no provisioner ever finished (its process died), older than the provision
/// timeout plus the grace: any process fails it `unavailable`, by the deadline.
async fn a_provisioning_nobody_finished_fails_by_its_deadline(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let config = backends.config(dir.path());
    let past = config.provision_timeout + config.work_queue.liveness_grace + Duration::from_secs(1);
    let created_at = time::OffsetDateTime::now_utc() - past;
    append_elsewhere(
        &backends,
        dir.path(),
        "session-abandoned",
        SessionCommand::Create(created("session-abandoned", created_at)),
    )
    .await;
    let server = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    let failed = eventually(Duration::from_secs(20), || {
        let server = &server;
        async move { status(server, "session-abandoned").await["status"] == "failed" }
    })
    .await;
    let session = status(&server, "session-abandoned").await;
    assert!(failed, "{session}");
    assert_eq!(session["failure"]["code"], "unavailable", "{session}");
    assert_eq!(
        session["failure"]["message"], "provisioning did not finish in time",
        "{session}"
    );
    assert!(!server.workspace_dir("session-abandoned").exists());
    server.stop().await;
}

/// A session created a moment ago whose provisioner (another process, standing in: this test
/// holding the session directory's provisioning lock) is still at work is left alone by a
/// restart; the other process's outcome counts, and this process, which did not provision it,
/// starts a runner over the workspace the other one prepared.
async fn a_provisioning_in_another_process_is_not_failed_by_a_restart(mode: Mode) {
    let backends = Backends::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let id = "session-elsewhere";
    let session_dir = dir.path().join("workspaces").join("acme").join(id);
    append_elsewhere(
        &backends,
        dir.path(),
        id,
        SessionCommand::Create(created(id, time::OffsetDateTime::now_utc())),
    )
    .await;
    let lock = ProvisioningLock::try_take(&session_dir)
        .expect("lock")
        .expect("free");
    std::fs::create_dir_all(session_dir.join("repo")).unwrap();
    std::fs::write(session_dir.join("repo").join("hello.txt"), "from elsewhere").unwrap();

    let server = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    // It stays `provisioning` (a change within the window would be a failure by restart).
    let changed = eventually(Duration::from_secs(3), || {
        let server = &server;
        async move { status(server, id).await["status"] != "provisioning" }
    })
    .await;
    assert!(!changed, "{}", status(&server, id).await);

    // The other process finishes.
    let provisioned = SessionCommand::MarkProvisioned {
        runtime: RuntimeRef {
            kind: "local".into(),
            isolation: "bubblewrap".into(),
            workdir: "/workspace".into(),
            namespace: None,
            pod_name: None,
        },
        at: time::OffsetDateTime::now_utc(),
    };
    AggregateStore::<Session>::new(server.app().log.clone())
        .execute(id, provisioned, &(), &Default::default())
        .await
        .expect("provisioned");
    drop(lock);
    let ready = eventually(Duration::from_secs(10), || {
        let server = &server;
        async move { status(server, id).await["status"] == "ready" }
    })
    .await;
    assert!(ready, "{}", status(&server, id).await);
    let (code, body) = server
        .invoke(id, "fs.read_file", json!({"args": {"path": "hello.txt"}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["output"]["content"], "from elsewhere");
    server.stop().await;
}

/// The host PID of the session's runner in `server`'s process, if it runs one.
async fn runner_pid(server: &TestServer, session: &str) -> Option<libc::pid_t> {
    let id = workspace::ids::SessionId::parse(session).expect("session id");
    let pid = server.app().runners.pid(&id).await?;
    libc::pid_t::try_from(pid).ok()
}

/// Running (not gone, not a zombie waiting to be reaped).
fn alive(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// A runner whose process was killed is started again on the next invocation, and the files
/// written before are still there: the workspace outlives its runner.
async fn a_killed_runner_is_started_again_over_the_same_workspace(mode: Mode) {
    let (server, _dir) = TestServer::start_mode(mode).await;
    let session = server.create_session(json!({})).await;
    let (code, body) = server
        .invoke(
            &session,
            "fs.write_file",
            json!({"approved": true, "args": {"path": "kept.txt", "content": "still here"}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let pid = runner_pid(&server, &session)
        .await
        .expect("the session's runner");
    // SAFETY: plain signal delivery to the session's runner, a child of this test process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let died = eventually(Duration::from_secs(10), || async move { !alive(pid) }).await;
    assert!(died, "the runner survived SIGKILL");
    let (code, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "kept.txt"}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["output"]["content"], "still here");
    let again = runner_pid(&server, &session).await;
    assert!(again.is_some_and(|p| p != pid), "a new runner: {again:?}");
    server.stop().await;
}

in_both_modes!(
    a_provisioning_nobody_finished_fails_by_its_deadline,
    a_provisioning_in_another_process_is_not_failed_by_a_restart,
    a_killed_runner_is_started_again_over_the_same_workspace,
);

/// Two service processes on one host (their own data dirs, one WORKSPACE_ROOT, one JetStream
/// stream): a session created through one works through the other, and stopping the first
/// stops only its own runners, never the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_process_leaves_the_sessions_it_provisioned_running_in_the_others() {
    let backends = Backends::start(Mode::JetStream);
    let host = tempfile::tempdir().unwrap();
    let root: PathBuf = host.path().join("workspaces");
    let shared_root = |config: &mut workspace::config::Config| {
        config.workspace_root = root.clone();
    };
    let (a_dir, b_dir) = (host.path().join("a"), host.path().join("b"));
    let a = TestServer::start_with(&backends, &a_dir, shared_root).await;
    let b = TestServer::start_with(&backends, &b_dir, shared_root).await;
    let session = a.create_session(json!({})).await;
    let visible =
        eventually(Duration::from_secs(10), || {
            let b = &b;
            let session = &session;
            async move {
                b.get(&format!("/v1/sessions/{session}")).await.2["session"]["status"] == "ready"
            }
        })
        .await;
    assert!(visible, "the other process sees the session ready");
    for (n, server) in [&a, &b].into_iter().enumerate() {
        let (code, body) = server
            .invoke(
                &session,
                "fs.write_file",
                json!({"approved": true, "args": {"path": format!("from-{n}.txt"), "content": "x"}}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    a.stop().await;
    let workspace = root.join("acme").join(&session).join("repo");
    assert!(
        workspace.join("from-0.txt").is_file(),
        "the workspace survives"
    );
    let (code, body) = b.invoke(&session, "fs.list", json!({"args": {}})).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let listed = body["invocation"]["output"].to_string();
    assert!(
        listed.contains("from-0.txt") && listed.contains("from-1.txt"),
        "{body}"
    );
    assert_eq!(status(&b, &session).await["status"], "ready");
    b.stop().await;
}
