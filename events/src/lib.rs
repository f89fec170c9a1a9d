//! The event contract of the workspace execution service.
//!
//! Every state change of a workspace session or a tool invocation is an event. Events are the
//! source of truth: the embedded log and the JetStream stream store them, projections and outside
//! subscribers read them. This crate is that contract and nothing else: the envelope every event
//! travels in, the typed payloads and their schema versions, the upcasters that turn old versions
//! into current ones, and the subject and header names. It does no IO.
//!
//! Rules of the contract:
//! - a shipped `(event_type, schema_version)` pair never changes shape; a change adds a version,
//!   an upcaster from the previous one and a golden fixture (`tests/fixtures/`);
//! - event type names are past tense, `<aggregate>.<what happened>`;
//! - payloads stay small: large tool output, logs and arguments travel as [`ArtifactRef`]s.
#![deny(missing_docs)]

mod common;
mod contract;
mod envelope;
mod error_code;
mod invocation;
pub mod json;
mod raw_json;
pub mod rfc3339;
mod session;
mod status;
pub mod subjects;
pub mod upcast;

pub use common::{ArtifactMeta, ArtifactRef, ErrorInfo, LogChannel, LogLine, Principal};
pub use contract::{DecodeError, EventContract};
pub use envelope::{Actor, AggregateType, EventEnvelope, RecordedEvent};
pub use error_code::{Code, ErrorCode, UnknownCode};
pub use invocation::{
    InvocationCompleted, InvocationEvent, InvocationOutcome, InvocationQueued, InvocationRefused,
    InvocationRequest, InvocationStarted,
};
pub use raw_json::RawJson;
pub use session::{
    CloseReason, RunnerRemovedReason, RuntimeRef, SessionClosed, SessionCreated, SessionEvent,
    SessionProvisioned, SessionProvisioningFailed, SessionRunnerRemoved, WorkspaceSource,
};
pub use status::{InvocationStatus, SessionStatus};
