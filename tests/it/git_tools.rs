//! The `git.*` tools through the HTTP API, the real runner in a real bubblewrap sandbox and
//! real git: defaults, caps, outputs, error codes, the metadata allowlists, the commit author,
//! a local remote inside the workspace (whose hooks never run), `network_disabled` for URL
//! remotes, and the timeout path.

use std::path::Path;

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, get_bytes, invoke_approved, invoke_ok, invoke_refused};

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

/// A global configuration trusting every directory, written once per test process (tests run
/// in parallel: rewriting it while another test's git reads it races).
fn safe_config() -> &'static Path {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("git-tools-test-{}.gitconfig", std::process::id()));
        std::fs::write(&path, "[safe]\n\tdirectory = *\n").unwrap();
        path
    })
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
    repo_session_with(server, json!({"metadata": metadata}), roles).await
}

/// [`repo_session`] with `extra` session fields (`metadata`, `allowed_paths`, ...).
async fn repo_session_with(server: &TestServer, extra: Value, roles: &[&str]) -> String {
    let mut body = json!({"principal": {"tenant_id": "acme", "actor_id": "alice", "roles": roles}});
    for (k, v) in extra.as_object().expect("extra is an object") {
        body[k] = v.clone();
    }
    let session = server.create_session(body).await;
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
    invoke_approved(server, session, tool, args).await
}

/// The output of an approved call that must succeed.
async fn ok(server: &TestServer, session: &str, tool: &str, args: Value) -> Value {
    invoke_ok(server, session, tool, args).await["output"].clone()
}

/// An approved call that must fail with `code`; returns its status and body.
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

/// An approved call that must fail with `code` and HTTP `status`.
async fn fails_with(
    server: &TestServer,
    session: &str,
    tool: &str,
    args: Value,
    expected: (StatusCode, &str),
) -> Value {
    let (status, body) = fails(server, session, tool, args, expected.1).await;
    assert_eq!(status, expected.0, "{tool}: {body}");
    body
}

const INVALID: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "invalid_argument");
const DENIED: (StatusCode, &str) = (StatusCode::FORBIDDEN, "policy_denied");
const REPO_ERROR: (StatusCode, &str) = (StatusCode::INTERNAL_SERVER_ERROR, "git_repo_error");
const USAGE_ERROR: (StatusCode, &str) = (StatusCode::INTERNAL_SERVER_ERROR, "git_usage_error");
const FAILED: (StatusCode, &str) = (StatusCode::INTERNAL_SERVER_ERROR, "execution_failed");

fn argv(output: &Value) -> Vec<&str> {
    output["command"]
        .as_array()
        .unwrap_or_else(|| panic!("no command: {output}"))
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
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
    assert_eq!(untouched["truncated"], false);
    assert!(untouched.get("stat").is_none(), "{untouched}");
    // context: absent leaves git's default (no -U); above 50 it is clamped to 50; below 0 it
    // is no u32 and refused naming the field.
    let plain = ok(
        &server,
        &session,
        "git.diff_file",
        json!({"path": "hello.txt"}),
    )
    .await;
    assert!(!argv(&plain).iter().any(|a| a.starts_with("-U")), "{plain}");
    assert!(
        plain["diff"].as_str().unwrap().contains("@@ -1,2 +1,3 @@"),
        "{plain}"
    );
    for context in [50, 51, 100_000] {
        let wide = ok(
            &server,
            &session,
            "git.diff_file",
            json!({"path": "hello.txt", "context": context}),
        )
        .await;
        assert!(argv(&wide).contains(&"-U50"), "{context}: {wide}");
    }
    let body = fails_with(
        &server,
        &session,
        "git.diff_file",
        json!({"path": "hello.txt", "context": -1}),
        INVALID,
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("args.context"),
        "{body}"
    );

    let log = ok(&server, &session, "git.log", json!({})).await;
    assert_eq!(log["ref"], "HEAD");
    assert_eq!(log["count"], 2);
    assert_eq!(log["truncated"], false);
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries[0]["subject"], "second");
    assert_eq!(entries[0]["author_name"], "dev");
    assert_eq!(entries[0]["author_email"], "dev@example.com");
    assert_eq!(entries[0]["parents"][0], entries[1]["hash"]);
    assert_eq!(entries[1]["parents"], json!([]));
    assert_eq!(entries[0]["hash"].as_str().unwrap().len(), 40);
    let one = ok(&server, &session, "git.log", json!({"max_count": 1})).await;
    assert_eq!(one["count"], 1);
    assert!(argv(&log).contains(&"--max-count=20"), "{log}");
    fails_with(
        &server,
        &session,
        "git.log",
        json!({"max_count": 0}),
        INVALID,
    )
    .await;
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
    assert_eq!(bare["ref"], "HEAD~1");
    assert_eq!(show["ref"], "HEAD");
    assert_eq!(show["path"], "");
    assert_eq!(show["truncated"], false);
    let stat_only = ok(&server, &session, "git.show", json!({"patch": false})).await;
    let text = stat_only["show"].as_str().unwrap();
    assert!(
        text.contains("1 file changed") && !text.contains("+world"),
        "{stat_only}"
    );
    let patch_only = ok(&server, &session, "git.show", json!({"stat": false})).await;
    let text = patch_only["show"].as_str().unwrap();
    assert!(
        text.contains("+world") && !text.contains("1 file changed"),
        "{patch_only}"
    );
    // With a path: only that path's part of the commit; HEAD did not touch src/lib.rs, so
    // git's path limiting leaves nothing to show.
    let other = ok(
        &server,
        &session,
        "git.show",
        json!({"path": "./src/lib.rs"}),
    )
    .await;
    assert_eq!(other["path"], "src/lib.rs");
    assert!(
        argv(&other).ends_with(&["HEAD", "--", "src/lib.rs"]),
        "{other}"
    );
    assert_eq!(other["show"], "", "{other}");
    let own = ok(&server, &session, "git.show", json!({"path": "hello.txt"})).await;
    assert!(own["show"].as_str().unwrap().contains("+world"), "{own}");

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
    assert_eq!(blame["path"], "hello.txt");
    assert_eq!(blame["truncated"], false);
    // The range applies only with both lines and end_line >= start_line; otherwise the whole
    // file (three lines in the working tree) is blamed.
    for range in [
        json!({}),
        json!({"start_line": 2}),
        json!({"end_line": 2}),
        json!({"start_line": 3, "end_line": 2}),
    ] {
        let mut args = range.clone();
        args["path"] = json!("hello.txt");
        let whole = ok(&server, &session, "git.blame", args).await;
        assert!(
            !argv(&whole).iter().any(|a| a.starts_with("-L")),
            "{range}: {whole}"
        );
        assert_eq!(
            whole["blame"].as_str().unwrap().lines().count(),
            3,
            "{whole}"
        );
    }

    let branches = ok(&server, &session, "git.branch_list", json!({})).await;
    assert_eq!(branches["count"], 1);
    assert_eq!(branches["truncated"], false);
    assert_eq!(branches["branches"][0]["name"], "main");
    assert_eq!(branches["branches"][0]["current"], true);
    assert_eq!(branches["branches"][0]["upstream"], "");
    assert_eq!(branches["branches"][0]["commit"], entries[0]["hash"]);
    assert!(!argv(&branches).contains(&"-a") && !argv(&branches).contains(&"-r"));
    let remotes = ok(
        &server,
        &session,
        "git.branch_list",
        json!({"remotes": true}),
    )
    .await;
    assert_eq!(remotes["count"], 0, "{remotes}");
    assert!(argv(&remotes).contains(&"-r"), "{remotes}");
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The artifact `name` of `invocation`, downloaded: its bytes (which must be its
/// `size_bytes`).
async fn artifact(server: &TestServer, invocation: &Value, name: &str) -> Vec<u8> {
    let stored = invocation["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no {name} artifact: {}", invocation["artifacts"]));
    let route = format!(
        "/v1/invocations/{}/artifacts/{}",
        invocation["id"].as_str().unwrap(),
        stored["id"].as_str().unwrap()
    );
    let (status, bytes) = get_bytes(server.addr, &route).await;
    assert_eq!(status, StatusCode::OK, "{route}");
    assert_eq!(stored["size_bytes"], bytes.len(), "{stored}");
    bytes.to_vec()
}

/// Checks that `field` of a cut output is exactly its first `cap` bytes of the artifact
/// `<tool>.stdout.txt`, which holds the whole text (ending with `last`).
async fn cut_at(
    server: &TestServer,
    invocation: &Value,
    tool: &str,
    field: &str,
    cap: usize,
    last: &str,
) {
    let output = &invocation["output"];
    assert_eq!(output["truncated"], true, "{tool}");
    let inline = output[field].as_str().unwrap();
    assert_eq!(
        inline.len(),
        cap,
        "{tool}: the inline {field} is cut at the cap"
    );
    let full = artifact(server, invocation, &format!("{tool}.stdout.txt")).await;
    assert!(full.len() > cap, "{tool}: {} bytes", full.len());
    assert_eq!(&full[..cap], inline.as_bytes(), "{tool}");
    let full = String::from_utf8(full).unwrap();
    assert!(
        full.trim_end().ends_with(last),
        "{tool}: {}",
        &full[full.len() - 200..]
    );
    assert!(!inline.contains(last), "{tool}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_a_cap_is_cut_exactly_there_and_kept_whole_as_an_artifact() {
    let (server, _dir) = TestServer::start().await;
    let session = repo_session(&server, json!({}), &["developer"]).await;
    let ws = server.workspace_dir(&session);
    // 25,000 lines of 64 bytes: 1.6 MB of text, committed (show, blame), then removed (diff,
    // diff_file). ASCII, so a cut at any byte is a cut at a character.
    let lines = 25_000;
    let big: String = (0..lines)
        .map(|i| format!("line {i:06} {}\n", "x".repeat(52)))
        .collect();
    assert!(big.len() > 3 * MIB / 2);
    std::fs::write(ws.join("big.txt"), &big).unwrap();
    host_git(&ws, &["add", "big.txt"]);
    host_git(&ws, &["commit", "-qm", "big"]);
    std::fs::write(ws.join("big.txt"), "").unwrap();
    give_to_the_sandbox(&ws);
    let last = format!("line {:06} {}", lines - 1, "x".repeat(52));

    let shown = invoke_ok(&server, &session, "git.show", json!({"stat": false})).await;
    cut_at(&server, &shown, "git.show", "show", MIB, &last).await;
    let diff = invoke_ok(&server, &session, "git.diff", json!({})).await;
    cut_at(&server, &diff, "git.diff", "diff", MIB, &format!("-{last}")).await;
    let file = invoke_ok(
        &server,
        &session,
        "git.diff_file",
        json!({"path": "big.txt"}),
    )
    .await;
    cut_at(
        &server,
        &file,
        "git.diff_file",
        "diff",
        MIB,
        &format!("-{last}"),
    )
    .await;
    // Blame's cap is 512 KiB (of the committed file: the working tree's is empty).
    host_git(&ws, &["checkout", "--", "big.txt"]);
    give_to_the_sandbox(&ws);
    let blamed = invoke_ok(&server, &session, "git.blame", json!({"path": "big.txt"})).await;
    cut_at(&server, &blamed, "git.blame", "blame", 512 * KIB, &last).await;
    // Status: 4,500 untracked files with 250-byte names, about 1.1 MiB of porcelain.
    for i in 0..4_500 {
        std::fs::write(ws.join(format!("{i:05}{}", "n".repeat(245))), "").unwrap();
    }
    give_to_the_sandbox(&ws);
    let status = invoke_ok(&server, &session, "git.status", json!({})).await;
    cut_at(
        &server,
        &status,
        "git.status",
        "status",
        MIB,
        &format!("04499{}", "n".repeat(245)),
    )
    .await;

    // Under the cap: not truncated, no artifact.
    let small = invoke_ok(&server, &session, "git.show", json!({"ref": "HEAD~1"})).await;
    assert_eq!(small["output"]["truncated"], false);
    assert!(
        small["artifacts"].as_array().is_none_or(|a| a.is_empty()),
        "{small}"
    );

    // Log and branch list parse their output: past 1 MiB they answer only whole records and
    // say truncated. Three commits with 400 kB subjects (the third is cut).
    let subject = std::env::temp_dir().join(format!("git-subject-{}", std::process::id()));
    for i in 0..3 {
        std::fs::write(&subject, format!("{i}{}", "s".repeat(400_000))).unwrap();
        host_git(
            &ws,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "-F",
                subject.to_str().unwrap(),
            ],
        );
    }
    std::fs::remove_file(&subject).unwrap();
    give_to_the_sandbox(&ws);
    let log = invoke_ok(&server, &session, "git.log", json!({"max_count": 5})).await;
    let out = &log["output"];
    assert_eq!(out["truncated"], true, "{}", out["count"]);
    assert_eq!(out["count"], 2);
    for entry in out["entries"].as_array().unwrap() {
        assert_eq!(entry["subject"].as_str().unwrap().len(), 400_001);
        assert_eq!(entry["parents"].as_array().unwrap().len(), 1);
    }
    // 4,000 branches with 240-byte names: about 1.2 MB of records.
    let head = host_git(&ws, &["rev-parse", "HEAD"]);
    let refs: String = (0..4_000)
        .map(|i| {
            format!(
                "create refs/heads/b{i:05}{} {}\n",
                "r".repeat(234),
                head.trim()
            )
        })
        .collect();
    let mut update = std::process::Command::new("git")
        .current_dir(&ws)
        .env("GIT_CONFIG_GLOBAL", safe_config())
        .args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("git runs");
    use std::io::Write as _;
    update
        .stdin
        .take()
        .unwrap()
        .write_all(refs.as_bytes())
        .unwrap();
    assert!(update.wait().unwrap().success());
    give_to_the_sandbox(&ws);
    let listed = invoke_ok(&server, &session, "git.branch_list", json!({})).await;
    let out = &listed["output"];
    assert_eq!(out["truncated"], true);
    let branches = out["branches"].as_array().unwrap();
    assert!(
        (3_000..4_000).contains(&branches.len()),
        "{} branches",
        branches.len()
    );
    assert!(branches.iter().all(|b| b["commit"] == head.trim()));
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
    fails_with(
        &server,
        &session,
        "git.diff_file",
        json!({"path": "hello.txt", "ref": "nope"}),
        REPO_ERROR,
    )
    .await;
    fails_with(
        &server,
        &session,
        "git.show",
        json!({"ref": "nope"}),
        REPO_ERROR,
    )
    .await;
    fails_with(
        &server,
        &session,
        "git.checkout",
        json!({"ref": "nope"}),
        REPO_ERROR,
    )
    .await;
    // An untracked file: blame is exit 128, diff_file an empty diff.
    let ws = server.workspace_dir(&session);
    std::fs::write(ws.join("untracked.txt"), "u\n").unwrap();
    give_to_the_sandbox(&ws);
    fails_with(
        &server,
        &session,
        "git.blame",
        json!({"path": "untracked.txt"}),
        REPO_ERROR,
    )
    .await;
    let untracked = ok(
        &server,
        &session,
        "git.diff_file",
        json!({"path": "untracked.txt"}),
    )
    .await;
    assert_eq!(untracked["diff"], "", "{untracked}");
    // Exit 129: git refuses its usage. Every tool builds its own options and refuses a value
    // starting with '-', but some combinations of valid values still make git print its
    // usage: an index diff (--staged) against a range, or a diff against a blob.
    for args in [
        json!({"staged": true, "base": "HEAD~1..HEAD"}),
        json!({"base": "HEAD:hello.txt"}),
    ] {
        let body = fails_with(&server, &session, "git.diff", args.clone(), USAGE_ERROR).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("command failed: ") && message.contains("exit code 129"),
            "{args}: {body}"
        );
        let partial = &body["invocation"]["output"];
        assert!(argv(partial).contains(&"git"), "{body}");
        assert!(
            partial["output"]
                .as_str()
                .unwrap()
                .contains("usage: git diff"),
            "{body}"
        );
    }
    // A value git would read as an option is refused before git runs.
    for (tool, args) in [
        ("git.diff", json!({"base": "--output=/tmp/x"})),
        ("git.diff_file", json!({"path": "hello.txt", "ref": "-U5"})),
        ("git.log", json!({"ref": "--all"})),
        ("git.show", json!({"ref": "--output=x"})),
        ("git.checkout", json!({"ref": "-b"})),
        (
            "git.checkout",
            json!({"ref": "x", "create": true, "start_point": "-f"}),
        ),
        ("git.fetch", json!({"remote": "--upload-pack=x"})),
        ("git.pull", json!({"refspec": "--rebase"})),
    ] {
        let body = fails_with(&server, &session, tool, args.clone(), INVALID).await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must not start with '-'"),
            "{tool} {args}: {body}"
        );
    }
    // Required and typed arguments.
    for (tool, args) in [
        ("git.diff_file", json!({})),
        ("git.diff_file", json!({"path": ""})),
        ("git.blame", json!({})),
        ("git.blame", json!({"path": "hello.txt", "start_line": -1})),
        ("git.checkout", json!({})),
        ("git.commit", json!({})),
        ("git.commit", json!({"message": ""})),
        ("git.commit", json!({"message": "m".repeat(1025)})),
        ("git.apply_patch", json!({})),
        ("git.apply_patch", json!({"patch": ""})),
        // A patch that names no path.
        ("git.apply_patch", json!({"patch": "not a diff\n"})),
        ("git.branch_list", json!({"all": "yes"})),
        ("git.show", json!({"stat": 1})),
    ] {
        fails_with(&server, &session, tool, args, INVALID).await;
    }
    // The catalog's argument rules: refs not blank, at most 256 characters, no shell
    // characters; remotes and refspecs no spaces either.
    for (tool, args) in [
        ("git.checkout", json!({"ref": "  "})),
        ("git.log", json!({"ref": "a".repeat(257)})),
        ("git.checkout", json!({"ref": "a|b"})),
        (
            "git.checkout",
            json!({"ref": "x", "create": true, "start_point": "$(id)"}),
        ),
        ("git.fetch", json!({"remote": "a b"})),
        ("git.fetch", json!({"refspec": "a".repeat(513)})),
        ("git.commit", json!({"message": "nul\u{0}byte"})),
    ] {
        fails_with(&server, &session, tool, args, DENIED).await;
    }
    // A patch that does not apply: git apply exits 1; a corrupt one exits 128.
    let stale = "--- a/hello.txt\n+++ b/hello.txt\n@@ -1,2 +1,2 @@\n nope\n-nothing\n+there\n";
    let body = fails_with(
        &server,
        &session,
        "git.apply_patch",
        json!({"patch": stale}),
        FAILED,
    )
    .await;
    assert!(
        body["invocation"]["output"]["output"]
            .as_str()
            .unwrap()
            .contains("patch failed"),
        "{body}"
    );
    let corrupt = "--- a/hello.txt\n+++ b/hello.txt\n@@ -1,2 +1,2 @@\n garbage\n";
    fails_with(
        &server,
        &session,
        "git.apply_patch",
        json!({"patch": corrupt}),
        REPO_ERROR,
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

    // Every path-taking tool: a path escaping the workspace, then a path outside
    // allowed_paths; a ref outside allowed_git_ref_prefixes. All `denied`, 403.
    let confined = repo_session_with(
        &server,
        json!({"allowed_paths": ["src"], "metadata": {"allowed_git_ref_prefixes": "main"}}),
        &["developer"],
    )
    .await;
    let to_hello = "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n-hello\n+bye\n";
    for (on, tool, args) in [
        (&session, "git.diff", json!({"paths": ["../etc"]})),
        (&session, "git.diff_file", json!({"path": "../x"})),
        (&session, "git.blame", json!({"path": "/etc/passwd"})),
        (&session, "git.show", json!({"path": "/etc"})),
        (
            &session,
            "git.commit",
            json!({"message": "m", "paths": ["src/../../x"]}),
        ),
        (&confined, "git.diff", json!({"paths": ["hello.txt"]})),
        (
            &confined,
            "git.diff_file",
            json!({"path": "hello.txt", "ref": "main"}),
        ),
        (&confined, "git.blame", json!({"path": "hello.txt"})),
        (&confined, "git.show", json!({"path": "hello.txt"})),
        (
            &confined,
            "git.commit",
            json!({"message": "m", "paths": ["hello.txt"]}),
        ),
        (&confined, "git.apply_patch", json!({"patch": to_hello})),
        (
            &confined,
            "git.diff_file",
            json!({"path": "src/lib.rs", "ref": "HEAD~1"}),
        ),
        // The default ref, HEAD, is a ref like any other.
        (&confined, "git.diff_file", json!({"path": "src/lib.rs"})),
        (&confined, "git.checkout", json!({"ref": "HEAD~1"})),
    ] {
        let refused = invoke_refused(&server, on, tool, args.clone()).await;
        assert_eq!(
            refused,
            (
                StatusCode::FORBIDDEN,
                "policy_denied".into(),
                "denied".into()
            ),
            "{tool} {args}"
        );
    }
    // Inside both allowlists.
    let inside = ok(
        &server,
        &confined,
        "git.diff_file",
        json!({"path": "src/lib.rs", "ref": "main"}),
    )
    .await;
    assert_eq!(inside["diff"], "", "{inside}");
    let blamed = ok(
        &server,
        &confined,
        "git.blame",
        json!({"path": "src/lib.rs"}),
    )
    .await;
    assert!(
        blamed["blame"].as_str().unwrap().contains("fn a()"),
        "{blamed}"
    );
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
    // Approval is required for the tools that change the repository or talk to a remote.
    for (tool, args) in [
        ("git.commit", json!({"message": "x"})),
        ("git.apply_patch", json!({"patch": patch})),
        ("git.fetch", json!({})),
        ("git.pull", json!({})),
    ] {
        let (status, body) = server.invoke(&session, tool, json!({"args": args})).await;
        assert_eq!(body["error"]["code"], "approval_required", "{tool}: {body}");
        assert_eq!(status.as_u16(), 428, "{tool}: {body}");
    }

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

    // Back to main (not created), discarding a local change with force.
    let ws = server.workspace_dir(&session);
    std::fs::write(ws.join("src/lib.rs"), "local change\n").unwrap();
    give_to_the_sandbox(&ws);
    let back = ok(
        &server,
        &session,
        "git.checkout",
        json!({"ref": "main", "force": true}),
    )
    .await;
    assert_eq!(back["created"], false, "{back}");
    assert!(argv(&back).contains(&"--force"), "{back}");
    assert_eq!(
        std::fs::read_to_string(ws.join("src/lib.rs")).unwrap(),
        "fn a() {}\n"
    );

    // Without a usable metadata identity the actor is the author (an email without '@' is
    // ignored); paths limit the commit to them.
    let plain = repo_session(
        &server,
        json!({"git_author_email": "not-an-email"}),
        &["developer"],
    )
    .await;
    let ws = server.workspace_dir(&plain);
    std::fs::write(ws.join("new.txt"), "n\n").unwrap();
    std::fs::write(ws.join("other.txt"), "o\n").unwrap();
    give_to_the_sandbox(&ws);
    let commit = ok(
        &server,
        &plain,
        "git.commit",
        json!({"message": "by alice", "all": true, "paths": ["new.txt"]}),
    )
    .await;
    assert!(argv(&commit).ends_with(&["--", "new.txt"]), "{commit}");
    let log = ok(&server, &plain, "git.log", json!({"max_count": 1})).await;
    assert_eq!(log["entries"][0]["author_name"], "alice");
    assert_eq!(log["entries"][0]["author_email"], "alice@workspace.local");
    let status = ok(&server, &plain, "git.status", json!({})).await;
    assert_eq!(status["status"], "A  other.txt\n", "{status}");
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
    assert_eq!(pulled["remote"], "origin");
    assert_eq!(pulled["refspec"], "main");
    assert!(argv(&pulled).contains(&"--no-rebase"), "{pulled}");
    assert!(ws.join("more.txt").exists());
    assert_eq!(fetched["refspec"], "", "{fetched}");
    assert!(
        argv(&fetched).ends_with(&["--prune", "--tags", "origin"]),
        "{fetched}"
    );

    // A second branch on the remote, then cleanup_ref deletes it before a push with
    // --force-with-lease; rebase pulls with --rebase; remotes lists the tracking branches.
    ok(
        &server,
        &session,
        "git.push",
        json!({"refspec": "main:feature/old"}),
    )
    .await;
    let remote_dir = ws.join("remotes/origin.git");
    assert!(host_git(&remote_dir, &["branch", "--list"]).contains("feature/old"));
    let cleaned = ok(
        &server,
        &session,
        "git.push",
        json!({"refspec": "main", "cleanup_ref": "feature/old", "force_with_lease": true}),
    )
    .await;
    assert!(argv(&cleaned).contains(&"--force-with-lease"), "{cleaned}");
    assert!(!host_git(&remote_dir, &["branch", "--list"]).contains("feature/old"));
    let rebased = ok(
        &server,
        &session,
        "git.pull",
        json!({"refspec": "main", "rebase": true}),
    )
    .await;
    assert!(argv(&rebased).contains(&"--rebase"), "{rebased}");
    let remotes = ok(
        &server,
        &session,
        "git.branch_list",
        json!({"remotes": true}),
    )
    .await;
    assert!(
        remotes["branches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["name"].as_str().unwrap().starts_with("origin")),
        "{remotes}"
    );
    assert!(remotes["count"].as_u64().unwrap() >= 1, "{remotes}");
    fails_with(
        &server,
        &session,
        "git.push",
        json!({"cleanup_ref": "--all"}),
        INVALID,
    )
    .await;

    // Denials: a remote or ref outside the allowlists, network URLs, a path outside.
    for tool in ["git.push", "git.fetch", "git.pull"] {
        let body = fails_with(
            &server,
            &session,
            tool,
            json!({"remote": "upstream"}),
            DENIED,
        )
        .await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("remote outside allowlist"),
            "{tool}: {body}"
        );
    }
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
