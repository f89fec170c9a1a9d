//! The statuses of sessions and invocations, as views and the API show them. Each is the
//! status an aggregate's events lead to ([`crate::SessionEvent::status`],
//! [`crate::InvocationEvent::status`]); what "terminal" means is said here, once.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::invocation::InvocationOutcome;

/// Where an invocation is in its lifecycle: `queued` → `running` → `succeeded` | `failed`, or
/// `denied` / `failed` (rejected) before anything ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationStatus {
    /// Accepted; waiting for an executor.
    Queued,
    /// An executor runs it.
    Running,
    /// Done, successfully. Terminal.
    Succeeded,
    /// Done, unsuccessfully, or rejected before running. Terminal.
    Failed,
    /// Refused by policy, approval, quota or ownership; never ran (or a tool refused it at run
    /// time). Terminal.
    Denied,
}

impl InvocationStatus {
    /// Every status, for documentation and exhaustive tests.
    pub const ALL: [InvocationStatus; 5] = [
        InvocationStatus::Queued,
        InvocationStatus::Running,
        InvocationStatus::Succeeded,
        InvocationStatus::Failed,
        InvocationStatus::Denied,
    ];

    /// Whether the invocation reached a state it never leaves: no event follows in its
    /// aggregate.
    pub fn is_terminal(self) -> bool {
        match self {
            InvocationStatus::Queued | InvocationStatus::Running => false,
            InvocationStatus::Succeeded | InvocationStatus::Failed | InvocationStatus::Denied => {
                true
            }
        }
    }

    /// The status as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationStatus::Queued => "queued",
            InvocationStatus::Running => "running",
            InvocationStatus::Succeeded => "succeeded",
            InvocationStatus::Failed => "failed",
            InvocationStatus::Denied => "denied",
        }
    }
}

impl From<InvocationOutcome> for InvocationStatus {
    fn from(outcome: InvocationOutcome) -> Self {
        match outcome {
            InvocationOutcome::Succeeded => InvocationStatus::Succeeded,
            InvocationOutcome::Failed => InvocationStatus::Failed,
            InvocationOutcome::Denied => InvocationStatus::Denied,
        }
    }
}

impl fmt::Display for InvocationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a session is in its lifecycle: `provisioning` → `ready` | `failed` → `closed` |
/// `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Created; the workspace is being prepared.
    Provisioning,
    /// Tools can run.
    Ready,
    /// Provisioning failed. Terminal; it can still be closed.
    Failed,
    /// Closed by a caller. Terminal.
    Closed,
    /// Closed because it expired. Terminal.
    Expired,
}

impl SessionStatus {
    /// Every status, for documentation and exhaustive tests.
    pub const ALL: [SessionStatus; 5] = [
        SessionStatus::Provisioning,
        SessionStatus::Ready,
        SessionStatus::Failed,
        SessionStatus::Closed,
        SessionStatus::Expired,
    ];

    /// Whether the session has ended: no tool ever runs in it again and its sandbox and
    /// workspace are gone. A `failed` session is terminal although closing it still changes
    /// its status (to `closed` or `expired`, both terminal).
    pub fn is_terminal(self) -> bool {
        match self {
            SessionStatus::Provisioning | SessionStatus::Ready => false,
            SessionStatus::Failed | SessionStatus::Closed | SessionStatus::Expired => true,
        }
    }

    /// Whether the session was closed (by a caller or by expiry): closing it again is refused.
    pub fn is_closed(self) -> bool {
        matches!(self, SessionStatus::Closed | SessionStatus::Expired)
    }

    /// The status as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Provisioning => "provisioning",
            SessionStatus::Ready => "ready",
            SessionStatus::Failed => "failed",
            SessionStatus::Closed => "closed",
            SessionStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_wire_name() {
        for status in InvocationStatus::ALL {
            let wire = serde_json::to_string(&status).unwrap();
            assert_eq!(wire, format!("\"{}\"", status.as_str()));
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(
                serde_json::from_str::<InvocationStatus>(&wire).unwrap(),
                status
            );
        }
        for status in SessionStatus::ALL {
            let wire = serde_json::to_string(&status).unwrap();
            assert_eq!(wire, format!("\"{}\"", status.as_str()));
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(
                serde_json::from_str::<SessionStatus>(&wire).unwrap(),
                status
            );
        }
    }

    #[test]
    fn the_wire_names_are_the_ones_views_have_always_had() {
        let names = |all: &[&'static str]| all.join(",");
        assert_eq!(
            names(&InvocationStatus::ALL.map(InvocationStatus::as_str)),
            "queued,running,succeeded,failed,denied"
        );
        assert_eq!(
            names(&SessionStatus::ALL.map(SessionStatus::as_str)),
            "provisioning,ready,failed,closed,expired"
        );
        assert!(serde_json::from_str::<InvocationStatus>("\"new\"").is_err());
    }

    #[test]
    fn terminal_statuses() {
        use InvocationStatus as I;
        use SessionStatus as S;
        let invocations = [
            (I::Queued, false),
            (I::Running, false),
            (I::Succeeded, true),
            (I::Failed, true),
            (I::Denied, true),
        ];
        assert_eq!(invocations.map(|(s, _)| s), I::ALL);
        for (status, terminal) in invocations {
            assert_eq!(status.is_terminal(), terminal, "{status}");
        }
        let sessions = [
            (S::Provisioning, false, false),
            (S::Ready, false, false),
            (S::Failed, true, false),
            (S::Closed, true, true),
            (S::Expired, true, true),
        ];
        assert_eq!(sessions.map(|(s, _, _)| s), S::ALL);
        for (status, terminal, closed) in sessions {
            assert_eq!(
                (status.is_terminal(), status.is_closed()),
                (terminal, closed),
                "{status}"
            );
        }
    }

    #[test]
    fn an_outcome_is_the_terminal_status_of_the_same_name() {
        for outcome in [
            InvocationOutcome::Succeeded,
            InvocationOutcome::Failed,
            InvocationOutcome::Denied,
        ] {
            let status = InvocationStatus::from(outcome);
            assert!(status.is_terminal());
            assert_eq!(status.as_str(), outcome.as_str());
        }
    }
}
