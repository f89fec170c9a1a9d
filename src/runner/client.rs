//! The executor's side of the runner protocol over a unix socket: [`SocketRunner`].
//!
//! A connection carries one request at a time, so the client keeps a small pool of idle
//! connections: a call takes one (or connects), sends its frame, reads the reply, and returns
//! the connection to the pool only after a complete, well-formed reply with the right id. Any
//! error or timeout drops the connection, so a half-read stream is never reused (and the runner
//! sees the hang-up, which kills a running `exec`).
//!
//! Quick requests (`Request::is_quick`) made while another is in flight are pipelined on one
//! shared connection instead ([`pipe`]): under load, one `write` and one `read` carry many. A
//! lone call keeps the direct path, which has the fewest hand-offs.
//!
//! This module never interprets replies (the tools do) and never retries a request that may
//! have reached the runner.

mod pipe;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::frame::{FrameError, encode_frame, read_frame};
use tokio::sync::mpsc;

use super::protocol::{Frame, PROTOCOL_VERSION, Reply, Request};
use super::{OutputChunk, RunnerError, SessionRunner};

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
    /// Quick calls in flight: a quick call that finds another one in flight is pipelined.
    quick_in_flight: AtomicUsize,
    /// The shared connection quick calls are pipelined on, once one was needed.
    pipe: Mutex<Option<Arc<pipe::Pipe>>>,
}

impl std::fmt::Debug for pipe::Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe")
            .field("broken", &self.is_broken())
            .finish()
    }
}

/// Counts a quick call in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SocketRunner {
    /// A client for the runner listening at `socket_path`. Connects lazily, on the first call.
    pub fn new(socket_path: impl Into<PathBuf>, isolation: &'static str) -> Self {
        Self {
            socket_path: socket_path.into(),
            isolation,
            next_id: AtomicU64::new(1),
            idle: Mutex::new(Vec::new()),
            quick_in_flight: AtomicUsize::new(0),
            pipe: Mutex::new(None),
        }
    }

    /// The shared pipelined connection, connected on first use and replaced once broken.
    async fn pipe(&self) -> Result<Arc<pipe::Pipe>, RunnerError> {
        let usable =
            |slot: &Option<Arc<pipe::Pipe>>| slot.as_ref().filter(|p| !p.is_broken()).cloned();
        if let Some(pipe) = usable(&self.pipe.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(pipe);
        }
        let fresh = Arc::new(
            pipe::Pipe::connect(&self.socket_path)
                .await
                .map_err(RunnerError::Io)?,
        );
        let mut slot = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        // Another call may have connected meanwhile: use one pipe, drop the other.
        if let Some(pipe) = usable(&slot) {
            return Ok(pipe);
        }
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    async fn pipelined(
        &self,
        frame: Vec<u8>,
        id: u64,
        timeout: Duration,
    ) -> Result<Reply, RunnerError> {
        let pipe = tokio::time::timeout(timeout, self.pipe())
            .await
            .map_err(|_| RunnerError::Timeout)??;
        match tokio::time::timeout(timeout, pipe.call(id, frame)).await {
            Ok(reply) => reply,
            Err(_) => {
                // A quick request that does not answer holds up the ones behind it: later calls
                // get a fresh connection.
                pipe.retire();
                Err(RunnerError::Timeout)
            }
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

    async fn exchange(
        &self,
        frame: &[u8],
        id: u64,
        chunks: Option<&mpsc::Sender<OutputChunk>>,
    ) -> Result<Reply, RunnerError> {
        if let Some(mut stream) = self.take_idle() {
            // A failed write means the runner closed the connection before reading anything
            // (it restarted): the request never arrived, so a fresh connection may carry it.
            if stream.write_all(frame).await.is_ok() {
                return self.finish(stream, id, chunks).await;
            }
        }
        let mut stream = UnixStream::connect(&self.socket_path)
            .await
            .map_err(RunnerError::Io)?;
        stream.write_all(frame).await.map_err(RunnerError::Io)?;
        self.finish(stream, id, chunks).await
    }

    /// Reads the reply to request `id`: the output chunks of a streamed `exec` (handed to
    /// `chunks`, or dropped without it), then the final reply.
    async fn finish(
        &self,
        mut stream: UnixStream,
        id: u64,
        chunks: Option<&mpsc::Sender<OutputChunk>>,
    ) -> Result<Reply, RunnerError> {
        // Only this request's frames follow it, so a buffer that lives for these reads loses
        // nothing, and a small reply (header and payload) takes one `recv`, not two.
        let mut reader = tokio::io::BufReader::with_capacity(REPLY_BUFFER, &mut stream);
        let body = loop {
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
            match reply.body {
                Reply::Output {
                    channel,
                    offset,
                    data,
                } => {
                    if let Some(chunks) = chunks {
                        let chunk = OutputChunk {
                            channel,
                            offset,
                            data: data.0,
                        };
                        // A receiver that went away no longer wants the output; the run goes on
                        // to its final reply.
                        let _ = chunks.send(chunk).await;
                    }
                }
                body => break body,
            }
        };
        drop(reader);
        self.put_idle(stream);
        Ok(body)
    }
}

#[async_trait::async_trait]
impl SessionRunner for SocketRunner {
    async fn call(&self, request: Request, timeout: Duration) -> Result<Reply, RunnerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&Frame { id, body: &request })
            .map_err(|e| RunnerError::Protocol(format!("request not sent: {e}")))?;
        if request.is_quick() {
            let busy = self.quick_in_flight.fetch_add(1, Ordering::AcqRel) > 0;
            let _in_flight = InFlight(&self.quick_in_flight);
            if busy {
                return self.pipelined(frame, id, timeout).await;
            }
            return tokio::time::timeout(timeout, self.exchange(&frame, id, None))
                .await
                .map_err(|_| RunnerError::Timeout)?;
        }
        // On timeout the exchange future, and with it the connection, is dropped.
        tokio::time::timeout(timeout, self.exchange(&frame, id, None))
            .await
            .map_err(|_| RunnerError::Timeout)?
    }

    async fn exec_streaming(
        &self,
        mut request: Request,
        timeout: Duration,
        chunks: mpsc::Sender<OutputChunk>,
    ) -> Result<Reply, RunnerError> {
        if let Request::Exec { stream_output, .. } = &mut request {
            *stream_output = true;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&Frame { id, body: &request })
            .map_err(|e| RunnerError::Protocol(format!("request not sent: {e}")))?;
        // On timeout the exchange future, and with it the connection, is dropped: the runner
        // sees the hang-up and kills the program's process group.
        tokio::time::timeout(timeout, self.exchange(&frame, id, Some(&chunks)))
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

    /// Concurrent quick calls share the pipelined connection and each gets its own reply.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_quick_calls_are_pipelined_and_get_their_own_replies() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _stop) = serve(dir.path()).await;
        for i in 0..50usize {
            std::fs::write(dir.path().join(format!("ws/f{i}.txt")), vec![b'x'; i]).unwrap();
        }
        let runner = std::sync::Arc::new(SocketRunner::new(&socket, "unsandboxed"));
        let calls = (0..400usize).map(|n| {
            let runner = runner.clone();
            tokio::spawn(async move {
                let i = n % 50;
                let request = Request::ReadFile {
                    path: format!("f{i}.txt"),
                    max_bytes: 4096,
                };
                let reply = runner.call(request, Duration::from_secs(10)).await.unwrap();
                assert!(
                    matches!(reply, Reply::File { size_bytes, .. } if size_bytes == i as u64),
                    "f{i}: {reply:?}"
                );
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.unwrap();
        }
        assert!(
            runner.pipe.lock().unwrap().is_some(),
            "concurrent calls used the pipelined connection"
        );
    }

    /// When the runner goes away, the calls waiting on the pipelined connection fail (never
    /// hang), and later calls reach the runner that replaces it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_pipelined_connection_fails_its_calls_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flaky.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // A peer that reads requests and hangs up without answering.
        let rude = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
            drop(stream);
            listener
        });
        let runner = std::sync::Arc::new(SocketRunner::new(&path, "unsandboxed"));
        // Hold one quick call "in flight" so the next ones are pipelined.
        runner.quick_in_flight.fetch_add(1, Ordering::AcqRel);
        let hello = || Request::Hello {
            version: PROTOCOL_VERSION,
        };
        let err = runner
            .call(hello(), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, RunnerError::Io(_)), "{err:?}");
        drop(rude.await.unwrap());
        std::fs::remove_file(&path).unwrap();
        // The runner comes back on the same path.
        let root = dir.path().join("ws");
        std::fs::create_dir_all(&root).unwrap();
        let server = RunnerServer::bind(&path, &root, "unsandboxed").unwrap();
        tokio::spawn(server.run_until_stopped(std::future::pending()));
        let reply = runner.call(hello(), Duration::from_secs(10)).await.unwrap();
        assert!(matches!(reply, Reply::Hello { .. }), "{reply:?}");
        runner.quick_in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// A pipelined call that times out retires its connection: a quick request that does not
    /// answer would hold up every call behind it, so the next call connects anew.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_pipelined_call_retires_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::AcqRel);
                held.push(stream);
            }
        });
        let runner = SocketRunner::new(&path, "unsandboxed");
        runner.quick_in_flight.fetch_add(1, Ordering::AcqRel);
        let hello = || Request::Hello {
            version: PROTOCOL_VERSION,
        };
        for _ in 0..2 {
            let err = runner
                .call(hello(), Duration::from_millis(100))
                .await
                .unwrap_err();
            assert!(matches!(err, RunnerError::Timeout), "{err:?}");
            assert!(runner.pipe.lock().unwrap().as_ref().unwrap().is_broken());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while accepted.load(Ordering::Acquire) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            accepted.load(Ordering::Acquire),
            2,
            "each call had a fresh connection"
        );
        silent.abort();
    }
}
