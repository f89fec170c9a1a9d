//! The distributed work queue: one durable pull consumer on the event stream per kind of work,
//! shared by every process doing it (settings and reasons: ADR 0009): `workspace-executors`,
//! filtered to `es.invocation.*.*.queued`, and `workspace-provisioners`, filtered to
//! `es.session.*.created`. The event is the work: nothing else is published, so the queue can
//! never disagree with the log.
//!
//! Each [`WorkQueue::next`] asks the server for exactly one message (a long-poll pull request
//! that expires and is renewed), so a message is delivered only to a worker ready to take it:
//! nothing waits in a client buffer while its ack wait runs out. It never appends events.

use std::time::Duration;

use async_nats::jetstream::consumer::{
    self, AckPolicy, DeliverPolicy, PullConsumer, ReplayPolicy, pull,
};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self as js};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Mutex;
use workspace_events::upcast::Upcaster;
use workspace_events::{
    AggregateType, EventEnvelope, InvocationEvent, RecordedEvent, SessionEvent,
};

use super::{
    DEFAULT_ACK_WAIT, DEFAULT_MAX_DELIVER, Job, MIN_MAX_DELIVER, Provision, Settle, Task, Work,
    WorkQueue, WorkQueueError,
};
use crate::eventstore::decode_event;
use crate::eventstore::jetstream::subjects;

/// The durable consumer every executor shares, by default.
pub const DEFAULT_CONSUMER: &str = "workspace-executors";
/// The durable consumer every provisioner shares, by default.
pub const PROVISIONERS_CONSUMER: &str = "workspace-provisioners";

/// A task that is one event of the stream: which events are the work, and how one becomes a
/// task.
pub trait EventTask: Task {
    /// The aggregate whose events are the work.
    const AGGREGATE: AggregateType;
    /// The event type whose events are the work (`invocation.queued`).
    const EVENT_TYPE: &'static str;
    /// The consumer's description.
    const DESCRIPTION: &'static str;

    /// The task of one delivered event: its aggregate id and session (from the subject), its
    /// global sequence, and the event when it decodes (`None`: the worker loads it).
    fn from_event(
        aggregate_id: &str,
        session_id: &str,
        sequence: u64,
        recorded: Option<&RecordedEvent>,
        upcasters: &[Box<dyn Upcaster>],
    ) -> Self;
}

impl EventTask for Job {
    const AGGREGATE: AggregateType = AggregateType::Invocation;
    const EVENT_TYPE: &'static str = InvocationEvent::QUEUED;
    const DESCRIPTION: &'static str = "workspace executors: queued invocations to claim";

    fn from_event(
        aggregate_id: &str,
        session_id: &str,
        sequence: u64,
        recorded: Option<&RecordedEvent>,
        upcasters: &[Box<dyn Upcaster>],
    ) -> Self {
        let queued = recorded.and_then(|r| match decode_event::<InvocationEvent>(upcasters, r) {
            Ok(InvocationEvent::Queued(queued)) => Some(queued),
            Ok(_) | Err(_) => None,
        });
        Job {
            invocation_id: aggregate_id.to_owned(),
            session_id: session_id.to_owned(),
            sequence,
            queued,
        }
    }
}

impl EventTask for Provision {
    const AGGREGATE: AggregateType = AggregateType::Session;
    const EVENT_TYPE: &'static str = SessionEvent::CREATED;
    const DESCRIPTION: &'static str = "workspace provisioners: created sessions to provision";

    fn from_event(
        aggregate_id: &str,
        _session_id: &str,
        sequence: u64,
        recorded: Option<&RecordedEvent>,
        upcasters: &[Box<dyn Upcaster>],
    ) -> Self {
        let created = recorded.and_then(|r| match decode_event::<SessionEvent>(upcasters, r) {
            Ok(SessionEvent::Created(created)) => Some(created),
            Ok(_) | Err(_) => None,
        });
        Provision {
            session_id: aggregate_id.to_owned(),
            sequence,
            created,
        }
    }
}
/// How long one pull request waits on the server before it is renewed, by default.
pub const DEFAULT_PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Deliveries awaiting a settlement across all executors, at most, by default.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 10_000;

/// Settings of a [`JetStreamWorkQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamWorkQueueOptions {
    /// Name of the durable consumer (the same in every executor process).
    pub consumer: String,
    /// How long a delivery may go unsettled before the server delivers it again.
    pub ack_wait: Duration,
    /// Deliveries of one message at most (at least [`MIN_MAX_DELIVER`]).
    pub max_deliver: u32,
    /// Unsettled deliveries across all executors at most; the server delivers nothing more
    /// until some are settled.
    pub max_ack_pending: i64,
    /// How long one pull request waits on the server before it is renewed.
    pub pull_expires: Duration,
}

impl JetStreamWorkQueueOptions {
    /// The default settings on the provisioners' consumer.
    pub fn provisioners() -> Self {
        Self {
            consumer: PROVISIONERS_CONSUMER.to_owned(),
            ..Self::default()
        }
    }
}

impl Default for JetStreamWorkQueueOptions {
    fn default() -> Self {
        Self {
            consumer: DEFAULT_CONSUMER.to_owned(),
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: DEFAULT_MAX_DELIVER,
            max_ack_pending: DEFAULT_MAX_ACK_PENDING,
            pull_expires: DEFAULT_PULL_EXPIRES,
        }
    }
}

/// `es.invocation.*.*.queued`: the subjects of every `queued` event.
pub fn work_filter() -> String {
    format!("{}.invocation.*.*.queued", subjects::PREFIX)
}

/// `es.session.*.created`: the subjects of every `created` event of a session.
pub fn provision_filter() -> String {
    format!("{}.session.*.created", subjects::PREFIX)
}

/// The filter of the consumer of tasks `J`: the subjects of its event type.
pub fn filter_of<J: EventTask>() -> String {
    subjects::filters::event_type(J::EVENT_TYPE).unwrap_or_else(work_filter)
}

/// The configuration of a consumer of tasks `J` for `options`.
pub fn consumer_config<J: EventTask>(options: &JetStreamWorkQueueOptions) -> pull::Config {
    pull::Config {
        durable_name: Some(options.consumer.clone()),
        name: Some(options.consumer.clone()),
        description: Some(J::DESCRIPTION.to_owned()),
        // Everything ever queued: a consumer created on an existing stream sees the backlog
        // (finished invocations are acked after one look-up).
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        max_deliver: i64::from(options.max_deliver.max(MIN_MAX_DELIVER)),
        filter_subject: filter_of::<J>(),
        replay_policy: ReplayPolicy::Instant,
        max_ack_pending: options.max_ack_pending,
        ..pull::Config::default()
    }
}

/// The distributed [`WorkQueue`] of tasks `J` ([`Job`]s by default). One per process; any
/// number of processes share the consumer.
pub struct JetStreamWorkQueue<J = Job> {
    consumer: PullConsumer,
    /// The pull request in flight and how many messages it may still bring, kept across
    /// calls (cancelled ones, and a request for more than the call took).
    pull: Mutex<Option<Pull>>,
    options: JetStreamWorkQueueOptions,
    upcasters: Vec<Box<dyn Upcaster>>,
    task: std::marker::PhantomData<fn() -> J>,
}

impl<J> std::fmt::Debug for JetStreamWorkQueue<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamWorkQueue")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<J: EventTask> JetStreamWorkQueue<J> {
    /// Creates (or updates to `options`) the durable consumer on `stream` and checks that its
    /// settings took. `context` may be the event store's
    /// ([`crate::eventstore::jetstream::JetStreamEventLog::jetstream`]).
    pub async fn open(
        context: &js::Context,
        stream: &str,
        options: JetStreamWorkQueueOptions,
    ) -> Result<Self, WorkQueueError> {
        let handle = context.get_stream(stream).await.map_err(|e| {
            WorkQueueError::Unavailable(format!("opening the stream {stream}: {e}"))
        })?;
        let wanted = consumer_config::<J>(&options);
        let mut consumer: PullConsumer =
            handle.create_consumer(wanted.clone()).await.map_err(|e| {
                WorkQueueError::Unavailable(format!(
                    "creating or updating the consumer {} on {stream}: {e}",
                    options.consumer
                ))
            })?;
        let info = consumer.info().await.map_err(|e| {
            WorkQueueError::Unavailable(format!("reading the consumer {}: {e}", options.consumer))
        })?;
        check_consumer(&wanted, &info.config)?;
        tracing::info!(
            stream,
            consumer = %options.consumer,
            ack_wait_ms = options.ack_wait.as_millis() as u64,
            max_deliver = options.max_deliver,
            pending = info.num_pending,
            "JetStream work queue opened"
        );
        Ok(Self {
            consumer,
            pull: Mutex::new(None),
            options,
            upcasters: workspace_events::upcast::registry(),
            task: std::marker::PhantomData,
        })
    }

    /// The settings it was opened with.
    pub fn options(&self) -> &JetStreamWorkQueueOptions {
        &self.options
    }

    /// A message as work; `None` (and the message terminated) when it is not an event of the
    /// work's type.
    async fn work(&self, message: js::Message) -> Option<Work<J>> {
        let (sequence, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                tracing::warn!(subject = %message.subject, error = %e, "work queue: a message without delivery info");
                return None;
            }
        };
        let (message, acker) = message.split();
        let token = subjects::event_token(J::AGGREGATE, J::EVENT_TYPE);
        let Some(parsed) = subjects::parse(message.subject.as_str())
            .filter(|p| p.aggregate_type == J::AGGREGATE && Some(p.event) == token)
        else {
            tracing::warn!(subject = %message.subject, sequence, event_type = J::EVENT_TYPE, "work queue: not an event of the work's type; terminated");
            let _ = acker.ack_with(AckKind::Term).await;
            return None;
        };
        let recorded = serde_json::from_slice::<EventEnvelope>(&message.payload)
            .ok()
            .map(|envelope| RecordedEvent { sequence, envelope });
        let job = J::from_event(
            parsed.aggregate_id,
            parsed.session_id,
            sequence,
            recorded.as_ref(),
            &self.upcasters,
        );
        if recorded.is_none() {
            tracing::warn!(
                sequence,
                event_type = J::EVENT_TYPE,
                "work queue: the event does not decode; the worker loads it"
            );
        }
        let attempt = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
        Some(Work::new(
            job,
            attempt,
            self.options.max_deliver.max(MIN_MAX_DELIVER),
            self.options.ack_wait,
            Box::new(Delivery { acker }),
        ))
    }
}

/// A pull request in flight.
struct Pull {
    batch: pull::Batch,
    /// Messages it may still bring (it ends, or expires, after them).
    outstanding: usize,
}

/// Refuses a consumer whose settings are not the ones asked for (a server may drop what it
/// does not know, and an existing consumer may keep settings it cannot change).
fn check_consumer(wanted: &pull::Config, got: &consumer::Config) -> Result<(), WorkQueueError> {
    let mut wrong = Vec::new();
    if got.ack_policy != wanted.ack_policy {
        wrong.push(format!("ack policy {:?}", got.ack_policy));
    }
    if got.ack_wait != wanted.ack_wait {
        wrong.push(format!("ack wait {:?}", got.ack_wait));
    }
    if got.max_deliver != wanted.max_deliver {
        wrong.push(format!("max deliver {}", got.max_deliver));
    }
    let filters: Vec<&str> = if got.filter_subjects.is_empty() {
        vec![got.filter_subject.as_str()]
    } else {
        got.filter_subjects.iter().map(String::as_str).collect()
    };
    if filters != [wanted.filter_subject.as_str()] {
        wrong.push(format!("filter {filters:?}"));
    }
    if got.deliver_policy != wanted.deliver_policy {
        wrong.push(format!("deliver policy {:?}", got.deliver_policy));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(WorkQueueError::Misconfigured(format!(
            "the consumer {} has {} instead of what was asked for",
            wanted.durable_name.as_deref().unwrap_or(""),
            wrong.join(", ")
        )))
    }
}

#[async_trait]
impl<J: EventTask> WorkQueue<J> for JetStreamWorkQueue<J> {
    async fn next(&self) -> Result<Work<J>, WorkQueueError> {
        let mut works = self.next_many(1).await?;
        works.pop().ok_or(WorkQueueError::Closed)
    }

    /// One pull request for `max` messages, kept until they came or it expired: the caller
    /// asks for its free slots, so every message the request brings finds one. When one
    /// arrives, the ones already received come with it; the request goes on for the rest.
    async fn next_many(&self, max: usize) -> Result<Vec<Work<J>>, WorkQueueError> {
        let max = max.max(1);
        let mut pull = self.pull.lock().await;
        loop {
            let current = match pull.as_mut() {
                Some(current) => current,
                None => {
                    let batch = self
                        .consumer
                        .batch()
                        .max_messages(max)
                        .expires(self.options.pull_expires)
                        .messages()
                        .await
                        .map_err(|e| unavailable("requesting work", e))?;
                    pull.insert(Pull {
                        batch,
                        outstanding: max,
                    })
                }
            };
            let mut messages = Vec::new();
            let mut ended = false;
            let mut failed = None;
            match current.batch.next().await {
                Some(Ok(message)) => messages.push(message),
                Some(Err(e)) => failed = Some(e),
                // The request expired (or brought all it could): ask again.
                None => ended = true,
            }
            while failed.is_none() && !ended && !messages.is_empty() && messages.len() < max {
                if current.outstanding <= messages.len() {
                    break;
                }
                match futures::FutureExt::now_or_never(current.batch.next()) {
                    Some(Some(Ok(message))) => messages.push(message),
                    Some(Some(Err(e))) => failed = Some(e),
                    Some(None) => ended = true,
                    None => break,
                }
            }
            current.outstanding = current.outstanding.saturating_sub(messages.len());
            if ended || failed.is_some() || current.outstanding == 0 {
                *pull = None;
            }
            let mut works = Vec::with_capacity(messages.len());
            for message in messages {
                if let Some(work) = self.work(message).await {
                    works.push(work);
                }
            }
            if !works.is_empty() {
                // A request that failed after bringing these is replaced by the next call.
                return Ok(works);
            }
            if let Some(e) = failed {
                return Err(unavailable("receiving work", e));
            }
        }
    }

    fn offer(&self, _job: J) {}

    fn max_deliver(&self) -> u32 {
        self.options.max_deliver.max(MIN_MAX_DELIVER)
    }
}

/// One delivery: settled on the message's reply subject.
struct Delivery {
    acker: Acker,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> WorkQueueError {
    WorkQueueError::Unavailable(format!("{what}: {e}"))
}

#[async_trait]
impl Settle for Delivery {
    /// Confirmed by the server, so a returned `Ok` means it is not delivered again. (A
    /// fire-and-forget ack, tried in the ninth session, saves a reply per invocation but can be
    /// lost when the process ends right after it: a redelivery, harmless, but not what `Ok`
    /// promises.)
    async fn ack(&self) -> Result<(), WorkQueueError> {
        self.acker
            .double_ack()
            .await
            .map_err(|e| unavailable("acknowledging work", e))
    }

    async fn in_progress(&self) -> Result<(), WorkQueueError> {
        self.acker
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| unavailable("extending work", e))
    }

    async fn nak(&self, delay: Duration) -> Result<(), WorkQueueError> {
        let delay = (!delay.is_zero()).then_some(delay);
        self.acker
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| unavailable("returning work", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::consumer::IntoConsumerConfig;

    #[test]
    fn the_work_filter_is_the_documented_filter_of_queued_events() {
        assert_eq!(
            Some(work_filter()),
            subjects::filters::event_type(InvocationEvent::QUEUED)
        );
    }

    #[test]
    fn each_kind_of_work_has_its_consumer_and_the_filter_of_its_event_type() {
        assert_eq!(filter_of::<Job>(), "es.invocation.*.*.queued");
        assert_eq!(filter_of::<Provision>(), provision_filter());
        assert_eq!(
            Some(provision_filter()),
            subjects::filters::event_type(SessionEvent::CREATED)
        );
        let provisioners = consumer_config::<Provision>(&JetStreamWorkQueueOptions::provisioners());
        assert_eq!(
            provisioners.durable_name.as_deref(),
            Some(PROVISIONERS_CONSUMER)
        );
        assert_eq!(provisioners.filter_subject, "es.session.*.created");
    }

    #[test]
    fn a_consumer_that_kept_other_settings_is_refused_naming_them() {
        let wanted = consumer_config::<Job>(&JetStreamWorkQueueOptions::default());
        let got = pull::Config {
            ack_wait: Duration::from_secs(5),
            max_deliver: -1,
            ..wanted.clone()
        }
        .into_consumer_config();
        assert!(check_consumer(&wanted, &wanted.clone().into_consumer_config()).is_ok());
        let message = check_consumer(&wanted, &got).unwrap_err().to_string();
        assert!(
            message.contains("ack wait 5s") && message.contains("max deliver -1"),
            "{message}"
        );
    }
}
