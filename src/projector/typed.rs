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
//! Offers are keyed by event id and made before the append, because the projector may apply
//! an event as soon as it is committed, before its writer hears back. A writer whose append
//! fails withdraws its offer. Bounded: when [`CAPACITY`] events wait (offers left behind by
//! cancelled appends), the map is emptied and those events are decoded instead.

use std::sync::{Mutex, MutexGuard, PoisonError};

use foldhash::HashMap;
use ulid::Ulid;
use workspace_projections::TypedEvent;

use crate::eventstore::aggregate_store::AppendObserver;

/// Most events kept waiting for the projector.
pub const CAPACITY: usize = 4096;

/// Typed events by event id, waiting for the projector.
#[derive(Debug, Default)]
pub struct TypedEvents {
    waiting: Mutex<HashMap<Ulid, TypedEvent>>,
}

impl<E: Into<TypedEvent>> AppendObserver<E> for TypedEvents {
    fn offer(&self, ids: &[Ulid], events: Vec<E>) {
        TypedEvents::offer(self, ids, events);
    }

    fn withdraw(&self, ids: &[Ulid]) {
        TypedEvents::withdraw(self, ids);
    }
}

impl TypedEvents {
    /// Offers `events`, about to be appended with the event ids `ids` (in the same order).
    pub fn offer<E: Into<TypedEvent>>(&self, ids: &[Ulid], events: Vec<E>) {
        let mut waiting = self.lock();
        if waiting.len() + ids.len() > CAPACITY {
            waiting.clear();
        }
        for (id, event) in ids.iter().zip(events) {
            waiting.insert(*id, event.into());
        }
    }

    /// Takes back the offer of events whose append failed.
    pub fn withdraw(&self, ids: &[Ulid]) {
        let mut waiting = self.lock();
        for id in ids {
            waiting.remove(id);
        }
    }

    /// The typed event offered for each id, in order (each taken once), under one lock.
    pub fn take_all<'a>(&self, ids: impl IntoIterator<Item = &'a Ulid>) -> Vec<Option<TypedEvent>> {
        let mut waiting = self.lock();
        ids.into_iter()
            .map(|id| {
                if waiting.is_empty() {
                    None
                } else {
                    waiting.remove(id)
                }
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Ulid, TypedEvent>> {
        // Nothing panics while holding the lock; a poisoned map is still a valid map.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().len()
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
    fn an_offered_event_is_taken_once_and_a_withdrawn_one_not_at_all() {
        let typed = TypedEvents::default();
        let ids: Vec<Ulid> = (1..=3).map(|n| Ulid::from_parts(n, n as u128)).collect();
        typed.offer(&ids[..2], vec![closed(), closed()]);
        typed.offer(&ids[2..], vec![closed()]);
        typed.withdraw(&ids[1..2]);
        let taken = typed.take_all([&ids[0], &ids[0], &ids[1], &ids[2]]);
        assert!(taken[0].is_some());
        assert_eq!(taken[1], None, "taken once");
        assert_eq!(taken[2], None, "withdrawn");
        assert!(taken[3].is_some());
        assert_eq!(typed.waiting(), 0);
    }

    #[test]
    fn offers_left_behind_never_grow_beyond_capacity() {
        let typed = TypedEvents::default();
        for n in 0..(CAPACITY as u64 + 10) {
            typed.offer(&[Ulid::from_parts(n, 1)], vec![closed()]);
            assert!(typed.waiting() <= CAPACITY);
        }
        assert!(typed.waiting() > 0);
    }
}
