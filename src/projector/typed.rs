//! Typed events handed from the writers of this process to the projector.
//!
//! A writer (API, executor, session manager) holds each event it appends in typed form; the
//! projector would otherwise decode the same event back from its JSON, which was the largest
//! single cost of folding an invocation into the read model. After a successful append the
//! writer offers its events here by global sequence, and the projector takes the one matching
//! each event it applies from the log. The log stays the source of truth: the projector still
//! reads every event from it, in order, and decodes whatever it is not offered (events of other
//! processes, a restart's replay, an offer that came late).
//!
//! Bounded: an offer for a sequence the projector has passed is dropped, taking a sequence
//! drops every older entry, and at most [`CAPACITY`] events wait.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use workspace_projections::TypedEvent;

/// Most events kept waiting for the projector.
pub const CAPACITY: usize = 4096;

/// Typed events by global sequence, waiting for the projector.
#[derive(Debug, Default)]
pub struct TypedEvents {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    waiting: BTreeMap<u64, TypedEvent>,
    /// The last sequence the projector asked for: older offers are stale.
    passed: u64,
}

impl TypedEvents {
    /// Offers `events`, appended at sequences `first_sequence..`.
    pub fn offer<E: Into<TypedEvent>>(&self, first_sequence: u64, events: Vec<E>) {
        let mut state = self.lock();
        for (sequence, event) in (first_sequence..).zip(events) {
            if sequence <= state.passed || state.waiting.len() >= CAPACITY {
                continue;
            }
            state.waiting.insert(sequence, event.into());
        }
    }

    /// A taker for one pass of the projector over events in increasing sequence order.
    pub fn taker(&self) -> Taker<'_> {
        Taker { state: self.lock() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned map is still a valid map.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

/// Holds the lock for one pass of the projector.
pub struct Taker<'a> {
    state: MutexGuard<'a, State>,
}

impl Taker<'_> {
    /// The typed event offered for `sequence`, if any; forgets everything older.
    pub fn take(&mut self, sequence: u64) -> Option<TypedEvent> {
        let state = &mut *self.state;
        state.passed = state.passed.max(sequence);
        while let Some(entry) = state.waiting.first_entry() {
            if *entry.key() >= sequence {
                break;
            }
            entry.remove();
        }
        state.waiting.remove(&sequence)
    }
}

#[cfg(test)]
mod tests {
    use workspace_events::{CloseReason, SessionClosed, SessionEvent};

    use super::*;

    fn closed() -> SessionEvent {
        SessionEvent::Closed(SessionClosed {
            reason: CloseReason::Requested,
            closed_at: time::OffsetDateTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn an_offered_event_is_taken_once_and_older_ones_are_forgotten() {
        let typed = TypedEvents::default();
        typed.offer(5, vec![closed(), closed()]);
        typed.offer(9, vec![closed()]);
        let mut taker = typed.taker();
        assert_eq!(taker.take(4), None);
        assert!(taker.take(6).is_some(), "5 was skipped, 6 is there");
        assert_eq!(taker.take(6), None, "taken once");
        drop(taker);
        assert_eq!(typed.waiting(), 1, "5 was forgotten when 6 was taken");
        // The projector has passed 6: a late offer for it is dropped.
        typed.offer(6, vec![closed()]);
        assert_eq!(typed.waiting(), 1);
        assert!(typed.taker().take(9).is_some());
        assert_eq!(typed.waiting(), 0);
    }

    #[test]
    fn offers_beyond_capacity_are_dropped() {
        let typed = TypedEvents::default();
        typed.offer(1, vec![closed(); CAPACITY + 10]);
        assert_eq!(typed.waiting(), CAPACITY);
    }
}
