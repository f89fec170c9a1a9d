//! The work queue contract, run against the in-process queue and the JetStream pull consumer
//! on a real nats-server (the pinned 2.15.1): delivery, redelivery after the ack wait,
//! `in_progress`, `nak`, the last delivery, the backlog. Then what only the durable consumer
//! shows: a worker in another connection, a restarted worker, the consumer's settings.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use time::OffsetDateTime;
use ulid::Ulid;
use workspace::eventstore::EventLog;
use workspace::eventstore::jetstream::{JetStreamEventLog, JetStreamOptions};
use workspace::workqueue::jetstream::{JetStreamWorkQueue, JetStreamWorkQueueOptions, work_filter};
use workspace::workqueue::memory::{MemoryOptions, MemoryWorkQueue};
use workspace::workqueue::{Job, Work, WorkQueue};
use workspace_events::{
    AggregateType, EventEnvelope, InvocationEvent, InvocationQueued, InvocationRequest,
};

use crate::nats::NatsServer;

/// Short enough for tests, long enough for a loaded two-core host to settle a delivery.
const ACK_WAIT: Duration = Duration::from_millis(1000);
const SESSION: &str = "session-wq";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    JetStream,
}

/// One queue under test: where jobs are queued, and how workers are opened on it.
struct Harness {
    backend: Backend,
    max_deliver: u32,
    sequence: AtomicU64,
}

enum Backend {
    Memory(MemoryWorkQueue),
    JetStream {
        log: Box<JetStreamEventLog>,
        // Dropped last: the server outlives the connections.
        server: Box<NatsServer>,
    },
}

impl Harness {
    async fn new(kind: Kind, max_deliver: u32) -> Self {
        let backend = match kind {
            Kind::Memory => Backend::Memory(MemoryWorkQueue::new(MemoryOptions {
                ack_wait: ACK_WAIT,
                max_deliver,
            })),
            Kind::JetStream => {
                let server = NatsServer::start();
                let log = JetStreamEventLog::connect(JetStreamOptions::new(server.url()))
                    .await
                    .unwrap_or_else(|e| panic!("connect: {e}"));
                Backend::JetStream {
                    log: Box::new(log),
                    server: Box::new(server),
                }
            }
        };
        Self {
            backend,
            max_deliver,
            sequence: AtomicU64::new(0),
        }
    }

    fn options(&self) -> JetStreamWorkQueueOptions {
        JetStreamWorkQueueOptions {
            ack_wait: ACK_WAIT,
            max_deliver: self.max_deliver,
            // Short, so a test also goes through renewed pull requests.
            pull_expires: Duration::from_secs(1),
            ..JetStreamWorkQueueOptions::default()
        }
    }

    /// A worker on the queue: the shared memory queue, or a queue in its own connection on
    /// the one durable consumer.
    async fn worker(&self) -> Arc<dyn WorkQueue> {
        match &self.backend {
            Backend::Memory(queue) => Arc::new(queue.clone()),
            Backend::JetStream { server, .. } => Arc::new(self.jetstream_worker(server).await),
        }
    }

    async fn jetstream_worker(&self, server: &NatsServer) -> JetStreamWorkQueue {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let context = async_nats::jetstream::new(client);
        JetStreamWorkQueue::open(
            &context,
            workspace_events::subjects::STREAM_NAME,
            self.options(),
        )
        .await
        .unwrap_or_else(|e| panic!("open the work queue: {e}"))
    }

    /// Queues the invocation `id` as the service does (the memory queue is offered it after
    /// the commit; JetStream's work is the appended event); returns its global sequence.
    async fn enqueue(&self, id: &str) -> u64 {
        let queued = queued(id);
        match &self.backend {
            Backend::Memory(queue) => {
                let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
                queue.offer(Job {
                    invocation_id: id.to_owned(),
                    session_id: SESSION.to_owned(),
                    sequence,
                    queued: Some(queued),
                });
                sequence
            }
            Backend::JetStream { log, .. } => {
                log.append(
                    AggregateType::Invocation,
                    id,
                    0,
                    vec![envelope(id, &queued)],
                )
                .await
                .unwrap_or_else(|e| panic!("append: {e}"))
                .last_sequence
            }
        }
    }
}

fn queued(id: &str) -> InvocationQueued {
    let now = OffsetDateTime::now_utc();
    InvocationQueued {
        request: Arc::new(InvocationRequest {
            invocation_id: id.to_owned(),
            session_id: SESSION.to_owned(),
            tool_name: "fs.read_file".to_owned(),
            correlation_id: None,
            approved: false,
            args: Some(serde_json::json!({ "path": "README.md" })),
            args_ref: None,
            requested_at: now,
        }),
        timeout_seconds: 30,
        start_deadline: now + time::Duration::MINUTE,
    }
}

fn envelope(id: &str, queued: &InvocationQueued) -> EventEnvelope {
    EventEnvelope {
        event_id: Ulid::generate(),
        aggregate_type: AggregateType::Invocation,
        aggregate_id: id.to_owned(),
        aggregate_version: 1,
        event_type: InvocationEvent::QUEUED.to_owned(),
        schema_version: 1,
        occurred_at: queued.request.requested_at,
        correlation_id: None,
        causation_id: None,
        actor: None,
        payload: serde_json::to_value(queued).expect("encode").into(),
    }
}

/// The next delivery within `within`, or `None`.
async fn next_within<J: workspace::workqueue::Task>(
    queue: &dyn WorkQueue<J>,
    within: Duration,
) -> Option<Work<J>> {
    match tokio::time::timeout(within, queue.next()).await {
        Ok(Ok(work)) => Some(work),
        Ok(Err(e)) => panic!("next: {e}"),
        Err(_) => None,
    }
}

async fn next_now(queue: &dyn WorkQueue) -> Work {
    next_within(queue, Duration::from_secs(10))
        .await
        .expect("a delivery within 10 s")
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory_queue {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Kind::Memory).await
                }
            )*
        }
        mod jetstream_queue {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Kind::JetStream).await
                }
            )*
        }
    };
}

contract!(
    a_delivery_carries_the_invocation_its_session_its_sequence_and_the_queued_event,
    two_workers_split_the_work_and_nothing_acked_is_delivered_again,
    an_unsettled_delivery_is_delivered_again_after_the_ack_wait_as_delivery_2,
    in_progress_keeps_a_delivery_from_being_delivered_again_past_the_ack_wait,
    a_nak_with_a_delay_is_delivered_again_after_the_delay,
    after_the_last_delivery_a_job_is_not_delivered_again_and_the_last_is_marked,
    a_worker_started_later_gets_the_backlog_in_order,
);

async fn a_delivery_carries_the_invocation_its_session_its_sequence_and_the_queued_event(
    kind: Kind,
) {
    let harness = Harness::new(kind, 5).await;
    let worker = harness.worker().await;
    let sequence = harness.enqueue("inv-carried").await;
    let work = next_now(worker.as_ref()).await;
    assert_eq!(work.job.invocation_id, "inv-carried");
    assert_eq!(work.job.session_id, SESSION);
    assert_eq!(work.job.sequence, sequence);
    let queued = work.job.queued.as_ref().expect("the decoded queued event");
    assert_eq!(queued.request.invocation_id, "inv-carried");
    assert_eq!(queued.request.tool_name, "fs.read_file");
    assert_eq!((work.delivery(), work.last_attempt()), (1, false));
    assert_eq!(worker.max_deliver(), 5);
    work.ack().await.expect("ack");
}

async fn two_workers_split_the_work_and_nothing_acked_is_delivered_again(kind: Kind) {
    const JOBS: usize = 40;
    let harness = Harness::new(kind, 5).await;
    let workers = [harness.worker().await, harness.worker().await];
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for (n, worker) in workers.iter().enumerate() {
        let (worker, seen) = (Arc::clone(worker), Arc::clone(&seen));
        tasks.push(tokio::spawn(async move {
            while seen.lock().unwrap().len() < JOBS && Instant::now() < until {
                if let Some(work) = next_within(worker.as_ref(), Duration::from_millis(200)).await {
                    // A little work, so the other worker gets its turn.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    seen.lock()
                        .unwrap()
                        .push((n, work.job.invocation_id.clone()));
                    work.ack().await.expect("ack");
                }
            }
        }));
    }
    for i in 0..JOBS {
        harness.enqueue(&format!("inv-split-{i:02}")).await;
    }
    for task in tasks {
        task.await.expect("worker");
    }
    let seen = seen.lock().unwrap().clone();
    let ids: BTreeSet<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(seen.len(), JOBS, "each job delivered once: {seen:?}");
    assert_eq!(ids.len(), JOBS, "no job delivered twice: {seen:?}");
    for n in 0..2 {
        assert!(
            seen.iter().any(|(w, _)| *w == n),
            "worker {n} got none: {seen:?}"
        );
    }
    // Past the ack wait, nothing acked comes back, to either worker.
    for worker in &workers {
        assert!(
            next_within(worker.as_ref(), ACK_WAIT * 2).await.is_none(),
            "an acked job was delivered again"
        );
    }
}

async fn an_unsettled_delivery_is_delivered_again_after_the_ack_wait_as_delivery_2(kind: Kind) {
    let harness = Harness::new(kind, 5).await;
    let worker = harness.worker().await;
    let sequence = harness.enqueue("inv-dropped").await;
    let first = next_now(worker.as_ref()).await;
    let delivered = Instant::now();
    assert_eq!(first.delivery(), 1);
    drop(first); // as a crash would: neither ack nor nak
    let again = next_within(worker.as_ref(), ACK_WAIT * 10)
        .await
        .expect("delivered again after the ack wait");
    let after = delivered.elapsed();
    assert!(
        after >= ACK_WAIT - Duration::from_millis(50),
        "delivered again after {after:?}, before the ack wait"
    );
    assert_eq!(
        (
            again.job.invocation_id.as_str(),
            again.job.sequence,
            again.delivery()
        ),
        ("inv-dropped", sequence, 2)
    );
    assert!(!again.last_attempt());
    again.ack().await.expect("ack");
}

async fn in_progress_keeps_a_delivery_from_being_delivered_again_past_the_ack_wait(kind: Kind) {
    let harness = Harness::new(kind, 5).await;
    let (holder, other) = (harness.worker().await, harness.worker().await);
    harness.enqueue("inv-long").await;
    let work = next_now(holder.as_ref()).await;
    assert_eq!(work.heartbeat_interval(), ACK_WAIT / 3);
    let held = ACK_WAIT * 3;
    let heartbeats = async {
        let _ = tokio::time::timeout(held, work.keep_alive()).await;
    };
    let (_, stolen) = tokio::join!(heartbeats, next_within(other.as_ref(), held));
    assert!(
        stolen.is_none(),
        "delivered again while in progress: {stolen:?}"
    );
    work.ack().await.expect("ack");
    assert!(next_within(other.as_ref(), ACK_WAIT * 2).await.is_none());
}

async fn a_nak_with_a_delay_is_delivered_again_after_the_delay(kind: Kind) {
    let harness = Harness::new(kind, 5).await;
    let worker = harness.worker().await;
    harness.enqueue("inv-later").await;
    let work = next_now(worker.as_ref()).await;
    let delay = Duration::from_millis(400);
    let returned = Instant::now();
    work.nak(delay).await.expect("nak");
    let again = next_within(worker.as_ref(), Duration::from_secs(10))
        .await
        .expect("delivered again after the delay");
    let after = returned.elapsed();
    assert!(
        after >= delay - Duration::from_millis(50) && after < ACK_WAIT * 5,
        "delivered again after {after:?}"
    );
    assert_eq!(again.delivery(), 2);
    // At once, without a delay.
    again.nak(Duration::ZERO).await.expect("nak");
    let third = next_within(worker.as_ref(), ACK_WAIT / 2)
        .await
        .expect("delivered again at once");
    assert_eq!(third.delivery(), 3);
    third.ack().await.expect("ack");
}

async fn after_the_last_delivery_a_job_is_not_delivered_again_and_the_last_is_marked(kind: Kind) {
    let harness = Harness::new(kind, 3).await;
    let worker = harness.worker().await;
    harness.enqueue("inv-poison").await;
    let first = next_now(worker.as_ref()).await;
    assert_eq!((first.delivery(), first.last_attempt()), (1, false));
    drop(first);
    let second = next_within(worker.as_ref(), ACK_WAIT * 10)
        .await
        .expect("second delivery");
    assert_eq!((second.delivery(), second.last_attempt()), (2, false));
    second.nak(Duration::ZERO).await.expect("nak");
    let last = next_within(worker.as_ref(), ACK_WAIT * 10)
        .await
        .expect("last delivery");
    assert_eq!((last.delivery(), last.last_attempt()), (3, true));
    drop(last);
    assert!(
        next_within(worker.as_ref(), ACK_WAIT * 3).await.is_none(),
        "delivered past max_deliver"
    );
    // Other work still flows.
    harness.enqueue("inv-after").await;
    let after = next_now(worker.as_ref()).await;
    assert_eq!(
        (after.job.invocation_id.as_str(), after.delivery()),
        ("inv-after", 1)
    );
    after.ack().await.expect("ack");
}

async fn a_worker_started_later_gets_the_backlog_in_order(kind: Kind) {
    let harness = Harness::new(kind, 5).await;
    let mut sequences = Vec::new();
    for i in 0..5 {
        sequences.push(harness.enqueue(&format!("inv-backlog-{i}")).await);
    }
    let worker = harness.worker().await;
    for (i, sequence) in sequences.into_iter().enumerate() {
        let work = next_now(worker.as_ref()).await;
        assert_eq!(work.job.invocation_id, format!("inv-backlog-{i}"));
        assert_eq!((work.job.sequence, work.delivery()), (sequence, 1));
        work.ack().await.expect("ack");
    }
    assert!(
        next_within(worker.as_ref(), Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn an_invocation_offered_while_queued_is_delivered_once() {
    let queue = MemoryWorkQueue::new(MemoryOptions {
        ack_wait: ACK_WAIT,
        max_deliver: 5,
    });
    let job = |sequence| Job {
        invocation_id: "inv-twice".to_owned(),
        session_id: SESSION.to_owned(),
        sequence,
        queued: None,
    };
    queue.offer(job(7));
    queue.offer(job(0)); // a look-up offered at start, say
    let work = next_now(&queue).await;
    assert_eq!(work.job.sequence, 7);
    queue.offer(job(0)); // while delivered
    assert!(
        next_within(&queue, Duration::from_millis(200))
            .await
            .is_none()
    );
    work.ack().await.expect("ack");
    assert!(queue.is_empty());
}

#[tokio::test]
async fn a_closed_memory_queue_ends_every_wait() {
    let queue: MemoryWorkQueue = MemoryWorkQueue::new(MemoryOptions::default());
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.next().await })
    };
    tokio::task::yield_now().await;
    queue.close();
    let ended = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("ended")
        .expect("task");
    assert!(matches!(
        ended,
        Err(workspace::workqueue::WorkQueueError::Closed)
    ));
}

#[tokio::test]
async fn the_durable_consumer_is_created_once_with_the_settings_the_queue_rests_on() {
    let harness = Harness::new(Kind::JetStream, 5).await;
    let Backend::JetStream { server, log } = &harness.backend else {
        unreachable!()
    };
    let _first = harness.jetstream_worker(server).await;
    let _second = harness.jetstream_worker(server).await;
    let stream = log
        .jetstream()
        .get_stream(log.stream_name())
        .await
        .expect("stream");
    let mut consumer: PullConsumer = stream
        .get_consumer(&harness.options().consumer)
        .await
        .expect("the durable consumer");
    let info = consumer.info().await.expect("info").clone();
    assert_eq!(
        info.config.durable_name.as_deref(),
        Some("workspace-executors")
    );
    assert_eq!(info.config.filter_subject, work_filter());
    assert_eq!(info.config.ack_policy, AckPolicy::Explicit);
    assert_eq!(info.config.ack_wait, ACK_WAIT);
    assert_eq!(info.config.max_deliver, 5);
    assert_eq!(info.config.max_ack_pending, 10_000);
    // The only durable consumer on the stream (the store's own follower is ephemeral).
    let names: Vec<String> = {
        use futures::TryStreamExt;
        stream
            .consumer_names()
            .try_collect()
            .await
            .expect("consumer names")
    };
    assert_eq!(
        names
            .iter()
            .filter(|n| n.as_str() == "workspace-executors")
            .count(),
        1,
        "{names:?}"
    );
}

#[tokio::test]
async fn only_queued_events_are_work_and_offers_are_ignored() {
    let harness = Harness::new(Kind::JetStream, 5).await;
    let Backend::JetStream { log, .. } = &harness.backend else {
        unreachable!()
    };
    let worker = harness.worker().await;
    let sequence = harness.enqueue("inv-only").await;
    // A later event of the same invocation is not work.
    let mut started = envelope("inv-only", &queued("inv-only"));
    started.aggregate_version = 2;
    started.event_type = InvocationEvent::STARTED.to_owned();
    log.append(AggregateType::Invocation, "inv-only", 1, vec![started])
        .await
        .expect("append");
    worker.offer(Job {
        invocation_id: "inv-offered".to_owned(),
        session_id: SESSION.to_owned(),
        sequence: 0,
        queued: None,
    });
    let work = next_now(worker.as_ref()).await;
    assert_eq!(
        (work.job.invocation_id.as_str(), work.job.sequence),
        ("inv-only", sequence)
    );
    work.ack().await.expect("ack");
    assert!(
        next_within(worker.as_ref(), Duration::from_millis(1500))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_restarted_worker_gets_what_the_previous_one_left_unsettled_and_not_what_it_acked() {
    let harness = Harness::new(Kind::JetStream, 5).await;
    let Backend::JetStream { server, .. } = &harness.backend else {
        unreachable!()
    };
    harness.enqueue("inv-done").await;
    harness.enqueue("inv-left").await;
    {
        let before = harness.jetstream_worker(server).await;
        let done = next_now(&before).await;
        let left = next_now(&before).await;
        assert_eq!(
            (
                done.job.invocation_id.as_str(),
                left.job.invocation_id.as_str()
            ),
            ("inv-done", "inv-left")
        );
        done.ack().await.expect("ack");
        drop(left);
        // The worker process ends here: its connection closes.
    }
    let after = harness.jetstream_worker(server).await;
    let work = next_within(&after, ACK_WAIT * 10)
        .await
        .expect("the unsettled job, delivered to the new worker");
    assert_eq!(
        (work.job.invocation_id.as_str(), work.delivery()),
        ("inv-left", 2)
    );
    work.ack().await.expect("ack");
    assert!(next_within(&after, ACK_WAIT * 2).await.is_none());
}

/// Hand-over latency, offer (or append) to delivery, one job at a time:
/// `cargo test --test it workqueue::hand_over -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it with --ignored --nocapture"]
async fn hand_over_latency_is_measured_for_both_queues() {
    for kind in [Kind::Memory, Kind::JetStream] {
        let harness = Arc::new(Harness::new(kind, 5).await);
        let worker = harness.worker().await;
        let rounds = match kind {
            Kind::Memory => 20_000,
            Kind::JetStream => 2_000,
        };
        let mut latencies = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let waiting = {
                let worker = Arc::clone(&worker);
                tokio::spawn(async move {
                    let work = worker.next().await.expect("next");
                    (Instant::now(), work)
                })
            };
            tokio::task::yield_now().await;
            let begun = Instant::now();
            harness.enqueue(&format!("inv-lat-{i}")).await;
            let (at, work) = waiting.await.expect("task");
            latencies.push(at.saturating_duration_since(begun));
            work.ack().await.expect("ack");
        }
        for i in 0..rounds {
            harness.enqueue(&format!("inv-thr-{i}")).await;
        }
        let begun = Instant::now();
        for _ in 0..rounds {
            next_now(worker.as_ref()).await.ack().await.expect("ack");
        }
        let throughput = rounds as f64 / begun.elapsed().as_secs_f64();
        latencies.sort();
        let pct = |p: usize| latencies[latencies.len() * p / 100];
        println!(
            "{kind:?}: enqueue to delivery p50 {:?} p99 {:?}; one worker drains a backlog at \
             {throughput:.0} jobs/s (next + confirmed ack each)",
            pct(50),
            pct(99)
        );
    }
}

/// The provisioners' consumer on the same stream: its work is `session.created`, delivered
/// with the decoded event; queued invocations are not its work, and created sessions are not
/// the executors'.
#[tokio::test]
async fn the_provisioners_consumer_delivers_created_sessions_and_only_them() {
    use workspace::workqueue::Provision;
    use workspace::workqueue::jetstream::provision_filter;
    use workspace_events::{Principal, SessionCreated, SessionEvent, WorkspaceSource};
    let harness = Harness::new(Kind::JetStream, 5).await;
    let Backend::JetStream { server, log } = &harness.backend else {
        unreachable!()
    };
    let client = async_nats::connect(server.url()).await.expect("connect");
    let context = async_nats::jetstream::new(client);
    let provisioners: JetStreamWorkQueue<Provision> = JetStreamWorkQueue::open(
        &context,
        workspace_events::subjects::STREAM_NAME,
        JetStreamWorkQueueOptions {
            ack_wait: ACK_WAIT,
            pull_expires: Duration::from_secs(1),
            ..JetStreamWorkQueueOptions::provisioners()
        },
    )
    .await
    .expect("open the provisioners' queue");
    let executors = harness.worker().await;
    harness.enqueue("inv-not-provisioning").await;
    let now = OffsetDateTime::now_utc();
    let created = SessionCreated {
        session_id: "session-to-provision".into(),
        principal: Principal {
            tenant_id: "acme".into(),
            actor_id: "alice".into(),
            roles: vec![],
        },
        source: WorkspaceSource::Empty,
        allowed_paths: vec![".".into()],
        metadata: Default::default(),
        created_at: now,
        expires_at: now + time::Duration::hours(1),
    };
    let envelope = EventEnvelope {
        event_id: Ulid::generate(),
        aggregate_type: AggregateType::Session,
        aggregate_id: created.session_id.clone(),
        aggregate_version: 1,
        event_type: SessionEvent::CREATED.to_owned(),
        schema_version: 1,
        occurred_at: now,
        correlation_id: None,
        causation_id: None,
        actor: None,
        payload: serde_json::to_value(&created).expect("encode").into(),
    };
    let sequence = log
        .append(
            AggregateType::Session,
            "session-to-provision",
            0,
            vec![envelope],
        )
        .await
        .expect("append")
        .last_sequence;
    let work = next_within(&provisioners, Duration::from_secs(10))
        .await
        .expect("the created session");
    assert_eq!(
        (
            work.job.session_id.as_str(),
            work.job.sequence,
            work.delivery()
        ),
        ("session-to-provision", sequence, 1)
    );
    assert_eq!(work.job.created.as_ref(), Some(&created));
    work.ack().await.expect("ack");
    assert!(
        next_within(&provisioners, Duration::from_millis(1500))
            .await
            .is_none(),
        "a queued invocation is not provisioning work"
    );
    let job = next_now(executors.as_ref()).await;
    assert_eq!(job.job.invocation_id, "inv-not-provisioning");
    job.ack().await.expect("ack");
    assert!(
        next_within(executors.as_ref(), Duration::from_millis(1500))
            .await
            .is_none(),
        "a created session is not executor work"
    );
    let stream = log
        .jetstream()
        .get_stream(log.stream_name())
        .await
        .expect("stream");
    let mut consumer: PullConsumer = stream
        .get_consumer("workspace-provisioners")
        .await
        .expect("the provisioners' durable consumer");
    let info = consumer.info().await.expect("info").clone();
    assert_eq!(info.config.filter_subject, provision_filter());
    assert_eq!(info.config.ack_policy, AckPolicy::Explicit);
}

#[tokio::test]
async fn a_session_offered_while_held_is_delivered_once() {
    use workspace::workqueue::Provision;
    let queue: MemoryWorkQueue<Provision> = MemoryWorkQueue::new(MemoryOptions {
        ack_wait: ACK_WAIT,
        max_deliver: 5,
    });
    let job = |sequence| Provision {
        session_id: "session-twice".to_owned(),
        sequence,
        created: None,
    };
    queue.offer(job(3));
    queue.offer(job(0));
    let work = next_within(&queue, Duration::from_secs(5))
        .await
        .expect("delivered");
    assert_eq!((work.job.sequence, work.delivery()), (3, 1));
    assert!(
        next_within(&queue, Duration::from_millis(200))
            .await
            .is_none()
    );
    work.ack().await.expect("ack");
    assert!(queue.is_empty());
}
