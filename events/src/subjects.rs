//! Subject and header names, shared by the JetStream store and outside subscribers.
//!
//! Every aggregate instance has its own subject, `es.<aggregate_type>.<aggregate_id>`, so its
//! events can be loaded in order and appended with an optimistic-concurrency check. Subscribers
//! filter with wildcards: `es.>` (everything), `es.invocation.>` (every invocation event),
//! `es.session.<id>` (one session's lifecycle).

use crate::envelope::AggregateType;

/// Name of the JetStream stream holding every event.
pub const STREAM_NAME: &str = "WORKSPACE_EVENTS";
/// Prefix of every event subject.
pub const SUBJECT_PREFIX: &str = "es";
/// Wildcard matching every event subject.
pub const ALL_EVENTS: &str = "es.>";

/// Header carrying the event id, used by JetStream for deduplication.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Header carrying the expected stream sequence of the subject's last message.
pub const HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// Header carrying the event type.
pub const HEADER_EVENT_TYPE: &str = "Es-Event-Type";
/// Header carrying the schema version of the payload.
pub const HEADER_SCHEMA_VERSION: &str = "Es-Schema-Version";
/// Header carrying the aggregate version of the event.
pub const HEADER_AGGREGATE_VERSION: &str = "Es-Aggregate-Version";

/// The subject of one aggregate instance.
///
/// Ids are validated at the service edge (`[A-Za-z0-9_-]`), so they are single subject tokens.
pub fn aggregate_subject(aggregate_type: AggregateType, aggregate_id: &str) -> String {
    format!(
        "{SUBJECT_PREFIX}.{}.{aggregate_id}",
        aggregate_type.as_str()
    )
}

/// The wildcard subject of every instance of one aggregate type.
pub fn aggregate_type_subject(aggregate_type: AggregateType) -> String {
    format!("{SUBJECT_PREFIX}.{}.>", aggregate_type.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_built_from_type_and_id() {
        assert_eq!(
            aggregate_subject(AggregateType::Session, "session-0a1b"),
            "es.session.session-0a1b"
        );
        assert_eq!(
            aggregate_type_subject(AggregateType::Invocation),
            "es.invocation.>"
        );
    }
}
