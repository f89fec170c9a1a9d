//! The event store: one trait, two implementations (the embedded append-only log file here; the
//! JetStream stream in distributed mode).
//!
//! Guarantees every implementation keeps:
//! - one total order: every event gets a global `sequence`, starting at 1, without gaps;
//! - per-aggregate optimistic concurrency: an append names the aggregate version it expects to
//!   follow; if another append got there first it fails with [`StoreError::Conflict`] and
//!   nothing is written (never a fork);
//! - all-or-nothing appends: the events of one append are stored together or not at all;
//! - deduplication by event id: re-appending events whose ids are already stored (a retry after
//!   a lost reply) returns the original positions with `duplicate: true` and writes nothing.
//!   Both stores remember ids for a duplicate window only (two minutes by default); a later
//!   retry fails the version check and is then settled by reading the aggregate, with the same
//!   answer.

pub mod aggregate_store;
pub mod file_log;
pub mod jetstream;

pub use aggregate_store::{
    AggregateStore, AppendObserver, CommandMetadata, CommitReceipt, Known, decode_event,
};
pub use file_log::{FileEventLog, FsyncPolicy};

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use workspace_events::{AggregateType, EventEnvelope, RecordedEvent};

/// Why an event store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another append reached the aggregate first.
    #[error("aggregate {aggregate_id} is at version {actual}, expected {expected}")]
    Conflict {
        /// The aggregate.
        aggregate_id: String,
        /// Version the caller expected.
        expected: u64,
        /// Version found.
        actual: u64,
    },
    /// The append itself is malformed (empty, versions not contiguous, mixed aggregates).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The store cannot be reached or has been closed; retryable.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("event store data is corrupt: {0}")]
    Corrupt(String),
    /// An I/O error.
    #[error("event store I/O failed")]
    Io(#[from] std::io::Error),
}

/// One batch of [`EventLog::read_ahead`]: events in order, or why reading stopped.
pub type ReadBatch = Result<Vec<Arc<RecordedEvent>>, StoreError>;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Global sequence of the first event.
    pub first_sequence: u64,
    /// Global sequence of the last event.
    pub last_sequence: u64,
    /// True when every event was already stored (a retried append); nothing was written.
    pub duplicate: bool,
}

/// An append-only, totally ordered event store with per-aggregate optimistic concurrency.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends `events` to one aggregate. `expected_version` is the aggregate version the caller
    /// loaded (0 for a new aggregate); the events must carry versions `expected_version + 1 ..`
    /// in order, and all name the same aggregate.
    async fn append(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<EventEnvelope>,
    ) -> Result<Appended, StoreError>;

    /// Every event of one aggregate, in version order (empty for an unknown aggregate).
    async fn load(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError>;

    /// Up to `limit` events with `sequence > after`, in order.
    async fn read_from(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError>;

    /// Reads ahead for a long read (a replay, a rebuild): sends every event with
    /// `sequence > after`, in order and without a gap, to `into`, in batches of at most
    /// `batch`, up to at least the last event stored when called; a failed read is sent as the
    /// last item. Ends when it has reached that point (a batch shorter than `batch` may be the
    /// last, or none when there is nothing to read) or when `into` is closed. The receiver
    /// applies what it receives while the next batches are read.
    ///
    /// By default [`EventLog::read_from`] in a loop; the JetStream store streams the events
    /// from an ordered consumer instead of one direct get per batch.
    async fn read_ahead(&self, mut after: u64, batch: usize, into: mpsc::Sender<ReadBatch>) {
        let batch = batch.max(1);
        loop {
            let read = self.read_from(after, batch).await;
            let next = match &read {
                Ok(events) if events.len() == batch => events.last().map(|e| e.sequence),
                _ => None,
            };
            let nothing = read.as_ref().is_ok_and(Vec::is_empty);
            if nothing || into.send(read).await.is_err() {
                return;
            }
            match next {
                Some(last) => after = last,
                None => return,
            }
        }
    }

    /// The sequence of the last stored event (0 when empty); changes after every append,
    /// this process's and every other writer's. A store shared across processes may start
    /// following the other writers only on the first call (the JetStream store does), so a
    /// process that only needs a number calls [`EventLog::known_head`] instead.
    fn head(&self) -> watch::Receiver<u64>;

    /// The last stored sequence this process knows of, without starting to follow other
    /// writers: its own appends, what it read, and the last [`EventLog::ping`]. For a store
    /// only this process writes (the file log), the same as [`EventLog::head`].
    fn known_head(&self) -> u64 {
        *self.head().borrow()
    }

    /// Checks the store is usable (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// A position the caller read from a delivery of the log: the aggregate's event at
    /// `version` is at `sequence` (in the session `session_id`, for an invocation), so the next
    /// append after `version` needs no look-up of it (the work queue delivers the `queued`
    /// event an executor then claims). Only a hint: a position already known is kept, and a
    /// wrong one costs a refused append and a reload, never a wrong decision. Nothing to do
    /// for a store that needs no positions (the file log).
    fn remember_position(
        &self,
        _aggregate_type: AggregateType,
        _aggregate_id: &str,
        _version: u64,
        _sequence: u64,
        _session_id: &str,
    ) {
    }
}
