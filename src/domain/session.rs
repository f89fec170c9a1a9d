//! The session aggregate: `provisioning` → `ready` | `failed` → `closed` | `expired`.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
pub use workspace_events::SessionStatus;
use workspace_events::{
    CloseReason, ErrorInfo, RuntimeRef, SessionClosed, SessionCreated, SessionEvent,
    SessionProvisioned, SessionProvisioningFailed, SessionRunnerRemoved,
};

/// A session's decision state: its status (the events crate's, the one views show; `None`
/// before its first event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    status: Option<SessionStatus>,
    #[serde(default, with = "workspace_events::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    /// Whether the stream holds any event (a `session.runner_removed` of a session this
    /// service never created leaves the status `None`).
    #[serde(default)]
    has_events: bool,
}

impl Session {
    /// Current status; `None` when the session has no event yet.
    pub fn status(&self) -> Option<SessionStatus> {
        self.status
    }
}

/// What can be asked of a session.
#[derive(Debug, Clone)]
pub enum SessionCommand {
    /// Create it (the caller validated the request and built the event).
    Create(SessionCreated),
    /// Provisioning finished.
    MarkProvisioned {
        /// Where its tools run.
        runtime: RuntimeRef,
        /// Now.
        at: OffsetDateTime,
    },
    /// Provisioning failed.
    FailProvisioning {
        /// Why.
        error: ErrorInfo,
        /// Now.
        at: OffsetDateTime,
    },
    /// Close it.
    Close {
        /// Requested by a caller, or expiry.
        reason: CloseReason,
        /// Now.
        at: OffsetDateTime,
    },
    /// Record that the pod janitor deleted one of its runner pods: accepted in any state (the
    /// pod of a closed, expired or unknown session is exactly what the janitor removes).
    RecordRunnerRemoved(SessionRunnerRemoved),
}

/// Why a session command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A session with this id exists already.
    #[error("session already exists")]
    AlreadyExists,
    /// No such session.
    #[error("session not found")]
    NotFound,
    /// The command needs a session that is provisioning.
    #[error("session is not provisioning (status {0:?})")]
    NotProvisioning(SessionStatus),
    /// The session is already closed or expired.
    #[error("session is already closed")]
    AlreadyClosed,
    /// An expiry close came before `expires_at`.
    #[error("session has not expired yet")]
    NotExpired,
}

impl Aggregate for Session {
    const TYPE: &'static str = "session";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            SessionCommand::Create(created) => {
                if self.status.is_some() || self.has_events {
                    return Err(SessionError::AlreadyExists);
                }
                sink.write(SessionEvent::Created(created), self).await;
            }
            SessionCommand::MarkProvisioned { runtime, at } => {
                self.require_provisioning()?;
                let event = SessionProvisioned {
                    runtime,
                    provisioned_at: at,
                };
                sink.write(SessionEvent::Provisioned(event), self).await;
            }
            SessionCommand::FailProvisioning { error, at } => {
                self.require_provisioning()?;
                let event = SessionProvisioningFailed {
                    error,
                    failed_at: at,
                };
                sink.write(SessionEvent::ProvisioningFailed(event), self)
                    .await;
            }
            SessionCommand::Close { reason, at } => {
                match self.status {
                    None => return Err(SessionError::NotFound),
                    Some(status) if status.is_closed() => return Err(SessionError::AlreadyClosed),
                    Some(_) => {}
                }
                if reason == CloseReason::Expired && self.expires_at.is_some_and(|e| at < e) {
                    return Err(SessionError::NotExpired);
                }
                let event = SessionClosed {
                    reason,
                    closed_at: at,
                };
                sink.write(SessionEvent::Closed(event), self).await;
            }
            SessionCommand::RecordRunnerRemoved(removed) => {
                sink.write(SessionEvent::RunnerRemoved(removed), self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.has_events = true;
        if let Some(status) = event.status() {
            self.status = Some(status);
        }
        if let SessionEvent::Created(created) = event {
            self.expires_at = Some(created.expires_at);
        }
    }
}

impl Session {
    fn require_provisioning(&self) -> Result<(), SessionError> {
        match self.status {
            Some(SessionStatus::Provisioning) => Ok(()),
            None => Err(SessionError::NotFound),
            Some(other) => Err(SessionError::NotProvisioning(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;
    use workspace_events::{Principal, WorkspaceSource};

    type SessionTest = TestFramework<Session>;

    fn created() -> SessionCreated {
        SessionCreated {
            session_id: "session-1".into(),
            principal: Principal {
                tenant_id: "acme".into(),
                actor_id: "alice".into(),
                roles: vec!["developer".into()],
            },
            source: WorkspaceSource::Empty,
            allowed_paths: vec![".".into()],
            metadata: Default::default(),
            created_at: datetime!(2026-11-23 10:00 UTC),
            expires_at: datetime!(2026-11-23 11:00 UTC),
        }
    }

    fn runtime() -> RuntimeRef {
        RuntimeRef {
            kind: "local".into(),
            isolation: "bubblewrap".into(),
            workdir: "/workspace".into(),
            namespace: None,
            pod_name: None,
        }
    }

    fn provisioned() -> SessionEvent {
        SessionEvent::Provisioned(SessionProvisioned {
            runtime: runtime(),
            provisioned_at: datetime!(2026-11-23 10:00:01 UTC),
        })
    }

    fn error() -> ErrorInfo {
        ErrorInfo {
            code: workspace_events::ErrorCode::ExecutionFailed.into(),
            message: "git clone failed".into(),
            retryable: false,
        }
    }

    fn close(reason: CloseReason, at: OffsetDateTime) -> SessionCommand {
        SessionCommand::Close { reason, at }
    }

    fn closed(reason: CloseReason, at: OffsetDateTime) -> SessionEvent {
        SessionEvent::Closed(SessionClosed {
            reason,
            closed_at: at,
        })
    }

    fn runner_removed() -> SessionRunnerRemoved {
        SessionRunnerRemoved {
            namespace: "workspace-runners".into(),
            pod_name: "ws-session-1".into(),
            pod_uid: "uid-1".into(),
            phase: "Running".into(),
            reason: workspace_events::RunnerRemovedReason::SessionClosed,
            removed_at: datetime!(2026-11-23 12:00 UTC),
        }
    }

    #[tokio::test]
    async fn a_runner_removal_is_recorded_after_close_and_leaves_the_status() {
        let at = datetime!(2026-11-23 10:30 UTC);
        SessionTest::with(())
            .given(vec![
                SessionEvent::Created(created()),
                provisioned(),
                closed(CloseReason::Requested, at),
            ])
            .when_async(SessionCommand::RecordRunnerRemoved(runner_removed()))
            .await
            .then_expect_events(vec![SessionEvent::RunnerRemoved(runner_removed())]);
        let mut session = Session::default();
        session.apply(SessionEvent::Created(created()));
        session.apply(closed(CloseReason::Requested, at));
        session.apply(SessionEvent::RunnerRemoved(runner_removed()));
        assert_eq!(session.status(), Some(SessionStatus::Closed));
    }

    #[tokio::test]
    async fn a_runner_removal_of_an_unknown_session_is_recorded_and_blocks_its_creation() {
        SessionTest::with(())
            .given_no_previous_events()
            .when_async(SessionCommand::RecordRunnerRemoved(runner_removed()))
            .await
            .then_expect_events(vec![SessionEvent::RunnerRemoved(runner_removed())]);
        SessionTest::with(())
            .given(vec![SessionEvent::RunnerRemoved(runner_removed())])
            .when_async(SessionCommand::Create(created()))
            .await
            .then_expect_error(SessionError::AlreadyExists);
    }

    #[tokio::test]
    async fn creating_a_new_session_records_created() {
        SessionTest::with(())
            .given_no_previous_events()
            .when_async(SessionCommand::Create(created()))
            .await
            .then_expect_events(vec![SessionEvent::Created(created())]);
    }

    #[tokio::test]
    async fn creating_an_existing_session_is_rejected() {
        SessionTest::with(())
            .given(vec![SessionEvent::Created(created())])
            .when_async(SessionCommand::Create(created()))
            .await
            .then_expect_error(SessionError::AlreadyExists);
    }

    #[tokio::test]
    async fn a_provisioning_session_becomes_ready() {
        let at = datetime!(2026-11-23 10:00:01 UTC);
        SessionTest::with(())
            .given(vec![SessionEvent::Created(created())])
            .when_async(SessionCommand::MarkProvisioned {
                runtime: runtime(),
                at,
            })
            .await
            .then_expect_events(vec![provisioned()]);
    }

    #[tokio::test]
    async fn provisioning_an_unknown_session_is_rejected() {
        SessionTest::with(())
            .given_no_previous_events()
            .when_async(SessionCommand::MarkProvisioned {
                runtime: runtime(),
                at: datetime!(2026-11-23 10:00 UTC),
            })
            .await
            .then_expect_error(SessionError::NotFound);
    }

    #[tokio::test]
    async fn provisioning_a_ready_session_again_is_rejected() {
        SessionTest::with(())
            .given(vec![SessionEvent::Created(created()), provisioned()])
            .when_async(SessionCommand::MarkProvisioned {
                runtime: runtime(),
                at: datetime!(2026-11-23 10:00 UTC),
            })
            .await
            .then_expect_error(SessionError::NotProvisioning(SessionStatus::Ready));
    }

    #[tokio::test]
    async fn a_failed_provisioning_is_recorded() {
        let at = datetime!(2026-11-23 10:00:02 UTC);
        SessionTest::with(())
            .given(vec![SessionEvent::Created(created())])
            .when_async(SessionCommand::FailProvisioning { error: error(), at })
            .await
            .then_expect_events(vec![SessionEvent::ProvisioningFailed(
                SessionProvisioningFailed {
                    error: error(),
                    failed_at: at,
                },
            )]);
    }

    #[tokio::test]
    async fn failing_a_closed_session_is_rejected() {
        let at = datetime!(2026-11-23 10:30 UTC);
        SessionTest::with(())
            .given(vec![
                SessionEvent::Created(created()),
                closed(CloseReason::Requested, at),
            ])
            .when_async(SessionCommand::FailProvisioning { error: error(), at })
            .await
            .then_expect_error(SessionError::NotProvisioning(SessionStatus::Closed));
    }

    #[tokio::test]
    async fn closing_a_ready_session_records_closed() {
        let at = datetime!(2026-11-23 10:30 UTC);
        SessionTest::with(())
            .given(vec![SessionEvent::Created(created()), provisioned()])
            .when_async(close(CloseReason::Requested, at))
            .await
            .then_expect_events(vec![closed(CloseReason::Requested, at)]);
    }

    #[tokio::test]
    async fn closing_a_failed_session_is_allowed() {
        let at = datetime!(2026-11-23 10:30 UTC);
        SessionTest::with(())
            .given(vec![
                SessionEvent::Created(created()),
                SessionEvent::ProvisioningFailed(SessionProvisioningFailed {
                    error: error(),
                    failed_at: at,
                }),
            ])
            .when_async(close(CloseReason::Requested, at))
            .await
            .then_expect_events(vec![closed(CloseReason::Requested, at)]);
    }

    #[tokio::test]
    async fn closing_a_closed_session_is_rejected() {
        let at = datetime!(2026-11-23 10:30 UTC);
        SessionTest::with(())
            .given(vec![
                SessionEvent::Created(created()),
                closed(CloseReason::Requested, at),
            ])
            .when_async(close(CloseReason::Requested, at))
            .await
            .then_expect_error(SessionError::AlreadyClosed);
    }

    #[tokio::test]
    async fn closing_an_unknown_session_is_rejected() {
        SessionTest::with(())
            .given_no_previous_events()
            .when_async(close(
                CloseReason::Requested,
                datetime!(2026-11-23 10:30 UTC),
            ))
            .await
            .then_expect_error(SessionError::NotFound);
    }

    #[tokio::test]
    async fn expiring_a_session_after_its_deadline_records_an_expiry_close() {
        let at = datetime!(2026-11-23 11:00:01 UTC);
        SessionTest::with(())
            .given(vec![SessionEvent::Created(created()), provisioned()])
            .when_async(close(CloseReason::Expired, at))
            .await
            .then_expect_events(vec![closed(CloseReason::Expired, at)]);
    }

    #[tokio::test]
    async fn expiring_a_session_before_its_deadline_is_rejected() {
        SessionTest::with(())
            .given(vec![SessionEvent::Created(created()), provisioned()])
            .when_async(close(CloseReason::Expired, datetime!(2026-11-23 10:59 UTC)))
            .await
            .then_expect_error(SessionError::NotExpired);
    }

    #[tokio::test]
    async fn expiring_an_expired_session_is_rejected() {
        let at = datetime!(2026-11-23 11:00:01 UTC);
        SessionTest::with(())
            .given(vec![
                SessionEvent::Created(created()),
                closed(CloseReason::Expired, at),
            ])
            .when_async(close(CloseReason::Expired, at))
            .await
            .then_expect_error(SessionError::AlreadyClosed);
    }
}
