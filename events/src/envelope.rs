//! The envelope every event travels in.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use ulid::Ulid;

use crate::raw_json::RawJson;

/// The kinds of aggregates that emit events. Each aggregate instance has its own subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateType {
    /// A workspace session (`session-…`).
    Session,
    /// A tool invocation (`inv-…`).
    Invocation,
}

impl AggregateType {
    /// The name used in subjects and in the envelope (`session`, `invocation`).
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateType::Session => "session",
            AggregateType::Invocation => "invocation",
        }
    }

    /// Parses the name produced by [`AggregateType::as_str`].
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "session" => Some(AggregateType::Session),
            "invocation" => Some(AggregateType::Invocation),
            _ => None,
        }
    }
}

impl std::fmt::Display for AggregateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tenant and actor on whose behalf an event was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Tenant id.
    pub tenant_id: String,
    /// Actor id.
    pub actor_id: String,
}

/// One event with everything a store, a projection or a subscriber needs to handle it without
/// knowing its payload type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique event id (ULID). Used as `Nats-Msg-Id`, so a retried append is deduplicated.
    pub event_id: Ulid,
    /// Which kind of aggregate emitted the event.
    pub aggregate_type: AggregateType,
    /// The aggregate instance (`session-…`, `inv-…`).
    pub aggregate_id: String,
    /// Position of the event in its aggregate, starting at 1, without gaps.
    pub aggregate_version: u64,
    /// The event type, e.g. `session.created`.
    pub event_type: String,
    /// Schema version of `payload` for this event type, starting at 1.
    pub schema_version: u32,
    /// When the event was decided.
    #[serde(with = "crate::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// Correlation id of the request that led to the event (request id or client key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Id of the event or request that caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// On whose behalf the event was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The typed payload as JSON text; decode it with [`crate::EventContract::decode`].
    pub payload: RawJson,
}

/// An event as stored: the envelope plus its position in the store's single total order.
///
/// Its JSON is the envelope's object with `sequence` first. It is decoded through a flat mirror
/// of that object rather than serde's `flatten`, which cannot carry the payload's raw text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RecordedWire")]
pub struct RecordedEvent {
    /// Global position, starting at 1 (the JetStream stream sequence in distributed mode).
    pub sequence: u64,
    /// The event.
    #[serde(flatten)]
    pub envelope: EventEnvelope,
}

/// The JSON shape of a [`RecordedEvent`], field for field.
#[derive(Deserialize)]
struct RecordedWire {
    sequence: u64,
    event_id: Ulid,
    aggregate_type: AggregateType,
    aggregate_id: String,
    aggregate_version: u64,
    event_type: String,
    schema_version: u32,
    #[serde(with = "crate::rfc3339")]
    occurred_at: OffsetDateTime,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    causation_id: Option<String>,
    #[serde(default)]
    actor: Option<Actor>,
    payload: RawJson,
}

impl From<RecordedWire> for RecordedEvent {
    fn from(wire: RecordedWire) -> Self {
        RecordedEvent {
            sequence: wire.sequence,
            envelope: EventEnvelope {
                event_id: wire.event_id,
                aggregate_type: wire.aggregate_type,
                aggregate_id: wire.aggregate_id,
                aggregate_version: wire.aggregate_version,
                event_type: wire.event_type,
                schema_version: wire.schema_version,
                occurred_at: wire.occurred_at,
                correlation_id: wire.correlation_id,
                causation_id: wire.causation_id,
                actor: wire.actor,
                payload: wire.payload,
            },
        }
    }
}
