//! Resource limits and parent-death signal for processes the runner side starts (the sandbox
//! itself, and every program run inside it). Called between fork and exec, so it only makes
//! async-signal-safe system calls on integers and never allocates.

use std::io;

/// Default [`SandboxLimits::max_processes`]: tasks (processes and threads) all sandboxes of one
/// host uid may have together. An idle sandbox uses a handful (two bwrap processes, the
/// runner's main thread and two workers), a busy runner up to 16 more (its blocking pool); the
/// rest is for programs. One eighth of the kernel's default `pid_max` (32768).
pub const DEFAULT_MAX_PROCESSES: libc::rlim_t = 4096;
/// Default [`SandboxLimits::max_file_bytes`]: 4 GiB, above any file a build in a workspace
/// normally writes (debug binaries of large Rust projects reach a few hundred MiB), far below
/// what would fill a disk by accident of one runaway program.
pub const DEFAULT_MAX_FILE_BYTES: libc::rlim_t = 4 * 1024 * 1024 * 1024;

/// Limits every process of a bubblewrap sandbox inherits, on top of [`apply_in_child`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// `RLIMIT_NPROC`. The kernel counts it per host uid (all sandboxes of that uid together,
    /// and also per sandbox, inside its user namespace) and ignores it for root: it only holds
    /// because sandboxes run as an unprivileged uid.
    pub max_processes: libc::rlim_t,
    /// `RLIMIT_FSIZE`: a write beyond it fails (`EFBIG`, after `SIGXFSZ`).
    pub max_file_bytes: libc::rlim_t,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            max_processes: DEFAULT_MAX_PROCESSES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Disables core dumps, caps open files at `max_files` (never above the inherited hard limit)
/// and asks for SIGKILL when the parent thread dies. Call it after any change of uid or gid:
/// a credential change clears the parent-death signal.
///
/// # Safety
/// Call only in a forked child before exec (`Command::pre_exec`).
pub unsafe fn apply_in_child(max_files: libc::rlim_t) {
    // SAFETY: setrlimit/getrlimit/prctl with valid pointers to stack values are
    // async-signal-safe; failures leave the inherited limits, which is acceptable.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        let mut files = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut files) == 0 {
            let limit = max_files.min(files.rlim_max);
            files.rlim_cur = limit;
            files.rlim_max = limit;
            libc::setrlimit(libc::RLIMIT_NOFILE, &files);
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
}

/// Sets `RLIMIT_NPROC` and `RLIMIT_FSIZE` (soft and hard, so nothing in the sandbox can raise
/// them again; never above the inherited hard limit). Unlike [`apply_in_child`] a failure is
/// an error: a sandbox without its process limit must not start.
///
/// # Safety
/// Call only in a forked child before exec (`Command::pre_exec`).
pub unsafe fn apply_sandbox_limits(limits: SandboxLimits) -> io::Result<()> {
    for (resource, value) in [
        (libc::RLIMIT_NPROC, limits.max_processes),
        (libc::RLIMIT_FSIZE, limits.max_file_bytes),
    ] {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid pointer to a stack value are
        // async-signal-safe, and io::Error::last_os_error only reads errno.
        unsafe {
            if libc::getrlimit(resource, &mut limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            let value = value.min(limit.rlim_max);
            limit.rlim_cur = value;
            limit.rlim_max = value;
            if libc::setrlimit(resource, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
