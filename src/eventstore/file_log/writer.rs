//! The single writer: the only code that writes `events.log` or changes the index.
//!
//! Its state lives behind one lock. Under [`FsyncPolicy::Always`] it is driven by its own OS
//! thread rather than a tokio task, because every batch ends in `fdatasync`, which on a runtime
//! worker would stall unrelated tasks for the length of a disk flush; appenders reach that
//! thread through a bounded tokio channel and wait on a oneshot reply. Under `Interval` and
//! `Never` a batch is one `pwrite` into the page cache, so appenders take the lock and commit on
//! their own thread (`FileEventLog::append`); the thread then only serves pings and close.
//!
//! Group commit: the writer takes everything queued (up to a batch limit), decides each request
//! in order against the published state plus the batch's earlier requests, writes the accepted
//! records with one `pwrite`, syncs per policy, and only then publishes (index, tail cache, head)
//! and replies. A rejected request does not affect the others; a failed write fails the whole
//! batch and is cut off the file, so no half batch remains.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use foldhash::HashMap;
use tokio::sync::{mpsc, oneshot};
use ulid::Ulid;
use workspace_events::{AggregateType, RecordedEvent};

use super::dedup::DedupWindow;
use super::index::Index;
use super::{FsyncPolicy, Shared, record};
use crate::eventstore::{Appended, StoreError};

/// A message to the writer.
pub(super) enum Command {
    Append(AppendRequest),
    /// Answered once the writer has handled everything queued before it.
    Ping(oneshot::Sender<()>),
    /// Write what was queued before, sync, release the lock and stop.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// An append whose shape `append` has already checked (non-empty, one aggregate, versions
/// `expected_version + 1 ..`, distinct ids) and whose envelopes it has encoded.
pub(super) struct AppendRequest {
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    pub expected_version: u64,
    /// The events with `sequence` still 0, allocated by the appender; the request holds the only
    /// reference, so the writer fills in the sequence in place.
    pub events: Vec<Arc<RecordedEvent>>,
    /// `serde_json` encoding of each envelope, in the same order.
    pub encoded: Vec<Vec<u8>>,
    pub reply: oneshot::Sender<Answer>,
}

/// The writer's answer to an append.
pub(super) struct Answer {
    pub result: Result<Appended, StoreError>,
    /// Memory for the appender to free: freeing is a large share of the per-event work, and
    /// the writer is the one thread every append goes through.
    pub returned: Returned,
}

/// What the writer hands back to be freed: the request's encoding, its events if they were not
/// stored, and the events its own events pushed out of the tail cache.
#[derive(Default)]
pub(super) struct Returned {
    // Never read: carried only so that it is dropped by the appender.
    #[allow(dead_code)]
    pub encoded: Vec<Vec<u8>>,
    pub events: Vec<Arc<RecordedEvent>>,
}

/// One request of the batch being committed.
struct Slot {
    reply: oneshot::Sender<Answer>,
    outcome: Outcome,
    returned: Returned,
}

/// The answer to one request, decided before the batch is written.
enum Outcome {
    /// Independent of the write (a rejection, or a duplicate of published events).
    Decided(Result<Appended, StoreError>),
    /// Holds only if the batch is written (accepted, or a duplicate of an earlier request in
    /// the same batch).
    IfWritten(Appended),
}

/// An aggregate changed by an earlier request of the batch being decided.
struct Pending {
    version: u64,
    sequences: Vec<u64>,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    /// Set by `shutdown`: later appends are refused as closed.
    closed: bool,
    /// Event id → sequence of the events stored within the deduplication window. Only the
    /// writer needs it, so it lives here, outside the shared index's lock.
    dedup: DedupWindow,
    /// Published head and file length (mirrors of the index's, without taking its lock).
    head: u64,
    len: u64,
    fsync: FsyncPolicy,
    flusher: Option<Flusher>,
    /// The directory lock, held for as long as the writer runs.
    lock: Option<File>,
    max_batch: usize,
    buf: Vec<u8>,
    /// Batches and append requests committed, for the shutdown log line.
    batches: u64,
    requests: u64,
}

/// A reused batch buffer larger than this is released after the batch.
const KEEP_BUFFER: usize = 4 << 20;

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Shared>,
        dedup: DedupWindow,
        head: u64,
        len: u64,
        fsync: FsyncPolicy,
        flusher: Option<Flusher>,
        lock: File,
        max_batch: usize,
    ) -> Self {
        Self {
            shared,
            closed: false,
            dedup,
            head,
            len,
            fsync,
            flusher,
            lock: Some(lock),
            max_batch: max_batch.max(1),
            buf: Vec::with_capacity(64 << 10),
            batches: 0,
            requests: 0,
        }
    }

    /// Serves commands until `Close` arrives or every handle is dropped. Appends that callers
    /// commit themselves (see `FileEventLog::append`) take the same lock, so the two paths
    /// are serialised and share one decision state.
    pub fn run(writer: Arc<Mutex<Writer>>, mut commands: mpsc::Receiver<Command>) {
        let lock = || writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Vec::with_capacity(lock().max_batch);
        loop {
            let max_batch = lock().max_batch;
            if commands.blocking_recv_many(&mut batch, max_batch) == 0 {
                // Every `FileEventLog` handle is gone (drop without `close`).
                if let Err(e) = lock().shutdown() {
                    tracing::error!(error = %e, "event log: final sync on drop failed");
                }
                return;
            }
            let mut appends = Vec::with_capacity(batch.len());
            let mut pings = Vec::new();
            let mut closes = Vec::new();
            for command in batch.drain(..) {
                match command {
                    // Sent after `close`: the log is closing.
                    Command::Append(request) if !closes.is_empty() => request.answer(Err(closed())),
                    Command::Append(request) => appends.push(request),
                    Command::Ping(reply) => pings.push(reply),
                    Command::Close(reply) => closes.push(reply),
                }
            }
            let mut guard = lock();
            if !appends.is_empty() {
                guard.commit(appends);
            }
            for reply in pings {
                let _ = reply.send(());
            }
            if !closes.is_empty() {
                // Anything still queued is dropped with the receiver; its callers see `closed`.
                commands.close();
                let result = guard.shutdown().map_err(|e| e.to_string());
                for reply in closes {
                    let _ = reply.send(result.clone().map_err(StoreError::Unavailable));
                }
                return;
            }
        }
    }

    /// Stops the flusher, syncs (except under `Never`) and releases the directory lock.
    fn shutdown(&mut self) -> Result<(), StoreError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        tracing::debug!(
            batches = self.batches,
            requests = self.requests,
            event_ids = self.dedup.len(),
            "event log writer stopping"
        );
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        let result = if self.fsync == FsyncPolicy::Never {
            Ok(())
        } else {
            self.shared.file.sync_data().map_err(StoreError::Io)
        };
        // Closing the descriptor releases the flock; the next open may now proceed.
        self.lock = None;
        result
    }

    pub fn commit(&mut self, requests: Vec<AppendRequest>) {
        if self.closed {
            for request in requests {
                request.answer(Err(closed()));
            }
            return;
        }
        self.batches += 1;
        self.requests += requests.len() as u64;
        if let Some(reason) = self.shared.failure.get() {
            for request in requests {
                request.answer(Err(StoreError::Unavailable(reason.clone())));
            }
            return;
        }
        // One clock read and a look at the oldest id per batch.
        self.dedup.expire();
        let shared = Arc::clone(&self.shared);
        let start_len = self.len;
        let first_new = self.head + 1;
        let mut next = first_new;
        self.buf.clear();
        let mut slots: Vec<Slot> = Vec::with_capacity(requests.len());
        // (slot, record length, event) of every accepted event, in sequence order.
        let mut staged: Vec<(usize, u64, Arc<RecordedEvent>)> = Vec::new();
        let mut new_ids: Vec<Ulid> = Vec::new();
        let mut pending: HashMap<AggregateType, HashMap<String, Pending>> = HashMap::default();
        {
            // Only this thread takes the write lock, so the lock cannot be poisoned while it runs.
            let index = shared.index.read().unwrap_or_else(PoisonError::into_inner);
            for request in requests {
                let decision = decide(&index, &self.dedup, &pending, first_new, &request);
                let AppendRequest {
                    aggregate_type,
                    aggregate_id,
                    expected_version,
                    events,
                    encoded,
                    reply,
                } = request;
                let outcome = match decision {
                    Decision::Reject(error) => Outcome::Decided(Err(error)),
                    Decision::Duplicate(appended) if appended.last_sequence < first_new => {
                        Outcome::Decided(Ok(appended))
                    }
                    Decision::Duplicate(appended) => Outcome::IfWritten(appended),
                    Decision::Accept => {
                        let first = next;
                        let count = events.len();
                        for (i, (mut event, json)) in events.into_iter().zip(&encoded).enumerate() {
                            let before = self.buf.len();
                            record::encode_into(&mut self.buf, next, json, i + 1 < count);
                            // The request held the only reference, so this never copies.
                            Arc::make_mut(&mut event).sequence = next;
                            self.dedup.insert(event.envelope.event_id, next);
                            new_ids.push(event.envelope.event_id);
                            staged.push((slots.len(), (self.buf.len() - before) as u64, event));
                            next += 1;
                        }
                        let entry = pending
                            .entry(aggregate_type)
                            .or_default()
                            .entry(aggregate_id)
                            .or_insert_with(|| Pending {
                                version: 0,
                                sequences: Vec::new(),
                            });
                        entry.version = expected_version + count as u64;
                        entry.sequences.extend(first..next);
                        slots.push(Slot {
                            reply,
                            outcome: Outcome::IfWritten(Appended {
                                first_sequence: first,
                                last_sequence: next - 1,
                                duplicate: false,
                            }),
                            returned: Returned {
                                encoded,
                                events: Vec::new(),
                            },
                        });
                        continue;
                    }
                };
                slots.push(Slot {
                    reply,
                    outcome,
                    returned: Returned { encoded, events },
                });
            }
        }

        if self.buf.is_empty() {
            finish(slots, Ok(()));
            return;
        }
        if let Err(e) = shared.file.write_all_at(&self.buf, start_len) {
            tracing::error!(error = %e, bytes = self.buf.len(), "event log: writing a batch failed");
            self.roll_back(start_len, &new_ids);
            finish(slots, Err(format!("writing to the event log failed: {e}")));
            return;
        }
        if self.fsync == FsyncPolicy::Always {
            if let Err(e) = shared.file.sync_data() {
                // After a failed fdatasync the kernel may have dropped the dirty pages, so later
                // syncs prove nothing: stop accepting writes until the log is reopened and
                // rescanned (PostgreSQL's answer to the same problem).
                shared.fail(format!(
                    "fdatasync of the event log failed ({e}); reopen the log"
                ));
                self.roll_back(start_len, &new_ids);
                finish(slots, Err(format!("syncing the event log failed: {e}")));
                return;
            }
        } else if let Some(flusher) = &self.flusher {
            flusher.mark_dirty();
        }

        self.len = start_len + self.buf.len() as u64;
        self.head = next - 1;
        {
            let mut index = shared.index.write().unwrap_or_else(PoisonError::into_inner);
            for (slot, len, event) in staged {
                if let Some(evicted) = index.push(len, event) {
                    slots[slot].returned.events.push(evicted);
                }
            }
        }
        shared.head.send_replace(self.head);
        finish(slots, Ok(()));
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::with_capacity(64 << 10);
        }
    }

    /// Forgets a batch that was not written: its ids, and any bytes that reached the file.
    fn roll_back(&mut self, start_len: u64, new_ids: &[Ulid]) {
        for id in new_ids {
            self.dedup.remove(id);
        }
        if let Err(e) = self.shared.file.set_len(start_len) {
            self.shared.fail(format!(
                "could not cut a failed batch off the event log ({e}); reopen the log"
            ));
        }
    }
}

enum Decision {
    Accept,
    Duplicate(Appended),
    Reject(StoreError),
}

/// Dedup first (a retry succeeds whatever the aggregate's version is now), then optimistic
/// concurrency against the published version or an earlier request of this batch.
fn decide(
    index: &Index,
    dedup: &DedupWindow,
    pending: &HashMap<AggregateType, HashMap<String, Pending>>,
    first_new: u64,
    request: &AppendRequest,
) -> Decision {
    let (aggregate_type, aggregate_id) = (request.aggregate_type, request.aggregate_id.as_str());
    let batch = pending
        .get(&aggregate_type)
        .and_then(|ids| ids.get(aggregate_id));
    let stored: Vec<u64> = request
        .events
        .iter()
        .filter_map(|e| dedup.get(&e.envelope.event_id))
        .collect();
    if !stored.is_empty() {
        if stored.len() != request.events.len() {
            return Decision::Reject(StoreError::InvalidAppend(format!(
                "{} of the {} events are already stored; a retry must resend exactly the \
                 original events",
                stored.len(),
                request.events.len()
            )));
        }
        let ours = stored.iter().all(|&s| {
            if s < first_new {
                index
                    .sequences(aggregate_type, aggregate_id)
                    .binary_search(&s)
                    .is_ok()
            } else {
                batch.is_some_and(|p| p.sequences.contains(&s))
            }
        });
        if !ours {
            return Decision::Reject(StoreError::InvalidAppend(format!(
                "the event ids are already stored for another aggregate than {aggregate_type} \
                 {aggregate_id}"
            )));
        }
        let first_sequence = stored.iter().copied().min().unwrap_or_default();
        let last_sequence = stored.iter().copied().max().unwrap_or_default();
        return Decision::Duplicate(Appended {
            first_sequence,
            last_sequence,
            duplicate: true,
        });
    }
    let actual = batch.map_or_else(
        || index.version(aggregate_type, aggregate_id),
        |p| p.version,
    );
    if actual != request.expected_version {
        return Decision::Reject(StoreError::Conflict {
            aggregate_id: aggregate_id.to_owned(),
            expected: request.expected_version,
            actual,
        });
    }
    Decision::Accept
}

/// Sends every reply: `written` is the batch's fate.
fn finish(slots: Vec<Slot>, written: Result<(), String>) {
    for slot in slots {
        let result = match (slot.outcome, &written) {
            (Outcome::Decided(result), _) => result,
            (Outcome::IfWritten(appended), Ok(())) => Ok(appended),
            (Outcome::IfWritten(_), Err(reason)) => Err(StoreError::Unavailable(reason.clone())),
        };
        // The caller may have gone away (cancelled); what was written stays written.
        let _ = slot.reply.send(Answer {
            result,
            returned: slot.returned,
        });
    }
}

impl AppendRequest {
    /// Answers without deciding (the log is closed or failed).
    fn answer(self, result: Result<Appended, StoreError>) {
        let _ = self.reply.send(Answer {
            result,
            returned: Returned {
                encoded: self.encoded,
                events: self.events,
            },
        });
    }
}

/// The error for requests that reach a closed log.
pub(super) fn closed() -> StoreError {
    StoreError::Unavailable("the event log is closed".into())
}

/// Under [`FsyncPolicy::Interval`]: fdatasyncs the log every interval if anything was written.
/// A separate thread, so the writer never waits for a periodic sync.
pub(super) struct Flusher {
    stop: std_mpsc::Sender<()>,
    dirty: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Flusher {
    pub fn spawn(shared: Arc<Shared>, interval: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = std_mpsc::channel::<()>();
        let dirty = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dirty);
        let thread = std::thread::Builder::new()
            .name("eventlog-flush".into())
            .spawn(move || {
                // A message or a disconnect (the writer dropped the flusher) both mean stop.
                while let Err(std_mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval)
                {
                    // Cleared before syncing: a write that lands during the sync marks it again.
                    if flag.swap(false, Ordering::AcqRel)
                        && let Err(e) = shared.file.sync_data()
                    {
                        shared.fail(format!(
                            "periodic fdatasync of the event log failed ({e}); reopen the log"
                        ));
                        return;
                    }
                }
            })?;
        Ok(Self {
            stop,
            dirty,
            thread,
        })
    }

    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("event log flusher thread panicked");
        }
    }
}
