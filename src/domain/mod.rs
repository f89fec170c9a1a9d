//! The domain: the session and invocation aggregates (cqrs-es 0.5), as pure state machines.
//!
//! `handle` decides and writes events through the sink; `apply` only assigns. Clocks, ids and
//! policy decisions arrive inside commands, so the aggregates do no IO and every command and
//! rejection has a given/when/then test beside it.

pub mod invocation;
pub mod session;

pub use invocation::{Invocation, InvocationCommand, InvocationError, InvocationStatus};
pub use session::{Session, SessionCommand, SessionError, SessionStatus};
