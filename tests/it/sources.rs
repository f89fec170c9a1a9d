//! `source_repo_path`: which host directories a session may copy, over the real API.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_source_roots_a_host_directory_is_refused_and_nothing_is_recorded() {
    let (server, _dir) = TestServer::start().await;
    let (status, body) = server
        .try_create_session(json!({"source_repo_path": "/etc"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "policy_denied");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("WORKSPACE_SOURCE_ROOTS"), "{message}");
    assert!(
        body.get("session").is_none(),
        "no session was created: {body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_directories_below_a_source_root_are_copied_and_never_the_services_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("service");
    std::fs::create_dir_all(dir.path().join("sources/repo")).unwrap();
    std::fs::write(dir.path().join("sources/repo/README.md"), "hello\n").unwrap();
    // The operator allows the whole temporary directory, which holds the data dir too.
    let root = dir.path().to_path_buf();
    let server = TestServer::start_in(&data, |c| c.source_roots = vec![root]).await;

    // Outside the root: refused without saying whether it exists.
    for path in ["/etc", "/root", "/nonexistent"] {
        let (status, body) = server
            .try_create_session(json!({"source_repo_path": path}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"]["code"], "policy_denied", "{path}");
    }
    // A symlink inside the root that leads out of it.
    std::os::unix::fs::symlink("/etc", dir.path().join("sources/etc")).unwrap();
    let (status, body) = server
        .try_create_session(json!({"source_repo_path": dir.path().join("sources/etc")}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Another tenant's workspace and the event log, by path, even below the root.
    let other = server.create_session(json!({})).await;
    let other_ws = server.workspace_dir(&other);
    for path in [other_ws.clone(), data.join("events"), data.clone()] {
        let (status, body) = server
            .try_create_session(json!({"source_repo_path": path}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{}: {body}", path.display());
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("service's data"), "{message}");
    }

    // Missing below the root: a plain invalid argument.
    let (status, body) = server
        .try_create_session(json!({"source_repo_path": dir.path().join("sources/nope")}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["message"], "source_repo_path does not exist");

    // The whole root, which holds the service's data dir: copied, without the data dir.
    let session = server
        .create_session(json!({"source_repo_path": dir.path()}))
        .await;
    let ws = server.workspace_dir(&session);
    assert_eq!(
        std::fs::read_to_string(ws.join("sources/repo/README.md")).unwrap(),
        "hello\n"
    );
    assert!(!ws.join("service").exists(), "the data dir was copied");
    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "sources/repo/README.md"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repo_url_on_the_host_is_a_host_directory_and_program_transports_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("service");
    let allowed = dir.path().join("sources");
    std::fs::create_dir_all(&allowed).unwrap();
    let roots = vec![allowed.clone()];
    let server = TestServer::start_in(&data, |c| c.source_roots = roots).await;

    // Another tenant's workspace, made a git repository, cloned by path or file:// URL.
    let other = server.create_session(json!({})).await;
    let other_ws = server.workspace_dir(&other);
    let init = std::process::Command::new("git")
        .args(["init", "-q"])
        .arg(&other_ws)
        .status()
        .expect("git runs");
    assert!(init.success());
    for url in [
        other_ws.to_string_lossy().into_owned(),
        format!("file://{}", other_ws.display()),
    ] {
        let (status, body) = server.try_create_session(json!({"repo_url": url})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {body}");
        assert_eq!(body["error"]["code"], "policy_denied", "{url}");
        assert!(body.get("session").is_none(), "nothing recorded: {body}");
    }

    // Transports that run programs on the host, and ssh with the host's identity.
    let marker = dir.path().join("pwned");
    for url in [
        format!("ext::sh -c touch% {}", marker.display()),
        "ssh://git@127.0.0.1:9/r.git".to_owned(),
        "git@127.0.0.1:r.git".to_owned(),
    ] {
        let (status, body) = server.try_create_session(json!({"repo_url": url})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_argument", "{url}");
    }
    assert!(!marker.exists(), "a transport ran a program on the host");
    server.stop().await;
}
