//! Resource limits and parent-death signal for processes the runner side starts (the sandbox
//! itself, and every program run inside it). Called between fork and exec, so it only makes
//! async-signal-safe system calls on integers and never allocates.

/// Disables core dumps, caps open files at `max_files` (never above the inherited hard limit)
/// and asks for SIGKILL when the parent thread dies.
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
