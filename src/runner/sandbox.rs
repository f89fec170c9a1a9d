//! Local session sandboxes: [`LocalSandboxProvider`] starts one persistent `workspace runner`
//! per session inside a bubblewrap sandbox (or, for development only, unsandboxed) and hands out
//! a [`SocketRunner`] for it.
//!
//! The bubblewrap sandbox unshares every namespace (no network, own PIDs, IPC, UTS, cgroup and
//! user namespace), drops all capabilities, dies with its parent, and sees only: `/usr` and the
//! host's `/bin`-style links read-only, a handful of `/etc` files read-only, fresh `/proc`,
//! `/dev` and `/tmp`, the workspace read-write at [`WORKDIR`], the runner binary read-only, and a
//! private per-session socket directory. Its environment is rebuilt from nothing. The runner
//! and everything it starts run under the syscall filter of [`super::seccomp`], in both modes.
//!
//! This module owns process lifecycle and isolation; it never interprets requests (the runner
//! does) and never decides policy. It must not start a runner from a blocking-pool thread: the
//! parent-death signal is tied to the spawning thread, and blocking threads exit when idle.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::cli::READY_LINE;
use super::client::SocketRunner;
use super::server::{EXEC_NOFILE, EXEC_PATH};
use super::{RunnerError, RunnerProvider, SandboxSpec, SessionRunner, WORKDIR};
use crate::ids::SessionId;

/// Where the runner binary appears inside the sandbox.
pub const SANDBOX_RUNNER_EXE: &str = "/opt/workspace/bin/workspace";
/// Where the per-session socket directory appears inside the sandbox.
pub const SANDBOX_SOCKET_DIR: &str = "/run/workspace";
/// Name of the runner's socket in the session's socket directory.
pub const SOCKET_NAME: &str = "runner.sock";
/// Shown when `bwrap` cannot be found.
pub const BWRAP_MISSING: &str = "bubblewrap (bwrap) is not installed: apt-get install bubblewrap, or set WORKSPACE_RUNNER=unsandboxed for an explicitly unsandboxed development runner";

/// Host paths that are symlinks into `/usr` on merged-usr systems and directories elsewhere.
const ROOT_LINKS: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];
/// The only parts of `/etc` a sandbox sees: identity, name resolution config, TLS roots, the
/// dynamic linker cache, Debian's alternatives links, time zone and system git config.
const ETC_ENTRIES: [&str; 14] = [
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/gitconfig",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/mime.types",
];
/// How much of a runner's stderr is kept for error reports.
const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// Socket paths are limited to `sun_path` (108 bytes including the NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;
/// How long `stop` waits for a killed sandbox to be reaped before giving up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an unsandboxed runner gets to shut down cleanly before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// How local runners are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// A bubblewrap sandbox per session (the default).
    Bubblewrap,
    /// The runner runs directly on the host with a scrubbed environment and no isolation at
    /// all. Development only: a program can read and write anything the service can.
    Unsandboxed,
}

impl SandboxMode {
    /// The isolation name reported by runners of this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bubblewrap => "bubblewrap",
            Self::Unsandboxed => "unsandboxed",
        }
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sandbox mode name that is not `bubblewrap` or `unsandboxed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox mode {0:?}: expected bubblewrap or unsandboxed")]
pub struct UnknownSandboxMode(pub String);

impl FromStr for SandboxMode {
    type Err = UnknownSandboxMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bubblewrap" | "bwrap" => Ok(Self::Bubblewrap),
            "unsandboxed" => Ok(Self::Unsandboxed),
            other => Err(UnknownSandboxMode(other.to_owned())),
        }
    }
}

/// Configuration of [`LocalSandboxProvider`].
#[derive(Debug, Clone)]
pub struct LocalSandboxConfig {
    /// Isolation mode.
    pub mode: SandboxMode,
    /// The `workspace` binary, run as `workspace runner` (read-only inside the sandbox).
    pub runner_exe: PathBuf,
    /// The bubblewrap program: a name looked up on `PATH` (`bwrap`) or a path.
    pub bwrap: PathBuf,
    /// Host directory holding one private socket directory per session.
    pub run_dir: PathBuf,
    /// How long a runner may take to answer its first `hello`.
    pub start_timeout: Duration,
}

/// Starts and stops one local runner per session.
pub struct LocalSandboxProvider {
    config: LocalSandboxConfig,
    /// One slot per session; the slot's async lock serialises `ensure`/`stop` of that session
    /// only, so sessions start independently and a session never gets two runners.
    sessions: Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<Option<Running>>>>>,
}

impl fmt::Debug for LocalSandboxProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSandboxProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A started runner process and its client.
struct Running {
    child: Child,
    client: Arc<SocketRunner>,
    socket_dir: PathBuf,
    /// Host PID of the sandbox's PID 1 (bubblewrap only). Killing it tears the whole PID
    /// namespace down, and the outer bwrap exits only once that is done.
    sandbox_init: Option<libc::pid_t>,
}

impl Running {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks an unsandboxed runner to stop (SIGTERM: it kills the process groups of running
    /// programs on the way out); returns false when there is nothing to ask.
    fn terminate(&mut self) -> bool {
        if self.sandbox_init.is_some() || !self.alive() {
            return false;
        }
        match self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            Some(pid) => {
                // SAFETY: plain signal delivery to our own, not yet reaped, child.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
                true
            }
            None => false,
        }
    }

    fn kill(&mut self) {
        if !self.alive() {
            return;
        }
        if let Some(init) = self.sandbox_init {
            // SAFETY: plain signal delivery. The outer bwrap is alive and has not reaped its
            // child yet (it exits right after), so the PID still names the sandbox's init.
            unsafe {
                libc::kill(init, libc::SIGKILL);
            }
        } else if let Some(pid) = self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: plain signal delivery to the runner's own process group.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // kill_on_drop only reaches the outer process; take the sandbox down explicitly.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.socket_dir);
    }
}

/// Keeps the last [`STDERR_TAIL_BYTES`] of a stream.
#[derive(Debug, Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.0.extend_from_slice(chunk);
        if self.0.len() > STDERR_TAIL_BYTES {
            let cut = self.0.len() - STDERR_TAIL_BYTES;
            self.0.drain(..cut);
        }
    }
}

/// Drains a pipe forever so the runner never blocks on a full pipe; keeps its tail.
fn drain<R: AsyncRead + Unpin + Send + 'static>(
    mut pipe: R,
    tail: Arc<Mutex<Tail>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tail.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&buf[..n]);
        }
    })
}

/// An executable file: `program` itself when it names a path, else the first match on `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    let executable = |candidate: &Path| {
        std::fs::metadata(candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
}

/// The bwrap command line for one session (everything after `bwrap`).
pub fn bwrap_args(
    workspace_dir: &Path,
    socket_dir: &Path,
    runner_exe: &Path,
    info_fd: Option<RawFd>,
    seccomp_fd: RawFd,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&std::ffi::OsStr]| args.extend(items.iter().map(|s| s.to_os_string()));
    push(&[
        "--unshare-all".as_ref(),
        // Explicit: --unshare-all only *tries* the user namespace; we require it.
        "--unshare-user".as_ref(),
        // Behind the syscall filter's refusal of CLONE_NEWUSER: no nested user namespace.
        "--disable-userns".as_ref(),
        "--die-with-parent".as_ref(),
        "--new-session".as_ref(),
        "--cap-drop".as_ref(),
        "ALL".as_ref(),
        "--hostname".as_ref(),
        "workspace".as_ref(),
        "--ro-bind".as_ref(),
        "/usr".as_ref(),
        "/usr".as_ref(),
    ]);
    for link in ROOT_LINKS {
        match std::fs::symlink_metadata(link) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(link) {
                    push(&["--symlink".as_ref(), target.as_os_str(), link.as_ref()]);
                }
            }
            Ok(meta) if meta.is_dir() => {
                push(&["--ro-bind".as_ref(), link.as_ref(), link.as_ref()])
            }
            _ => {}
        }
    }
    for entry in ETC_ENTRIES {
        if Path::new(entry).exists() {
            push(&["--ro-bind".as_ref(), entry.as_ref(), entry.as_ref()]);
        }
    }
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
        "--bind".as_ref(),
        workspace_dir.as_os_str(),
        WORKDIR.as_ref(),
        "--bind".as_ref(),
        socket_dir.as_os_str(),
        SANDBOX_SOCKET_DIR.as_ref(),
        "--ro-bind".as_ref(),
        runner_exe.as_os_str(),
        SANDBOX_RUNNER_EXE.as_ref(),
        // The sandbox's root is a tmpfs; once every mount point exists, make it read-only so
        // the workspace, /tmp and the socket directory are the only writable places.
        "--remount-ro".as_ref(),
        "/".as_ref(),
        "--clearenv".as_ref(),
        "--setenv".as_ref(),
        "PATH".as_ref(),
        EXEC_PATH.as_ref(),
        "--setenv".as_ref(),
        "HOME".as_ref(),
        WORKDIR.as_ref(),
        "--setenv".as_ref(),
        "LANG".as_ref(),
        "C.UTF-8".as_ref(),
        "--chdir".as_ref(),
        WORKDIR.as_ref(),
    ]);
    if let Some(fd) = info_fd {
        args.push("--info-fd".into());
        args.push(fd.to_string().into());
    }
    // Installed by bwrap after its own setup, right before it execs the runner.
    args.push("--seccomp".into());
    args.push(seccomp_fd.to_string().into());
    let socket = format!("{SANDBOX_SOCKET_DIR}/{SOCKET_NAME}");
    for arg in [
        "--",
        SANDBOX_RUNNER_EXE,
        "runner",
        "--listen",
        &socket,
        "--root",
        WORKDIR,
        "--isolation",
        "bubblewrap",
    ] {
        args.push(arg.into());
    }
    args
}

/// The fd number bwrap's `--info-fd` is given in the child.
const INFO_FD: RawFd = 3;
/// The fd number bwrap's `--seccomp` program is given in the child.
const SECCOMP_FD: RawFd = 4;

/// A pipe whose write end becomes [`INFO_FD`] in the bwrap child.
fn info_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads bwrap's `--info-fd` JSON (already written when the runner reports ready) without
/// blocking, and returns the sandbox init's host PID.
fn read_sandbox_init(read_end: OwnedFd) -> Option<libc::pid_t> {
    let mut file = std::fs::File::from(read_end);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let info: serde_json::Value = serde_json::from_slice(&buf).ok()?;
    libc::pid_t::try_from(info.get("child-pid")?.as_i64()?).ok()
}

/// Whether bwrap's stderr says namespaces cannot be created here.
fn namespaces_unavailable(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    [
        "namespace",
        "uid map",
        "unshare",
        "no permissions to create",
        "operation not permitted",
    ]
    .iter()
    .any(|needle| s.contains(needle))
}

impl LocalSandboxProvider {
    /// A provider. Nothing starts until [`RunnerProvider::ensure`]; `run_dir` is created
    /// (mode 0700) on first use.
    pub fn new(config: LocalSandboxConfig) -> Self {
        Self {
            config,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LocalSandboxConfig {
        &self.config
    }

    /// Host PID of the session's runner process (the outer `bwrap` when sandboxed), if running.
    pub async fn runner_pid(&self, session_id: &SessionId) -> Option<u32> {
        let slot = self.slot_if_present(session_id)?;
        let mut guard = slot.lock().await;
        let running = guard.as_mut()?;
        if running.alive() {
            running.child.id()
        } else {
            None
        }
    }

    fn slot(&self, session_id: &SessionId) -> Arc<tokio::sync::Mutex<Option<Running>>> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(sessions.entry(session_id.clone()).or_default())
    }

    fn slot_if_present(
        &self,
        session_id: &SessionId,
    ) -> Option<Arc<tokio::sync::Mutex<Option<Running>>>> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(session_id).cloned()
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<Running, RunnerError> {
        let workspace_dir = std::fs::canonicalize(&spec.workspace_dir).map_err(|e| {
            RunnerError::Start(format!(
                "workspace directory of session {} is not usable: {e}",
                spec.session_id
            ))
        })?;
        if !workspace_dir.is_dir() {
            return Err(RunnerError::Start(format!(
                "workspace of session {} is not a directory",
                spec.session_id
            )));
        }
        let socket_dir = self.config.run_dir.join(spec.session_id.as_str());
        let socket_path = socket_dir.join(SOCKET_NAME);
        if socket_path.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return Err(RunnerError::Start(format!(
                "socket path is longer than {MAX_SOCKET_PATH_BYTES} bytes; use a shorter run_dir"
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.config.run_dir)
            .map_err(RunnerError::Io)?;
        // A stale directory (a crash, a previous runner) is replaced by a fresh private one.
        match std::fs::remove_dir_all(&socket_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RunnerError::Io(e)),
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&socket_dir)
            .map_err(RunnerError::Io)?;

        let mode = self.config.mode;
        let filter = super::seccomp::program()?;
        let (mut command, info, seccomp) = match mode {
            SandboxMode::Bubblewrap => {
                let bwrap = find_program(&self.config.bwrap)
                    .ok_or_else(|| RunnerError::Unavailable(BWRAP_MISSING.to_owned()))?;
                let runner_exe = std::fs::canonicalize(&self.config.runner_exe)
                    .map_err(|e| RunnerError::Start(format!("runner binary is not usable: {e}")))?;
                let (read_end, write_end) = info_pipe().map_err(RunnerError::Io)?;
                let mut command = Command::new(bwrap);
                command.args(bwrap_args(
                    &workspace_dir,
                    &socket_dir,
                    &runner_exe,
                    Some(INFO_FD),
                    SECCOMP_FD,
                ));
                let seccomp = super::seccomp::program_fd(filter)?;
                (command, Some((read_end, write_end)), Some(seccomp))
            }
            SandboxMode::Unsandboxed => {
                let mut command = Command::new(&self.config.runner_exe);
                command
                    .arg("runner")
                    .arg("--listen")
                    .arg(&socket_path)
                    .arg("--root")
                    .arg(&workspace_dir)
                    .arg("--isolation")
                    .arg("unsandboxed")
                    .current_dir(&workspace_dir);
                (command, None, None)
            }
        };
        // Nothing of the service's environment (tokens, cloud credentials) reaches the sandbox.
        command
            .env_clear()
            .env("PATH", EXEC_PATH)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if mode == SandboxMode::Unsandboxed {
            command.env("HOME", &workspace_dir);
        }
        let info_write = info.as_ref().map(|(_, w)| w.as_raw_fd());
        let seccomp_fd = seccomp.as_ref().map(AsRawFd::as_raw_fd);
        // Unsandboxed, the runner installs the filter itself (inherited by all it spawns).
        let own_filter = (mode == SandboxMode::Unsandboxed).then_some(filter);
        // SAFETY: runs in the forked child before exec and only makes async-signal-safe system
        // calls (dup2, fcntl, setrlimit, prctl) on integers and on the filter compiled before
        // the fork; the info pipe's write end and the filter's memfd stay open in the parent
        // until spawn returns.
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = info_write {
                    if fd == INFO_FD {
                        // dup2 onto itself would keep close-on-exec set.
                        if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, INFO_FD) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // The memfd is numbered above INFO_FD and SECCOMP_FD, so neither dup2 closes it.
                if let Some(fd) = seccomp_fd
                    && libc::dup2(fd, SECCOMP_FD) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                super::limits::apply_in_child(EXEC_NOFILE);
                if let Some(program) = own_filter {
                    super::seccomp::install_in_child(program)?;
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| match (mode, e.kind()) {
            (SandboxMode::Bubblewrap, io::ErrorKind::NotFound) => {
                RunnerError::Unavailable(BWRAP_MISSING.to_owned())
            }
            _ => RunnerError::Start(format!("cannot start the {mode} runner: {e}")),
        })?;
        drop(seccomp);
        let info_read = info.map(|(read_end, write_end)| {
            drop(write_end);
            read_end
        });

        let stderr_tail = Arc::new(Mutex::new(Tail::default()));
        let stderr_task = child
            .stderr
            .take()
            .map(|pipe| drain(pipe, Arc::clone(&stderr_tail)));
        let deadline = Instant::now() + self.config.start_timeout;
        let ready = match child.stdout.take() {
            Some(stdout) => {
                let mut lines = BufReader::new(stdout);
                let mut line = String::new();
                tokio::select! {
                    read = lines.read_line(&mut line) => match read {
                        Ok(n) if n > 0 && line.trim_end() == READY_LINE => {
                            // Keep draining: a runner must never block on a full stdout pipe.
                            drain(lines, Arc::new(Mutex::new(Tail::default())));
                            Ok(())
                        }
                        _ => Err(None),
                    },
                    status = child.wait() => Err(status.ok()),
                    () = tokio::time::sleep_until(deadline) => Err(None),
                }
            }
            None => Err(None),
        };
        let mut running = Running {
            child,
            client: Arc::new(SocketRunner::new(&socket_path, mode.as_str())),
            socket_dir,
            sandbox_init: info_read.and_then(read_sandbox_init),
        };
        let result = match ready {
            Ok(()) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match running
                    .client
                    .hello(remaining.max(Duration::from_millis(100)))
                    .await
                {
                    Ok(isolation) if isolation == mode.as_str() => Ok(()),
                    Ok(isolation) => Err(RunnerError::Start(format!(
                        "runner reports isolation {isolation:?}, expected {mode}"
                    ))),
                    Err(e) => Err(RunnerError::Start(format!(
                        "runner did not answer hello: {e}"
                    ))),
                }
            }
            Err(status) => {
                running.kill();
                let status = match status {
                    Some(s) => Some(s),
                    None => wait_bounded(&mut running.child, deadline).await,
                };
                if let Some(task) = stderr_task {
                    // The pipe closes when the process is gone; bounded in case a grandchild
                    // kept it open.
                    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
                }
                let stderr = String::from_utf8_lossy(
                    &stderr_tail.lock().unwrap_or_else(|e| e.into_inner()).0,
                )
                .trim()
                .to_owned();
                Err(start_failure(mode, status, &stderr))
            }
        };
        result.map(|()| running)
    }
}

async fn wait_bounded(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let limit = deadline.max(Instant::now() + Duration::from_secs(2));
    tokio::time::timeout_at(limit, child.wait())
        .await
        .ok()?
        .ok()
}

fn start_failure(mode: SandboxMode, status: Option<ExitStatus>, stderr: &str) -> RunnerError {
    let status = status.map_or_else(
        || "did not become ready in time".to_owned(),
        |s| format!("exited ({s})"),
    );
    let detail = if stderr.is_empty() {
        "no output".to_owned()
    } else {
        stderr.to_owned()
    };
    if mode == SandboxMode::Bubblewrap && namespaces_unavailable(stderr) {
        return RunnerError::Unavailable(format!(
            "bubblewrap cannot create the sandbox's namespaces (are unprivileged user namespaces disabled?): {detail}"
        ));
    }
    RunnerError::Start(format!("{mode} runner {status}: {detail}"))
}

#[async_trait::async_trait]
impl RunnerProvider for LocalSandboxProvider {
    async fn ensure(&self, spec: &SandboxSpec) -> Result<Arc<dyn SessionRunner>, RunnerError> {
        let slot = self.slot(&spec.session_id);
        let mut guard = slot.lock().await;
        if let Some(running) = guard.as_mut() {
            if running.alive() {
                return Ok(Arc::clone(&running.client) as Arc<dyn SessionRunner>);
            }
            tracing::warn!(session_id = %spec.session_id, "session runner exited; starting a new one");
        }
        // Dropping a dead runner removes its socket directory before the new one is made.
        *guard = None;
        let running = self.start(spec).await?;
        let client = Arc::clone(&running.client) as Arc<dyn SessionRunner>;
        *guard = Some(running);
        Ok(client)
    }

    async fn stop(&self, session_id: &SessionId) {
        let Some(slot) = self.slot_if_present(session_id) else {
            return;
        };
        let mut guard = slot.lock().await;
        if let Some(mut running) = guard.take() {
            if running.terminate() {
                // An unsandboxed runner has no PID namespace to tear down: on SIGTERM it kills
                // the process groups of the programs it runs before exiting.
                let _ = tokio::time::timeout(TERMINATE_GRACE, running.child.wait()).await;
            }
            running.kill();
            // The outer bwrap exits once its PID namespace is empty, so after this wait nothing
            // the session started is left running.
            if tokio::time::timeout(STOP_TIMEOUT, running.child.wait())
                .await
                .is_err()
            {
                let _ = running.child.start_kill();
                let _ = tokio::time::timeout(STOP_TIMEOUT, running.child.wait()).await;
            }
            let _ = tokio::fs::remove_dir_all(&running.socket_dir).await;
        }
        drop(guard);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions
            .get(session_id)
            .is_some_and(|current| Arc::ptr_eq(current, &slot))
        {
            sessions.remove(session_id);
        }
    }

    fn isolation(&self) -> &'static str {
        self.config.mode.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bwrap_command_line_isolates_everything_and_exposes_only_what_it_must() {
        let args = bwrap_args(
            Path::new("/srv/ws/s1"),
            Path::new("/run/ws/s1"),
            Path::new("/usr/local/bin/workspace"),
            Some(3),
            4,
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for expected in [
            "--unshare-all --unshare-user --disable-userns --die-with-parent --new-session --cap-drop ALL",
            "--ro-bind /usr /usr",
            "--proc /proc --dev /dev --tmpfs /tmp",
            "--bind /srv/ws/s1 /workspace",
            "--bind /run/ws/s1 /run/workspace",
            "--ro-bind /usr/local/bin/workspace /opt/workspace/bin/workspace",
            "--clearenv --setenv PATH /usr/local/bin:/usr/bin:/bin --setenv HOME /workspace",
            "--remount-ro / --clearenv",
            "--chdir /workspace",
            "--info-fd 3 --seccomp 4 -- /opt/workspace/bin/workspace runner --listen /run/workspace/runner.sock --root /workspace --isolation bubblewrap",
        ] {
            assert!(
                joined.contains(expected),
                "missing {expected:?} in {joined}"
            );
        }
        assert!(
            !args.iter().any(|a| a == "/etc"),
            "never the whole /etc: {joined}"
        );
        if Path::new("/etc/passwd").exists() {
            assert!(joined.contains("--ro-bind /etc/passwd /etc/passwd"));
        }
    }

    #[test]
    fn sandbox_modes_parse_from_their_names() {
        assert_eq!("bubblewrap".parse(), Ok(SandboxMode::Bubblewrap));
        assert_eq!("unsandboxed".parse(), Ok(SandboxMode::Unsandboxed));
        assert!("docker".parse::<SandboxMode>().is_err());
        assert_eq!(SandboxMode::Unsandboxed.to_string(), "unsandboxed");
    }

    #[test]
    fn namespace_failures_are_reported_as_unavailable() {
        let err = start_failure(
            SandboxMode::Bubblewrap,
            None,
            "bwrap: No permissions to creating new namespace, likely because the kernel does not allow non-privileged user namespaces",
        );
        assert!(
            matches!(err, RunnerError::Unavailable(ref m) if m.contains("bwrap:")),
            "{err:?}"
        );
        let err = start_failure(SandboxMode::Unsandboxed, None, "boom");
        assert!(
            matches!(err, RunnerError::Start(ref m) if m.contains("boom")),
            "{err:?}"
        );
    }

    #[test]
    fn the_stderr_tail_keeps_the_end() {
        let mut tail = Tail::default();
        tail.push(&vec![b'a'; STDERR_TAIL_BYTES]);
        tail.push(b"end");
        assert_eq!(tail.0.len(), STDERR_TAIL_BYTES);
        assert!(tail.0.ends_with(b"end"));
    }
}
