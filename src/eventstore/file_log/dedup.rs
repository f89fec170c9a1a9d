//! The writer's event-id index for deduplication, bounded to a time window.
//!
//! A retry after a lost reply re-sends the same events (the same ids) moments later; the log
//! answers it with the original positions instead of a conflict. Keeping every id ever stored
//! made this index grow with the log (about 40–50 bytes per event, measured: the largest part of
//! what an embedded server kept per invocation once its read models expired). Like JetStream's
//! duplicate window, the log now remembers the ids of the last [`DEFAULT_WINDOW`] only.
//!
//! Forgetting an id never allows a second write: every append names the aggregate version it
//! follows, so a retry of an append that was written, arriving after the window, fails the
//! version check (`Conflict`) and writes nothing. The window only decides whether that late
//! retry is told `duplicate` or `conflict`.
//!
//! Ids are ULIDs this process generated when it decided the events, so an id's timestamp is
//! within moments of its append: the window is measured on it, and ids are expired from the
//! front of the insertion order (a clock step backwards only keeps ids a little longer).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ulid::Ulid;

use super::pauseless::ShardedMap;

/// How long the log remembers stored event ids: the JetStream store's default duplicate
/// window, so both stores answer a retry the same way.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(120);

/// Event id → sequence for the ids of the last `window`.
#[derive(Debug)]
pub(super) struct DedupWindow {
    ids: ShardedMap<Ulid, u64>,
    /// Ids in insertion order, for expiry. An id removed by a rollback stays here until it
    /// expires (removing it again is harmless).
    order: VecDeque<Ulid>,
    window_ms: u64,
}

impl DedupWindow {
    pub fn new(window: Duration) -> Self {
        Self {
            ids: ShardedMap::default(),
            order: VecDeque::new(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn get(&self, id: &Ulid) -> Option<u64> {
        self.ids.get(id).copied()
    }

    pub fn insert(&mut self, id: Ulid, sequence: u64) {
        if self.ids.insert(id, sequence).is_none() {
            self.order.push_back(id);
        }
    }

    pub fn remove(&mut self, id: &Ulid) {
        self.ids.remove(id);
    }

    /// Forgets the ids older than the window at `now_ms` (milliseconds since the Unix epoch).
    /// Returns how many it forgot.
    pub fn expire_at(&mut self, now_ms: u64) -> usize {
        let mut expired = 0;
        while let Some(front) = self.order.front() {
            if front.timestamp_ms().saturating_add(self.window_ms) >= now_ms {
                break;
            }
            self.ids.remove(front);
            self.order.pop_front();
            expired += 1;
        }
        expired
    }

    /// [`Self::expire_at`] the current time.
    pub fn expire(&mut self) -> usize {
        self.expire_at(now_ms())
    }

    /// Expires, then gives back the memory of what was forgotten: after recovery, which saw
    /// every id of the log.
    pub fn expire_and_shrink(&mut self) {
        if self.expire() > 0 {
            self.ids.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, n: u128) -> Ulid {
        Ulid::from_parts(ms, n)
    }

    #[test]
    fn ids_older_than_the_window_are_forgotten_and_newer_ones_kept() {
        let mut window = DedupWindow::new(Duration::from_secs(10));
        window.insert(id(1_000, 1), 1);
        window.insert(id(5_000, 2), 2);
        window.insert(id(12_000, 3), 3);
        assert_eq!(window.len(), 3);
        // At 11 000 ms nothing is older than 10 s.
        assert_eq!(window.expire_at(11_000), 0);
        assert_eq!(window.get(&id(1_000, 1)), Some(1));
        // At 11 001 ms the first is.
        assert_eq!(window.expire_at(11_001), 1);
        assert_eq!(window.get(&id(1_000, 1)), None);
        assert_eq!(window.get(&id(5_000, 2)), Some(2));
        assert_eq!(window.expire_at(30_000), 2);
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn a_removed_id_expires_harmlessly_and_a_reinserted_one_is_counted_once() {
        let mut window = DedupWindow::new(Duration::from_secs(1));
        window.insert(id(1_000, 1), 1);
        window.remove(&id(1_000, 1));
        assert_eq!(window.len(), 0);
        window.insert(id(1_000, 1), 4);
        window.insert(id(1_000, 1), 4);
        assert_eq!(window.len(), 1);
        assert_eq!(window.get(&id(1_000, 1)), Some(4));
        window.expire_at(10_000);
        assert_eq!(window.len(), 0);
    }
}
