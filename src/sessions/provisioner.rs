//! The provisioner: takes `session.created` deliveries from a [`WorkQueue`] of [`Provision`]s
//! (run by executor processes, beside the executor), prepares the workspace and starts the
//! runner of each session still `provisioning`, and records `provisioned` or `failed` before
//! it acknowledges the delivery.
//!
//! One provisioner at a time prepares a workspace: it holds the [`ProvisioningLock`] of the
//! session's directory (an `flock` on it, so a crashed holder releases it with its process)
//! while it works, and a delivery that finds the lock taken waits for the holder's outcome. The
//! liveness rule is a deadline, never a restart ([`step`]): a provisioning runs only before
//! `created_at` plus the provision timeout and is cut there (`timeout`); a session still
//! `provisioning` past that deadline with nobody holding its lock, or past the deadline plus
//! the liveness grace whoever holds it, is failed `unavailable` by whichever process sees it
//! (a delivery, or the sweep). Every append is optimistic, so concurrent deciders are harmless.
//!
//! The sweep also stops this process's runners of sessions that ended elsewhere (closed or
//! expired through another process). This module never runs tools.

use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{LoadedSession, Sessions};
use crate::domain::SessionStatus;
use crate::ids::SessionId;
use crate::runner::RunnerProvider;
use crate::workqueue::{Provision, Work, WorkQueue};

/// How long to wait before looking again after the queue or the store failed.
const RETRY: Duration = Duration::from_millis(200);

/// The exclusive provisioning lock of one session directory on this host; released when
/// dropped (or when its process dies).
#[derive(Debug)]
pub struct ProvisioningLock {
    _dir: std::fs::File,
}

impl ProvisioningLock {
    /// Creates `dir` if needed and takes its lock; `None` when another holder has it.
    pub fn try_take(dir: &Path) -> std::io::Result<Option<Self>> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::File::open(dir)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if taken == 0 {
            return Ok(Some(Self { _dir: file }));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(err)
        }
    }
}

/// Where a session stands when a delivery of its `created` event is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No events (a look-up of an append that never committed).
    Absent,
    /// Created, no outcome yet.
    Provisioning {
        /// When it was created.
        created_at: OffsetDateTime,
    },
    /// Ready, failed, closed or expired: provisioned or past needing it.
    Over,
}

/// What a provisioner does with a delivery, holding the session's provisioning lock ([`step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Prepare the workspace and start the runner, cut at `deadline`; record the outcome,
    /// then ack.
    Provision {
        /// `created_at` plus the provision timeout.
        deadline: OffsetDateTime,
    },
    /// Its deadline passed and nobody is provisioning it: record `failed` (`unavailable`,
    /// "provisioning did not finish in time"), then ack.
    Fail,
    /// Nothing to do: ack.
    Done,
}

/// The deadline rule, for a delivery whose provisioner holds the session's lock (so no
/// provisioner on this host is working on it): provision a session only before its deadline;
/// past it, fail it. Never decided from a restart.
pub fn step(standing: Standing, now: OffsetDateTime, timeout: Duration) -> Step {
    match standing {
        Standing::Absent | Standing::Over => Step::Done,
        Standing::Provisioning { created_at } => {
            let deadline = created_at + timeout;
            if now < deadline {
                Step::Provision { deadline }
            } else {
                Step::Fail
            }
        }
    }
}

/// Whether a session still `provisioning` is past its deadline plus the grace: whoever holds
/// its lock is gone or too late to count (a provisioner cuts its work at the deadline), so any
/// process fails it.
pub fn overdue(
    created_at: OffsetDateTime,
    now: OffsetDateTime,
    timeout: Duration,
    grace: Duration,
) -> bool {
    now > created_at + timeout + grace
}

fn standing(loaded: &LoadedSession) -> Standing {
    match (loaded.status(), &loaded.created) {
        (None, _) => Standing::Absent,
        (Some(SessionStatus::Provisioning), Some(created)) => Standing::Provisioning {
            created_at: created.created_at,
        },
        _ => Standing::Over,
    }
}

/// Provisions created sessions; see the module documentation.
pub struct Provisioner {
    sessions: Arc<Sessions>,
    runners: Arc<dyn RunnerProvider>,
    work: Arc<dyn WorkQueue<Provision>>,
    grace: Duration,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
}

impl Provisioner {
    /// A provisioner taking created sessions from `work`, at most `concurrency` at a time.
    pub fn new(
        sessions: Arc<Sessions>,
        runners: Arc<dyn RunnerProvider>,
        work: Arc<dyn WorkQueue<Provision>>,
        grace: Duration,
        concurrency: usize,
    ) -> Self {
        Self {
            sessions,
            runners,
            work,
            grace,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            tasks: TaskTracker::new(),
        }
    }

    /// Takes work until `shutdown`, then lets the provisionings in flight record their outcome.
    /// At start it offers every session the read models show `provisioning` (the in-process
    /// queue is empty after a restart; a JetStream queue ignores the offers); every `grace` it
    /// sweeps for overdue provisionings and for this process's runners of ended sessions.
    pub async fn run_until_stopped(self: Arc<Self>, shutdown: CancellationToken) {
        if self.offer_open(&shutdown).await {
            let sweeper = self.tasks.spawn(self.clone().sweep_until(shutdown.clone()));
            self.take_work_until(&shutdown).await;
            sweeper.abort();
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The intake loop ([`crate::workqueue::take_until`]), one provisioning per slot.
    async fn take_work_until(self: &Arc<Self>, shutdown: &CancellationToken) {
        let handle = |work: Work<Provision>, slot: tokio::sync::OwnedSemaphorePermit| {
            let this = self.clone();
            async move {
                let _slot = slot;
                this.handle(work).await;
            }
        };
        crate::workqueue::take_until(
            self.work.as_ref(),
            &self.slots,
            &self.tasks,
            shutdown,
            "provisioner",
            handle,
        )
        .await;
    }

    /// Offers every `provisioning` session of the read models as a look-up. Retries while the
    /// store cannot answer; false on shutdown.
    async fn offer_open(&self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.sessions.projector.store().live_sessions().await {
                Ok(live) => {
                    for view in live
                        .iter()
                        .filter(|v| v.status == SessionStatus::Provisioning)
                    {
                        self.work.offer(Provision {
                            session_id: view.id.clone(),
                            sequence: 0,
                            created: None,
                        });
                    }
                    return true;
                }
                Err(err) => {
                    tracing::error!(error = %err, "provisioner could not read the live sessions; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
    }

    /// Applies the deadline rule to one delivery and settles it.
    pub async fn handle(&self, work: Work<Provision>) {
        let Ok(id) = SessionId::parse(&work.job.session_id) else {
            tracing::warn!(session_id = %work.job.session_id, "not a session id; nothing to provision");
            let _ = work.ack().await;
            return;
        };
        let loaded = match self.sessions.load(id.as_str()).await {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::error!(session_id = %id, error = %err, "could not load a created session; it comes back");
                let _ = work.nak(Duration::from_secs(1)).await;
                return;
            }
        };
        let (Standing::Provisioning { created_at }, Some(created)) =
            (standing(&loaded), loaded.created.clone())
        else {
            let _ = work.ack().await;
            return;
        };
        let tenant_id = created.principal.tenant_id.clone();
        let lock = match self.sessions.lock_provisioning(&tenant_id, &id) {
            Ok(lock) => lock,
            Err(err) => {
                tracing::error!(session_id = %id, error = %err, "could not lock the session directory; it comes back");
                let _ = work.nak(Duration::from_secs(1)).await;
                return;
            }
        };
        let Some(lock) = lock else {
            // Another provisioner on this host is at it: its outcome is due by the deadline.
            // Look again then (the sweep fails it past the grace if nobody records one).
            if work.last_attempt() {
                let _ = work.ack().await;
            } else {
                let deadline = self.sessions.provision_deadline(created_at);
                let _ = work
                    .nak(
                        crate::workqueue::delay_until(deadline, OffsetDateTime::now_utc())
                            .max(Duration::from_secs(1)),
                    )
                    .await;
            }
            return;
        };
        // Holding the lock, the events may have moved on while it was taken.
        let loaded = match self.sessions.load(id.as_str()).await {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::error!(session_id = %id, error = %err, "could not load a created session; it comes back");
                drop(lock);
                let _ = work.nak(Duration::from_secs(1)).await;
                return;
            }
        };
        let now = OffsetDateTime::now_utc();
        match step(
            standing(&loaded),
            now,
            self.sessions.config().provision_timeout,
        ) {
            Step::Done => {}
            Step::Fail => self.sessions.fail_overdue(&id, loaded).await,
            Step::Provision { deadline } => {
                let within = crate::workqueue::delay_until(deadline, now);
                let provision = self.sessions.provision_within(&id, &created, within);
                tokio::pin!(provision);
                let outcome = tokio::select! {
                    biased;
                    outcome = &mut provision => outcome,
                    _ = work.keep_alive() => return,
                };
                let correlation_id = Some(format!("provision-{id}"));
                if let Err(err) = self
                    .sessions
                    .record_provisioning(&id, &tenant_id, outcome, correlation_id)
                    .await
                {
                    tracing::error!(session_id = %id, error = %err, "could not record the provisioning; it comes back");
                    drop(lock);
                    let _ = work.nak(Duration::from_secs(1)).await;
                    return;
                }
            }
        }
        drop(lock);
        if let Err(err) = work.ack().await {
            tracing::warn!(session_id = %id, error = %err, "could not acknowledge a provisioning; a redelivery finds it done");
        }
    }

    /// Every `grace` (at least a second): fails the sessions `provisioning` past their deadline
    /// plus the grace, and stops this process's runners of sessions that ended.
    async fn sweep_until(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.grace.max(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            self.sweep().await;
        }
    }

    /// One pass of the sweep.
    pub async fn sweep(&self) {
        let timeout = self.sessions.config().provision_timeout;
        let now = OffsetDateTime::now_utc();
        match self.sessions.projector.store().live_sessions().await {
            Ok(live) => {
                for view in live.iter().filter(|v| {
                    v.status == SessionStatus::Provisioning
                        && overdue(v.created_at, now, timeout, self.grace)
                }) {
                    let Ok(id) = SessionId::parse(&view.id) else {
                        continue;
                    };
                    // The events decide, not the view (it may lag).
                    match self.sessions.load(id.as_str()).await {
                        Ok(loaded) => match standing(&loaded) {
                            Standing::Provisioning { created_at }
                                if overdue(created_at, now, timeout, self.grace) =>
                            {
                                self.sessions.fail_overdue(&id, loaded).await
                            }
                            _ => {}
                        },
                        Err(err) => {
                            tracing::warn!(session_id = %id, error = %err, "sweep: could not load a session")
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "sweep: could not read the live sessions"),
        }
        for id in self.runners.sessions() {
            let ended = match self.sessions.projector.store().session(id.as_str()).await {
                Ok(Some(view)) => view.is_terminal(),
                // Not in the read models (past its retention, or not projected yet): the log
                // says.
                Ok(None) => match self.sessions.load(id.as_str()).await {
                    Ok(loaded) => loaded.status().is_none_or(SessionStatus::is_terminal),
                    Err(_) => false,
                },
                Err(_) => false,
            };
            if ended {
                tracing::info!(session_id = %id, "the session ended elsewhere; stopping its runner here");
                self.runners.stop(&id).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const TIMEOUT: Duration = Duration::from_secs(120);
    const GRACE: Duration = Duration::from_secs(30);
    const NOW: OffsetDateTime = datetime!(2026-12-01 12:00:00 UTC);

    #[test]
    fn a_session_is_provisioned_only_before_its_deadline_and_cut_there() {
        let created_at = NOW - time::Duration::seconds(10);
        assert_eq!(
            step(Standing::Provisioning { created_at }, NOW, TIMEOUT),
            Step::Provision {
                deadline: created_at + TIMEOUT
            }
        );
        let created_at = NOW - TIMEOUT;
        assert_eq!(
            step(Standing::Provisioning { created_at }, NOW, TIMEOUT),
            Step::Fail
        );
    }

    #[test]
    fn a_session_provisioned_failed_or_absent_needs_nothing() {
        assert_eq!(step(Standing::Over, NOW, TIMEOUT), Step::Done);
        assert_eq!(step(Standing::Absent, NOW, TIMEOUT), Step::Done);
    }

    #[test]
    fn a_provisioning_is_overdue_only_past_its_deadline_and_the_grace() {
        let created_at = NOW - TIMEOUT - GRACE;
        assert!(!overdue(created_at, NOW, TIMEOUT, GRACE));
        assert!(overdue(
            created_at - time::Duration::MILLISECOND,
            NOW,
            TIMEOUT,
            GRACE
        ));
        assert!(!overdue(NOW, NOW, TIMEOUT, GRACE));
    }

    #[test]
    fn the_provisioning_lock_is_exclusive_and_released_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("acme").join("session-a");
        let held = ProvisioningLock::try_take(&session).unwrap().expect("free");
        assert!(session.is_dir());
        assert!(ProvisioningLock::try_take(&session).unwrap().is_none());
        drop(held);
        assert!(ProvisioningLock::try_take(&session).unwrap().is_some());
    }
}
