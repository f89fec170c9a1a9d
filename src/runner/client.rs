//! The executor's side of the runner protocol over a unix socket: [`SocketRunner`].
//!
//! A connection carries one request at a time, so the client keeps a small pool of idle
//! connections: a call takes one (or connects), sends its frame, reads the reply, and returns
//! the connection to the pool only after a complete, well-formed reply with the right id. Any
//! error or timeout drops the connection, so a half-read stream is never reused (and the runner
//! sees the hang-up, which kills a running `exec`).
//!
//! This module never interprets replies (the tools do) and never retries a request that may
//! have reached the runner.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::frame::{FrameError, encode_frame, read_frame};
use super::protocol::{Frame, PROTOCOL_VERSION, Reply, Request};
use super::{RunnerError, SessionRunner};

/// Idle connections kept per runner (the default executor concurrency); more concurrent calls
/// connect and close their own.
const MAX_IDLE_CONNECTIONS: usize = 64;

/// Read buffer of one reply: replies up to this size arrive in a single `recv`.
const REPLY_BUFFER: usize = 8 * 1024;

/// A [`SessionRunner`] reached through a unix socket.
#[derive(Debug)]
pub struct SocketRunner {
    socket_path: PathBuf,
    isolation: &'static str,
    next_id: AtomicU64,
    idle: Mutex<Vec<UnixStream>>,
}

impl SocketRunner {
    /// A client for the runner listening at `socket_path`. Connects lazily, on the first call.
    pub fn new(socket_path: impl Into<PathBuf>, isolation: &'static str) -> Self {
        Self {
            socket_path: socket_path.into(),
            isolation,
            next_id: AtomicU64::new(1),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The socket this client connects to.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Checks the runner answers and speaks our protocol version; returns the isolation the
    /// runner reports.
    pub async fn hello(&self, timeout: Duration) -> Result<String, RunnerError> {
        match self
            .call(
                Request::Hello {
                    version: PROTOCOL_VERSION,
                },
                timeout,
            )
            .await?
        {
            Reply::Hello { version, isolation } if version == PROTOCOL_VERSION => Ok(isolation),
            Reply::Hello { version, .. } => Err(RunnerError::Protocol(format!(
                "runner speaks protocol {version}, expected {PROTOCOL_VERSION}"
            ))),
            Reply::Error { message, .. } => Err(RunnerError::Protocol(message)),
            other => Err(RunnerError::Protocol(format!(
                "unexpected reply to hello: {other:?}"
            ))),
        }
    }

    /// Takes an idle connection that the runner has not closed meanwhile.
    fn take_idle(&self) -> Option<UnixStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(stream) = idle.pop() {
            // An idle connection has nothing to read: data or EOF means it is unusable.
            let mut probe = [0u8; 1];
            if let Err(e) = stream.try_read(&mut probe)
                && e.kind() == io::ErrorKind::WouldBlock
            {
                return Some(stream);
            }
        }
        None
    }

    fn put_idle(&self, stream: UnixStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(stream);
        }
    }

    async fn exchange(&self, frame: &[u8], id: u64) -> Result<Reply, RunnerError> {
        if let Some(mut stream) = self.take_idle() {
            // A failed write means the runner closed the connection before reading anything
            // (it restarted): the request never arrived, so a fresh connection may carry it.
            if stream.write_all(frame).await.is_ok() {
                return self.finish(stream, id).await;
            }
        }
        let mut stream = UnixStream::connect(&self.socket_path)
            .await
            .map_err(RunnerError::Io)?;
        stream.write_all(frame).await.map_err(RunnerError::Io)?;
        self.finish(stream, id).await
    }

    async fn finish(&self, mut stream: UnixStream, id: u64) -> Result<Reply, RunnerError> {
        // One reply follows one request and nothing else, so a buffer that lives for this read
        // loses nothing, and a small reply (header and payload) takes one `recv`, not two.
        let mut reader = tokio::io::BufReader::with_capacity(REPLY_BUFFER, &mut stream);
        let reply: Frame<Reply> = match read_frame(&mut reader).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(RunnerError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the runner closed the connection without replying",
                )));
            }
            Err(FrameError::Io(e)) => return Err(RunnerError::Io(e)),
            Err(e) => return Err(RunnerError::Protocol(e.to_string())),
        };
        if reply.id != id {
            return Err(RunnerError::Protocol(format!(
                "reply id {} does not match request id {id}",
                reply.id
            )));
        }
        self.put_idle(stream);
        Ok(reply.body)
    }
}

#[async_trait::async_trait]
impl SessionRunner for SocketRunner {
    async fn call(&self, request: Request, timeout: Duration) -> Result<Reply, RunnerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&Frame { id, body: &request })
            .map_err(|e| RunnerError::Protocol(format!("request not sent: {e}")))?;
        // On timeout the exchange future, and with it the connection, is dropped.
        tokio::time::timeout(timeout, self.exchange(&frame, id))
            .await
            .map_err(|_| RunnerError::Timeout)?
    }

    fn isolation(&self) -> &'static str {
        self.isolation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::server::RunnerServer;
    use tokio::time::Instant;

    async fn serve(dir: &Path) -> (PathBuf, tokio::sync::oneshot::Sender<()>) {
        let root = dir.join("ws");
        std::fs::create_dir_all(&root).unwrap();
        let socket = dir.join("runner.sock");
        let server = RunnerServer::bind(&socket, &root, "unsandboxed").unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run_until_stopped(async {
            let _ = stopped.await;
        }));
        (socket, stop)
    }

    #[tokio::test]
    async fn connections_are_reused_and_a_restarted_runner_is_reconnected() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, stop) = serve(dir.path()).await;
        let runner = SocketRunner::new(&socket, "unsandboxed");
        assert_eq!(
            runner.hello(Duration::from_secs(5)).await.unwrap(),
            "unsandboxed"
        );
        assert_eq!(runner.idle.lock().unwrap().len(), 1);
        runner.hello(Duration::from_secs(5)).await.unwrap();
        assert_eq!(runner.idle.lock().unwrap().len(), 1);

        // The runner goes away and comes back on the same path: the pooled connection is stale.
        stop.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let idle_closed = {
                let idle = runner.idle.lock().unwrap();
                let mut probe = [0u8; 1];
                idle.first().is_none_or(|s| {
                    !matches!(
                        s.try_read(&mut probe),
                        Err(ref e) if e.kind() == io::ErrorKind::WouldBlock
                    )
                })
            };
            if idle_closed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the old server kept the connection"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (_socket, _stop) = serve(dir.path()).await;
        assert_eq!(
            runner.hello(Duration::from_secs(5)).await.unwrap(),
            "unsandboxed"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_io_error_and_a_silent_peer_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let runner = SocketRunner::new(dir.path().join("none.sock"), "unsandboxed");
        let err = runner.hello(Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, RunnerError::Io(_)), "{err:?}");

        let path = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accept = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            // Hold the connection open without answering.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(stream);
        });
        let runner = SocketRunner::new(&path, "unsandboxed");
        let err = runner.hello(Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(err, RunnerError::Timeout), "{err:?}");
        assert!(
            runner.idle.lock().unwrap().is_empty(),
            "a timed-out stream is never pooled"
        );
        accept.abort();
    }

    /// Many calls reuse one pooled connection and each gets its own reply (latency is measured
    /// by `cargo bench --bench runner`, not asserted here).
    #[tokio::test]
    async fn sequential_calls_reuse_one_connection_and_get_their_own_replies() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _stop) = serve(dir.path()).await;
        let runner = SocketRunner::new(&socket, "unsandboxed");
        for i in 0..200u64 {
            let name = format!("f{}.txt", i % 7);
            std::fs::write(dir.path().join("ws").join(&name), vec![b'x'; i as usize]).unwrap();
            let reply = runner
                .call(
                    Request::ReadFile {
                        path: name,
                        max_bytes: 4096,
                    },
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            assert!(
                matches!(reply, Reply::File { size_bytes, .. } if size_bytes == i),
                "{reply:?}"
            );
            assert_eq!(runner.idle.lock().unwrap().len(), 1);
        }
    }
}
