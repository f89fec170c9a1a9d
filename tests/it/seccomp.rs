//! The syscall filter, proven on the real kernel: programs run through the runner's `Exec` in a
//! real bubblewrap sandbox (and unsandboxed) call denied system calls directly with python's
//! ctypes and must get `EPERM` (`ENOSYS` for `clone3`), while git, python, node, gcc and cargo
//! keep working. Probes are chosen so that, without the filter, the kernel answers something
//! else (success, or an argument error it reports before its own permission check), so each
//! one shows the filter at work rather than the sandbox's dropped capabilities. Missing tools
//! fail these tests with an install hint; they never skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use workspace::ids::SessionId;
use workspace::runner::limits::SandboxLimits;
use workspace::runner::protocol::{Reply, Request};
use workspace::runner::sandbox::{
    HostIdentity, LocalSandboxConfig, LocalSandboxProvider, SandboxMode,
};
use workspace::runner::{RunnerProvider, SandboxSpec, SessionRunner};

use crate::support::require_binary;

const EPERM: i32 = libc::EPERM;
const ENOSYS: i32 = libc::ENOSYS;

/// Defines `call(nr, *args) -> (ret, errno)` (every argument passed as a C long or a pointer,
/// since `syscall` is variadic) and `userns_first()`, which tries what a program would do to get
/// the capabilities that mount calls need back: a new user and mount namespace.
const PRELUDE: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def arg(a):
    return ctypes.c_long(a) if isinstance(a, int) else a
def call(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    return ret, ctypes.get_errno()
def userns_first():
    call(UNSHARE, 0x10000000 | 0x00020000)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
"#;

/// One probe: a python snippet that ends by printing `ret errno` of the call under test, and
/// the errno the filter must produce.
struct Probe {
    name: &'static str,
    script: String,
    errno: i32,
    /// Safe to run on the host without isolation (an unfiltered call there changes nothing).
    harmless_on_host: bool,
}

fn probe(name: &'static str, nr: libc::c_long, body: &str, errno: i32, host: bool) -> Probe {
    let script = format!(
        "{PRELUDE}\nUNSHARE = {unshare}\nNR = {nr}\n{body}\nprint(*r)\n",
        unshare = libc::SYS_unshare
    );
    Probe {
        name,
        script,
        errno,
        harmless_on_host: host,
    }
}

/// The representative set. Comments give what the call answers without the filter.
fn probes() -> Vec<Probe> {
    vec![
        // KEYCTL_GET_KEYRING_ID of the session keyring, created on demand: succeeds.
        probe(
            "keyctl",
            libc::SYS_keyctl,
            "r = call(NR, 0, -3, 1)",
            EPERM,
            true,
        ),
        // A key in the process keyring, which dies with the process: succeeds.
        probe(
            "add_key",
            libc::SYS_add_key,
            "r = call(NR, b'user', b'workspace-probe', b'x', 1, -2)",
            EPERM,
            true,
        ),
        // An unknown command is refused as EINVAL after the attribute is read.
        probe(
            "bpf",
            libc::SYS_bpf,
            "r = call(NR, 0xffff, None, 0)",
            EPERM,
            true,
        ),
        // The attribute is copied (EFAULT for NULL) before any permission check.
        probe(
            "perf_event_open",
            libc::SYS_perf_event_open,
            "r = call(NR, None, 0, -1, -1, 0)",
            EPERM,
            true,
        ),
        // UFFD_USER_MODE_ONLY | O_CLOEXEC is open to unprivileged users: succeeds.
        probe(
            "userfaultfd",
            libc::SYS_userfaultfd,
            "r = call(NR, 1 | os.O_CLOEXEC)",
            EPERM,
            true,
        ),
        // In a nested user and mount namespace, a tmpfs mounts.
        probe(
            "mount",
            libc::SYS_mount,
            "userns_first()\nr = call(NR, b'none', b'/tmp', b'tmpfs', 0, None)",
            EPERM,
            false,
        ),
        // Likewise umount2 reaches the mount table (EINVAL: /tmp is locked there).
        probe(
            "umount2",
            libc::SYS_umount2,
            "userns_first()\nr = call(NR, b'/tmp', 2)",
            EPERM,
            false,
        ),
        // Likewise pivot_root reaches its argument checks (EINVAL or EBUSY).
        probe(
            "pivot_root",
            libc::SYS_pivot_root,
            "userns_first()\nr = call(NR, b'/tmp', b'/tmp')",
            EPERM,
            false,
        ),
        // PTRACE_CONT on a process that is not traced: ESRCH.
        probe(
            "ptrace",
            libc::SYS_ptrace,
            "r = call(NR, 7, os.getpid(), 0, 0)",
            EPERM,
            true,
        ),
        // Reading the runner's (our parent's) memory: succeeds, which is the attack.
        probe(
            "process_vm_readv",
            libc::SYS_process_vm_readv,
            "start = int(open(f'/proc/{os.getppid()}/maps').readline().split('-')[0], 16)\n\
             buf = ctypes.create_string_buffer(8)\n\
             local = iovec(ctypes.cast(buf, ctypes.c_void_p), 8)\n\
             remote = iovec(start, 8)\n\
             r = call(NR, os.getppid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)",
            EPERM,
            true,
        ),
        // A nested user namespace: succeeds, and gives back every capability inside it.
        probe(
            "unshare(CLONE_NEWUSER)",
            libc::SYS_unshare,
            "r = call(NR, 0x10000000)",
            EPERM,
            true,
        ),
        // clone as fork with CLONE_NEWUSER | SIGCHLD: a child in a new user namespace.
        probe(
            "clone(CLONE_NEWUSER)",
            libc::SYS_clone,
            "r = call(NR, 0x10000000 | 17, 0, 0, 0, 0)\n\
             if r[0] == 0: os._exit(0)\n\
             if r[0] > 0: os.waitpid(r[0], 0)",
            EPERM,
            true,
        ),
        // A NULL argument struct: EINVAL. The filter answers ENOSYS so libc falls back to clone.
        probe(
            "clone3",
            libc::SYS_clone3,
            "r = call(NR, None, 0)",
            ENOSYS,
            true,
        ),
        // A one-entry ring: succeeds.
        probe(
            "io_uring_setup",
            libc::SYS_io_uring_setup,
            "params = ctypes.create_string_buffer(120)\nr = call(NR, 1, params)",
            EPERM,
            true,
        ),
        // Turning ASLR off: succeeds (returns the old persona).
        probe(
            "personality(ADDR_NO_RANDOMIZE)",
            libc::SYS_personality,
            "r = call(NR, 0x0040000)",
            EPERM,
            true,
        ),
        // kexec and module loading: ENOSYS on a kernel built without them (as here); where
        // they exist, the kernel's own CAP_SYS_BOOT / CAP_SYS_MODULE check in the initial
        // namespace answers EPERM first, so there the probe only guards the list.
        probe(
            "kexec_load",
            libc::SYS_kexec_load,
            "r = call(NR, 0, 0, None, 0)",
            EPERM,
            false,
        ),
        probe(
            "init_module",
            libc::SYS_init_module,
            "r = call(NR, None, 0, b'')",
            EPERM,
            false,
        ),
    ]
}

/// A started runner over a temporary workspace.
struct Session {
    dir: tempfile::TempDir,
    _provider: LocalSandboxProvider,
    runner: Arc<dyn SessionRunner>,
}

#[derive(Debug)]
struct Exited {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Session {
    async fn start(mode: SandboxMode) -> Self {
        if mode == SandboxMode::Bubblewrap {
            require_binary(
                "bwrap",
                "these tests need a real sandbox: apt-get install bubblewrap",
            );
        }
        require_binary(
            "python3",
            "the probes call system calls through ctypes: apt-get install python3",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("ws")).expect("ws");
        let provider = LocalSandboxProvider::new(LocalSandboxConfig {
            mode,
            runner_exe: PathBuf::from(env!("CARGO_BIN_EXE_workspace")),
            bwrap: PathBuf::from("bwrap"),
            run_dir: dir.path().join("run"),
            start_timeout: Duration::from_secs(20),
            sandbox_user: HostIdentity::default(),
            limits: SandboxLimits::default(),
            toolchains: Default::default(),
        });
        let spec = SandboxSpec {
            session_id: SessionId::parse("sess-seccomp-1").expect("session id"),
            workspace_dir: dir.path().join("ws"),
        };
        let runner = provider.ensure(&spec).await.expect("runner starts");
        Self {
            dir,
            _provider: provider,
            runner,
        }
    }

    fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    async fn exec_env(&self, argv: &[&str], env: &[(&str, &str)]) -> Exited {
        let request = Request::Exec {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            cwd: ".".into(),
            stdin: None,
            timeout_ms: 120_000,
            max_output_bytes: 1024 * 1024,
            stream_output: false,
        };
        match self
            .runner
            .call(request, Duration::from_secs(150))
            .await
            .expect("runner answers")
        {
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

    async fn exec(&self, argv: &[&str]) -> Exited {
        self.exec_env(argv, &[]).await
    }

    async fn sh(&self, script: &str) -> Exited {
        self.exec(&["sh", "-c", script]).await
    }

    /// Runs every probe and returns the ones whose call did not fail with the expected errno.
    async fn failed_probes(&self, probes: &[Probe]) -> Vec<String> {
        let mut failed = Vec::new();
        for probe in probes {
            let exited = self.exec(&["python3", "-c", &probe.script]).await;
            let answer: Vec<i64> = exited
                .stdout
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if exited.code != 0 || answer != [-1, i64::from(probe.errno)] {
                failed.push(format!(
                    "{}: expected -1 errno {}, got {:?} (exit {}, stderr {:?})",
                    probe.name,
                    probe.errno,
                    exited.stdout.trim(),
                    exited.code,
                    exited.stderr.trim()
                ));
            }
        }
        failed
    }
}

#[tokio::test]
async fn denied_system_calls_fail_with_eperm_in_the_sandbox() {
    let session = Session::start(SandboxMode::Bubblewrap).await;
    let failed = session.failed_probes(&probes()).await;
    assert!(failed.is_empty(), "not filtered:\n{}", failed.join("\n"));
}

#[tokio::test]
async fn no_program_in_the_sandbox_can_create_a_user_namespace() {
    require_binary("unshare", "apt-get install util-linux");
    let session = Session::start(SandboxMode::Bubblewrap).await;
    // util-linux's unshare, as an agent would try it; refused by the filter (and, behind it,
    // by bwrap's --disable-userns).
    let exited = session.exec(&["unshare", "--user", "id", "-u"]).await;
    assert_ne!(
        exited.code, 0,
        "a nested user namespace was created: {exited:?}"
    );
    assert!(
        exited.stderr.contains("Operation not permitted"),
        "{exited:?}"
    );
}

#[tokio::test]
async fn an_unsandboxed_runner_filters_its_programs_too() {
    let session = Session::start(SandboxMode::Unsandboxed).await;
    let probes: Vec<Probe> = probes()
        .into_iter()
        .filter(|p| p.harmless_on_host)
        .collect();
    let failed = session.failed_probes(&probes).await;
    assert!(failed.is_empty(), "not filtered:\n{}", failed.join("\n"));
}

/// Threads (clone3 refused, so libc falls back to clone), subprocesses, git's forks, node's
/// thread pool and io_uring fallback, and compilers all keep working under the filter.
#[tokio::test]
async fn git_python_node_and_gcc_still_work_in_the_filtered_sandbox() {
    for (tool, hint) in [
        ("git", "apt-get install git"),
        ("node", "apt-get install nodejs"),
        ("gcc", "apt-get install gcc"),
    ] {
        require_binary(tool, hint);
    }
    let session = Session::start(SandboxMode::Bubblewrap).await;
    let git = session
        .sh(
            "git init -q . && git config user.email a@b && git config user.name agent \
             && echo hi > f.txt && git add f.txt && git commit -qm first && git log --oneline",
        )
        .await;
    assert_eq!(git.code, 0, "{git:?}");
    assert!(git.stdout.contains("first"), "{git:?}");

    let python = session
        .exec(&[
            "python3",
            "-c",
            "import threading, subprocess, concurrent.futures as f\n\
             t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
             out = subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout\n\
             with f.ThreadPoolExecutor(4) as pool: n = sum(pool.map(lambda x: x, range(10)))\n\
             print(out.strip(), n)",
        ])
        .await;
    assert_eq!(python.code, 0, "{python:?}");
    assert_eq!(python.stdout.trim(), "child 45", "{python:?}");

    let node = session
        .exec(&[
            "node",
            "-e",
            "const fs = require('fs'); const cp = require('child_process');\n\
             fs.writeFileSync('n.txt', 'node');\n\
             fs.promises.readFile('n.txt', 'utf8').then(s => {\n\
               console.log(s, cp.execFileSync('echo', ['spawned']).toString().trim());\n\
             });",
        ])
        .await;
    assert_eq!(node.code, 0, "{node:?}");
    assert_eq!(node.stdout.trim(), "node spawned", "{node:?}");

    std::fs::write(
        session.ws().join("hello.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hello from gcc\"); return 0; }\n",
    )
    .expect("hello.c");
    let gcc = session.sh("gcc -o hello hello.c && ./hello").await;
    assert_eq!(gcc.code, 0, "{gcc:?}");
    assert_eq!(gcc.stdout.trim(), "hello from gcc", "{gcc:?}");
}

/// The Rust toolchain lives under rustup's home, which the sandbox does not mount, so cargo is
/// proven under the same filter in an unsandboxed runner: a hello crate builds offline (cargo
/// runs rustc, which runs the linker, with jobserver threads) and runs.
#[tokio::test]
async fn cargo_builds_and_runs_a_crate_under_the_filter() {
    let cargo = toolchain_binary("cargo");
    let session = Session::start(SandboxMode::Unsandboxed).await;
    let ws = session.ws();
    std::fs::create_dir_all(ws.join("hello/src")).expect("crate dir");
    std::fs::write(
        ws.join("hello/Cargo.toml"),
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .expect("Cargo.toml");
    std::fs::write(
        ws.join("hello/src/main.rs"),
        "fn main() { println!(\"hello from cargo\"); }\n",
    )
    .expect("main.rs");
    let cargo = cargo.to_string_lossy().into_owned();
    let bin_dir = Path::new(&cargo)
        .parent()
        .expect("toolchain bin")
        .to_string_lossy()
        .into_owned();
    let cargo_home = ws.join(".cargo").to_string_lossy().into_owned();
    let path = format!("{bin_dir}:/usr/bin:/bin");
    let version = session
        .exec_env(&[&cargo, "--version"], &[("PATH", &path)])
        .await;
    assert_eq!(version.code, 0, "{version:?}");
    assert!(version.stdout.starts_with("cargo "), "{version:?}");
    let manifest = ws.join("hello/Cargo.toml").to_string_lossy().into_owned();
    let run = session
        .exec_env(
            &[
                &cargo,
                "run",
                "--offline",
                "--quiet",
                "--manifest-path",
                &manifest,
            ],
            &[("PATH", &path), ("CARGO_HOME", &cargo_home)],
        )
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), "hello from cargo", "{run:?}");
}

/// The real (not rustup proxy) binary of the toolchain running these tests: cargo sets `CARGO`
/// to itself.
fn toolchain_binary(name: &str) -> PathBuf {
    let cargo = PathBuf::from(env!("CARGO"));
    let path = cargo.with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: install Rust with rustup",
        path.display()
    );
    path
}
