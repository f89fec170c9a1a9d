//! The work queue: how executors get queued invocations to take, and provisioners the sessions
//! to provision (decisions: ADR 0009).
//!
//! A [`WorkQueue`] hands out [`Work`]: one event that is work (a [`Task`]): for executors a
//! [`Job`], one `invocation.queued` event (its invocation, session and global sequence, and the
//! decoded event when it could be decoded); for provisioners a [`Provision`], one
//! `session.created` event. Each comes with a delivery handle.
//! Delivery is at least once: work that is not acknowledged within the queue's ack wait, or
//! that is `nak`ed, is delivered again, up to [`WorkQueue::max_deliver`] times, each delivery
//! numbered from 1. The queue never decides whether an invocation runs: the executor claims it
//! by appending `invocation.started` after the version it holds, so a redelivery can never make
//! two executors run one invocation, and it settles the delivery only after the invocation's
//! terminal event is appended. [`verdict`] is the rule an executor applies to a delivery,
//! from the invocation's events alone (never from a restart).
//!
//! - [`memory::MemoryWorkQueue`]: in process, fed by [`WorkQueue::offer`] right after the
//!   `queued` event is committed (the embedded mode; a hand-over without polling).
//! - [`jetstream::JetStreamWorkQueue`]: one durable pull consumer on the event stream, shared by
//!   every executor process; the `queued` event is the work (nothing else is published), and
//!   `offer` is ignored.
//!
//! This module never appends events and never runs tools.

pub mod jetstream;
pub mod memory;

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use workspace_events::{InvocationQueued, InvocationStarted, SessionCreated};

/// Deliveries of one job by default: the first, redeliveries after crashes or `nak`s, and the
/// last, which never starts a run ([`Work::last_attempt`]).
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// The fewest deliveries a queue allows: the last one never starts a run, so one delivery
/// would run nothing.
pub const MIN_MAX_DELIVER: u32 = 2;
/// How long a delivery may go without `ack`, `nak` or `in_progress` before it is delivered
/// again, by default.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// How long after a claim's `started.deadline` its executor is presumed gone by default: the
/// executor abandons a run at the deadline plus half a second and then stores its artifacts and
/// appends the outcome, which this leaves ample room for.
pub const DEFAULT_LIVENESS_GRACE: Duration = Duration::from_secs(30);

/// What a queue hands out: the work one event stands for.
pub trait Task: Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// What a consumer in the same process commits beside the task's event when it claims
    /// the task before the event is committed ([`EarlyClaim`]).
    type Claim: Send + 'static;

    /// The aggregate the work is about: the memory queue holds one task per key.
    fn key(&self) -> &str;
}

/// A claim taken while the task's event is being committed: the embedded shortcut ADR 0009
/// allows behind the queue. With the in-process queue, an executor with a free run slot claims
/// an invocation as the API commits its `queued` event, so `queued` and `started` (the claim,
/// [`StartClaim`]) are one append and the run starts without a queue hand-over. The committer
/// calls [`EarlyClaim::committed`] once both are in the log; dropped without it (the append
/// failed, was refused or its outcome is unknown), the claimant looks the invocation up and
/// runs it only if the log holds exactly its claim. Nothing else changes: the claim is still
/// `started` after the version the claimer held, judged by the same rules.
pub struct EarlyClaim<J: Task> {
    /// What to commit beside the task's event.
    pub claim: J::Claim,
    claimed: Option<Box<dyn Claimed<J>>>,
}

impl<J: Task> EarlyClaim<J> {
    /// A claim of `claim`, taken by `claimed`.
    pub fn new(claim: J::Claim, claimed: Box<dyn Claimed<J>>) -> Self {
        Self {
            claim,
            claimed: Some(claimed),
        }
    }

    /// The task's event and the claim are committed: the claimant runs `job`.
    pub fn committed(mut self, job: J) {
        if let Some(claimed) = self.claimed.take() {
            claimed.committed(job);
        }
    }
}

impl<J: Task> Drop for EarlyClaim<J> {
    fn drop(&mut self) {
        if let Some(claimed) = self.claimed.take() {
            claimed.abandoned();
        }
    }
}

/// The claimant's side of an [`EarlyClaim`].
pub trait Claimed<J>: Send {
    /// The task's event and the claim are in the log: run it.
    fn committed(self: Box<Self>, job: J);
    /// Not known to be committed: look it up, and run it only if the log holds this claim.
    fn abandoned(self: Box<Self>);
}

/// A consumer in the queue's process that can claim a task before its event is committed.
pub trait Claimant<J: Task>: Send + Sync {
    /// A claim on `job` if the consumer can take it now (a free run slot), held until the
    /// claim is committed or dropped.
    fn claim(&self, job: &J) -> Option<EarlyClaim<J>>;
}

/// An executor's early claim of a queued invocation: its `started` event and the metadata
/// the executor records it with.
#[derive(Debug, Clone)]
pub struct StartClaim {
    /// The claim.
    pub started: InvocationStarted,
    /// The envelope facts of the `started` event.
    pub metadata: crate::eventstore::CommandMetadata,
}

/// A source of work for executors (queued invocations, by default) or provisioners (created
/// sessions). See the module documentation.
#[async_trait]
pub trait WorkQueue<J: Task = Job>: Send + Sync {
    /// The next delivery, waiting as long as it takes. Cancel-safe: a cancelled call hands
    /// nothing out (the JetStream queue keeps its pull request for the next call; a message the
    /// server sends after the last call is redelivered after the ack wait).
    async fn next(&self) -> Result<Work<J>, WorkQueueError>;

    /// Between one and `max` deliveries (at least one: `max` 0 counts as 1), waiting as long
    /// as it takes for the first and never for the others: what is at hand when the first
    /// arrives comes with it. The caller asks for no more than it can start at once (its free
    /// run slots), so nothing is handed out to wait in a buffer while its ack wait runs.
    /// Cancel-safe as [`WorkQueue::next`]. By default one [`WorkQueue::next`].
    async fn next_many(&self, max: usize) -> Result<Vec<Work<J>>, WorkQueueError> {
        let _ = max;
        Ok(vec![self.next().await?])
    }

    /// The event of `job` was just committed by this process. The memory queue delivers it
    /// (once, whatever the number of offers while it is held); a queue that reads the event log
    /// ignores it, since the event is already its work.
    fn offer(&self, job: J);

    /// How many times one job is delivered at most.
    fn max_deliver(&self) -> u32;

    /// A claim on `job` by a consumer in this process, taken before the job's event is
    /// committed so both commit together ([`EarlyClaim`]); `None` (the default, and every
    /// queue that reads the log) when none can take it now: commit the event alone and
    /// [`WorkQueue::offer`] it.
    fn claim_early(&self, _job: &J) -> Option<EarlyClaim<J>> {
        None
    }

    /// Lets `claimant` claim jobs early ([`WorkQueue::claim_early`]); ignored by queues that
    /// read the log. The queue holds it weakly: a claimant that is gone claims nothing.
    fn attach(&self, _claimant: std::sync::Weak<dyn Claimant<J>>) {}
}

/// What was queued: one `invocation.queued` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The invocation.
    pub invocation_id: String,
    /// Its session.
    pub session_id: String,
    /// Global sequence of the `queued` event; 0 when not known (a job offered to make the
    /// executor look the invocation up, e.g. after a cancelled request or at start).
    pub sequence: u64,
    /// The `queued` event, when the queue could decode it; `None`: load the invocation.
    pub queued: Option<InvocationQueued>,
}

impl Task for Job {
    type Claim = StartClaim;

    fn key(&self) -> &str {
        &self.invocation_id
    }
}

/// What was created: one `session.created` event, the work of provisioners.
#[derive(Debug, Clone, PartialEq)]
pub struct Provision {
    /// The session.
    pub session_id: String,
    /// Global sequence of the `created` event; 0 when not known (offered as a look-up).
    pub sequence: u64,
    /// The `created` event, when the queue could decode it; `None`: load the session.
    pub created: Option<SessionCreated>,
}

impl Task for Provision {
    /// Provisioning has no claim event: never claimed early.
    type Claim = std::convert::Infallible;

    fn key(&self) -> &str {
        &self.session_id
    }
}

/// One delivery of a task ([`Job`] by default). Dropping it without settling leaves it to be
/// delivered again after the ack wait.
pub struct Work<J = Job> {
    /// What to do.
    pub job: J,
    attempt: u32,
    max_deliver: u32,
    ack_wait: Duration,
    settle: Box<dyn Settle>,
}

impl<J: std::fmt::Debug> std::fmt::Debug for Work<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("job", &self.job)
            .field("delivery", &self.attempt)
            .field("max_deliver", &self.max_deliver)
            .finish_non_exhaustive()
    }
}

impl<J: Task> Work<J> {
    pub(crate) fn new(
        job: J,
        attempt: u32,
        max_deliver: u32,
        ack_wait: Duration,
        settle: Box<dyn Settle>,
    ) -> Self {
        Self {
            job,
            attempt,
            max_deliver,
            ack_wait,
            settle,
        }
    }

    /// Which delivery this is, from 1.
    pub fn delivery(&self) -> u32 {
        self.attempt
    }

    /// This is the last delivery: nothing delivers the job again, so the executor must not
    /// start a run (a crash would leave it `running` forever); it records the final outcome
    /// instead, following [`verdict`].
    pub fn last_attempt(&self) -> bool {
        self.attempt >= self.max_deliver
    }

    /// How often [`Work::in_progress`] must be sent while the job is held: a third of the ack
    /// wait, so one lost heartbeat does not cause a redelivery.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.ack_wait / 3).max(Duration::from_millis(1))
    }

    /// Done: the invocation's terminal event is appended (or it needs nothing). The job is not
    /// delivered again.
    pub async fn ack(self) -> Result<(), WorkQueueError> {
        self.settle.ack().await
    }

    /// Still working on it: restarts the ack wait, so a long tool run is not redelivered.
    pub async fn in_progress(&self) -> Result<(), WorkQueueError> {
        self.settle.in_progress().await
    }

    /// Could not take it now: deliver it again after `delay` (at once for zero), counting a
    /// delivery. On the last delivery this ends the job's deliveries.
    pub async fn nak(self, delay: Duration) -> Result<(), WorkQueueError> {
        self.settle.nak(delay).await
    }

    /// Sends [`Work::in_progress`] every [`Work::heartbeat_interval`], for ever: run it beside
    /// the tool (`select!`) and drop it when the run ends. A failed heartbeat is logged and
    /// retried at the next tick, never a reason to stop the run (the claim, not the delivery,
    /// decides who runs it).
    pub async fn keep_alive(&self) {
        let mut ticks = tokio::time::interval(self.heartbeat_interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(err) = self.in_progress().await {
                tracing::warn!(
                    key = %self.job.key(),
                    delivery = self.attempt,
                    error = %err,
                    "work queue: a heartbeat failed; retrying at the next tick"
                );
            }
        }
    }
}

/// How a queue settles one delivery.
#[async_trait]
pub(crate) trait Settle: Send + Sync {
    async fn ack(&self) -> Result<(), WorkQueueError>;
    async fn in_progress(&self) -> Result<(), WorkQueueError>;
    async fn nak(&self, delay: Duration) -> Result<(), WorkQueueError>;
}

/// Why the queue could not deliver or settle.
#[derive(Debug, thiserror::Error)]
pub enum WorkQueueError {
    /// The server cannot be reached or refused the request; retry.
    #[error("work queue unavailable: {0}")]
    Unavailable(String),
    /// The consumer's settings did not take (a server that drops settings it does not know).
    #[error("work queue misconfigured: {0}")]
    Misconfigured(String),
    /// The queue was closed: nothing more will be delivered.
    #[error("the work queue is closed")]
    Closed,
}

/// How long the intake loop waits before asking again after the queue failed.
const INTAKE_RETRY: Duration = Duration::from_millis(200);

/// The intake loop of every consumer of a work queue (the executor, the provisioner): as many
/// deliveries as `slots` has free permits (one when none is free:
/// [`WorkQueue::next_many`]), then for each a free slot (every delivery not started yet kept
/// alive while it waits), then `handle(work, slot)` on its own task in `tasks`, until
/// `shutdown`. Only this loop takes slots in production, so the slots asked for are there
/// and a busy consumer holds at most one delivery it cannot start yet. A delivery taken but
/// not started when `shutdown` fires (or the slots close) is `nak`ed at once, for another
/// process or this one after a restart. `who` names the consumer in logs.
pub async fn take_until<J, F, Fut>(
    queue: &dyn WorkQueue<J>,
    slots: &std::sync::Arc<tokio::sync::Semaphore>,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: &tokio_util::sync::CancellationToken,
    who: &str,
    handle: F,
) where
    J: Task,
    F: Fn(Work<J>, tokio::sync::OwnedSemaphorePermit) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let wanted = slots.available_permits().max(1);
        let works = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = queue.next_many(wanted) => match next {
                Ok(works) => works,
                Err(WorkQueueError::Closed) => return,
                Err(err) => {
                    tracing::error!(error = %err, who, "could not take work; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(INTAKE_RETRY) => continue,
                    }
                }
            },
        };
        let mut waiting = std::collections::VecDeque::from(works);
        while let Some(work) = waiting.pop_front() {
            let slot = tokio::select! {
                biased;
                _ = shutdown.cancelled() => None,
                slot = slots.clone().acquire_owned() => slot.ok(),
                _ = futures::future::join(
                    work.keep_alive(),
                    futures::future::join_all(waiting.iter().map(Work::keep_alive)),
                ) => None,
            };
            let Some(slot) = slot else {
                let _ = work.nak(Duration::ZERO).await;
                for work in waiting {
                    let _ = work.nak(Duration::ZERO).await;
                }
                return;
            };
            tasks.spawn(handle(work, slot));
        }
    }
}

/// Where an invocation stands, from its events, when a delivery of its `queued` event arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing<'a> {
    /// No events: never committed (a job offered for a look-up).
    Absent,
    /// Queued and not claimed.
    Queued {
        /// If no executor starts it by then, it fails with `timeout`.
        start_deadline: OffsetDateTime,
    },
    /// Claimed by an executor: `started` is its latest event.
    Running(&'a InvocationStarted),
    /// Terminal (`completed`, `denied`, `rejected`).
    Over,
}

/// What an executor does with a delivery ([`verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Claim it (append `started` after the version held) and run it, sending `in_progress`
    /// while it runs; ack after `completed` is appended.
    Claim,
    /// Its start deadline passed before anyone claimed it: append `completed` (failed,
    /// `timeout`), then ack.
    Expire,
    /// Last delivery, never claimed: append `completed` (failed, `unavailable`: no executor
    /// could take it), then ack.
    GiveUp,
    /// Claimed, and its claimer is past `started.deadline` plus the grace: it is gone. Append
    /// `completed` (failed, `interrupted`) after the `started` version, then ack. If that
    /// append loses the race, the claimer finished after all: ack.
    Interrupt,
    /// Claimed, and the claimer may still be running it (its deadline plus grace is ahead):
    /// never touch its run. Not the last delivery: `nak` with the delay until `until`. The
    /// last: hold the delivery with `in_progress` until `until`, then decide again (it is then
    /// `Over` or `Interrupt`).
    Wait {
        /// When the claimer is presumed gone.
        until: OffsetDateTime,
    },
    /// Nothing to do: ack.
    Done,
}

/// The liveness rule: what to do with a delivery of an invocation standing at `standing`, at
/// `now`. A claim is presumed dead only when `now` is past its `started.deadline` plus `grace`,
/// never because some executor restarted, so no executor fails another's live run.
pub fn verdict(
    standing: Standing<'_>,
    last_attempt: bool,
    now: OffsetDateTime,
    grace: Duration,
) -> Verdict {
    match standing {
        Standing::Absent | Standing::Over => Verdict::Done,
        Standing::Queued { start_deadline } if now > start_deadline => Verdict::Expire,
        Standing::Queued { .. } if last_attempt => Verdict::GiveUp,
        Standing::Queued { .. } => Verdict::Claim,
        Standing::Running(started) => {
            let until = started.deadline + grace;
            if now > until {
                Verdict::Interrupt
            } else {
                Verdict::Wait { until }
            }
        }
    }
}

/// The delay to `nak` with for [`Verdict::Wait`] at `now` (zero when `until` has passed).
pub fn delay_until(until: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(until - now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const GRACE: Duration = Duration::from_secs(30);
    const NOW: OffsetDateTime = datetime!(2026-12-01 12:00:00 UTC);

    fn started(deadline: OffsetDateTime) -> InvocationStarted {
        InvocationStarted {
            executor_id: "executor-a".into(),
            started_at: deadline - time::Duration::minutes(5),
            deadline,
        }
    }

    #[test]
    fn a_queued_invocation_is_claimed_unless_its_start_deadline_passed() {
        let ahead = Standing::Queued {
            start_deadline: NOW + time::Duration::SECOND,
        };
        let behind = Standing::Queued {
            start_deadline: NOW - time::Duration::SECOND,
        };
        assert_eq!(verdict(ahead, false, NOW, GRACE), Verdict::Claim);
        assert_eq!(verdict(behind, false, NOW, GRACE), Verdict::Expire);
        assert_eq!(verdict(behind, true, NOW, GRACE), Verdict::Expire);
    }

    #[test]
    fn the_last_delivery_of_an_unclaimed_invocation_gives_up_instead_of_running_it() {
        let queued = Standing::Queued {
            start_deadline: NOW + time::Duration::MINUTE,
        };
        assert_eq!(verdict(queued, true, NOW, GRACE), Verdict::GiveUp);
    }

    #[test]
    fn a_claim_within_its_deadline_and_grace_is_left_to_its_executor() {
        let s = started(NOW + time::Duration::SECOND);
        let until = s.deadline + GRACE;
        for last in [false, true] {
            assert_eq!(
                verdict(Standing::Running(&s), last, NOW, GRACE),
                Verdict::Wait { until }
            );
        }
        // Past the deadline but inside the grace: the executor may be recording its outcome.
        let s = started(NOW - time::Duration::SECOND);
        assert!(matches!(
            verdict(Standing::Running(&s), false, NOW, GRACE),
            Verdict::Wait { .. }
        ));
        assert_eq!(
            delay_until(s.deadline + GRACE, NOW),
            Duration::from_secs(29)
        );
    }

    #[test]
    fn a_claim_past_its_deadline_and_grace_is_interrupted() {
        let s = started(NOW - GRACE - Duration::from_millis(1));
        assert_eq!(
            verdict(Standing::Running(&s), false, NOW, GRACE),
            Verdict::Interrupt
        );
        assert_eq!(delay_until(s.deadline, NOW), Duration::ZERO);
    }

    #[test]
    fn an_invocation_that_is_over_or_absent_needs_nothing() {
        assert_eq!(verdict(Standing::Over, true, NOW, GRACE), Verdict::Done);
        assert_eq!(verdict(Standing::Absent, false, NOW, GRACE), Verdict::Done);
    }
}
