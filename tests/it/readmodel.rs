//! The read-model store contract: one suite of scenarios, each run against the memory store and
//! against the Valkey store on a real `redis-server` (see `valkey.rs`), plus what only the
//! Valkey store can get wrong (its keys, an unreachable server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use time::OffsetDateTime;
use workspace::error_code::ErrorCode;
use workspace::readmodel::{MemoryStore, ReadModelError, ReadModelStore, Retention, ValkeyStore};
use workspace_events::*;
use workspace_projections::{Applied, InvocationView, ReadModel};

use crate::valkey::{RedisServer, free_port};

/// Opens handles to one store: every handle of a fixture sees the same data.
#[async_trait]
pub trait Fixture: Send + Sync {
    async fn open(&self, retention: Retention) -> Arc<dyn ReadModelStore>;
}

#[derive(Default)]
struct Memory(Mutex<Option<MemoryStore>>);

#[async_trait]
impl Fixture for Memory {
    async fn open(&self, retention: Retention) -> Arc<dyn ReadModelStore> {
        let mut store = self.0.lock().unwrap();
        Arc::new(
            store
                .get_or_insert_with(|| MemoryStore::new(retention))
                .clone(),
        )
    }
}

struct Valkey(RedisServer);

#[async_trait]
impl Fixture for Valkey {
    async fn open(&self, retention: Retention) -> Arc<dyn ReadModelStore> {
        Arc::new(
            ValkeyStore::connect(&self.0.config(retention))
                .await
                .expect("connects to the test server"),
        )
    }
}

/// Builds a log: global sequences and aggregate versions in order, at a settable time.
struct History {
    events: Vec<Arc<RecordedEvent>>,
    versions: HashMap<String, u64>,
    at: OffsetDateTime,
}

const TOOL: &str = "fs.read_file";

impl History {
    fn new() -> Self {
        History::at(OffsetDateTime::now_utc())
    }

    fn at(at: OffsetDateTime) -> Self {
        History {
            events: Vec::new(),
            versions: HashMap::new(),
            at,
        }
    }

    fn last(&self) -> u64 {
        self.events.last().map_or(0, |e| e.sequence)
    }

    fn push<E: EventContract>(&mut self, id: &str, e: &E) -> u64 {
        let version = self.versions.entry(id.to_owned()).or_default();
        *version += 1;
        let sequence = self.events.len() as u64 + 1;
        self.events.push(Arc::new(RecordedEvent {
            sequence,
            envelope: EventEnvelope {
                event_id: ulid::Ulid::from_parts(sequence, 1),
                aggregate_type: E::AGGREGATE_TYPE,
                aggregate_id: id.into(),
                aggregate_version: *version,
                event_type: e.event_type().into(),
                schema_version: e.schema_version(),
                occurred_at: self.at,
                correlation_id: None,
                causation_id: None,
                actor: None,
                payload: e.to_payload(),
            },
        }));
        sequence
    }

    fn session(&mut self, id: &str, actor: &str, expires_in: Duration) -> &mut Self {
        self.push(
            id,
            &SessionEvent::Created(SessionCreated {
                session_id: id.into(),
                principal: Principal {
                    tenant_id: "acme".into(),
                    actor_id: actor.into(),
                    roles: vec!["developer".into()],
                },
                source: WorkspaceSource::Empty,
                allowed_paths: vec![".".into()],
                metadata: Default::default(),
                created_at: self.at,
                expires_at: self.at + expires_in,
            }),
        );
        self
    }

    fn provisioned(&mut self, id: &str) -> &mut Self {
        self.push(
            id,
            &SessionEvent::Provisioned(SessionProvisioned {
                runtime: RuntimeRef {
                    kind: "local".into(),
                    isolation: "bubblewrap".into(),
                    workdir: "/workspace".into(),
                    namespace: None,
                    pod_name: None,
                },
                provisioned_at: self.at,
            }),
        );
        self
    }

    fn closed(&mut self, id: &str) -> &mut Self {
        self.push(
            id,
            &SessionEvent::Closed(SessionClosed {
                reason: CloseReason::Requested,
                closed_at: self.at,
            }),
        );
        self
    }

    fn queued(&mut self, id: &str, session: &str, correlation: Option<&str>) -> &mut Self {
        let request = InvocationRequest {
            invocation_id: id.into(),
            session_id: session.into(),
            tool_name: TOOL.into(),
            correlation_id: correlation.map(str::to_owned),
            approved: false,
            args: Some(json!({"path": "a"})),
            args_ref: None,
            requested_at: self.at,
        };
        self.push(
            id,
            &InvocationEvent::Queued(InvocationQueued {
                request: request.into(),
                timeout_seconds: 15,
                start_deadline: self.at + Duration::from_secs(60),
            }),
        );
        self
    }

    fn started(&mut self, id: &str) -> &mut Self {
        self.push(
            id,
            &InvocationEvent::Started(InvocationStarted {
                executor_id: "e".into(),
                started_at: self.at,
                deadline: self.at + Duration::from_secs(15),
            }),
        );
        self
    }

    fn completed(&mut self, id: &str) -> &mut Self {
        self.push(
            id,
            &InvocationEvent::Completed(Arc::new(InvocationCompleted {
                outcome: InvocationOutcome::Succeeded,
                exit_code: Some(0),
                duration_ns: 4_260_000,
                output: Some(json!({"content": "hello", "n": 1}).into()),
                output_ref: None,
                logs: vec![],
                logs_ref: None,
                artifacts: vec![],
                error: None,
                completed_at: self.at,
            })),
        );
        self
    }

    /// queued, started, completed.
    fn ran(&mut self, id: &str, session: &str) -> &mut Self {
        self.queued(id, session, None).started(id).completed(id)
    }

    /// The embedded model's fold of the whole history.
    fn model(&self) -> ReadModel {
        let mut m = ReadModel::default();
        for e in &self.events {
            m.apply(&[], e);
        }
        m
    }
}

/// Applies `events` in batches of `batch`, each read "after" the one before.
async fn feed(store: &dyn ReadModelStore, events: &[Arc<RecordedEvent>], batch: usize) {
    for chunk in events.chunks(batch) {
        let after = chunk[0].sequence - 1;
        store
            .apply(after, chunk, Vec::new())
            .await
            .expect("a batch applies");
    }
}

fn ids<V>(items: &[Arc<V>], id: impl Fn(&V) -> &str) -> Vec<String> {
    items.iter().map(|v| id(v).to_owned()).collect()
}

const HOUR: Duration = Duration::from_secs(3600);

/// Polls `check` until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

// ------------------------------------------------------------------------------------------
// The contract.

async fn a_batch_folds_into_the_same_views_as_the_embedded_model(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .ran("i1", "s1")
        .queued("i2", "s1", None);
    let applied = store.apply(0, &h.events, Vec::new()).await.unwrap();
    assert!(
        applied
            .iter()
            .all(|a| !matches!(a, Applied::Skipped | Applied::Rejected { .. }))
    );
    let model = h.model();
    assert_eq!(store.checkpoint().await.unwrap(), h.last());
    assert_eq!(
        store.session("s1").await.unwrap().as_deref(),
        model.session("s1")
    );
    for id in ["i1", "i2"] {
        assert_eq!(
            store.invocation(id).await.unwrap().as_deref(),
            model.invocation(id),
            "{id}"
        );
    }
    assert_eq!(
        store.invocation("i1").await.unwrap().unwrap().status,
        InvocationStatus::Succeeded
    );
    assert!(store.session("nope").await.unwrap().is_none());
    assert!(store.invocation("nope").await.unwrap().is_none());
}

async fn reapplying_a_batch_changes_nothing(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .ran("i1", "s1");
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    let before = store.invocation("i1").await.unwrap();
    let again = store.apply(0, &h.events, Vec::new()).await.unwrap();
    assert!(again.iter().all(|a| *a == Applied::Skipped), "{again:?}");
    assert_eq!(store.invocation("i1").await.unwrap(), before);
    assert_eq!(
        store.session_invocations("s1", 0, 10).await.unwrap().total,
        1
    );
    assert_eq!(store.checkpoint().await.unwrap(), h.last());
}

async fn a_redelivered_older_version_never_overwrites_a_newer_view(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .ran("i1", "s1");
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    // `started` again, past the checkpoint: only the aggregate version can refuse it.
    let mut stale = (*h.events[3]).clone();
    stale.sequence = h.last() + 1;
    let applied = store
        .apply(h.last(), &[Arc::new(stale)], Vec::new())
        .await
        .unwrap();
    assert_eq!(applied, vec![Applied::Skipped]);
    let view = store.invocation("i1").await.unwrap().unwrap();
    assert_eq!(
        (view.status, view.version),
        (InvocationStatus::Succeeded, 3)
    );
    assert_eq!(store.checkpoint().await.unwrap(), h.last() + 1);
}

async fn concurrent_writers_converge_on_the_same_views(f: &dyn Fixture) {
    let a = f.open(Retention::FOREVER).await;
    let b = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    for s in 0..6 {
        let sid = format!("s{s}");
        h.session(&sid, "alice", HOUR).provisioned(&sid);
        for i in 0..8 {
            let iid = format!("i{s}-{i}");
            h.queued(&iid, &sid, Some(&format!("c{i}")));
            if i % 3 != 0 {
                h.started(&iid);
            }
            if i % 3 == 2 {
                h.completed(&iid);
            }
        }
        if s % 2 == 0 {
            h.closed(&sid);
        }
    }
    let events = Arc::new(h.events.clone());
    let writers: Vec<_> = [(a.clone(), 7), (b.clone(), 13), (a.clone(), 29)]
        .into_iter()
        .map(|(store, batch)| {
            let events = events.clone();
            tokio::spawn(async move { feed(&*store, &events, batch).await })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let model = h.model();
    for store in [&a, &b] {
        assert_eq!(store.checkpoint().await.unwrap(), h.last());
        for s in 0..6 {
            let sid = format!("s{s}");
            assert_eq!(
                store.session(&sid).await.unwrap().as_deref(),
                model.session(&sid)
            );
            let page = store.session_invocations(&sid, 0, 100).await.unwrap();
            let (want, total) = model.session_invocations(&sid, 0, 100);
            assert_eq!(page.total, total);
            assert_eq!(
                page.items.iter().map(|v| &**v).collect::<Vec<_>>(),
                want,
                "{sid}"
            );
        }
    }
}

async fn the_checkpoint_never_moves_back(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .ran("i1", "s1")
        .ran("i2", "s1");
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    let applied = store.apply(0, &h.events[..4], Vec::new()).await.unwrap();
    assert!(applied.iter().all(|a| *a == Applied::Skipped));
    assert_eq!(store.checkpoint().await.unwrap(), h.last());
    assert_eq!(
        store.apply(h.last(), &[], Vec::new()).await.unwrap(),
        vec![]
    );
    assert_eq!(store.checkpoint().await.unwrap(), h.last());
}

async fn a_batch_that_would_leave_a_hole_is_refused(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .ran("i1", "s1");
    store.apply(0, &h.events[..2], Vec::new()).await.unwrap();
    match store.apply(3, &h.events[3..], Vec::new()).await {
        Err(ReadModelError::Gap { after, checkpoint }) => assert_eq!((after, checkpoint), (3, 2)),
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(store.checkpoint().await.unwrap(), 2);
    assert!(store.invocation("i1").await.unwrap().is_none());
    store.apply(2, &h.events[2..], Vec::new()).await.unwrap();
    assert_eq!(
        store.invocation("i1").await.unwrap().unwrap().status,
        InvocationStatus::Succeeded
    );
}

async fn waiting_for_a_sequence_returns_once_a_batch_reaches_it(f: &dyn Fixture) {
    let writer = f.open(Retention::FOREVER).await;
    let reader = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .ran("i1", "s1");
    let target = h.last();
    let started = Instant::now();
    let waiter = {
        let reader = reader.clone();
        tokio::spawn(async move { reader.wait_for(target, Duration::from_secs(20)).await })
    };
    feed(&*writer, &h.events, 2).await;
    assert!(waiter.await.unwrap().unwrap());
    assert!(started.elapsed() < Duration::from_secs(10));
    // Reached already: at once.
    assert!(reader.wait_for(target, Duration::ZERO).await.unwrap());
    assert!(reader.wait_for(1, Duration::ZERO).await.unwrap());
}

async fn waiting_for_a_sequence_that_never_comes_times_out_within_its_bound(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR);
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    let bound = Duration::from_millis(300);
    let started = Instant::now();
    assert!(!store.wait_for(100, bound).await.unwrap());
    let took = started.elapsed();
    assert!(
        took >= bound && took < bound + Duration::from_secs(2),
        "{took:?}"
    );
}

async fn a_session_lists_its_invocations_newest_first_in_pages_with_a_total(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR).provisioned("s1");
    h.session("s2", "alice", HOUR).provisioned("s2");
    for i in 1..=7 {
        h.queued(&format!("i{i}"), "s1", None);
        if i <= 2 {
            h.queued(&format!("j{i}"), "s2", None);
        }
    }
    h.ran("i8", "s1").started("i3");
    feed(&*store, &h.events, 5).await;
    let id = |v: &workspace_projections::InvocationView| v.id.clone();
    let first = store.session_invocations("s1", 0, 3).await.unwrap();
    assert_eq!(first.total, 8);
    assert_eq!(ids(&first.items, |v| &v.id), ["i8", "i7", "i6"]);
    assert_eq!(first.next_offset(0), Some(3));
    let second = store.session_invocations("s1", 3, 3).await.unwrap();
    assert_eq!(
        second.items.iter().map(|v| id(v)).collect::<Vec<_>>(),
        ["i5", "i4", "i3"]
    );
    assert_eq!(second.items[2].status, InvocationStatus::Running);
    let last = store.session_invocations("s1", 6, 3).await.unwrap();
    assert_eq!(ids(&last.items, |v| &v.id), ["i2", "i1"]);
    assert_eq!(last.next_offset(6), None);
    let past = store.session_invocations("s1", 20, 3).await.unwrap();
    assert_eq!((past.items.len(), past.total), (0, 8));
    let other = store.session_invocations("s2", 0, 50).await.unwrap();
    assert_eq!(ids(&other.items, |v| &v.id), ["j2", "j1"]);
    let none = store.session_invocations("s9", 0, 50).await.unwrap();
    assert_eq!((none.items.len(), none.total), (0, 0));
}

async fn a_principal_lists_its_sessions_newest_first(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .session("s2", "bob", HOUR)
        .session("s3", "alice", HOUR)
        .provisioned("s1")
        .session("s4", "alice", HOUR)
        .closed("s3");
    feed(&*store, &h.events, 2).await;
    let alice = store
        .principal_sessions("acme", "alice", 0, 2)
        .await
        .unwrap();
    assert_eq!(alice.total, 3);
    assert_eq!(ids(&alice.items, |v| &v.id), ["s4", "s3"]);
    assert_eq!(alice.items[1].status, SessionStatus::Closed);
    let rest = store
        .principal_sessions("acme", "alice", 2, 2)
        .await
        .unwrap();
    assert_eq!(ids(&rest.items, |v| &v.id), ["s1"]);
    let bob = store
        .principal_sessions("acme", "bob", 0, 10)
        .await
        .unwrap();
    assert_eq!(ids(&bob.items, |v| &v.id), ["s2"]);
    assert_eq!(
        store
            .principal_sessions("other", "alice", 0, 10)
            .await
            .unwrap()
            .total,
        0
    );
}

async fn a_correlation_key_finds_its_invocation(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .queued("i1", "s1", Some("key:1 with spaces/and%"))
        .queued("i2", "s1", None)
        .started("i1");
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    let found = store
        .invocation_by_correlation("s1", TOOL, "key:1 with spaces/and%")
        .await
        .unwrap()
        .expect("found by its key");
    assert_eq!(
        (found.id.as_str(), found.status),
        ("i1", InvocationStatus::Running)
    );
    for (session, tool, key) in [
        ("s1", "fs.stat", "key:1 with spaces/and%"),
        ("s2", TOOL, "key:1 with spaces/and%"),
        ("s1", TOOL, "key:1"),
    ] {
        assert!(
            store
                .invocation_by_correlation(session, tool, key)
                .await
                .unwrap()
                .is_none(),
            "{session} {tool} {key}"
        );
    }
}

async fn live_sessions_due_sessions_and_open_invocations_leave_their_lists_when_they_end(
    f: &dyn Fixture,
) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR * 2)
        .provisioned("s1")
        .session("s2", "alice", HOUR)
        .session("s3", "alice", HOUR)
        .closed("s3")
        .queued("i1", "s1", None)
        .queued("i2", "s1", None)
        .started("i2")
        .ran("i3", "s1");
    feed(&*store, &h.events, 3).await;
    let live = store.live_sessions().await.unwrap();
    assert_eq!(ids(&live, |v| &v.id), ["s2", "s1"], "soonest expiry first");
    assert!(store.sessions_due(h.at).await.unwrap().is_empty());
    let due = store.sessions_due(h.at + HOUR).await.unwrap();
    assert_eq!(ids(&due, |v| &v.id), ["s2"], "expires_at at or before now");
    let due = store.sessions_due(h.at + HOUR * 3).await.unwrap();
    assert_eq!(ids(&due, |v| &v.id), ["s2", "s1"]);
    let open = store.open_invocations().await.unwrap();
    assert_eq!(ids(&open, |v| &v.id), ["i1", "i2"]);
    assert_eq!(open[1].status, InvocationStatus::Running);
    let from = h.last();
    h.started("i1").completed("i1").closed("s2");
    store
        .apply(from, &h.events[from as usize..], Vec::new())
        .await
        .unwrap();
    assert_eq!(
        ids(&store.live_sessions().await.unwrap(), |v| &v.id),
        ["s1"]
    );
    assert_eq!(
        ids(&store.open_invocations().await.unwrap(), |v| &v.id),
        ["i2"]
    );
}

async fn terminal_views_leave_with_their_index_entries_after_their_retention(f: &dyn Fixture) {
    let ttl = Duration::from_secs(1);
    let store = f
        .open(Retention {
            invocations: Some(ttl),
            sessions: Some(ttl),
        })
        .await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .queued("i1", "s1", Some("k1"))
        .started("i1")
        .completed("i1")
        .queued("i2", "s1", Some("k2"))
        .session("s2", "alice", HOUR)
        .closed("s2");
    feed(&*store, &h.events, 4).await;
    // Kept for now.
    assert!(store.invocation("i1").await.unwrap().is_some());
    assert!(store.session("s2").await.unwrap().is_some());
    assert_eq!(
        store.session_invocations("s1", 0, 10).await.unwrap().total,
        2
    );
    eventually(Duration::from_secs(15), "i1 leaves", || async {
        store.invocation("i1").await.unwrap().is_none()
    })
    .await;
    eventually(Duration::from_secs(15), "s2 leaves", || async {
        store.session("s2").await.unwrap().is_none()
    })
    .await;
    let page = store.session_invocations("s1", 0, 10).await.unwrap();
    assert_eq!(
        (ids(&page.items, |v| &v.id), page.total),
        (vec!["i2".to_owned()], 1)
    );
    assert!(
        store
            .invocation_by_correlation("s1", TOOL, "k1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .invocation_by_correlation("s1", TOOL, "k2")
            .await
            .unwrap()
            .is_some()
    );
    let alice = store
        .principal_sessions("acme", "alice", 0, 10)
        .await
        .unwrap();
    assert_eq!(
        (ids(&alice.items, |v| &v.id), alice.total),
        (vec!["s1".to_owned()], 1)
    );
    // What never ended stays.
    assert!(store.session("s1").await.unwrap().is_some());
    assert!(store.invocation("i2").await.unwrap().is_some());
}

async fn a_view_that_ended_longer_ago_than_its_retention_is_not_kept(f: &dyn Fixture) {
    let store = f
        .open(Retention {
            invocations: Some(HOUR),
            sessions: Some(HOUR),
        })
        .await;
    // A replay of last week's log.
    let mut h = History::at(OffsetDateTime::now_utc() - HOUR * 24 * 7);
    h.session("s1", "alice", HOUR * 24 * 30)
        .provisioned("s1")
        .ran("i1", "s1")
        .queued("i2", "s1", Some("k"))
        .session("s2", "alice", HOUR)
        .closed("s2");
    feed(&*store, &h.events, 3).await;
    assert!(store.invocation("i1").await.unwrap().is_none());
    assert!(store.session("s2").await.unwrap().is_none());
    assert_eq!(
        store.invocation("i2").await.unwrap().unwrap().status,
        InvocationStatus::Queued
    );
    let page = store.session_invocations("s1", 0, 10).await.unwrap();
    assert_eq!(
        (ids(&page.items, |v| &v.id), page.total),
        (vec!["i2".to_owned()], 1)
    );
    assert_eq!(
        store
            .principal_sessions("acme", "alice", 0, 10)
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(store.checkpoint().await.unwrap(), h.last());
}

async fn without_a_retention_terminal_views_are_kept(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::at(OffsetDateTime::now_utc() - HOUR * 24 * 365);
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .ran("i1", "s1")
        .closed("s1");
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    assert_eq!(
        store.invocation("i1").await.unwrap().unwrap().status,
        InvocationStatus::Succeeded
    );
    assert_eq!(
        store.session("s1").await.unwrap().unwrap().status,
        SessionStatus::Closed
    );
    assert_eq!(
        store.session_invocations("s1", 0, 10).await.unwrap().total,
        1
    );
}

async fn a_rebuild_is_invisible_until_activated_then_replaces_the_views(f: &dyn Fixture) {
    let active = f.open(Retention::FOREVER).await;
    let mut old = History::new();
    old.session("old", "alice", HOUR)
        .provisioned("old")
        .ran("i-old", "old");
    active.apply(0, &old.events, Vec::new()).await.unwrap();
    let mut new = History::new();
    new.session("new", "alice", HOUR)
        .provisioned("new")
        .ran("i-new", "new")
        .queued("i-new2", "new", None);
    let rebuild = active.rebuild().await.unwrap();
    feed(&*rebuild.store(), &new.events, 2).await;
    assert!(active.session("new").await.unwrap().is_none());
    assert!(rebuild.store().session("new").await.unwrap().is_some());
    assert!(rebuild.store().session("old").await.unwrap().is_none());
    assert_eq!(active.checkpoint().await.unwrap(), old.last());
    rebuild.activate().await.unwrap();
    assert!(active.session("old").await.unwrap().is_none());
    assert!(active.invocation("i-old").await.unwrap().is_none());
    assert_eq!(
        active.session("new").await.unwrap().unwrap().status,
        SessionStatus::Ready
    );
    assert_eq!(
        active
            .session_invocations("new", 0, 10)
            .await
            .unwrap()
            .total,
        2
    );
    assert_eq!(active.checkpoint().await.unwrap(), new.last());
    // Another handle sees the switch too, and the projector carries on from there.
    let other = f.open(Retention::FOREVER).await;
    assert!(other.session("new").await.unwrap().is_some());
    let from = new.last();
    new.started("i-new2");
    other
        .apply(from, &new.events[from as usize..], Vec::new())
        .await
        .unwrap();
    assert_eq!(
        active.invocation("i-new2").await.unwrap().unwrap().status,
        InvocationStatus::Running
    );
}

async fn a_rebuild_behind_the_active_views_is_not_activated_until_it_catches_up(f: &dyn Fixture) {
    let active = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .ran("i1", "s1");
    active.apply(0, &h.events, Vec::new()).await.unwrap();
    let rebuild = active.rebuild().await.unwrap();
    rebuild
        .store()
        .apply(0, &h.events[..3], Vec::new())
        .await
        .unwrap();
    match rebuild.activate().await {
        Err(
            e @ ReadModelError::Behind {
                rebuild: 3,
                active: 5,
            },
        ) => {
            assert_eq!(e.code(), ErrorCode::Conflict)
        }
        other => panic!("expected behind, got {other:?}"),
    }
    assert_eq!(active.checkpoint().await.unwrap(), 5);
    rebuild
        .store()
        .apply(3, &h.events[3..], Vec::new())
        .await
        .unwrap();
    rebuild.activate().await.unwrap();
    assert_eq!(
        active.invocation("i1").await.unwrap().unwrap().status,
        InvocationStatus::Succeeded
    );
}

async fn a_rebuild_activated_after_another_one_is_superseded(f: &dyn Fixture) {
    let active = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR);
    let first = active.rebuild().await.unwrap();
    let second = active.rebuild().await.unwrap();
    first.store().apply(0, &h.events, Vec::new()).await.unwrap();
    second
        .store()
        .apply(0, &h.events, Vec::new())
        .await
        .unwrap();
    second.activate().await.unwrap();
    assert!(matches!(
        first.activate().await,
        Err(ReadModelError::Superseded)
    ));
    assert!(active.session("s1").await.unwrap().is_some());
}

async fn the_store_agrees_with_the_embedded_model_over_a_long_history(f: &dyn Fixture) {
    let store = f.open(Retention::FOREVER).await;
    let mut h = History::new();
    let mut open: Vec<(String, u8)> = Vec::new();
    for n in 0..300u32 {
        let sid = format!("s{}", n % 5);
        if n < 5 {
            h.session(&sid, ["alice", "bob"][n as usize % 2], HOUR)
                .provisioned(&sid);
        }
        // Advance some open invocation, or queue a new one: interleaved aggregates.
        if n % 3 == 0 || open.is_empty() {
            let iid = format!("i{n}");
            h.queued(&iid, &sid, (n % 4 == 0).then(|| format!("c{n}")).as_deref());
            open.push((iid, 0));
        } else {
            let k = (n as usize * 7) % open.len();
            let (iid, step) = open[k].clone();
            if step == 0 {
                h.started(&iid);
                open[k].1 = 1;
            } else {
                h.completed(&iid);
                open.swap_remove(k);
            }
        }
    }
    h.closed("s3");
    feed(&*store, &h.events, 37).await;
    let model = h.model();
    assert_eq!(store.checkpoint().await.unwrap(), model.checkpoint());
    for view in model.invocations() {
        assert_eq!(
            store.invocation(&view.id).await.unwrap().as_deref(),
            Some(view)
        );
    }
    for view in model.sessions() {
        assert_eq!(
            store.session(&view.id).await.unwrap().as_deref(),
            Some(view)
        );
        for (offset, limit) in [(0, 7), (7, 7), (50, 100)] {
            let page = store
                .session_invocations(&view.id, offset, limit)
                .await
                .unwrap();
            let (want, total) = model.session_invocations(&view.id, offset, limit);
            assert_eq!(page.total, total);
            assert_eq!(page.items.iter().map(|v| &**v).collect::<Vec<_>>(), want);
        }
    }
    let mut open_ids = ids(&store.open_invocations().await.unwrap(), |v| &v.id);
    let mut want: Vec<String> = model
        .invocations()
        .filter(|v| !v.is_terminal())
        .map(|v| v.id.clone())
        .collect();
    open_ids.sort();
    want.sort();
    assert_eq!(open_ids, want);
}

/// Runs each scenario against both stores: `memory::<name>` and `valkey::<name>`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Memory::default()).await
                }
            )*
        }
        mod valkey {
            $(
                #[tokio::test]
                async fn $name() {
                    let fixture = super::Valkey(super::RedisServer::start());
                    super::$name(&fixture).await
                }
            )*
        }
    };
}

contract!(
    a_batch_folds_into_the_same_views_as_the_embedded_model,
    reapplying_a_batch_changes_nothing,
    a_redelivered_older_version_never_overwrites_a_newer_view,
    concurrent_writers_converge_on_the_same_views,
    the_checkpoint_never_moves_back,
    a_batch_that_would_leave_a_hole_is_refused,
    waiting_for_a_sequence_returns_once_a_batch_reaches_it,
    waiting_for_a_sequence_that_never_comes_times_out_within_its_bound,
    a_session_lists_its_invocations_newest_first_in_pages_with_a_total,
    a_principal_lists_its_sessions_newest_first,
    a_correlation_key_finds_its_invocation,
    live_sessions_due_sessions_and_open_invocations_leave_their_lists_when_they_end,
    terminal_views_leave_with_their_index_entries_after_their_retention,
    a_view_that_ended_longer_ago_than_its_retention_is_not_kept,
    without_a_retention_terminal_views_are_kept,
    a_rebuild_is_invisible_until_activated_then_replaces_the_views,
    a_rebuild_behind_the_active_views_is_not_activated_until_it_catches_up,
    a_rebuild_activated_after_another_one_is_superseded,
    the_store_agrees_with_the_embedded_model_over_a_long_history,
);

// ------------------------------------------------------------------------------------------
// Valkey only.

#[tokio::test]
async fn an_unreachable_valkey_is_reported_as_unavailable() {
    let mut config = workspace::readmodel::ValkeyConfig {
        host: "127.0.0.1".into(),
        port: free_port(),
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    config.retention = Retention::FOREVER;
    let started = Instant::now();
    match ValkeyStore::connect(&config).await {
        Err(e) => {
            assert!(matches!(e, ReadModelError::Unavailable { .. }), "{e:?}");
            assert_eq!(e.code(), ErrorCode::Unavailable);
        }
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A projector in one process announces what it finished through the store, in the write
/// itself: a reader of the same Valkey in another process hears the session that moved and the
/// finished invocation with its view as written (so its waiters answer without a read). A
/// rebuild's store, which nobody reads yet, announces nothing.
#[tokio::test]
async fn announcements_reach_every_reader_of_a_valkey_store_but_not_from_a_rebuild() {
    use workspace::readmodel::Announcement;
    let server = RedisServer::start();
    let writer = ValkeyStore::connect(&server.config(Retention::FOREVER))
        .await
        .unwrap();
    let reader = ValkeyStore::connect(&server.config(Retention::FOREVER))
        .await
        .unwrap();
    let mut heard = reader
        .announcements()
        .expect("a shared store carries announcements");
    let rebuild = writer.rebuild().await.unwrap();
    let mut h = History::new();
    // The subscription is made in the background: write (new views each time) until it is
    // heard, into the rebuild first.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        for n in 0.. {
            let after = h.last();
            let (session, invocation) = (format!("s{n}"), format!("inv-{n}"));
            h.session(&session, "alice", HOUR)
                .ran(&invocation, &session);
            let batch = &h.events[after as usize..];
            rebuild
                .store()
                .apply(after, batch, Vec::new())
                .await
                .unwrap();
            writer.apply(after, batch, Vec::new()).await.unwrap();
            if let Ok(Ok(a)) = tokio::time::timeout(Duration::from_millis(100), heard.recv()).await
            {
                return (n, a);
            }
        }
        unreachable!()
    })
    .await
    .expect("an announcement arrives");
    let (n, first) = first;
    assert_eq!(first, Announcement::Session(format!("s{n}")));
    match heard.recv().await.unwrap() {
        Announcement::Invocation { id, view } => {
            assert_eq!(id, format!("inv-{n}"));
            let view: InvocationView =
                serde_json::from_str(&view.expect("the view travels with it")).unwrap();
            let stored = reader.invocation(&id).await.unwrap().expect("stored");
            assert_eq!(view, *stored);
            assert!(view.is_terminal(), "{view:?}");
        }
        other => panic!("expected the finished invocation, heard {other:?}"),
    }
}

/// A writer folds a batch onto the open views its own last batches wrote, without loading
/// them, only while nobody else moved the checkpoint: two writers taking turns on one store
/// (each batch continuing the other's, or overlapping it), every view ends as the embedded
/// model folds the whole history, and nothing the other wrote is folded over.
#[tokio::test]
async fn two_valkey_writers_taking_turns_fold_every_view_as_the_model_does() {
    let server = RedisServer::start();
    let (a, b) = two_writers(&server).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR).provisioned("s1");
    for i in 0..6 {
        h.queued(&format!("i{i}"), "s1", None);
    }
    for i in 0..6 {
        h.started(&format!("i{i}"));
    }
    for i in 0..6 {
        h.completed(&format!("i{i}"));
    }
    h.queued("i-open", "s1", None).started("i-open");
    // One event a batch, by a, a, b, a, b, b, ...: a holds views, then finds the checkpoint
    // moved by b; every fourth batch a also re-applies from two events back (an overlap).
    let writers = [&a, &a, &b, &a, &b, &b];
    let mut after = 0;
    for (n, event) in h.events.iter().enumerate() {
        let writer = writers[n % writers.len()];
        writer
            .apply(after, std::slice::from_ref(event), Vec::new())
            .await
            .unwrap();
        if n % 4 == 3 && n >= 2 {
            let overlap = &h.events[n - 2..=n];
            a.apply(overlap[0].sequence - 1, overlap, Vec::new())
                .await
                .unwrap();
        }
        after = event.sequence;
    }
    let model = h.model();
    for store in [&a, &b] {
        assert_eq!(store.checkpoint().await.unwrap(), h.last());
        assert_eq!(
            store.session("s1").await.unwrap().as_deref(),
            model.session("s1")
        );
        for i in (0..6).map(|i| format!("i{i}")).chain(["i-open".to_owned()]) {
            assert_eq!(
                store.invocation(&i).await.unwrap().as_deref(),
                model.invocation(&i),
                "{i}"
            );
        }
    }
}

/// Two handles on one Valkey, as two projector processes would hold.
async fn two_writers(server: &RedisServer) -> (ValkeyStore, ValkeyStore) {
    let config = server.config(Retention::FOREVER);
    (
        ValkeyStore::connect(&config).await.unwrap(),
        ValkeyStore::connect(&config).await.unwrap(),
    )
}

/// A writer holding the views at the checkpoint it left, whose next batch starts there while
/// another writer already applied part of it: the store refuses the fold onto the held views
/// (the checkpoint moved), the writer loads, and the view is the model's, not its own stale
/// fold.
#[tokio::test]
async fn a_batch_folded_onto_held_views_is_refused_once_another_writer_moved_on() {
    let server = RedisServer::start();
    let (a, b) = two_writers(&server).await;
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .queued("i1", "s1", None);
    a.apply(0, &h.events, Vec::new()).await.unwrap();
    let held_at = h.last();
    h.started("i1").completed("i1");
    let rest = &h.events[held_at as usize..];
    // b applies `started`; a then applies `started` and `completed` from where it left.
    b.apply(held_at, &rest[..1], Vec::new()).await.unwrap();
    let applied = a.apply(held_at, rest, Vec::new()).await.unwrap();
    assert_eq!(applied[0], Applied::Skipped, "{applied:?}");
    let model = h.model();
    assert_eq!(a.checkpoint().await.unwrap(), h.last());
    assert_eq!(
        a.invocation("i1").await.unwrap().as_deref(),
        model.invocation("i1")
    );
    assert_eq!(
        b.invocation("i1").await.unwrap().unwrap().status,
        InvocationStatus::Succeeded
    );
}

#[tokio::test]
async fn a_valkey_that_went_away_is_reported_as_unavailable() {
    let mut server = RedisServer::start();
    let store = ValkeyStore::connect(&server.config(Retention::FOREVER))
        .await
        .unwrap();
    let mut h = History::new();
    h.session("s1", "alice", HOUR);
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    server.kill();
    let started = Instant::now();
    for _ in 0..3 {
        match store.session("s1").await {
            Err(e) => assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}"),
            Ok(v) => panic!("read {v:?} from a stopped server"),
        }
        match store.wait_for(10, Duration::from_secs(1)).await {
            Err(e) => assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}"),
            Ok(v) => panic!("waited ({v}) on a stopped server"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn views_and_indexes_live_under_the_documented_keys() {
    use redis::AsyncCommands;
    let server = RedisServer::start();
    let day = Duration::from_secs(86_400);
    let store = ValkeyStore::connect(&server.config(Retention {
        invocations: Some(day),
        sessions: Some(day),
    }))
    .await
    .unwrap();
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .queued("i1", "s1", Some("k 1"))
        .started("i1")
        .completed("i1")
        .queued("i2", "s1", None);
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    let mut con = server.client().await;
    let v: String = con.hget("test:invocation:0:inv:i1", "v").await.unwrap();
    assert_eq!(v, "3");
    let json: String = con.hget("test:invocation:0:inv:i1", "json").await.unwrap();
    let view: workspace_projections::InvocationView = serde_json::from_str(&json).unwrap();
    assert_eq!(view.status, InvocationStatus::Succeeded);
    let checkpoint: u64 = con.get("test:invocation:0:checkpoint").await.unwrap();
    assert_eq!(checkpoint, h.last());
    let index: Vec<String> = con
        .zrange("test:invocation:0:by-session:s1", 0, -1)
        .await
        .unwrap();
    assert_eq!(index, ["i1", "i2"]);
    let corr: String = con
        .get(format!("test:invocation:0:corr:s1:{TOOL}:k+1"))
        .await
        .unwrap();
    assert_eq!(corr, "i1");
    let open: Vec<String> = con.zrange("test:invocation:0:open", 0, -1).await.unwrap();
    assert_eq!(open, ["i2"]);
    let sessions: Vec<String> = con
        .zrange("test:session:0:by-principal:acme:alice", 0, -1)
        .await
        .unwrap();
    assert_eq!(sessions, ["s1"]);
    let live: Vec<String> = con.zrange("test:session:0:live", 0, -1).await.unwrap();
    assert_eq!(live, ["s1"]);
    // The finished invocation leaves in a day; what is still running, and the index it shares
    // with it, stay.
    let ttl: i64 = con.pttl("test:invocation:0:inv:i1").await.unwrap();
    assert!(ttl > 86_000_000 && ttl <= 86_400_000, "{ttl}");
    let ttl: i64 = con
        .pttl(format!("test:invocation:0:corr:s1:{TOOL}:k+1"))
        .await
        .unwrap();
    assert!(ttl > 86_000_000, "{ttl}");
    for key in [
        "test:invocation:0:inv:i2",
        "test:session:0:ses:s1",
        "test:invocation:0:by-session:s1",
    ] {
        let ttl: i64 = con.pttl(key).await.unwrap();
        assert_eq!(ttl, -1, "{key}");
    }
}

#[tokio::test]
async fn an_activated_rebuild_deletes_the_generation_it_replaced() {
    use redis::AsyncCommands;
    let server = RedisServer::start();
    let store = ValkeyStore::connect(&server.config(Retention::FOREVER))
        .await
        .unwrap();
    let mut h = History::new();
    h.session("s1", "alice", HOUR)
        .provisioned("s1")
        .ran("i1", "s1");
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    let abandoned = store.rebuild().await.unwrap();
    abandoned
        .store()
        .apply(0, &h.events[..1], Vec::new())
        .await
        .unwrap();
    let rebuild = store.rebuild().await.unwrap();
    feed(&*rebuild.store(), &h.events, 2).await;
    rebuild.activate().await.unwrap();
    let mut con = server.client().await;
    let active: String = con.get("test:invocation:active").await.unwrap();
    assert_eq!(active, "2");
    let mut keys: Vec<String> = con.keys("test:*").await.unwrap();
    keys.sort();
    assert!(
        keys.iter().all(|k| k.starts_with("test:invocation:2:")
            || k.starts_with("test:session:2:")
            || k == "test:invocation:active"
            || k == "test:invocation:generations"),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"test:invocation:2:inv:i1".to_owned()),
        "{keys:?}"
    );
    assert_eq!(
        store.invocation("i1").await.unwrap().unwrap().status,
        InvocationStatus::Succeeded
    );
}

#[tokio::test]
async fn scripts_flushed_from_the_server_are_loaded_again() {
    let server = RedisServer::start();
    let store = ValkeyStore::connect(&server.config(Retention::FOREVER))
        .await
        .unwrap();
    let mut h = History::new();
    h.session("s1", "alice", HOUR);
    store.apply(0, &h.events, Vec::new()).await.unwrap();
    let mut con = server.client().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(store.session("s1").await.unwrap().is_some());
    h.provisioned("s1");
    store.apply(1, &h.events[1..], Vec::new()).await.unwrap();
    assert_eq!(
        store.session("s1").await.unwrap().unwrap().status,
        SessionStatus::Ready
    );
}
