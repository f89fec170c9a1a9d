//! The runner's server: a unix socket inside the session boundary that answers
//! [`protocol::Request`](super::protocol::Request)s.
//!
//! Each connection runs in its own task and handles one request at a time; the reply carries the
//! request's id. Filesystem requests go to [`Workspace`] (confined paths) on the blocking pool;
//! `exec` spawns the program itself, without a shell, in a fresh process group whose every member
//! is killed on timeout, when the program exits, or when the client goes away.
//!
//! The server never decides policy (the control plane did) and never reaches outside the
//! workspace root it was given: confinement lives in [`super::confine`].

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::confine::{OpError, Workspace, WorkspacePath};
use super::frame::{FrameError, encode_frame, read_payload};
use super::protocol::{
    Bytes, Frame, JsonText, MAX_FRAME_BYTES, OutputChannel, PROTOCOL_VERSION, Reply, Request,
    RunnerErrorCode, utf8_text,
};

/// Default `PATH` of every executed program (a runner started with `--exec-path` puts the
/// configured toolchain directories first).
pub const EXEC_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The workspace directory that holds the build caches of executed programs (Go, Cargo, npm,
/// pip, XDG): inside the workspace, so nothing a session builds is written to, or read from,
/// a directory another session shares.
pub const CACHE_DIR: &str = ".workspace-cache";
/// Largest read a single `read_file` returns: its base64 must fit a frame.
pub const MAX_READ_BYTES: u64 = 11 * 1024 * 1024;
/// Largest capture of stdout and of stderr each: both, base64-encoded, must fit one frame.
pub const MAX_EXEC_OUTPUT_BYTES: u64 = 4 * 1024 * 1024;
/// Largest streamed output of stdout and of stderr each (`stream_output`): chunks are small
/// frames, so this bounds what the client has to hold, not a frame.
pub const MAX_STREAMED_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Chunks of one running program waiting for the connection's writer.
const CHUNK_QUEUE: usize = 16;
/// Open-file limit of executed programs, and of a whole sandbox: there programs are spawned
/// without a pre-exec hook and inherit the runner's limits.
pub const EXEC_NOFILE: libc::rlim_t = 1024;
/// After the program exits and its process group is killed, how long the output pipes may stay
/// open (held by a process that left the group with `setsid`) before the reply goes out anyway.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// A bound runner server; [`RunnerServer::run_until_stopped`] serves it.
#[derive(Debug)]
pub struct RunnerServer {
    listener: UnixListener,
    socket_path: PathBuf,
    workspace: Arc<Workspace>,
    isolation: &'static str,
    exec_path: Arc<str>,
}

impl RunnerServer {
    /// Opens the workspace root and binds `listen` (mode 0600, replacing a stale socket left by
    /// a previous runner). Must be called inside a tokio runtime.
    pub fn bind(listen: &Path, root: &Path, isolation: &'static str) -> io::Result<Self> {
        let workspace = Arc::new(Workspace::open(root)?);
        match std::fs::symlink_metadata(listen) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(listen)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the listen path exists and is not a socket",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(listen)?;
        // The socket's directory is private to the provider (0700); the mode is belt and braces.
        std::fs::set_permissions(listen, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            socket_path: listen.to_path_buf(),
            workspace,
            isolation,
            exec_path: Arc::from(EXEC_PATH),
        })
    }

    /// Serves the workspace at `root` on a socket that is already bound and listening: how
    /// providers start runners, so the runner needs no access to the socket's directory, which
    /// stays outside the sandbox. The descriptor must be close-on-exec, or every program the
    /// runner spawns would inherit it. Must be called inside a tokio runtime.
    pub fn from_listener(
        listener: std::os::unix::net::UnixListener,
        root: &Path,
        isolation: &'static str,
    ) -> io::Result<Self> {
        let workspace = Arc::new(Workspace::open(root)?);
        let socket_path = listener
            .local_addr()
            .ok()
            .and_then(|addr| addr.as_pathname().map(Path::to_path_buf))
            .unwrap_or_default();
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener: UnixListener::from_std(listener)?,
            socket_path,
            workspace,
            isolation,
            exec_path: Arc::from(EXEC_PATH),
        })
    }

    /// Runs programs with this `PATH` instead of [`EXEC_PATH`] (the toolchain directories a
    /// provider made visible, then [`EXEC_PATH`]).
    pub fn with_exec_path(mut self, path: impl Into<String>) -> Self {
        self.exec_path = Arc::from(path.into());
        self
    }

    /// Where the server listens (as the socket was bound: for an inherited socket, a host
    /// path that may not exist in the runner's view).
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Accepts connections until `shutdown` completes, then aborts the open connections (which
    /// kills the process groups of running `exec`s).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(serve_connection(
                            stream,
                            Arc::clone(&self.workspace),
                            self.isolation,
                            Arc::clone(&self.exec_path),
                        ));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "runner accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
        connections.shutdown().await;
        Ok(())
    }
}

/// Binds `listen` and serves the workspace at `root` forever.
pub async fn serve(listen: &Path, root: &Path, isolation: &'static str) -> io::Result<()> {
    RunnerServer::bind(listen, root, isolation)?
        .run_until_stopped(std::future::pending())
        .await
}

async fn serve_connection(
    stream: UnixStream,
    workspace: Arc<Workspace>,
    isolation: &'static str,
    exec_path: Arc<str>,
) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    // Replies not yet written: while more requests are already buffered (a pipelining client),
    // their replies are collected and leave in one write.
    let mut out: Vec<u8> = Vec::new();
    loop {
        if reader.buffer().is_empty() && !out.is_empty() {
            if writer.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        let payload = match read_payload(&mut reader).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "runner connection closed on a bad frame");
                return;
            }
        };
        let (id, request) = match serde_json::from_slice::<Frame<Request>>(&payload) {
            Ok(frame) => (frame.id, Ok(frame.body)),
            // An unknown op (a newer client) still gets an answer with its id when the id can be
            // read; a frame without one cannot be answered.
            Err(e) => match serde_json::from_slice::<FrameId>(&payload) {
                Ok(frame) => (frame.id, Err(e)),
                Err(_) => return,
            },
        };
        // A slow request must not hold back the replies of the quick ones before it.
        if !matches!(&request, Ok(r) if r.is_quick()) && !out.is_empty() {
            if writer.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        let reply = match request {
            Err(e) => OpError::new(
                RunnerErrorCode::InvalidArgument,
                format!("malformed or unknown request: {e}"),
            )
            .into_reply(),
            Ok(Request::Exec {
                argv,
                env,
                cwd,
                stdin,
                timeout_ms,
                max_output_bytes,
                stream_output,
            }) => {
                let spec = ExecSpec {
                    argv,
                    env,
                    cwd,
                    stdin: stdin.map(|b| b.0),
                    timeout: Duration::from_millis(timeout_ms),
                    max_output_bytes,
                    path: exec_path.to_string(),
                };
                let (tx, mut rx) = tokio::sync::mpsc::channel::<ExecChunk>(CHUNK_QUEUE);
                let exec = exec(&workspace, isolation, spec, stream_output.then_some(tx));
                tokio::pin!(exec);
                let reply = loop {
                    tokio::select! {
                        // Chunks first: each leaves before anything read after it.
                        biased;
                        Some(chunk) = rx.recv() => {
                            if write_chunk(&mut writer, id, chunk).await.is_err() {
                                return;
                            }
                        }
                        reply = &mut exec => break reply,
                        () = client_gone(&mut reader) => {
                            // Dropping the exec future kills its whole process group.
                            return;
                        }
                    }
                };
                // The exec is over and its sender dropped: what it handed out is all here.
                while let Ok(chunk) = rx.try_recv() {
                    if write_chunk(&mut writer, id, chunk).await.is_err() {
                        return;
                    }
                }
                reply
            }
            Ok(request) if request.is_quick() => handle(&workspace, isolation, request),
            Ok(request) => {
                let ws = Arc::clone(&workspace);
                match tokio::task::spawn_blocking(move || handle(&ws, isolation, request)).await {
                    Ok(reply) => reply,
                    Err(e) => OpError::new(RunnerErrorCode::Io, format!("request failed: {e}"))
                        .into_reply(),
                }
            }
        };
        let bytes = match encode_frame(&Frame { id, body: &reply }) {
            Ok(bytes) => bytes,
            Err(FrameError::TooLarge { len, .. }) => {
                let error = OpError::new(
                    RunnerErrorCode::InvalidArgument,
                    format!("reply of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit"),
                )
                .into_reply();
                match encode_frame(&Frame { id, body: error }) {
                    Ok(bytes) => bytes,
                    Err(_) => return,
                }
            }
            Err(_) => return,
        };
        out.extend_from_slice(&bytes);
    }
}

/// Writes one chunk of a running `exec` as a [`Reply::Output`] frame with the request's id.
async fn write_chunk(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    id: u64,
    chunk: ExecChunk,
) -> io::Result<()> {
    let body = Reply::Output {
        channel: chunk.channel,
        offset: chunk.offset,
        data: Bytes(chunk.data),
    };
    // A chunk is at most one pipe read (32 KiB): always far below the frame limit.
    let bytes = encode_frame(&Frame { id, body }).map_err(io::Error::other)?;
    writer.write_all(&bytes).await
}

/// The id of a frame whose body could not be decoded.
#[derive(serde::Deserialize)]
struct FrameId {
    id: u64,
}

/// Completes when the client hangs up. Bytes arriving meanwhile (a pipelined request) stay
/// buffered for the next read and end the watch: the client is evidently still there.
async fn client_gone(reader: &mut BufReader<OwnedReadHalf>) {
    match reader.fill_buf().await {
        Ok([]) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Answers every request except `exec` (blocking filesystem work).
pub fn handle(workspace: &Workspace, isolation: &'static str, request: Request) -> Reply {
    handle_inner(workspace, isolation, request).unwrap_or_else(OpError::into_reply)
}

fn handle_inner(
    ws: &Workspace,
    isolation: &'static str,
    request: Request,
) -> Result<Reply, OpError> {
    Ok(match request {
        Request::Hello { version } => {
            if version != PROTOCOL_VERSION {
                return Err(OpError::new(
                    RunnerErrorCode::InvalidArgument,
                    format!(
                        "protocol version {version} is not supported; this runner speaks {PROTOCOL_VERSION}"
                    ),
                ));
            }
            Reply::Hello {
                version: PROTOCOL_VERSION,
                isolation: isolation.to_owned(),
            }
        }
        Request::ReadFile { path, max_bytes } => {
            let read =
                ws.read_file(&WorkspacePath::parse(&path)?, max_bytes.min(MAX_READ_BYTES))?;
            Reply::File {
                content: Bytes(read.content),
                size_bytes: read.size_bytes,
                truncated: read.truncated,
            }
        }
        Request::ReadText { path, max_bytes } => {
            let read =
                ws.read_file(&WorkspacePath::parse(&path)?, max_bytes.min(MAX_READ_BYTES))?;
            match utf8_text(read.content, read.truncated) {
                Ok(text) => Reply::Text {
                    returned_bytes: text.len() as u64,
                    text: JsonText::Text(text),
                    size_bytes: read.size_bytes,
                    truncated: read.truncated,
                },
                Err(bytes) => Reply::File {
                    content: Bytes(bytes),
                    size_bytes: read.size_bytes,
                    truncated: read.truncated,
                },
            }
        }
        Request::WriteFile {
            path,
            content,
            create_parents,
            create_new,
            snapshot,
        } => {
            let path = WorkspacePath::parse(&path)?;
            let written = if snapshot {
                ws.write_file_snapshotted(&path, &content.0, create_parents, create_new)?
            } else {
                ws.write_file(&path, &content.0, create_parents, create_new)?
            };
            Reply::Written {
                bytes_written: written.bytes_written,
                created: written.created,
            }
        }
        Request::UndoEdit { path } => {
            let undone = ws.undo_edit(&WorkspacePath::parse(&path)?)?;
            Reply::Undone {
                deleted: undone.deleted,
                size_bytes: undone.size_bytes,
                sha256: undone.sha256,
            }
        }
        Request::List {
            path,
            recursive,
            max_entries,
        } => {
            let listed = ws.list(&WorkspacePath::parse(&path)?, recursive, max_entries)?;
            Reply::Entries {
                entries: listed.items,
                truncated: listed.truncated,
            }
        }
        Request::Stat { path } => Reply::Stat {
            entry: ws.stat(&WorkspacePath::parse(&path)?)?,
        },
        Request::Mkdir {
            path,
            create_parents,
            mode,
            exist_ok,
        } => Reply::Mkdir {
            created: ws.mkdir(
                &WorkspacePath::parse(&path)?,
                create_parents,
                mode,
                exist_ok,
            )?,
        },
        Request::Move {
            from,
            to,
            overwrite,
            create_parents,
        } => Reply::Moved {
            moved: ws.rename(
                &WorkspacePath::parse(&from)?,
                &WorkspacePath::parse(&to)?,
                overwrite,
                create_parents,
            )?,
        },
        Request::Copy {
            from,
            to,
            recursive,
            overwrite,
            create_parents,
        } => Reply::Copied {
            entry_type: ws.copy(
                &WorkspacePath::parse(&from)?,
                &WorkspacePath::parse(&to)?,
                recursive,
                overwrite,
                create_parents,
            )?,
        },
        Request::Remove {
            path,
            recursive,
            force,
        } => {
            let removed = ws.remove(&WorkspacePath::parse(&path)?, recursive, force)?;
            Reply::Removed {
                deleted: removed.deleted,
                existed: removed.existed,
            }
        }
        Request::Search {
            path,
            pattern,
            max_results,
            include_glob,
        } => {
            let path = WorkspacePath::parse(&path)?;
            let regex = regex::bytes::RegexBuilder::new(&pattern)
                .size_limit(16 * 1024 * 1024)
                .build()
                .map_err(|e| invalid(format!("invalid regular expression: {e}")))?;
            let include = include_glob.as_deref().map(compile_glob).transpose()?;
            let found = ws.search(&path, &regex, include.as_ref(), max_results)?;
            Reply::Matches {
                matches: found.items,
                truncated: found.truncated,
            }
        }
        Request::Glob {
            path,
            pattern,
            max_results,
        } => {
            let path = WorkspacePath::parse(&path)?;
            let glob = compile_glob(&pattern)?;
            let found = ws.glob(&path, &glob, pattern.contains(".git"), max_results)?;
            Reply::Entries {
                entries: found.items,
                truncated: found.truncated,
            }
        }
        Request::Exec { .. } => {
            return Err(invalid("exec is handled asynchronously".to_owned()));
        }
    })
}

fn invalid(message: String) -> OpError {
    OpError::new(RunnerErrorCode::InvalidArgument, message)
}

/// Globs match workspace-relative paths; `*` stops at `/` and `**` crosses directories.
fn compile_glob(pattern: &str) -> Result<globset::GlobMatcher, OpError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| invalid(format!("invalid glob: {e}")))
}

/// One `exec` request, decoded.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment on top of the scrubbed base.
    pub env: BTreeMap<String, String>,
    /// Workspace-relative working directory.
    pub cwd: String,
    /// Bytes for stdin (stdin is `/dev/null` when `None`).
    pub stdin: Option<Vec<u8>>,
    /// Kill the process group after this long.
    pub timeout: Duration,
    /// Keep at most this many bytes of stdout and of stderr each.
    pub max_output_bytes: u64,
    /// `PATH` of the program (the runner's [`EXEC_PATH`] or `--exec-path`); the request's
    /// own `env` may override it.
    pub path: String,
}

/// Kills a process group when dropped, unless the group was already killed: whatever way the
/// exec ends (reply, timeout, client gone, panic), nothing it started outlives it.
struct GroupKill {
    pgid: libc::pid_t,
    done: bool,
}

impl GroupKill {
    fn kill(&mut self) {
        if self.pgid > 0 {
            // SAFETY: killpg has no memory-safety preconditions; ESRCH (group gone) is fine.
            unsafe {
                libc::killpg(self.pgid, libc::SIGKILL);
            }
        }
        self.done = true;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
        }
    }
}

/// Keeps the first `cap` bytes of a stream (or, streamed, hands them out as chunks) and counts
/// all of them.
struct Capture {
    kept: Vec<u8>,
    cap: usize,
    /// Bytes kept or handed out so far (at most `cap`).
    taken: usize,
    total: u64,
    streamed: bool,
}

impl Capture {
    fn new(cap: u64, streamed: bool) -> Self {
        Self {
            kept: Vec::new(),
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            taken: 0,
            total: 0,
            streamed,
        }
    }

    /// Counts `chunk`; returns the part to stream, with its offset, when streaming.
    fn push(&mut self, chunk: &[u8]) -> Option<(u64, Vec<u8>)> {
        self.total += chunk.len() as u64;
        let room = self.cap.saturating_sub(self.taken);
        let part = &chunk[..chunk.len().min(room)];
        if part.is_empty() {
            return None;
        }
        let offset = self.taken as u64;
        self.taken += part.len();
        if self.streamed {
            Some((offset, part.to_vec()))
        } else {
            self.kept.extend_from_slice(part);
            None
        }
    }
}

/// One chunk of a running program's output, on its way to the connection's writer.
#[derive(Debug)]
pub struct ExecChunk {
    /// Which stream.
    pub channel: OutputChannel,
    /// Position of the first byte in the stream.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Reads from an optional pipe; a closed (`None`) pipe never completes.
async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), OpError> {
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(invalid(format!(
                "invalid environment variable name or value: {key:?}"
            )));
        }
    }
    Ok(())
}

/// Runs one program to completion (or timeout) and captures its output; with `chunks`, hands
/// the output out as it is read instead (at most `max_output_bytes` of each stream, up to
/// [`MAX_STREAMED_OUTPUT_BYTES`]). A reader of `chunks` that does not keep up slows the program
/// down (its pipes fill), never past its timeout: a chunk that cannot be handed out before the
/// deadline ends the run as a timeout.
pub async fn exec(
    workspace: &Workspace,
    isolation: &str,
    spec: ExecSpec,
    chunks: Option<tokio::sync::mpsc::Sender<ExecChunk>>,
) -> Reply {
    exec_inner(workspace, isolation, spec, chunks)
        .await
        .unwrap_or_else(OpError::into_reply)
}

async fn exec_inner(
    workspace: &Workspace,
    isolation: &str,
    spec: ExecSpec,
    chunks: Option<tokio::sync::mpsc::Sender<ExecChunk>>,
) -> Result<Reply, OpError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(invalid("argv is empty".to_owned()));
    };
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid("argv contains a NUL byte".to_owned()));
    }
    validate_env(&spec.env)?;
    let cwd = workspace.open_dir(&WorkspacePath::parse(&spec.cwd)?)?;
    let cwd_fd = cwd.as_raw_fd();
    let streamed = chunks.is_some();
    let cap = spec.max_output_bytes.min(if streamed {
        MAX_STREAMED_OUTPUT_BYTES
    } else {
        MAX_EXEC_OUTPUT_BYTES
    });

    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", &spec.path)
        .env("HOME", workspace.root_path())
        .env("LANG", "C.UTF-8")
        .envs(cache_env(workspace.root_path()))
        .envs(&spec.env)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if isolation == "unsandboxed" {
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (fchdir, setrlimit, prctl) on plain integers; `cwd`
        // stays open (and so `cwd_fd` valid) until after spawn returns.
        unsafe {
            command.pre_exec(move || {
                // fchdir to the descriptor opened beneath the root: no path is re-resolved, so
                // a symlink swapped in after the check cannot move the program out of the
                // workspace.
                if libc::fchdir(cwd_fd) != 0 {
                    return Err(io::Error::last_os_error());
                }
                super::limits::apply_in_child(EXEC_NOFILE);
                Ok(())
            });
        }
    } else {
        // In a sandbox (or a pod) the runner's limits (no core dumps, EXEC_NOFILE files) were
        // set when it started and are inherited, and if the runner dies its PID namespace ends
        // and the kernel kills everything it started: no pre-exec hook is needed, so std spawns
        // with posix_spawn instead of forking the runner's address space (about a quarter of a
        // millisecond less per process here). The working directory is the descriptor opened
        // beneath the root, reached through its /proc/self/fd magic link, which names that
        // open directory itself: no path is re-resolved, as with fchdir.
        command.current_dir(format!("/proc/self/fd/{cwd_fd}"));
    }

    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| spawn_error(program, &e))?;
    drop(cwd);
    let mut group = GroupKill {
        pgid: child
            .id()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .unwrap_or(0),
        done: false,
    };

    let stdin_task = match (spec.stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => Some(tokio::spawn(async move {
            // A program that exits without reading stdin makes this fail with EPIPE: fine.
            let _ = pipe.write_all(&bytes).await;
        })),
        _ => None,
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out = Capture::new(cap, streamed);
    let mut err = Capture::new(cap, streamed);
    let mut out_buf = vec![0u8; 32 * 1024];
    let mut err_buf = vec![0u8; 32 * 1024];
    let deadline = started + spec.timeout;
    let mut status = None;
    let mut timed_out = false;
    let mut drain_until: Option<Instant> = None;

    while status.is_none() || stdout.is_some() || stderr.is_some() {
        let wake = drain_until.unwrap_or(deadline);
        let mut chunk = None;
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Ok(n) if n > 0 => {
                    chunk = out.push(&out_buf[..n]).map(|(offset, data)| ExecChunk {
                        channel: OutputChannel::Stdout,
                        offset,
                        data,
                    });
                }
                _ => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Ok(n) if n > 0 => {
                    chunk = err.push(&err_buf[..n]).map(|(offset, data)| ExecChunk {
                        channel: OutputChannel::Stderr,
                        offset,
                        data,
                    });
                }
                _ => stderr = None,
            },
            exited = child.wait(), if status.is_none() => {
                let exited = exited.map_err(|e| OpError::new(
                    RunnerErrorCode::Io,
                    format!("waiting for {program} failed: {e}"),
                ))?;
                status = Some(exited);
                // Whatever the program left running in its group would hold the pipes open.
                group.kill();
                drain_until = Some(deadline.min(Instant::now() + DRAIN_GRACE));
            }
            () = tokio::time::sleep_until(wake) => {
                if status.is_some() {
                    // Something outside the group still holds the pipes: reply with what we have.
                    break;
                }
                timed_out = true;
                group.kill();
                let exited = child.wait().await.map_err(|e| OpError::new(
                    RunnerErrorCode::Io,
                    format!("waiting for {program} failed: {e}"),
                ))?;
                status = Some(exited);
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
        }
        if let (Some(chunk), Some(tx)) = (chunk, chunks.as_ref()) {
            let until = drain_until.unwrap_or(deadline);
            match tokio::time::timeout_at(until, tx.send(chunk)).await {
                // Sent; or the connection is gone, and with it this future in a moment.
                Ok(_) => {}
                // The reader did not take the output before the deadline.
                Err(_) if status.is_none() => {
                    timed_out = true;
                    group.kill();
                    let exited = child.wait().await.map_err(|e| {
                        OpError::new(
                            RunnerErrorCode::Io,
                            format!("waiting for {program} failed: {e}"),
                        )
                    })?;
                    status = Some(exited);
                    drain_until = Some(Instant::now() + DRAIN_GRACE);
                }
                Err(_) => break,
            }
        }
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
    let exit_code = match status {
        _ if timed_out => 124,
        Some(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(-1),
        None => -1,
    };
    Ok(Reply::Exited {
        exit_code,
        stdout: Bytes(out.kept),
        stderr: Bytes(err.kept),
        stdout_total_bytes: out.total,
        stderr_total_bytes: err.total,
        timed_out,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The build caches of every executed program, under [`CACHE_DIR`] in the workspace: Go's
/// build and module caches and `GOPATH`, `CARGO_HOME`, npm's and pip's caches and the XDG
/// cache and configuration (what other tools default to). Created by the programs when they first write there.
pub fn cache_env(root: &Path) -> [(&'static str, PathBuf); 8] {
    let cache = root.join(CACHE_DIR);
    [
        ("XDG_CACHE_HOME", cache.clone()),
        // Go keeps its telemetry and `go env -w` settings there.
        ("XDG_CONFIG_HOME", cache.join("config")),
        ("GOCACHE", cache.join("go-build")),
        ("GOMODCACHE", cache.join("go-mod")),
        ("GOPATH", cache.join("go")),
        ("CARGO_HOME", cache.join("cargo")),
        ("npm_config_cache", cache.join("npm")),
        ("PIP_CACHE_DIR", cache.join("pip")),
    ]
}

fn spawn_error(program: &str, err: &io::Error) -> OpError {
    let message = match err.kind() {
        io::ErrorKind::NotFound => format!("{program}: command not found"),
        io::ErrorKind::PermissionDenied => format!("{program}: permission denied"),
        _ => format!("{program}: {err}"),
    };
    OpError::new(RunnerErrorCode::SpawnFailed, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::SessionRunner;
    use crate::runner::client::SocketRunner;
    use crate::runner::frame::read_frame;
    use crate::runner::protocol::EntryType;

    struct Served {
        _dir: tempfile::TempDir,
        root: PathBuf,
        runner: SocketRunner,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl Drop for Served {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    async fn served() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        let socket = dir.path().join("runner.sock");
        let server = RunnerServer::bind(&socket, &root, "unsandboxed").unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Served {
            _dir: dir,
            root,
            runner: SocketRunner::new(socket, "unsandboxed"),
            stop: Some(stop),
        }
    }

    const T: Duration = Duration::from_secs(20);

    fn exec_req(argv: &[&str], timeout_ms: u64, max_output_bytes: u64) -> Request {
        Request::Exec {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env: BTreeMap::new(),
            cwd: ".".into(),
            stdin: None,
            timeout_ms,
            max_output_bytes,
            stream_output: false,
        }
    }

    fn error_code(reply: &Reply) -> Option<RunnerErrorCode> {
        match reply {
            Reply::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Host processes whose command line contains `marker`.
    fn processes_with(marker: &str) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // Zombies have released everything; they are not running.
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

    async fn wait_until_gone(marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_with(marker).is_empty() {
            assert!(Instant::now() < deadline, "processes {marker} survived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn hello_answers_with_version_and_isolation_and_refuses_other_versions() {
        let s = served().await;
        let reply = s
            .runner
            .call(
                Request::Hello {
                    version: PROTOCOL_VERSION,
                },
                T,
            )
            .await
            .unwrap();
        assert!(
            matches!(reply, Reply::Hello { version, ref isolation } if version == PROTOCOL_VERSION && isolation == "unsandboxed")
        );
        let reply = s
            .runner
            .call(
                Request::Hello {
                    version: PROTOCOL_VERSION - 1,
                },
                T,
            )
            .await
            .unwrap();
        assert_eq!(error_code(&reply), Some(RunnerErrorCode::InvalidArgument));
    }

    #[tokio::test]
    async fn file_operations_round_trip_over_the_socket() {
        let s = served().await;
        let write = Request::WriteFile {
            path: "src/lib.rs".into(),
            content: Bytes(b"pub fn answer() -> u32 { 42 }\n".to_vec()),
            create_parents: true,
            create_new: false,
            snapshot: false,
        };
        let reply = s.runner.call(write, T).await.unwrap();
        assert!(
            matches!(
                reply,
                Reply::Written {
                    bytes_written: 30,
                    created: true
                }
            ),
            "{reply:?}"
        );
        let reply = s
            .runner
            .call(
                Request::ReadFile {
                    path: "src/lib.rs".into(),
                    max_bytes: 6,
                },
                T,
            )
            .await
            .unwrap();
        match reply {
            Reply::File {
                content,
                size_bytes,
                truncated,
            } => {
                assert_eq!(content.0, b"pub fn");
                assert_eq!((size_bytes, truncated), (30, true));
            }
            other => panic!("{other:?}"),
        }
        let reply = s
            .runner
            .call(
                Request::Stat {
                    path: "nope".into(),
                },
                T,
            )
            .await
            .unwrap();
        assert!(matches!(reply, Reply::Stat { entry: None }));
        let reply = s
            .runner
            .call(Request::Stat { path: "src".into() }, T)
            .await
            .unwrap();
        assert!(
            matches!(reply, Reply::Stat { entry: Some(ref e) } if e.entry_type == EntryType::Dir)
        );
        let reply = s
            .runner
            .call(
                Request::List {
                    path: "".into(),
                    recursive: true,
                    max_entries: 10,
                },
                T,
            )
            .await
            .unwrap();
        match reply {
            Reply::Entries { entries, truncated } => {
                let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
                assert_eq!(paths, ["src", "src/lib.rs"]);
                assert!(!truncated);
                assert!(entries[1].modified_at.ends_with('Z'));
            }
            other => panic!("{other:?}"),
        }
        let search = Request::Search {
            path: ".".into(),
            pattern: r"answer\(\)".into(),
            max_results: 5,
            include_glob: Some("**/*.rs".into()),
        };
        match s.runner.call(search, T).await.unwrap() {
            Reply::Matches { matches, truncated } => {
                assert_eq!(matches.len(), 1);
                assert_eq!(
                    (matches[0].path.as_str(), matches[0].line),
                    ("src/lib.rs", 1)
                );
                assert!(!truncated);
            }
            other => panic!("{other:?}"),
        }
        let bad = Request::Search {
            path: ".".into(),
            pattern: "(".into(),
            max_results: 5,
            include_glob: None,
        };
        let reply = s.runner.call(bad, T).await.unwrap();
        assert_eq!(error_code(&reply), Some(RunnerErrorCode::InvalidArgument));
        let glob = Request::Glob {
            path: "".into(),
            pattern: "src/*.rs".into(),
            max_results: 5,
        };
        assert!(matches!(
            s.runner.call(glob, T).await.unwrap(),
            Reply::Entries { ref entries, truncated: false } if entries.len() == 1
        ));
        let mv = Request::Move {
            from: "src".into(),
            to: "lib/src".into(),
            overwrite: false,
            create_parents: true,
        };
        assert!(matches!(
            s.runner.call(mv, T).await.unwrap(),
            Reply::Moved { moved: true }
        ));
        let cp = Request::Copy {
            from: "lib".into(),
            to: "lib2".into(),
            recursive: true,
            overwrite: false,
            create_parents: false,
        };
        assert!(matches!(
            s.runner.call(cp, T).await.unwrap(),
            Reply::Copied {
                entry_type: EntryType::Dir
            }
        ));
        assert!(s.root.join("lib2/src/lib.rs").is_file());
        let mk = Request::Mkdir {
            path: "m".into(),
            create_parents: false,
            mode: 0o700,
            exist_ok: false,
        };
        assert!(matches!(
            s.runner.call(mk, T).await.unwrap(),
            Reply::Mkdir { created: true }
        ));
        let rm = Request::Remove {
            path: "lib2".into(),
            recursive: true,
            force: false,
        };
        assert!(matches!(
            s.runner.call(rm, T).await.unwrap(),
            Reply::Removed {
                deleted: true,
                existed: true
            }
        ));
        let escape = Request::ReadFile {
            path: "../etc/passwd".into(),
            max_bytes: 10,
        };
        let reply = s.runner.call(escape, T).await.unwrap();
        assert_eq!(error_code(&reply), Some(RunnerErrorCode::PolicyDenied));
    }

    #[tokio::test]
    async fn an_unknown_request_is_answered_with_an_error_and_the_connection_survives() {
        let s = served().await;
        let mut stream = UnixStream::connect(s.runner.socket_path()).await.unwrap();
        let frame = Frame {
            id: 41,
            body: serde_json::json!({"teleport": {}}),
        };
        stream
            .write_all(&encode_frame(&frame).unwrap())
            .await
            .unwrap();
        let reply: Frame<Reply> = read_frame(&mut stream).await.unwrap().unwrap();
        assert_eq!(reply.id, 41);
        assert_eq!(
            error_code(&reply.body),
            Some(RunnerErrorCode::InvalidArgument)
        );
        let frame = Frame {
            id: 42,
            body: Request::Hello {
                version: PROTOCOL_VERSION,
            },
        };
        stream
            .write_all(&encode_frame(&frame).unwrap())
            .await
            .unwrap();
        let reply: Frame<Reply> = read_frame(&mut stream).await.unwrap().unwrap();
        assert_eq!(reply.id, 42);
        assert!(matches!(reply.body, Reply::Hello { .. }));
    }

    #[tokio::test]
    async fn exec_runs_without_a_shell_in_a_scrubbed_environment() {
        let s = served().await;
        std::fs::create_dir(s.root.join("sub")).unwrap();
        let mut env = BTreeMap::new();
        env.insert("GREETING".to_owned(), "hi there".to_owned());
        let req = Request::Exec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "pwd; env | sort; cat; exit 3".into(),
            ],
            env,
            cwd: "sub".into(),
            stdin: Some(Bytes(b"from stdin".to_vec())),
            timeout_ms: 10_000,
            max_output_bytes: 10_000,
            stream_output: false,
        };
        match s.runner.call(req, T).await.unwrap() {
            Reply::Exited {
                exit_code,
                stdout,
                timed_out,
                ..
            } => {
                let out = String::from_utf8(stdout.0).unwrap();
                assert_eq!(exit_code, 3);
                assert!(!timed_out);
                let real = std::fs::canonicalize(s.root.join("sub")).unwrap();
                assert!(out.starts_with(&format!("{}\n", real.display())), "{out}");
                assert!(out.contains("GREETING=hi there\n"), "{out}");
                assert!(out.contains(&format!("PATH={EXEC_PATH}\n")), "{out}");
                assert!(
                    out.contains(&format!("HOME={}\n", s.root.display())),
                    "{out}"
                );
                assert!(out.contains("LANG=C.UTF-8\n"), "{out}");
                assert!(!out.contains("CARGO_PKG_NAME"), "{out}");
                // The build caches, in the workspace.
                let cache = s.root.join(CACHE_DIR);
                assert!(
                    out.contains(&format!("GOCACHE={}\n", cache.join("go-build").display())),
                    "{out}"
                );
                assert!(
                    out.contains(&format!("CARGO_HOME={}\n", cache.join("cargo").display())),
                    "{out}"
                );
                assert!(out.ends_with("from stdin"), "{out}");
            }
            other => panic!("{other:?}"),
        }
        // argv[0] is not interpreted by a shell.
        let reply = s
            .runner
            .call(exec_req(&["echo $HOME; true"], 5_000, 100), T)
            .await
            .unwrap();
        assert_eq!(error_code(&reply), Some(RunnerErrorCode::SpawnFailed));
        let reply = s.runner.call(exec_req(&[], 5_000, 100), T).await.unwrap();
        assert_eq!(error_code(&reply), Some(RunnerErrorCode::InvalidArgument));
        let mut outside = exec_req(&["true"], 5_000, 100);
        if let Request::Exec { cwd, .. } = &mut outside {
            *cwd = "..".into();
        }
        let reply = s.runner.call(outside, T).await.unwrap();
        assert_eq!(error_code(&reply), Some(RunnerErrorCode::PolicyDenied));
        match s
            .runner
            .call(exec_req(&["sh", "-c", "kill -TERM $$"], 5_000, 100), T)
            .await
            .unwrap()
        {
            Reply::Exited { exit_code, .. } => assert_eq!(exit_code, 128 + libc::SIGTERM),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn exec_timeout_kills_the_process_tree_and_keeps_partial_output() {
        let s = served().await;
        let marker = format!("30.{}", std::process::id());
        let script = format!("echo started; echo oops >&2; sleep {marker} & sleep {marker}");
        let started = Instant::now();
        let reply = s
            .runner
            .call(exec_req(&["sh", "-c", &script], 300, 1000), T)
            .await
            .unwrap();
        match reply {
            Reply::Exited {
                exit_code,
                stdout,
                stderr,
                timed_out,
                duration_ms,
                ..
            } => {
                assert_eq!(exit_code, 124);
                assert!(timed_out);
                assert_eq!(stdout.0, b"started\n");
                assert_eq!(stderr.0, b"oops\n");
                assert!(duration_ms >= 300);
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        wait_until_gone(&marker).await;
    }

    #[tokio::test]
    async fn a_streamed_exec_sends_its_output_while_it_runs_then_its_final_reply() {
        let s = served().await;
        // The program cannot end before the test has seen its first chunk.
        let script =
            "printf one; while [ ! -e go ]; do sleep 0.01; done; printf two >&2; printf three";
        let mut request = exec_req(&["sh", "-c", script], 20_000, 1000);
        if let Request::Exec { stream_output, .. } = &mut request {
            *stream_output = true;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let call = tokio::spawn({
            let runner = SocketRunner::new(s.runner.socket_path(), "unsandboxed");
            async move { runner.exec_streaming(request, T, tx).await }
        });
        let first = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
        assert_eq!(
            (first.channel, first.offset, first.data.as_slice()),
            (OutputChannel::Stdout, 0, &b"one"[..])
        );
        assert!(!call.is_finished(), "the program is still running");
        std::fs::write(s.root.join("go"), "").unwrap();
        let mut rest = Vec::new();
        while let Some(chunk) = tokio::time::timeout(T, rx.recv()).await.unwrap() {
            rest.push((chunk.channel, chunk.offset, chunk.data));
        }
        // In order within a stream; two pipes have no order between them.
        rest.sort();
        assert_eq!(
            rest,
            [
                (OutputChannel::Stdout, 3, b"three".to_vec()),
                (OutputChannel::Stderr, 0, b"two".to_vec())
            ]
        );
        match call.await.unwrap().unwrap() {
            Reply::Exited {
                exit_code: 0,
                stdout,
                stderr,
                stdout_total_bytes: 8,
                stderr_total_bytes: 3,
                timed_out: false,
                ..
            } => assert!(
                stdout.0.is_empty() && stderr.0.is_empty(),
                "sent as chunks only"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_streamed_exec_streams_at_most_its_cap_and_counts_the_rest() {
        let s = served().await;
        let mut request = exec_req(&["sh", "-c", "head -c 300000 /dev/zero"], 20_000, 100_000);
        if let Request::Exec { stream_output, .. } = &mut request {
            *stream_output = true;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::runner::OutputChunk>(4);
        let collect = tokio::spawn(async move {
            let mut next = 0u64;
            while let Some(chunk) = rx.recv().await {
                assert_eq!(chunk.offset, next, "no gap, no overlap");
                next += chunk.data.len() as u64;
            }
            next
        });
        let reply = s.runner.exec_streaming(request, T, tx).await.unwrap();
        assert_eq!(collect.await.unwrap(), 100_000);
        assert!(
            matches!(
                reply,
                Reply::Exited {
                    stdout_total_bytes: 300_000,
                    exit_code: 0,
                    ..
                }
            ),
            "{reply:?}"
        );
    }

    #[tokio::test]
    async fn exec_output_is_capped_but_fully_counted() {
        let s = served().await;
        let reply = s
            .runner
            .call(
                exec_req(
                    &[
                        "sh",
                        "-c",
                        "head -c 300000 /dev/zero; head -c 5000 /dev/zero >&2",
                    ],
                    10_000,
                    1000,
                ),
                T,
            )
            .await
            .unwrap();
        match reply {
            Reply::Exited {
                exit_code,
                stdout,
                stderr,
                stdout_total_bytes,
                stderr_total_bytes,
                timed_out,
                ..
            } => {
                assert_eq!(exit_code, 0);
                assert!(!timed_out);
                assert_eq!((stdout.0.len(), stdout_total_bytes), (1000, 300_000));
                assert_eq!((stderr.0.len(), stderr_total_bytes), (1000, 5000));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn background_processes_left_by_a_program_are_killed_when_it_exits() {
        let s = served().await;
        let marker = format!("31.{}", std::process::id());
        let script = format!("sleep {marker} & echo done");
        let started = Instant::now();
        let reply = s
            .runner
            .call(exec_req(&["sh", "-c", &script], 20_000, 100), T)
            .await
            .unwrap();
        assert!(
            matches!(
                reply,
                Reply::Exited {
                    exit_code: 0,
                    timed_out: false,
                    ..
                }
            ),
            "{reply:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        wait_until_gone(&marker).await;
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_mid_exec_takes_the_process_group_down() {
        let s = served().await;
        let marker = format!("32.{}", std::process::id());
        let script = format!("sleep {marker} & sleep {marker}");
        let call = s.runner.call(
            exec_req(&["sh", "-c", &script], 60_000, 100),
            Duration::from_millis(300),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let (result, ()) = tokio::join!(call, async {
            while processes_with(&marker).len() < 2 {
                assert!(Instant::now() < deadline, "exec never started");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(
            matches!(result, Err(crate::runner::RunnerError::Timeout)),
            "{result:?}"
        );
        wait_until_gone(&marker).await;
    }
}
