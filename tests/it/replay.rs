//! `workspace replay` on the distributed backends: it rebuilds the read models in Valkey into a
//! fresh generation from the JetStream stream while the service keeps running, switches them in
//! atomically and deletes the old generation; every GET answers byte for byte the same. A
//! rebuild overtaken by the live projector catches up before it takes over, and a restarted
//! projector resumes from the checkpoint stored with the views.

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hyper::StatusCode;
use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;
use workspace::eventstore::{Appended, EventLog, FsyncPolicy, StoreError};
use workspace::projector::Projector;
use workspace::telemetry::Metrics;
use workspace_events::{AggregateType, EventEnvelope, RecordedEvent};
use workspace_projections::Applied;

use crate::distributed::on_valkey;
use crate::support::{Backends, Client, Mode, TestServer, eventually, get_bytes};
use crate::valkey::RedisServer;

/// The flags that point `workspace replay` at the read models [`on_valkey`] configures.
fn valkey_args(port: u16) -> Vec<OsString> {
    [
        "--invocation-store-backend",
        "valkey",
        "--session-store-backend",
        "valkey",
        "--invocation-store-key-prefix",
        "it:invocation",
        "--session-store-key-prefix",
        "it:session",
        "--invocation-store-ttl-seconds",
        "0",
        "--session-store-ttl-seconds",
        "0",
    ]
    .into_iter()
    .map(OsString::from)
    .chain([
        OsString::from("--valkey-addr"),
        format!("127.0.0.1:{port}").into(),
    ])
    .collect()
}

/// The active generation (`"0"` before any rebuild).
async fn active_generation(redis: &RedisServer) -> String {
    let mut con = redis.client().await;
    let active: Option<String> = redis::cmd("GET")
        .arg("it:invocation:active")
        .query_async(&mut con)
        .await
        .expect("GET");
    active.unwrap_or_else(|| "0".into())
}

/// The checkpoint stored with the active generation's views.
async fn stored_checkpoint(redis: &RedisServer) -> u64 {
    let generation = active_generation(redis).await;
    let mut con = redis.client().await;
    let checkpoint: Option<u64> = redis::cmd("GET")
        .arg(format!("it:invocation:{generation}:checkpoint"))
        .query_async(&mut con)
        .await
        .expect("GET");
    checkpoint.unwrap_or(0)
}

/// Every key under the test's prefixes (SCAN, as an operator would).
async fn keys(redis: &RedisServer) -> Vec<String> {
    let mut con = redis.client().await;
    let mut cursor: u64 = 0;
    let mut all = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("it:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("SCAN");
        all.extend(keys);
        if next == 0 {
            all.sort();
            return all;
        }
        cursor = next;
    }
}

/// The keys of generation `generation` (`<prefix>:<generation>:…`).
fn of_generation<'k>(keys: &'k [String], generation: &str) -> Vec<&'k String> {
    keys.iter()
        .filter(|k| {
            ["it:invocation:", "it:session:"].iter().any(|p| {
                k.strip_prefix(p)
                    .and_then(|rest| rest.split_once(':'))
                    .is_some_and(|(g, _)| g == generation)
            })
        })
        .collect()
}

/// Every GET a client can make of what the test created, with its exact answer.
async fn every_get(server: &TestServer, paths: &[String]) -> Vec<(String, StatusCode, Bytes)> {
    let mut answers = Vec::new();
    for path in paths {
        let (status, body) = get_bytes(server.addr, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
        answers.push((path.clone(), status, body));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_valkey_beside_a_running_service_and_switches_with_every_get_the_same() {
    let backends = Backends::start(Mode::JetStream);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    let first = server.create_session(json!({})).await;
    let second = server.create_session(json!({})).await;
    let mut invocations = Vec::new();
    for (session, tool, body) in [
        (
            &first,
            "fs.write_file",
            json!({"approved": true, "correlation_id": "k-1", "args": {"path": "a.txt", "content": "x"}}),
        ),
        (&first, "fs.read_file", json!({"args": {"path": "a.txt"}})),
        (
            &first,
            "fs.write_file",
            json!({"args": {"path": "b.txt", "content": "not approved"}}),
        ),
        (&second, "fs.list", json!({"args": {}})),
    ] {
        let (status, body) = server.invoke(session, tool, body).await;
        assert!(
            status.is_success() || status == StatusCode::PRECONDITION_REQUIRED,
            "{status}: {body}"
        );
        invocations.push(body["invocation"]["id"].as_str().expect("id").to_owned());
    }
    let (status, _, body) = server
        .call(
            hyper::Method::DELETE,
            &format!("/v1/sessions/{second}"),
            None,
        )
        .await;
    assert!(status.is_success(), "{status}: {body}");
    let mut paths = Vec::new();
    for session in [&first, &second] {
        paths.push(format!("/v1/sessions/{session}"));
        paths.push(format!("/v1/sessions/{session}/invocations"));
        paths.push(format!(
            "/v1/sessions/{session}/invocations?limit=1&offset=1"
        ));
        paths.push(format!("/v1/sessions/{session}/events"));
    }
    for id in &invocations {
        paths.push(format!("/v1/invocations/{id}"));
        paths.push(format!("/v1/invocations/{id}/events"));
    }
    let head = *server.app().log.head().borrow();
    assert!(
        eventually(Duration::from_secs(10), || async {
            stored_checkpoint(&redis).await >= head
        })
        .await,
        "the service's projector reached the head"
    );
    let before = every_get(&server, &paths).await;
    let old = active_generation(&redis).await;
    assert!(!of_generation(&keys(&redis).await, &old).is_empty());

    // The replay runs while the service serves.
    let started = Instant::now();
    let output = std::process::Command::new(crate::support::runner_exe())
        .arg("replay")
        .args(backends.replay_args(dir.path()))
        .args(valkey_args(redis.port))
        .env_clear()
        .output()
        .expect("replay runs");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["events"], head, "{summary}");
    assert_eq!(summary["sessions"]["ready"], 1, "{summary}");
    assert_eq!(summary["sessions"]["closed"], 1, "{summary}");
    assert_eq!(summary["invocations"]["succeeded"], 3, "{summary}");
    assert_eq!(summary["invocations"]["denied"], 1, "{summary}");
    eprintln!("replay of {head} events into Valkey took {elapsed:?} (process): {summary}");

    let new = active_generation(&redis).await;
    assert_ne!(new, old, "the active generation changed");
    assert_eq!(summary["generation"].to_string(), new, "{summary}");
    let keys = keys(&redis).await;
    assert_eq!(
        of_generation(&keys, &old),
        Vec::<&String>::new(),
        "{keys:#?}"
    );
    assert!(!of_generation(&keys, &new).is_empty(), "{keys:#?}");

    // The running service now reads the new generation: every GET answers the same bytes.
    let after = every_get(&server, &paths).await;
    for ((path, _, was), (_, _, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "{path} changed");
    }
    // The correlation index was rebuilt: a retry finds the first invocation.
    let (status, body) = server
        .invoke(
            &first,
            "fs.write_file",
            json!({"approved": true, "correlation_id": "k-1", "args": {"path": "a.txt", "content": "y"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["id"], invocations[0].as_str(), "{body}");
    // Its projector carries on in the new generation.
    let (status, body) = server
        .invoke(&first, "fs.stat", json!({"args": {"path": "a.txt"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, list) = server
        .get(&format!("/v1/sessions/{first}/invocations"))
        .await;
    assert_eq!(list["total"], 4, "{list}");
    assert_eq!(active_generation(&redis).await, new);
    server.stop().await;
}

/// A log that counts the events it hands out and, the first time a reader reaches its end,
/// runs `at_end` (which may append) before saying so.
struct Watched {
    inner: Arc<dyn EventLog>,
    read: AtomicU64,
    at_end: Option<Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>>,
    fired: AtomicBool,
}

impl Watched {
    fn new(inner: Arc<dyn EventLog>) -> Self {
        Watched {
            inner,
            read: AtomicU64::new(0),
            at_end: None,
            fired: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl EventLog for Watched {
    async fn append(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<EventEnvelope>,
    ) -> Result<Appended, StoreError> {
        self.inner
            .append(aggregate_type, aggregate_id, expected_version, events)
            .await
    }

    async fn load(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        self.inner.load(aggregate_type, aggregate_id).await
    }

    async fn read_from(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        let events = self.inner.read_from(after, limit).await?;
        self.read.fetch_add(events.len() as u64, Ordering::SeqCst);
        if events.is_empty()
            && let Some(at_end) = &self.at_end
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            at_end().await;
        }
        Ok(events)
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.inner.head()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_overtaken_by_the_live_projector_catches_up_before_it_takes_over() {
    let backends = Backends::start(Mode::JetStream);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    server.create_session(json!({})).await;
    let mut config = backends.config(dir.path());
    on_valkey(redis.port)(&mut config);
    let log = workspace::app::open_event_log(
        &config.event_store,
        &config.events_dir,
        &FsyncPolicy::Never,
    )
    .await
    .expect("the stream opens");
    let active = workspace::app::open_read_models(&config.read_models)
        .await
        .expect("Valkey");
    // When the rebuild first reaches the end of the log, a client creates a session and the
    // service's projector moves the active generation past the rebuild.
    let mut watched = Watched::new(log.clone());
    let (client, probe, head) = (Client { addr: server.addr }, active.clone(), log.head());
    watched.at_end = Some(Box::new(move || {
        let (probe, head) = (probe.clone(), head.clone());
        Box::pin(async move {
            let (status, body) = client
                .post(
                    "/v1/sessions",
                    json!({"principal": {"tenant_id": "acme", "actor_id": "bob", "roles": ["developer"]}}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let appended = *head.borrow();
            assert!(
                eventually(Duration::from_secs(10), || {
                    let probe = probe.clone();
                    async move { probe.checkpoint().await.unwrap_or(0) >= appended }
                })
                .await,
                "the live projector applied the new session"
            );
        })
    }));
    let old = active_generation(&redis).await;
    let mut sessions = 0;
    let rebuilt = workspace::replay::rebuild(Arc::new(watched), &*active, |a| {
        sessions += usize::from(matches!(a, Applied::Session { .. }));
    })
    .await
    .expect("the rebuild takes over");
    assert!(rebuilt.catch_ups >= 1, "{rebuilt:?}");
    assert_eq!(rebuilt.events, *log.head().borrow(), "{rebuilt:?}");
    assert_eq!(
        rebuilt.generation.to_string(),
        active_generation(&redis).await
    );
    assert_ne!(active_generation(&redis).await, old);
    assert!(
        sessions >= 4,
        "both sessions created and provisioned: {sessions}"
    );
    // Both sessions are in the generation that took over.
    let bob = active
        .principal_sessions("acme", "bob", 0, 10)
        .await
        .expect("a page");
    assert_eq!(
        bob.total, 1,
        "the session created during the rebuild is there"
    );
    let alice = active
        .principal_sessions("acme", "alice", 0, 10)
        .await
        .expect("a page");
    assert_eq!(alice.total, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_projector_resumes_from_the_checkpoint_stored_with_the_views() {
    let backends = Backends::start(Mode::JetStream);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    let session = server.create_session(json!({})).await;
    let (status, body) = server
        .invoke(&session, "fs.list", json!({"args": {}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stopped_at = *server.app().log.head().borrow();
    server.stop().await;
    assert_eq!(stored_checkpoint(&redis).await, stopped_at);

    // More events while no projector writes to Valkey: a service with its read models in
    // memory appends them to the same stream.
    let other = TestServer::start_with(&backends, dir.path(), |_| {}).await;
    let later = other.create_session(json!({})).await;
    let head = *other.app().log.head().borrow();
    other.stop().await;
    assert!(head > stopped_at);
    assert_eq!(
        stored_checkpoint(&redis).await,
        stopped_at,
        "Valkey untouched"
    );

    // The projector a restart builds starts from the stored checkpoint and reads only the
    // events after it: no gap, nothing applied twice.
    let mut config = backends.config(dir.path());
    on_valkey(redis.port)(&mut config);
    let log = workspace::app::open_event_log(
        &config.event_store,
        &config.events_dir,
        &FsyncPolicy::Never,
    )
    .await
    .expect("the stream opens");
    let store = workspace::app::open_read_models(&config.read_models)
        .await
        .expect("Valkey");
    let watched = Arc::new(Watched::new(log));
    let projector = Projector::new(watched.clone(), store.clone(), Arc::new(Metrics::default()))
        .await
        .expect("a projector");
    assert_eq!(projector.checkpoint(), stopped_at);
    assert_eq!(projector.catch_up().await.expect("catches up"), head);
    assert_eq!(watched.read.load(Ordering::SeqCst), head - stopped_at);
    assert_eq!(stored_checkpoint(&redis).await, head);
    let view = store
        .session(&later)
        .await
        .expect("a read")
        .expect("the later session");
    assert_eq!(view.id, later);

    // And a whole restarted service agrees.
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    let (status, _, body) = server.get(&format!("/v1/sessions/{later}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

/// Appends `count` events of one session aggregate in atomic batches of 500: a backlog longer
/// than one read (1000 events), so a replay reads it ahead.
async fn backlog(log: &dyn EventLog, id: &str, count: u64) {
    for after in (0..count).step_by(500) {
        let events = crate::eventlog_contract::events(
            AggregateType::Session,
            id,
            after,
            500.min(count - after),
        );
        log.append(AggregateType::Session, id, after, events)
            .await
            .expect("append");
    }
}

/// What a replay into memory showed for each event: each must be folded once (an event
/// folded twice would show `Skipped` the second time; these `session.noted` events are not
/// known to the views, so a first fold shows `Rejected`).
async fn folded_once(log: Arc<dyn EventLog>, count: u64) {
    let mut outcomes = Vec::new();
    let (checkpoint, _) = workspace::replay::into_memory(log, |a| outcomes.push(a.clone()))
        .await
        .expect("replay");
    assert_eq!(checkpoint, count);
    assert_eq!(outcomes.len() as u64, count, "one outcome per event");
    assert!(
        outcomes
            .iter()
            .all(|a| matches!(a, Applied::Rejected { .. })),
        "every event folded once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_over_a_backlog_reads_ahead_and_folds_every_event_once_from_either_store() {
    const COUNT: u64 = 2_750;
    let server = crate::nats::NatsServer::start();
    let writer = workspace::eventstore::jetstream::JetStreamEventLog::connect(
        workspace::eventstore::jetstream::JetStreamOptions::new(server.url()),
    )
    .await
    .expect("connect");
    backlog(&writer, "ses-backlog", COUNT).await;
    let reader = || async {
        Arc::new(
            workspace::eventstore::jetstream::JetStreamEventLog::connect(
                workspace::eventstore::jetstream::JetStreamOptions::new(server.url()),
            )
            .await
            .expect("connect"),
        )
    };

    // The store's read-ahead (an ordered consumer) hands out what `read_from` does, in order,
    // in batches of at most the size asked, and nothing past the end.
    let log = reader().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let reading = tokio::spawn({
        let log = Arc::clone(&log);
        async move { log.read_ahead(700, 1000, tx).await }
    });
    let mut streamed = Vec::new();
    while let Some(batch) = rx.recv().await {
        let batch = batch.expect("a batch");
        assert!(!batch.is_empty() && batch.len() <= 1000, "{}", batch.len());
        streamed.extend(batch);
    }
    reading.await.expect("the read-ahead ends");
    let read = log.read_from(700, usize::MAX).await.expect("read");
    assert_eq!(
        crate::eventlog_contract::sequences(&streamed),
        (701..=COUNT).collect::<Vec<_>>()
    );
    assert_eq!(
        crate::eventlog_contract::envelopes(&streamed),
        crate::eventlog_contract::envelopes(&read)
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    log.read_ahead(COUNT, 1000, tx).await;
    assert!(rx.recv().await.is_none(), "nothing past the end");

    folded_once(reader().await, COUNT).await;

    // The embedded log reads ahead with `read_from` in a loop: the same fold.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = workspace::eventstore::FileEventLog::open(dir.path(), FsyncPolicy::Never)
        .await
        .expect("the log opens");
    backlog(&*file, "ses-backlog", COUNT).await;
    folded_once(file, COUNT).await;
}
