//! The read-model store: where the views that serve every GET live, behind one async trait with
//! two implementations, [`MemoryStore`] (embedded mode) and [`ValkeyStore`] (distributed mode).
//!
//! Both fold a batch of events with the same pure code ([`fold`], over
//! `workspace_projections::ReadModel`) and keep the same rules, which one contract test suite
//! (`tests/it/readmodel.rs`) checks against both:
//! - **put-if-newer:** a view is written only when its aggregate version is newer than the stored
//!   one and its last event lies past the store's checkpoint, so a redelivered or replayed batch
//!   changes nothing and concurrent writers converge;
//! - **checkpoint with its batch:** the checkpoint is advanced in the same atomic step as the
//!   views of the batch it covers, and never moves back; a batch that would leave a hole
//!   ([`ReadModelError::Gap`]) is refused;
//! - **retention:** a terminal invocation or session is kept for its retention after the event
//!   that ended it (`INVOCATION_STORE_TTL_SECONDS`, `SESSION_STORE_TTL_SECONDS`), then it leaves
//!   the store and every index; the events stay in the log;
//! - **rebuild then switch:** a rebuild folds into a fresh generation that readers do not see
//!   until it is activated, atomically, and only once it has caught up with the active one.
//!
//! It never decides anything and never writes events.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use foldhash::HashMap;
use workspace_events::RecordedEvent;
use workspace_events::upcast::Upcaster;
use workspace_projections::{Applied, InvocationView, ReadModel, SessionView, TypedEvent};

use crate::error_code::ErrorCode;

mod memory;
mod valkey;

pub use memory::MemoryStore;
pub use valkey::{ValkeyConfig, ValkeyStore};

/// Errors of a read-model store.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// The store cannot be reached (connection refused or lost, timeout, server loading or
    /// read-only): retryable.
    #[error("read-model store unavailable: {source}")]
    Unavailable {
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store answered, with an error or an answer this code does not expect.
    #[error("read-model store failed: {source}")]
    Backend {
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored view could not be decoded.
    #[error("stored view {key} could not be decoded: {source}")]
    Corrupt {
        /// The view's key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The batch follows sequence `after`, but the store has applied only up to `checkpoint`:
    /// applying it would leave a hole. Read the log again from `checkpoint`.
    #[error("batch follows sequence {after} but the store has applied up to {checkpoint}")]
    Gap {
        /// Where the batch starts from.
        after: u64,
        /// The store's checkpoint.
        checkpoint: u64,
    },
    /// A rebuild was asked to take over while behind the active generation.
    #[error("rebuild at sequence {rebuild} is behind the active read model at {active}")]
    Behind {
        /// The rebuild's checkpoint.
        rebuild: u64,
        /// The active generation's checkpoint.
        active: u64,
    },
    /// Another rebuild switched generations since this one began.
    #[error("another rebuild was activated since this one began")]
    Superseded,
}

impl ReadModelError {
    /// The API error code this maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            ReadModelError::Unavailable { .. } => ErrorCode::Unavailable,
            ReadModelError::Behind { .. } | ReadModelError::Superseded => ErrorCode::Conflict,
            ReadModelError::Backend { .. }
            | ReadModelError::Corrupt { .. }
            | ReadModelError::Gap { .. } => ErrorCode::Internal,
        }
    }
}

/// One page of an index, newest first, with the index's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<V> {
    /// The views of the page.
    pub items: Vec<Arc<V>>,
    /// How many entries the index holds (terminal entries past their retention excluded).
    pub total: usize,
}

impl<V> Page<V> {
    /// The offset of the next page, if any.
    pub fn next_offset(&self, offset: usize) -> Option<usize> {
        let next = offset + self.items.len();
        (next < self.total).then_some(next)
    }
}

/// How long terminal views are kept after the event that ended them; `None` keeps them for
/// good. From `INVOCATION_STORE_TTL_SECONDS` and `SESSION_STORE_TTL_SECONDS` (seconds, ≤ 0 keeps
/// them for good).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// For succeeded, failed and denied invocations.
    pub invocations: Option<Duration>,
    /// For failed, closed and expired sessions.
    pub sessions: Option<Duration>,
}

impl Retention {
    /// The seed's default: one day each.
    pub const SEED_DEFAULT_SECONDS: i64 = 86_400;

    /// Keeps every view for good.
    pub const FOREVER: Retention = Retention {
        invocations: None,
        sessions: None,
    };

    /// From the seed's settings, in seconds; ≤ 0 keeps views for good.
    pub fn from_seconds(invocations: i64, sessions: i64) -> Self {
        let ttl = |s: i64| (s > 0).then(|| Duration::from_secs(s as u64));
        Retention {
            invocations: ttl(invocations),
            sessions: ttl(sessions),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention::from_seconds(Self::SEED_DEFAULT_SECONDS, Self::SEED_DEFAULT_SECONDS)
    }
}

/// The read models: views by id, the indexes the API and recovery read, and the checkpoint.
#[async_trait]
pub trait ReadModelStore: Send + Sync {
    /// A session view.
    async fn session(&self, id: &str) -> Result<Option<Arc<SessionView>>, ReadModelError>;

    /// An invocation view.
    async fn invocation(&self, id: &str) -> Result<Option<Arc<InvocationView>>, ReadModelError>;

    /// The invocation a client idempotency key names within a session and tool.
    async fn invocation_by_correlation(
        &self,
        session_id: &str,
        tool_name: &str,
        correlation_id: &str,
    ) -> Result<Option<Arc<InvocationView>>, ReadModelError>;

    /// A session's invocations, newest first: skip `offset`, take `limit`, plus the total.
    async fn session_invocations(
        &self,
        session_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Page<InvocationView>, ReadModelError>;

    /// A principal's sessions, newest first: skip `offset`, take `limit`, plus the total.
    async fn principal_sessions(
        &self,
        tenant_id: &str,
        actor_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Page<SessionView>, ReadModelError>;

    /// Sessions not yet terminal (`provisioning`, `ready`), soonest `expires_at` first: what the
    /// expiry sweep, start-up recovery and shutdown look at.
    async fn live_sessions(&self) -> Result<Vec<Arc<SessionView>>, ReadModelError>;

    /// The live sessions whose `expires_at` is at or before `now`, soonest first: what the
    /// expiry sweep closes.
    async fn sessions_due(
        &self,
        now: time::OffsetDateTime,
    ) -> Result<Vec<Arc<SessionView>>, ReadModelError>;

    /// Invocations not yet terminal (`queued`, `running`), oldest first: what executor recovery
    /// looks at.
    async fn open_invocations(&self) -> Result<Vec<Arc<InvocationView>>, ReadModelError>;

    /// Folds `events`, read from the log after sequence `after`, into the views: each view is
    /// written only if newer (aggregate version) and its last event lies past the checkpoint;
    /// the checkpoint moves to the batch's last sequence, atomically with the views. `typed`
    /// holds the typed form of each event when the caller has it (same order, or empty).
    /// Returns what each event did (`Skipped` where another writer got there first).
    async fn apply(
        &self,
        after: u64,
        events: &[Arc<RecordedEvent>],
        typed: Vec<Option<TypedEvent>>,
    ) -> Result<Vec<Applied>, ReadModelError>;

    /// [`ReadModelStore::apply`], also returning the views of the invocations the batch made
    /// terminal (as written), for the projector's metrics. By default they are read back
    /// after the batch; a store that folds the views itself returns them without a read.
    async fn apply_finished(
        &self,
        after: u64,
        events: &[Arc<RecordedEvent>],
        typed: Vec<Option<TypedEvent>>,
    ) -> Result<(Vec<Applied>, Vec<Arc<InvocationView>>), ReadModelError> {
        let applied = self.apply(after, events, typed).await?;
        let mut finished = Vec::new();
        for outcome in &applied {
            if let Applied::Invocation { id, status } = outcome
                && status.is_terminal()
                // A metric is not worth failing the batch for: the views are written.
                && let Ok(Some(view)) = self.invocation(id).await
            {
                finished.push(view);
            }
        }
        Ok((applied, finished))
    }

    /// The global sequence applied up to.
    async fn checkpoint(&self) -> Result<u64, ReadModelError>;

    /// Waits, at most `timeout`, until the checkpoint reaches `sequence` (read-your-writes).
    /// Returns false on timeout.
    async fn wait_for(&self, sequence: u64, timeout: Duration) -> Result<bool, ReadModelError>;

    /// Starts a rebuild into a fresh, empty generation beside the active one.
    async fn rebuild(&self) -> Result<Box<dyn Rebuild>, ReadModelError>;

    /// The announcements of every writer of this store, when it carries them across
    /// processes: the views a batch changed (invocations that finished, sessions whose status
    /// moved), so waiters in every process reading the store look at once instead of at their
    /// next poll. A store only this process reads has none: its projector wakes its waiters
    /// itself. Best effort: a lost announcement costs a waiter one poll.
    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<Announcement>> {
        None
    }

    /// The backend's name, for `/readyz` (`memory`, `valkey`).
    fn backend(&self) -> &'static str;

    /// Checks the store answers (for `/readyz`); the caller bounds how long it may take. By
    /// default a read of the checkpoint.
    async fn ping(&self) -> Result<(), ReadModelError> {
        self.checkpoint().await.map(|_| ())
    }
}

/// A view some writer of a shared store changed ([`ReadModelStore::announcements`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// This invocation finished; `view` is its view as written (JSON), when the writer sent
    /// it, so a waiter answers without reading the store.
    Invocation { id: String, view: Option<Arc<str>> },
    /// This session's status moved.
    Session(String),
}

/// A rebuild in progress: a store of its own (fold the log into it, read it to check it),
/// invisible to readers of the active store until [`Rebuild::activate`].
#[async_trait]
pub trait Rebuild: Send + Sync {
    /// The generation being built: a handle of its own, to give a [`crate::projector::Projector`]
    /// that folds the log into it (`workspace replay`).
    fn store(&self) -> Arc<dyn ReadModelStore>;

    /// The generation being built: the number the active generation becomes on activation.
    fn generation(&self) -> u64;

    /// Makes this generation the active one, atomically, and discards the previous one.
    /// Refused with [`ReadModelError::Behind`] while its checkpoint is behind the active one
    /// (catch up and try again), and with [`ReadModelError::Superseded`] when another rebuild
    /// was activated since this one began.
    async fn activate(&self) -> Result<(), ReadModelError>;
}

/// A view a batch changed, and what the store needs to write it.
#[derive(Debug, Clone)]
pub(crate) struct Change<V> {
    pub view: Arc<V>,
    /// Sequence of the last event of the batch applied to it.
    pub sequence: u64,
    /// Sequence of the event that created it, when in this batch.
    pub created: Option<u64>,
    /// When it became terminal (the time of its last event), in Unix milliseconds.
    pub ended_at_ms: Option<i64>,
    /// The batch's events applied to it, by index.
    pub events: Vec<usize>,
}

/// A batch folded onto the views it touches.
pub(crate) struct Fold {
    pub applied: Vec<Applied>,
    pub sessions: Vec<Change<SessionView>>,
    pub invocations: Vec<Change<InvocationView>>,
    /// Views loaded that the batch left as they were.
    pub untouched_sessions: Vec<Arc<SessionView>>,
    pub untouched_invocations: Vec<Arc<InvocationView>>,
    /// The batch's last sequence (or the starting checkpoint for an empty batch).
    pub last: u64,
}

impl Fold {
    /// Marks as skipped the events of changes the store did not write.
    pub fn skip(&mut self, events: &[usize]) {
        for &i in events {
            self.applied[i] = Applied::Skipped;
        }
    }
}

/// The session and invocation ids a batch touches (to load before folding).
pub(crate) fn touched(events: &[Arc<RecordedEvent>]) -> (Vec<String>, Vec<String>) {
    let (mut sessions, mut invocations) = (Vec::new(), Vec::new());
    let mut seen = foldhash::HashSet::with_capacity_and_hasher(events.len(), Default::default());
    for e in events {
        let env = &e.envelope;
        if seen.insert((env.aggregate_type, env.aggregate_id.as_str())) {
            match env.aggregate_type {
                workspace_events::AggregateType::Session => sessions.push(env.aggregate_id.clone()),
                workspace_events::AggregateType::Invocation => {
                    invocations.push(env.aggregate_id.clone())
                }
            }
        }
    }
    (sessions, invocations)
}

/// Folds `events` onto the loaded views with the embedded model's pure apply, skipping events
/// at or before `checkpoint`.
pub(crate) fn fold(
    upcasters: &[Box<dyn Upcaster>],
    checkpoint: u64,
    sessions: Vec<Arc<SessionView>>,
    invocations: Vec<Arc<InvocationView>>,
    events: &[Arc<RecordedEvent>],
    mut typed: Vec<Option<TypedEvent>>,
) -> Fold {
    #[derive(Default)]
    struct Touch {
        sequence: u64,
        created: Option<u64>,
        at_ms: i64,
        events: Vec<usize>,
    }
    let mut model = ReadModel::from_views(checkpoint, sessions, invocations);
    let mut applied = Vec::with_capacity(events.len());
    // Keyed by the events' aggregate ids: a changed view's id is its events' aggregate id.
    let mut changed_sessions: HashMap<&str, Touch> = HashMap::default();
    let mut changed_invocations: HashMap<&str, Touch> =
        HashMap::with_capacity_and_hasher(events.len(), Default::default());
    for (i, event) in events.iter().enumerate() {
        let offered = typed.get_mut(i).and_then(Option::take);
        let outcome = model.apply_with(upcasters, event, offered);
        let touch = match &outcome {
            Applied::Session { id } => Some(changed_sessions.entry(id_of(event, id)).or_default()),
            Applied::Invocation { id, .. } => {
                Some(changed_invocations.entry(id_of(event, id)).or_default())
            }
            Applied::Skipped | Applied::Rejected { .. } => None,
        };
        if let Some(t) = touch {
            t.sequence = event.sequence;
            if event.envelope.aggregate_version == 1 {
                t.created = Some(event.sequence);
            }
            t.at_ms = unix_ms(event.envelope.occurred_at);
            t.events.push(i);
        }
        applied.push(outcome);
    }
    let last = events
        .last()
        .map_or(checkpoint, |e| e.sequence.max(checkpoint));
    let (all_sessions, all_invocations) = model.into_views();
    let mut fold = Fold {
        applied,
        sessions: Vec::new(),
        invocations: Vec::new(),
        untouched_sessions: Vec::new(),
        untouched_invocations: Vec::new(),
        last,
    };
    for view in all_sessions {
        match changed_sessions.remove(view.id.as_str()) {
            Some(t) => fold.sessions.push(Change {
                ended_at_ms: view.is_terminal().then_some(t.at_ms),
                view,
                sequence: t.sequence,
                created: t.created,
                events: t.events,
            }),
            None => fold.untouched_sessions.push(view),
        }
    }
    for view in all_invocations {
        match changed_invocations.remove(view.id.as_str()) {
            Some(t) => fold.invocations.push(Change {
                ended_at_ms: view.is_terminal().then_some(t.at_ms),
                view,
                sequence: t.sequence,
                created: t.created,
                events: t.events,
            }),
            None => fold.untouched_invocations.push(view),
        }
    }
    fold
}

/// The id of the view `event` changed, borrowed from the event (`applied` is the outcome's id,
/// which is the event's aggregate id).
fn id_of<'e>(event: &'e RecordedEvent, applied: &str) -> &'e str {
    debug_assert_eq!(event.envelope.aggregate_id, applied);
    event.envelope.aggregate_id.as_str()
}

/// A time in Unix milliseconds (floored; without the 128-bit division of
/// `unix_timestamp_nanos`, which the hot path would pay per event).
pub(crate) fn unix_ms(t: time::OffsetDateTime) -> i64 {
    t.unix_timestamp()
        .saturating_mul(1000)
        .saturating_add(i64::from(t.millisecond()))
}

/// Now, in Unix milliseconds: read on every read of the memory store (to see whether a
/// retention deadline passed), so straight from the system clock, without building a date.
pub(crate) fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64)
            .saturating_mul(1000)
            .saturating_add(i64::from(d.subsec_millis())),
        Err(before) => {
            let d = before.duration();
            -((d.as_secs() as i64).saturating_mul(1000) + i64::from(d.subsec_millis()))
        }
    }
}

/// When a view that ended at `ended_at_ms` leaves the store, given its retention.
pub(crate) fn deadline(ended_at_ms: Option<i64>, ttl: Option<Duration>) -> Option<i64> {
    Some(ended_at_ms?.saturating_add(ttl?.as_millis().min(i64::MAX as u128) as i64))
}

/// URL query escaping (Go's `url.QueryEscape`, as the seed's key layout uses): keeps
/// `[A-Za-z0-9-_.~]`, writes a space as `+` and every other byte as `%XX`. Escaped, a value
/// holds no `:`, so it cannot run into the next part of a key.
pub fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
    out
}

/// The correlation index's key part for an invocation: `qs(session):qs(tool):qs(correlation)`.
pub(crate) fn correlation_key(session_id: &str, tool_name: &str, correlation_id: &str) -> String {
    format!(
        "{}:{}:{}",
        query_escape(session_id),
        query_escape(tool_name),
        query_escape(correlation_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_escape_is_go_query_escape() {
        assert_eq!(query_escape("inv-01HX_a.b~"), "inv-01HX_a.b~");
        assert_eq!(query_escape("a b:c/d%é"), "a+b%3Ac%2Fd%25%C3%A9");
        assert_eq!(
            correlation_key("s:1", "fs.read", "k 1"),
            "s%3A1:fs.read:k+1"
        );
    }

    #[test]
    fn retention_of_zero_or_less_keeps_views_for_good() {
        let r = Retention::from_seconds(0, -5);
        assert_eq!(r, Retention::FOREVER);
        let r = Retention::from_seconds(60, 1);
        assert_eq!(r.invocations, Some(Duration::from_secs(60)));
        assert_eq!(r.sessions, Some(Duration::from_secs(1)));
        assert_eq!(
            Retention::default(),
            Retention::from_seconds(86_400, 86_400)
        );
    }

    #[test]
    fn unix_milliseconds_agree_with_the_time_crate() {
        for nanos in [
            0i128,
            1_999_999,
            1_764_600_000_123_456_789,
            -1_500_000,
            -2_000_000,
        ] {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            assert_eq!(unix_ms(t) as i128, nanos.div_euclid(1_000_000), "{nanos}");
        }
        let before = unix_ms(time::OffsetDateTime::now_utc());
        let now = now_ms();
        let after = unix_ms(time::OffsetDateTime::now_utc());
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }

    #[test]
    fn a_view_without_an_end_or_a_retention_has_no_deadline() {
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(deadline(None, day), None);
        assert_eq!(deadline(Some(1_000), None), None);
        assert_eq!(deadline(Some(1_000), day), Some(86_401_000));
    }

    #[test]
    fn an_unavailable_store_maps_to_the_unavailable_code() {
        let e = ReadModelError::Unavailable {
            source: "connection refused".into(),
        };
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert_eq!(
            ReadModelError::Gap {
                after: 3,
                checkpoint: 1
            }
            .code(),
            ErrorCode::Internal
        );
    }
}
