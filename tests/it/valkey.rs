//! Test harness: a real `redis-server` (standing in for Valkey) per test, on a free port of its
//! own, never the machine's 6379. No persistence, its own temporary dir, its log kept and
//! printed when the test fails, killed on drop. A test can kill it and start it again on the
//! same port ([`RedisServer::restart`]): it comes back empty, as a Valkey without persistence
//! does.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use workspace::readmodel::{Retention, ValkeyConfig};

use crate::support::require_binary;

/// How long a server may take to answer its first PING.
const STARTUP: Duration = Duration::from_secs(10);

/// A running `redis-server`.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        require_binary(
            "redis-server",
            "the Valkey tests need it (apt-get install redis-server)",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("redis.log");
        // A free port can be taken between our probe and the server's bind: try a few.
        let mut last_failure = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(port, dir.path(), &log) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                        log,
                        dir,
                    };
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!(
            "redis-server did not start ({last_failure}); its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Kills the server if it runs, then starts a new one on the same port (empty: nothing is
    /// persisted) and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        match spawn(self.port, self.dir.path(), &self.log) {
            Ok(child) => self.child = Some(child),
            Err(failure) => panic!(
                "redis-server did not start again on port {} ({failure}); its log:\n{}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    /// A store configuration for this server, with its own key prefixes.
    pub fn config(&self, retention: Retention) -> ValkeyConfig {
        ValkeyConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            db: 0,
            password: None,
            invocation_prefix: "test:invocation".into(),
            session_prefix: "test:session".into(),
            retention,
            timeout: Duration::from_secs(2),
        }
    }

    /// A plain client, to look at the keys.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connects")
    }

    /// Stops the server now (to test a server that went away).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server log (port {}) ---\n{}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Starts `redis-server` on `port` and waits until it answers PING.
fn spawn(port: u16, dir: &Path, log: &Path) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let deadline = Instant::now() + STARTUP;
    loop {
        if ping(port) {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no PONG within {STARTUP:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port nothing listens on right now (never the default 6379).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if port != 6379 {
            return port;
        }
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
