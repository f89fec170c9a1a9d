//! `artifact.upload`, `artifact.download`, `artifact.list` and `workspace.undo_edit` through
//! the real HTTP server and the session's bubblewrap sandbox: every default and cap, every
//! error code, every path denial, the uploaded bytes served by the artifact route, and undo
//! after each tool that keeps a snapshot.

use base64::Engine;
use hyper::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{
    TestServer, get_bytes, invoke_approved as invoke, invoke_ok as ok, invoke_refused as refused,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `len` bytes that are not UTF-8 and differ along the file, so a cut in the wrong place shows.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i == 0 { 0xff } else { state as u8 }
        })
        .collect()
}

fn denied() -> (StatusCode, String, String) {
    (
        StatusCode::FORBIDDEN,
        "policy_denied".into(),
        "denied".into(),
    )
}

fn failed(status: StatusCode, code: &str) -> (StatusCode, String, String) {
    (status, code.into(), "failed".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_is_served_by_the_artifact_route_with_its_sha256() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let ws = server.workspace_dir(&session);
    let bytes = noise(5000);
    std::fs::create_dir(ws.join("dist")).unwrap();
    std::fs::write(ws.join("dist/app.bin"), &bytes).unwrap();

    // Defaults: the base name, application/octet-stream, the whole (small) file.
    let inv = ok(
        &server,
        &session,
        "artifact.upload",
        json!({"path": "./dist/app.bin"}),
    )
    .await;
    let out = &inv["output"];
    assert_eq!(out["path"], "dist/app.bin");
    assert_eq!(out["artifact_name"], "app.bin");
    assert_eq!(out["content_type"], "application/octet-stream");
    assert_eq!(out["size_bytes"], 5000);
    assert_eq!(out["file_size_bytes"], 5000);
    assert_eq!(out["truncated"], false);
    assert_eq!(out["sha256"], sha256_hex(&bytes));
    let artifacts = inv["artifacts"].as_array().unwrap();
    let stored = artifacts
        .iter()
        .find(|a| a["name"] == "app.bin")
        .unwrap_or_else(|| panic!("no app.bin artifact: {inv}"));
    assert_eq!(stored["sha256"], sha256_hex(&bytes));
    assert_eq!(stored["size_bytes"], 5000);
    assert_eq!(stored["content_type"], "application/octet-stream");

    let route = format!(
        "/v1/invocations/{}/artifacts/{}",
        inv["id"].as_str().unwrap(),
        stored["id"].as_str().unwrap()
    );
    let (status, served) = get_bytes(server.addr, &route).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&served[..], &bytes[..]);
    let (_, headers, _) = server.get(&route).await;
    assert_eq!(headers["x-artifact-sha256"], sha256_hex(&bytes).as_str());
    assert_eq!(headers["content-type"], "application/octet-stream");

    // A name and a content type of the caller's choice.
    std::fs::write(ws.join("report.html"), "<p>ok</p>").unwrap();
    let inv = ok(
        &server,
        &session,
        "artifact.upload",
        json!({"path": "report.html", "name": "r.html", "content_type": "text/html; charset=utf-8"}),
    )
    .await;
    let stored = inv["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "r.html")
        .cloned()
        .unwrap_or_else(|| panic!("no r.html artifact: {inv}"));
    let route = format!(
        "/v1/invocations/{}/artifacts/{}",
        inv["id"].as_str().unwrap(),
        stored["id"].as_str().unwrap()
    );
    let (_, headers, _) = server.get(&route).await;
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let (_, served) = get_bytes(server.addr, &route).await;
    assert_eq!(&served[..], b"<p>ok</p>");

    // A content type that could not travel as a header is refused before anything is stored.
    let (status, body) = invoke(
        &server,
        &session,
        "artifact.upload",
        json!({"path": "report.html", "content_type": "text/html\r\nX-Evil: 1"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "invalid_argument");
    assert!(
        body["invocation"]["artifacts"]
            .as_array()
            .is_none_or(|a| a.iter().all(|a| a["name"] != "report.html")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_max_bytes_defaults_to_two_mebibytes_and_is_clamped_to_1_kib_through_10_mib() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let ws = server.workspace_dir(&session);
    let big = noise(10 * MIB + 100);
    std::fs::write(ws.join("big.bin"), &big).unwrap();

    for (args, expected) in [
        (json!({"path": "big.bin"}), 2 * MIB),
        (json!({"path": "big.bin", "max_bytes": 1}), KIB),
        (json!({"path": "big.bin", "max_bytes": 1500}), 1500),
        (
            json!({"path": "big.bin", "max_bytes": 1_000_000_000u64}),
            10 * MIB,
        ),
    ] {
        let inv = ok(&server, &session, "artifact.upload", args.clone()).await;
        let out = &inv["output"];
        assert_eq!(out["size_bytes"], expected, "{args}");
        assert_eq!(out["file_size_bytes"], big.len(), "{args}");
        assert_eq!(out["truncated"], true, "{args}");
        let stored = inv["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "big.bin")
            .cloned()
            .unwrap();
        assert_eq!(stored["sha256"], sha256_hex(&big[..expected]), "{args}");
        let route = format!(
            "/v1/invocations/{}/artifacts/{}",
            inv["id"].as_str().unwrap(),
            stored["id"].as_str().unwrap()
        );
        let (status, served) = get_bytes(server.addr, &route).await;
        assert_eq!(status, StatusCode::OK);
        assert!(served[..] == big[..expected], "{args}: other bytes served");
    }
    // Counts are at least 1.
    assert_eq!(
        refused(
            &server,
            &session,
            "artifact.upload",
            json!({"path": "big.bin", "max_bytes": 0})
        )
        .await,
        failed(StatusCode::BAD_REQUEST, "invalid_argument")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_returns_base64_by_default_or_utf8_text_within_its_caps() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let ws = server.workspace_dir(&session);
    let binary = noise(300 * KIB);
    std::fs::write(ws.join("bin.dat"), &binary).unwrap();
    // "é" is two bytes: a 1025-byte cut falls inside one.
    let text = "é".repeat(2000);
    std::fs::write(ws.join("text.txt"), &text).unwrap();
    let b64 = |s: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_str().unwrap())
            .unwrap()
    };

    // Default: base64, 256 KiB.
    let out = ok(
        &server,
        &session,
        "artifact.download",
        json!({"path": "bin.dat"}),
    )
    .await["output"]
        .clone();
    assert_eq!(out["encoding"], "base64");
    assert!(out.get("content").is_none(), "{out}");
    assert_eq!(b64(&out["content_base64"]), &binary[..256 * KIB]);
    assert_eq!(out["returned_bytes"], 256 * KIB);
    assert_eq!(out["size_bytes"], binary.len());
    assert_eq!(out["truncated"], true);
    assert_eq!(out["sha256"], sha256_hex(&binary[..256 * KIB]));

    // Clamped to 1 KiB below and 10 MiB above.
    let out = ok(
        &server,
        &session,
        "artifact.download",
        json!({"path": "bin.dat", "max_bytes": 10}),
    )
    .await["output"]
        .clone();
    assert_eq!(b64(&out["content_base64"]), &binary[..KIB]);
    let out = ok(
        &server,
        &session,
        "artifact.download",
        json!({"path": "bin.dat", "max_bytes": 1u64 << 40}),
    )
    .await["output"]
        .clone();
    assert_eq!(b64(&out["content_base64"]), binary);
    assert_eq!(out["truncated"], false);
    let huge = noise(10 * MIB + 1);
    std::fs::write(ws.join("huge.dat"), &huge).unwrap();
    let out = ok(
        &server,
        &session,
        "artifact.download",
        json!({"path": "huge.dat", "max_bytes": 20 * MIB}),
    )
    .await["output"]
        .clone();
    assert_eq!(out["returned_bytes"], 10 * MIB);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["sha256"], sha256_hex(&huge[..10 * MIB]));

    // utf8: the text itself; a cut character is dropped rather than sent half.
    let out = ok(
        &server,
        &session,
        "artifact.download",
        json!({"path": "text.txt", "encoding": "utf8"}),
    )
    .await["output"]
        .clone();
    assert_eq!(out["encoding"], "utf8");
    assert_eq!(out["content"], text.as_str());
    assert!(out.get("content_base64").is_none(), "{out}");
    assert_eq!(out["sha256"], sha256_hex(text.as_bytes()));
    let out = ok(
        &server,
        &session,
        "artifact.download",
        json!({"path": "text.txt", "encoding": "utf8", "max_bytes": 1025}),
    )
    .await["output"]
        .clone();
    assert_eq!(out["content"], "é".repeat(512).as_str());
    assert_eq!(out["returned_bytes"], 1024);
    assert_eq!(out["truncated"], true);

    // Bytes that are not UTF-8 cannot be sent as utf8; other encodings are not arguments.
    assert_eq!(
        refused(
            &server,
            &session,
            "artifact.download",
            json!({"path": "bin.dat", "encoding": "utf8"})
        )
        .await,
        failed(StatusCode::INTERNAL_SERVER_ERROR, "execution_failed")
    );
    assert_eq!(
        refused(
            &server,
            &session,
            "artifact.download",
            json!({"path": "bin.dat", "encoding": "latin1"})
        )
        .await,
        failed(StatusCode::BAD_REQUEST, "invalid_argument")
    );
    assert_eq!(
        refused(
            &server,
            &session,
            "artifact.download",
            json!({"path": "bin.dat", "max_bytes": 0})
        )
        .await,
        failed(StatusCode::BAD_REQUEST, "invalid_argument")
    );
    server.stop().await;
}

fn listed(out: &Value) -> Vec<String> {
    out["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_walks_recursively_by_default_matches_patterns_and_caps_entries() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let ws = server.workspace_dir(&session);
    std::fs::create_dir_all(ws.join("dist/sub")).unwrap();
    std::fs::write(ws.join("top.txt"), "t").unwrap();
    std::fs::write(ws.join("dist/a.txt"), "aa").unwrap();
    std::fs::write(ws.join("dist/b.log"), "bbb").unwrap();
    std::fs::write(ws.join("dist/sub/c.txt"), "cccc").unwrap();
    std::os::unix::fs::symlink("a.txt", ws.join("dist/link.txt")).unwrap();

    // Defaults: the root, recursive, files only (no directories, no symlinks), sorted.
    let out = ok(&server, &session, "artifact.list", json!({})).await["output"].clone();
    assert_eq!(out["path"], ".");
    assert_eq!(out["recursive"], true);
    assert_eq!(out["pattern"], Value::Null);
    assert_eq!(
        listed(&out),
        ["dist/a.txt", "dist/b.log", "dist/sub/c.txt", "top.txt"]
    );
    assert_eq!(out["count"], 4);
    assert_eq!(out["truncated"], false);
    assert_eq!(out["artifacts"][2]["size_bytes"], 4);

    let out = ok(
        &server,
        &session,
        "artifact.list",
        json!({"path": "dist", "recursive": false}),
    )
    .await["output"]
        .clone();
    assert_eq!(listed(&out), ["dist/a.txt", "dist/b.log"]);
    // The pattern matches the base name at any depth...
    let out = ok(
        &server,
        &session,
        "artifact.list",
        json!({"path": "dist", "pattern": "*.txt"}),
    )
    .await["output"]
        .clone();
    assert_eq!(listed(&out), ["dist/a.txt", "dist/sub/c.txt"]);
    // ...or the path relative to the listed directory, `*` never crossing a `/`.
    let out = ok(
        &server,
        &session,
        "artifact.list",
        json!({"path": "dist", "pattern": "sub/*"}),
    )
    .await["output"]
        .clone();
    assert_eq!(listed(&out), ["dist/sub/c.txt"]);
    let out = ok(
        &server,
        &session,
        "artifact.list",
        json!({"pattern": "*/c.txt"}),
    )
    .await["output"]
        .clone();
    assert_eq!(listed(&out), Vec::<String>::new());
    assert_eq!(
        refused(
            &server,
            &session,
            "artifact.list",
            json!({"pattern": "[abc"})
        )
        .await,
        failed(StatusCode::BAD_REQUEST, "invalid_argument")
    );

    // max_entries: truncated only when a file was left out.
    let out = ok(
        &server,
        &session,
        "artifact.list",
        json!({"max_entries": 2}),
    )
    .await["output"]
        .clone();
    assert_eq!(listed(&out), ["dist/a.txt", "dist/b.log"]);
    assert_eq!(out["truncated"], true);
    let out = ok(
        &server,
        &session,
        "artifact.list",
        json!({"max_entries": 4}),
    )
    .await["output"]
        .clone();
    assert_eq!(out["count"], 4);
    assert_eq!(out["truncated"], false);
    assert_eq!(
        refused(
            &server,
            &session,
            "artifact.list",
            json!({"max_entries": 0})
        )
        .await,
        failed(StatusCode::BAD_REQUEST, "invalid_argument")
    );
    // Default 200, capped at 2000.
    std::fs::create_dir(ws.join("many")).unwrap();
    for i in 0..2001 {
        std::fs::write(ws.join(format!("many/f{i:04}")), "").unwrap();
    }
    let out =
        ok(&server, &session, "artifact.list", json!({"path": "many"})).await["output"].clone();
    assert_eq!(out["count"], 200);
    assert_eq!(out["truncated"], true);
    let out = ok(
        &server,
        &session,
        "artifact.list",
        json!({"path": "many", "max_entries": 100_000}),
    )
    .await["output"]
        .clone();
    assert_eq!(out["count"], 2000);
    assert_eq!(out["truncated"], true);

    assert_eq!(
        refused(
            &server,
            &session,
            "artifact.list",
            json!({"path": "missing"})
        )
        .await,
        failed(StatusCode::NOT_FOUND, "not_found")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_escape_is_denied_and_missing_files_are_not_found() {
    let (server, dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let ws = server.workspace_dir(&session);
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "host secret").unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("host_link")).unwrap();
    std::os::unix::fs::symlink("/etc", ws.join("etc_dir")).unwrap();
    std::fs::hard_link(&outside, ws.join("hard_link")).unwrap();

    let path_args = |_tool: &str, path: &str| json!({"path": path});
    for tool in [
        "artifact.upload",
        "artifact.download",
        "artifact.list",
        "workspace.undo_edit",
    ] {
        for path in ["..", "../x", "/etc/passwd", "a/../../b"] {
            assert_eq!(
                refused(&server, &session, tool, path_args(tool, path)).await,
                denied(),
                "{tool} {path}"
            );
        }
        for path in ["host_link", "etc_dir/passwd", "etc_dir"] {
            if tool == "artifact.list" && path == "host_link" {
                // A listing describes a symlink without following it.
                continue;
            }
            let (status, body) = invoke(&server, &session, tool, path_args(tool, path)).await;
            assert!(
                !body.to_string().contains("host secret") && !body.to_string().contains("root:"),
                "{tool} {path} leaked: {body}"
            );
            if tool == "workspace.undo_edit" {
                // Nothing was snapshotted there: nothing to restore, and nothing written.
                assert!(
                    [StatusCode::NOT_FOUND, StatusCode::FORBIDDEN].contains(&status),
                    "{tool} {path}: {body}"
                );
                continue;
            }
            assert_eq!(status, StatusCode::FORBIDDEN, "{tool} {path}: {body}");
            assert_eq!(code(&body), "policy_denied", "{tool} {path}");
        }
        if tool != "artifact.list" {
            let (status, body) =
                invoke(&server, &session, tool, path_args(tool, "hard_link")).await;
            assert!(!body.to_string().contains("host secret"), "{body}");
            if tool != "workspace.undo_edit" {
                assert_eq!(status, StatusCode::FORBIDDEN, "{tool}: {body}");
            }
            assert_eq!(
                refused(&server, &session, tool, path_args(tool, "missing.txt")).await,
                failed(StatusCode::NOT_FOUND, "not_found"),
                "{tool}"
            );
        }
    }
    // undo_edit writes: .git is protected.
    std::fs::create_dir(ws.join(".git")).unwrap();
    assert_eq!(
        refused(
            &server,
            &session,
            "workspace.undo_edit",
            json!({"path": ".git/config"})
        )
        .await,
        denied()
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host secret");

    // Outside allowed_paths.
    let narrow = server
        .create_session(json!({"allowed_paths": ["src"]}))
        .await;
    let nws = server.workspace_dir(&narrow);
    std::fs::write(nws.join("secret.txt"), "no").unwrap();
    for tool in [
        "artifact.upload",
        "artifact.download",
        "workspace.undo_edit",
    ] {
        assert_eq!(
            refused(&server, &narrow, tool, json!({"path": "secret.txt"})).await,
            denied(),
            "{tool}"
        );
    }
    // The list's default directory is the root, outside ["src"].
    assert_eq!(
        refused(&server, &narrow, "artifact.list", json!({})).await,
        denied()
    );
    assert_eq!(
        refused(&server, &narrow, "artifact.list", json!({"path": "."})).await,
        denied()
    );
    server.stop().await;
}

async fn text(server: &TestServer, session: &str, path: &str) -> String {
    std::fs::read_to_string(server.workspace_dir(session).join(path)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_edit_restores_the_file_before_the_last_edit_write_or_insert_once() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let ws = server.workspace_dir(&session);
    std::fs::write(ws.join("a.txt"), "one\n").unwrap();
    let before: Vec<_> = std::fs::read_dir(&ws)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    // Approval is required (medium risk).
    let (status, body) = server
        .invoke(
            &session,
            "workspace.undo_edit",
            json!({"args": {"path": "a.txt"}}),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED, "{body}");
    assert_eq!(code(&body), "approval_required");
    // No snapshot yet.
    assert_eq!(
        refused(
            &server,
            &session,
            "workspace.undo_edit",
            json!({"path": "a.txt"})
        )
        .await,
        failed(StatusCode::NOT_FOUND, "not_found")
    );

    // fs.edit, then undo; a second undo has nothing left.
    ok(
        &server,
        &session,
        "fs.edit",
        json!({"path": "a.txt", "old_string": "one", "new_string": "two"}),
    )
    .await;
    assert_eq!(text(&server, &session, "a.txt").await, "two\n");
    let out = ok(
        &server,
        &session,
        "workspace.undo_edit",
        json!({"path": "a.txt"}),
    )
    .await["output"]
        .clone();
    assert_eq!(text(&server, &session, "a.txt").await, "one\n");
    assert_eq!(out["restored"], true);
    assert_eq!(out["deleted"], false);
    assert_eq!(out["size_bytes"], 4);
    assert_eq!(out["sha256"], sha256_hex(b"one\n"));
    assert_eq!(
        refused(
            &server,
            &session,
            "workspace.undo_edit",
            json!({"path": "a.txt"})
        )
        .await,
        failed(StatusCode::NOT_FOUND, "not_found")
    );

    // fs.write_file over an existing file; one level only: the state before the last write.
    ok(
        &server,
        &session,
        "fs.write_file",
        json!({"path": "a.txt", "content": "w1\n"}),
    )
    .await;
    ok(
        &server,
        &session,
        "fs.write_file",
        json!({"path": "a.txt", "content": "w2\n"}),
    )
    .await;
    ok(
        &server,
        &session,
        "workspace.undo_edit",
        json!({"path": "./a.txt"}),
    )
    .await;
    assert_eq!(text(&server, &session, "a.txt").await, "w1\n");

    // fs.insert; a failing edit afterwards keeps the insert's snapshot.
    ok(
        &server,
        &session,
        "fs.insert",
        json!({"path": "a.txt", "line": 1, "content": "zero"}),
    )
    .await;
    assert_eq!(text(&server, &session, "a.txt").await, "zero\nw1\n");
    assert_eq!(
        refused(
            &server,
            &session,
            "fs.edit",
            json!({"path": "a.txt", "old_string": "absent", "new_string": "x"})
        )
        .await,
        failed(StatusCode::INTERNAL_SERVER_ERROR, "execution_failed")
    );
    ok(
        &server,
        &session,
        "workspace.undo_edit",
        json!({"path": "a.txt"}),
    )
    .await;
    assert_eq!(text(&server, &session, "a.txt").await, "w1\n");

    // A file the write created: undo removes it.
    ok(
        &server,
        &session,
        "fs.write_file",
        json!({"path": "created.txt", "content": "new"}),
    )
    .await;
    let out = ok(
        &server,
        &session,
        "workspace.undo_edit",
        json!({"path": "created.txt"}),
    )
    .await["output"]
        .clone();
    assert_eq!(out["deleted"], true);
    assert_eq!(out["sha256"], Value::Null);
    assert!(!ws.join("created.txt").exists());
    assert_eq!(
        refused(
            &server,
            &session,
            "workspace.undo_edit",
            json!({"path": "created.txt"})
        )
        .await,
        failed(StatusCode::NOT_FOUND, "not_found")
    );

    // The snapshots are nowhere in the workspace (no undo folder for git or fs.glob to see).
    let after: Vec<_> = std::fs::read_dir(&ws)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
    let out = ok(&server, &session, "fs.glob", json!({"pattern": "**/*"})).await["output"].clone();
    assert_eq!(out["paths"], json!(["a.txt"]), "{out}");
    server.stop().await;
}
