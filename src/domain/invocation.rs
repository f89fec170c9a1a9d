//! The invocation aggregate: `queued` → `running` → `succeeded` | `failed`, or `denied` /
//! `failed` (rejected) before anything runs.
//!
//! Claiming is a command like any other: an executor appends `started` with the version it
//! loaded (the queued event), so two executors that received the same work can never both run
//! it — the second one's append conflicts, it reloads, and `Start` is refused as `NotQueued`.

use std::sync::Arc;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
pub use workspace_events::InvocationStatus;
use workspace_events::{
    InvocationCompleted, InvocationEvent, InvocationOutcome, InvocationQueued, InvocationRefused,
    InvocationStarted,
};

/// An invocation's decision state: its status (the events crate's, the one views show;
/// `None` before its first event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    status: Option<InvocationStatus>,
}

impl Invocation {
    /// Current status; `None` when the invocation has no event yet.
    pub fn status(&self) -> Option<InvocationStatus> {
        self.status
    }
}

/// What can be asked of an invocation.
#[derive(Debug, Clone)]
pub enum InvocationCommand {
    /// Accept a request that passed validation and policy.
    Queue(InvocationQueued),
    /// Record a request refused by policy.
    Deny(InvocationRefused),
    /// Record a request whose arguments failed validation.
    Reject(InvocationRefused),
    /// Claim it for an executor.
    Start(InvocationStarted),
    /// Record its terminal outcome.
    Complete(Arc<InvocationCompleted>),
    /// Fail it without running it (its start deadline passed, or its session is not ready):
    /// refused once an executor claimed it, so a dispatch that came late (the same queued
    /// event found twice) never ends a run another dispatch started.
    Abandon(Arc<InvocationCompleted>),
}

/// Why an invocation command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvocationError {
    /// An invocation with this id exists (a repeated correlation id lands here).
    #[error("invocation already exists")]
    AlreadyExists,
    /// No such invocation.
    #[error("invocation not found")]
    NotFound,
    /// Only a queued invocation can be started: another executor claimed it, or it is over.
    #[error("invocation is not queued (status {0:?})")]
    NotQueued(InvocationStatus),
    /// Only a running invocation can succeed; only a queued or running one can fail.
    #[error("invocation cannot complete from status {0:?}")]
    CannotComplete(InvocationStatus),
}

impl Aggregate for Invocation {
    const TYPE: &'static str = "invocation";
    type Command = InvocationCommand;
    type Event = InvocationEvent;
    type Error = InvocationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            InvocationCommand::Queue(queued) => {
                self.require_new()?;
                InvocationEvent::Queued(queued)
            }
            InvocationCommand::Deny(refused) => {
                self.require_new()?;
                InvocationEvent::Denied(refused)
            }
            InvocationCommand::Reject(refused) => {
                self.require_new()?;
                InvocationEvent::Rejected(refused)
            }
            InvocationCommand::Start(started) => match self.existing()? {
                InvocationStatus::Queued => InvocationEvent::Started(started),
                other => return Err(InvocationError::NotQueued(other)),
            },
            InvocationCommand::Complete(completed) => {
                let status = self.existing()?;
                let allowed = match (status, completed.outcome) {
                    (InvocationStatus::Running, _) => true,
                    // A queued invocation can only fail: its start deadline passed, or its
                    // session closed before an executor took it.
                    (InvocationStatus::Queued, InvocationOutcome::Failed) => true,
                    _ => false,
                };
                if !allowed {
                    return Err(InvocationError::CannotComplete(status));
                }
                InvocationEvent::Completed(completed)
            }
            InvocationCommand::Abandon(completed) => match self.existing()? {
                InvocationStatus::Queued if completed.outcome == InvocationOutcome::Failed => {
                    InvocationEvent::Completed(completed)
                }
                InvocationStatus::Queued => {
                    return Err(InvocationError::CannotComplete(InvocationStatus::Queued));
                }
                other => return Err(InvocationError::NotQueued(other)),
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.status = Some(event.status());
    }
}

impl Invocation {
    fn require_new(&self) -> Result<(), InvocationError> {
        match self.status {
            None => Ok(()),
            Some(_) => Err(InvocationError::AlreadyExists),
        }
    }

    /// The status of an invocation that has events; `NotFound` for one that has none.
    fn existing(&self) -> Result<InvocationStatus, InvocationError> {
        self.status.ok_or(InvocationError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use serde_json::json;
    use time::macros::datetime;
    use workspace_events::{ErrorCode, ErrorInfo, InvocationRequest};

    type InvocationTest = TestFramework<Invocation>;

    fn request() -> InvocationRequest {
        InvocationRequest {
            invocation_id: "inv-1".into(),
            session_id: "session-1".into(),
            tool_name: "fs.read_file".into(),
            correlation_id: None,
            approved: false,
            args: Some(json!({"path": "a.txt"})),
            args_ref: None,
            requested_at: datetime!(2026-11-23 10:00 UTC),
        }
    }

    fn queued() -> InvocationEvent {
        InvocationEvent::Queued(InvocationQueued {
            request: request().into(),
            timeout_seconds: 20,
            start_deadline: datetime!(2026-11-23 10:01 UTC),
        })
    }

    fn refused(code: ErrorCode) -> InvocationRefused {
        InvocationRefused {
            request: request().into(),
            error: ErrorInfo {
                code: code.into(),
                message: "no".into(),
                retryable: false,
            },
        }
    }

    fn started() -> InvocationStarted {
        InvocationStarted {
            executor_id: "executor-1".into(),
            started_at: datetime!(2026-11-23 10:00:01 UTC),
            deadline: datetime!(2026-11-23 10:00:21 UTC),
        }
    }

    fn completed(outcome: InvocationOutcome) -> Arc<InvocationCompleted> {
        Arc::new(InvocationCompleted {
            outcome,
            exit_code: Some(0),
            duration_ns: 1_260_000,
            output: Some(json!({"content": "x"}).into()),
            output_ref: None,
            logs: vec![],
            logs_ref: None,
            artifacts: vec![],
            error: None,
            completed_at: datetime!(2026-11-23 10:00:02 UTC),
        })
    }

    fn queue() -> InvocationCommand {
        let InvocationEvent::Queued(q) = queued() else {
            unreachable!()
        };
        InvocationCommand::Queue(q)
    }

    #[tokio::test]
    async fn queueing_a_new_invocation_records_queued() {
        InvocationTest::with(())
            .given_no_previous_events()
            .when_async(queue())
            .await
            .then_expect_events(vec![queued()]);
    }

    #[tokio::test]
    async fn queueing_an_existing_invocation_is_rejected() {
        InvocationTest::with(())
            .given(vec![queued()])
            .when_async(queue())
            .await
            .then_expect_error(InvocationError::AlreadyExists);
    }

    #[tokio::test]
    async fn denying_a_new_invocation_records_denied() {
        InvocationTest::with(())
            .given_no_previous_events()
            .when_async(InvocationCommand::Deny(refused(ErrorCode::PolicyDenied)))
            .await
            .then_expect_events(vec![InvocationEvent::Denied(refused(
                ErrorCode::PolicyDenied,
            ))]);
    }

    #[tokio::test]
    async fn denying_an_existing_invocation_is_rejected() {
        InvocationTest::with(())
            .given(vec![InvocationEvent::Denied(refused(
                ErrorCode::PolicyDenied,
            ))])
            .when_async(InvocationCommand::Deny(refused(ErrorCode::PolicyDenied)))
            .await
            .then_expect_error(InvocationError::AlreadyExists);
    }

    #[tokio::test]
    async fn rejecting_a_new_invocation_records_rejected() {
        InvocationTest::with(())
            .given_no_previous_events()
            .when_async(InvocationCommand::Reject(refused(
                ErrorCode::InvalidArgument,
            )))
            .await
            .then_expect_events(vec![InvocationEvent::Rejected(refused(
                ErrorCode::InvalidArgument,
            ))]);
    }

    #[tokio::test]
    async fn rejecting_a_queued_invocation_is_rejected() {
        InvocationTest::with(())
            .given(vec![queued()])
            .when_async(InvocationCommand::Reject(refused(
                ErrorCode::InvalidArgument,
            )))
            .await
            .then_expect_error(InvocationError::AlreadyExists);
    }

    #[tokio::test]
    async fn starting_a_queued_invocation_claims_it() {
        InvocationTest::with(())
            .given(vec![queued()])
            .when_async(InvocationCommand::Start(started()))
            .await
            .then_expect_events(vec![InvocationEvent::Started(started())]);
    }

    #[tokio::test]
    async fn starting_a_running_invocation_is_rejected_so_it_never_runs_twice() {
        InvocationTest::with(())
            .given(vec![queued(), InvocationEvent::Started(started())])
            .when_async(InvocationCommand::Start(started()))
            .await
            .then_expect_error(InvocationError::NotQueued(InvocationStatus::Running));
    }

    #[tokio::test]
    async fn starting_a_denied_invocation_is_rejected() {
        InvocationTest::with(())
            .given(vec![InvocationEvent::Denied(refused(
                ErrorCode::PolicyDenied,
            ))])
            .when_async(InvocationCommand::Start(started()))
            .await
            .then_expect_error(InvocationError::NotQueued(InvocationStatus::Denied));
    }

    #[tokio::test]
    async fn starting_an_unknown_invocation_is_rejected() {
        InvocationTest::with(())
            .given_no_previous_events()
            .when_async(InvocationCommand::Start(started()))
            .await
            .then_expect_error(InvocationError::NotFound);
    }

    #[tokio::test]
    async fn completing_a_running_invocation_records_its_outcome() {
        for outcome in [InvocationOutcome::Succeeded, InvocationOutcome::Failed] {
            InvocationTest::with(())
                .given(vec![queued(), InvocationEvent::Started(started())])
                .when_async(InvocationCommand::Complete(completed(outcome)))
                .await
                .then_expect_events(vec![InvocationEvent::Completed(completed(outcome))]);
        }
    }

    #[tokio::test]
    async fn a_queued_invocation_can_fail_without_running() {
        InvocationTest::with(())
            .given(vec![queued()])
            .when_async(InvocationCommand::Complete(completed(
                InvocationOutcome::Failed,
            )))
            .await
            .then_expect_events(vec![InvocationEvent::Completed(completed(
                InvocationOutcome::Failed,
            ))]);
    }

    #[tokio::test]
    async fn abandoning_a_queued_invocation_fails_it() {
        InvocationTest::with(())
            .given(vec![queued()])
            .when_async(InvocationCommand::Abandon(completed(
                InvocationOutcome::Failed,
            )))
            .await
            .then_expect_events(vec![InvocationEvent::Completed(completed(
                InvocationOutcome::Failed,
            ))]);
    }

    #[tokio::test]
    async fn abandoning_a_claimed_invocation_is_rejected_so_a_late_dispatch_never_ends_a_run() {
        InvocationTest::with(())
            .given(vec![queued(), InvocationEvent::Started(started())])
            .when_async(InvocationCommand::Abandon(completed(
                InvocationOutcome::Failed,
            )))
            .await
            .then_expect_error(InvocationError::NotQueued(InvocationStatus::Running));
    }

    #[tokio::test]
    async fn abandoning_with_success_is_rejected() {
        InvocationTest::with(())
            .given(vec![queued()])
            .when_async(InvocationCommand::Abandon(completed(
                InvocationOutcome::Succeeded,
            )))
            .await
            .then_expect_error(InvocationError::CannotComplete(InvocationStatus::Queued));
    }

    #[tokio::test]
    async fn a_queued_invocation_cannot_succeed_without_running() {
        InvocationTest::with(())
            .given(vec![queued()])
            .when_async(InvocationCommand::Complete(completed(
                InvocationOutcome::Succeeded,
            )))
            .await
            .then_expect_error(InvocationError::CannotComplete(InvocationStatus::Queued));
    }

    #[tokio::test]
    async fn completing_a_completed_invocation_is_rejected_so_there_is_one_outcome() {
        InvocationTest::with(())
            .given(vec![
                queued(),
                InvocationEvent::Started(started()),
                InvocationEvent::Completed(completed(InvocationOutcome::Succeeded)),
            ])
            .when_async(InvocationCommand::Complete(completed(
                InvocationOutcome::Failed,
            )))
            .await
            .then_expect_error(InvocationError::CannotComplete(InvocationStatus::Succeeded));
    }

    #[tokio::test]
    async fn completing_an_unknown_invocation_is_rejected() {
        InvocationTest::with(())
            .given_no_previous_events()
            .when_async(InvocationCommand::Complete(completed(
                InvocationOutcome::Failed,
            )))
            .await
            .then_expect_error(InvocationError::NotFound);
    }

    #[tokio::test]
    async fn queueing_an_interrupted_invocation_again_is_rejected_so_it_never_reruns() {
        // ADR 0003: its correlation id keeps naming the interrupted invocation, whose effect
        // may have happened; a new attempt needs a new correlation id.
        let interrupted = Arc::new(InvocationCompleted {
            exit_code: None,
            duration_ns: 0,
            output: None,
            error: Some(ErrorInfo {
                code: ErrorCode::Interrupted.into(),
                message: "outcome unknown".into(),
                retryable: true,
            }),
            ..(*completed(InvocationOutcome::Failed)).clone()
        });
        InvocationTest::with(())
            .given(vec![
                queued(),
                InvocationEvent::Started(started()),
                InvocationEvent::Completed(interrupted),
            ])
            .when_async(queue())
            .await
            .then_expect_error(InvocationError::AlreadyExists);
    }
}
