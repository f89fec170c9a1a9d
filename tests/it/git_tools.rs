//! The `git.*` tools through the HTTP API, the real runner in a real bubblewrap sandbox and
//! real git: defaults, caps, outputs, error codes, the metadata allowlists, the commit author,
//! a local remote inside the workspace (whose hooks never run), `network_disabled` for URL
//! remotes, and the timeout path.

use std::path::Path;

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;

fn host_git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        // A file, not `-c`: git clears the command-scope configuration for the upload-pack
        // of a local clone, and the workspace belongs to the sandbox user.
        .env("GIT_CONFIG_GLOBAL", safe_config())
        .args(["-c", "user.name=dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .output()
        .expect("git runs (install git)");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn safe_config() -> std::path::PathBuf {
    let path = std::env::temp_dir().join("git-tools-test.gitconfig");
    std::fs::write(&path, "[safe]\n\tdirectory = *\n").unwrap();
    path
}

fn give_to_the_sandbox(path: &Path) {
    let owner = workspace::runner::sandbox::HostIdentity::default();
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{}:{}", owner.uid, owner.gid)])
        .arg(path)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown -R {}", path.display());
}

/// A session whose workspace is a repository with two commits on `main`; `metadata` and
/// `roles` go into the session.
async fn repo_session(server: &TestServer, metadata: Value, roles: &[&str]) -> String {
    let session = server
        .create_session(json!({
            "principal": {"tenant_id": "acme", "actor_id": "alice", "roles": roles},
            "metadata": metadata,
        }))
        .await;
    let ws = server.workspace_dir(&session);
    std::fs::write(ws.join("hello.txt"), "hello\n").unwrap();
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::write(ws.join("src/lib.rs"), "fn a() {}\n").unwrap();
    host_git(&ws, &["init", "-q", "-b", "main"]);
    host_git(&ws, &["add", "."]);
    host_git(&ws, &["commit", "-qm", "first"]);
    std::fs::write(ws.join("hello.txt"), "hello\nworld\n").unwrap();
    host_git(&ws, &["commit", "-qam", "second"]);
    give_to_the_sandbox(&ws);
    session
}

async fn call(server: &TestServer, session: &str, tool: &str, args: Value) -> (StatusCode, Value) {
    server
        .invoke(session, tool, json!({"approved": true, "args": args}))
        .await
}

async fn ok(server: &TestServer, session: &str, tool: &str, args: Value) -> Value {
    let (status, body) = call(server, session, tool, args).await;
    assert_eq!(status, StatusCode::OK, "{tool}: {body}");
    body["invocation"]["output"].clone()
}

async fn fails(
    server: &TestServer,
    session: &str,
    tool: &str,
    args: Value,
    code: &str,
) -> (StatusCode, Value) {
    let (status, body) = call(server, session, tool, args).await;
    assert_eq!(body["error"]["code"], code, "{tool}: {status} {body}");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_tools_answer_with_their_defaults_and_parsed_outputs() {
    let (server, _dir) = TestServer::start().await;
    let session = repo_session(&server, json!({}), &["developer"]).await;
    let ws = server.workspace_dir(&session);
    std::fs::write(ws.join("hello.txt"), "hello\nworld\nagain\n").unwrap();
    give_to_the_sandbox(&ws);

    let status = ok(&server, &session, "git.status", json!({})).await;
    assert_eq!(status["status"], " M hello.txt\n", "{status}");
    assert!(
        status["command"]
            .as_array()
            .unwrap()
            .contains(&json!("--porcelain=v1"))
    );
    let long = ok(&server, &session, "git.status", json!({"short": false})).await;
    assert!(
        long["status"].as_str().unwrap().contains("On branch main"),
        "{long}"
    );

    let diff = ok(&server, &session, "git.diff", json!({})).await;
    assert!(diff["diff"].as_str().unwrap().contains("+again"), "{diff}");
    let none = ok(&server, &session, "git.diff", json!({"staged": true})).await;
    assert_eq!(none["diff"], "");
    let based = ok(
        &server,
        &session,
        "git.diff",
        json!({"base": "HEAD~1", "paths": ["hello.txt"]}),
    )
    .await;
    assert!(
        based["diff"].as_str().unwrap().contains("+world"),
        "{based}"
    );

    let file = ok(
        &server,
        &session,
        "git.diff_file",
        json!({"path": "hello.txt", "stat": true, "context": 0}),
    )
    .await;
    assert_eq!(file["ref"], "HEAD");
    assert!(
        file["stat"].as_str().unwrap().contains("hello.txt"),
        "{file}"
    );
    assert!(
        file["diff"].as_str().unwrap().contains("@@ -2,0 +3 @@"),
        "{file}"
    );
    let untouched = ok(
        &server,
        &session,
        "git.diff_file",
        json!({"path": "src/lib.rs"}),
    )
    .await;
    assert_eq!(untouched["diff"], "");
    assert!(untouched.get("stat").is_none(), "{untouched}");

    let log = ok(&server, &session, "git.log", json!({})).await;
    assert_eq!(log["ref"], "HEAD");
    assert_eq!(log["count"], 2);
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries[0]["subject"], "second");
    assert_eq!(entries[0]["author_name"], "dev");
    assert_eq!(entries[0]["author_email"], "dev@example.com");
    assert_eq!(entries[0]["parents"][0], entries[1]["hash"]);
    assert_eq!(entries[1]["parents"], json!([]));
    assert_eq!(entries[0]["hash"].as_str().unwrap().len(), 40);
    let one = ok(&server, &session, "git.log", json!({"max_count": 1})).await;
    assert_eq!(one["count"], 1);
    // The cap is a silent clamp.
    let capped = ok(&server, &session, "git.log", json!({"max_count": 5000})).await;
    assert!(
        capped["command"]
            .as_array()
            .unwrap()
            .contains(&json!("--max-count=200"))
    );

    let show = ok(&server, &session, "git.show", json!({})).await;
    let text = show["show"].as_str().unwrap();
    assert!(
        text.contains("second") && text.contains("+world") && text.contains("1 file changed"),
        "{show}"
    );
    let bare = ok(
        &server,
        &session,
        "git.show",
        json!({"ref": "HEAD~1", "stat": false, "patch": false}),
    )
    .await;
    assert!(
        bare["show"].as_str().unwrap().contains("CommitDate"),
        "{bare}"
    );
    assert!(
        !bare["show"].as_str().unwrap().contains("diff --git"),
        "{bare}"
    );

    let blame = ok(
        &server,
        &session,
        "git.blame",
        json!({"path": "hello.txt", "start_line": 2, "end_line": 2}),
    )
    .await;
    let lines: Vec<&str> = blame["blame"].as_str().unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "{blame}");
    assert!(lines[0].contains("world"), "{blame}");

    let branches = ok(&server, &session, "git.branch_list", json!({})).await;
    assert_eq!(branches["count"], 1);
    assert_eq!(branches["branches"][0]["name"], "main");
    assert_eq!(branches["branches"][0]["current"], true);
    assert_eq!(branches["branches"][0]["upstream"], "");
    assert_eq!(branches["branches"][0]["commit"], entries[0]["hash"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_failures_map_to_stable_codes() {
    let (server, _dir) = TestServer::start().await;
    let session = repo_session(&server, json!({}), &["developer"]).await;
    // Exit 128: an unknown revision, a blame range past the end.
    let (_, body) = fails(
        &server,
        &session,
        "git.log",
        json!({"ref": "nope"}),
        "git_repo_error",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("command failed: "),
        "{body}"
    );
    fails(
        &server,
        &session,
        "git.blame",
        json!({"path": "hello.txt", "start_line": 50, "end_line": 60}),
        "git_repo_error",
    )
    .await;
    // Exit 129: git refuses its usage (a negative -U is not an option the tool builds, but
    // branch -a and -r together is fine; an unknown option via diff base is refused up front).
    fails(
        &server,
        &session,
        "git.diff",
        json!({"base": "--output=/tmp/x"}),
        "invalid_argument",
    )
    .await;
    fails(
        &server,
        &session,
        "git.show",
        json!({"ref": "a;b"}),
        "policy_denied",
    )
    .await;
    // Paths outside the workspace.
    fails(
        &server,
        &session,
        "git.diff",
        json!({"paths": ["../etc"]}),
        "policy_denied",
    )
    .await;
    fails(
        &server,
        &session,
        "git.blame",
        json!({"path": "/etc/passwd"}),
        "policy_denied",
    )
    .await;
    // Nothing to commit: git exits 1.
    fails(
        &server,
        &session,
        "git.commit",
        json!({"message": "empty"}),
        "execution_failed",
    )
    .await;
    // Unknown arguments.
    fails(
        &server,
        &session,
        "git.status",
        json!({"porcelain": true}),
        "invalid_argument",
    )
    .await;
    // No repository at all.
    let empty = server.create_session(json!({})).await;
    fails(&server, &empty, "git.status", json!({}), "git_repo_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_commit_and_apply_patch_change_the_repository_within_the_allowlists() {
    let (server, _dir) = TestServer::start().await;
    let session = repo_session(
        &server,
        json!({
            "allowed_git_ref_prefixes": "feature/,main",
            "git_author_name": "Robo\nCop",
            "git_author_email": "robo@example.com"
        }),
        &["developer"],
    )
    .await;
    fails(
        &server,
        &session,
        "git.checkout",
        json!({"ref": "release/1", "create": true}),
        "policy_denied",
    )
    .await;
    fails(
        &server,
        &session,
        "git.checkout",
        json!({"ref": "feature/x", "create": true, "start_point": "HEAD~1"}),
        "policy_denied",
    )
    .await;
    let out = ok(
        &server,
        &session,
        "git.checkout",
        json!({"ref": "feature/x", "create": true, "start_point": "main"}),
    )
    .await;
    assert_eq!(out["created"], true);
    assert_eq!(out["ref"], "feature/x");

    let patch = "--- a/hello.txt\n+++ b/hello.txt\n@@ -1,2 +1,2 @@\n hello\n-world\n+there\n";
    let checked = ok(
        &server,
        &session,
        "git.apply_patch",
        json!({"patch": patch, "check": true}),
    )
    .await;
    assert_eq!(checked["applied"], false);
    let applied = ok(
        &server,
        &session,
        "git.apply_patch",
        json!({"patch": patch}),
    )
    .await;
    assert_eq!(applied["applied"], true);
    assert_eq!(applied["changed_paths"], json!(["hello.txt"]));
    let outside = "--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n";
    fails(
        &server,
        &session,
        "git.apply_patch",
        json!({"patch": outside}),
        "policy_denied",
    )
    .await;
    let gitdir = "--- a/.git/config\n+++ b/.git/config\n@@ -1 +1 @@\n-a\n+b\n";
    fails(
        &server,
        &session,
        "git.apply_patch",
        json!({"patch": gitdir}),
        "policy_denied",
    )
    .await;
    // Approval is required.
    let (status, body) = server
        .invoke(&session, "git.commit", json!({"args": {"message": "x"}}))
        .await;
    assert_eq!(
        body["error"]["code"], "approval_required",
        "{status} {body}"
    );

    let commit = ok(
        &server,
        &session,
        "git.commit",
        json!({"message": "third", "all": true}),
    )
    .await;
    assert_eq!(commit["committed"], true);
    let hash = commit["commit"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 40);
    let log = ok(&server, &session, "git.log", json!({"max_count": 1})).await;
    assert_eq!(log["entries"][0]["hash"], hash.as_str());
    // CR/LF stripped from the metadata name.
    assert_eq!(log["entries"][0]["author_name"], "RoboCop");
    assert_eq!(log["entries"][0]["author_email"], "robo@example.com");

    // Without metadata the actor is the author.
    let plain = repo_session(&server, json!({}), &["developer"]).await;
    std::fs::write(server.workspace_dir(&plain).join("new.txt"), "n\n").unwrap();
    give_to_the_sandbox(&server.workspace_dir(&plain));
    ok(
        &server,
        &plain,
        "git.commit",
        json!({"message": "by alice", "all": true}),
    )
    .await;
    let log = ok(&server, &plain, "git.log", json!({"max_count": 1})).await;
    assert_eq!(log["entries"][0]["author_name"], "alice");
    assert_eq!(log["entries"][0]["author_email"], "alice@workspace.local");
}

/// A bare repository inside the workspace as `origin`, with a `pre-receive` hook (and a
/// `post-update` one) that would leave a marker if it ran.
fn add_local_remote(ws: &Path) {
    let remote = ws.join("remotes/origin.git");
    std::fs::create_dir_all(&remote).unwrap();
    host_git(&remote, &["init", "-q", "--bare", "-b", "main"]);
    for hook in [
        "pre-receive",
        "update",
        "post-receive",
        "post-update",
        "reference-transaction",
    ] {
        let path = remote.join("hooks").join(hook);
        std::fs::write(
            &path,
            format!("#!/bin/sh\ntouch \"$GIT_DIR/../../HOOK_{hook}_RAN\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The remote's own configuration names hooks elsewhere too.
    std::fs::write(
        remote.join("config"),
        "[core]\n\tbare = true\n\thooksPath = hooks\n[receive]\n\tdenyCurrentBranch = updateInstead\n",
    )
    .unwrap();
    host_git(ws, &["remote", "add", "origin", "remotes/origin.git"]);
    host_git(ws, &["remote", "add", "web", "https://example.com/r.git"]);
    host_git(ws, &["remote", "add", "scp", "git@example.com:r.git"]);
    host_git(ws, &["remote", "add", "outside", "/tmp"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_fetch_and_pull_reach_a_workspace_remote_without_running_its_hooks() {
    let (server, _dir) = TestServer::start().await;
    let session = repo_session(
        &server,
        json!({"allowed_git_remotes": "origin,web,scp,outside", "allowed_git_ref_prefixes": "main,feature/"}),
        &["developer", "platform_admin"],
    )
    .await;
    let ws = server.workspace_dir(&session);
    add_local_remote(&ws);
    give_to_the_sandbox(&ws);

    let pushed = ok(
        &server,
        &session,
        "git.push",
        json!({"refspec": "main", "set_upstream": true}),
    )
    .await;
    assert_eq!(pushed["pushed"], true, "{pushed}");
    assert_eq!(pushed["remote"], "origin");
    let remote_head = host_git(&ws.join("remotes/origin.git"), &["rev-parse", "main"]);
    let local_head = host_git(&ws, &["rev-parse", "main"]);
    assert_eq!(remote_head, local_head);
    let ran: Vec<_> = std::fs::read_dir(&ws)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("HOOK_"))
        .collect();
    assert!(ran.is_empty(), "the remote's hooks ran: {ran:?}");
    let branches = ok(&server, &session, "git.branch_list", json!({"all": true})).await;
    assert_eq!(
        branches["branches"][0]["upstream"], "origin/main",
        "{branches}"
    );

    // A second clone's commit lands in the remote; fetch and pull bring it back.
    let other = ws.join("remotes/other");
    host_git(&ws.join("remotes"), &["clone", "-q", "origin.git", "other"]);
    std::fs::write(other.join("more.txt"), "more\n").unwrap();
    host_git(&other, &["add", "."]);
    host_git(&other, &["commit", "-qm", "from elsewhere"]);
    host_git(&other, &["push", "-q", "origin", "main"]);
    std::fs::remove_dir_all(&other).unwrap();
    give_to_the_sandbox(&ws);
    let fetched = ok(
        &server,
        &session,
        "git.fetch",
        json!({"prune": true, "tags": true}),
    )
    .await;
    assert_eq!(fetched["fetched"], true, "{fetched}");
    let pulled = ok(&server, &session, "git.pull", json!({"refspec": "main"})).await;
    assert_eq!(pulled["pulled"], true, "{pulled}");
    assert!(ws.join("more.txt").exists());

    // Denials: a remote or ref outside the allowlists, network URLs, a path outside.
    fails(
        &server,
        &session,
        "git.push",
        json!({"remote": "upstream"}),
        "policy_denied",
    )
    .await;
    fails(
        &server,
        &session,
        "git.push",
        json!({"refspec": "main:release/x"}),
        "policy_denied",
    )
    .await;
    fails(
        &server,
        &session,
        "git.push",
        json!({"refspec": "main", "cleanup_ref": "release/x"}),
        "policy_denied",
    )
    .await;
    fails(
        &server,
        &session,
        "git.fetch",
        json!({"refspec": "release/1"}),
        "policy_denied",
    )
    .await;
    let (status, _) = fails(
        &server,
        &session,
        "git.fetch",
        json!({"remote": "web"}),
        "network_disabled",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    fails(
        &server,
        &session,
        "git.pull",
        json!({"remote": "scp"}),
        "network_disabled",
    )
    .await;
    fails(
        &server,
        &session,
        "git.push",
        json!({"remote": "outside"}),
        "policy_denied",
    )
    .await;
    // push is high risk: a developer alone cannot.
    let dev = repo_session(&server, json!({}), &["developer"]).await;
    fails(&server, &dev, "git.push", json!({}), "policy_denied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_command_that_hangs_times_out_with_a_retryable_timeout() {
    let (server, _dir) = TestServer::start().await;
    let session = repo_session(&server, json!({}), &["developer"]).await;
    let ws = server.workspace_dir(&session);
    // Refs only in packed-refs, which is a FIFO nobody writes: git blocks opening it.
    host_git(&ws, &["pack-refs", "--all"]);
    std::fs::remove_file(ws.join(".git/packed-refs")).unwrap();
    let fifo = ws.join(".git/packed-refs");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    give_to_the_sandbox(&ws);
    let (status, body) = fails(&server, &session, "git.status", json!({}), "timeout").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["invocation"]["error"]["retryable"], true, "{body}");
    assert_eq!(body["invocation"]["exit_code"], 124, "{body}");
}
