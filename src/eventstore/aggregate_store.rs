//! cqrs-es's `EventStore` over any [`EventLog`]: loads an aggregate by replaying its events
//! (after upcasting), and commits new events with the version it loaded as the
//! optimistic-concurrency expectation.
//!
//! Deliberately not `PersistedEventRepository` (its snapshot modes apply events twice in cqrs-es
//! 0.5.0, and it loses the loaded version between load and commit) and no cqrs-es `Query`:
//! read models are projections that tail the log (see `crate::projector`).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use time::OffsetDateTime;
use workspace_events::upcast::{self, Upcaster};
use workspace_events::{Actor, EventContract, EventEnvelope, RecordedEvent};

use ulid::Ulid;

use super::{EventLog, StoreError};

/// How often a command is retried after losing an optimistic-concurrency race. Each retry
/// reloads the aggregate and decides again, so a retry never repeats a stale decision.
const CONFLICT_RETRIES: usize = 3;

/// Envelope facts that travel with a command.
#[derive(Debug, Clone, Default)]
pub struct CommandMetadata {
    /// Correlation id (the request id or the client's key).
    pub correlation_id: Option<String>,
    /// What caused the command.
    pub causation_id: Option<String>,
    /// On whose behalf.
    pub actor: Option<Actor>,
}

impl CommandMetadata {
    fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        if let Some(c) = &self.correlation_id {
            map.insert("correlation_id".into(), c.clone());
        }
        if let Some(c) = &self.causation_id {
            map.insert("causation_id".into(), c.clone());
        }
        if let Some(a) = &self.actor {
            map.insert("tenant_id".into(), a.tenant_id.clone());
            map.insert("actor_id".into(), a.actor_id.clone());
        }
        map
    }

    fn from_map(map: &HashMap<String, String>) -> Self {
        let actor = match (map.get("tenant_id"), map.get("actor_id")) {
            (Some(t), Some(a)) => Some(Actor {
                tenant_id: t.clone(),
                actor_id: a.clone(),
            }),
            _ => None,
        };
        Self {
            correlation_id: map.get("correlation_id").cloned(),
            causation_id: map.get("causation_id").cloned(),
            actor,
        }
    }
}

/// Where a command's events landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitReceipt {
    /// Global sequence of the last event written (wait for projections to pass it to read
    /// your own write).
    pub last_sequence: u64,
    /// Aggregate version after the command.
    pub version: u64,
}

/// An aggregate's state at a known version, as held by the caller that wrote its last events.
#[derive(Debug, Clone)]
pub struct Known<A> {
    /// The decision state.
    pub state: A,
    /// The aggregate version `state` reflects (the next append must follow it).
    pub version: u64,
}

/// An aggregate loaded from the log, with the version the next commit must follow.
pub struct LoadedAggregate<A> {
    aggregate: A,
    version: u64,
    id: String,
}

impl<A: Aggregate> AggregateContext<A> for LoadedAggregate<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.aggregate
    }
}

/// Told of the events of each command before they are appended, and of an append that failed:
/// how a projector in the same process receives them in typed form instead of decoding them
/// back from the log (`crate::projector::TypedEvents` is one). The store knows nothing else of
/// who observes it.
pub trait AppendObserver<E>: Send + Sync {
    /// `events`, about to be appended with the event ids `ids` (in the same order).
    fn offer(&self, ids: &[Ulid], events: Vec<E>);
    /// The append of the events `ids` failed.
    fn withdraw(&self, ids: &[Ulid]);
}

/// cqrs-es event store for aggregate `A` over an [`EventLog`].
pub struct AggregateStore<A: Aggregate> {
    log: Arc<dyn EventLog>,
    upcasters: Arc<Vec<Box<dyn Upcaster>>>,
    observer: Option<Arc<dyn AppendObserver<A::Event>>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for AggregateStore<A> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            upcasters: self.upcasters.clone(),
            observer: self.observer.clone(),
            _aggregate: PhantomData,
        }
    }
}

/// Decodes a stored event into `E`, running the upcasters first.
pub fn decode_event<E: EventContract>(
    upcasters: &[Box<dyn Upcaster>],
    recorded: &RecordedEvent,
) -> Result<E, workspace_events::DecodeError> {
    let env = &recorded.envelope;
    if upcasters
        .iter()
        .any(|u| u.can_upcast(&env.event_type, env.schema_version))
    {
        let env = upcast::upcast(upcasters, env.clone());
        E::decode(&env.event_type, env.schema_version, &env.payload)
    } else {
        E::decode(&env.event_type, env.schema_version, &env.payload)
    }
}

fn store_error<T: std::error::Error>(err: StoreError) -> AggregateError<T> {
    match err {
        StoreError::Conflict { .. } => AggregateError::AggregateConflict,
        StoreError::Corrupt(_) => AggregateError::DeserializationError(Box::new(err)),
        other => AggregateError::DatabaseConnectionError(Box::new(other)),
    }
}

impl<A> AggregateStore<A>
where
    A: Aggregate,
    A::Event: EventContract,
{
    /// A store for aggregate `A` over `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            upcasters: Arc::new(upcast::registry()),
            observer: None,
            _aggregate: PhantomData,
        }
    }

    /// The event log it writes to.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Offers the events of every command to `observer` before they are appended (the
    /// projector of this process, which then applies them without decoding their JSON again).
    pub fn with_typed(mut self, observer: Arc<dyn AppendObserver<A::Event>>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs one command: load, decide, commit; retried from the load on a lost race.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
        metadata: &CommandMetadata,
    ) -> Result<CommitReceipt, AggregateError<A::Error>>
    where
        A::Command: Clone,
    {
        self.execute_known(aggregate_id, None, command, services, metadata)
            .await
            .map(|(receipt, _)| receipt)
    }

    /// Runs one command on an aggregate whose state the caller already holds (it wrote the
    /// aggregate's last events), skipping the load; returns the state after the command for the
    /// next one. A lost race (someone else appended meanwhile) reloads and decides again, so a
    /// stale `known` can cost a retry but never a wrong decision. `None` loads first.
    pub async fn execute_known(
        &self,
        aggregate_id: &str,
        known: Option<Known<A>>,
        command: A::Command,
        services: &A::Services,
        metadata: &CommandMetadata,
    ) -> Result<(CommitReceipt, Known<A>), AggregateError<A::Error>>
    where
        A::Command: Clone,
    {
        self.execute_all(aggregate_id, known, &[(command, metadata)], services)
            .await
    }

    /// Runs several commands on one aggregate as one commit: each is decided on the state the
    /// ones before it left, and their events (each with its own command's metadata) are
    /// appended together, all or none. Refused as a whole when any command is refused; a lost
    /// race reloads and decides every command again, as [`AggregateStore::execute_known`].
    pub async fn execute_all(
        &self,
        aggregate_id: &str,
        mut known: Option<Known<A>>,
        commands: &[(A::Command, &CommandMetadata)],
        services: &A::Services,
    ) -> Result<(CommitReceipt, Known<A>), AggregateError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut attempt = 0;
        loop {
            let Known { mut state, version } = match known.take() {
                Some(k) => k,
                None => {
                    let loaded = self.load_aggregate(aggregate_id).await?;
                    Known {
                        state: loaded.aggregate,
                        version: loaded.version,
                    }
                }
            };
            // `handle` emits through the sink, and `EventSink::write` applies each event to
            // `state` as it is emitted: after `handle`, `state` already reflects its events,
            // so the next command is decided on them.
            let mut events = Vec::new();
            let mut envelopes = Vec::new();
            for (command, metadata) in commands {
                let sink = EventSink::default();
                state
                    .handle(command.clone(), services, &sink)
                    .await
                    .map_err(AggregateError::UserError)?;
                let emitted = sink.collect().await;
                let after = version + events.len() as u64;
                envelopes.extend(self.envelopes(aggregate_id, after, &emitted, metadata));
                events.extend(emitted);
            }
            if events.is_empty() {
                let receipt = CommitReceipt {
                    last_sequence: 0,
                    version,
                };
                return Ok((receipt, Known { state, version }));
            }
            let new_version = version + events.len() as u64;
            // Offered before the append: the projector may apply the events as soon as they
            // are committed, before this append returns.
            let offered: Vec<Ulid> = match &self.observer {
                Some(observer) => {
                    let ids: Vec<Ulid> = envelopes.iter().map(|e| e.event_id).collect();
                    observer.offer(&ids, events);
                    ids
                }
                None => Vec::new(),
            };
            let result = self
                .log
                .append(A::Event::AGGREGATE_TYPE, aggregate_id, version, envelopes)
                .await
                .map_err(store_error);
            if let (Err(_), Some(observer)) = (&result, &self.observer) {
                observer.withdraw(&offered);
            }
            match result {
                Ok(appended) => {
                    let receipt = CommitReceipt {
                        last_sequence: appended.last_sequence,
                        version: new_version,
                    };
                    let known = Known {
                        state,
                        version: new_version,
                    };
                    return Ok((receipt, known));
                }
                Err(AggregateError::AggregateConflict) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Wraps `events` in envelopes that follow `version` and appends them.
    async fn append(
        &self,
        aggregate_id: &str,
        version: u64,
        events: &[A::Event],
        meta: &CommandMetadata,
    ) -> Result<super::Appended, AggregateError<A::Error>> {
        let envelopes = self.envelopes(aggregate_id, version, events, meta);
        self.log
            .append(A::Event::AGGREGATE_TYPE, aggregate_id, version, envelopes)
            .await
            .map_err(store_error)
    }

    /// `events` in envelopes that follow `version`, each with a new event id.
    fn envelopes(
        &self,
        aggregate_id: &str,
        version: u64,
        events: &[A::Event],
        meta: &CommandMetadata,
    ) -> Vec<EventEnvelope> {
        let now = OffsetDateTime::now_utc();
        events
            .iter()
            .enumerate()
            .map(|(i, event)| EventEnvelope {
                event_id: ulid::Ulid::generate(),
                aggregate_type: A::Event::AGGREGATE_TYPE,
                aggregate_id: aggregate_id.to_owned(),
                aggregate_version: version + 1 + i as u64,
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                occurred_at: now,
                correlation_id: meta.correlation_id.clone(),
                causation_id: meta.causation_id.clone(),
                actor: meta.actor.clone(),
                payload: event.to_payload(),
            })
            .collect()
    }
}

impl<A> EventStore<A> for AggregateStore<A>
where
    A: Aggregate,
    A::Event: EventContract,
{
    type AC = LoadedAggregate<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<cqrs_es::EventEnvelope<A>>, AggregateError<A::Error>> {
        let recorded = self
            .log
            .load(A::Event::AGGREGATE_TYPE, aggregate_id)
            .await
            .map_err(store_error)?;
        recorded
            .iter()
            .map(|r| {
                let payload = decode_event::<A::Event>(&self.upcasters, r)
                    .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
                let mut metadata = CommandMetadata {
                    correlation_id: r.envelope.correlation_id.clone(),
                    causation_id: r.envelope.causation_id.clone(),
                    actor: r.envelope.actor.clone(),
                }
                .to_map();
                metadata.insert("sequence".into(), r.sequence.to_string());
                metadata.insert("event_id".into(), r.envelope.event_id.to_string());
                Ok(cqrs_es::EventEnvelope {
                    aggregate_id: aggregate_id.to_owned(),
                    sequence: r.envelope.aggregate_version as usize,
                    payload,
                    metadata,
                })
            })
            .collect()
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<A::Error>> {
        let events = self.load_events(aggregate_id).await?;
        let mut aggregate = A::default();
        let version = events.len() as u64;
        for event in events {
            aggregate.apply(event.payload);
        }
        Ok(LoadedAggregate {
            aggregate,
            version,
            id: aggregate_id.to_owned(),
        })
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<cqrs_es::EventEnvelope<A>>, AggregateError<A::Error>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let meta = CommandMetadata::from_map(&metadata);
        let appended = self
            .append(&context.id, context.version, &events, &meta)
            .await?;
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let mut metadata = metadata.clone();
                metadata.insert(
                    "sequence".into(),
                    (appended.first_sequence + i as u64).to_string(),
                );
                cqrs_es::EventEnvelope {
                    aggregate_id: context.id.clone(),
                    sequence: (context.version + 1 + i as u64) as usize,
                    payload,
                    metadata,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use workspace_events::{AggregateType, DecodeError, RawJson};

    use super::*;
    use crate::eventstore::file_log::{FileEventLog, FsyncPolicy};

    /// An aggregate whose state counts the events applied to it, so applying an event twice
    /// shows.
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Counter {
        applied: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Counted {
        n: u64,
    }

    impl EventContract for Counted {
        const AGGREGATE_TYPE: AggregateType = AggregateType::Session;

        fn event_type(&self) -> &'static str {
            "counter.counted"
        }

        fn schema_version(&self) -> u32 {
            1
        }

        fn to_payload(&self) -> RawJson {
            RawJson::encode(self).unwrap()
        }

        fn decode(_: &str, _: u32, payload: &RawJson) -> Result<Self, DecodeError> {
            Ok(payload.decode().unwrap())
        }
    }

    impl cqrs_es::DomainEvent for Counted {
        fn event_type(&self) -> String {
            "counter.counted".into()
        }

        fn event_version(&self) -> String {
            "1".into()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl Aggregate for Counter {
        const TYPE: &'static str = "counter";
        type Command = u64;
        type Event = Counted;
        type Error = Never;
        type Services = ();

        async fn handle(
            &mut self,
            events: u64,
            _: &(),
            sink: &EventSink<Self>,
        ) -> Result<(), Never> {
            for n in 0..events {
                sink.write(Counted { n }, self).await;
            }
            Ok(())
        }

        fn apply(&mut self, _: Counted) {
            self.applied += 1;
        }
    }

    #[tokio::test]
    async fn the_state_returned_after_a_command_applied_each_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileEventLog::open(dir.path(), FsyncPolicy::Never)
            .await
            .unwrap();
        let store = AggregateStore::<Counter>::new(log);
        let meta = CommandMetadata::default();
        let (receipt, known) = store
            .execute_known("session-1", None, 2, &(), &meta)
            .await
            .unwrap();
        assert_eq!(
            (receipt.version, known.version, known.state.applied),
            (2, 2, 2)
        );
        let (_, known) = store
            .execute_known("session-1", Some(known), 3, &(), &meta)
            .await
            .unwrap();
        assert_eq!((known.version, known.state.applied), (5, 5));
        let loaded = store.load_aggregate("session-1").await.unwrap();
        assert_eq!((loaded.version, loaded.aggregate.applied), (5, 5));
    }
}
