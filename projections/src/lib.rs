//! Read models of the workspace execution service: the view types served by every GET, the pure
//! functions that fold events into them, and the in-memory store of the embedded mode.
//!
//! Projections are idempotent: an event is applied only when its aggregate version is newer than
//! the view's, and the model records the global sequence it has applied up to (its checkpoint),
//! so a restart, a replay from sequence 0 or a redelivery converges to the same state. A read
//! model is disposable: rebuild it by replaying the log.

mod model;
mod views;

pub use model::{Applied, MemoryReadModel, ReadModel, TypedEvent};
pub use views::{InvocationView, SessionView};
