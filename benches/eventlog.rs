//! Benchmark harness (not a timed test) for the embedded event log: single-event appends from 1
//! and 64 concurrent appenders (each to its own aggregate, with optimistic concurrency) under
//! the `interval` (default) and `always` fsync policies, reporting appends/s and append latency
//! percentiles; then `read_from` throughput from the tail cache and from disk.
//!
//! Run: `cargo bench --bench eventlog` (add `-- --quick` for a short run). The log lives in a
//! temporary directory on the same filesystem as `TMPDIR`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use ulid::Ulid;
use workspace::eventstore::file_log::FileEventLogOptions;
use workspace::eventstore::{EventLog, FileEventLog, FsyncPolicy};
use workspace_events::{Actor, AggregateType, EventEnvelope};

// The same allocator as the `workspace` binary.
#[global_allocator]
static ALLOCATOR: workspace::alloc::Allocator = workspace::alloc::Allocator;

/// A realistic small event: an invocation state change (about 450 bytes encoded).
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
        causation_id: Some("evt-01JBENCHMARKCAUSATION0000".into()),
        actor: Some(Actor {
            tenant_id: "tenant-bench".into(),
            actor_id: "agent-bench".into(),
        }),
        payload: serde_json::json!({
            "tool": "fs.read_file",
            "exit_code": 0,
            "duration_ms": 3,
            "output": {"digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "bytes": 512},
        })
        .into(),
    }
}

struct Run {
    appends: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// `appenders` tasks append single events to their own aggregates until `duration` has passed.
async fn append_load(log: &Arc<FileEventLog>, appenders: usize, duration: Duration) -> Run {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let log = Arc::clone(log);
            tokio::spawn(async move {
                let id = format!("inv-{}", Ulid::generate());
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut version = 0;
                while Instant::now() < deadline {
                    let event = envelope(&id, version + 1);
                    let began = Instant::now();
                    let appended = log
                        .append(AggregateType::Invocation, &id, version, vec![event])
                        .await;
                    latencies.push(began.elapsed());
                    if let Err(e) = appended {
                        panic!("appender {a}: {e}");
                    }
                    version += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("appender task"));
    }
    Run {
        appends: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

async fn open(dir: &Path, fsync: FsyncPolicy) -> Arc<FileEventLog> {
    FileEventLog::open(dir, fsync)
        .await
        .expect("open event log")
}

async fn append_scenario(name: &str, fsync: FsyncPolicy, appenders: usize, duration: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), fsync).await;
    // Warm-up: allocator, page cache, file extents.
    append_load(&log, appenders, duration / 10).await;
    let mut run = append_load(&log, appenders, duration).await;
    run.latencies.sort_unstable();
    println!(
        "| {name} | {appenders} | {} | {:.0} | {} | {} | {} |",
        run.appends,
        run.appends as f64 / run.elapsed.as_secs_f64(),
        micros(percentile(&run.latencies, 0.50)),
        micros(percentile(&run.latencies, 0.99)),
        micros(percentile(&run.latencies, 1.0)),
    );
    log.close().await.expect("close");
}

async fn read_scenario(events: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = FileEventLogOptions {
        fsync: FsyncPolicy::Never,
        ..FileEventLogOptions::default()
    };
    let log = FileEventLog::open_with(dir.path(), options.clone())
        .await
        .expect("open");
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let id = format!("inv-read-{t}");
            for v in 0..events / 64 {
                log.append(
                    AggregateType::Invocation,
                    &id,
                    v,
                    vec![envelope(&id, v + 1)],
                )
                .await
                .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let head = *log.head().borrow();

    // The tail cache: the last 8192 events, as the projector reads right behind the head.
    let cached_from = head.saturating_sub(8192);
    let start = Instant::now();
    let mut read = 0;
    for _ in 0..20 {
        let mut after = cached_from;
        while after < head {
            let page = log.read_from(after, 1024).await.expect("read");
            read += page.len();
            after = page.last().map_or(head, |e| e.sequence);
        }
    }
    let cached_rate = read as f64 / start.elapsed().as_secs_f64();

    // A full replay from sequence 0 (positioned reads, CRC check, JSON decode).
    let start = Instant::now();
    let mut read = 0;
    let mut after = 0;
    while after < head {
        let page = log.read_from(after, 1024).await.expect("read");
        read += page.len();
        after = page.last().map_or(head, |e| e.sequence);
    }
    let disk_rate = read as f64 / start.elapsed().as_secs_f64();
    log.close().await.expect("close");
    drop(log);

    // Reopen: scan, verify and index the whole file.
    let start = Instant::now();
    let log = FileEventLog::open_with(dir.path(), options)
        .await
        .expect("reopen");
    let reopen = start.elapsed();
    println!();
    println!("| read path | events | events/s |");
    println!("|---|---|---|");
    println!(
        "| read_from, tail cache | {} | {cached_rate:.0} |",
        20 * 8192
    );
    println!("| read_from, full replay (mostly disk) | {head} | {disk_rate:.0} |");
    println!(
        "| open (scan + index {head} events) | {head} | {:.0} |",
        head as f64 / reopen.as_secs_f64()
    );
    log.close().await.expect("close");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // Any other argument not starting with `-` (cargo passes `--bench`) selects scenarios
    // whose label contains it, e.g. `interval/64` or `read`.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected =
        |label: &str| filters.is_empty() || filters.iter().any(|f| label.contains(f.as_str()));
    let duration = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(4)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("| fsync | appenders | appends | appends/s | p50 µs | p99 µs | max µs |");
        println!("|---|---|---|---|---|---|---|");
        let scenarios = [
            ("interval", FsyncPolicy::default(), 1),
            ("always", FsyncPolicy::Always, 1),
            ("interval", FsyncPolicy::default(), 64),
            ("always", FsyncPolicy::Always, 64),
            ("never", FsyncPolicy::Never, 64),
        ];
        for (name, fsync, appenders) in scenarios {
            if selected(&format!("{name}/{appenders}")) {
                append_scenario(name, fsync, appenders, duration).await;
            }
        }
        if selected("read") {
            read_scenario(if quick { 50_000 } else { 200_000 }).await;
        }
    });
}
