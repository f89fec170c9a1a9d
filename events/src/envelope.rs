//! The envelope every event travels in.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use ulid::Ulid;

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
    #[serde(with = "time::serde::rfc3339")]
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
    /// The typed payload as JSON; decode it with [`crate::EventContract::decode`].
    pub payload: serde_json::Value,
}

/// An event as stored: the envelope plus its position in the store's single total order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global position, starting at 1 (the JetStream stream sequence in distributed mode).
    pub sequence: u64,
    /// The event.
    #[serde(flatten)]
    pub envelope: EventEnvelope,
}
