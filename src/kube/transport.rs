//! How an executor reaches a runner pod (ADR 0011): one long-lived byte stream per session per
//! executor (the pod's exec stream, running `workspace runner --stdio`), carrying many runner
//! connections at once.
//!
//! The multiplexer ([`Mux`]) cuts the stream into channels: each frame is a channel number, a
//! kind (`open`, `data`, `close`) and up to [`MAX_CHUNK`] bytes. A channel is exactly a runner
//! connection: the pod side connects each opened channel to its runner's unix socket
//! ([`serve_stdio`]); the executor side ([`Bridge`]) listens on a private unix socket of its
//! own and opens one channel per accepted connection. So the executor's [`SocketRunner`]
//! (idle pool, pipelining, hang-up kills an `exec`) works unchanged and nothing above the
//! runner seam knows the runner is in a pod.
//!
//! A `close` is a half-close of its sender's direction (the runner sees the hang-up of a
//! client that went away). It is also the cancel of an abandoned call: the executor's
//! [`SocketRunner`] drops a call's connection when it gives up on it (its timeout, or its
//! caller dropped), the bridge sends that channel's `close`, the pod side half-closes its
//! connection to the runner, and the runner's hang-up rule kills the call's process group,
//! exactly as for a local sandbox; the other channels on the stream run on. So the runner
//! protocol (and its version) is the local one. When the stream fails, every connection on it is closed (calls in
//! flight fail `Io`, never retried: they may have reached the runner), and the next
//! connection dials a new stream ([`Dial`]). This module never interprets runner frames.
//!
//! [`SocketRunner`]: crate::runner::SocketRunner

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Largest payload of one frame.
pub const MAX_CHUNK: usize = 32 * 1024;
/// Frames queued for the stream's writer (backpressure for every channel).
const WRITE_QUEUE: usize = 64;
/// Buffer of one channel's in-process pipe.
const CHANNEL_BUFFER: usize = 256 * 1024;

const OPEN: u8 = 1;
const DATA: u8 = 2;
const CLOSE: u8 = 3;

/// A byte stream the multiplexer runs on (an exec stream's stdout and stdin, or a test's
/// in-memory duplex).
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
/// See [`BoxRead`].
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

struct Frame {
    channel: u32,
    kind: u8,
    data: Vec<u8>,
}

async fn write_frame(w: &mut BoxWrite, f: &Frame) -> io::Result<()> {
    let len = u32::try_from(f.data.len()).map_err(io::Error::other)?;
    let mut head = [0u8; 9];
    head[..4].copy_from_slice(&f.channel.to_be_bytes());
    head[4] = f.kind;
    head[5..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(&f.data).await
}

/// Reads one frame; `None` at a clean end of the stream.
async fn read_frame(r: &mut BoxRead) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let channel = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
    if len > MAX_CHUNK || !matches!(head[4], OPEN | DATA | CLOSE) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad mux frame (kind {}, {len} bytes)", head[4]),
        ));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).await?;
    Ok(Some(Frame {
        channel,
        kind: head[4],
        data,
    }))
}

type Inbound = mpsc::UnboundedSender<Option<Vec<u8>>>;

/// One multiplexed stream. Dropping it (or the stream failing) ends every channel.
pub struct Mux {
    out: mpsc::Sender<Frame>,
    channels: Arc<Mutex<HashMap<u32, Inbound>>>,
    next: AtomicU64,
    dead: CancellationToken,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux")
            .field("dead", &self.dead.is_cancelled())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mux {
    /// Runs a multiplexer on `read`/`write`. Channels the peer opens go to `accepted` (the pod
    /// side); without it, they are refused (closed at once).
    pub fn start(
        read: BoxRead,
        mut write: BoxWrite,
        accepted: Option<mpsc::UnboundedSender<DuplexStream>>,
    ) -> Arc<Mux> {
        let (out, mut queued) = mpsc::channel::<Frame>(WRITE_QUEUE);
        let dead = CancellationToken::new();
        let mux = Arc::new(Mux {
            out,
            channels: Arc::new(Mutex::new(HashMap::new())),
            // The executor side opens odd channels, so the two sides never collide.
            next: AtomicU64::new(1),
            dead: dead.clone(),
        });
        let writer_dead = dead.clone();
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    () = writer_dead.cancelled() => break,
                    frame = queued.recv() => match frame { Some(f) => f, None => break },
                };
                if write_frame(&mut write, &frame).await.is_err() || write.flush().await.is_err() {
                    break;
                }
            }
            writer_dead.cancel();
            let _ = write.shutdown().await;
        });
        let weak = Arc::downgrade(&mux);
        let channels = mux.channels.clone();
        tokio::spawn(async move {
            let mut read = read;
            loop {
                let frame = tokio::select! {
                    () = dead.cancelled() => break,
                    frame = read_frame(&mut read) => match frame {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "runner stream failed");
                            break;
                        }
                    },
                };
                match frame.kind {
                    OPEN => {
                        let Some(mux) = weak.upgrade() else { break };
                        let local = mux.attach(frame.channel);
                        match &accepted {
                            Some(tx) if tx.send(local).is_ok() => {}
                            _ => {
                                lock(&channels).remove(&frame.channel);
                                let _ = mux.out.try_send(Frame {
                                    channel: frame.channel,
                                    kind: CLOSE,
                                    data: Vec::new(),
                                });
                            }
                        }
                    }
                    DATA => {
                        if let Some(tx) = lock(&channels).get(&frame.channel) {
                            let _ = tx.send(Some(frame.data));
                        }
                    }
                    _ => {
                        if let Some(tx) = lock(&channels).get(&frame.channel) {
                            let _ = tx.send(None);
                        }
                    }
                }
            }
            dead.cancel();
            // Every channel's inbound sender goes: their pipes see the end.
            lock(&channels).clear();
        });
        mux
    }

    /// Whether the stream ended or failed: no channel can be opened on it.
    pub fn is_dead(&self) -> bool {
        self.dead.is_cancelled()
    }

    /// Completes when the stream ends or fails.
    pub async fn closed(&self) {
        self.dead.cancelled().await
    }

    /// Opens a channel; its bytes are the returned pipe's.
    pub async fn open(&self) -> io::Result<DuplexStream> {
        if self.is_dead() {
            return Err(gone());
        }
        let channel = u32::try_from(self.next.fetch_add(2, Ordering::Relaxed))
            .map_err(|_| io::Error::other("mux channel numbers exhausted"))?;
        let local = self.attach(channel);
        self.out
            .send(Frame {
                channel,
                kind: OPEN,
                data: Vec::new(),
            })
            .await
            .map_err(|_| gone())?;
        Ok(local)
    }

    /// Registers `channel` and starts the pumps between it and a fresh in-process pipe;
    /// returns the pipe's other end.
    fn attach(&self, channel: u32) -> DuplexStream {
        let (local, remote) = tokio::io::duplex(CHANNEL_BUFFER);
        let (inbound, mut incoming) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
        lock(&self.channels).insert(channel, inbound);
        let (mut from_pipe, mut to_pipe) = tokio::io::split(remote);
        let out = self.out.clone();
        let dead = self.dead.clone();
        let channels = self.channels.clone();
        // Peer → pipe.
        let down = tokio::spawn(async move {
            while let Some(Some(data)) = incoming.recv().await {
                if to_pipe.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = to_pipe.shutdown().await;
        });
        // Pipe → peer, then a close; the channel is forgotten once both directions ended.
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                let n = tokio::select! {
                    () = dead.cancelled() => break,
                    n = from_pipe.read(&mut buf) => match n { Ok(0) | Err(_) => 0, Ok(n) => n },
                };
                let kind = if n == 0 { CLOSE } else { DATA };
                let frame = Frame {
                    channel,
                    kind,
                    data: buf[..n].to_vec(),
                };
                if out.send(frame).await.is_err() || n == 0 {
                    break;
                }
            }
            let _ = down.await;
            lock(&channels).remove(&channel);
        });
        local
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the runner stream is closed")
}

/// The pod side: serves a multiplexed stream on `read`/`write` (stdin and stdout of
/// `workspace runner --stdio`), connecting every channel to the runner socket at `socket`.
/// Returns when the stream ends.
pub async fn serve_stdio(read: BoxRead, write: BoxWrite, socket: &Path) {
    let (accepted, mut channels) = mpsc::unbounded_channel();
    let mux = Mux::start(read, write, Some(accepted));
    // Ended or dropped, the stream goes down with it.
    let _down = mux.dead.clone().drop_guard();
    loop {
        tokio::select! {
            () = mux.closed() => return,
            channel = channels.recv() => {
                let Some(mut channel) = channel else { return };
                let socket = socket.to_path_buf();
                tokio::spawn(async move {
                    match UnixStream::connect(&socket).await {
                        Ok(mut conn) => {
                            let _ = tokio::io::copy_bidirectional(&mut channel, &mut conn).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "runner socket unreachable"),
                    }
                });
            }
        }
    }
}

/// Opens the byte stream to a session's runner (the pod's exec stream, or a test's duplex).
#[async_trait::async_trait]
pub trait Dial: Send + Sync + 'static {
    /// A new stream to the runner, with `workspace runner --stdio` at its other end.
    async fn dial(&self) -> io::Result<(BoxRead, BoxWrite)>;
}

/// The executor side of one session: a private unix socket whose every connection is a
/// channel of the session's stream, dialled on first use and again after it failed.
pub struct Bridge {
    socket: PathBuf,
    stop: CancellationToken,
    dials: Arc<AtomicU64>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("socket", &self.socket)
            .finish()
    }
}

impl Bridge {
    /// Binds `socket` (its directory must exist and be private to the service) and serves it
    /// until dropped.
    pub fn bind(socket: PathBuf, dial: Arc<dyn Dial>) -> io::Result<Bridge> {
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        }
        let stop = CancellationToken::new();
        let dials = Arc::new(AtomicU64::new(0));
        tokio::spawn(serve_bridge(listener, dial, stop.clone(), dials.clone()));
        Ok(Bridge {
            socket,
            stop,
            dials,
        })
    }

    /// The socket a [`SocketRunner`](crate::runner::SocketRunner) connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// How many streams were dialled so far (1 while the first one lives).
    pub fn dials(&self) -> u64 {
        self.dials.load(Ordering::Relaxed)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn serve_bridge(
    listener: UnixListener,
    dial: Arc<dyn Dial>,
    stop: CancellationToken,
    dials: Arc<AtomicU64>,
) {
    let current: Arc<tokio::sync::Mutex<Option<Arc<Mux>>>> = Arc::default();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut conn, _)) = accepted else {
            continue;
        };
        let (current, dial, dials, stop) =
            (current.clone(), dial.clone(), dials.clone(), stop.clone());
        tokio::spawn(async move {
            let mux = {
                let mut slot = current.lock().await;
                match slot.as_ref().filter(|m| !m.is_dead()) {
                    Some(mux) => mux.clone(),
                    None => match dial.dial().await {
                        Ok((read, write)) => {
                            dials.fetch_add(1, Ordering::Relaxed);
                            let mux = Mux::start(read, write, None);
                            *slot = Some(mux.clone());
                            mux
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not open the runner stream");
                            return;
                        }
                    },
                }
            };
            let Ok(mut channel) = mux.open().await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut conn, &mut channel) => {}
                () = mux.closed() => {}
                () = stop.cancelled() => {}
            }
        });
    }
    if let Some(mux) = current.lock().await.take() {
        mux.dead.cancel();
    }
}
