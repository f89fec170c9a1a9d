//! Path confinement through the HTTP API: every attack is refused as `policy_denied` (or
//! `invalid_argument` for malformed paths), and nothing outside the workspace is read or written.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn read(server: &TestServer, session: &str, path: &str) -> (StatusCode, Value) {
    server
        .invoke(session, "fs.read_file", json!({"args": {"path": path}}))
        .await
}

async fn write(
    server: &TestServer,
    session: &str,
    path: &str,
    content: &str,
) -> (StatusCode, Value) {
    server
        .invoke(
            session,
            "fs.write_file",
            json!({"approved": true, "args": {"path": path, "content": content}}),
        )
        .await
}

fn assert_denied(result: &(StatusCode, Value), what: &str) {
    let (status, body) = result;
    assert_eq!(*status, StatusCode::FORBIDDEN, "{what}: {body}");
    assert_eq!(code(body), "policy_denied", "{what}: {body}");
    assert_eq!(body["invocation"]["status"], "denied", "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lexical_escapes_are_denied_before_anything_runs() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    for path in [
        "..",
        "../../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "./../x",
    ] {
        assert_denied(&read(&server, &session, path).await, path);
        assert_denied(&write(&server, &session, path, "x").await, path);
    }
    // Refused before queueing: the invocation has one event, `invocation.denied`.
    let (_, body) = read(&server, &session, "../x").await;
    let id = body["invocation"]["id"].as_str().unwrap();
    let (_, _, events) = server
        .call(
            hyper::Method::GET,
            &format!("/v1/invocations/{id}/events"),
            None,
        )
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
    assert_eq!(events["events"][0]["event_type"], "invocation.denied");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_and_hard_links_out_of_the_workspace_are_refused() {
    let (server, dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let ws = server.workspace_dir(&session);
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "host secret").unwrap();
    let outside_dir = dir.path().join("outside-dir");
    std::fs::create_dir(&outside_dir).unwrap();
    std::fs::write(outside_dir.join("f.txt"), "host file").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ws.join("abs_link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../etc/passwd", ws.join("rel_link")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("host_link")).unwrap();
    std::os::unix::fs::symlink("/etc", ws.join("etc_dir")).unwrap();
    std::os::unix::fs::symlink(&outside_dir, ws.join("host_dir")).unwrap();
    std::os::unix::fs::symlink("loop_b", ws.join("loop_a")).unwrap();
    std::os::unix::fs::symlink("loop_a", ws.join("loop_b")).unwrap();
    std::fs::hard_link(&outside, ws.join("hard_link")).unwrap();

    for path in [
        "abs_link",
        "rel_link",
        "host_link",
        "etc_dir/passwd",
        "host_dir/f.txt",
        "hard_link",
    ] {
        let result = read(&server, &session, path).await;
        assert_denied(&result, path);
        assert!(
            !result.1.to_string().contains("host secret"),
            "{path} leaked"
        );
        assert!(
            !result.1.to_string().contains("root:"),
            "{path} leaked /etc/passwd"
        );
    }
    for path in [
        "host_link",
        "host_dir/f.txt",
        "hard_link",
        "host_dir/new.txt",
    ] {
        assert_denied(&write(&server, &session, path, "owned").await, path);
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host secret");
    assert_eq!(
        std::fs::read_to_string(outside_dir.join("f.txt")).unwrap(),
        "host file"
    );
    assert!(!outside_dir.join("new.txt").exists());
    let (status, body) = server
        .invoke(&session, "fs.list", json!({"args": {"path": "host_dir"}}))
        .await;
    assert_denied(&(status, body), "listing through a directory symlink");

    // A symlink loop is refused, not followed forever.
    let (status, body) = read(&server, &session, "loop_a").await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST,
        "loop: {status} {body}"
    );

    // fs.stat and fs.list describe links without following them.
    let (status, body) = server
        .invoke(&session, "fs.stat", json!({"args": {"path": "abs_link"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["output"]["type"], "symlink");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_created_by_a_tool_inside_the_session_cannot_escape() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let diff = "diff --git a/tool_link b/tool_link\nnew file mode 120000\n--- /dev/null\n+++ b/tool_link\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n";
    let (status, body) = server
        .invoke(
            &session,
            "fs.patch",
            json!({"approved": true, "args": {"unified_diff": diff}}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the patch created a symlink: {body}"
    );
    let link = server.workspace_dir(&session).join("tool_link");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_denied(
        &read(&server, &session, "tool_link").await,
        "tool-made symlink",
    );
    assert_denied(
        &write(&server, &session, "tool_link", "x").await,
        "tool-made symlink",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_but_legal_names_work_and_malformed_paths_are_refused() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    for path in [
        "..cache",
        "..dir/..inner",
        "données/ñ文件.txt",
        "a b/c d.txt",
        "...",
        ".hidden",
    ] {
        let (status, body) = write(&server, &session, path, "ok").await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let (status, body) = read(&server, &session, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["invocation"]["output"]["content"], "ok");
    }
    let nul = read(&server, &session, "a\u{0}b").await;
    assert!(
        nul.0 == StatusCode::FORBIDDEN || nul.0 == StatusCode::BAD_REQUEST,
        "NUL: {:?}",
        nul
    );
    let long = "a/".repeat(3000) + "b";
    let result = read(&server, &session, &long).await;
    assert!(
        result.0 == StatusCode::FORBIDDEN || result.0 == StatusCode::BAD_REQUEST,
        "over-long: {:?}",
        result.0
    );
    let long_name = "x".repeat(300);
    let result = write(&server, &session, &long_name, "x").await;
    assert!(
        result.0 == StatusCode::FORBIDDEN || result.0 == StatusCode::BAD_REQUEST,
        "over-long component: {:?}",
        result.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_refused_without_blocking() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let fifo = server.workspace_dir(&session).join("fifo");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    assert_denied(&read(&server, &session, "fifo").await, "fifo");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_paths_restrict_every_path_argument() {
    let (server, _dir) = TestServer::start().await;
    let session = server
        .create_session(json!({"allowed_paths": ["src"]}))
        .await;
    let (status, body) = write(&server, &session, "src/ok.txt", "x").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_denied(&write(&server, &session, "src2/x.txt", "x").await, "src2");
    assert_denied(&write(&server, &session, "README", "x").await, "root file");
    let (status, body) = server
        .invoke(
            &session,
            "fs.move",
            json!({"args": {"source_path": "src/ok.txt", "destination_path": "out.txt"}}),
        )
        .await;
    assert_denied(&(status, body), "move out of allowed_paths");
    let diff = "--- a/other.txt\n+++ b/other.txt\n@@ -0,0 +1 @@\n+x\n";
    let (status, body) = server
        .invoke(
            &session,
            "fs.patch",
            json!({"approved": true, "args": {"unified_diff": diff}}),
        )
        .await;
    assert_denied(&(status, body), "patch outside allowed_paths");
    // A directory argument left out defaults to the root, which the policy checks before
    // anything is queued: one event, `invocation.denied`.
    for tool in ["fs.list", "fs.glob", "fs.search"] {
        let args = if tool == "fs.list" {
            json!({})
        } else {
            json!({"pattern": "x"})
        };
        let result = server.invoke(&session, tool, json!({"args": args})).await;
        assert_denied(&result, tool);
        let id = result.1["invocation"]["id"].as_str().unwrap();
        let (_, _, events) = server
            .call(
                hyper::Method::GET,
                &format!("/v1/invocations/{id}/events"),
                None,
            )
            .await;
        assert_eq!(events["events"].as_array().unwrap().len(), 1, "{tool}");
        assert_eq!(events["events"][0]["event_type"], "invocation.denied");
    }
    let (status, body) = server
        .invoke(&session, "fs.list", json!({"args": {"path": "src"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_marks_path_arguments_with_their_access() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let (status, _, body) = server.get(&format!("/v1/sessions/{session}/tools")).await;
    assert_eq!(status, StatusCode::OK);
    let tool = |name: &str| -> Value {
        body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed"))
    };
    let copy = tool("fs.copy");
    let props = &copy["input_schema"]["properties"];
    assert_eq!(props["source_path"]["x-workspace-path"], "read");
    assert_eq!(props["destination_path"]["x-workspace-path"], "write");
    assert_eq!(copy["input_schema"]["additionalProperties"], false);
    assert_eq!(
        copy["policy"]["path_fields"],
        json!([
            {"field": "destination_path", "multi": false, "workspace_relative": true, "writes": true},
            {"field": "source_path", "multi": false, "workspace_relative": true, "writes": false},
        ])
    );
    let list = tool("fs.list");
    assert_eq!(list["input_schema"]["properties"]["path"]["default"], ".");
    assert_eq!(
        list["input_schema"]["properties"]["max_entries"],
        json!({"type": "integer", "minimum": 1, "default": 200, "description": "Stop after this many entries (capped at 1000)."})
    );
    server.stop().await;
}
