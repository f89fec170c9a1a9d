//! The embedded event store: an append-only log file in a data directory, implementing
//! [`EventLog`] with the guarantees stated in [`crate::eventstore`].
//!
//! It owns `<dir>/events.log` and `<dir>/events.lock`; nothing else may write them. It never
//! acknowledges an append before the bytes are in the file, never publishes (index, cache, head)
//! what it has not written, and never drops or misreads an intact record.
//!
//! # On-disk format
//!
//! `events.log` is a sequence of records, nothing else (no file header):
//!
//! ```text
//! u32 LE length word | u32 LE crc32 | payload
//! ```
//!
//! - payload: the JSON of one `RecordedEvent` (`{"sequence":N,` + the flattened envelope), at most
//!   16 MiB - 1; sequences start at 1 and increase by one per record;
//! - length word: low 24 bits = payload length; top byte = 1 if the next record belongs to the same
//!   append, 0 on an append's last record (so recovery can drop a partially written append as a
//!   whole, keeping appends all-or-nothing);
//! - crc32: crc32fast (IEEE) over the four length-word bytes followed by the payload.
//!
//! On open the file is scanned and the indexes are rebuilt (per aggregate: its sequences, whose
//! count is its version; sequence → offset; event id → sequence). A torn or corrupt tail — short
//! header, short payload, CRC mismatch, unparsable JSON, a sequence that is not the previous + 1,
//! or an append cut short — is truncated at the end of the last complete append after the dropped
//! bytes are copied to `events.log.corrupt-<unix_ts>`, with a warning naming the byte count.
//! Damage followed by an intact record is refused with [`StoreError::Corrupt`] instead (see
//! `recovery`). `events.lock` carries an exclusive `flock` for as long as the log is open, so two
//! processes (or two handles) can never write the same log.
//!
//! # Durability: [`FsyncPolicy`]
//!
//! Every append is written to the kernel (`pwrite`) before it is acknowledged, so a crash of the
//! process loses nothing acknowledged under any policy. The policy decides what a power failure
//! can lose:
//! - `Always`: every batch is `fdatasync`ed before it is acknowledged (nothing acknowledged is lost);
//! - `Interval(d)` (default, 1 s): a background thread `fdatasync`s every `d` when something was
//!   written (at most the last `d` of acknowledged appends is lost), like JetStream's
//!   `sync_interval`;
//! - `Never`: no `fdatasync` at all, not even on close (tests and benchmarks only).
//!
//! A failed `fdatasync` makes the log refuse further appends until it is reopened, because after
//! such a failure the kernel may have dropped the unsynced pages and later syncs prove nothing.
//!
//! # Reads
//!
//! The most recent events (8192 by default) are kept in memory, so readers that follow the head
//! (projector, executor) never touch the disk; older events are read with positioned reads on a
//! blocking thread, and their CRC is checked again.

mod dedup;
mod index;
mod pauseless;
mod record;
mod recovery;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use ulid::Ulid;
use workspace_events::{AggregateType, EventEnvelope, RecordedEvent};

use self::index::{Index, ReadPlan, Span};
use self::recovery::Recovered;
use self::writer::{Answer, AppendRequest, Command, Flusher, Writer, closed};
use super::{Appended, EventLog, StoreError};

/// File name of the log inside the data directory.
pub const LOG_FILE: &str = "events.log";
/// File name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "events.lock";

/// Appends that may wait for the writer before `append` itself waits (backpressure).
const QUEUE_CAPACITY: usize = 16 * 1024;

/// When the log `fdatasync`s (see the module documentation). Parses from `always`, `never`,
/// `interval` (1 s) or a sync interval such as `200ms` or `2s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Sync every batch before acknowledging it.
    Always,
    /// Acknowledge once written to the kernel; sync in the background at this interval.
    Interval(Duration),
    /// Never sync (tests and benchmarks only).
    Never,
}

impl FsyncPolicy {
    /// The default interval of [`FsyncPolicy::Interval`].
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Self::DEFAULT_INTERVAL)
    }
}

/// A string that is not an [`FsyncPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid fsync policy {0:?}: use `always`, `interval` (1s), a sync interval such as `200ms` \
     or `2s`, or `never`"
)]
pub struct ParseFsyncPolicyError(String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let lower = value.trim().to_ascii_lowercase();
        match lower.as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            "interval" => Ok(FsyncPolicy::default()),
            other => parse_interval(other)
                .map(FsyncPolicy::Interval)
                .ok_or_else(|| ParseFsyncPolicyError(value.to_owned())),
        }
    }
}

/// `<digits><unit>` with unit `us`, `ms`, `s` or `m`; zero is not an interval.
fn parse_interval(value: &str) -> Option<Duration> {
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let amount: u64 = value[..split].parse().ok()?;
    let interval = match &value[split..] {
        "us" => Duration::from_micros(amount),
        "ms" => Duration::from_millis(amount),
        "s" => Duration::from_secs(amount),
        "m" => Duration::from_secs(amount.checked_mul(60)?),
        _ => return None,
    };
    (!interval.is_zero()).then_some(interval)
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) if d.subsec_nanos() == 0 => write!(f, "{}s", d.as_secs()),
            FsyncPolicy::Interval(d) if d.subsec_nanos() % 1_000_000 == 0 => {
                write!(f, "{}ms", d.as_millis())
            }
            FsyncPolicy::Interval(d) => write!(f, "{}us", d.as_micros()),
        }
    }
}

/// Everything [`FileEventLog::open_with`] can tune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEventLogOptions {
    /// When to `fdatasync`.
    pub fsync: FsyncPolicy,
    /// How many of the most recent events are kept in memory (0 reads everything from disk).
    pub cache_events: usize,
    /// Most append requests the writer commits in one batch (one write, one sync).
    pub max_batch: usize,
    /// How long a stored event id is remembered for deduplication (see [`DEDUP_WINDOW`]).
    pub dedup_window: Duration,
}

pub use self::dedup::DEFAULT_WINDOW as DEDUP_WINDOW;

impl Default for FileEventLogOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::default(),
            cache_events: 8192,
            max_batch: 1024,
            dedup_window: DEDUP_WINDOW,
        }
    }
}

/// State shared by the handle (readers) and the writer thread.
struct Shared {
    /// The log, opened read-write. Both sides use positioned IO only, so the cursor is unused.
    file: File,
    /// Mutated only by whoever holds the writer's lock, after a batch is written.
    index: RwLock<Index>,
    head: watch::Sender<u64>,
    /// Set once when the log can no longer be trusted to persist writes; appends then fail.
    failure: OnceLock<String>,
}

impl Shared {
    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        // Only the writer's lock holder takes the write lock, and `Index::push` does not panic, so the
        // lock is never poisoned in practice; if it were, the index would still be consistent up
        // to the last completed push.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "event log stops accepting appends");
        let _ = self.failure.set(reason);
    }

    fn healthy(&self) -> Result<(), StoreError> {
        match self.failure.get() {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }
}

/// The embedded [`EventLog`]: an append-only file with one writer (group commit under one lock) and
/// in-memory indexes. See the module documentation for the format and guarantees.
pub struct FileEventLog {
    shared: Arc<Shared>,
    /// The writer's state. The writer thread takes it per batch; under `Interval` and `Never`
    /// appenders also take it and commit on their own thread (see [`FileEventLog::append`]).
    state: Arc<Mutex<Writer>>,
    /// Appends waiting for whoever holds `state` next, when appenders commit themselves
    /// (`None` under `Always`, where every append goes to the writer thread).
    inline: Option<Mutex<Vec<AppendRequest>>>,
    /// `None` only while dropping.
    commands: Option<mpsc::Sender<Command>>,
    /// Joined on drop so the final sync and the lock release have happened when drop returns.
    writer: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl fmt::Debug for FileEventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileEventLog")
            .field("dir", &self.dir)
            .field("head", &*self.shared.head.borrow())
            .finish_non_exhaustive()
    }
}

impl FileEventLog {
    /// Opens (creating if needed) the log in `dir` with default options and the given policy.
    /// See [`FileEventLog::open_with`].
    pub async fn open(dir: &Path, fsync: FsyncPolicy) -> Result<Arc<Self>, StoreError> {
        Self::open_with(
            dir,
            FileEventLogOptions {
                fsync,
                ..FileEventLogOptions::default()
            },
        )
        .await
    }

    /// Opens (creating if needed) the log in `dir`: takes the directory lock, scans the file,
    /// repairs a torn tail and rebuilds the indexes (on a blocking thread), then starts the
    /// writer. Fails with [`StoreError::Unavailable`] if the log is already open, and with
    /// [`StoreError::Corrupt`] if it is damaged before its end.
    pub async fn open_with(
        dir: &Path,
        options: FileEventLogOptions,
    ) -> Result<Arc<Self>, StoreError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(dir, options))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the event log failed: {e}")))?
    }

    fn open_blocking(dir: PathBuf, options: FileEventLogOptions) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(&dir)?;
        let lock = lock_dir(&dir)?;
        let (file, recovered) = open_log(&dir, &options)?;
        let (shared, commands, receiver, writer) = assemble(file, recovered, lock, &options)?;
        let state = Arc::new(Mutex::new(writer));
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("eventlog-writer".into())
            .spawn(move || Writer::run(thread_state, receiver))?;
        // Without a sync per batch a commit is one `pwrite` into the page cache: cheaper to do
        // on the appender's thread than to wake the writer thread and wait to be woken back.
        let inline = (options.fsync != FsyncPolicy::Always).then(|| Mutex::new(Vec::new()));
        Ok(Arc::new(Self {
            shared,
            state,
            inline,
            commands: Some(commands),
            writer: Some(thread),
            dir,
        }))
    }

    /// A conflicting append whose events may be stored already: a retry that came after the
    /// writer's duplicate window forgot their ids. Their original append put them right after
    /// `expected_version`, so the aggregate's events there say: all the ids → the original
    /// positions with `duplicate: true`; some → `InvalidAppend`; none → the conflict. The
    /// JetStream store settles the same way, so both answer a late retry alike.
    async fn settle(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        expected_version: u64,
        ids: &[Ulid],
        conflict: StoreError,
    ) -> Result<Appended, StoreError> {
        let stored = self.load(aggregate_type, aggregate_id).await?;
        let after: Vec<&RecordedEvent> = stored
            .iter()
            .map(AsRef::as_ref)
            .filter(|e| e.envelope.aggregate_version > expected_version)
            .collect();
        let found = ids
            .iter()
            .filter(|id| stored.iter().any(|e| e.envelope.event_id == **id))
            .count();
        let in_place = ids.len() <= after.len()
            && ids
                .iter()
                .zip(&after)
                .all(|(id, e)| e.envelope.event_id == *id);
        match (found, in_place) {
            (0, _) => Err(conflict),
            (_, true) => Ok(Appended {
                first_sequence: after[0].sequence,
                last_sequence: after[ids.len() - 1].sequence,
                duplicate: true,
            }),
            _ => Err(StoreError::InvalidAppend(format!(
                "{found} of the {} events are already stored; a retry must resend exactly the \
                 original events",
                ids.len()
            ))),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes everything queued, syncs (except under [`FsyncPolicy::Never`]), stops the writer
    /// and releases the directory lock. Appends fail with [`StoreError::Unavailable`] afterwards;
    /// reads keep working. Closing twice is harmless.
    pub async fn close(&self) -> Result<(), StoreError> {
        let Some(commands) = &self.commands else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        if commands.send(Command::Close(reply)).await.is_err() {
            return Ok(());
        }
        // A dropped reply means another `close` finished first.
        answer.await.unwrap_or(Ok(()))
    }

    fn commands(&self) -> Result<&mpsc::Sender<Command>, StoreError> {
        self.commands.as_ref().ok_or_else(closed)
    }

    async fn execute(&self, plan: ReadPlan) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        if plan.disk.is_empty() {
            return Ok(plan.cached);
        }
        let shared = Arc::clone(&self.shared);
        let spans = plan.disk;
        let mut events = tokio::task::spawn_blocking(move || read_spans(&shared.file, &spans))
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading the event log failed: {e}")))??;
        events.extend(plan.cached);
        Ok(events)
    }
}

impl Drop for FileEventLog {
    fn drop(&mut self) {
        // Dropping the last sender lets the writer drain the queue, sync and release the lock.
        self.commands = None;
        if let Some(thread) = self.writer.take()
            && thread.join().is_err()
        {
            tracing::error!("event log writer thread panicked");
        }
    }
}

/// Commits everything queued for inline commit when dropped (see `FileEventLog::append`).
struct CommitQueued<'a> {
    queue: &'a Mutex<Vec<AppendRequest>>,
    writer: &'a Mutex<Writer>,
}

impl Drop for CommitQueued<'_> {
    fn drop(&mut self) {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        if !batch.is_empty() {
            writer.commit(batch);
        }
    }
}

#[async_trait::async_trait]
impl EventLog for FileEventLog {
    async fn append(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<EventEnvelope>,
    ) -> Result<Appended, StoreError> {
        // Shape checks and encoding happen here, on the caller's task, to keep the single writer
        // thread's per-event work minimal.
        check_shape(aggregate_type, aggregate_id, expected_version, &events)?;
        let encoded = encode(&events)?;
        let commands = self.commands()?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            aggregate_type,
            aggregate_id: aggregate_id.to_owned(),
            expected_version,
            // The writer assigns the sequence.
            events: events
                .into_iter()
                .map(|envelope| {
                    Arc::new(RecordedEvent {
                        sequence: 0,
                        envelope,
                    })
                })
                .collect(),
            encoded,
            reply,
        };
        match &self.inline {
            Some(queue) => {
                // Group commit without a hand-off: queue the request, let the other runnable
                // tasks queue theirs (so under load one `pwrite` carries many appends; alone,
                // this costs one extra poll), then take the writer's lock and commit everything
                // queued. Whoever holds the lock next commits a request queued meanwhile, so
                // none is left behind. The commit happens when `pending` drops, so an append
                // whose caller goes away during the yield is still committed now, not whenever
                // the next append comes.
                queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(request);
                let pending = CommitQueued {
                    queue,
                    writer: &self.state,
                };
                tokio::task::yield_now().await;
                drop(pending);
            }
            None => commands
                .send(Command::Append(request))
                .await
                .map_err(|_| closed())?,
        }
        let Answer { result, returned } = answer.await.map_err(|_| closed())?;
        match result {
            // A rejected request's events come back in `returned`.
            Err(conflict @ StoreError::Conflict { actual, .. }) if actual > expected_version => {
                let ids: Vec<Ulid> = returned
                    .events
                    .iter()
                    .map(|e| e.envelope.event_id)
                    .collect();
                drop(returned);
                self.settle(
                    aggregate_type,
                    aggregate_id,
                    expected_version,
                    &ids,
                    conflict,
                )
                .await
            }
            result => {
                // Freed here, on the appender's thread, not on the writer's.
                drop(returned);
                result
            }
        }
    }

    async fn load(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        let plan = self
            .shared
            .read_index()
            .plan_aggregate(aggregate_type, aggregate_id);
        self.execute(plan).await
    }

    async fn read_from(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        let plan = self.shared.read_index().plan_range(after, limit);
        self.execute(plan).await
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.shared.healthy()?;
        let (reply, answer) = oneshot::channel();
        self.commands()?
            .send(Command::Ping(reply))
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?;
        self.shared.healthy()
    }
}

/// Opens (creating) `<dir>/events.log`, scans it and repairs its tail. The caller holds the lock.
fn open_log(dir: &Path, options: &FileEventLogOptions) -> Result<(File, Recovered), StoreError> {
    let path = dir.join(LOG_FILE);
    let created = !path.try_exists()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    if created {
        // Make the new file's directory entry durable before anything is acknowledged.
        File::open(dir)?.sync_all()?;
    }
    let recovered = recovery::recover(&file, &path, options.cache_events, options.dedup_window)?;
    tracing::info!(
        log = %path.display(),
        events = recovered.index.head(),
        bytes = recovered.index.end(),
        "event log opened"
    );
    Ok((file, recovered))
}

/// The shared state, the command channel and a writer ready to run (and the flusher, under
/// [`FsyncPolicy::Interval`]).
/// What `assemble` builds: the shared state, both ends of the writer's mailbox, and the writer.
type Assembled = (
    Arc<Shared>,
    mpsc::Sender<Command>,
    mpsc::Receiver<Command>,
    Writer,
);

fn assemble(
    file: File,
    recovered: Recovered,
    lock: File,
    options: &FileEventLogOptions,
) -> Result<Assembled, StoreError> {
    let (head, len) = (recovered.index.head(), recovered.index.end());
    let (head_tx, _) = watch::channel(head);
    let shared = Arc::new(Shared {
        file,
        index: RwLock::new(recovered.index),
        head: head_tx,
        failure: OnceLock::new(),
    });
    let flusher = match options.fsync {
        FsyncPolicy::Interval(interval) => Some(Flusher::spawn(Arc::clone(&shared), interval)?),
        FsyncPolicy::Always | FsyncPolicy::Never => None,
    };
    let (commands, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let writer = Writer::new(
        Arc::clone(&shared),
        recovered.dedup,
        head,
        len,
        options.fsync.clone(),
        flusher,
        lock,
        options.max_batch,
    );
    Ok((shared, commands, receiver, writer))
}

/// How long opening waits for a lock whose holder is going away.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the exclusive `flock` on `<dir>/events.lock`, held until the returned file is closed.
///
/// A lock held a moment longer than its log is waited for, up to [`LOCK_WAIT`]: a process that
/// is exiting, or a child forked by this process that has not yet exec'd (it shares the lock's
/// open file description until its close-on-exec descriptors go, and a sandbox's pre-exec
/// work takes milliseconds), would otherwise fail a restart that comes right after a close.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut attempt = lock.try_lock();
    while matches!(attempt, Err(TryLockError::WouldBlock)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        attempt = lock.try_lock();
    }
    match attempt {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "the event log in {} is already open (its lock file is held by another process or \
             handle)",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(StoreError::Io(e)),
    }
}

/// The append contract every request must meet, whatever the store holds.
pub(super) fn check_shape(
    aggregate_type: AggregateType,
    aggregate_id: &str,
    expected_version: u64,
    events: &[EventEnvelope],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidAppend(
            "an append needs at least one event".into(),
        ));
    }
    for (i, event) in events.iter().enumerate() {
        if event.aggregate_type != aggregate_type || event.aggregate_id != aggregate_id {
            return Err(StoreError::InvalidAppend(format!(
                "event {} belongs to {} {}, not to {aggregate_type} {aggregate_id}",
                event.event_id, event.aggregate_type, event.aggregate_id
            )));
        }
        let version = expected_version
            .checked_add(i as u64 + 1)
            .ok_or_else(|| StoreError::InvalidAppend("aggregate version overflows".into()))?;
        if event.aggregate_version != version {
            return Err(StoreError::InvalidAppend(format!(
                "event {} has version {}, but the versions must run from {} without gaps",
                event.event_id,
                event.aggregate_version,
                expected_version + 1
            )));
        }
    }
    if events.len() > 1 {
        let mut ids = HashSet::with_capacity(events.len());
        if let Some(event) = events.iter().find(|e| !ids.insert(e.event_id)) {
            return Err(StoreError::InvalidAppend(format!(
                "event id {} appears twice in one append",
                event.event_id
            )));
        }
    }
    Ok(())
}

/// Room for an envelope's fields around its payload (ids, names, timestamps, actor).
const ENVELOPE_HEADROOM: usize = 512;

/// Encodes each envelope, checking it fits in a record.
fn encode(events: &[EventEnvelope]) -> Result<Vec<Vec<u8>>, StoreError> {
    events
        .iter()
        .map(|event| {
            // Sized for the payload plus the envelope's fields, so the buffer is not regrown
            // (and copied) several times while the event is written into it.
            let mut json = Vec::with_capacity(event.payload.get().len() + ENVELOPE_HEADROOM);
            encode_envelope(&mut json, event).map_err(|e| {
                StoreError::InvalidAppend(format!(
                    "event {} cannot be encoded: {e}",
                    event.event_id
                ))
            })?;
            if json.len() + record::MAX_ENCODING_OVERHEAD > record::MAX_PAYLOAD_LEN {
                return Err(StoreError::InvalidAppend(format!(
                    "event {} is {} bytes encoded, over the {} byte limit (store large output \
                     as an artifact)",
                    event.event_id,
                    json.len(),
                    record::MAX_PAYLOAD_LEN - record::MAX_ENCODING_OVERHEAD
                )));
            }
            Ok(json)
        })
        .collect()
}

/// Writes the JSON of `envelope`, byte for byte what `serde_json::to_writer` writes (a test
/// compares the two over varied envelopes), without serde's per-field work: the field names are
/// constants, the id and the timestamp are formatted in place, strings are escaped by
/// [`workspace_events::json`], and the payload is copied as it is.
fn encode_envelope(buf: &mut Vec<u8>, envelope: &EventEnvelope) -> Result<(), serde_json::Error> {
    use workspace_events::json;
    let mut id = [0u8; ulid::ULID_LEN];
    buf.extend_from_slice(b"{\"event_id\":\"");
    buf.extend_from_slice(envelope.event_id.array_to_str(&mut id).as_bytes());
    buf.extend_from_slice(b"\",\"aggregate_type\":\"");
    buf.extend_from_slice(envelope.aggregate_type.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"aggregate_id\":");
    json::string(buf, &envelope.aggregate_id);
    buf.extend_from_slice(b",\"aggregate_version\":");
    json::u64(buf, envelope.aggregate_version);
    buf.extend_from_slice(b",\"event_type\":");
    json::string(buf, &envelope.event_type);
    buf.extend_from_slice(b",\"schema_version\":");
    json::u64(buf, u64::from(envelope.schema_version));
    buf.extend_from_slice(b",\"occurred_at\":");
    json::timestamp(buf, &envelope.occurred_at)?;
    if let Some(correlation_id) = &envelope.correlation_id {
        buf.extend_from_slice(b",\"correlation_id\":");
        json::string(buf, correlation_id);
    }
    if let Some(causation_id) = &envelope.causation_id {
        buf.extend_from_slice(b",\"causation_id\":");
        json::string(buf, causation_id);
    }
    if let Some(actor) = &envelope.actor {
        buf.extend_from_slice(b",\"actor\":{\"tenant_id\":");
        json::string(buf, &actor.tenant_id);
        buf.extend_from_slice(b",\"actor_id\":");
        json::string(buf, &actor.actor_id);
        buf.push(b'}');
    }
    buf.extend_from_slice(b",\"payload\":");
    buf.extend_from_slice(envelope.payload.get().as_bytes());
    buf.push(b'}');
    Ok(())
}

/// Reads and decodes runs of published records; any mismatch is corruption, never a guess.
fn read_spans(file: &File, spans: &[Span]) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
    let mut events = Vec::with_capacity(spans.iter().map(|s| s.count).sum());
    let mut buf = Vec::new();
    for span in spans {
        let len = usize::try_from(span.end - span.start)
            .map_err(|_| StoreError::Corrupt("record run does not fit in memory".into()))?;
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, span.start)?;
        let mut at = 0;
        for i in 0..span.count {
            let expected = span.first_sequence + i as u64;
            let offset = span.start + at as u64;
            let (event, frame_len) = record::decode_prefix(&buf[at..]).map_err(|e| {
                StoreError::Corrupt(format!("record {expected} at offset {offset}: {e}"))
            })?;
            if event.sequence != expected {
                return Err(StoreError::Corrupt(format!(
                    "record at offset {offset} holds sequence {}, expected {expected}",
                    event.sequence
                )));
            }
            at += frame_len;
            events.push(Arc::new(event));
        }
        if at != buf.len() {
            return Err(StoreError::Corrupt(format!(
                "records {}..{} do not end at offset {}",
                span.first_sequence,
                span.first_sequence + span.count as u64,
                span.end
            )));
        }
    }
    Ok(events)
}
