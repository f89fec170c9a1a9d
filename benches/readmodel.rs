//! Benchmark harness (not a timed test) for the read-model stores: the latency of one put (a
//! one-event batch: load, fold, put-if-newer script) and of one get, p50 and p99, and the
//! throughput of batch apply (1024 events a batch), against the memory store and against a
//! `redis-server` this harness starts on a free port of its own (never 6379).
//!
//! Run: `cargo bench --bench readmodel` (add `-- --quick` for a short run). Needs
//! `redis-server` on PATH (`apt-get install redis-server`).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;
use workspace::readmodel::{MemoryStore, ReadModelStore, Retention, ValkeyConfig, ValkeyStore};
use workspace_events::*;

// The same allocator as the `workspace` binary.
#[global_allocator]
static ALLOCATOR: workspace::alloc::Allocator = workspace::alloc::Allocator;

/// A log under construction: sequences and aggregate versions in order.
struct Log {
    events: Vec<Arc<RecordedEvent>>,
    versions: std::collections::HashMap<String, u64>,
}

impl Log {
    fn new() -> Self {
        Log {
            events: Vec::new(),
            versions: Default::default(),
        }
    }

    fn push<E: EventContract>(&mut self, id: &str, e: &E) -> Arc<RecordedEvent> {
        let version = self.versions.entry(id.to_owned()).or_default();
        *version += 1;
        let sequence = self.events.len() as u64 + 1;
        let event = Arc::new(RecordedEvent {
            sequence,
            envelope: EventEnvelope {
                event_id: ulid::Ulid::from_parts(sequence, 1),
                aggregate_type: E::AGGREGATE_TYPE,
                aggregate_id: id.into(),
                aggregate_version: *version,
                event_type: e.event_type().into(),
                schema_version: e.schema_version(),
                occurred_at: OffsetDateTime::now_utc(),
                correlation_id: None,
                causation_id: None,
                actor: None,
                payload: e.to_payload(),
            },
        });
        self.events.push(event.clone());
        event
    }

    fn session(&mut self, id: &str) {
        let now = OffsetDateTime::now_utc();
        self.push(
            id,
            &SessionEvent::Created(SessionCreated {
                session_id: id.into(),
                principal: Principal {
                    tenant_id: "tenant-bench".into(),
                    actor_id: "agent-bench".into(),
                    roles: vec!["developer".into()],
                },
                source: WorkspaceSource::Empty,
                allowed_paths: vec![".".into()],
                metadata: Default::default(),
                created_at: now,
                expires_at: now + Duration::from_secs(3600),
            }),
        );
    }

    fn queued(&mut self, id: &str, session: &str) -> Arc<RecordedEvent> {
        let now = OffsetDateTime::now_utc();
        let request = InvocationRequest {
            invocation_id: id.into(),
            session_id: session.into(),
            tool_name: "fs.read_file".into(),
            correlation_id: Some(format!("corr-{id}")),
            approved: false,
            args: Some(json!({"path": "src/main.rs"})),
            args_ref: None,
            requested_at: now,
        };
        self.push(
            id,
            &InvocationEvent::Queued(InvocationQueued {
                request: request.into(),
                timeout_seconds: 15,
                start_deadline: now + Duration::from_secs(60),
            }),
        )
    }

    fn started(&mut self, id: &str) -> Arc<RecordedEvent> {
        let now = OffsetDateTime::now_utc();
        self.push(
            id,
            &InvocationEvent::Started(InvocationStarted {
                executor_id: "executor-bench".into(),
                started_at: now,
                deadline: now + Duration::from_secs(15),
            }),
        )
    }

    fn completed(&mut self, id: &str) -> Arc<RecordedEvent> {
        self.push(
            id,
            &InvocationEvent::Completed(Arc::new(InvocationCompleted {
                outcome: InvocationOutcome::Succeeded,
                exit_code: Some(0),
                duration_ns: 3_100_000,
                output: Some(json!({"content": "fn main() {}\n".repeat(20), "bytes": 260}).into()),
                output_ref: None,
                logs: vec![],
                logs_ref: None,
                artifacts: vec![],
                error: None,
                completed_at: OffsetDateTime::now_utc(),
            })),
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "  {what:<44} p50 {:>8.1} µs   p99 {:>8.1} µs   ({} samples)",
        percentile(&samples, 0.50).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.len()
    );
}

async fn bench(name: &str, store: &dyn ReadModelStore, quick: bool) {
    println!("{name}");
    let n = if quick { 300 } else { 3000 };
    let mut log = Log::new();
    log.session("s-bench");
    store.apply(0, &log.events, Vec::new()).await.unwrap();

    // Put: one-event batches, as a projector keeping up with a trickle applies them.
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let event = log.queued(&format!("inv-{i:06}"), "s-bench");
        let started = Instant::now();
        store
            .apply(event.sequence - 1, &[event], Vec::new())
            .await
            .unwrap();
        samples.push(started.elapsed());
    }
    report("put (1-event batch: queued)", samples);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let event = log.started(&format!("inv-{i:06}"));
        let started = Instant::now();
        store
            .apply(event.sequence - 1, &[event], Vec::new())
            .await
            .unwrap();
        samples.push(started.elapsed());
    }
    report("put (1-event batch: started, view exists)", samples);

    // Get: an invocation view by id, and the newest page of the session's invocations.
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("inv-{:06}", (i * 7919) % n);
        let started = Instant::now();
        let view = store.invocation(&id).await.unwrap();
        samples.push(started.elapsed());
        assert!(view.is_some());
    }
    report("get invocation", samples);
    let mut samples = Vec::with_capacity(n / 10);
    for _ in 0..n / 10 {
        let started = Instant::now();
        let page = store.session_invocations("s-bench", 0, 50).await.unwrap();
        samples.push(started.elapsed());
        assert_eq!(page.items.len(), 50);
    }
    report("page of 50 of a session's invocations", samples);

    // Batch apply: sessions with invocations run to completion, 1024 events a batch.
    let sessions = if quick { 20 } else { 100 };
    let from = log.events.len();
    for s in 0..sessions {
        let sid = format!("s-{s:04}");
        log.session(&sid);
        for i in 0..100 {
            let iid = format!("inv-{s:04}-{i:03}");
            log.queued(&iid, &sid);
            log.started(&iid);
            log.completed(&iid);
        }
    }
    let events = &log.events[from..];
    let started = Instant::now();
    for chunk in events.chunks(1024) {
        store
            .apply(chunk[0].sequence - 1, chunk, Vec::new())
            .await
            .unwrap();
    }
    let took = started.elapsed();
    println!(
        "  {:<44} {:>8.0} events/s   ({} events in {:.2} s)",
        "batch apply (1024 events a batch)",
        events.len() as f64 / took.as_secs_f64(),
        events.len(),
        took.as_secs_f64()
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(dir: &std::path::Path) -> (Server, u16) {
    let port = loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if port != 6379 {
            break port;
        }
    };
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server: {e} (apt-get install redis-server)"));
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    (server, port)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let memory = MemoryStore::new(Retention::default());
        bench("memory store", &memory, quick).await;

        let dir = tempfile::tempdir().expect("tempdir");
        let (_server, port) = start_redis(dir.path());
        let config = ValkeyConfig {
            host: "127.0.0.1".into(),
            port,
            ..ValkeyConfig::default()
        };
        let valkey = ValkeyStore::connect(&config).await.expect("connects");
        bench(
            &format!("valkey store (redis-server 7.0 on 127.0.0.1:{port})"),
            &valkey,
            quick,
        )
        .await;
    });
}
