//! End-to-end tests of the `fs.*` tools against a real in-process runner on a temporary socket.
//!
//! [`Harness::invoke`] does what the API and executor do around a handler: validate the
//! arguments against the input schema, run the policy, call the handler, and (on success)
//! check the output against the output schema. Pure helpers of the handlers (diff parsing,
//! line selection, mode rendering) are tested at the end without a runner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use workspace_events::Principal;

use super::edit::replace_exact;
use super::entry::mode_string;
use super::glob::glob_under;
use super::insert::insert_lines;
use super::mkdir::parse_mode;
use super::patch::{DiffRefusal, diff_paths};
use super::read_file::{Encoding, encode_content};
use super::read_lines::select_lines;
use super::write_file::decode_content;
use crate::error_code::ErrorCode;
use crate::ids::SessionId;
use crate::runner::SocketRunner;
use crate::runner::protocol::EntryType;
use crate::runner::server::RunnerServer;
use crate::tools::{
    Catalog, Idempotency, RiskLevel, Scope, SessionContext, SideEffects, ToolContext, ToolFailure,
    ToolSpec, ToolSuccess,
};

struct Harness {
    dir: tempfile::TempDir,
    root: PathBuf,
    socket: PathBuf,
    allowed_paths: Vec<String>,
    catalog: Catalog,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn harness() -> Harness {
    harness_with(&["."]).await
}

async fn harness_with(allowed: &[&str]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir(&root).unwrap();
    let socket = dir.path().join("runner.sock");
    let server = RunnerServer::bind(&socket, &root, "unsandboxed").unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Harness {
        dir,
        root,
        socket,
        allowed_paths: allowed.iter().map(|p| (*p).to_owned()).collect(),
        catalog: Catalog::builtin(),
        stop: Some(stop),
    }
}

impl Harness {
    fn session(&self) -> SessionContext {
        SessionContext {
            id: SessionId::generate(),
            principal: Principal {
                tenant_id: "tenant".into(),
                actor_id: "agent".into(),
                roles: vec!["developer".into(), "platform_admin".into()],
            },
            allowed_paths: self.allowed_paths.clone(),
            metadata: BTreeMap::new(),
            runtime: None,
        }
    }

    fn context(&self, tool: &str, socket: &Path) -> ToolContext {
        let timeout = self
            .catalog
            .get(tool)
            .unwrap()
            .spec()
            .constraints
            .timeout_seconds;
        ToolContext {
            session: Arc::new(self.session()),
            runner: Arc::new(SocketRunner::new(socket, "unsandboxed")),
            deadline: Instant::now() + Duration::from_secs(timeout),
            output: crate::live::OutputSink::discard(),
            kube: None,
        }
    }

    /// Validation, policy (approved), handler, output check: the invocation pipeline.
    async fn invoke(&self, tool: &str, args: Value) -> Result<ToolSuccess, ToolFailure> {
        let ctx = self.context(tool, &self.socket);
        self.invoke_with(ctx, tool, args).await
    }

    async fn invoke_with(
        &self,
        ctx: ToolContext,
        tool: &str,
        args: Value,
    ) -> Result<ToolSuccess, ToolFailure> {
        let t = self.catalog.get(tool).unwrap();
        let paths = t
            .check(&args)
            .map_err(|e| ToolFailure::new(ErrorCode::InvalidArgument, e.to_string()))?;
        crate::policy::authorize(&ctx.session, t.spec(), &paths, &args, true)
            .map_err(|d| ToolFailure::new(d.code, d.message))?;
        let result = t.run(ctx, args).await;
        let check_output = |output: &Value| {
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&t.spec().output_schema)
                .unwrap();
            if let Err(e) = validator.validate(output) {
                panic!("{tool}: output {output} does not match its schema: {e}");
            }
        };
        if let Err(failure) = &result
            && let Some(partial) = &failure.output
        {
            check_output(&partial.to_value().unwrap());
        }
        if let Ok(success) = &result {
            check_output(&success.output.to_value().unwrap());
            assert_eq!(success.exit_code, 0, "{tool}");
            assert!(!success.logs.is_empty(), "{tool}: no summary log line");
        }
        result
    }

    async fn ok(&self, tool: &str, args: Value) -> Value {
        match self.invoke(tool, args.clone()).await {
            Ok(success) => success.output.to_value().unwrap(),
            Err(f) => panic!("{tool} {args}: {:?} {}", f.code, f.message),
        }
    }

    async fn fail(&self, tool: &str, args: Value) -> ToolFailure {
        match self.invoke(tool, args.clone()).await {
            Ok(success) => panic!("{tool} {args} succeeded: {}", success.output),
            Err(failure) => failure,
        }
    }

    async fn code(&self, tool: &str, args: Value) -> ErrorCode {
        self.fail(tool, args).await.code
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root.join(rel)).unwrap()
    }

    fn text(&self, rel: &str) -> String {
        String::from_utf8(self.read(rel)).unwrap()
    }

    fn exists(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.root.join(rel)).is_ok()
    }
}

// ---------------------------------------------------------------------------------------------
// fs.list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_returns_sorted_entries_flat_or_recursive() {
    let h = harness().await;
    h.write("b.txt", "bb");
    h.write("a/inner.txt", "x");
    let flat = h.ok("fs.list", json!({})).await;
    let paths: Vec<&str> = flat["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["a", "b.txt"]);
    assert_eq!(flat["count"], 2);
    assert_eq!(flat["truncated"], false);
    let file = &flat["entries"][1];
    assert_eq!(file["type"], "file");
    assert_eq!(file["size_bytes"], 2);
    assert_eq!(file["mode"], "-rw-r--r--");
    assert!(file["modified_at"].as_str().unwrap().contains('T'));
    assert_eq!(flat["entries"][0]["type"], "dir");
    assert!(
        flat["entries"][0]["mode"]
            .as_str()
            .unwrap()
            .starts_with('d')
    );

    let deep = h
        .ok("fs.list", json!({"path": ".", "recursive": true}))
        .await;
    let paths: Vec<&str> = deep["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["a", "a/inner.txt", "b.txt"]);

    let sub = h.ok("fs.list", json!({"path": "a"})).await;
    assert_eq!(sub["entries"][0]["path"], "a/inner.txt");
}

#[tokio::test]
async fn list_stops_at_max_entries_and_says_so() {
    let h = harness().await;
    for i in 0..5 {
        h.write(&format!("f{i}"), "");
    }
    let out = h.ok("fs.list", json!({"max_entries": 3})).await;
    assert_eq!(out["count"], 3);
    assert_eq!(out["truncated"], true);
    // Above the cap is clamped silently, as in the original.
    let out = h.ok("fs.list", json!({"max_entries": 100000})).await;
    assert_eq!(out["count"], 5);
    assert_eq!(
        h.code("fs.list", json!({"max_entries": 0})).await,
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn list_of_a_missing_directory_is_not_found() {
    let h = harness().await;
    assert_eq!(
        h.code("fs.list", json!({"path": "nope"})).await,
        ErrorCode::NotFound
    );
}

// ---------------------------------------------------------------------------------------------
// fs.read_file
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn read_file_returns_utf8_text_with_its_size() {
    let h = harness().await;
    h.write("notes/a.txt", "héllo\n");
    let out = h
        .ok("fs.read_file", json!({"path": "./notes//a.txt"}))
        .await;
    assert_eq!(
        out,
        json!({"path": "notes/a.txt", "encoding": "utf8", "content": "héllo\n", "size_bytes": 7, "truncated": false})
    );
    // What JSON escapes arrives intact (the text travels from the runner as a JSON string).
    let tricky = "quote \" backslash \\ tab \t nul \u{0} bell \u{7} del \u{7f} \u{2028} 😀\r\n";
    h.write("tricky.txt", tricky);
    let out = h.ok("fs.read_file", json!({"path": "tricky.txt"})).await;
    assert_eq!(out["content"], tricky);
    assert_eq!(out["size_bytes"], tricky.len());
}

#[tokio::test]
async fn read_file_returns_base64_for_binary_content() {
    let h = harness().await;
    h.write("bin", [0u8, 159, 146, 150, 255]);
    let out = h.ok("fs.read_file", json!({"path": "bin"})).await;
    assert_eq!(out["encoding"], "base64");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(out["content"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, [0u8, 159, 146, 150, 255]);
}

#[tokio::test]
async fn read_file_truncates_at_max_bytes_and_says_so() {
    let h = harness().await;
    h.write("big.txt", "0123456789");
    let out = h
        .ok("fs.read_file", json!({"path": "big.txt", "max_bytes": 4}))
        .await;
    assert_eq!(out["content"], "0123");
    assert_eq!(out["size_bytes"], 10, "size_bytes is the full file size");
    assert_eq!(out["truncated"], true);
    // A cut inside a multi-byte character keeps the text as text.
    h.write("accents.txt", "aéé");
    let out = h
        .ok(
            "fs.read_file",
            json!({"path": "accents.txt", "max_bytes": 2}),
        )
        .await;
    assert_eq!(out["encoding"], "utf8");
    assert_eq!(out["content"], "a");
    assert_eq!(out["truncated"], true);
}

#[tokio::test]
async fn read_file_refuses_missing_files_directories_and_bad_arguments() {
    let h = harness().await;
    h.write("d/f", "");
    assert_eq!(
        h.code("fs.read_file", json!({"path": "missing.txt"})).await,
        ErrorCode::NotFound
    );
    assert_eq!(
        h.code("fs.read_file", json!({"path": "d"})).await,
        ErrorCode::InvalidArgument
    );
    let missing = h.fail("fs.read_file", json!({})).await;
    assert_eq!(missing.code, ErrorCode::InvalidArgument);
    assert_eq!(missing.message, "args: missing required property \"path\"");
    let unknown = h
        .fail("fs.read_file", json!({"path": "d/f", "pathh": "x"}))
        .await;
    assert_eq!(unknown.message, "args: unknown property \"pathh\"");
    let typed = h.fail("fs.read_file", json!({"path": 7})).await;
    assert_eq!(
        typed.message,
        "args.path: invalid type: integer `7`, expected a string"
    );
    let empty = h.fail("fs.read_file", json!({"path": ""})).await;
    assert_eq!(
        (empty.code, empty.message.as_str()),
        (
            ErrorCode::InvalidArgument,
            "args.path: invalid length 0, expected a workspace-relative path of 1 to 4096 \
             characters"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Paths: escapes, absolute paths, symlinks, allowed_paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn absolute_paths_and_escapes_are_policy_denied_never_re_rooted() {
    let h = harness().await;
    h.write("etc/passwd", "inside");
    for (path, reason) in [
        ("/etc/passwd", "absolute paths are not allowed"),
        ("../outside", "path escapes workspace"),
        ("a/../../b", "path escapes workspace"),
    ] {
        let f = h.fail("fs.read_file", json!({"path": path})).await;
        assert_eq!(
            (f.code, f.message.as_str()),
            (ErrorCode::PolicyDenied, reason),
            "{path}"
        );
    }
    // `..cache` is an ordinary name; unicode names are fine.
    h.write("..cache", "c");
    assert_eq!(
        h.ok("fs.read_file", json!({"path": "..cache"})).await["content"],
        "c"
    );
    h.write("données/日本.txt", "u");
    assert_eq!(
        h.ok("fs.read_file", json!({"path": "données/日本.txt"}))
            .await["content"],
        "u"
    );
}

#[tokio::test]
async fn symlinks_leading_out_of_the_workspace_are_refused_by_the_runner() {
    let h = harness().await;
    let outside = h.dir.path().join("secret.txt");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, h.root.join("link")).unwrap();
    std::os::unix::fs::symlink(h.dir.path(), h.root.join("dirlink")).unwrap();
    assert_eq!(
        h.code("fs.read_file", json!({"path": "link"})).await,
        ErrorCode::PolicyDenied
    );
    assert_eq!(
        h.code("fs.read_file", json!({"path": "dirlink/secret.txt"}))
            .await,
        ErrorCode::PolicyDenied
    );
    let write = h
        .fail(
            "fs.write_file",
            json!({"path": "dirlink/new.txt", "content": "x"}),
        )
        .await;
    assert_eq!(write.code, ErrorCode::PolicyDenied);
    assert!(!h.dir.path().join("new.txt").exists());
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
}

#[tokio::test]
async fn allowed_paths_bound_explicit_and_defaulted_paths() {
    let h = harness_with(&["src"]).await;
    h.write("src/x", "ok");
    h.write("src2/x", "no");
    assert_eq!(
        h.ok("fs.read_file", json!({"path": "src/x"})).await["content"],
        "ok"
    );
    let f = h.fail("fs.read_file", json!({"path": "src2/x"})).await;
    assert_eq!(
        (f.code, f.message.as_str()),
        (ErrorCode::PolicyDenied, "path outside allowed_paths")
    );
    // The default path "." is checked by the handler even though the policy never saw it.
    let f = h.fail("fs.list", json!({})).await;
    assert_eq!(
        (f.code, f.message.as_str()),
        (ErrorCode::PolicyDenied, "path outside allowed_paths")
    );
    assert_eq!(
        h.code("fs.search", json!({"pattern": "o"})).await,
        ErrorCode::PolicyDenied
    );
    assert_eq!(h.ok("fs.list", json!({"path": "src"})).await["count"], 1);
}

// ---------------------------------------------------------------------------------------------
// fs.write_file
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn write_file_writes_utf8_and_base64_content_with_its_sha256() {
    let h = harness().await;
    let out = h
        .ok(
            "fs.write_file",
            json!({"path": "deep/new/a.txt", "content": "hello"}),
        )
        .await;
    assert_eq!(
        out,
        json!({
            "path": "deep/new/a.txt",
            "bytes_written": 5,
            "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        })
    );
    assert_eq!(h.text("deep/new/a.txt"), "hello");
    let out = h
        .ok(
            "fs.write_file",
            json!({"path": "b.bin", "content": "AAEC\n/w==", "encoding": "base64"}),
        )
        .await;
    assert_eq!(out["bytes_written"], 4);
    assert_eq!(h.read("b.bin"), [0, 1, 2, 255]);
    let out = h
        .ok("fs.write_file", json!({"path": "empty", "content": ""}))
        .await;
    assert_eq!(out["bytes_written"], 0);
}

#[tokio::test]
async fn write_file_refuses_bad_content_and_missing_parents() {
    let h = harness().await;
    let missing = h.fail("fs.write_file", json!({"path": "a.txt"})).await;
    assert_eq!(
        missing.message,
        "args: missing required property \"content\""
    );
    let bad = h
        .fail(
            "fs.write_file",
            json!({"path": "a.txt", "content": "!!", "encoding": "base64"}),
        )
        .await;
    assert_eq!(
        (bad.code, bad.message.as_str()),
        (ErrorCode::InvalidArgument, "invalid base64 content")
    );
    assert_eq!(
        h.code(
            "fs.write_file",
            json!({"path": "a.txt", "content": "x", "encoding": "hex"})
        )
        .await,
        ErrorCode::InvalidArgument
    );
    let huge = "x".repeat(1024 * 1024 + 1);
    let big = h
        .fail("fs.write_file", json!({"path": "a.txt", "content": huge}))
        .await;
    assert_eq!(
        (big.code, big.message.as_str()),
        (ErrorCode::InvalidArgument, "content exceeds 1MB limit")
    );
    assert_eq!(
        h.code(
            "fs.write_file",
            json!({"path": "no/parent.txt", "content": "x", "create_parents": false})
        )
        .await,
        ErrorCode::NotFound
    );
    assert!(!h.exists("a.txt"));
}

// ---------------------------------------------------------------------------------------------
// fs.mkdir
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mkdir_creates_directories_with_the_requested_mode() {
    use std::os::unix::fs::PermissionsExt;
    let h = harness().await;
    let out = h.ok("fs.mkdir", json!({"path": "a/b"})).await;
    assert_eq!(out, json!({"path": "a/b", "created": true, "mode": "0755"}));
    for (i, spelling) in ["700", "0700", "0o700"].iter().enumerate() {
        let path = format!("m{i}");
        let out = h
            .ok("fs.mkdir", json!({"path": path, "mode": spelling}))
            .await;
        assert_eq!(out["mode"], "0700");
        let mode = std::fs::metadata(h.root.join(&path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{spelling}");
    }
    let again = h.ok("fs.mkdir", json!({"path": "a/b"})).await;
    assert_eq!(again["created"], false);
}

#[tokio::test]
async fn mkdir_refuses_bad_modes_and_existing_paths_when_asked() {
    let h = harness().await;
    for mode in ["888", "rwx", "07777", "1755", "0x1ed"] {
        assert_eq!(
            h.code("fs.mkdir", json!({"path": "d", "mode": mode})).await,
            ErrorCode::InvalidArgument,
            "{mode}"
        );
    }
    h.ok("fs.mkdir", json!({"path": "d"})).await;
    let exists = h
        .fail("fs.mkdir", json!({"path": "d", "exist_ok": false}))
        .await;
    assert_eq!(exists.code, ErrorCode::ExecutionFailed);
    assert!(
        exists.message.contains("directory already exists"),
        "{}",
        exists.message
    );
    h.write("file", "x");
    let file = h.fail("fs.mkdir", json!({"path": "file"})).await;
    assert_eq!(file.code, ErrorCode::ExecutionFailed);
    assert!(file.message.contains("not a directory"), "{}", file.message);
    assert_eq!(
        h.code("fs.mkdir", json!({"path": "x/y", "create_parents": false}))
            .await,
        ErrorCode::NotFound
    );
}

// ---------------------------------------------------------------------------------------------
// fs.move, fs.copy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn move_renames_and_refuses_an_existing_destination() {
    let h = harness().await;
    h.write("a.txt", "a");
    let out = h
        .ok(
            "fs.move",
            json!({"source_path": "a.txt", "destination_path": "sub/b.txt"}),
        )
        .await;
    assert_eq!(
        out,
        json!({"source_path": "a.txt", "destination_path": "sub/b.txt", "moved": true})
    );
    assert!(!h.exists("a.txt"));
    assert_eq!(h.text("sub/b.txt"), "a");

    let same = h
        .ok(
            "fs.move",
            json!({"source_path": "sub/b.txt", "destination_path": "sub/./b.txt"}),
        )
        .await;
    assert_eq!(same["moved"], false);

    h.write("c.txt", "c");
    let exists = h
        .fail(
            "fs.move",
            json!({"source_path": "c.txt", "destination_path": "sub/b.txt"}),
        )
        .await;
    assert_eq!(exists.code, ErrorCode::ExecutionFailed);
    assert!(exists.message.contains("destination already exists"));
    h.ok(
        "fs.move",
        json!({"source_path": "c.txt", "destination_path": "sub/b.txt", "overwrite": true}),
    )
    .await;
    assert_eq!(h.text("sub/b.txt"), "c");

    assert_eq!(
        h.code(
            "fs.move",
            json!({"source_path": "missing", "destination_path": "x"})
        )
        .await,
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn copy_copies_files_and_trees() {
    let h = harness().await;
    h.write("f.txt", "f");
    h.write("tree/a/b.txt", "b");
    let out = h
        .ok(
            "fs.copy",
            json!({"source_path": "f.txt", "destination_path": "g.txt"}),
        )
        .await;
    assert_eq!(
        out,
        json!({"source_path": "f.txt", "destination_path": "g.txt", "type": "file"})
    );
    assert_eq!(h.text("g.txt"), "f");
    let out = h
        .ok(
            "fs.copy",
            json!({"source_path": "tree", "destination_path": "copy/tree", "recursive": true}),
        )
        .await;
    assert_eq!(out["type"], "dir");
    assert_eq!(h.text("copy/tree/a/b.txt"), "b");
    assert_eq!(h.text("f.txt"), "f", "the source stays");
}

#[tokio::test]
async fn copy_refuses_directories_without_recursive_same_paths_and_missing_sources() {
    let h = harness().await;
    h.write("tree/x", "x");
    h.write("f.txt", "f");
    h.write("g.txt", "g");
    assert_eq!(
        h.code(
            "fs.copy",
            json!({"source_path": "tree", "destination_path": "t2"})
        )
        .await,
        ErrorCode::InvalidArgument
    );
    let same = h
        .fail(
            "fs.copy",
            json!({"source_path": "f.txt", "destination_path": "./f.txt"}),
        )
        .await;
    assert_eq!(
        (same.code, same.message.as_str()),
        (
            ErrorCode::InvalidArgument,
            "source and destination must differ"
        )
    );
    assert_eq!(
        h.code(
            "fs.copy",
            json!({"source_path": "nope", "destination_path": "x"})
        )
        .await,
        ErrorCode::NotFound
    );
    let exists = h
        .fail(
            "fs.copy",
            json!({"source_path": "f.txt", "destination_path": "g.txt"}),
        )
        .await;
    assert_eq!(exists.code, ErrorCode::ExecutionFailed);
    assert_eq!(h.text("g.txt"), "g");
    std::os::unix::fs::symlink("f.txt", h.root.join("link")).unwrap();
    assert_eq!(
        h.code(
            "fs.copy",
            json!({"source_path": "link", "destination_path": "l2"})
        )
        .await,
        ErrorCode::InvalidArgument
    );
}

// ---------------------------------------------------------------------------------------------
// fs.delete
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_removes_files_and_trees() {
    let h = harness().await;
    h.write("f.txt", "f");
    h.write("tree/a/b", "b");
    let out = h.ok("fs.delete", json!({"path": "f.txt"})).await;
    assert_eq!(
        out,
        json!({"path": "f.txt", "deleted": true, "existed": true})
    );
    assert!(!h.exists("f.txt"));
    h.ok("fs.delete", json!({"path": "tree", "recursive": true}))
        .await;
    assert!(!h.exists("tree"));
    let gone = h
        .ok("fs.delete", json!({"path": "tree", "force": true}))
        .await;
    assert_eq!(
        gone,
        json!({"path": "tree", "deleted": false, "existed": false})
    );
}

#[tokio::test]
async fn delete_refuses_directories_without_recursive_the_root_and_missing_paths() {
    let h = harness().await;
    std::fs::create_dir(h.root.join("empty")).unwrap();
    let dir = h.fail("fs.delete", json!({"path": "empty"})).await;
    assert_eq!(dir.code, ErrorCode::InvalidArgument);
    assert!(
        h.exists("empty"),
        "even an empty directory needs recursive=true"
    );
    for root in [".", "a/..", "./"] {
        let f = h
            .fail("fs.delete", json!({"path": root, "recursive": true}))
            .await;
        assert_eq!(
            (f.code, f.message.as_str()),
            (ErrorCode::PolicyDenied, "refusing to delete workspace root"),
            "{root}"
        );
    }
    assert_eq!(
        h.code("fs.delete", json!({"path": "missing"})).await,
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn delete_removes_a_symlink_not_its_target() {
    let h = harness().await;
    h.write("target.txt", "t");
    std::os::unix::fs::symlink("target.txt", h.root.join("link")).unwrap();
    h.ok("fs.delete", json!({"path": "link"})).await;
    assert!(!h.exists("link"));
    assert_eq!(h.text("target.txt"), "t");
}

// ---------------------------------------------------------------------------------------------
// fs.stat
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stat_describes_paths_and_reports_missing_ones_as_not_existing() {
    let h = harness().await;
    h.write("f.txt", "abc");
    std::os::unix::fs::symlink("f.txt", h.root.join("link")).unwrap();
    let out = h.ok("fs.stat", json!({"path": "f.txt"})).await;
    assert_eq!(out["exists"], true);
    assert_eq!(out["type"], "file");
    assert_eq!(out["size_bytes"], 3);
    assert_eq!(out["mode"], "-rw-r--r--");
    let link = h.ok("fs.stat", json!({"path": "link"})).await;
    assert_eq!(link["type"], "symlink");
    assert_eq!(h.ok("fs.stat", json!({"path": "."})).await["type"], "dir");
    let missing = h.ok("fs.stat", json!({"path": "nope"})).await;
    assert_eq!(missing, json!({"path": "nope", "exists": false}));
}

// ---------------------------------------------------------------------------------------------
// fs.search, fs.glob
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn search_finds_matching_lines_and_skips_git() {
    let h = harness().await;
    h.write("src/a.rs", "fn main() {}\nlet x = 1;\nfn helper() {}\n");
    h.write("src/b.txt", "nothing here\n");
    h.write(".git/config", "fn not_me\n");
    let out = h.ok("fs.search", json!({"pattern": "^fn \\w+"})).await;
    assert_eq!(
        out["matches"],
        json!([
            {"path": "src/a.rs", "line": 1, "snippet": "fn main() {}"},
            {"path": "src/a.rs", "line": 3, "snippet": "fn helper() {}"}
        ])
    );
    assert_eq!(out["count"], 2);
    assert_eq!(out["truncated"], false);
    let capped = h
        .ok(
            "fs.search",
            json!({"pattern": "fn", "path": "src", "max_results": 1}),
        )
        .await;
    assert_eq!(capped["count"], 1);
    assert_eq!(capped["truncated"], true);
}

#[tokio::test]
async fn search_refuses_bad_regexes_and_a_missing_pattern() {
    let h = harness().await;
    h.write("a.txt", "x");
    assert_eq!(
        h.code("fs.search", json!({"pattern": "(unclosed"})).await,
        ErrorCode::InvalidArgument
    );
    let f = h.fail("fs.search", json!({"path": "."})).await;
    assert_eq!(f.message, "args: missing required property \"pattern\"");
}

#[tokio::test]
async fn glob_matches_paths_relative_to_its_directory() {
    let h = harness().await;
    h.write("src/a.rs", "");
    h.write("src/deep/b.rs", "");
    h.write("src/c.txt", "");
    h.write("top.rs", "");
    h.write("[odd]/x.rs", "");
    let out = h
        .ok("fs.glob", json!({"pattern": "**/*.rs", "path": "src"}))
        .await;
    assert_eq!(
        out,
        json!({"paths": ["src/a.rs", "src/deep/b.rs"], "count": 2, "truncated": false})
    );
    let top = h.ok("fs.glob", json!({"pattern": "*.rs"})).await;
    assert_eq!(top["paths"], json!(["top.rs"]));
    let odd = h
        .ok("fs.glob", json!({"pattern": "*.rs", "path": "[odd]"}))
        .await;
    assert_eq!(odd["paths"], json!(["[odd]/x.rs"]));
    let capped = h
        .ok("fs.glob", json!({"pattern": "**/*.rs", "max_results": 1}))
        .await;
    assert_eq!(capped["truncated"], true);
    assert_eq!(
        h.code("fs.glob", json!({"pattern": "[unclosed"})).await,
        ErrorCode::InvalidArgument
    );
}

// ---------------------------------------------------------------------------------------------
// fs.patch
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn patch_applies_a_real_diff_with_git() {
    let h = harness().await;
    h.write("hello.txt", "hello\nworld\n");
    let diff = "diff --git a/hello.txt b/hello.txt\n--- a/hello.txt\n+++ b/hello.txt\n@@ -1,2 +1,2 @@\n-hello\n+hello, patched\n world\n\
                --- /dev/null\n+++ b/new/file.txt\n@@ -0,0 +1 @@\n+created\n";
    let out = h.ok("fs.patch", json!({"unified_diff": diff})).await;
    assert_eq!(out["applied"], true);
    assert_eq!(out["strategy"], "reject_on_conflict");
    assert_eq!(out["changed_paths"], json!(["hello.txt", "new/file.txt"]));
    assert_eq!(h.text("hello.txt"), "hello, patched\nworld\n");
    assert_eq!(h.text("new/file.txt"), "created\n");
}

#[tokio::test]
async fn patch_failures_keep_gits_output() {
    let h = harness().await;
    h.write("hello.txt", "something else\n");
    let diff = "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n-hello\n+bye\n";
    let f = h.fail("fs.patch", json!({"unified_diff": diff})).await;
    assert_eq!(f.code, ErrorCode::ExecutionFailed);
    assert!(f.message.starts_with("git apply failed"), "{}", f.message);
    let output = f.output.expect("partial output").to_value().unwrap();
    assert_eq!(output["applied"], false);
    assert!(
        output["output"].as_str().unwrap().contains("hello.txt"),
        "{output}"
    );
    assert!(!f.logs.is_empty());
    assert_ne!(f.exit_code, 0);
    assert_eq!(h.text("hello.txt"), "something else\n", "nothing applied");
}

#[tokio::test]
async fn patch_refuses_paths_that_escape_or_leave_allowed_paths() {
    let h = harness_with(&["src"]).await;
    h.write("src/a.txt", "a\n");
    for (diff, want) in [
        (
            "--- a/src/a.txt\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n",
            ErrorCode::PolicyDenied,
        ),
        (
            "--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n",
            ErrorCode::PolicyDenied,
        ),
        (
            "--- a/lib/a.txt\n+++ b/lib/a.txt\n@@ -1 +1 @@\n-a\n+b\n",
            ErrorCode::PolicyDenied,
        ),
        // A deletion names its file only in the old header.
        (
            "--- a/lib/a.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n",
            ErrorCode::PolicyDenied,
        ),
        ("just some text\n", ErrorCode::InvalidArgument),
    ] {
        assert_eq!(
            h.code("fs.patch", json!({"unified_diff": diff})).await,
            want,
            "{diff}"
        );
    }
    let outside = h
        .fail(
            "fs.patch",
            json!({"unified_diff": "--- a/lib/x\n+++ b/lib/x\n@@ -1 +1 @@\n-a\n+b\n"}),
        )
        .await;
    assert_eq!(outside.message, "patch touches paths outside allowed_paths");
    assert_eq!(h.text("src/a.txt"), "a\n");
    assert_eq!(
        h.code(
            "fs.patch",
            json!({"unified_diff": "--- a/src/a.txt\n", "strategy": "merge"})
        )
        .await,
        ErrorCode::InvalidArgument
    );
}

// ---------------------------------------------------------------------------------------------
// .git is protected; git runs hardened
// ---------------------------------------------------------------------------------------------

/// A trusted git on the host, to set up repositories the way a developer would.
fn host_git(root: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(root)
        .env_clear()
        .env("PATH", crate::runner::server::EXEC_PATH)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A workspace that is a git repository with `hello.txt` committed.
async fn repository_harness() -> Harness {
    let h = harness().await;
    h.write("hello.txt", "hello\nworld\n");
    host_git(&h.root, &["init", "-q", "-b", "main"]);
    host_git(
        &h.root,
        &["-c", "user.name=a", "-c", "user.email=a@b", "add", "."],
    );
    host_git(
        &h.root,
        &[
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@b",
            "commit",
            "-qm",
            "init",
        ],
    );
    h
}

const PROTECTED: &str =
    "path is inside .git, a protected path: file tools never write there (the git tools own it)";

#[tokio::test]
async fn file_tools_never_write_inside_git_but_may_read_it() {
    let h = repository_harness().await;
    let config = h.text(".git/config");
    let hook = "#!/bin/sh\ntouch pwned\n";
    for (tool, args) in [
        (
            "fs.write_file",
            json!({"path": ".git/config", "content": "[core]\n"}),
        ),
        (
            "fs.write_file",
            json!({"path": "./.git/hooks/pre-commit", "content": hook}),
        ),
        (
            "fs.write_file",
            json!({"path": "src/../.git/info/attributes", "content": "*"}),
        ),
        (
            "fs.write_file",
            json!({"path": "vendor/lib/.git", "content": "gitdir: /x"}),
        ),
        (
            "fs.write_file",
            json!({"path": ".GIT/config", "content": "x"}),
        ),
        (
            "fs.edit",
            json!({"path": ".git/config", "old_string": "[core]", "new_string": "[x]"}),
        ),
        (
            "fs.insert",
            json!({"path": ".git/config", "line": 1, "content": "[x]"}),
        ),
        ("fs.mkdir", json!({"path": ".git/hooks/more"})),
        (
            "fs.move",
            json!({"source_path": "hello.txt", "destination_path": ".git/hooks/post-checkout"}),
        ),
        (
            "fs.move",
            json!({"source_path": ".git", "destination_path": "old-git"}),
        ),
        (
            "fs.move",
            json!({"source_path": ".git/config", "destination_path": "config"}),
        ),
        (
            "fs.copy",
            json!({"source_path": "hello.txt", "destination_path": ".git/hooks/pre-commit"}),
        ),
        ("fs.delete", json!({"path": ".git/index"})),
        ("fs.delete", json!({"path": ".git", "recursive": true})),
    ] {
        let f = h.fail(tool, args.clone()).await;
        assert_eq!(f.code, ErrorCode::PolicyDenied, "{tool} {args}");
        assert_eq!(f.message, PROTECTED, "{tool} {args}");
    }
    assert_eq!(h.text(".git/config"), config);
    assert!(!h.exists(".git/hooks/pre-commit") && !h.exists("old-git"));
    // Reading and copying out of .git are reads.
    let out = h.ok("fs.read_file", json!({"path": ".git/config"})).await;
    assert_eq!(out["content"], config);
    h.ok(
        "fs.copy",
        json!({"source_path": ".git/config", "destination_path": "config.txt"}),
    )
    .await;
    assert_eq!(h.text("config.txt"), config);
    // The files git reads from the working tree are ordinary files.
    for name in [".gitattributes", ".gitmodules", ".gitignore"] {
        h.ok(
            "fs.write_file",
            json!({"path": name, "content": "* filter=x\n"}),
        )
        .await;
    }
}

#[tokio::test]
async fn the_runner_refuses_writes_that_reach_git_through_a_symlink() {
    let h = repository_harness().await;
    std::os::unix::fs::symlink(".git", h.root.join("g")).unwrap();
    std::os::unix::fs::symlink(".git/config", h.root.join("config-link")).unwrap();
    std::fs::create_dir(h.root.join("d")).unwrap();
    std::os::unix::fs::symlink("../.git/hooks", h.root.join("d/hooks")).unwrap();
    let config = h.text(".git/config");
    for (tool, args) in [
        (
            "fs.write_file",
            json!({"path": "g/config", "content": "[core]\n"}),
        ),
        (
            "fs.write_file",
            json!({"path": "config-link", "content": "[core]\n"}),
        ),
        (
            "fs.write_file",
            json!({"path": "d/hooks/pre-commit", "content": "x"}),
        ),
        (
            "fs.write_file",
            json!({"path": "g/hooks/new/deeper/x", "content": "x"}),
        ),
        (
            "fs.edit",
            json!({"path": "config-link", "old_string": "[core]", "new_string": "[x]"}),
        ),
        ("fs.mkdir", json!({"path": "g/hooks/more"})),
        (
            "fs.move",
            json!({"source_path": "hello.txt", "destination_path": "g/hello.txt"}),
        ),
        (
            "fs.move",
            json!({"source_path": "g/config", "destination_path": "c"}),
        ),
        (
            "fs.copy",
            json!({"source_path": "hello.txt", "destination_path": "d/hooks/post-checkout"}),
        ),
        ("fs.delete", json!({"path": "g/index"})),
    ] {
        let f = h.fail(tool, args.clone()).await;
        assert_eq!(f.code, ErrorCode::PolicyDenied, "{tool} {args}");
        assert!(
            f.message.contains("is inside .git, a protected path"),
            "{tool}: {}",
            f.message
        );
    }
    assert_eq!(h.text(".git/config"), config);
    assert!(!h.exists(".git/hooks/new") && !h.exists(".git/hooks/more"));
    assert!(!h.exists(".git/hooks/pre-commit") && !h.exists(".git/hooks/post-checkout"));
    assert!(h.exists(".git/index"));
    // The links themselves are ordinary entries: removing one leaves .git alone.
    h.ok("fs.delete", json!({"path": "g"})).await;
    assert!(h.exists(".git/config"));
    // A tree holding a repository is not copied (the copy would be a .git).
    h.write("nested/.git/config", "[core]\n");
    let f = h
        .fail(
            "fs.copy",
            json!({"source_path": "nested", "destination_path": "n2", "recursive": true}),
        )
        .await;
    assert_eq!(f.code, ErrorCode::PolicyDenied, "{}", f.message);
    assert!(!h.exists("n2"));
}

/// Writes a smudge filter into `.git/config` on disk (as a copied repository would have it)
/// and selects it for every file; returns the marker the filter would create.
fn plant_smudge_filter(h: &Harness) -> PathBuf {
    let marker = h.dir.path().join("smudged");
    let mut config = h.text(".git/config");
    config.push_str(&format!(
        "[filter \"x\"]\n\tsmudge = touch '{}'; cat\n\tclean = cat\n",
        marker.display()
    ));
    h.write(".git/config", config);
    h.write(".gitattributes", "* filter=x\n");
    marker
}

#[tokio::test]
async fn patch_never_runs_a_filter_of_the_repository_with_either_strategy() {
    let h = repository_harness().await;
    let marker = plant_smudge_filter(&h);
    let diff = "diff --git a/hello.txt b/hello.txt\nindex ce01362..94954ab 100644\n--- a/hello.txt\n+++ b/hello.txt\n@@ -1,2 +1,2 @@\n-hello\n+hello, patched\n world\n";
    for strategy in ["reject_on_conflict", "apply"] {
        h.write("hello.txt", "hello\nworld\n");
        // A three-way apply also updates the index, which must match the file again.
        host_git(
            &h.root,
            &["-c", "filter.x.smudge=", "update-index", "-q", "--refresh"],
        );
        let out = h
            .ok(
                "fs.patch",
                json!({"unified_diff": diff, "strategy": strategy}),
            )
            .await;
        assert_eq!(out["applied"], true, "{strategy}: {out}");
        assert_eq!(h.text("hello.txt"), "hello, patched\nworld\n", "{strategy}");
        assert!(!marker.exists(), "{strategy}: the repository's filter ran");
    }
}

#[tokio::test]
async fn patch_refuses_git_paths_redirected_repositories_and_includes() {
    let h = repository_harness().await;
    for diff in [
        "--- a/.git/config\n+++ b/.git/config\n@@ -1 +1 @@\n-a\n+b\n",
        "--- /dev/null\n+++ b/.git/hooks/post-applypatch\n@@ -0,0 +1 @@\n+touch x\n",
        "diff --git a/x b/sub/.git/config\nsimilarity index 100%\nrename from x\nrename to sub/.git/config\n",
    ] {
        let f = h.fail("fs.patch", json!({"unified_diff": diff})).await;
        assert_eq!(f.code, ErrorCode::PolicyDenied, "{diff}");
        assert!(f.message.contains("protected path"), "{}", f.message);
    }
    let diff = "--- a/hello.txt\n+++ b/hello.txt\n@@ -1,2 +1,2 @@\n-hello\n+bye\n world\n";
    // An include could name a file in the working tree: the three-way apply refuses it.
    let mut config = h.text(".git/config");
    config.push_str("[include]\n\tpath = ../extra.cfg\n");
    h.write(".git/config", &config);
    let f = h
        .fail(
            "fs.patch",
            json!({"unified_diff": diff, "strategy": "apply"}),
        )
        .await;
    assert_eq!(f.code, ErrorCode::PolicyDenied);
    assert!(f.message.contains("include.path"), "{}", f.message);
    // A .git file points git at a repository elsewhere.
    std::fs::rename(h.root.join(".git"), h.dir.path().join("real-git")).unwrap();
    h.write(
        ".git",
        format!("gitdir: {}\n", h.dir.path().join("real-git").display()),
    );
    let f = h
        .fail(
            "fs.patch",
            json!({"unified_diff": diff, "strategy": "apply"}),
        )
        .await;
    assert_eq!(f.code, ErrorCode::PolicyDenied);
    assert!(
        f.message.starts_with(".git is not a directory"),
        "{}",
        f.message
    );
    // Without --3way no repository is used, so the plain apply still works.
    h.ok("fs.patch", json!({"unified_diff": diff})).await;
    assert_eq!(h.text("hello.txt"), "bye\nworld\n");
}

// ---------------------------------------------------------------------------------------------
// fs.edit, fs.insert, fs.read_lines
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn edit_replaces_exactly_one_occurrence_or_all_when_asked() {
    let h = harness().await;
    h.write("a.rs", "fn old() {}\nfn other() {}\n");
    let out = h
        .ok(
            "fs.edit",
            json!({"path": "a.rs", "old_string": "fn old()", "new_string": "fn new()"}),
        )
        .await;
    assert_eq!(out["replacements"], 1);
    assert_eq!(h.text("a.rs"), "fn new() {}\nfn other() {}\n");
    assert_eq!(out["bytes_written"], h.read("a.rs").len());
    let all = h
        .ok("fs.edit", json!({"path": "a.rs", "old_string": "fn ", "new_string": "pub fn ", "replace_all": true}))
        .await;
    assert_eq!(all["replacements"], 2);
    assert_eq!(h.text("a.rs"), "pub fn new() {}\npub fn other() {}\n");
}

#[tokio::test]
async fn undo_edit_puts_back_what_edit_insert_and_write_file_changed_once_each() {
    let h = harness().await;
    h.write("a.txt", "one\n");
    h.ok(
        "fs.edit",
        json!({"path": "a.txt", "old_string": "one", "new_string": "two"}),
    )
    .await;
    let undone = h
        .ok("workspace.undo_edit", json!({"path": "./a.txt"}))
        .await;
    assert_eq!(h.text("a.txt"), "one\n");
    assert_eq!(undone["deleted"], false);
    assert_eq!(undone["sha256"], super::sha256_hex(b"one\n"));
    // Used once.
    let again = h
        .fail("workspace.undo_edit", json!({"path": "a.txt"}))
        .await;
    assert_eq!(again.code, ErrorCode::NotFound, "{}", again.message);

    h.ok(
        "fs.insert",
        json!({"path": "a.txt", "line": 1, "content": "zero"}),
    )
    .await;
    assert_eq!(h.text("a.txt"), "zero\none\n");
    // A failed edit takes no snapshot: the insert's is still there.
    h.fail(
        "fs.edit",
        json!({"path": "a.txt", "old_string": "absent", "new_string": "x"}),
    )
    .await;
    h.ok("workspace.undo_edit", json!({"path": "a.txt"})).await;
    assert_eq!(h.text("a.txt"), "one\n");

    h.ok(
        "fs.write_file",
        json!({"path": "new/b.txt", "content": "b"}),
    )
    .await;
    let removed = h
        .ok("workspace.undo_edit", json!({"path": "new/b.txt"}))
        .await;
    assert_eq!(removed["deleted"], true);
    assert_eq!(removed["sha256"], Value::Null);
    assert!(!h.root.join("new/b.txt").exists());
    // Nothing of the snapshots is in the workspace.
    let mut names: Vec<String> = tree_names(&h.root);
    names.sort();
    assert_eq!(names, ["a.txt", "new"]);
}

fn tree_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn edit_refuses_ambiguous_and_absent_strings_and_missing_files() {
    let h = harness().await;
    h.write("a.txt", "x x x\n");
    let ambiguous = h
        .fail(
            "fs.edit",
            json!({"path": "a.txt", "old_string": "x", "new_string": "y"}),
        )
        .await;
    assert_eq!(
        (ambiguous.code, ambiguous.message.as_str()),
        (
            ErrorCode::ExecutionFailed,
            "old_string is ambiguous: 3 matches; add context or set replace_all"
        )
    );
    let absent = h
        .fail(
            "fs.edit",
            json!({"path": "a.txt", "old_string": "z", "new_string": "y"}),
        )
        .await;
    assert_eq!(
        (absent.code, absent.message.as_str()),
        (ErrorCode::ExecutionFailed, "old_string not found")
    );
    assert_eq!(h.text("a.txt"), "x x x\n");
    assert_eq!(
        h.code(
            "fs.edit",
            json!({"path": "nope.txt", "old_string": "x", "new_string": "y"})
        )
        .await,
        ErrorCode::NotFound
    );
    assert_eq!(
        h.code(
            "fs.edit",
            json!({"path": "a.txt", "old_string": "", "new_string": "y"})
        )
        .await,
        ErrorCode::InvalidArgument
    );
    h.write("big.txt", vec![b'a'; 1024 * 1024 + 1]);
    let big = h
        .fail(
            "fs.edit",
            json!({"path": "big.txt", "old_string": "a", "new_string": "b"}),
        )
        .await;
    assert_eq!(big.code, ErrorCode::ExecutionFailed);
    assert!(big.message.starts_with("file too large to edit"));
}

#[tokio::test]
async fn insert_adds_lines_before_a_line_or_at_the_end() {
    let h = harness().await;
    h.write("a.txt", "one\nthree\n");
    let out = h
        .ok(
            "fs.insert",
            json!({"path": "a.txt", "line": 2, "content": "two"}),
        )
        .await;
    assert_eq!(out["inserted_lines"], 1);
    assert_eq!(h.text("a.txt"), "one\ntwo\nthree\n");
    assert_eq!(out["bytes_written"], 14);
    h.ok(
        "fs.insert",
        json!({"path": "a.txt", "line": 0, "content": "four\nfive\n"}),
    )
    .await;
    assert_eq!(h.text("a.txt"), "one\ntwo\nthree\nfour\nfive\n");
    h.ok(
        "fs.insert",
        json!({"path": "a.txt", "line": 6, "content": "six"}),
    )
    .await;
    h.ok(
        "fs.insert",
        json!({"path": "a.txt", "line": 1, "content": "zero\n"}),
    )
    .await;
    assert_eq!(h.text("a.txt"), "zero\none\ntwo\nthree\nfour\nfive\nsix\n");
}

#[tokio::test]
async fn insert_refuses_out_of_range_lines_and_missing_files() {
    let h = harness().await;
    h.write("a.txt", "one\n");
    let f = h
        .fail(
            "fs.insert",
            json!({"path": "a.txt", "line": 3, "content": "x"}),
        )
        .await;
    assert_eq!(f.code, ErrorCode::InvalidArgument);
    assert!(f.message.contains("out of range"), "{}", f.message);
    assert_eq!(h.text("a.txt"), "one\n");
    assert_eq!(
        h.code(
            "fs.insert",
            json!({"path": "nope", "line": 1, "content": "x"})
        )
        .await,
        ErrorCode::NotFound
    );
    assert_eq!(
        h.code("fs.insert", json!({"path": "a.txt", "content": "x"}))
            .await,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        h.code(
            "fs.insert",
            json!({"path": "a.txt", "line": -1, "content": "x"})
        )
        .await,
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn read_lines_returns_a_numbered_range() {
    let h = harness().await;
    let text: String = (1..=10).map(|i| format!("line {i}\r\n")).collect();
    h.write("a.txt", text);
    let out = h
        .ok(
            "fs.read_lines",
            json!({"path": "a.txt", "start_line": 3, "end_line": 4}),
        )
        .await;
    assert_eq!(
        out,
        json!({
            "path": "a.txt", "start_line": 3, "end_line": 4, "total_lines": 10,
            "lines": [{"number": 3, "text": "line 3"}, {"number": 4, "text": "line 4"}],
            "truncated": false
        })
    );
    let capped = h
        .ok("fs.read_lines", json!({"path": "a.txt", "max_lines": 3}))
        .await;
    assert_eq!(capped["end_line"], 3);
    assert_eq!(capped["truncated"], true);
    let past = h
        .ok("fs.read_lines", json!({"path": "a.txt", "start_line": 20}))
        .await;
    assert_eq!(past["lines"], json!([]));
    assert_eq!(past["truncated"], false);
    assert_eq!(
        h.code("fs.read_lines", json!({"path": "nope"})).await,
        ErrorCode::NotFound
    );
    assert_eq!(
        h.code(
            "fs.read_lines",
            json!({"path": "a.txt", "start_line": 5, "end_line": 4})
        )
        .await,
        ErrorCode::InvalidArgument
    );
}

// ---------------------------------------------------------------------------------------------
// Runner failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_runner_is_unavailable_without_host_paths() {
    let h = harness().await;
    let missing = h.dir.path().join("gone.sock");
    let ctx = h.context("fs.stat", &missing);
    let f = h
        .invoke_with(ctx, "fs.stat", json!({"path": "a"}))
        .await
        .unwrap_err();
    assert_eq!(
        (f.code, f.message.as_str()),
        (ErrorCode::Unavailable, "session runner unavailable")
    );
}

#[tokio::test]
async fn an_expired_deadline_is_a_timeout_with_exit_code_124() {
    let h = harness().await;
    let mut ctx = h.context("fs.stat", &h.socket);
    ctx.deadline = Instant::now();
    let f = h
        .invoke_with(ctx, "fs.stat", json!({"path": "a"}))
        .await
        .unwrap_err();
    assert_eq!((f.code, f.exit_code), (ErrorCode::Timeout, 124));
}

// ---------------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------------

#[test]
fn modes_render_like_go_file_modes() {
    assert_eq!(mode_string(EntryType::File, 0o644), "-rw-r--r--");
    assert_eq!(mode_string(EntryType::Dir, 0o755), "drwxr-xr-x");
    assert_eq!(mode_string(EntryType::Symlink, 0o777), "Lrwxrwxrwx");
    assert_eq!(mode_string(EntryType::Dir, 0o1777), "dtrwxrwxrwx");
    assert_eq!(mode_string(EntryType::File, 0o4755), "urwxr-xr-x");
    assert_eq!(mode_string(EntryType::Other, 0o600), "?rw-------");
}

#[test]
fn modes_parse_in_three_spellings() {
    for raw in ["755", "0755", "0o755", "0O755"] {
        assert_eq!(parse_mode(raw).unwrap(), 0o755, "{raw}");
    }
    for raw in ["", "0o", "9", "75a", "0x1ed", "00000", "1000", "-755"] {
        assert!(parse_mode(raw).is_err(), "{raw}");
    }
}

#[test]
fn content_encodings_decode_and_encode() {
    assert_eq!(
        decode_content("héllo", Encoding::Utf8).unwrap(),
        "héllo".as_bytes()
    );
    assert_eq!(decode_content("aGk=\r\n", Encoding::Base64).unwrap(), b"hi");
    assert!(decode_content("aGk", Encoding::Base64).is_err());
    // Only the two encodings parse at all.
    assert!(serde_json::from_value::<Encoding>(json!("latin1")).is_err());
    assert_eq!(
        encode_content(b"ok".to_vec(), false),
        (Encoding::Utf8, "ok".to_owned())
    );
    assert_eq!(encode_content(vec![0xff], false).0, Encoding::Base64);
    // Invalid bytes in the middle stay base64 even when truncated.
    assert_eq!(
        encode_content(vec![b'a', 0xff, b'b'], true).0,
        Encoding::Base64
    );
    assert_eq!(
        encode_content("é".as_bytes()[..1].to_vec(), true),
        (Encoding::Utf8, String::new())
    );
}

#[test]
fn diff_paths_come_from_headers_only() {
    let diff = "diff --git a/x.txt b/x.txt\n--- a/x.txt\n+++ b/x.txt\n@@ -1,3 +1,3 @@\n--- not a header\n+++ b/also/not\n context\n";
    assert_eq!(diff_paths(diff).unwrap(), ["x.txt"]);
    let rename = "diff --git a/old name.txt b/new.txt\nsimilarity index 100%\nrename from old name.txt\nrename to new.txt\n";
    assert_eq!(diff_paths(rename).unwrap(), ["old name.txt", "new.txt"]);
    let quoted = "--- \"a/caf\\303\\251.txt\"\n+++ \"b/caf\\303\\251.txt\"\n@@ -1 +1 @@\n-a\n+b\n";
    assert_eq!(diff_paths(quoted).unwrap(), ["café.txt"]);
    let timestamped =
        "--- a/f.c\t2024-01-01 00:00:00\n+++ b/f.c\t2024-01-02 00:00:00\n@@ -1 +1 @@\n-a\n+b\n";
    assert_eq!(diff_paths(timestamped).unwrap(), ["f.c"]);
    let binary = "diff --git a/img.png b/img.png\nindex 1..2 100644\nGIT binary patch\nliteral 1\n";
    assert_eq!(diff_paths(binary).unwrap(), ["img.png"]);
}

#[test]
fn diff_paths_refuse_escapes_absolute_paths_and_non_diffs() {
    let denied = |d: &str| matches!(diff_paths(d), Err(DiffRefusal::Denied(_)));
    let invalid = |d: &str| matches!(diff_paths(d), Err(DiffRefusal::Invalid(_)));
    assert!(denied("--- a/x\n+++ b/../x\n"));
    assert!(denied("+++ b/a/../../x\n"));
    assert!(denied("--- /etc/passwd\n+++ b/x\n"));
    assert!(denied("diff --git a/x b/../../x\n"));
    assert!(denied("rename from ../x\n"));
    assert!(invalid("hello\n"));
    assert!(invalid("+++ b/\n"), "the workspace root is not a file");
    assert!(invalid("+++ noprefix\n"));
    assert!(invalid("--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\nzzz\n"));
    assert!(
        invalid("diff --git \"a/x\\q\" \"b/x\"\n+++ b/x\n"),
        "an unknown escape"
    );
}

#[test]
fn exact_replacement_counts_occurrences() {
    assert_eq!(
        replace_exact("a b a", "b", "c", false).unwrap().content,
        "a c a"
    );
    let all = replace_exact("a b a", "a", "x", true).unwrap();
    assert_eq!((all.content.as_str(), all.replacements), ("x b x", 2));
    assert_eq!(
        replace_exact("a b a", "a", "x", false).unwrap_err().message,
        "old_string is ambiguous: 2 matches; add context or set replace_all"
    );
    assert_eq!(
        replace_exact("aaa", "aa", "b", true).unwrap().replacements,
        1,
        "non-overlapping"
    );
}

#[test]
fn inserted_lines_never_join_existing_ones() {
    assert_eq!(insert_lines(b"", 0, "x").unwrap(), (b"x\n".to_vec(), 1));
    assert_eq!(insert_lines(b"", 1, "x").unwrap(), (b"x\n".to_vec(), 1));
    assert_eq!(insert_lines(b"a", 0, "b").unwrap(), (b"a\nb\n".to_vec(), 1));
    assert_eq!(
        insert_lines(b"a\nb", 2, "x\ny").unwrap(),
        (b"a\nx\ny\nb".to_vec(), 2)
    );
    assert_eq!(insert_lines(b"a\nb", 3, "c").unwrap().0, b"a\nb\nc\n");
    assert!(insert_lines(b"a\nb", 4, "c").is_err());
    assert_eq!(insert_lines(b"a\n", 1, "").unwrap(), (b"a\n".to_vec(), 0));
}

#[test]
fn line_selection_handles_ranges_caps_and_cut_windows() {
    let r = select_lines(b"a\nb\nc", false, 2, None, 10);
    assert_eq!((r.end_line, r.total_lines, r.truncated), (3, 3, false));
    assert_eq!(r.lines, [(2, "b".to_owned()), (3, "c".to_owned())]);
    let empty = select_lines(b"", false, 1, None, 10);
    assert_eq!(
        (empty.end_line, empty.total_lines, empty.lines.len()),
        (0, 0, 0)
    );
    let capped = select_lines(b"a\nb\nc\n", false, 1, Some(3), 2);
    assert_eq!((capped.end_line, capped.truncated), (2, true));
    // A cut window: the partial last line is dropped and reaching it is truncation.
    let cut = select_lines(b"a\nb\npart", true, 1, None, 10);
    assert_eq!((cut.total_lines, cut.end_line, cut.truncated), (2, 2, true));
    let inside = select_lines(b"a\nb\npart", true, 1, Some(1), 10);
    assert!(!inside.truncated);
}

#[test]
fn glob_patterns_are_anchored_under_their_directory() {
    assert_eq!(glob_under(".", "**/*.rs").unwrap(), "**/*.rs");
    assert_eq!(glob_under("src", "./*.rs").unwrap(), "src/*.rs");
    assert_eq!(glob_under("[a]{b}", "*").unwrap(), "\\[a\\]\\{b\\}/*");
    assert!(glob_under(".", "/etc/*").is_err());
}

// ---------------------------------------------------------------------------------------------
// Metadata: the reference table of the original catalog
// ---------------------------------------------------------------------------------------------

fn spec(name: &str) -> ToolSpec {
    Catalog::builtin()
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not registered"))
        .spec()
        .clone()
}

fn all() -> Vec<ToolSpec> {
    ROWS.iter().map(|row| spec(row.0)).collect()
}

/// (name, risk, approval, side effects, idempotency, timeout, required, optional, path_fields)
type Row = (
    &'static str,
    RiskLevel,
    bool,
    SideEffects,
    Idempotency,
    u64,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const ROWS: &[Row] = {
    use Idempotency::{BestEffort as B, Guaranteed as G};
    use RiskLevel::{High, Low, Medium};
    use SideEffects::{Irreversible as I, None as N, Reversible as R};
    &[
        (
            "fs.list",
            Low,
            false,
            N,
            G,
            15,
            &[],
            &["path", "recursive", "max_entries"],
            &["path"],
        ),
        (
            "fs.read_file",
            Low,
            false,
            N,
            G,
            20,
            &["path"],
            &["max_bytes"],
            &["path"],
        ),
        (
            "fs.write_file",
            Medium,
            true,
            R,
            B,
            20,
            &["path", "content"],
            &["encoding", "create_parents"],
            &["path"],
        ),
        (
            "fs.mkdir",
            Medium,
            false,
            R,
            B,
            20,
            &["path"],
            &["create_parents", "mode", "exist_ok"],
            &["path"],
        ),
        (
            "fs.move",
            Medium,
            false,
            R,
            B,
            20,
            &["source_path", "destination_path"],
            &["overwrite", "create_parents"],
            &["source_path", "destination_path"],
        ),
        (
            "fs.copy",
            Medium,
            false,
            R,
            B,
            25,
            &["source_path", "destination_path"],
            &["recursive", "overwrite", "create_parents"],
            &["source_path", "destination_path"],
        ),
        (
            "fs.delete",
            High,
            true,
            I,
            B,
            20,
            &["path"],
            &["recursive", "force"],
            &["path"],
        ),
        ("fs.stat", Low, false, N, G, 15, &["path"], &[], &["path"]),
        (
            "fs.patch",
            Medium,
            true,
            R,
            B,
            45,
            &["unified_diff"],
            &["strategy"],
            &[],
        ),
        (
            "fs.search",
            Low,
            false,
            N,
            G,
            30,
            &["pattern"],
            &["path", "max_results"],
            &["path"],
        ),
        (
            "fs.edit",
            Medium,
            true,
            R,
            B,
            20,
            &["path", "old_string", "new_string"],
            &["replace_all"],
            &["path"],
        ),
        (
            "fs.insert",
            Medium,
            true,
            R,
            B,
            20,
            &["path", "line", "content"],
            &[],
            &["path"],
        ),
        (
            "fs.glob",
            Low,
            false,
            N,
            G,
            20,
            &["pattern"],
            &["path", "max_results"],
            &["path"],
        ),
        (
            "fs.read_lines",
            Low,
            false,
            N,
            G,
            20,
            &["path"],
            &["start_line", "end_line", "max_lines"],
            &["path"],
        ),
    ]
};

#[test]
fn metadata_matches_the_reference_table() {
    let specs = all();
    assert_eq!(specs.len(), ROWS.len());
    for (spec, row) in specs.iter().zip(ROWS) {
        let (name, risk, approval, effects, idem, timeout, required, optional, paths) = *row;
        assert_eq!(spec.name, name);
        assert_eq!(spec.scope, Scope::Workspace, "{name}");
        assert_eq!(spec.risk_level, risk, "{name}");
        assert_eq!(spec.requires_approval, approval, "{name}");
        assert_eq!(spec.side_effects, effects, "{name}");
        assert_eq!(spec.idempotency, idem, "{name}");
        assert_eq!(spec.constraints.timeout_seconds, timeout, "{name}");
        let mut want_required: Vec<&str> = required.to_vec();
        want_required.sort_unstable();
        // schemars leaves `required` out when nothing is required.
        let mut got_required: Vec<&str> = spec.input_schema["required"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        got_required.sort_unstable();
        assert_eq!(got_required, want_required, "{name}: required");
        let mut want_all: Vec<&str> = required.iter().chain(optional).copied().collect();
        want_all.sort_unstable();
        let mut got_all: Vec<&str> = spec.input_schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        got_all.sort_unstable();
        assert_eq!(got_all, want_all, "{name}: properties");
        // Path fields come from the schema, whose members are sorted by name.
        let got_paths: Vec<&str> = spec
            .policy
            .path_fields
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        let mut want_paths = paths.to_vec();
        want_paths.sort_unstable();
        assert_eq!(got_paths, want_paths, "{name}: path_fields");
        assert!(
            spec.policy
                .path_fields
                .iter()
                .all(|f| !f.multi && f.workspace_relative)
        );
        assert!(spec.policy.arg_fields.is_empty(), "{name}");
    }
}

#[test]
fn enumerations_and_counts_are_typed() {
    let write = spec("fs.write_file");
    assert_eq!(
        write.input_schema["properties"]["encoding"]["enum"],
        json!(["utf8", "base64"])
    );
    let patch = spec("fs.patch");
    assert_eq!(
        patch.input_schema["properties"]["strategy"]["enum"],
        json!(["reject_on_conflict", "apply"])
    );
    for (spec, field) in [
        (spec("fs.list"), "max_entries"),
        (spec("fs.read_file"), "max_bytes"),
        (spec("fs.search"), "max_results"),
        (spec("fs.glob"), "max_results"),
        (spec("fs.read_lines"), "max_lines"),
        (spec("fs.read_lines"), "start_line"),
    ] {
        let p = &spec.input_schema["properties"][field];
        assert_eq!(p["type"], "integer", "{} {field}", spec.name);
        assert_eq!(p["minimum"], 1, "{} {field}", spec.name);
    }
}

#[test]
fn written_path_fields_are_declared_and_no_fs_tool_runs_repository_code() {
    fn written(spec: &ToolSpec) -> Vec<&str> {
        spec.policy
            .path_fields
            .iter()
            .filter(|f| f.writes)
            .map(|f| f.field.as_str())
            .collect()
    }
    for spec in all() {
        assert!(!spec.runs_repository_code, "{}", spec.name);
        let want: &[&str] = match spec.name {
            "fs.write_file" | "fs.mkdir" | "fs.delete" | "fs.edit" | "fs.insert" => &["path"],
            "fs.move" => &["destination_path", "source_path"],
            "fs.copy" => &["destination_path"],
            // fs.patch has no path fields: its handler checks the diff's paths.
            _ => &[],
        };
        assert_eq!(written(&spec), want, "{}", spec.name);
    }
    let json = serde_json::to_value(spec("fs.write_file")).unwrap();
    assert_eq!(json["runs_repository_code"], false);
    assert_eq!(json["policy"]["path_fields"][0]["writes"], true);
}
