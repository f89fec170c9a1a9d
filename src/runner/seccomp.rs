//! The syscall filter every runner and everything it starts runs under: a seccomp deny-list.
//!
//! Most system calls stay allowed (toolchains need them); the ones Docker's default profile
//! refuses to unprivileged containers fail with `EPERM`: the kernel keyring, eBPF, perf,
//! userfaultfd, every mount API, kexec and module loading, `ptrace` and its relatives, new
//! namespaces (a nested user namespace would hand a program every capability again), and
//! io_uring, which performs socket and file operations without the system calls that name
//! them. The filter is compiled once with seccompiler for the running architecture;
//! [`program_fd`] hands it to bubblewrap (`--seccomp`), which installs it right before it execs
//! the runner, after its own mounts; [`install_in_child`] installs it in an unsandboxed runner.
//!
//! This module only builds and installs the filter; it never decides which sandbox to start.

use std::collections::BTreeMap;
use std::io::{self, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

use super::RunnerError;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// System calls refused outright, with the reason beside each group.
const DENIED: &[(&str, i64)] = &[
    // The kernel keyring is not namespaced: keys and quotas are shared with the host user.
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    // eBPF, perf and userfaultfd: large kernel attack surface, and userfaultfd is the usual
    // tool for winning kernel races.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    // Mounts, old API and new (fsopen and friends): bwrap builds the file system view before
    // the filter is installed, and nothing inside may change it.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    // The host's kernel, swap, accounting, quotas, clock and log are not the sandbox's.
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("syslog", libc::SYS_syslog),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    // File handles bypass path resolution (the "shocker" container escape).
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    // Programs run as the runner's uid in its PID namespace: without this group a program
    // could attach to the runner, read or write its memory or steal its descriptors (the
    // socket, the workspace root) and answer requests in its name; where Yama is absent,
    // nothing else stops it.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kcmp", libc::SYS_kcmp),
    // Joining namespaces; creating them is refused by flag below.
    ("setns", libc::SYS_setns),
    // io_uring does file and socket work (connect, accept, openat) without those system
    // calls, so no argument filter on them would see it.
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    // x86 only: direct port I/O and a.out loading.
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
];

/// Namespace flags refused in `unshare` and `clone`. A new user namespace gives its creator
/// every capability inside it, which undoes `--cap-drop ALL`; the others need that first.
/// CLONE_NEWTIME (0x80) overlaps clone's exit-signal byte, so it is checked in unshare only
/// (clone cannot create a time namespace anyway).
const CLONE_NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// `personality` values allowed (Docker's list): the default, PER_LINUX32, UNAME26, both, and
/// the query. Everything else, notably ADDR_NO_RANDOMIZE (turning ASLR off), is refused.
const PERSONALITIES_ALLOWED: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Set in the number of every x32-ABI system call on x86_64 (`__X32_SYSCALL_BIT`).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `AUDIT_ARCH_*` of the running architecture (EM_* | 64-bit | little-endian), as the kernel
/// reports it in `seccomp_data.arch`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// Where the compiled program is written for bwrap: numbered above the descriptors a sandbox
/// child receives at fixed small numbers (3, 4, ...), so moving one of those into place never
/// closes this one.
const PROGRAM_FD_MIN: libc::c_int = 10;

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused the rules or has no backend for this architecture.
    #[error("cannot compile the syscall filter")]
    Compile(#[source] seccompiler::BackendError),
    /// The running architecture has no filter here (x86_64 and aarch64 do).
    #[error("no syscall filter for the {0} architecture")]
    UnsupportedArch(&'static str),
}

/// The compiled filter, built on first use and shared by every runner after. No runner starts
/// without it: an architecture without a filter makes sandboxes unavailable.
pub fn program() -> Result<&'static [sock_filter], RunnerError> {
    static PROGRAM: OnceLock<Result<BpfProgram, SeccompError>> = OnceLock::new();
    PROGRAM
        .get_or_init(compile)
        .as_deref()
        .map_err(|e| match e {
            SeccompError::UnsupportedArch(_) => RunnerError::Unavailable(e.to_string()),
            SeccompError::Compile(source) => RunnerError::Start(format!("{e}: {source}")),
        })
}

/// A fresh memfd holding `program` as raw `struct sock_filter`s, positioned at its start, for
/// bwrap's `--seccomp FD` (bwrap reads from the current offset to the end, so every sandbox
/// gets its own descriptor). Close-on-exec: the caller moves it into place in the child.
pub fn program_fd(program: &[sock_filter]) -> Result<OwnedFd, RunnerError> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; fcntl and close take plain
    // integers, and `memfd` is ours to close.
    let fd = unsafe {
        let memfd = libc::memfd_create(c"workspace-seccomp".as_ptr(), libc::MFD_CLOEXEC);
        if memfd < 0 {
            return Err(RunnerError::Io(io::Error::last_os_error()));
        }
        let high = libc::fcntl(memfd, libc::F_DUPFD_CLOEXEC, PROGRAM_FD_MIN);
        let err = io::Error::last_os_error();
        libc::close(memfd);
        if high < 0 {
            return Err(RunnerError::Io(err));
        }
        OwnedFd::from_raw_fd(high)
    };
    let mut file = std::fs::File::from(fd);
    file.write_all(&to_bytes(program))
        .and_then(|()| file.rewind())
        .map_err(RunnerError::Io)?;
    Ok(file.into())
}

/// Installs `program` on the calling thread, after setting no-new-privileges (which the kernel
/// requires of a process without CAP_SYS_ADMIN, and which keeps setuid binaries from shedding
/// the filter's intent). Used by the unsandboxed runner between fork and exec: `program` comes
/// from [`program`], compiled before the fork, so this only makes two prctl calls.
///
/// # Safety
/// Call only in a forked child before exec (`Command::pre_exec`), or on a thread that may be
/// filtered for the rest of the process's life.
pub unsafe fn install_in_child(program: &[sock_filter]) -> io::Result<()> {
    let Ok(len) = libc::c_ushort::try_from(program.len()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // seccompiler's sock_filter has the kernel's layout (repr(C) u16, u8, u8, u32).
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: prctl with integers, and a pointer to a sock_fprog on the stack that points at
    // `program`, both valid for the duration of the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The program in the byte layout of `struct sock_filter[]`.
fn to_bytes(program: &[sock_filter]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    bytes
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn compile() -> Result<BpfProgram, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(SeccompError::Compile)?;
    let deny = SeccompFilter::new(
        rules().map_err(SeccompError::Compile)?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(SeccompError::Compile)?;
    let body = BpfProgram::try_from(deny).map_err(SeccompError::Compile)?;
    let mut program = prologue();
    program.extend(body);
    Ok(program)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn compile() -> Result<BpfProgram, SeccompError> {
    Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
}

/// The deny-list as seccompiler rules: an empty rule list denies the call whatever its
/// arguments; several rules deny it when any one matches; the conditions of one rule must all
/// hold.
fn rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    let flag_set = |flag: libc::c_int| {
        let flag = u64::from(flag.cast_unsigned());
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
    };
    // clone's flags are its first argument on x86_64 and aarch64 alike.
    rules.insert(
        libc::SYS_clone,
        CLONE_NAMESPACE_FLAGS
            .iter()
            .map(|&f| flag_set(f))
            .collect::<Result<_, _>>()?,
    );
    rules.insert(
        libc::SYS_unshare,
        CLONE_NAMESPACE_FLAGS
            .iter()
            .chain(&[libc::CLONE_NEWTIME])
            .map(|&f| flag_set(f))
            .collect::<Result<_, _>>()?,
    );
    rules.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(
            PERSONALITIES_ALLOWED
                .iter()
                .map(|&p| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, p))
                .collect::<Result<_, _>>()?,
        )?],
    );
    Ok(rules)
}

/// What seccompiler cannot say (one action per filter, syscalls matched by number only), in
/// front of its program:
///
/// - `clone3` fails with `ENOSYS`. Its flags live in a struct in memory, which seccomp cannot
///   read, so namespace flags cannot be refused by argument as for `clone`; `ENOSYS` (rather
///   than `EPERM`) is what glibc, musl and Go take as "old kernel" and fall back to `clone`,
///   whose flags the filter does check. Docker and Flatpak do the same.
/// - On x86_64, x32-ABI calls (number | 0x4000_0000, same audit arch) fail with `ENOSYS`, as on
///   a kernel built without x32: otherwise every denied call would be reachable again under
///   its x32 number, which seccompiler's number match does not see.
///
/// Any other architecture (i386 `int 0x80` from a 64-bit process included) falls through to
/// seccompiler's own arch check, which kills the process.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn prologue() -> Vec<sock_filter> {
    const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let clone3 = libc::SYS_clone3 as u32;

    #[cfg(target_arch = "x86_64")]
    let checks = vec![
        // x32 and clone3 both jump to the ENOSYS return.
        jump(
            (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            X32_SYSCALL_BIT,
            1,
            0,
        ),
        jump(JEQ, clone3, 0, 1),
    ];
    #[cfg(target_arch = "aarch64")]
    let checks = vec![jump(JEQ, clone3, 0, 1)];

    // arch load, arch jump, nr load, the checks, the ENOSYS return: a foreign arch skips the
    // rest of the prologue (everything after the arch jump).
    let skip = u8::try_from(checks.len() + 2).unwrap_or(u8::MAX);
    let mut prologue = vec![
        stmt(LD_ABS, DATA_ARCH),
        jump(JEQ, AUDIT_ARCH, 0, skip),
        stmt(LD_ABS, DATA_NR),
    ];
    prologue.extend(checks);
    prologue.push(stmt(RET, enosys));
    prologue
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions seccompiler and the prologue emit, so the
    /// program's decisions can be checked without installing it.
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for arg in args {
            data.extend_from_slice(&arg.to_ne_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let insn = &program[pc];
            let code = u32::from(insn.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    let at = insn.k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                }
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= insn.k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += insn.k as usize,
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match c & 0xf0 {
                        op if op == libc::BPF_JEQ => acc == insn.k,
                        op if op == libc::BPF_JGT => acc > insn.k,
                        op if op == libc::BPF_JGE => acc >= insn.k,
                        op if op == libc::BPF_JSET => acc & insn.k != 0,
                        op => panic!("unexpected jump {op:#x}"),
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                c if c == libc::BPF_RET | libc::BPF_K => return insn.k,
                c => panic!("unexpected instruction {c:#x} at {}", pc - 1),
            }
        }
    }

    fn decide(nr: i64, args: [u64; 6]) -> u32 {
        run(program().unwrap(), AUDIT_ARCH, nr as u32, args)
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn every_listed_call_is_refused_with_eperm_whatever_its_arguments() {
        for &(name, nr) in DENIED {
            assert_eq!(decide(nr, [0; 6]), EPERM, "{name}");
            assert_eq!(decide(nr, [u64::MAX; 6]), EPERM, "{name}");
        }
    }

    #[test]
    fn ordinary_calls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_futex,
            libc::SYS_wait4,
            libc::SYS_seccomp,
            libc::SYS_prctl,
        ] {
            assert_eq!(decide(nr, [0; 6]), ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn clone_is_allowed_for_threads_and_forks_but_not_for_namespaces() {
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(decide(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        let fork = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        assert_eq!(decide(libc::SYS_clone, [fork, 0, 0, 0, 0, 0]), ALLOW);
        for flag in CLONE_NAMESPACE_FLAGS {
            let flags = u64::from(flag.cast_unsigned()) | libc::SIGCHLD as u64;
            assert_eq!(decide(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(decide(libc::SYS_unshare, [flags, 0, 0, 0, 0, 0]), EPERM);
        }
        assert_eq!(
            decide(
                libc::SYS_unshare,
                [libc::CLONE_NEWTIME as u64, 0, 0, 0, 0, 0]
            ),
            EPERM
        );
        let harmless = (libc::CLONE_FILES | libc::CLONE_FS) as u64;
        assert_eq!(decide(libc::SYS_unshare, [harmless, 0, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn clone3_fails_as_unimplemented_so_libc_falls_back_to_clone() {
        assert_eq!(decide(libc::SYS_clone3, [0; 6]), ENOSYS);
    }

    #[test]
    fn personality_may_query_but_not_turn_off_aslr() {
        for allowed in PERSONALITIES_ALLOWED {
            assert_eq!(
                decide(libc::SYS_personality, [allowed, 0, 0, 0, 0, 0]),
                ALLOW
            );
        }
        let no_aslr = libc::ADDR_NO_RANDOMIZE as u64;
        assert_eq!(
            decide(libc::SYS_personality, [no_aslr, 0, 0, 0, 0, 0]),
            EPERM
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_fail_as_unimplemented_so_listed_calls_have_no_second_number() {
        let program = program().unwrap();
        for nr in [libc::SYS_keyctl, libc::SYS_read, 521 /* x32 ptrace */] {
            let x32 = nr as u32 | X32_SYSCALL_BIT;
            assert_eq!(run(program, AUDIT_ARCH, x32, [0; 6]), ENOSYS, "x32 {nr}");
        }
    }

    #[test]
    fn a_foreign_architecture_is_killed() {
        let i386 = 3 | 0x4000_0000;
        let program = program().unwrap();
        for nr in [0, 250, libc::SYS_clone3 as u32] {
            assert_eq!(
                run(program, i386, nr, [0; 6]),
                libc::SECCOMP_RET_KILL_PROCESS
            );
        }
    }

    #[test]
    fn the_memfd_holds_the_program_from_its_start_above_the_fixed_descriptors() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let fd = program_fd(program().unwrap()).unwrap();
        assert!(fd.as_raw_fd() >= PROGRAM_FD_MIN);
        let mut bytes = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, to_bytes(program().unwrap()));
        assert_eq!(bytes.len() % 8, 0);
    }
}
