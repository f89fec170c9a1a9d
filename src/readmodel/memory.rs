//! [`MemoryStore`]: the read models in process memory (embedded mode), with the same rules as
//! the Valkey store: put-if-newer under one write lock, the checkpoint moved with its batch,
//! retention of terminal views, rebuild then switch.
//!
//! Views are shared (`Arc`): a reader takes one without copying it, and a batch copies a view
//! only while a reader still holds it (the views are moved out of the maps while folding).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::HashMap;
use tokio::sync::watch;
use workspace_events::upcast::{self, Upcaster};
use workspace_events::{AggregateType, RecordedEvent};
use workspace_projections::{Applied, InvocationView, SessionView, TypedEvent};

use super::{
    Change, Page, ReadModelError, ReadModelStore, Rebuild, Retention, correlation_key, deadline,
    fold, now_ms, unix_ms,
};

/// The read models in memory.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: RwLock<State>,
    checkpoint: watch::Sender<u64>,
    retention: Retention,
    upcasters: Vec<Box<dyn Upcaster>>,
    /// The earliest retention deadline held (`i64::MAX` when none): readers evict only once it
    /// has passed, and otherwise never take the write lock.
    next_deadline: AtomicI64,
}

#[derive(Default)]
struct State {
    /// Bumped by every activated rebuild.
    generation: u64,
    checkpoint: u64,
    sessions: HashMap<String, Kept<SessionView>>,
    invocations: HashMap<String, Kept<InvocationView>>,
    /// Per session: invocation ids by creating sequence.
    by_session: HashMap<String, BTreeMap<u64, String>>,
    /// Per (tenant, actor): session ids by creating sequence.
    by_principal: HashMap<(String, String), BTreeMap<u64, String>>,
    /// Correlation key (see `correlation_key`) to invocation id.
    by_correlation: HashMap<String, String>,
    /// Sessions not terminal, by `expires_at` (Unix ms).
    live: BTreeSet<(i64, String)>,
    /// Invocations not terminal, by creating sequence.
    open: BTreeMap<u64, String>,
    /// Terminal views by the time they leave.
    deadlines: BTreeSet<(i64, Kind, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Session,
    Invocation,
}

struct Kept<V> {
    view: Arc<V>,
    /// Sequence of the event that created the view: its place in the indexes.
    created: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Retention::default())
    }
}

impl MemoryStore {
    /// An empty store keeping terminal views for `retention`.
    pub fn new(retention: Retention) -> Self {
        MemoryStore {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                checkpoint: watch::channel(0).0,
                retention,
                upcasters: upcast::registry(),
                next_deadline: AtomicI64::new(i64::MAX),
            }),
        }
    }

    /// Runs `f` over the state once views past their retention are gone.
    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let now = now_ms();
        if now >= self.shared.next_deadline.load(Ordering::Acquire) {
            let mut state = self.shared.write();
            state.evict_due(now);
            self.shared.settle_deadline(&state);
        }
        f(&self.shared.read())
    }
}

impl Shared {
    // A poisoned lock means a panic while folding a batch (a bug in the pure apply): keep
    // serving what is there; a rebuild from the log repairs it.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn settle_deadline(&self, state: &State) {
        let next = state.deadlines.first().map_or(i64::MAX, |(d, ..)| *d);
        self.next_deadline.store(next, Ordering::Release);
    }
}

impl State {
    fn evict_due(&mut self, now: i64) {
        while let Some(first) = self.deadlines.first() {
            if first.0 > now {
                break;
            }
            let Some((_, kind, id)) = self.deadlines.pop_first() else {
                break;
            };
            match kind {
                Kind::Invocation => self.evict_invocation(&id),
                Kind::Session => self.evict_session(&id),
            }
        }
    }

    fn evict_invocation(&mut self, id: &str) {
        let Some(kept) = self.invocations.remove(id) else {
            return;
        };
        let view = &kept.view;
        if let Some(index) = self.by_session.get_mut(&view.session_id) {
            index.remove(&kept.created);
            if index.is_empty() {
                self.by_session.remove(&view.session_id);
            }
        }
        if let Some(c) = &view.correlation_id {
            let key = correlation_key(&view.session_id, &view.tool_name, c);
            if self.by_correlation.get(&key).is_some_and(|v| v == id) {
                self.by_correlation.remove(&key);
            }
        }
        self.open.remove(&kept.created);
    }

    fn evict_session(&mut self, id: &str) {
        let Some(kept) = self.sessions.remove(id) else {
            return;
        };
        let key = principal_key(&kept.view);
        if let Some(index) = self.by_principal.get_mut(&key) {
            index.remove(&kept.created);
            if index.is_empty() {
                self.by_principal.remove(&key);
            }
        }
        self.live
            .remove(&(unix_ms(kept.view.expires_at), id.to_owned()));
    }

    fn put_session(
        &mut self,
        id: String,
        change: Change<SessionView>,
        created: u64,
        ttl: Option<Duration>,
    ) {
        let view = change.view;
        if change.created.is_some() {
            self.by_principal
                .entry(principal_key(&view))
                .or_default()
                .insert(created, id.clone());
        }
        let live = (unix_ms(view.expires_at), id.clone());
        if view.is_terminal() {
            self.live.remove(&live);
        } else {
            self.live.insert(live);
        }
        if let Some(d) = deadline(change.ended_at_ms, ttl) {
            self.deadlines.insert((d, Kind::Session, id.clone()));
        }
        self.sessions.insert(id, Kept { view, created });
    }

    fn put_invocation(
        &mut self,
        id: String,
        change: Change<InvocationView>,
        created: u64,
        ttl: Option<Duration>,
    ) {
        let view = change.view;
        if change.created.is_some() {
            match self.by_session.get_mut(&view.session_id) {
                Some(index) => index,
                None => self.by_session.entry(view.session_id.clone()).or_default(),
            }
            .insert(created, id.clone());
            if let Some(c) = &view.correlation_id {
                self.by_correlation.insert(
                    correlation_key(&view.session_id, &view.tool_name, c),
                    id.clone(),
                );
            }
        }
        if view.is_terminal() {
            self.open.remove(&created);
        } else {
            self.open.entry(created).or_insert_with(|| id.clone());
        }
        if let Some(d) = deadline(change.ended_at_ms, ttl) {
            self.deadlines.insert((d, Kind::Invocation, id.clone()));
        }
        self.invocations.insert(id, Kept { view, created });
    }
}

fn principal_key(view: &SessionView) -> (String, String) {
    (
        view.principal.tenant_id.clone(),
        view.principal.actor_id.clone(),
    )
}

fn page<V>(
    index: Option<&BTreeMap<u64, String>>,
    views: &HashMap<String, Kept<V>>,
    offset: usize,
    limit: usize,
) -> Page<V> {
    let Some(index) = index else {
        return Page {
            items: Vec::new(),
            total: 0,
        };
    };
    Page {
        items: index
            .values()
            .rev()
            .skip(offset)
            .take(limit)
            .filter_map(|id| views.get(id).map(|k| k.view.clone()))
            .collect(),
        total: index.len(),
    }
}

#[async_trait]
impl ReadModelStore for MemoryStore {
    async fn session(&self, id: &str) -> Result<Option<Arc<SessionView>>, ReadModelError> {
        Ok(self.read(|s| s.sessions.get(id).map(|k| k.view.clone())))
    }

    async fn invocation(&self, id: &str) -> Result<Option<Arc<InvocationView>>, ReadModelError> {
        Ok(self.read(|s| s.invocations.get(id).map(|k| k.view.clone())))
    }

    async fn invocation_by_correlation(
        &self,
        session_id: &str,
        tool_name: &str,
        correlation_id: &str,
    ) -> Result<Option<Arc<InvocationView>>, ReadModelError> {
        let key = correlation_key(session_id, tool_name, correlation_id);
        Ok(self.read(|s| {
            let id = s.by_correlation.get(&key)?;
            s.invocations.get(id).map(|k| k.view.clone())
        }))
    }

    async fn session_invocations(
        &self,
        session_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Page<InvocationView>, ReadModelError> {
        Ok(self.read(|s| page(s.by_session.get(session_id), &s.invocations, offset, limit)))
    }

    async fn principal_sessions(
        &self,
        tenant_id: &str,
        actor_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Page<SessionView>, ReadModelError> {
        let key = (tenant_id.to_owned(), actor_id.to_owned());
        Ok(self.read(|s| page(s.by_principal.get(&key), &s.sessions, offset, limit)))
    }

    async fn live_sessions(&self) -> Result<Vec<Arc<SessionView>>, ReadModelError> {
        Ok(self.read(|s| {
            s.live
                .iter()
                .filter_map(|(_, id)| s.sessions.get(id).map(|k| k.view.clone()))
                .collect()
        }))
    }

    async fn sessions_due(
        &self,
        now: time::OffsetDateTime,
    ) -> Result<Vec<Arc<SessionView>>, ReadModelError> {
        let now = unix_ms(now);
        Ok(self.read(|s| {
            s.live
                .iter()
                .take_while(|(expires, _)| *expires <= now)
                .filter_map(|(_, id)| s.sessions.get(id).map(|k| k.view.clone()))
                .collect()
        }))
    }

    async fn open_invocations(&self) -> Result<Vec<Arc<InvocationView>>, ReadModelError> {
        Ok(self.read(|s| {
            s.open
                .values()
                .filter_map(|id| s.invocations.get(id).map(|k| k.view.clone()))
                .collect()
        }))
    }

    async fn apply(
        &self,
        after: u64,
        events: &[Arc<RecordedEvent>],
        typed: Vec<Option<TypedEvent>>,
    ) -> Result<Vec<Applied>, ReadModelError> {
        let shared = &self.shared;
        let now = now_ms();
        let mut state = shared.write();
        state.evict_due(now);
        if state.checkpoint < after {
            return Err(ReadModelError::Gap {
                after,
                checkpoint: state.checkpoint,
            });
        }
        // The views the batch touches are moved out while it folds (no copy) and put back; their
        // keys wait beside their places in the indexes, to be put back without a copy either.
        // (An aggregate's later events find its view moved out already: no set of ids needed.)
        let mut session_places = HashMap::<String, u64>::default();
        let mut invocation_places =
            HashMap::<String, u64>::with_capacity_and_hasher(events.len(), Default::default());
        let (mut sessions, mut invocations) = (Vec::new(), Vec::with_capacity(events.len()));
        for event in events {
            let id = event.envelope.aggregate_id.as_str();
            match event.envelope.aggregate_type {
                AggregateType::Session => {
                    if let Some((key, k)) = state.sessions.remove_entry(id) {
                        session_places.insert(key, k.created);
                        sessions.push(k.view);
                    }
                }
                AggregateType::Invocation => {
                    if let Some((key, k)) = state.invocations.remove_entry(id) {
                        invocation_places.insert(key, k.created);
                        invocations.push(k.view);
                    }
                }
            }
        }
        let checkpoint = state.checkpoint;
        let mut folded = fold(
            &shared.upcasters,
            checkpoint,
            sessions,
            invocations,
            events,
            typed,
        );
        // A view's key and place: those it had, or a new key and the place the batch gave it.
        fn place(places: &mut HashMap<String, u64>, id: &str, new: Option<u64>) -> (String, u64) {
            match places.remove_entry(id) {
                Some(kept) => kept,
                None => (id.to_owned(), new.unwrap_or_default()),
            }
        }
        for view in std::mem::take(&mut folded.untouched_sessions) {
            let (key, created) = place(&mut session_places, &view.id, None);
            state.sessions.insert(key, Kept { view, created });
        }
        for view in std::mem::take(&mut folded.untouched_invocations) {
            let (key, created) = place(&mut invocation_places, &view.id, None);
            state.invocations.insert(key, Kept { view, created });
        }
        for change in std::mem::take(&mut folded.sessions) {
            let (key, created) = place(&mut session_places, &change.view.id, change.created);
            state.put_session(key, change, created, shared.retention.sessions);
        }
        for change in std::mem::take(&mut folded.invocations) {
            let (key, created) = place(&mut invocation_places, &change.view.id, change.created);
            state.put_invocation(key, change, created, shared.retention.invocations);
        }
        state.checkpoint = state.checkpoint.max(folded.last);
        // A replay of old events writes views that ended longer ago than their retention.
        state.evict_due(now);
        shared.settle_deadline(&state);
        let checkpoint = state.checkpoint;
        drop(state);
        shared.checkpoint.send_if_modified(|c| {
            let newer = checkpoint > *c;
            if newer {
                *c = checkpoint;
            }
            newer
        });
        Ok(folded.applied)
    }

    async fn checkpoint(&self) -> Result<u64, ReadModelError> {
        Ok(self.shared.read().checkpoint)
    }

    async fn wait_for(&self, sequence: u64, timeout: Duration) -> Result<bool, ReadModelError> {
        let mut rx = self.shared.checkpoint.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= sequence)).await;
        Ok(matches!(reached, Ok(Ok(_))))
    }

    async fn rebuild(&self) -> Result<Box<dyn Rebuild>, ReadModelError> {
        Ok(Box::new(MemoryRebuild {
            generation: self.shared.read().generation,
            target: self.shared.clone(),
            fresh: MemoryStore::new(self.shared.retention),
        }))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    /// Always answers: the views are in this process.
    async fn ping(&self) -> Result<(), ReadModelError> {
        Ok(())
    }
}

struct MemoryRebuild {
    target: Arc<Shared>,
    /// The target's generation when the rebuild began.
    generation: u64,
    fresh: MemoryStore,
}

#[async_trait]
impl Rebuild for MemoryRebuild {
    fn store(&self) -> Arc<dyn ReadModelStore> {
        Arc::new(self.fresh.clone())
    }

    fn generation(&self) -> u64 {
        self.generation + 1
    }

    async fn activate(&self) -> Result<(), ReadModelError> {
        let mut active = self.target.write();
        let mut fresh = self.fresh.shared.write();
        if active.generation != self.generation {
            return Err(ReadModelError::Superseded);
        }
        if fresh.checkpoint < active.checkpoint {
            return Err(ReadModelError::Behind {
                rebuild: fresh.checkpoint,
                active: active.checkpoint,
            });
        }
        let mut next = std::mem::take(&mut *fresh);
        next.generation = active.generation + 1;
        let checkpoint = next.checkpoint;
        *active = next;
        self.target.settle_deadline(&active);
        drop(active);
        self.target.checkpoint.send_replace(checkpoint);
        Ok(())
    }
}
