//! A shared connection on which quick requests are pipelined: callers queue frames, one task
//! writes everything queued in one `write`, another reads the replies (the runner answers quick
//! requests in order, several per `write` when several were waiting) and hands each to its
//! caller by request id. Under load this replaces a `send`, a `recv` and a wake-up of the
//! runner per call by one per batch; a lone call never comes here (see `SocketRunner::call`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use foldhash::HashMap;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::super::RunnerError;
use super::super::frame::{FrameError, read_frame};
use super::super::protocol::{Frame, Reply};

/// Frames written per `write` at most.
const MAX_BATCH: usize = 256;

type Answer = oneshot::Sender<Result<Reply, RunnerError>>;

/// One pipelined connection.
pub(super) struct Pipe {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    waiting: Arc<Mutex<HashMap<u64, Answer>>>,
    /// The connection failed: calls on it cannot be answered.
    broken: Arc<AtomicBool>,
    /// A call timed out: new calls go to a fresh pipe, calls already here still complete.
    retired: AtomicBool,
}

impl Pipe {
    /// Connects and starts the writer and reader tasks.
    pub(super) async fn connect(path: &std::path::Path) -> io::Result<Pipe> {
        let stream = UnixStream::connect(path).await?;
        let (read, write) = stream.into_split();
        let (frames, queued) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(HashMap::default()));
        let broken = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_frames(write, queued, broken.clone()));
        tokio::spawn(read_replies(read, waiting.clone(), broken.clone()));
        Ok(Pipe {
            frames,
            waiting,
            broken,
            retired: AtomicBool::new(false),
        })
    }

    /// Whether new calls need a new pipe: the connection failed, or a call on it timed out.
    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire) || self.retired.load(Ordering::Acquire)
    }

    /// Sends no new calls here; calls in flight still get their replies.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Sends `frame` (request `id`) and waits for its reply. Dropping the future forgets the
    /// call; its reply, if it comes, is discarded.
    pub(super) async fn call(&self, id: u64, frame: Vec<u8>) -> Result<Reply, RunnerError> {
        let (answer, reply) = oneshot::channel();
        lock(&self.waiting).insert(id, answer);
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        // The reader marks the pipe broken before it fails the calls it knows: a call
        // registered after that would wait for nothing, so it looks once it is registered.
        if self.broken.load(Ordering::Acquire) || self.frames.send(frame).is_err() {
            return Err(closed());
        }
        reply.await.unwrap_or_else(|_| Err(closed()))
    }
}

/// Removes a call's entry when its caller stops waiting (answered, timed out or dropped).
struct Forget<'a> {
    waiting: &'a Mutex<HashMap<u64, Answer>>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiting).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn closed() -> RunnerError {
    RunnerError::Io(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the runner connection closed before the reply",
    ))
}

async fn write_frames(
    mut write: OwnedWriteHalf,
    mut queued: mpsc::UnboundedReceiver<Vec<u8>>,
    broken: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut buf = Vec::new();
    // Ends when every sender is gone (the pipe was dropped): the write half closes, the runner
    // finishes what it has, sees the end and closes, and the reader task ends.
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        buf.clear();
        for frame in batch.drain(..) {
            buf.extend_from_slice(&frame);
        }
        if write.write_all(&buf).await.is_err() {
            broken.store(true, Ordering::Release);
            return;
        }
    }
}

async fn read_replies(
    read: OwnedReadHalf,
    waiting: Arc<Mutex<HashMap<u64, Answer>>>,
    broken: Arc<AtomicBool>,
) {
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let failure = loop {
        match read_frame::<_, Reply>(&mut read).await {
            Ok(Some(frame)) => {
                let Frame { id, body } = frame;
                if let Some(answer) = lock(&waiting).remove(&id) {
                    let _ = answer.send(Ok(body));
                }
            }
            Ok(None) => break closed(),
            Err(FrameError::Io(e)) => break RunnerError::Io(e),
            Err(e) => break RunnerError::Protocol(e.to_string()),
        }
    };
    broken.store(true, Ordering::Release);
    let failed: Vec<Answer> = lock(&waiting).drain().map(|(_, answer)| answer).collect();
    for answer in failed {
        let _ = answer.send(Err(match &failure {
            RunnerError::Protocol(m) => RunnerError::Protocol(m.clone()),
            _ => closed(),
        }));
    }
}
