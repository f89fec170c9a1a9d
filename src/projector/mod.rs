//! The projector: tails the event log and folds every event into the read-model store
//! ([`ReadModelStore`]) that serves every GET. It tracks the checkpoint the store reached, so
//! callers can wait until their own write is visible (read-your-writes), and wakes callers in
//! this process waiting for an invocation to finish or a session to change.
//!
//! It never decides anything and never writes events; every read goes through the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldhash::HashMap;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use workspace_events::RecordedEvent;
use workspace_projections::{Applied, InvocationView, SessionView};

use crate::eventstore::{EventLog, StoreError};
use crate::readmodel::{ReadModelError, ReadModelStore};
use crate::telemetry::Metrics;

mod typed;

pub use typed::TypedEvents;

/// Events read and applied at once: the most one JetStream direct get returns.
const BATCH: usize = 1000;
/// Batches read ahead of the one being applied during a catch-up over a backlog.
const READ_AHEAD: usize = 4;

/// Where [`Projector::catch_up_ahead`] stopped.
enum Ahead {
    /// It applied everything the read-ahead read, up to this sequence.
    Reached(u64),
    /// The store was behind (a gap): read again from its checkpoint.
    StoreAt(u64),
}

/// A task aborted when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often [`Projector::wait_terminal`] looks at the store when no completion was announced
/// in this process (the projector may run in another one): the first look, and the longest
/// pause between looks.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(50);

/// How often the running projector compares the store's checkpoint with its own, so a store
/// that lost what it held (a Valkey restarted empty, or flushed) is filled again without
/// waiting for the next append.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// The pause after a failed catch-up (the store or the log cannot be reached), doubling up to
/// the longest.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Why the projector could not catch up.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] StoreError),
    /// The read-model store refused or failed the batch.
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
}

/// Tails the log into a read-model store.
pub struct Projector {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ReadModelStore>,
    /// Events this process appended, in typed form (see [`TypedEvents`]).
    typed: Arc<TypedEvents>,
    /// The store's checkpoint as this projector last saw it (only ever moves forward).
    checkpoint: watch::Sender<u64>,
    /// Callers waiting for an invocation to finish, woken with its terminal view when the
    /// writer made it known.
    waiters: Arc<Waiters<Option<Arc<InvocationView>>>>,
    /// Callers waiting for a session's view to change.
    session_waiters: Arc<Waiters<()>>,
    metrics: Arc<Metrics>,
    /// Set once the running projector tails the log: from then on its lag is observed.
    live: std::sync::atomic::AtomicBool,
}

/// Callers in this process waiting for a view to change, by id: woken once, with what changed
/// when it is known (otherwise they look at the store).
type Waiters<T> = Mutex<HashMap<String, Vec<oneshot::Sender<T>>>>;

impl Projector {
    /// A projector over `log` feeding `store`, starting from the store's checkpoint.
    pub async fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ReadModelStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ReadModelError> {
        let (checkpoint, _) = watch::channel(store.checkpoint().await?);
        let waiters: Arc<Waiters<Option<Arc<InvocationView>>>> = Arc::default();
        let session_waiters: Arc<Waiters<()>> = Arc::default();
        // Views changed by a projector in another process wake this one's waiters at once.
        if let Some(mut announced) = store.announcements() {
            let (invocations, sessions) = (waiters.clone(), session_waiters.clone());
            tokio::spawn(async move {
                use crate::readmodel::Announcement;
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match announced.recv().await {
                        // Decoded only when someone here waits for it.
                        Ok(Announcement::Invocation { id, view }) => {
                            wake(&invocations, &id, || {
                                view.and_then(|json| serde_json::from_str(&json).ok())
                                    .map(Arc::new)
                            })
                        }
                        Ok(Announcement::Session(id)) => wake(&sessions, &id, || ()),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    }
                }
            });
        }
        Ok(Self {
            log,
            store,
            typed: Arc::default(),
            checkpoint,
            waiters,
            session_waiters,
            metrics,
            live: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The read-model store every read goes through.
    pub fn store(&self) -> &Arc<dyn ReadModelStore> {
        &self.store
    }

    /// Where this process's writers offer the events they append, so they are applied without
    /// being decoded again (`AggregateStore::with_typed`).
    pub fn typed(&self) -> &Arc<TypedEvents> {
        &self.typed
    }

    /// Applies everything the log holds now; returns the new checkpoint.
    pub async fn catch_up(&self) -> Result<u64, ProjectorError> {
        self.catch_up_observed(|_| {}).await
    }

    /// [`Projector::catch_up`], showing `observe` what each event did to the views.
    pub async fn catch_up_observed(
        &self,
        observe: impl FnMut(&Applied) + Send,
    ) -> Result<u64, ProjectorError> {
        let from = *self.checkpoint.borrow();
        self.catch_up_from(from, observe).await
    }

    /// [`Projector::catch_up`], after first asking the store where it is: a store behind this
    /// projector lost views it held (restarted empty, or flushed), and is given the log again
    /// from its own checkpoint. Returns the new checkpoint.
    pub async fn resync(&self) -> Result<u64, ProjectorError> {
        let stored = self.store.checkpoint().await?;
        let projected = self.checkpoint();
        if stored < projected {
            tracing::warn!(
                checkpoint = stored,
                projected,
                "read-model store is behind the projector (restarted empty or flushed?); \
                 folding the log into it again"
            );
            return self.catch_up_from(stored, |_| {}).await;
        }
        self.catch_up().await
    }

    async fn catch_up_from(
        &self,
        mut from: u64,
        mut observe: impl FnMut(&Applied) + Send,
    ) -> Result<u64, ProjectorError> {
        let mut events = self.log.read_from(from, BATCH).await?;
        loop {
            if events.is_empty() {
                return Ok(from);
            }
            // A full batch means a backlog (a rebuild, a replay, a restart): the rest is read
            // ahead, on a task of its own, while this batch and the next are applied.
            if events.len() == BATCH {
                match self.catch_up_ahead(from, events, &mut observe).await? {
                    Ahead::Reached(last) => from = last,
                    Ahead::StoreAt(checkpoint) => from = checkpoint,
                }
                events = self.log.read_from(from, BATCH).await?;
                continue;
            }
            match self.apply(from, &events).await {
                Ok(applied) => {
                    applied.iter().for_each(&mut observe);
                    from = events.last().map_or(from, |e| e.sequence);
                }
                // The store is behind what this projector saw (a shared store was reset, or a
                // rebuild switched in): read again from where it is.
                Err(ReadModelError::Gap { checkpoint, .. }) => {
                    tracing::warn!(
                        after = from,
                        checkpoint,
                        "read-model store is behind the projector; reading the log again"
                    );
                    from = checkpoint;
                }
                Err(e) => return Err(e.into()),
            }
            events = self.log.read_from(from, BATCH).await?;
        }
    }

    /// Applies `first` (read after `from`), then every batch [`EventLog::read_ahead`] reads
    /// after it, each batch checked to follow the one before without a gap or an overlap.
    /// Stops where the read-ahead ended, or where the store turned out to be (a gap).
    async fn catch_up_ahead(
        &self,
        mut from: u64,
        first: Vec<Arc<RecordedEvent>>,
        observe: &mut (impl FnMut(&Applied) + Send),
    ) -> Result<Ahead, ProjectorError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let after = first.last().map_or(from, |e| e.sequence);
        let log = Arc::clone(&self.log);
        // Aborted when this returns (an error, a gap): nothing reads on for nobody.
        let reader = AbortOnDrop(tokio::spawn(async move {
            log.read_ahead(after, BATCH, tx).await;
        }));
        let mut events = first;
        loop {
            match events.first() {
                Some(e) if e.sequence == from + 1 => {}
                Some(e) => {
                    return Err(StoreError::Corrupt(format!(
                        "the log answered a read after sequence {from} from sequence {}",
                        e.sequence
                    ))
                    .into());
                }
                None => return Ok(Ahead::Reached(from)),
            }
            match self.apply(from, &events).await {
                Ok(applied) => {
                    applied.iter().for_each(&mut *observe);
                    from = events.last().map_or(from, |e| e.sequence);
                }
                Err(ReadModelError::Gap { checkpoint, .. }) => {
                    tracing::warn!(
                        after = from,
                        checkpoint,
                        "read-model store is behind the projector; reading the log again"
                    );
                    return Ok(Ahead::StoreAt(checkpoint));
                }
                Err(e) => return Err(e.into()),
            }
            events = match rx.recv().await {
                Some(read) => read?,
                None => {
                    drop(reader);
                    return Ok(Ahead::Reached(from));
                }
            };
        }
    }

    async fn apply(
        &self,
        after: u64,
        events: &[Arc<RecordedEvent>],
    ) -> Result<Vec<Applied>, ReadModelError> {
        // Taken before the fold, so writers offering new events wait only for these lookups,
        // not for the whole pass under the store's lock.
        let typed = self
            .typed
            .take_all(events.iter().map(|e| &e.envelope.event_id));
        let writing = std::time::Instant::now();
        let (applied, finished_views) = self.store.apply_finished(after, events, typed).await?;
        if self.live.load(std::sync::atomic::Ordering::Relaxed) {
            self.metrics
                .observe_projection_batch(events.len(), writing.elapsed().as_secs_f64() * 1000.0);
            // The running projector's lag (not the start-up rebuild's, whose events are old).
            let now = time::OffsetDateTime::now_utc();
            self.metrics.observe_projection_lag(
                events
                    .iter()
                    .map(|e| (now - e.envelope.occurred_at).as_seconds_f64() * 1000.0),
            );
        }
        let mut finished = Vec::new();
        let mut sessions = Vec::new();
        for (event, outcome) in events.iter().zip(&applied) {
            match outcome {
                Applied::Invocation { id, status } => {
                    if status.is_terminal() {
                        finished.push(id.as_str());
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
                Applied::Session { id } => sessions.push(id.as_str()),
                Applied::Skipped => {}
            }
        }
        if let Some(last) = events.last() {
            // Several callers may catch up at once: the checkpoint only ever moves forward.
            self.checkpoint.send_if_modified(|c| {
                let newer = last.sequence > *c;
                if newer {
                    *c = last.sequence;
                }
                newer
            });
        }
        // Waiters in other processes reading the same store were told by the store, in the
        // write itself (`ReadModelStore::announcements`).
        for id in sessions {
            wake(&self.session_waiters, id, || ());
        }
        for view in &finished_views {
            self.metrics.observe_invocation(view);
        }
        for id in finished {
            wake(&self.waiters, id, || {
                finished_views.iter().find(|v| v.id == id).cloned()
            });
        }
        Ok(applied)
    }

    /// Runs until `shutdown`, applying events as they are appended. It never gives up: a log
    /// or store that cannot be reached is tried again (at growing intervals, up to
    /// [`RETRY_MAX`]), and a store that comes back, or any store once a second, is first asked
    /// whether it lost views ([`Projector::resync`]).
    pub async fn run_until_stopped(self: Arc<Self>, shutdown: CancellationToken) {
        self.live.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut head = self.log.head();
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check_store = false;
        let mut pause = RETRY_FIRST;
        loop {
            let caught_up = if check_store {
                self.resync().await
            } else {
                self.catch_up().await
            };
            match caught_up {
                Ok(_) => {
                    check_store = false;
                    pause = RETRY_FIRST;
                }
                Err(err) => {
                    tracing::error!(error = %err, retry_in = ?pause, "projector could not catch up; retrying");
                    // A store that comes back may come back empty.
                    check_store = true;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                    continue;
                }
            }
            let target = *head.borrow_and_update();
            if target > *self.checkpoint.borrow() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = head.changed() => if changed.is_err() { return },
                _ = resync.tick() => check_store = true,
            }
        }
    }

    /// Waits until the read model has applied `sequence` (read-your-writes). Returns false on
    /// timeout, or when the store cannot say.
    pub async fn wait_for(&self, sequence: u64, timeout: Duration) -> bool {
        if *self.checkpoint.borrow() >= sequence {
            return true;
        }
        // The store knows, whichever process projects into it.
        match self.store.wait_for(sequence, timeout).await {
            Ok(reached) => reached,
            Err(e) => {
                tracing::warn!(error = %e, sequence, "could not wait for the read model");
                false
            }
        }
    }

    /// Waits until the invocation is terminal; returns its view, or the current view (or
    /// `None`) when `timeout` passes first.
    ///
    /// A completion this process projects wakes the caller at once; one projected elsewhere
    /// is found by looking at the store, at growing intervals.
    pub async fn wait_terminal(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<Arc<InvocationView>>, ReadModelError> {
        // Registered before looking, so a completion applied in between is never missed.
        let watch = self.watch_terminal(id);
        self.wait_watched(watch, timeout, true).await
    }

    /// Registers a wait for the invocation `id` to finish, to call before appending its first
    /// event: nothing applied after this is missed, so [`Projector::wait_watched`] need not
    /// look at the store before its first pause (one read less per invocation).
    pub fn watch_terminal(&self, id: &str) -> TerminalWatch {
        TerminalWatch {
            rx: register(&self.waiters, id),
            waiters: self.waiters.clone(),
            id: id.to_owned(),
        }
    }

    /// [`Projector::wait_terminal`] on a wait registered before the invocation's first event
    /// was appended ([`Projector::watch_terminal`]): the store is looked at only when no
    /// announcement came within the first pause (announcements are best effort).
    pub async fn wait_registered(
        &self,
        watch: TerminalWatch,
        timeout: Duration,
    ) -> Result<Option<Arc<InvocationView>>, ReadModelError> {
        self.wait_watched(watch, timeout, false).await
    }

    async fn wait_watched(
        &self,
        mut watch: TerminalWatch,
        timeout: Duration,
        look_first: bool,
    ) -> Result<Option<Arc<InvocationView>>, ReadModelError> {
        let id = watch.id.clone();
        let id = id.as_str();
        let rx = &mut watch.rx;
        let result = async {
            // One clock read, as a plain timeout would: the looks are scheduled from it.
            let start = tokio::time::Instant::now();
            let deadline = start + timeout;
            let mut pause = POLL_FIRST;
            let mut look_at = start;
            let mut look = look_first;
            loop {
                if look {
                    let current = self.store.invocation(id).await?;
                    if current.as_ref().is_some_and(|v| v.is_terminal()) || look_at >= deadline {
                        return Ok(current);
                    }
                }
                look = true;
                look_at = (look_at + pause).min(deadline);
                pause = (pause * 2).min(POLL_MAX);
                // Announced with its view, or without (or the projector went away): the view is
                // in the store.
                if let Ok(woken) = tokio::time::timeout_at(look_at, &mut *rx).await {
                    return match woken {
                        Ok(Some(view)) if view.is_terminal() => Ok(Some(view)),
                        _ => self.store.invocation(id).await,
                    };
                }
            }
        }
        .await;
        // Dropping the watch forgets it.
        drop(watch);
        result
    }

    /// Waits until the session's view is no longer `provisioning` (`ready`, `failed`, or
    /// closed meanwhile); returns it, or the current view (or `None`) when `timeout` passes
    /// first.
    ///
    /// A change this process projects wakes the caller at once (it looks again, and waits on
    /// if the session is still provisioning); one projected elsewhere is found by looking at
    /// the store, at growing intervals, as [`Projector::wait_terminal`] does.
    pub async fn wait_provisioned(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<Arc<SessionView>>, ReadModelError> {
        let settled = |v: &SessionView| v.status != workspace_events::SessionStatus::Provisioning;
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let mut pause = POLL_FIRST;
        let mut look_at = start;
        loop {
            // Registered before looking, so a change applied in between is never missed.
            let mut rx = register(&self.session_waiters, id);
            let current = self.store.session(id).await;
            let settled_or_due = match &current {
                Ok(current) => current.as_deref().is_some_and(settled) || look_at >= deadline,
                Err(_) => true,
            };
            if settled_or_due {
                drop(rx);
                forget(&self.session_waiters, id);
                return current;
            }
            look_at = (look_at + pause).min(deadline);
            pause = (pause * 2).min(POLL_MAX);
            // Woken by a change (or the projector went away): look again at once.
            if tokio::time::timeout_at(look_at, &mut rx).await.is_ok() {
                look_at = tokio::time::Instant::now().min(deadline);
            }
            drop(rx);
            forget(&self.session_waiters, id);
        }
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> u64 {
        *self.checkpoint.borrow()
    }
}

/// A wait for one invocation to finish, registered ([`Projector::watch_terminal`]); forgotten
/// when dropped, waited on or not.
pub struct TerminalWatch {
    rx: oneshot::Receiver<Option<Arc<InvocationView>>>,
    waiters: Arc<Waiters<Option<Arc<InvocationView>>>>,
    id: String,
}

impl std::fmt::Debug for TerminalWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalWatch")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for TerminalWatch {
    fn drop(&mut self) {
        self.rx.close();
        forget(&self.waiters, &self.id);
    }
}

fn register<T>(waiters: &Waiters<T>, id: &str) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    let mut waiters = waiters.lock().unwrap_or_else(|p| p.into_inner());
    waiters.entry(id.to_owned()).or_default().push(tx);
    rx
}

/// Wakes the callers waiting for `id` with `value()`, made only when there are some.
fn wake<T: Clone>(waiters: &Waiters<T>, id: &str, value: impl FnOnce() -> T) {
    let woken = {
        let mut waiters = waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.is_empty() {
            return;
        }
        waiters.remove(id)
    };
    if let Some(woken) = woken {
        let value = value();
        for tx in woken {
            let _ = tx.send(value.clone());
        }
    }
}

fn forget<T>(waiters: &Waiters<T>, id: &str) {
    let mut waiters = waiters.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(list) = waiters.get_mut(id) {
        list.retain(|tx| !tx.is_closed());
        if list.is_empty() {
            waiters.remove(id);
        }
    }
}
