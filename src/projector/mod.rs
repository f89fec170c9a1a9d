//! The projector: tails the event log and folds every event into the read models that serve
//! every GET. It records its checkpoint, so callers can wait until their own write is visible
//! (read-your-writes), and wakes callers waiting for an invocation to finish.
//!
//! It never decides anything and never writes events.

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use workspace_events::upcast::{self, Upcaster};
use workspace_projections::{Applied, InvocationView, MemoryReadModel};

use crate::eventstore::{EventLog, StoreError};
use crate::telemetry::Metrics;

mod typed;

pub use typed::TypedEvents;

const BATCH: usize = 1024;

/// Tails the log into the in-memory read model.
pub struct Projector {
    log: Arc<dyn EventLog>,
    model: Arc<MemoryReadModel>,
    upcasters: Vec<Box<dyn Upcaster>>,
    /// Events this process appended, in typed form (see [`TypedEvents`]).
    typed: Arc<TypedEvents>,
    checkpoint: watch::Sender<u64>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    /// Callers waiting for the checkpoint to reach a sequence, keyed by that sequence, so an
    /// applied batch wakes only the callers it satisfies (not every waiter on every event).
    sequence_waiters: Mutex<BTreeMap<u64, Vec<oneshot::Sender<()>>>>,
    metrics: Arc<Metrics>,
}

impl Projector {
    /// A projector over `log` feeding `model`.
    pub fn new(log: Arc<dyn EventLog>, model: Arc<MemoryReadModel>, metrics: Arc<Metrics>) -> Self {
        let (checkpoint, _) = watch::channel(model.read(|m| m.checkpoint()));
        Self {
            log,
            model,
            upcasters: upcast::registry(),
            typed: Arc::default(),
            checkpoint,
            waiters: Mutex::new(HashMap::default()),
            sequence_waiters: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// The read model.
    pub fn model(&self) -> &Arc<MemoryReadModel> {
        &self.model
    }

    /// Where this process's writers offer the events they append, so they are applied without
    /// being decoded again (`AggregateStore::with_typed`).
    pub fn typed(&self) -> &Arc<TypedEvents> {
        &self.typed
    }

    /// Applies everything the log holds now; returns the new checkpoint.
    pub async fn catch_up(&self) -> Result<u64, StoreError> {
        loop {
            let from = *self.checkpoint.borrow();
            let events = self.log.read_from(from, BATCH).await?;
            if events.is_empty() {
                return Ok(from);
            }
            self.apply(&events);
        }
    }

    fn apply(&self, events: &[Arc<workspace_events::RecordedEvent>]) {
        // Taken before the fold, so writers offering new events wait only for these lookups,
        // not for the whole pass under the model's lock.
        let mut typed = self
            .typed
            .take_all(events.iter().map(|e| &e.envelope.event_id))
            .into_iter();
        let applied = self
            .model
            .apply_all_with(&self.upcasters, events, |_| typed.next().flatten());
        let mut finished = Vec::new();
        for (event, outcome) in events.iter().zip(&applied) {
            match outcome {
                Applied::Invocation { id, status } => {
                    if matches!(status.as_str(), "succeeded" | "failed" | "denied") {
                        finished.push(id.clone());
                    }
                }
                Applied::Rejected { reason } => {
                    tracing::error!(
                        sequence = event.sequence,
                        event_type = %event.envelope.event_type,
                        aggregate_id = %event.envelope.aggregate_id,
                        reason = %reason,
                        "projection rejected an event"
                    );
                }
                Applied::Session { .. } | Applied::Skipped => {}
            }
        }
        if let Some(last) = events.last() {
            // Several callers may catch up at once (the projector task, and executors folding
            // their own writes in embedded mode): the checkpoint only ever moves forward.
            self.checkpoint.send_if_modified(|c| {
                let newer = last.sequence > *c;
                if newer {
                    *c = last.sequence;
                }
                newer
            });
            let mut waiters = self
                .sequence_waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let later = waiters.split_off(&(last.sequence + 1));
            for tx in std::mem::replace(&mut *waiters, later)
                .into_values()
                .flatten()
            {
                let _ = tx.send(());
            }
        }
        if !finished.is_empty() {
            self.model.read(|m| {
                for view in finished.iter().filter_map(|id| m.invocation(id)) {
                    self.metrics.observe_invocation(view);
                }
            });
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            for id in finished {
                for tx in waiters.remove(&id).unwrap_or_default() {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Runs until `shutdown`, applying events as they are appended.
    pub async fn run_until_stopped(self: Arc<Self>, shutdown: CancellationToken) {
        let mut head = self.log.head();
        loop {
            match self.catch_up().await {
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(error = %err, "projector could not read the log; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            }
            let target = *head.borrow_and_update();
            if target > *self.checkpoint.borrow() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = head.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Waits until the read model has applied `sequence` (read-your-writes). Returns false on
    /// timeout.
    pub async fn wait_for(&self, sequence: u64, timeout: Duration) -> bool {
        if *self.checkpoint.borrow() >= sequence {
            return true;
        }
        let (tx, rx) = oneshot::channel();
        self.sequence_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sequence)
            .or_default()
            .push(tx);
        // Registered before looking again, so an apply in between is never missed.
        if *self.checkpoint.borrow() >= sequence {
            return true;
        }
        let _ = tokio::time::timeout(timeout, rx).await;
        *self.checkpoint.borrow() >= sequence
    }

    /// Waits until the invocation is terminal; returns its view, or the current view (or
    /// `None`) when `timeout` passes first.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Option<Arc<InvocationView>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            waiters.entry(id.to_owned()).or_default().push(tx);
        }
        // Registered before looking, so a completion applied in between is never missed.
        let current = self.model.read(|m| m.shared_invocation(id));
        if current.as_ref().is_some_and(|v| v.is_terminal()) {
            drop(rx);
            self.forget(id);
            return current;
        }
        let _ = tokio::time::timeout(timeout, rx).await;
        self.forget(id);
        self.model.read(|m| m.shared_invocation(id))
    }

    fn forget(&self, id: &str) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = waiters.get_mut(id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiters.remove(id);
            }
        }
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> u64 {
        *self.checkpoint.borrow()
    }
}
