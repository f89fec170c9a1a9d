//! Local session sandboxes: [`LocalSandboxProvider`] starts one persistent `workspace runner`
//! per session inside a bubblewrap sandbox (or, for development only, unsandboxed) and hands out
//! a [`SocketRunner`] for it.
//!
//! The bubblewrap sandbox unshares every namespace (no network, own PIDs, IPC, UTS, cgroup and
//! user namespace), drops all capabilities, dies with its parent, and sees only: `/usr` and the
//! host's `/bin`-style links read-only, a handful of `/etc` files read-only, fresh `/proc`, a
//! read-only private `/dev`, private size-capped tmpfs mounts at `/tmp` (also reached as
//! `/var/tmp`) and `/dev/shm`, the workspace read-write at [`WORKDIR`] and the runner binary
//! read-only. Nothing else is writable, and no host path but the workspace is reachable: the
//! runner's socket is bound on the host, in a private per-session directory, and the runner
//! inherits the listening descriptor. Its environment is rebuilt from nothing. The runner
//! and everything it starts run under the syscall filter of [`super::seccomp`], in both modes.
//!
//! When the service runs as root, a sandbox runs as an unprivileged host uid and gid
//! ([`LocalSandboxConfig::sandbox_user`], uid [`SANDBOX_UID`] inside), owns its workspace, and
//! is held to [`SandboxLimits`] (processes, file size) that the kernel enforces only for a
//! non-root uid. See docs/adr/0002-runner.md for what runs as whom.
//!
//! This module owns process lifecycle and isolation; it never interprets requests (the runner
//! does) and never decides policy. It must not start a runner from a blocking-pool thread: the
//! parent-death signal is tied to the spawning thread, and blocking threads exit when idle.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
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
use super::limits::SandboxLimits;
use super::server::{EXEC_NOFILE, EXEC_PATH};
use super::{RunnerError, RunnerProvider, SandboxSpec, SessionRunner, WORKDIR};
use crate::ids::SessionId;

/// Where the runner binary appears inside the sandbox.
pub const SANDBOX_RUNNER_EXE: &str = "/opt/workspace/bin/workspace";
/// Name of the runner's socket in the session's (host-only) socket directory.
pub const SOCKET_NAME: &str = "runner.sock";
/// The uid and gid a sandbox's processes have inside it, whatever host uid they map to: fixed,
/// so a sandbox looks the same on every host, and never 0, so nothing in it even looks like
/// root.
pub const SANDBOX_UID: u32 = 1000;
/// See [`SANDBOX_UID`].
pub const SANDBOX_GID: u32 = 1000;
/// Default host uid and gid of sandboxes when the service runs as root. Chosen from the range
/// systemd leaves unused (60578-61183, see systemd.io/UIDS-GIDS): above login.defs' UID_MAX
/// (60000, regular users), below systemd's dynamic service users (61184-65519) and far from
/// `nobody` (65534), which other daemons share.
pub const DEFAULT_SANDBOX_UID: u32 = 61000;
/// See [`DEFAULT_SANDBOX_UID`].
pub const DEFAULT_SANDBOX_GID: u32 = 61000;
/// Size of a sandbox's private `/tmp` (also its `/var/tmp`): tmpfs is memory.
pub const SANDBOX_TMP_BYTES: u64 = 1024 * 1024 * 1024;
/// Size of a sandbox's private `/dev/shm` (Docker's default).
pub const SANDBOX_SHM_BYTES: u64 = 64 * 1024 * 1024;
/// Shown when `bwrap` cannot be found.
pub const BWRAP_MISSING: &str = "bubblewrap (bwrap) is not installed: apt-get install bubblewrap, or set WORKSPACE_RUNNER=unsandboxed for an explicitly unsandboxed development runner";

/// Host paths that are symlinks into `/usr` on merged-usr systems and directories elsewhere.
const ROOT_LINKS: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];
/// The only parts of the host's `/etc` a sandbox sees (its passwd and group are its own: see
/// [`SANDBOX_PASSWD`]): name resolution config, TLS roots, the dynamic linker cache, Debian's
/// alternatives links, time zone and system git config.
const ETC_ENTRIES: [&str; 12] = [
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
/// Descriptors handed to a child are first moved to this number or above, so duplicating
/// them onto their (small) numbers in the child never overwrites another one.
const PARENT_FD_FLOOR: RawFd = 64;
/// The sandbox's `/etc/passwd`: its own user, not the host's accounts (a host user that
/// happens to have uid 1000 would otherwise name the sandbox user).
const SANDBOX_PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
    workspace:x:1000:1000:workspace:/workspace:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
/// The sandbox's `/etc/group`.
const SANDBOX_GROUP: &str = "root:x:0:\nworkspace:x:1000:\nnogroup:x:65534:\n";
/// A root service stages the workspace and the runner binary for bwrap here, in a mount
/// namespace of the bwrap process only (see [`stage_and_drop_privileges`]).
const STAGE_DIR: &std::ffi::CStr = c"/run";
const STAGED_WORKSPACE: &str = "/run/workspace";
const STAGED_RUNNER: &str = "/run/runner";

/// A host uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostIdentity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Default for HostIdentity {
    fn default() -> Self {
        Self {
            uid: DEFAULT_SANDBOX_UID,
            gid: DEFAULT_SANDBOX_GID,
        }
    }
}

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
    /// The host uid and gid bubblewrap sandboxes run as when the service runs as root (a root
    /// service never runs a sandbox as root). A service that is not root runs them as itself.
    pub sandbox_user: HostIdentity,
    /// Limits of every process in a bubblewrap sandbox.
    pub limits: SandboxLimits,
    /// Host toolchain directories programs in a sandbox may run from ([`Toolchains`]).
    pub toolchains: Toolchains,
}

/// The host's toolchains a sandbox sees, read-only: each entry is a toolchain's `bin`
/// directory (absolute, canonical: the configuration checks that). Its parent, the toolchain's
/// root (which holds what the programs need besides themselves: Go's `GOROOT`, a Rust
/// toolchain's sysroot), is bound read-only at the same path inside the sandbox, and the
/// `bin` directories come first on the `PATH` of every program the runner executes, in order.
/// A root under `/usr` is visible already and is not bound again. Nothing here is writable:
/// build caches live in the workspace (see [`super::server::CACHE_DIR`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toolchains {
    bins: Vec<PathBuf>,
}

impl Toolchains {
    /// The toolchains whose programs are in `bins`.
    pub fn new(bins: Vec<PathBuf>) -> Self {
        Self { bins }
    }

    /// The `bin` directories.
    pub fn bins(&self) -> &[PathBuf] {
        &self.bins
    }

    /// The directories a sandbox binds read-only (each `bin`'s parent, once, none under
    /// `/usr`).
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = Vec::new();
        for bin in &self.bins {
            let root = bin.parent().unwrap_or(bin).to_path_buf();
            if root.starts_with("/usr") || root == Path::new("/") {
                continue;
            }
            if !roots.iter().any(|r| root.starts_with(r)) {
                roots.retain(|r| !r.starts_with(&root));
                roots.push(root);
            }
        }
        roots
    }

    /// `PATH` of the programs a runner executes: the `bin` directories, then [`EXEC_PATH`].
    pub fn exec_path(&self) -> String {
        let mut path = String::new();
        for bin in &self.bins {
            path.push_str(&bin.to_string_lossy());
            path.push(':');
        }
        path.push_str(EXEC_PATH);
        path
    }
}

/// Where a root service stages toolchain root `n` for bwrap (see [`STAGE_DIR`]).
fn staged_toolchain(n: usize) -> PathBuf {
    PathBuf::from(format!("/run/toolchain-{n}"))
}

/// Starts and stops one local runner per session.
pub struct LocalSandboxProvider {
    config: LocalSandboxConfig,
    /// Who bubblewrap sandboxes run as: `Some` when the service runs as root, `None` (the
    /// service's own user) otherwise.
    identity: Option<HostIdentity>,
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

/// Descriptor numbers the bwrap child starts with, beyond stdio (handed out by
/// [`ChildFdTable::add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildFds {
    /// bwrap's `--info-fd`: it writes the sandbox init's host PID there.
    pub info: Option<RawFd>,
    /// The runner's bound, listening socket (`workspace runner --listen-fd`).
    pub listen: RawFd,
    /// The sandbox's `/etc/passwd` and `/etc/group` (`--ro-bind-data`), read to the end.
    pub passwd: RawFd,
    /// See [`ChildFds::passwd`].
    pub group: RawFd,
    /// The syscall filter (`--seccomp`), a compiled BPF program ([`super::seccomp`]).
    pub seccomp: RawFd,
}

/// The bwrap command line for one session (everything after `bwrap`). `workspace_dir` and
/// `runner_exe` are where bwrap finds them: host paths, or their staged binds.
///
/// `toolchains` are `(where bwrap finds it, where the sandbox sees it)` pairs, bound read-only;
/// `exec_path` is the runner's `--exec-path`.
pub fn bwrap_args(
    workspace_dir: &Path,
    runner_exe: &Path,
    fds: &ChildFds,
    toolchains: &[(PathBuf, PathBuf)],
    exec_path: &str,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&std::ffi::OsStr]| args.extend(items.iter().map(|s| s.to_os_string()));
    let (uid, gid) = (SANDBOX_UID.to_string(), SANDBOX_GID.to_string());
    let (tmp_bytes, shm_bytes) = (SANDBOX_TMP_BYTES.to_string(), SANDBOX_SHM_BYTES.to_string());
    push(&[
        "--unshare-all".as_ref(),
        // Explicit: --unshare-all only *tries* the user namespace; we require it.
        "--unshare-user".as_ref(),
        // Behind the syscall filter's refusal of CLONE_NEWUSER: no nested user namespace.
        "--disable-userns".as_ref(),
        "--uid".as_ref(),
        uid.as_ref(),
        "--gid".as_ref(),
        gid.as_ref(),
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
    for (source, target) in toolchains {
        push(&["--ro-bind".as_ref(), source.as_os_str(), target.as_os_str()]);
    }
    let (passwd, group) = (fds.passwd.to_string(), fds.group.to_string());
    push(&[
        "--perms".as_ref(),
        "0644".as_ref(),
        "--ro-bind-data".as_ref(),
        passwd.as_ref(),
        "/etc/passwd".as_ref(),
        "--perms".as_ref(),
        "0644".as_ref(),
        "--ro-bind-data".as_ref(),
        group.as_ref(),
        "/etc/group".as_ref(),
    ]);
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        // Private tmpfs mounts, capped (tmpfs is memory). /var/tmp is the same /tmp, for
        // programs that expect it to exist.
        "--size".as_ref(),
        shm_bytes.as_ref(),
        "--tmpfs".as_ref(),
        "/dev/shm".as_ref(),
        // --dev's own tmpfs would be writable (and unbounded): only its submounts (/dev/shm,
        // /dev/pts, the device nodes) stay as they are.
        "--remount-ro".as_ref(),
        "/dev".as_ref(),
        "--size".as_ref(),
        tmp_bytes.as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
        "--dir".as_ref(),
        "/var".as_ref(),
        "--symlink".as_ref(),
        "../tmp".as_ref(),
        "/var/tmp".as_ref(),
        "--bind".as_ref(),
        workspace_dir.as_os_str(),
        WORKDIR.as_ref(),
        "--ro-bind".as_ref(),
        runner_exe.as_os_str(),
        SANDBOX_RUNNER_EXE.as_ref(),
        // The sandbox's root is a tmpfs; once every mount point exists, make it read-only so
        // the workspace, /tmp and /dev/shm are the only writable places.
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
    if let Some(fd) = fds.info {
        args.push("--info-fd".into());
        args.push(fd.to_string().into());
    }
    // Installed by bwrap after its own setup, right before it execs the runner; every
    // descendant inherits it.
    args.push("--seccomp".into());
    args.push(fds.seccomp.to_string().into());
    let listen = fds.listen.to_string();
    for arg in [
        "--",
        SANDBOX_RUNNER_EXE,
        "runner",
        "--listen-fd",
        &listen,
        "--root",
        WORKDIR,
        "--isolation",
        "bubblewrap",
        "--exec-path",
        exec_path,
    ] {
        args.push(arg.into());
    }
    args
}

/// The descriptors a child starts with beyond stdio, numbered 3, 4, ... in the order they
/// are added. Each is kept in the parent (close-on-exec, renumbered at or above
/// [`PARENT_FD_FLOOR`]) until the spawn returns, and duplicated onto its number in the child
/// between fork and exec.
#[derive(Debug, Default)]
struct ChildFdTable {
    parents: Vec<OwnedFd>,
}

impl ChildFdTable {
    /// Hands `fd` to the child; returns its number there.
    fn add(&mut self, fd: OwnedFd) -> io::Result<RawFd> {
        let child = RawFd::try_from(self.parents.len())
            .ok()
            .map(|n| 3 + n)
            .filter(|child| *child < PARENT_FD_FLOOR)
            .ok_or_else(|| io::Error::other("too many descriptors for a child"))?;
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new one or -1.
        let raised = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, PARENT_FD_FLOOR) };
        if raised < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raised` was just created and is owned by nobody else.
        self.parents.push(unsafe { OwnedFd::from_raw_fd(raised) });
        Ok(child)
    }

    /// (parent, child) number pairs, for the pre-exec hook.
    fn dups(&self) -> Vec<(RawFd, RawFd)> {
        (3..)
            .zip(&self.parents)
            .map(|(child, parent)| (parent.as_raw_fd(), child))
            .collect()
    }
}

/// A pipe holding `content` whose write end is already closed: bwrap reads it to the end.
fn data_pipe(content: &[u8]) -> io::Result<OwnedFd> {
    let (read_end, write_end) = info_pipe()?;
    // Far below the pipe's capacity (64 KiB): the write never blocks.
    let written = std::fs::File::from(write_end).write(content)?;
    if written != content.len() {
        return Err(io::Error::other("short write to a data pipe"));
    }
    Ok(read_end)
}

/// Marks every descriptor from `first` up close-on-exec (close_range, Linux 5.11; a loop over
/// the usual range before that). Closing them outright would also close std's pipe that
/// reports a failed exec to the parent.
///
/// # Safety
/// Call only in a forked child before exec: it only makes async-signal-safe system calls.
unsafe fn close_on_exec_from(first: RawFd) {
    // SAFETY: close_range and fcntl on integers.
    unsafe {
        let first = first as libc::c_uint;
        if libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            for fd in first..4096 {
                libc::fcntl(fd as RawFd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// Binds and listens on the runner's socket at `path` (mode 0600, in the private socket
/// directory): the host owns the socket, the runner only inherits the descriptor.
fn listen(path: &Path) -> io::Result<OwnedFd> {
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(OwnedFd::from(listener))
}

/// Gives the workspace tree to `owner`, so a sandbox running as that uid can write what
/// provisioning (as root) created. Nothing is followed: symlinks get their own owner changed
/// (lchown), other filesystems mounted beneath are left alone, and so are files with more than
/// one link (a hard link may be a host file; the runner refuses them anyway). Runs only while
/// no sandbox of the session runs, so nothing swaps entries under the walk. Returns how many
/// entries changed owner; a tree whose root is already owned by `owner` is not walked.
pub fn hand_over_workspace(root: &Path, owner: HostIdentity) -> io::Result<u64> {
    let meta = std::fs::symlink_metadata(root)?;
    if meta.uid() == owner.uid && meta.gid() == owner.gid {
        return Ok(0);
    }
    let device = meta.dev();
    let chown = |path: &Path| std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid));
    let mut changed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            // DirEntry::metadata is lstat-like: it never follows a symlink.
            let meta = entry.metadata()?;
            if meta.dev() != device || (!meta.is_dir() && meta.nlink() > 1) {
                continue;
            }
            let path = entry.path();
            if meta.uid() != owner.uid || meta.gid() != owner.gid {
                chown(&path)?;
                changed += 1;
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    // The root last: until it changed, an interrupted hand-over is redone on the next start.
    chown(root)?;
    Ok(changed + 1)
}

/// Paths a root service's bwrap child binds from its private mount namespace.
#[derive(Debug)]
struct Stage {
    workspace: CString,
    runner_exe: CString,
    staged_workspace: CString,
    staged_runner: CString,
    /// Toolchain roots and where they are staged ([`staged_toolchain`]): a root-owned `0700`
    /// directory above them (`/root`) would keep the sandbox user's bwrap from binding them.
    toolchains: Vec<(CString, CString)>,
}

impl Stage {
    fn new(workspace: &Path, runner_exe: &Path, toolchain_roots: &[PathBuf]) -> io::Result<Self> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL"))
        };
        Ok(Self {
            workspace: c(workspace)?,
            runner_exe: c(runner_exe)?,
            staged_workspace: c(Path::new(STAGED_WORKSPACE))?,
            staged_runner: c(Path::new(STAGED_RUNNER))?,
            toolchains: toolchain_roots
                .iter()
                .enumerate()
                .map(|(n, root)| Ok((c(root)?, c(&staged_toolchain(n))?)))
                .collect::<io::Result<_>>()?,
        })
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// In the forked bwrap child of a root service: binds the workspace and the runner binary
/// where the sandbox user can reach them, then becomes that user.
///
/// bwrap resolves every bind source with `realpath` as the user it runs as, even for
/// `--bind-fd` (it reads the descriptor's path back from /proc), so the sandbox uid would need
/// search permission on every directory above the workspace (data and test directories are
/// 0700 root). Instead, still as root, the child gets a mount namespace of its own (slave:
/// nothing propagates back to the host), a fresh tmpfs on [`STAGE_DIR`] in it, and binds of
/// the workspace and the runner binary there. No host mount changes and nobody else sees the
/// stage; the sandbox later pivots away from it. Then supplementary groups, gid and uid are
/// dropped, in that order (setgroups needs the privilege the uid change gives up).
///
/// # Safety
/// Call only in a forked child before exec (`Command::pre_exec`): it makes async-signal-safe
/// system calls on pointers into `stage`, which outlives the call.
unsafe fn stage_and_drop_privileges(stage: &Stage, user: HostIdentity) -> io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: plain system calls on NUL-terminated strings that live in `stage` or are
    // static.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            STAGE_DIR.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"mode=0755,size=64k".as_ptr().cast(),
        ))?;
        check(libc::mkdir(stage.staged_workspace.as_ptr(), 0o755))?;
        let file = libc::open(
            stage.staged_runner.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
            0o755,
        );
        check(file)?;
        libc::close(file);
        for (source, target) in [
            (&stage.workspace, &stage.staged_workspace),
            (&stage.runner_exe, &stage.staged_runner),
        ] {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                none,
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
        }
        for (source, target) in &stage.toolchains {
            check(libc::mkdir(target.as_ptr(), 0o755))?;
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
        }
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(user.gid, user.gid, user.gid))?;
        check(libc::setresuid(user.uid, user.uid, user.uid))?;
    }
    Ok(())
}

/// Whether `user` may execute the runner binary: inside the sandbox it is owned by an
/// unmapped uid, so only its "other" execute bit counts (unless `user` owns it).
fn runnable_by(runner_exe: &Path, user: HostIdentity) -> Result<(), RunnerError> {
    let meta = std::fs::metadata(runner_exe)
        .map_err(|e| RunnerError::Start(format!("runner binary is not usable: {e}")))?;
    let mode = meta.permissions().mode();
    if mode & 0o001 != 0 || (meta.uid() == user.uid && mode & 0o100 != 0) {
        return Ok(());
    }
    Err(RunnerError::Start(format!(
        "the runner binary {} is not executable by the sandbox user (uid {}): chmod o+rx it",
        runner_exe.display(),
        user.uid
    )))
}

/// A close-on-exec, non-blocking pipe (read end, write end).
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
        // SAFETY: geteuid and getegid cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let identity = (euid == 0).then_some(config.sandbox_user);
        if config.mode == SandboxMode::Bubblewrap && identity.is_none() {
            tracing::info!(
                uid = euid,
                gid = egid,
                "the service does not run as root: sandboxes run as its own user, and \
                 WORKSPACE_SANDBOX_UID/WORKSPACE_SANDBOX_GID do not apply"
            );
        }
        Self {
            config,
            identity,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The host uid and gid bubblewrap sandboxes run as (`None`: the service's own).
    pub fn sandbox_identity(&self) -> Option<HostIdentity> {
        self.identity
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
        // A root service runs bubblewrap sandboxes as the sandbox user; the unsandboxed
        // development runner always runs as the service.
        let identity = self.identity.filter(|_| mode == SandboxMode::Bubblewrap);
        if let Some(owner) = identity {
            let dir = workspace_dir.clone();
            let changed = tokio::task::spawn_blocking(move || hand_over_workspace(&dir, owner))
                .await
                .map_err(|e| RunnerError::Io(io::Error::other(e)))?
                .map_err(|e| {
                    RunnerError::Start(format!(
                        "workspace of session {} cannot be given to the sandbox user: {e}",
                        spec.session_id
                    ))
                })?;
            if changed > 0 {
                tracing::debug!(session_id = %spec.session_id, entries = changed, uid = owner.uid, "workspace handed over to the sandbox user");
            }
        }
        let filter = super::seccomp::program()?;
        let mut child_fds = ChildFdTable::default();
        let listen_fd = listen(&socket_path)
            .and_then(|fd| child_fds.add(fd))
            .map_err(RunnerError::Io)?;
        let mut info_read = None;
        let mut stage = None;
        let mut command = match mode {
            SandboxMode::Bubblewrap => {
                let bwrap = find_program(&self.config.bwrap)
                    .ok_or_else(|| RunnerError::Unavailable(BWRAP_MISSING.to_owned()))?;
                let runner_exe = std::fs::canonicalize(&self.config.runner_exe)
                    .map_err(|e| RunnerError::Start(format!("runner binary is not usable: {e}")))?;
                let (read_end, write_end) = info_pipe().map_err(RunnerError::Io)?;
                info_read = Some(read_end);
                let fds = (|| {
                    Ok::<_, io::Error>(ChildFds {
                        info: Some(child_fds.add(write_end)?),
                        listen: listen_fd,
                        passwd: child_fds.add(data_pipe(SANDBOX_PASSWD.as_bytes())?)?,
                        group: child_fds.add(data_pipe(SANDBOX_GROUP.as_bytes())?)?,
                        seccomp: child_fds
                            .add(super::seccomp::program_fd(filter).map_err(io::Error::other)?)?,
                    })
                })()
                .map_err(RunnerError::Io)?;
                let roots = self.config.toolchains.roots();
                let exec_path = self.config.toolchains.exec_path();
                let args = match identity {
                    Some(user) => {
                        runnable_by(&runner_exe, user)?;
                        stage = Some(
                            Stage::new(&workspace_dir, &runner_exe, &roots)
                                .map_err(RunnerError::Io)?,
                        );
                        let binds: Vec<(PathBuf, PathBuf)> = roots
                            .iter()
                            .enumerate()
                            .map(|(n, root)| (staged_toolchain(n), root.clone()))
                            .collect();
                        bwrap_args(
                            Path::new(STAGED_WORKSPACE),
                            Path::new(STAGED_RUNNER),
                            &fds,
                            &binds,
                            &exec_path,
                        )
                    }
                    None => {
                        let binds: Vec<(PathBuf, PathBuf)> =
                            roots.iter().map(|r| (r.clone(), r.clone())).collect();
                        bwrap_args(&workspace_dir, &runner_exe, &fds, &binds, &exec_path)
                    }
                };
                let mut command = Command::new(bwrap);
                command.args(args);
                command
            }
            SandboxMode::Unsandboxed => {
                let mut command = Command::new(&self.config.runner_exe);
                command
                    .arg("runner")
                    .arg("--listen-fd")
                    .arg(listen_fd.to_string())
                    .arg("--root")
                    .arg(&workspace_dir)
                    .arg("--isolation")
                    .arg("unsandboxed")
                    .arg("--exec-path")
                    .arg(self.config.toolchains.exec_path())
                    .current_dir(&workspace_dir);
                command
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
        let dups = child_fds.dups();
        let limits = (mode == SandboxMode::Bubblewrap).then_some(self.config.limits);
        let user = identity.zip(stage);
        // Unsandboxed, the runner installs the filter itself (inherited by all it spawns).
        let own_filter = (mode == SandboxMode::Unsandboxed).then_some(filter);
        // SAFETY: runs in the forked child before exec and only makes async-signal-safe system
        // calls (dup2, unshare, mount, mkdir, open, set*id, setrlimit, prctl) on integers and
        // on strings allocated before the fork; the descriptors in `child_fds` and the strings
        // in `user` stay alive in the parent until spawn returns.
        unsafe {
            command.pre_exec(move || {
                // The child starts with stdio and `dups` only: whatever the service itself
                // inherited without close-on-exec (from a shell, a supervisor) is closed at
                // exec instead of reaching the sandbox.
                close_on_exec_from(3);
                // Sources are at or above PARENT_FD_FLOOR and targets below it: no dup2
                // overwrites a descriptor still to be duplicated. dup2 clears close-on-exec
                // on the copy only.
                for &(parent, child) in &dups {
                    if libc::dup2(parent, child) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some((user, stage)) = &user {
                    stage_and_drop_privileges(stage, *user)?;
                }
                // After the uid change, which clears the parent-death signal.
                super::limits::apply_in_child(EXEC_NOFILE);
                if let Some(limits) = limits {
                    super::limits::apply_sandbox_limits(limits)?;
                }
                if let Some(program) = own_filter {
                    super::seccomp::install_in_child(program)?;
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // The child has its copies; the parent keeps none (a runner that dies must leave a
        // socket that refuses connections, not one that queues them).
        drop(child_fds);
        let mut child = spawned.map_err(|e| match (mode, e.kind()) {
            (SandboxMode::Bubblewrap, io::ErrorKind::NotFound) => {
                RunnerError::Unavailable(BWRAP_MISSING.to_owned())
            }
            _ => RunnerError::Start(format!("cannot start the {mode} runner: {e}")),
        })?;

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
    /// The workspace is prepared on this host (a copy, a clone or empty), then the sandbox
    /// starts over it.
    async fn provision(
        &self,
        spec: &super::ProvisionSpec<'_>,
    ) -> Result<workspace_events::RuntimeRef, workspace_events::ErrorInfo> {
        use crate::error_code::ErrorCode;
        crate::sessions::prepare_workspace(spec.source, &spec.sandbox.workspace_dir, spec.sources)
            .await?;
        let id = &spec.sandbox.session_id;
        let runner = self.ensure(&spec.sandbox).await.map_err(|e| {
            tracing::error!(session_id = %id, error = %e, "runner failed to start");
            match e {
                // The install hint is meant for the caller; it names no host path.
                RunnerError::Unavailable(hint) => workspace_events::ErrorInfo {
                    code: ErrorCode::Unavailable.into(),
                    message: hint,
                    retryable: true,
                },
                // Anything else is ours to fix; its details (host paths, stderr) stay in the log.
                _ => workspace_events::ErrorInfo {
                    code: ErrorCode::Internal.into(),
                    message: "the session runner could not be started".into(),
                    retryable: true,
                },
            }
        })?;
        Ok(workspace_events::RuntimeRef {
            kind: "local".into(),
            isolation: runner.isolation().into(),
            workdir: WORKDIR.into(),
            namespace: None,
            pod_name: None,
        })
    }

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

    async fn pid(&self, session_id: &SessionId) -> Option<u32> {
        self.runner_pid(session_id).await
    }

    fn sessions(&self) -> Vec<SessionId> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.keys().cloned().collect()
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
            Path::new("/usr/local/bin/workspace"),
            &ChildFds {
                info: Some(3),
                listen: 4,
                passwd: 5,
                group: 6,
                seccomp: 7,
            },
            &[],
            EXEC_PATH,
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for expected in [
            "--unshare-all --unshare-user --disable-userns --uid 1000 --gid 1000 --die-with-parent --new-session --cap-drop ALL",
            "--ro-bind /usr /usr",
            "--proc /proc --dev /dev --size 67108864 --tmpfs /dev/shm --remount-ro /dev",
            "--size 1073741824 --tmpfs /tmp --dir /var --symlink ../tmp /var/tmp",
            "--bind /srv/ws/s1 /workspace",
            "--ro-bind /usr/local/bin/workspace /opt/workspace/bin/workspace",
            "--clearenv --setenv PATH /usr/local/bin:/usr/bin:/bin --setenv HOME /workspace",
            "--remount-ro / --clearenv",
            "--chdir /workspace",
            "--info-fd 3 --seccomp 7 -- /opt/workspace/bin/workspace runner --listen-fd 4 --root /workspace --isolation bubblewrap --exec-path /usr/local/bin:/usr/bin:/bin",
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
        // The only read-write bind is the workspace: no socket directory, nothing of /run.
        assert_eq!(
            args.iter().filter(|a| *a == "--bind").count(),
            1,
            "{joined}"
        );
        assert!(!joined.contains("/run"), "{joined}");
        assert!(
            joined.contains("--ro-bind-data 5 /etc/passwd")
                && joined.contains("--ro-bind-data 6 /etc/group"),
            "the sandbox's own accounts, never the host's: {joined}"
        );
        assert!(!joined.contains("--ro-bind /etc/passwd"), "{joined}");
        if Path::new("/etc/hosts").exists() {
            assert!(joined.contains("--ro-bind /etc/hosts /etc/hosts"));
        }
    }

    #[test]
    fn toolchains_are_bound_read_only_by_their_roots_and_lead_the_exec_path() {
        let toolchains = Toolchains::new(vec![
            PathBuf::from("/opt/py/site-packages/go/bin"),
            PathBuf::from("/root/.rustup/toolchains/stable/bin"),
            PathBuf::from("/usr/local/go/bin"),
            PathBuf::from("/opt/py/site-packages/go/pkg/tool"),
        ]);
        // A root under /usr is visible already; a root inside another is bound with it.
        assert_eq!(
            toolchains.roots(),
            [
                PathBuf::from("/opt/py/site-packages/go"),
                PathBuf::from("/root/.rustup/toolchains/stable"),
            ]
        );
        assert_eq!(
            toolchains.exec_path(),
            "/opt/py/site-packages/go/bin:/root/.rustup/toolchains/stable/bin:\
             /usr/local/go/bin:/opt/py/site-packages/go/pkg/tool:/usr/local/bin:/usr/bin:/bin"
        );
        let binds = [(
            staged_toolchain(0),
            PathBuf::from("/opt/py/site-packages/go"),
        )];
        let fds = ChildFds {
            info: None,
            listen: 3,
            passwd: 4,
            group: 5,
            seccomp: 6,
        };
        let args = bwrap_args(
            Path::new(STAGED_WORKSPACE),
            Path::new(STAGED_RUNNER),
            &fds,
            &binds,
            &toolchains.exec_path(),
        );
        let joined = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            joined.contains("--ro-bind /run/toolchain-0 /opt/py/site-packages/go"),
            "{joined}"
        );
        let bind = joined.find("/run/toolchain-0").unwrap();
        assert!(bind < joined.find("--remount-ro /").unwrap(), "{joined}");
        assert!(
            joined.contains(&format!("--exec-path {}", toolchains.exec_path())),
            "{joined}"
        );
        assert_eq!(Toolchains::default().exec_path(), EXEC_PATH);
    }

    #[test]
    fn the_sandbox_accounts_name_the_sandbox_uid() {
        let user = format!("workspace:x:{SANDBOX_UID}:{SANDBOX_GID}:");
        assert!(
            SANDBOX_PASSWD.lines().any(|l| l.starts_with(&user)),
            "{SANDBOX_PASSWD}"
        );
        let group = format!("workspace:x:{SANDBOX_GID}:");
        assert!(SANDBOX_GROUP.lines().any(|l| l == group), "{SANDBOX_GROUP}");
        assert_eq!(SANDBOX_PASSWD.lines().count(), 3, "one entry a line");
    }

    #[test]
    fn a_workspace_is_handed_over_without_following_links() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            // chown needs root; the integration tests, which run as root, cover the rest.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("a/b")).unwrap();
        std::fs::write(ws.join("a/b/f"), "x").unwrap();
        std::fs::write(dir.path().join("outside"), "o").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), ws.join("link")).unwrap();
        std::fs::hard_link(dir.path().join("outside"), ws.join("hard")).unwrap();
        let owner = HostIdentity {
            uid: 61010,
            gid: 61011,
        };
        let owned = |p: &Path| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(hand_over_workspace(&ws, owner).unwrap(), 5);
        for p in ["", "a", "a/b", "a/b/f", "link"] {
            assert_eq!(owned(&ws.join(p)), (owner.uid, owner.gid), "{p}");
        }
        assert_eq!(
            owned(&dir.path().join("outside")),
            (0, 0),
            "a link's target is not touched"
        );
        assert_eq!(hand_over_workspace(&ws, owner).unwrap(), 0, "done once");
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
