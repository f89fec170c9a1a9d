//! The in-memory view of the published log, shared by the writer (the only mutator) and readers:
//! sequence → file offset, aggregate → its sequences, and a cache of the most recent events.
//! It never holds bytes that are not yet written and synced per policy: the writer pushes a batch
//! only after the batch is in the file.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Arc;

use workspace_events::{AggregateType, RecordedEvent};

use super::pauseless::{ChunkedVec, ShardedMap};

/// A run of consecutive sequences stored back to back in the file: one positioned read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    /// Sequence of the first record of the run.
    pub first_sequence: u64,
    /// Number of records.
    pub count: usize,
    /// File offset of the first record's header.
    pub start: u64,
    /// File offset just past the last record.
    pub end: u64,
}

/// What a read needs: runs to read from the file (all older than the cached part), then cached
/// events, in order.
#[derive(Debug, Default)]
pub(super) struct ReadPlan {
    pub disk: Vec<Span>,
    pub cached: Vec<Arc<RecordedEvent>>,
}

#[derive(Debug)]
pub(super) struct Index {
    /// `offsets[s - 1]` is where record `s` starts; the length is the head sequence.
    offsets: ChunkedVec<u64>,
    /// File length covered by published records (the next record's offset).
    end: u64,
    /// Every aggregate's sequences in version order. Versions start at 1 without gaps, so an
    /// aggregate's current version is the length of its list.
    aggregates: HashMap<AggregateType, ShardedMap<String, Vec<u64>>>,
    /// The last `cache_capacity` events: sequences `head - cache.len() + 1 ..= head`.
    cache: VecDeque<Arc<RecordedEvent>>,
    cache_capacity: usize,
}

impl Index {
    pub fn new(cache_capacity: usize) -> Self {
        Self {
            offsets: ChunkedVec::default(),
            end: 0,
            aggregates: HashMap::default(),
            cache: VecDeque::with_capacity(cache_capacity.min(1 << 16)),
            cache_capacity,
        }
    }

    /// Sequence of the last published event (0 when empty).
    pub fn head(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// File length covered by published records.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The aggregate's sequences in version order.
    pub fn sequences(&self, aggregate_type: AggregateType, aggregate_id: &str) -> &[u64] {
        self.aggregates
            .get(&aggregate_type)
            .and_then(|ids| ids.get(aggregate_id))
            .map_or(&[], Vec::as_slice)
    }

    /// The aggregate's current version (0 for an unknown aggregate).
    pub fn version(&self, aggregate_type: AggregateType, aggregate_id: &str) -> u64 {
        self.sequences(aggregate_type, aggregate_id).len() as u64
    }

    /// Publishes the next event, stored at the current end and `record_len` bytes long. Callers
    /// (recovery and the writer) have already checked that its sequence is `head + 1` and its
    /// aggregate version is the aggregate's current version + 1. Returns the event this pushed
    /// out of the tail cache, for the caller to free where it likes.
    pub fn push(
        &mut self,
        record_len: u64,
        event: Arc<RecordedEvent>,
    ) -> Option<Arc<RecordedEvent>> {
        debug_assert_eq!(event.sequence, self.head() + 1);
        self.offsets.push(self.end);
        self.end += record_len;
        let envelope = &event.envelope;
        let ids = self.aggregates.entry(envelope.aggregate_type).or_default();
        match ids.get_mut(envelope.aggregate_id.as_str()) {
            Some(sequences) => sequences.push(event.sequence),
            None => {
                ids.insert(envelope.aggregate_id.clone(), vec![event.sequence]);
            }
        }
        if self.cache_capacity == 0 {
            return Some(event);
        }
        let evicted = if self.cache.len() == self.cache_capacity {
            self.cache.pop_front()
        } else {
            None
        };
        self.cache.push_back(event);
        evicted
    }

    /// Sequence of the oldest cached event (`head + 1` when the cache is empty).
    fn cache_first(&self) -> u64 {
        self.head() + 1 - self.cache.len() as u64
    }

    fn cached(&self, sequence: u64) -> Option<&Arc<RecordedEvent>> {
        let at = sequence.checked_sub(self.cache_first())?;
        self.cache.get(usize::try_from(at).ok()?)
    }

    /// Where record `sequence` (1..=head) lies in the file.
    fn bounds(&self, sequence: u64) -> (u64, u64) {
        let at = (sequence - 1) as usize;
        // Every published sequence has an offset; the record after the last ends at `end`.
        let start = self.offsets.get(at).unwrap_or(self.end);
        let end = self.offsets.get(at + 1).unwrap_or(self.end);
        (start, end)
    }

    /// Plans `read_from(after, limit)`.
    pub fn plan_range(&self, after: u64, limit: usize) -> ReadPlan {
        let head = self.head();
        if after >= head || limit == 0 {
            return ReadPlan::default();
        }
        let last = head.min(after.saturating_add(limit as u64));
        let first = after + 1;
        let cache_first = self.cache_first();
        let mut plan = ReadPlan::default();
        if first < cache_first {
            let disk_last = last.min(cache_first - 1);
            plan.disk.push(Span {
                first_sequence: first,
                count: (disk_last - first + 1) as usize,
                start: self.bounds(first).0,
                end: self.bounds(disk_last).1,
            });
        }
        plan.cached = (first.max(cache_first)..=last)
            .filter_map(|s| self.cached(s).cloned())
            .collect();
        plan
    }

    /// Plans `load(aggregate)`: consecutive sequences (events appended together) become one run.
    pub fn plan_aggregate(&self, aggregate_type: AggregateType, aggregate_id: &str) -> ReadPlan {
        let mut plan = ReadPlan::default();
        for &sequence in self.sequences(aggregate_type, aggregate_id) {
            if let Some(event) = self.cached(sequence) {
                plan.cached.push(event.clone());
                continue;
            }
            let (start, end) = self.bounds(sequence);
            match plan.disk.last_mut() {
                Some(run) if run.first_sequence + run.count as u64 == sequence => {
                    run.count += 1;
                    run.end = end;
                }
                _ => plan.disk.push(Span {
                    first_sequence: sequence,
                    count: 1,
                    start,
                    end,
                }),
            }
        }
        plan
    }
}
