//! The in-process work queue (embedded mode): jobs are offered by the process that committed
//! their event (an invocation's `queued`, a session's `created`) and handed to a waiting [`WorkQueue::next`] at once (a wake-up, no
//! polling), with the JetStream queue's delivery semantics: an ack wait that `in_progress`
//! restarts, `nak` with a delay, numbered deliveries, and no delivery past `max_deliver`.
//!
//! It holds only what is offered: it is empty after a restart, so the process offers what the
//! log says is still open when it starts (ADR 0009). It never reads the log.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Claimant, DEFAULT_ACK_WAIT, DEFAULT_MAX_DELIVER, EarlyClaim, Job, MIN_MAX_DELIVER, Settle,
    Task, Work, WorkQueue, WorkQueueError,
};

/// Settings of a [`MemoryWorkQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    /// How long a delivery may go unsettled before it is delivered again.
    pub ack_wait: Duration,
    /// Deliveries of one job at most (at least [`MIN_MAX_DELIVER`]).
    pub max_deliver: u32,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: DEFAULT_MAX_DELIVER,
        }
    }
}

/// The in-process [`WorkQueue`] of tasks `J` ([`Job`]s by default). Clones share one queue.
pub struct MemoryWorkQueue<J: Task = Job> {
    inner: Arc<Inner<J>>,
}

impl<J: Task> Clone for MemoryWorkQueue<J> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<J: Task> {
    state: Mutex<State<J>>,
    /// Who may claim a job before its event is committed ([`WorkQueue::claim_early`]).
    claimant: RwLock<Option<Weak<dyn Claimant<J>>>>,
    /// Woken when a job becomes ready or a timer earlier than a waiter's may have been set.
    wake: Notify,
    options: MemoryOptions,
}

struct State<J> {
    next_id: u64,
    /// Jobs to deliver now, in offer order.
    ready: VecDeque<u64>,
    /// Every job not yet acked or exhausted.
    jobs: HashMap<u64, Entry<J>>,
    /// The job id of each key ([`Task::key`]) in `jobs`: an invocation (or a session) is
    /// queued once.
    keys: HashMap<String, u64>,
    /// When each delayed or delivered job is due again (one timer per such job).
    timers: BTreeSet<(Instant, u64)>,
    closed: bool,
}

impl<J> Default for State<J> {
    fn default() -> Self {
        Self {
            next_id: 0,
            ready: VecDeque::new(),
            jobs: HashMap::new(),
            keys: HashMap::new(),
            timers: BTreeSet::new(),
            closed: false,
        }
    }
}

struct Entry<J> {
    job: J,
    deliveries: u32,
    phase: Phase,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ready,
    /// `nak`ed with a delay: ready at this instant.
    Delayed(Instant),
    /// Delivered (delivery number), redelivered at this instant unless settled.
    Delivered(u32, Instant),
}

impl<J: Task> MemoryWorkQueue<J> {
    /// An empty queue.
    pub fn new(options: MemoryOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                claimant: RwLock::new(None),
                wake: Notify::new(),
                options: MemoryOptions {
                    max_deliver: options.max_deliver.max(MIN_MAX_DELIVER),
                    ..options
                },
            }),
        }
    }

    /// Ends every `next`, now and later, with [`WorkQueueError::Closed`].
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify_waiters();
    }

    /// Jobs not yet acked or exhausted (ready, delayed or delivered).
    pub fn len(&self) -> usize {
        self.inner.lock().jobs.len()
    }

    /// Whether no job is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<J: Task> Inner<J> {
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<J: Task> State<J> {
    fn set_phase(&mut self, id: u64, phase: Phase) {
        let Some(entry) = self.jobs.get_mut(&id) else {
            return;
        };
        if let Some(at) = entry.phase.due() {
            self.timers.remove(&(at, id));
        }
        entry.phase = phase;
        match phase {
            Phase::Ready => self.ready.push_back(id),
            Phase::Delayed(at) | Phase::Delivered(_, at) => {
                self.timers.insert((at, id));
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(entry) = self.jobs.remove(&id) {
            if let Some(at) = entry.phase.due() {
                self.timers.remove(&(at, id));
            }
            if self.keys.get(entry.job.key()) == Some(&id) {
                self.keys.remove(entry.job.key());
            }
        }
    }

    /// Moves every job whose timer is due to `ready`, or drops it when its last delivery
    /// went unsettled.
    fn fire(&mut self, now: Instant, max_deliver: u32) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id));
            let Some(entry) = self.jobs.get_mut(&id) else {
                continue;
            };
            match entry.phase {
                Phase::Delivered(..) if entry.deliveries >= max_deliver => {
                    tracing::warn!(
                        key = %entry.job.key(),
                        deliveries = entry.deliveries,
                        "work queue: the last delivery was not settled; not delivered again"
                    );
                    self.remove(id);
                }
                _ => {
                    entry.phase = Phase::Ready;
                    self.ready.push_back(id);
                }
            }
        }
    }
}

impl Phase {
    fn due(self) -> Option<Instant> {
        match self {
            Phase::Ready => None,
            Phase::Delayed(at) | Phase::Delivered(_, at) => Some(at),
        }
    }
}

#[async_trait]
impl<J: Task> WorkQueue<J> for MemoryWorkQueue<J> {
    async fn next(&self) -> Result<Work<J>, WorkQueueError> {
        let inner = &self.inner;
        loop {
            // Registered before the state is read, so an offer made after the read wakes it.
            let woken = inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let earliest = {
                let mut state = inner.lock();
                if state.closed {
                    return Err(WorkQueueError::Closed);
                }
                let now = Instant::now();
                state.fire(now, inner.options.max_deliver);
                while let Some(id) = state.ready.pop_front() {
                    let Some(entry) = state.jobs.get_mut(&id) else {
                        continue;
                    };
                    if entry.phase != Phase::Ready {
                        continue;
                    }
                    entry.deliveries += 1;
                    let attempt = entry.deliveries;
                    let job = entry.job.clone();
                    state.set_phase(id, Phase::Delivered(attempt, now + inner.options.ack_wait));
                    let settle = Delivery {
                        inner: Arc::clone(inner),
                        id,
                        attempt,
                    };
                    return Ok(Work::new(
                        job,
                        attempt,
                        inner.options.max_deliver,
                        inner.options.ack_wait,
                        Box::new(settle),
                    ));
                }
                state.timers.first().map(|&(at, _)| at)
            };
            match earliest {
                Some(at) => {
                    tokio::select! {
                        _ = &mut woken => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    fn offer(&self, job: J) {
        {
            let mut state = self.inner.lock();
            if state.closed || state.keys.contains_key(job.key()) {
                return;
            }
            let id = state.next_id;
            state.next_id += 1;
            state.keys.insert(job.key().to_owned(), id);
            state.jobs.insert(
                id,
                Entry {
                    job,
                    deliveries: 0,
                    phase: Phase::Ready,
                },
            );
            state.ready.push_back(id);
        }
        self.inner.wake.notify_one();
    }

    fn max_deliver(&self) -> u32 {
        self.inner.options.max_deliver
    }

    fn claim_early(&self, job: &J) -> Option<EarlyClaim<J>> {
        let claimant = self
            .inner
            .claimant
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade)?;
        if self.inner.lock().closed {
            return None;
        }
        claimant.claim(job)
    }

    fn attach(&self, claimant: Weak<dyn Claimant<J>>) {
        *self
            .inner
            .claimant
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(claimant);
    }
}

/// One delivery of a memory job. Settling a delivery that was already redelivered does
/// nothing, except `ack`, which ends the job whichever delivery reports it done.
struct Delivery<J: Task> {
    inner: Arc<Inner<J>>,
    id: u64,
    attempt: u32,
}

impl<J: Task> Delivery<J> {
    /// Whether this delivery is the job's current one.
    fn current(&self, state: &State<J>) -> bool {
        matches!(
            state.jobs.get(&self.id).map(|e| e.phase),
            Some(Phase::Delivered(attempt, _)) if attempt == self.attempt
        )
    }
}

#[async_trait]
impl<J: Task> Settle for Delivery<J> {
    async fn ack(&self) -> Result<(), WorkQueueError> {
        self.inner.lock().remove(self.id);
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), WorkQueueError> {
        let mut state = self.inner.lock();
        if self.current(&state) {
            let due = Instant::now() + self.inner.options.ack_wait;
            state.set_phase(self.id, Phase::Delivered(self.attempt, due));
        }
        Ok(())
    }

    async fn nak(&self, delay: Duration) -> Result<(), WorkQueueError> {
        {
            let mut state = self.inner.lock();
            if !self.current(&state) {
                return Ok(());
            }
            if self.attempt >= self.inner.options.max_deliver {
                state.remove(self.id);
                return Ok(());
            }
            let phase = if delay.is_zero() {
                Phase::Ready
            } else {
                Phase::Delayed(Instant::now() + delay)
            };
            state.set_phase(self.id, phase);
        }
        // A new job to deliver, or a timer a waiter may not know about.
        self.inner.wake.notify_one();
        Ok(())
    }
}
