//! The runner role over a real socket and a real bubblewrap sandbox.
//!
//! Every test here starts the real `workspace` binary as a session runner inside `bwrap` and
//! drives it through the same client the executors use. A host without bubblewrap fails these
//! tests with an install hint; they never skip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use workspace::ids::SessionId;
use workspace::runner::limits::SandboxLimits;
use workspace::runner::protocol::{
    Bytes, EntryType, PROTOCOL_VERSION, Reply, Request, RunnerErrorCode,
};
use workspace::runner::sandbox::{
    HostIdentity, LocalSandboxConfig, LocalSandboxProvider, SANDBOX_UID, SandboxMode,
};
use workspace::runner::{RunnerProvider, SandboxSpec, SessionRunner};

const CALL: Duration = Duration::from_secs(20);

/// Fails loudly when bubblewrap is missing: these tests are the proof of isolation.
fn require_bwrap() {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("bwrap").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "bubblewrap (bwrap) is not installed, and the runner tests need a real sandbox: \
         apt-get install bubblewrap"
    );
}

/// A provider over a temporary directory holding the workspace, a directory outside it and the
/// socket directories, with one started session.
struct Sandbox {
    dir: tempfile::TempDir,
    provider: LocalSandboxProvider,
    session: SessionId,
    runner: Arc<dyn SessionRunner>,
}

impl Sandbox {
    async fn start(mode: SandboxMode) -> Self {
        Self::start_with(mode, |_, _| {}).await
    }

    /// Starts a sandbox whose provider configuration (and workspace, given as the second
    /// argument) the test prepares first.
    async fn start_with(
        mode: SandboxMode,
        prepare: impl FnOnce(&mut LocalSandboxConfig, &Path),
    ) -> Self {
        if mode == SandboxMode::Bubblewrap {
            require_bwrap();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("ws")).expect("ws");
        std::fs::create_dir(dir.path().join("outside")).expect("outside");
        std::fs::write(dir.path().join("outside/secret"), b"outside secret").expect("secret");
        let mut config = LocalSandboxConfig {
            mode,
            runner_exe: PathBuf::from(env!("CARGO_BIN_EXE_workspace")),
            bwrap: PathBuf::from("bwrap"),
            run_dir: dir.path().join("run"),
            start_timeout: Duration::from_secs(20),
            sandbox_user: HostIdentity::default(),
            limits: SandboxLimits::default(),
            toolchains: Default::default(),
        };
        prepare(&mut config, &dir.path().join("ws"));
        let provider = LocalSandboxProvider::new(config);
        let session = SessionId::parse("sess-runner-1").expect("session id");
        let spec = SandboxSpec {
            session_id: session.clone(),
            workspace_dir: dir.path().join("ws"),
        };
        let runner = provider.ensure(&spec).await.expect("runner starts");
        Self {
            dir,
            provider,
            session,
            runner,
        }
    }

    fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            session_id: self.session.clone(),
            workspace_dir: self.ws(),
        }
    }

    async fn call(&self, request: Request) -> Reply {
        self.runner
            .call(request, CALL)
            .await
            .expect("runner answers")
    }

    async fn exec(&self, argv: &[&str]) -> Exited {
        let reply = self
            .call(Request::Exec {
                argv: argv.iter().map(|s| (*s).to_owned()).collect(),
                env: BTreeMap::new(),
                cwd: ".".into(),
                stdin: None,
                timeout_ms: 15_000,
                max_output_bytes: 1024 * 1024,
                stream_output: false,
            })
            .await;
        match reply {
            Reply::Exited {
                exit_code,
                stdout,
                stderr,
                ..
            } => Exited {
                code: exit_code,
                stdout: String::from_utf8_lossy(&stdout.0).into_owned(),
                stderr: String::from_utf8_lossy(&stderr.0).into_owned(),
            },
            other => panic!("exec {argv:?} failed: {other:?}"),
        }
    }

    async fn sh(&self, script: &str) -> Exited {
        self.exec(&["sh", "-c", script]).await
    }

    async fn read(&self, path: &str) -> Reply {
        self.call(Request::ReadFile {
            path: path.into(),
            max_bytes: 4096,
        })
        .await
    }

    async fn write(&self, path: &str, content: &[u8]) -> Reply {
        self.call(Request::WriteFile {
            path: path.into(),
            content: Bytes(content.to_vec()),
            create_parents: false,
            create_new: false,
            snapshot: false,
        })
        .await
    }

    async fn list(&self, path: &str, recursive: bool) -> Reply {
        self.call(Request::List {
            path: path.into(),
            recursive,
            max_entries: 1000,
        })
        .await
    }
}

#[derive(Debug)]
struct Exited {
    code: i32,
    stdout: String,
    stderr: String,
}

#[track_caller]
fn assert_error(reply: &Reply, expected: RunnerErrorCode) {
    match reply {
        Reply::Error { code, message } => {
            assert_eq!(*code, expected, "{message}");
            assert!(!message.contains("/tmp/"), "a host path leaked: {message}");
        }
        other => panic!("expected {expected:?}, got {other:?}"),
    }
}

/// Live (non-zombie) host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts, inside the session, a process that left the exec's process group (so only the
/// sandbox's teardown can kill it), and waits until the host sees it.
async fn start_detached_sleeper(sandbox: &Sandbox, marker: &str) {
    let script = format!(
        "setsid sh -c 'touch /workspace/detached; exec sleep {marker}' </dev/null >/dev/null 2>&1 & \
         while [ ! -e /workspace/detached ]; do :; done; echo ok"
    );
    let exited = sandbox.sh(&script).await;
    assert_eq!(exited.code, 0, "{exited:?}");
    wait_for("the detached sleeper", || {
        !processes_with(marker).is_empty()
    })
    .await;
}

#[tokio::test]
async fn the_sandbox_has_no_network_but_loopback() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let exited = sandbox.exec(&["cat", "/proc/net/dev"]).await;
    assert_eq!(exited.code, 0, "{exited:?}");
    let interfaces: Vec<&str> = exited
        .stdout
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "{}", exited.stdout);
    let routes = sandbox.exec(&["cat", "/proc/net/route"]).await;
    assert_eq!(
        routes.stdout.lines().count(),
        1,
        "no routes: {}",
        routes.stdout
    );
}

#[tokio::test]
async fn the_sandbox_cannot_write_outside_the_workspace() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let marker = format!("runner-test-{}", std::process::id());
    for dir in ["/usr", "/etc", "", "/opt/workspace/bin", "/run", "/dev"] {
        let target = format!("{dir}/{marker}");
        let exited = sandbox.sh(&format!("echo x > {target}")).await;
        assert_ne!(exited.code, 0, "writing {target} succeeded");
        // /run does not exist in the sandbox (the runner's socket stays on the host).
        assert!(
            exited.stderr.contains("Read-only file system")
                || (dir == "/run" && exited.stderr.contains("nonexistent")),
            "{target}: {exited:?}"
        );
        assert!(
            !Path::new(&target).exists(),
            "{target} appeared on the host"
        );
    }
    let exited = sandbox
        .sh("echo hi > /workspace/inside.txt && echo tmp > /tmp/scratch-runner-test")
        .await;
    assert_eq!(exited.code, 0, "{exited:?}");
    assert_eq!(
        std::fs::read(sandbox.ws().join("inside.txt")).expect("written"),
        b"hi\n"
    );
    assert!(
        !Path::new("/tmp/scratch-runner-test").exists(),
        "the sandbox's /tmp is its own"
    );
    let exited = sandbox.exec(&["cat", "/etc/shadow"]).await;
    assert_ne!(exited.code, 0, "/etc/shadow is not in the sandbox");
    let etc = sandbox.exec(&["ls", "-A", "/etc"]).await;
    let names: BTreeSet<&str> = etc.stdout.lines().collect();
    assert!(
        !names.contains("shadow") && !names.contains("hostname"),
        "{names:?}"
    );
}

#[tokio::test]
async fn the_sandbox_sees_its_own_pid_namespace() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let init = sandbox.exec(&["cat", "/proc/1/cmdline"]).await;
    assert!(init.stdout.contains("bwrap"), "{init:?}");
    let procs = sandbox.exec(&["ls", "/proc"]).await;
    let pids = procs
        .stdout
        .lines()
        .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
        .count();
    assert!(pids < 10, "{pids} processes visible: {}", procs.stdout);
}

#[tokio::test]
async fn the_environment_is_scrubbed() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let exited = sandbox.exec(&["env"]).await;
    assert_eq!(exited.code, 0, "{exited:?}");
    let keys: BTreeSet<&str> = exited
        .stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    // HOME, LANG and PATH, and the build caches the runner keeps inside the workspace.
    let expected: BTreeSet<&str> = [
        "CARGO_HOME",
        "GOCACHE",
        "GOMODCACHE",
        "GOPATH",
        "HOME",
        "LANG",
        "PATH",
        "PIP_CACHE_DIR",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "npm_config_cache",
    ]
    .into();
    assert_eq!(keys, expected, "{}", exited.stdout);
    assert!(exited.stdout.contains("HOME=/workspace\n"));
    for (key, _) in std::env::vars() {
        if !expected.contains(key.as_str()) {
            assert!(!keys.contains(key.as_str()), "host variable {key} leaked");
        }
    }
}

#[tokio::test]
async fn stopping_a_session_kills_everything_it_started() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let marker = format!("300.{}1", std::process::id());
    start_detached_sleeper(&sandbox, &marker).await;
    sandbox.provider.stop(&sandbox.session).await;
    // stop returns once the sandbox's PID namespace is empty: no polling needed.
    assert!(
        processes_with(&marker).is_empty(),
        "a process survived stop"
    );
    assert!(
        sandbox
            .provider
            .runner_pid(&sandbox.session)
            .await
            .is_none()
    );
    // stop is idempotent, and the next use starts a fresh runner.
    sandbox.provider.stop(&sandbox.session).await;
    let runner = sandbox
        .provider
        .ensure(&sandbox.spec())
        .await
        .expect("restart");
    let reply = runner
        .call(
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
            CALL,
        )
        .await
        .expect("hello");
    assert!(matches!(reply, Reply::Hello { ref isolation, .. } if isolation == "bubblewrap"));
}

#[tokio::test]
async fn the_sandbox_dies_with_its_parent() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let marker = format!("300.{}2", std::process::id());
    start_detached_sleeper(&sandbox, &marker).await;
    let bwrap = sandbox
        .provider
        .runner_pid(&sandbox.session)
        .await
        .expect("running");
    // Kill only the outer bwrap: --die-with-parent must take the sandbox down by itself.
    let pid = libc::pid_t::try_from(bwrap).expect("pid");
    // SAFETY: plain signal delivery to a child this test's provider started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_for("the sandbox to die with its parent", || {
        processes_with(&marker).is_empty()
    })
    .await;
    // The provider notices and starts a new runner on next use.
    let runner = sandbox
        .provider
        .ensure(&sandbox.spec())
        .await
        .expect("restart");
    let reply = runner
        .call(
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
            CALL,
        )
        .await;
    assert!(matches!(reply, Ok(Reply::Hello { .. })), "{reply:?}");
}

#[tokio::test]
async fn a_symlink_to_etc_passwd_is_refused() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let before = std::fs::read("/etc/passwd").expect("host passwd");
    std::os::unix::fs::symlink("/etc/passwd", sandbox.ws().join("passwd")).expect("symlink");
    std::os::unix::fs::symlink("../../../../../../etc/passwd", sandbox.ws().join("rel"))
        .expect("symlink");
    for link in ["passwd", "rel"] {
        assert_error(&sandbox.read(link).await, RunnerErrorCode::PolicyDenied);
        assert_error(
            &sandbox.write(link, b"root::0:0::/:/bin/sh\n").await,
            RunnerErrorCode::PolicyDenied,
        );
    }
    assert_eq!(std::fs::read("/etc/passwd").expect("host passwd"), before);
}

#[tokio::test]
async fn a_symlink_created_by_a_tool_inside_the_session_is_refused() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let exited = sandbox
        .sh("ln -s /etc/passwd made-link && ln -s ../../../../etc made-dir && mkdir d && ln -s ../../.. d/up")
        .await;
    assert_eq!(exited.code, 0, "{exited:?}");
    assert_error(
        &sandbox.read("made-link").await,
        RunnerErrorCode::PolicyDenied,
    );
    assert_error(
        &sandbox.list("made-dir", false).await,
        RunnerErrorCode::PolicyDenied,
    );
    assert_error(
        &sandbox.read("made-dir/passwd").await,
        RunnerErrorCode::PolicyDenied,
    );
    assert_error(
        &sandbox.list("d/up", false).await,
        RunnerErrorCode::PolicyDenied,
    );
}

#[tokio::test]
async fn a_symlink_to_an_outside_directory_cannot_be_listed_through() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    std::os::unix::fs::symlink(sandbox.outside(), sandbox.ws().join("out")).expect("symlink");
    assert_error(
        &sandbox.list("out", false).await,
        RunnerErrorCode::PolicyDenied,
    );
    assert_error(
        &sandbox.list("out/", true).await,
        RunnerErrorCode::PolicyDenied,
    );
    assert_error(
        &sandbox.read("out/secret").await,
        RunnerErrorCode::PolicyDenied,
    );
    assert_error(
        &sandbox.write("out/planted", b"x").await,
        RunnerErrorCode::PolicyDenied,
    );
    assert!(!sandbox.outside().join("planted").exists());
    // A recursive walk of the workspace shows the link, never what is behind it.
    match sandbox.list("", true).await {
        Reply::Entries { entries, .. } => {
            let paths: Vec<_> = entries
                .iter()
                .map(|e| (e.path.as_str(), e.entry_type))
                .collect();
            assert_eq!(paths, [("out", EntryType::Symlink)]);
        }
        other => panic!("{other:?}"),
    }
    let search = sandbox
        .call(Request::Search {
            path: "".into(),
            pattern: "secret".into(),
            max_results: 10,
            include_glob: None,
        })
        .await;
    assert!(
        matches!(search, Reply::Matches { ref matches, .. } if matches.is_empty()),
        "{search:?}"
    );
}

#[tokio::test]
async fn a_hard_link_to_a_file_outside_the_workspace_is_refused() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    std::fs::hard_link(sandbox.outside().join("secret"), sandbox.ws().join("hard"))
        .expect("hard link");
    assert_error(&sandbox.read("hard").await, RunnerErrorCode::PolicyDenied);
    assert_error(
        &sandbox.write("hard", b"changed").await,
        RunnerErrorCode::PolicyDenied,
    );
    let copy = sandbox
        .call(Request::Copy {
            from: "hard".into(),
            to: "copy".into(),
            recursive: false,
            overwrite: false,
            create_parents: false,
        })
        .await;
    assert_error(&copy, RunnerErrorCode::PolicyDenied);
    assert_eq!(
        std::fs::read(sandbox.outside().join("secret")).expect("secret"),
        b"outside secret"
    );
}

#[tokio::test]
async fn a_symlink_loop_does_not_hang() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    std::os::unix::fs::symlink("loop-b", sandbox.ws().join("loop-a")).expect("symlink");
    std::os::unix::fs::symlink("loop-a", sandbox.ws().join("loop-b")).expect("symlink");
    let quick = Duration::from_secs(5);
    for request in [
        Request::ReadFile {
            path: "loop-a".into(),
            max_bytes: 10,
        },
        Request::List {
            path: "loop-a".into(),
            recursive: true,
            max_entries: 10,
        },
        Request::WriteFile {
            path: "loop-a".into(),
            content: Bytes(b"x".to_vec()),
            create_parents: false,
            create_new: false,
            snapshot: false,
        },
    ] {
        let reply = sandbox
            .runner
            .call(request, quick)
            .await
            .expect("answers quickly");
        match reply {
            Reply::Error { code, .. } => assert!(
                matches!(
                    code,
                    RunnerErrorCode::InvalidArgument | RunnerErrorCode::PolicyDenied
                ),
                "{code:?}"
            ),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_fifo_does_not_block() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let exited = sandbox.exec(&["mkfifo", "pipe"]).await;
    assert_eq!(exited.code, 0, "{exited:?}");
    let quick = Duration::from_secs(5);
    let read = sandbox
        .runner
        .call(
            Request::ReadFile {
                path: "pipe".into(),
                max_bytes: 10,
            },
            quick,
        )
        .await
        .expect("answers quickly");
    assert_error(&read, RunnerErrorCode::PolicyDenied);
    let write = sandbox
        .runner
        .call(
            Request::WriteFile {
                path: "pipe".into(),
                content: Bytes(b"x".to_vec()),
                create_parents: false,
                create_new: false,
                snapshot: false,
            },
            quick,
        )
        .await
        .expect("answers quickly");
    assert_error(&write, RunnerErrorCode::PolicyDenied);
    let search = sandbox
        .runner
        .call(
            Request::Search {
                path: "".into(),
                pattern: "x".into(),
                max_results: 10,
                include_glob: None,
            },
            quick,
        )
        .await
        .expect("answers quickly");
    assert!(matches!(search, Reply::Matches { .. }), "{search:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensure_for_one_session_starts_one_runner() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    sandbox.provider.stop(&sandbox.session).await;
    let spec = sandbox.spec();
    let (a, b) = tokio::join!(
        sandbox.provider.ensure(&spec),
        sandbox.provider.ensure(&spec)
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert!(Arc::ptr_eq(&a, &b), "both callers share one runner");
    // A second session is independent.
    let other = SandboxSpec {
        session_id: SessionId::parse("sess-runner-2").expect("id"),
        workspace_dir: sandbox.outside(),
    };
    let c = sandbox
        .provider
        .ensure(&other)
        .await
        .expect("other session");
    assert!(!Arc::ptr_eq(&a, &c));
    let read = c
        .call(
            Request::ReadFile {
                path: "secret".into(),
                max_bytes: 100,
            },
            CALL,
        )
        .await
        .expect("read");
    assert!(matches!(read, Reply::File { ref content, .. } if content.0 == b"outside secret"));
    sandbox.provider.stop(&other.session_id).await;
    let still = a
        .call(
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
            CALL,
        )
        .await;
    assert!(matches!(still, Ok(Reply::Hello { .. })), "{still:?}");
}

#[tokio::test]
async fn file_tools_work_through_the_sandbox() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let written = sandbox
        .call(Request::WriteFile {
            path: "src/main.rs".into(),
            content: Bytes(b"fn main() { println!(\"hi\"); }\n".to_vec()),
            create_parents: true,
            create_new: true,
            snapshot: false,
        })
        .await;
    assert!(
        matches!(written, Reply::Written { created: true, .. }),
        "{written:?}"
    );
    let host = sandbox.ws().join("src/main.rs");
    assert!(host.is_file());
    let exited = sandbox.exec(&["cat", "src/main.rs"]).await;
    assert!(exited.stdout.contains("println"), "{exited:?}");
    let globbed = sandbox
        .call(Request::Glob {
            path: "".into(),
            pattern: "**/*.rs".into(),
            max_results: 10,
        })
        .await;
    assert!(
        matches!(globbed, Reply::Entries { ref entries, .. } if entries.len() == 1 && entries[0].path == "src/main.rs"),
        "{globbed:?}"
    );
    let missing = sandbox
        .call(Request::Exec {
            argv: vec!["definitely-not-a-program".into()],
            env: BTreeMap::new(),
            cwd: ".".into(),
            stdin: None,
            timeout_ms: 5_000,
            max_output_bytes: 100,
            stream_output: false,
        })
        .await;
    assert_error(&missing, RunnerErrorCode::SpawnFailed);
    let removed = sandbox
        .call(Request::Remove {
            path: ".".into(),
            recursive: true,
            force: true,
        })
        .await;
    assert_error(&removed, RunnerErrorCode::PolicyDenied);
    assert!(host.is_file());
}

#[tokio::test]
async fn an_unsandboxed_runner_serves_the_same_protocol() {
    let sandbox = Sandbox::start(SandboxMode::Unsandboxed).await;
    assert_eq!(sandbox.runner.isolation(), "unsandboxed");
    assert_eq!(sandbox.provider.isolation(), "unsandboxed");
    let written = sandbox.write("a.txt", b"hello").await;
    assert!(
        matches!(written, Reply::Written { created: true, .. }),
        "{written:?}"
    );
    let exited = sandbox.sh("cat a.txt; echo; env | sort").await;
    assert!(exited.stdout.starts_with("hello\n"), "{exited:?}");
    // Nothing of the host's (cargo test's) environment; CARGO_HOME is the workspace's cache.
    assert!(!exited.stdout.contains("CARGO_MANIFEST_DIR"), "{exited:?}");
    assert!(!exited.stdout.contains("CARGO_PKG"), "{exited:?}");
    assert!(
        exited.stdout.contains(&format!(
            "CARGO_HOME={}/.workspace-cache/cargo",
            sandbox.ws().display()
        )),
        "{exited:?}"
    );
    std::os::unix::fs::symlink("/etc/passwd", sandbox.ws().join("passwd")).expect("symlink");
    assert_error(&sandbox.read("passwd").await, RunnerErrorCode::PolicyDenied);
    let marker = format!("300.{}3", std::process::id());
    let script = format!("sleep {marker} & sleep {marker}");
    let pending = sandbox.runner.call(
        Request::Exec {
            argv: vec!["sh".into(), "-c".into(), script],
            env: BTreeMap::new(),
            cwd: ".".into(),
            stdin: None,
            timeout_ms: 60_000,
            max_output_bytes: 100,
            stream_output: false,
        },
        Duration::from_secs(60),
    );
    let stop = async {
        wait_for("the sleepers", || processes_with(&marker).len() >= 2).await;
        sandbox.provider.stop(&sandbox.session).await;
    };
    let (result, ()) = tokio::join!(pending, stop);
    assert!(
        result.is_err(),
        "the call fails when its runner stops: {result:?}"
    );
    wait_for("the unsandboxed program to die with its runner", || {
        processes_with(&marker).is_empty()
    })
    .await;
}

/// Many calls over one pooled connection all answer correctly (the round trip's latency is
/// measured by `cargo bench --bench runner`, not asserted here).
#[tokio::test]
async fn a_thousand_read_file_round_trips_through_the_sandbox_all_answer() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    std::fs::write(sandbox.ws().join("f.txt"), vec![b'x'; 1024]).expect("file");
    for _ in 0..1000 {
        let reply = sandbox
            .call(Request::ReadFile {
                path: "f.txt".into(),
                max_bytes: 4096,
            })
            .await;
        assert!(
            matches!(
                reply,
                Reply::File {
                    size_bytes: 1024,
                    ..
                }
            ),
            "{reply:?}"
        );
    }
}

/// Programs run in the directory asked for, with no core dumps and at most 1024 open files
/// (and, sandboxed, the sandbox's process and file-size limits), in both modes (spawned without a pre-exec hook in the sandbox, with one unsandboxed), and a
/// working directory that leads outside the workspace is refused.
#[tokio::test]
async fn programs_run_in_their_directory_with_the_runner_limits() {
    for mode in [SandboxMode::Bubblewrap, SandboxMode::Unsandboxed] {
        let sandbox = Sandbox::start(mode).await;
        std::fs::create_dir_all(sandbox.ws().join("sub/dir")).expect("dir");
        std::os::unix::fs::symlink(sandbox.outside(), sandbox.ws().join("out")).expect("symlink");
        let exec = |cwd: &str| Request::Exec {
            argv: vec!["sh".into(), "-c".into(), "pwd; ulimit -c; ulimit -n".into()],
            env: BTreeMap::new(),
            cwd: cwd.into(),
            stdin: None,
            timeout_ms: 15_000,
            max_output_bytes: 4096,
            stream_output: false,
        };
        match sandbox.call(exec("sub/dir")).await {
            Reply::Exited {
                exit_code: 0,
                stdout,
                ..
            } => {
                let out = String::from_utf8_lossy(&stdout.0).into_owned();
                let lines: Vec<&str> = out.lines().collect();
                assert_eq!(lines.len(), 3, "{mode:?}: {out}");
                assert!(lines[0].ends_with("/sub/dir"), "{mode:?}: {out}");
                assert_eq!(&lines[1..], ["0", "1024"], "{mode:?}: {out}");
            }
            other => panic!("{mode:?}: {other:?}"),
        }
        if mode == SandboxMode::Bubblewrap {
            // Everything in a sandbox shares its process and file-size limits.
            let limits = sandbox.exec(&["cat", "/proc/self/limits"]).await;
            let limit = |name: &str| {
                limits
                    .stdout
                    .lines()
                    .find(|l| l.starts_with(name))
                    .map(|l| {
                        l.split_whitespace()
                            .rev()
                            .skip(1)
                            .take(2)
                            .collect::<Vec<_>>()
                    })
            };
            let defaults = SandboxLimits::default();
            let processes = defaults.max_processes.to_string();
            let file_bytes = defaults.max_file_bytes.to_string();
            assert_eq!(limit("Max processes"), Some(vec![&*processes, &*processes]));
            assert_eq!(
                limit("Max file size"),
                Some(vec![&*file_bytes, &*file_bytes])
            );
        }
        assert_error(
            &sandbox.call(exec("out")).await,
            RunnerErrorCode::PolicyDenied,
        );
        assert_error(
            &sandbox.call(exec("../")).await,
            RunnerErrorCode::PolicyDenied,
        );
    }
}

/// The real, effective, saved and filesystem uids of a host process (its `Uid:` status line).
fn uids_of(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().ok())
        .collect()
}

/// Live host processes whose real uid is `uid`.
fn processes_of_uid(uid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            !zombie && uids_of(*pid).is_some_and(|uids| uids.first() == Some(&uid))
        })
        .collect()
}

/// Host processes, zombies included (they count against `RLIMIT_NPROC` until reaped), whose
/// real uid is `uid`.
fn tasks_of_uid(uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                .filter(|pid| uids_of(*pid).is_some_and(|uids| uids.first() == Some(&uid)))
                .count()
        })
        .unwrap_or(0)
}

/// Names under `dir` (recursively, not following links) that contain `marker`.
fn entries_named(dir: &Path, marker: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().contains(marker) {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

/// Issue 8, item 2: a program in the sandbox tries every writable-looking place; each write
/// either fails or lands in a private tmpfs, and no host directory (the socket directory, the
/// run directory, the test's directory, the host's /tmp, /var/tmp, /dev/shm and /run) gets a
/// file. `$HOME` is the workspace, where writes belong. Programs inherit no descriptor beyond
/// stdio.
#[tokio::test]
async fn nothing_run_in_the_sandbox_can_write_a_host_path_outside_the_workspace() {
    let sandbox = Sandbox::start(SandboxMode::Bubblewrap).await;
    let marker = format!("escape-{}-{}", std::process::id(), line!());
    let script = format!(
        r#"for dir in /run/workspace /run /tmp /var/tmp /dev/shm /dev / /opt/workspace/bin /proc "$HOME"; do
             if (echo x > "$dir/{marker}") 2>/dev/null; then
               echo "wrote $dir $(stat -f -c %T "$dir")"
             else
               echo "refused $dir"
             fi
           done
           echo "home $HOME""#
    );
    let exited = sandbox.sh(&script).await;
    assert_eq!(exited.code, 0, "{exited:?}");
    let mut private = BTreeSet::new();
    for line in exited.stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["wrote", "/workspace", _] => {}
            ["wrote", dir, fs] => {
                assert_eq!(
                    *fs, "tmpfs",
                    "{dir} is writable and not a tmpfs: {exited:?}"
                );
                private.insert((*dir).to_owned());
            }
            ["refused", dir] => assert_ne!(*dir, "/workspace", "{exited:?}"),
            ["home", home] => assert_eq!(*home, "/workspace"),
            _ => panic!("unexpected line {line:?}: {exited:?}"),
        }
    }
    // The private tmpfs mounts are documented in docs/adr/0002-runner.md.
    let expected: BTreeSet<String> = ["/tmp", "/var/tmp", "/dev/shm"].map(String::from).into();
    assert_eq!(private, expected, "{exited:?}");
    assert!(
        sandbox.ws().join(&marker).is_file(),
        "$HOME is the workspace"
    );
    let socket_dir = sandbox
        .dir
        .path()
        .join("run")
        .join(sandbox.session.as_str());
    let names: Vec<String> = std::fs::read_dir(&socket_dir)
        .expect("socket dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["runner.sock"],
        "the socket directory holds only the socket"
    );
    let outside_workspace: Vec<PathBuf> = entries_named(sandbox.dir.path(), &marker)
        .into_iter()
        .filter(|p| !p.starts_with(sandbox.ws()))
        .collect();
    assert!(outside_workspace.is_empty(), "{outside_workspace:?}");
    for host in ["/tmp", "/var/tmp", "/dev/shm", "/run"] {
        let leaked: Vec<PathBuf> = std::fs::read_dir(host)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains(&marker))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(leaked.is_empty(), "{leaked:?} appeared on the host");
    }
    // Programs inherit stdin, stdout and stderr only (3 is ls's own listing of the
    // directory): never the runner's listening socket, nor anything the service inherited.
    let fds = sandbox.exec(&["ls", "/proc/self/fd"]).await;
    let fds: BTreeSet<&str> = fds.stdout.lines().collect();
    assert!(
        fds.is_subset(&["0", "1", "2", "3"].into()),
        "a program inherited descriptors: {fds:?}"
    );
}

/// Issue 8, item 4: the service runs as root, yet a sandbox's processes are an unprivileged
/// host user (the configured sandbox uid; uid 1000 inside), and the workspace provisioning
/// created as root is handed over to it.
#[tokio::test]
async fn sandboxed_programs_run_as_an_unprivileged_host_user() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test proves what a root service does: run it as root, as CI does"
    );
    let user = HostIdentity {
        uid: 61002,
        gid: 61003,
    };
    let sandbox = Sandbox::start_with(SandboxMode::Bubblewrap, |config, ws| {
        config.sandbox_user = user;
        // The workspace is filled by root before the sandbox starts, as provisioning does.
        std::fs::create_dir(ws.join("src")).expect("src");
        std::fs::write(ws.join("src/lib.rs"), b"//").expect("lib");
    })
    .await;
    assert_eq!(sandbox.provider.sandbox_identity(), Some(user));
    let id = sandbox.sh("id -u; id -g; id -G; id -un").await;
    assert_eq!(id.code, 0, "{id:?}");
    let expected = format!("{SANDBOX_UID}\n{SANDBOX_UID}\n{SANDBOX_UID}\nworkspace\n");
    assert_eq!(
        id.stdout, expected,
        "uid, gid, groups and name inside: {id:?}"
    );
    let marker = format!("300.{}4", std::process::id());
    start_detached_sleeper(&sandbox, &marker).await;
    let mut pids = processes_with(&marker);
    pids.extend(sandbox.provider.runner_pid(&sandbox.session).await);
    assert!(pids.len() >= 2, "{pids:?}");
    for pid in pids {
        assert_eq!(
            uids_of(pid).expect("uids"),
            [user.uid; 4],
            "real, effective, saved and filesystem uid of {pid}"
        );
    }
    // What root provisioned is the sandbox user's, so the runner can write it; what the
    // sandbox writes is the sandbox user's on the host.
    let written = sandbox.write("src/lib.rs", b"// changed").await;
    assert!(matches!(written, Reply::Written { .. }), "{written:?}");
    use std::os::unix::fs::MetadataExt;
    for path in ["", "src", "src/lib.rs", "detached"] {
        let meta = std::fs::symlink_metadata(sandbox.ws().join(path)).expect("exists");
        assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid), "{path}");
    }
}

/// Issue 8, item 4: a fork bomb in a tool is contained by the per-uid process limit: the call
/// returns within its deadline, the host can still start processes, the session still
/// answers, and stopping it leaves no process of the sandbox's uid behind.
#[tokio::test]
async fn a_fork_bomb_in_a_tool_does_not_take_the_host_down() {
    // A uid of its own, so the bomb competes with no other test's sandboxes for the limit.
    let user = HostIdentity {
        uid: 61004,
        gid: 61004,
    };
    let max_processes = 64;
    let sandbox = Sandbox::start_with(SandboxMode::Bubblewrap, |config, _| {
        config.sandbox_user = user;
        config.limits.max_processes = max_processes;
    })
    .await;
    // First a bounded probe, harmless where nothing is limited: 300 sleepers must not all
    // start.
    let probe = sandbox
        .sh("i=0; while [ $i -lt 300 ]; do sleep 1000 & i=$((i+1)); done; echo started $i")
        .await;
    assert!(
        !probe.stdout.contains("started 300"),
        "300 processes started in the sandbox: {probe:?}"
    );
    // Killed processes count against the limit until the sandbox's init reaps them.
    let settled = || tasks_of_uid(user.uid) <= 3;
    wait_for("the probe's processes to be reaped", settled).await;
    let timeout_ms = 3_000;
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let call = async {
        let reply = sandbox
            .runner
            .call(
                Request::Exec {
                    argv: vec![
                        "sh".into(),
                        "-c".into(),
                        // The shell becomes a sleeper (exec needs no fork, which the bomb soon makes
                        // fail), so the bomb grows until the timeout.
                        "bomb() { bomb | bomb & }; bomb; exec sleep 60".into(),
                    ],
                    env: BTreeMap::new(),
                    cwd: ".".into(),
                    stdin: None,
                    timeout_ms,
                    max_output_bytes: 4096,
                    stream_output: false,
                },
                CALL,
            )
            .await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reply
    };
    // The host's view while the bomb goes off: processes of the sandbox uid, sampled.
    let sample = async {
        let mut peak = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(processes_of_uid(user.uid).len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    };
    let (reply, peak) = tokio::join!(call, sample);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(timeout_ms) + Duration::from_secs(5),
        "the bomb's call took {took:?}: {reply:?}"
    );
    // It hit the limit: the kernel refused its forks. Usually the bomb grows until the
    // timeout (124); when a refused fork reaches the top-level shell first, dash gives up at
    // once (exit 2). Either way the call ended by itself, within its deadline.
    match &reply {
        Ok(Reply::Exited {
            timed_out,
            exit_code,
            stderr,
            ..
        }) if (*timed_out && *exit_code == 124) || (!*timed_out && *exit_code != 0) => assert!(
            String::from_utf8_lossy(&stderr.0).contains("Cannot fork"),
            "{reply:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        peak <= usize::try_from(max_processes).expect("small"),
        "{peak} processes of the sandbox uid"
    );
    eprintln!("peak {peak} processes of the sandbox uid in {took:?}");
    let host = std::process::Command::new("true").status();
    assert!(
        host.is_ok_and(|s| s.success()),
        "the host cannot start processes"
    );
    wait_for("the bomb's processes to be reaped", settled).await;
    let after = sandbox.sh("echo still here").await;
    assert_eq!(after.stdout, "still here\n", "{after:?}");
    sandbox.provider.stop(&sandbox.session).await;
    let left = processes_of_uid(user.uid);
    assert!(
        left.is_empty(),
        "processes of the sandbox uid survived: {left:?}"
    );
}

/// Two executors on one node each start a runner for the same session, over the same
/// workspace directory (and each sandbox's pid namespace gives its runner the same pid):
/// writes at the same moment from both never collide on a temporary file. With temporary
/// names made of the pid and a counter they did ("already exists", ninth session).
#[tokio::test]
async fn two_runners_of_one_workspace_write_at_the_same_time_without_colliding() {
    let first = Sandbox::start(SandboxMode::Bubblewrap).await;
    let config = LocalSandboxConfig {
        mode: SandboxMode::Bubblewrap,
        runner_exe: PathBuf::from(env!("CARGO_BIN_EXE_workspace")),
        bwrap: PathBuf::from("bwrap"),
        run_dir: first.dir.path().join("run-of-the-second-executor"),
        start_timeout: Duration::from_secs(20),
        sandbox_user: HostIdentity::default(),
        limits: SandboxLimits::default(),
        toolchains: Default::default(),
    };
    // Kept: dropping the provider stops its runners.
    let provider = LocalSandboxProvider::new(config);
    let second = provider
        .ensure(&first.spec())
        .await
        .expect("the second runner starts");
    let write = |runner: Arc<dyn SessionRunner>, path: String| async move {
        runner
            .call(
                Request::WriteFile {
                    path,
                    content: Bytes(vec![b'x'; 4096]),
                    create_parents: false,
                    create_new: false,
                    snapshot: false,
                },
                CALL,
            )
            .await
            .expect("runner answers")
    };
    for i in 0..200 {
        let (a, b) = tokio::join!(
            write(first.runner.clone(), format!("a-{i}.txt")),
            write(second.clone(), format!("b-{i}.txt"))
        );
        for reply in [a, b] {
            assert!(
                matches!(reply, Reply::Written { .. }),
                "write {i}: {reply:?}"
            );
        }
    }
}
