//! The `EventLog` contract, one async function per behaviour, run against both implementations:
//! the embedded file log and the JetStream stream (on a real pinned nats-server per test). A
//! behaviour that only one of them can show lives beside that implementation's tests.

use std::sync::Arc;

use time::macros::datetime;
use ulid::Ulid;
use workspace::eventstore::jetstream::{JetStreamEventLog, JetStreamOptions};
use workspace::eventstore::{Appended, EventLog, FileEventLog, FsyncPolicy, StoreError};
use workspace_events::{AggregateType, EventEnvelope, RecordedEvent};

use crate::nats::NatsServer;

pub const SESSION: AggregateType = AggregateType::Session;
pub const INVOCATION: AggregateType = AggregateType::Invocation;

/// One event of `<type>.noted` at `version`; every payload names a session, as an invocation's
/// first event must.
pub fn event(aggregate_type: AggregateType, id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Ulid::generate(),
        aggregate_type,
        aggregate_id: id.to_owned(),
        aggregate_version: version,
        event_type: format!("{aggregate_type}.noted"),
        schema_version: 1,
        occurred_at: datetime!(2026-01-02 03:04:05.000000006 UTC),
        correlation_id: Some(format!("corr-{id}-{version}")),
        causation_id: None,
        actor: None,
        payload: serde_json::json!({
            "session_id": "session-contract",
            "version": version,
            "text": "x".repeat(40),
        })
        .into(),
    }
}

/// `count` events of one aggregate following `after`.
pub fn events(
    aggregate_type: AggregateType,
    id: &str,
    after: u64,
    count: u64,
) -> Vec<EventEnvelope> {
    (after + 1..=after + count)
        .map(|v| event(aggregate_type, id, v))
        .collect()
}

pub fn sequences(events: &[Arc<RecordedEvent>]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

pub fn envelopes(events: &[Arc<RecordedEvent>]) -> Vec<EventEnvelope> {
    events.iter().map(|e| e.envelope.clone()).collect()
}

/// Everything stored, in order.
async fn everything(log: &dyn EventLog) -> Vec<EventEnvelope> {
    envelopes(&log.read_from(0, usize::MAX).await.unwrap())
}

/// Keeps whatever backs a log alive for the test (held for its `Drop`).
#[allow(dead_code)]
pub enum Backing {
    Dir(tempfile::TempDir),
    Server(NatsServer),
}

pub async fn file_log() -> (Arc<dyn EventLog>, Backing) {
    let dir = tempfile::tempdir().unwrap();
    let log = FileEventLog::open(dir.path(), FsyncPolicy::Never)
        .await
        .unwrap();
    (log, Backing::Dir(dir))
}

pub async fn jetstream_log() -> (Arc<dyn EventLog>, Backing) {
    let server = NatsServer::start();
    let log = JetStreamEventLog::connect(JetStreamOptions::new(server.url()))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", server.log()));
    (Arc::new(log), Backing::Server(server))
}

async fn appended_events_are_loaded_per_aggregate_and_read_in_global_order(log: Arc<dyn EventLog>) {
    let s1 = events(SESSION, "session-1", 0, 2);
    let i1 = events(INVOCATION, "inv-1", 0, 3);
    let s1_more = events(SESSION, "session-1", 2, 1);
    let a = log
        .append(SESSION, "session-1", 0, s1.clone())
        .await
        .unwrap();
    let b = log
        .append(INVOCATION, "inv-1", 0, i1.clone())
        .await
        .unwrap();
    let c = log
        .append(SESSION, "session-1", 2, s1_more.clone())
        .await
        .unwrap();
    let positions = |a: Appended| (a.first_sequence, a.last_sequence, a.duplicate);
    assert_eq!(positions(a), (1, 2, false));
    assert_eq!(positions(b), (3, 5, false));
    assert_eq!(positions(c), (6, 6, false));

    let session = log.load(SESSION, "session-1").await.unwrap();
    assert_eq!(sequences(&session), [1, 2, 6]);
    assert_eq!(envelopes(&session), [s1, s1_more].concat());
    assert_eq!(envelopes(&log.load(INVOCATION, "inv-1").await.unwrap()), i1);
    assert!(log.load(SESSION, "inv-1").await.unwrap().is_empty());
    assert!(
        log.load(SESSION, "session-unknown")
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        sequences(&log.read_from(0, 100).await.unwrap()),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(sequences(&log.read_from(2, 3).await.unwrap()), [3, 4, 5]);
    assert_eq!(sequences(&log.read_from(5, usize::MAX).await.unwrap()), [6]);
    assert!(log.read_from(6, 10).await.unwrap().is_empty());
    assert!(log.read_from(0, 0).await.unwrap().is_empty());
    assert_eq!(*log.head().borrow(), 6);
    log.ping().await.unwrap();
}

async fn the_head_watch_changes_after_every_append(log: Arc<dyn EventLog>) {
    let mut head = log.head();
    assert_eq!(*head.borrow_and_update(), 0);
    for round in 0..3u64 {
        log.append(
            SESSION,
            "session-1",
            round * 2,
            events(SESSION, "session-1", round * 2, 2),
        )
        .await
        .unwrap();
        head.changed().await.unwrap();
        let now = *head.borrow_and_update();
        assert_eq!(now, round * 2 + 2);
        // Everything up to the announced head is readable.
        assert_eq!(log.read_from(0, 100).await.unwrap().len() as u64, now);
    }
}

async fn a_version_conflict_is_rejected_and_leaves_the_log_unchanged(log: Arc<dyn EventLog>) {
    log.append(SESSION, "session-1", 0, events(SESSION, "session-1", 0, 2))
        .await
        .unwrap();
    let before = everything(&*log).await;

    let stale = log
        .append(SESSION, "session-1", 1, events(SESSION, "session-1", 1, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::Conflict { ref aggregate_id, expected: 1, actual: 2 } if aggregate_id == "session-1"),
        "{stale:?}"
    );
    let fresh = log
        .append(SESSION, "session-1", 0, events(SESSION, "session-1", 0, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            fresh,
            StoreError::Conflict {
                expected: 0,
                actual: 2,
                ..
            }
        ),
        "{fresh:?}"
    );
    let ahead = log
        .append(SESSION, "session-1", 5, events(SESSION, "session-1", 5, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            ahead,
            StoreError::Conflict {
                expected: 5,
                actual: 2,
                ..
            }
        ),
        "{ahead:?}"
    );
    let unknown = log
        .append(SESSION, "session-2", 3, events(SESSION, "session-2", 3, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            unknown,
            StoreError::Conflict {
                expected: 3,
                actual: 0,
                ..
            }
        ),
        "{unknown:?}"
    );

    assert_eq!(everything(&*log).await, before);
    assert_eq!(*log.head().borrow(), 2);
    // The aggregate still accepts the right next version.
    log.append(SESSION, "session-1", 2, events(SESSION, "session-1", 2, 1))
        .await
        .unwrap();
}

async fn a_stale_multi_event_append_stores_none_of_its_events(log: Arc<dyn EventLog>) {
    log.append(INVOCATION, "inv-1", 0, events(INVOCATION, "inv-1", 0, 3))
        .await
        .unwrap();
    let before = everything(&*log).await;
    let stale = log
        .append(INVOCATION, "inv-1", 2, events(INVOCATION, "inv-1", 2, 4))
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            StoreError::Conflict {
                expected: 2,
                actual: 3,
                ..
            }
        ),
        "{stale:?}"
    );
    assert_eq!(everything(&*log).await, before);
    assert_eq!(log.load(INVOCATION, "inv-1").await.unwrap().len(), 3);
    // A correct multi-event append lands at consecutive sequences.
    let next = log
        .append(INVOCATION, "inv-1", 3, events(INVOCATION, "inv-1", 3, 4))
        .await
        .unwrap();
    assert_eq!((next.first_sequence, next.last_sequence), (4, 7));
}

async fn malformed_appends_are_rejected_without_writing(log: Arc<dyn EventLog>) {
    let invalid = |r: Result<Appended, StoreError>| matches!(r, Err(StoreError::InvalidAppend(_)));
    assert!(invalid(log.append(SESSION, "session-1", 0, vec![]).await));
    let mut gap = events(SESSION, "session-1", 0, 2);
    gap[1].aggregate_version = 3;
    assert!(invalid(log.append(SESSION, "session-1", 0, gap).await));
    assert!(invalid(
        log.append(SESSION, "session-1", 0, events(SESSION, "session-1", 1, 1))
            .await
    ));
    assert!(invalid(
        log.append(SESSION, "session-1", 0, events(SESSION, "session-2", 0, 1))
            .await
    ));
    assert!(invalid(
        log.append(
            SESSION,
            "session-1",
            0,
            events(INVOCATION, "session-1", 0, 1)
        )
        .await
    ));
    let mut twice = events(SESSION, "session-1", 0, 2);
    twice[1].event_id = twice[0].event_id;
    assert!(invalid(log.append(SESSION, "session-1", 0, twice).await));

    assert_eq!(*log.head().borrow(), 0);
    assert!(everything(&*log).await.is_empty());
}

async fn concurrent_appends_expecting_the_same_version_have_exactly_one_winner(
    log: Arc<dyn EventLog>,
) {
    log.append(INVOCATION, "inv-1", 0, events(INVOCATION, "inv-1", 0, 1))
        .await
        .unwrap();
    let mut stored = 1;
    for round in 0..10 {
        // Two events per append, so a loser's second event would collide as well.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    log.append(
                        INVOCATION,
                        "inv-1",
                        stored,
                        events(INVOCATION, "inv-1", stored, 2),
                    )
                    .await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreError::Conflict {
                    expected, actual, ..
                }) => assert_eq!((expected, actual), (stored, stored + 2)),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
        stored += 2;
    }
    let loaded = log.load(INVOCATION, "inv-1").await.unwrap();
    let versions: Vec<u64> = loaded
        .iter()
        .map(|e| e.envelope.aggregate_version)
        .collect();
    assert_eq!(versions, (1..=stored).collect::<Vec<_>>());
    assert_eq!(*log.head().borrow(), stored);
}

async fn rejected_requests_do_not_affect_the_others_appended_with_them(log: Arc<dyn EventLog>) {
    // Concurrent appenders: even ones are valid, odd ones conflict (expect version 5 of a new
    // aggregate).
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let id = format!("inv-{i}");
                let expected = if i % 2 == 0 { 0 } else { 5 };
                let result = log
                    .append(
                        INVOCATION,
                        &id,
                        expected,
                        events(INVOCATION, &id, expected, 2),
                    )
                    .await;
                (i, result)
            })
        })
        .collect();
    for task in tasks {
        let (i, result) = task.await.unwrap();
        if i % 2 == 0 {
            let appended = result.unwrap();
            assert_eq!(appended.last_sequence, appended.first_sequence + 1);
        } else {
            assert!(
                matches!(result, Err(StoreError::Conflict { .. })),
                "{result:?}"
            );
        }
    }
    assert_eq!(*log.head().borrow(), 100);
    let all = log.read_from(0, 1000).await.unwrap();
    assert_eq!(sequences(&all), (1..=100).collect::<Vec<_>>());
    // Each append's two events are adjacent in the global order.
    for pair in all.chunks(2) {
        assert_eq!(pair[0].envelope.aggregate_id, pair[1].envelope.aggregate_id);
    }
}

async fn a_retried_append_returns_the_original_positions_and_writes_nothing(
    log: Arc<dyn EventLog>,
) {
    log.append(SESSION, "session-0", 0, events(SESSION, "session-0", 0, 1))
        .await
        .unwrap();
    let batch = events(SESSION, "session-1", 0, 3);
    let single = events(SESSION, "session-2", 0, 1);
    let first = log
        .append(SESSION, "session-1", 0, batch.clone())
        .await
        .unwrap();
    let first_single = log
        .append(SESSION, "session-2", 0, single.clone())
        .await
        .unwrap();
    log.append(SESSION, "session-1", 3, events(SESSION, "session-1", 3, 1))
        .await
        .unwrap();
    let before = everything(&*log).await;

    // The retry carries the stale expected version; dedup answers before the version check.
    let retry = log
        .append(SESSION, "session-1", 0, batch.clone())
        .await
        .unwrap();
    assert_eq!(
        retry,
        Appended {
            first_sequence: first.first_sequence,
            last_sequence: first.last_sequence,
            duplicate: true
        }
    );
    let retry_single = log
        .append(SESSION, "session-2", 0, single.clone())
        .await
        .unwrap();
    assert_eq!(
        retry_single,
        Appended {
            duplicate: true,
            ..first_single
        }
    );
    assert_eq!(everything(&*log).await, before);
    assert_eq!(*log.head().borrow(), 6);

    // Overlapping but not identical: rejected, nothing written.
    let mut partial = batch.clone();
    partial[2] = event(SESSION, "session-1", 3);
    let refused = log.append(SESSION, "session-1", 0, partial).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidAppend(_))),
        "{refused:?}"
    );
    // The same ids claimed for another aggregate: rejected.
    for original in [batch, single] {
        let mut stolen = original;
        for e in &mut stolen {
            e.aggregate_id = "session-9".into();
        }
        let refused = log.append(SESSION, "session-9", 0, stolen).await;
        assert!(
            matches!(refused, Err(StoreError::InvalidAppend(_))),
            "{refused:?}"
        );
    }
    assert_eq!(everything(&*log).await, before);
}

async fn retries_racing_the_original_append_are_answered_with_its_positions(
    log: Arc<dyn EventLog>,
) {
    for round in 0..10 {
        let id = format!("inv-{round}");
        let batch = events(INVOCATION, &id, 0, 2);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (log, id, batch) = (Arc::clone(&log), id.clone(), batch.clone());
                tokio::spawn(async move { log.append(INVOCATION, &id, 0, batch).await.unwrap() })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(results.iter().filter(|a| !a.duplicate).count(), 1);
        let positions: Vec<_> = results
            .iter()
            .map(|a| (a.first_sequence, a.last_sequence))
            .collect();
        assert!(
            positions.iter().all(|p| *p == positions[0]),
            "{positions:?}"
        );
    }
    assert_eq!(*log.head().borrow(), 20);
}

/// Runs each contract function against both logs, as `<function>` in `file` and `jetstream`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (log, _backing) = super::file_log().await;
                    super::$name(log).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (log, _backing) = super::jetstream_log().await;
                    super::$name(log).await;
                }
            )*
        }
    };
}

contract!(
    appended_events_are_loaded_per_aggregate_and_read_in_global_order,
    the_head_watch_changes_after_every_append,
    a_version_conflict_is_rejected_and_leaves_the_log_unchanged,
    a_stale_multi_event_append_stores_none_of_its_events,
    malformed_appends_are_rejected_without_writing,
    concurrent_appends_expecting_the_same_version_have_exactly_one_winner,
    rejected_requests_do_not_affect_the_others_appended_with_them,
    a_retried_append_returns_the_original_positions_and_writes_nothing,
    retries_racing_the_original_append_are_answered_with_its_positions,
);
