//! Commands configured by the repository, through the HTTP API, the real runner in a real
//! bubblewrap sandbox and real git: file tools never write `.git`, and `fs.patch` never runs
//! what a hostile `.git/config` names.

use std::path::Path;

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;

fn host_git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // The workspace belongs to the sandbox user, not to this (root) test.
        .args(["-c", "safe.directory=*"])
        .args(["-c", "user.name=dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// What this test writes into the workspace as root is handed to the sandbox user, as
/// provisioning's files are, so the runner can write it.
fn give_to_the_sandbox(path: &Path) {
    let owner = workspace::runner::sandbox::HostIdentity::default();
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{}:{}", owner.uid, owner.gid)])
        .arg(path)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown -R {}", path.display());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_cannot_make_fs_patch_run_its_filter() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let ws = server.workspace_dir(&session);
    std::fs::write(ws.join("hello.txt"), "hello\nworld\n").unwrap();
    host_git(&ws, &["init", "-q", "-b", "main"]);
    host_git(&ws, &["add", "."]);
    host_git(&ws, &["commit", "-qm", "init"]);
    give_to_the_sandbox(&ws);

    // The attack: configure a filter with fs.write_file, select it with .gitattributes.
    // The filter command writes a marker in the workspace (its working directory).
    let filter = "[filter \"x\"]\n\tsmudge = touch SMUDGED; cat\n\tclean = cat\n";
    let config = std::fs::read_to_string(ws.join(".git/config")).unwrap();
    let (status, body) = write(
        &server,
        &session,
        ".git/config",
        &format!("{config}{filter}"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "policy_denied", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(".git"),
        "the refusal names the protected path: {body}"
    );
    assert_eq!(body["invocation"]["status"], "denied");
    assert_eq!(
        std::fs::read_to_string(ws.join(".git/config")).unwrap(),
        config
    );
    let (status, body) = write(&server, &session, ".gitattributes", "* filter=x\n").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The same configuration put on disk directly, as a copied repository would bring it.
    std::fs::write(ws.join(".git/config"), format!("{config}{filter}")).unwrap();
    give_to_the_sandbox(&ws);
    let diff =
        "--- a/hello.txt\n+++ b/hello.txt\n@@ -1,2 +1,2 @@\n-hello\n+hello, patched\n world\n";
    for strategy in ["reject_on_conflict", "apply"] {
        std::fs::write(ws.join("hello.txt"), "hello\nworld\n").unwrap();
        give_to_the_sandbox(&ws);
        // A three-way apply also updates the index, which must match the file again (its
        // stat data included: the index is refreshed after the file changed owner).
        host_git(
            &ws,
            &["-c", "filter.x.smudge=", "update-index", "-q", "--refresh"],
        );
        give_to_the_sandbox(&ws.join(".git"));
        let (status, body) = server
            .invoke(
                &session,
                "fs.patch",
                json!({"approved": true, "args": {"unified_diff": diff, "strategy": strategy}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{strategy}: {body}");
        assert_eq!(
            body["invocation"]["output"]["applied"], true,
            "{strategy}: {body}"
        );
        assert_eq!(
            std::fs::read_to_string(ws.join("hello.txt")).unwrap(),
            "hello, patched\nworld\n",
            "{strategy}"
        );
        assert!(
            !ws.join("SMUDGED").exists(),
            "{strategy}: the repository's smudge filter ran in the sandbox"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_says_which_tools_run_repository_code() {
    let (server, _dir) = TestServer::start().await;
    let session = server.create_session(json!({})).await;
    let (status, _, body) = server.get(&format!("/v1/sessions/{session}/tools")).await;
    assert_eq!(status, StatusCode::OK);
    let tools = body["tools"].as_array().unwrap();
    assert!(!tools.is_empty());
    // Only the build and test family runs what the repository configures; git, fs and the
    // rest never do (tests/it/repo_tools.rs checks that with a hostile repository).
    let runs_code = [
        "repo.build",
        "repo.coverage_report",
        "repo.package",
        "repo.run_tests",
        "repo.stacktrace_summary",
        "repo.static_analysis",
        "repo.test",
        "repo.test_failures_summary",
        "repo.test_file",
        "repo.validate",
    ];
    for tool in tools {
        let name = tool["name"].as_str().unwrap();
        assert_eq!(
            tool["runs_repository_code"],
            runs_code.contains(&name),
            "{name}"
        );
    }
    let write = tools.iter().find(|t| t["name"] == "fs.write_file").unwrap();
    assert_eq!(write["policy"]["path_fields"][0]["writes"], true);
    server.stop().await;
}
