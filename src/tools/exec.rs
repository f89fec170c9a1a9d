//! Running a program for a tool: the one way every tool that runs a program does it.
//!
//! A [`Program`] is an argv (never a shell: `argv[0]` is looked up on the sandbox's `PATH` and
//! run with exactly these arguments), the tool's additions to the environment (the runner
//! starts from an empty one with `PATH`, `HOME` and `LANG` only), a working directory inside
//! the workspace (confined by the runner like every path), optional stdin, and two caps:
//! what the tool's answer carries inline, and what is kept in full (the rest is only counted).
//! [`run`] sends it to the session's runner, which enforces the timeout by killing the whole
//! process group (whatever the program forked goes with it; the output read until then is
//! kept) and streams the output while the program runs. Each chunk is published on the
//! invocation's live output ([`crate::live::OutputSink`]) as it arrives, so a client streaming
//! the invocation sees it before the run ends. [`Finished`] has the exit code, the duration,
//! each stream's inline part with `truncated` and its total size, and
//! [`Finished::artifacts`], the full output of a stream cut inline, which the executor stores
//! with the invocation like any artifact (its large-output path).
//!
//! This module never runs anything on the host and never decides policy.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error_code::ErrorCode;
use crate::runner::protocol::{Bytes, Reply, Request};
use crate::runner::{OutputChannel, OutputChunk};
use crate::tools::{NewArtifact, ToolContext, ToolFailure, runner_error, runner_failure};

/// Default inline cap of each stream: what the tool's answer carries.
pub const DEFAULT_INLINE_BYTES: u64 = 64 * 1024;
/// Default full capture of each stream, kept for the artifact beyond the inline cap.
pub const DEFAULT_CAPTURE_BYTES: u64 = 8 * 1024 * 1024;
/// The runner's timeout is this much shorter than what is left of the invocation, so the
/// runner answers (with the partial output) before the call itself gives up.
const REPLY_MARGIN_MS: u64 = 250;
/// Chunks read from the runner and not yet handled: a slow publisher slows the program down.
const CHUNK_QUEUE: usize = 16;

/// A program to run in the session's runner.
#[derive(Debug, Clone)]
pub struct Program {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: String,
    stdin: Option<Vec<u8>>,
    inline_bytes: u64,
    capture_bytes: u64,
    live: bool,
}

impl Program {
    /// `argv[0]` with arguments `argv[1..]`, at the workspace root, output published live,
    /// default caps.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: ".".to_owned(),
            stdin: None,
            inline_bytes: DEFAULT_INLINE_BYTES,
            capture_bytes: DEFAULT_CAPTURE_BYTES,
            live: true,
        }
    }

    /// Adds environment variables.
    pub fn envs(mut self, env: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(env);
        self
    }

    /// Adds one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Runs in this workspace-relative directory (the runner refuses one outside).
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = cwd.into();
        self
    }

    /// Writes `bytes` to stdin, then closes it (stdin is `/dev/null` otherwise).
    pub fn stdin(mut self, bytes: Option<Vec<u8>>) -> Self {
        self.stdin = bytes;
        self
    }

    /// The answer carries at most `bytes` of each stream.
    pub fn inline_limit(mut self, bytes: u64) -> Self {
        self.inline_bytes = bytes;
        self
    }

    /// At most `bytes` of each stream are kept (and streamed); the rest is counted. Never less
    /// than the inline limit.
    pub fn capture_limit(mut self, bytes: u64) -> Self {
        self.capture_bytes = bytes;
        self
    }

    /// Does not publish the output live: an inspection the tool makes for itself (git's
    /// configuration listing), not output its caller asked for.
    pub fn quiet(mut self) -> Self {
        self.live = false;
        self
    }

    /// The command line.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The tool's additions to the environment.
    pub fn environment(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    fn check(&self) -> Result<(), ToolFailure> {
        if self.argv.is_empty() {
            return Err(ToolFailure::new(ErrorCode::Internal, "no program to run"));
        }
        // The dynamic loader's variables load code into every program: no tool sets them.
        if let Some(key) = self.env.keys().find(|k| k.starts_with("LD_")) {
            return Err(ToolFailure::new(
                ErrorCode::Internal,
                format!("a tool may not set {key} for the programs it runs"),
            ));
        }
        Ok(())
    }
}

/// One output stream of a finished program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes (at most the inline limit).
    pub inline: Vec<u8>,
    /// Every byte the program wrote, kept or not.
    pub total_bytes: u64,
    /// Whether `inline` is shorter than what the program wrote.
    pub truncated: bool,
    /// The bytes kept (at most the capture limit; complete when it equals `total_bytes`).
    full: Vec<u8>,
}

impl Captured {
    /// What was kept of the stream: all of it unless it passed the capture limit.
    pub fn kept(&self) -> &[u8] {
        &self.full
    }
}

/// How a program ended, and what it wrote.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit code; 124 after a timeout, 128+N when killed by signal N.
    pub exit_code: i32,
    /// Standard output.
    pub stdout: Captured,
    /// Standard error.
    pub stderr: Captured,
    /// Whether the timeout killed the process group.
    pub timed_out: bool,
    /// Run time in the runner.
    pub duration_ms: u64,
}

impl Finished {
    /// The full output of each stream cut inline, as artifacts named `<stem>.stdout.txt` and
    /// `<stem>.stderr.txt`, for the tool to return with its result (the executor stores them
    /// with the invocation).
    pub fn artifacts(&self, stem: &str) -> Vec<NewArtifact> {
        [("stdout", &self.stdout), ("stderr", &self.stderr)]
            .into_iter()
            .filter(|(_, c)| c.truncated)
            .map(|(name, c)| NewArtifact {
                name: format!("{stem}.{name}.txt"),
                content_type: "text/plain; charset=utf-8".to_owned(),
                bytes: c.full.clone(),
            })
            .collect()
    }
}

/// What is read of one stream while the program runs.
struct Collecting {
    full: Vec<u8>,
    capture: usize,
}

impl Collecting {
    fn push(&mut self, bytes: &[u8]) {
        let room = self.capture.saturating_sub(self.full.len());
        self.full.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn finish(self, total_bytes: u64, inline: u64) -> Captured {
        let inline = usize::try_from(inline).unwrap_or(usize::MAX);
        let total_bytes = total_bytes.max(self.full.len() as u64);
        Captured {
            inline: self.full[..self.full.len().min(inline)].to_vec(),
            truncated: total_bytes > inline as u64,
            total_bytes,
            full: self.full,
        }
    }
}

/// Runs `program` in the session's runner within the invocation's deadline, publishing its
/// output live as it arrives. A program that ran answers `Ok`, whatever its exit code, also
/// after a timeout (`timed_out`, exit code 124, the output read until then); a program that
/// could not start is `execution_failed`, a runner that cannot be reached `unavailable`.
pub async fn run(ctx: &ToolContext, program: &Program) -> Result<Finished, ToolFailure> {
    program.check()?;
    let remaining = ctx.deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(ToolFailure::new(
            ErrorCode::Timeout,
            "the tool's timeout expired",
        ));
    }
    let timeout_ms = u64::try_from(remaining.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_sub(REPLY_MARGIN_MS)
        .max(1);
    let capture = program.capture_bytes.max(program.inline_bytes);
    let request = Request::Exec {
        argv: program.argv.clone(),
        env: program.env.clone(),
        cwd: program.cwd.clone(),
        stdin: program.stdin.clone().map(Bytes),
        timeout_ms,
        max_output_bytes: capture,
        stream_output: true,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<OutputChunk>(CHUNK_QUEUE);
    let collecting = || Collecting {
        full: Vec::new(),
        capture: usize::try_from(capture).unwrap_or(usize::MAX),
    };
    let (mut out, mut err) = (collecting(), collecting());
    let call = ctx.runner.exec_streaming(request, remaining, tx);
    let consume = async {
        while let Some(chunk) = rx.recv().await {
            match chunk.channel {
                OutputChannel::Stdout => out.push(&chunk.data),
                OutputChannel::Stderr => err.push(&chunk.data),
            }
            if program.live {
                ctx.output.publish(chunk.channel, &chunk.data).await;
            }
        }
    };
    let (reply, ()) = tokio::join!(call, consume);
    match reply.map_err(|e| runner_error(ctx, e))? {
        Reply::Exited {
            exit_code,
            stdout,
            stderr,
            stdout_total_bytes,
            stderr_total_bytes,
            timed_out,
            duration_ms,
        } => {
            // A runner that could not stream answers with the output in the reply.
            out.push(&stdout.0);
            err.push(&stderr.0);
            Ok(Finished {
                exit_code,
                stdout: out.finish(stdout_total_bytes, program.inline_bytes),
                stderr: err.finish(stderr_total_bytes, program.inline_bytes),
                timed_out,
                duration_ms,
            })
        }
        Reply::Error { code, message } => Err(runner_failure(code, message)),
        _ => Err(ToolFailure::new(
            ErrorCode::Internal,
            "unexpected reply from the session runner",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt;
    use workspace_events::Principal;

    use super::*;
    use crate::ids::SessionId;
    use crate::live::memory::MemoryLive;
    use crate::live::{LiveMessage, LiveOutput, OutputSink};
    use crate::runner::SocketRunner;
    use crate::runner::server::RunnerServer;
    use crate::tools::SessionContext;

    struct Harness {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        socket: std::path::PathBuf,
        live: Arc<MemoryLive>,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    async fn harness() -> Harness {
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
            _dir: dir,
            root,
            socket,
            live: Arc::new(MemoryLive::default()),
            _stop: stop,
        }
    }

    impl Harness {
        fn context(&self, invocation: &str, timeout: Duration) -> ToolContext {
            ToolContext {
                session: Arc::new(SessionContext {
                    id: SessionId::generate(),
                    principal: Principal {
                        tenant_id: "tenant".into(),
                        actor_id: "agent".into(),
                        roles: vec!["developer".into()],
                    },
                    allowed_paths: vec![".".into()],
                    metadata: BTreeMap::new(),
                    runtime: None,
                }),
                runner: Arc::new(SocketRunner::new(&self.socket, "unsandboxed")),
                deadline: Instant::now() + timeout,
                output: OutputSink::new(self.live.clone(), invocation),
                kube: None,
            }
        }
    }

    fn sh(script: &str) -> Program {
        Program::new(["sh", "-c", script])
    }

    /// Host processes whose command line contains `marker` (zombies excluded).
    fn processes_with(marker: &str) -> usize {
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
                !zombie && String::from_utf8_lossy(&cmdline).contains(marker)
            })
            .count()
    }

    #[tokio::test]
    async fn a_programs_output_is_published_live_while_it_runs_and_numbered_across_programs() {
        let h = harness().await;
        let ctx = h.context("inv-live", Duration::from_secs(20));
        let mut live = h.live.subscribe("inv-live").await.unwrap();
        // The program cannot end before the test has seen its first chunk on the live output.
        let waits = sh("printf 'one\\n'; while [ ! -e go ]; do sleep 0.01; done; printf 'two\\n'");
        let running = tokio::spawn({
            let ctx = ctx.clone();
            async move { run(&ctx, &waits).await }
        });
        let first = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .unwrap()
            .unwrap();
        let LiveMessage::OutputChunk(first) = first else {
            panic!("{first:?}")
        };
        assert_eq!((first.offset, first.data.as_str()), (0, "one\n"));
        assert!(!running.is_finished(), "published while the program runs");
        std::fs::write(h.root.join("go"), "").unwrap();
        let finished = running.await.unwrap().unwrap();
        assert_eq!(finished.exit_code, 0);
        assert_eq!(finished.stdout.inline, b"one\ntwo\n");
        assert!(!finished.stdout.truncated && !finished.timed_out);
        // A second program of the same invocation continues the numbering.
        run(&ctx, &sh("printf three")).await.unwrap();
        // A program of its own: two pipes have no order between them.
        run(&ctx, &sh("printf err >&2")).await.unwrap();
        // An inspection the tool makes for itself is not published.
        run(&ctx, &sh("printf secret").quiet()).await.unwrap();
        ctx.output.finish().await;
        let mut rest = Vec::new();
        while let Some(message) = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .unwrap()
        {
            let end = matches!(message, LiveMessage::OutputEnd(_));
            rest.push(message);
            if end {
                break;
            }
        }
        let described: Vec<String> = rest
            .iter()
            .map(|m| match m {
                LiveMessage::OutputChunk(c) => {
                    format!("{}@{}:{}", c.channel.as_str(), c.offset, c.data)
                }
                LiveMessage::OutputEnd(e) => format!("end {} {}", e.stdout_bytes, e.stderr_bytes),
            })
            .collect();
        assert_eq!(
            described,
            [
                "stdout@4:two\n",
                "stdout@8:three",
                "stderr@0:err",
                "end 13 3"
            ]
        );
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_tree_and_keeps_the_partial_output() {
        let h = harness().await;
        let marker = format!("41.{}", std::process::id());
        // The child forked into the background sleeps as long as its parent.
        let script =
            format!("echo started; echo oops >&2; (sleep {marker}; echo never) & sleep {marker}");
        let ctx = h.context("inv-timeout", Duration::from_millis(1500));
        let begun = Instant::now();
        let finished = run(&ctx, &sh(&script)).await.unwrap();
        assert!(finished.timed_out);
        assert_eq!(finished.exit_code, 124);
        assert_eq!(finished.stdout.inline, b"started\n");
        assert_eq!(finished.stderr.inline, b"oops\n");
        assert!(finished.duration_ms >= 1000, "{}", finished.duration_ms);
        assert!(begun.elapsed() < Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_with(&marker) > 0 {
            assert!(Instant::now() < deadline, "a process of the tree survived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The partial output was published live too.
        assert!(matches!(
            h.live.last("inv-timeout").await.unwrap(),
            Some(LiveMessage::OutputChunk(c)) if c.data == "oops\n" || c.data == "started\n"
        ));
    }

    #[tokio::test]
    async fn output_past_the_inline_cap_is_cut_counted_and_kept_whole_for_an_artifact() {
        let h = harness().await;
        let ctx = h.context("inv-big", Duration::from_secs(20));
        let program = sh("head -c 300000 /dev/zero | tr '\\0' x; printf small >&2")
            .inline_limit(1000)
            .capture_limit(200_000);
        let finished = run(&ctx, &program).await.unwrap();
        assert_eq!(finished.stdout.inline.len(), 1000);
        assert!(finished.stdout.truncated);
        assert_eq!(finished.stdout.total_bytes, 300_000);
        assert_eq!(finished.stdout.kept().len(), 200_000);
        assert!(finished.stdout.kept().iter().all(|b| *b == b'x'));
        assert_eq!(finished.stderr.inline, b"small");
        assert!(!finished.stderr.truncated);
        let artifacts = finished.artifacts("run");
        assert_eq!(artifacts.len(), 1, "only the stream that was cut");
        assert_eq!(artifacts[0].name, "run.stdout.txt");
        assert_eq!(artifacts[0].bytes.len(), 200_000);
    }

    #[tokio::test]
    async fn programs_run_without_a_shell_in_a_scrubbed_environment_inside_the_workspace() {
        let h = harness().await;
        std::fs::create_dir(h.root.join("sub")).unwrap();
        let ctx = h.context("inv-env", Duration::from_secs(20));
        let program = Program::new(["sh", "-c", "pwd; env | sort"])
            .env("TOOL_SETTING", "on")
            .cwd("sub");
        let finished = run(&ctx, &program).await.unwrap();
        let out = String::from_utf8(finished.stdout.inline).unwrap();
        assert!(out.lines().next().unwrap().ends_with("/ws/sub"), "{out}");
        assert!(out.contains("TOOL_SETTING=on\n"), "{out}");
        assert!(
            !out.contains("CARGO_PKG_NAME") && !out.contains("CARGO_MANIFEST_DIR"),
            "the service's environment stays out: {out}"
        );
        // Build caches live in the workspace, never in a directory sessions share.
        let cache = h.root.join(".workspace-cache");
        for var in [
            "GOCACHE",
            "GOMODCACHE",
            "CARGO_HOME",
            "npm_config_cache",
            "PIP_CACHE_DIR",
        ] {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{var}=")))
                .unwrap_or_else(|| panic!("{var} is set: {out}"));
            assert!(line.contains(&*cache.to_string_lossy()), "{line}");
        }
        // argv[0] is a program name, never shell syntax.
        let err = run(&ctx, &Program::new(["echo hi; true"]))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ExecutionFailed);
        let err = run(&ctx, &Program::new(["true"]).cwd(".."))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PolicyDenied);
        let err = run(&ctx, &Program::new(["true"]).env("LD_PRELOAD", "x.so"))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
    }
}
