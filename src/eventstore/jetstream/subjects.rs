//! The subject scheme of the JetStream event stream (documented for subscribers in
//! `docs/events.md`): which subject each event is published on, and the filters that select one
//! aggregate, one session's invocations or one event type.
//!
//! ```text
//! es.session.<session_id>.<event>                     es.session.session-0a1b.created
//! es.invocation.<invocation_id>.<session_id>.<event>  es.invocation.inv-7f3e.session-0a1b.queued
//! ```
//!
//! `<event>` is the event type without its aggregate prefix (`session.created` → `created`). The
//! aggregate id always comes right after the type, so `es.<type>.<id>.>` is one aggregate: a
//! literal prefix, which the server resolves through its subject index without scanning other
//! aggregates. That filter is what loads read and what
//! `Nats-Expected-Last-Subject-Sequence-Subject` names, so the concurrency check covers every
//! event type of the aggregate. This module never decides anything else (no IO).

use workspace_events::AggregateType;

/// Prefix of every event subject (the stream captures `es.>`).
pub const PREFIX: &str = workspace_events::subjects::SUBJECT_PREFIX;
/// Header naming the wildcard subject `Nats-Expected-Last-Subject-Sequence` is checked against
/// (nats-server ≥ 2.11).
pub const HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";

/// Whether `token` can stand as one subject token: non-empty, printable ASCII, no `.`, `*`, `>`.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'))
}

/// The subject token of an event type: `session.created` → `created`. `None` when the type does
/// not name its aggregate first or the rest is not one token.
pub fn event_token(aggregate_type: AggregateType, event_type: &str) -> Option<&str> {
    let rest = event_type
        .strip_prefix(aggregate_type.as_str())?
        .strip_prefix('.')?;
    valid_token(rest).then_some(rest)
}

/// `es.<type>.<id>.>`: every event of one aggregate, whatever its type (and, for an invocation,
/// whatever session token it carries).
pub fn aggregate_filter(aggregate_type: AggregateType, aggregate_id: &str) -> String {
    format!("{PREFIX}.{}.{aggregate_id}.>", aggregate_type.as_str())
}

/// The subject of one event. `session_id` is the invocation's session (ignored for a session,
/// whose id is the session).
pub fn event_subject(
    aggregate_type: AggregateType,
    aggregate_id: &str,
    session_id: &str,
    event: &str,
) -> String {
    match aggregate_type {
        AggregateType::Session => format!("{PREFIX}.session.{aggregate_id}.{event}"),
        AggregateType::Invocation => {
            format!("{PREFIX}.invocation.{aggregate_id}.{session_id}.{event}")
        }
    }
}

/// What a stored subject says: the aggregate, the session it belongs to, and the event token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The aggregate type.
    pub aggregate_type: AggregateType,
    /// The aggregate id.
    pub aggregate_id: &'a str,
    /// The session (the aggregate id itself for a session).
    pub session_id: &'a str,
    /// The event type without its aggregate prefix.
    pub event: &'a str,
}

/// Parses a subject written by [`event_subject`].
pub fn parse(subject: &str) -> Option<Parsed<'_>> {
    let mut tokens = subject.split('.');
    if tokens.next()? != PREFIX {
        return None;
    }
    let aggregate_type = AggregateType::parse(tokens.next()?)?;
    let aggregate_id = tokens.next()?;
    let session_id = match aggregate_type {
        AggregateType::Session => aggregate_id,
        AggregateType::Invocation => tokens.next()?,
    };
    let event = tokens.next()?;
    if tokens.next().is_some()
        || ![aggregate_id, session_id, event]
            .iter()
            .all(|t| valid_token(t))
    {
        return None;
    }
    Some(Parsed {
        aggregate_type,
        aggregate_id,
        session_id,
        event,
    })
}

/// Filters subscribers use (the same strings `docs/events.md` lists).
pub mod filters {
    use super::PREFIX;

    /// Every session lifecycle event of one session.
    pub fn session_lifecycle(session_id: &str) -> String {
        format!("{PREFIX}.session.{session_id}.>")
    }

    /// Every event of every invocation of one session.
    pub fn session_invocations(session_id: &str) -> String {
        format!("{PREFIX}.invocation.*.{session_id}.*")
    }

    /// Every event of one type, e.g. `invocation.completed` → `es.invocation.*.*.completed`.
    /// `None` for an event type that is not `<aggregate>.<event>`.
    pub fn event_type(event_type: &str) -> Option<String> {
        let (aggregate, event) = event_type.split_once('.')?;
        match aggregate {
            "session" => Some(format!("{PREFIX}.session.*.{event}")),
            "invocation" => Some(format!("{PREFIX}.invocation.*.*.{event}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_subjects_put_the_aggregate_id_right_after_the_type() {
        assert_eq!(
            event_subject(
                AggregateType::Session,
                "session-0a1b",
                "session-0a1b",
                "created"
            ),
            "es.session.session-0a1b.created"
        );
        assert_eq!(
            event_subject(
                AggregateType::Invocation,
                "inv-7f3e",
                "session-0a1b",
                "queued"
            ),
            "es.invocation.inv-7f3e.session-0a1b.queued"
        );
        assert_eq!(
            aggregate_filter(AggregateType::Invocation, "inv-7f3e"),
            "es.invocation.inv-7f3e.>"
        );
    }

    #[test]
    fn written_subjects_parse_back_and_others_do_not() {
        let parsed = parse("es.invocation.inv-7f3e.session-0a1b.completed").unwrap();
        assert_eq!(
            parsed,
            Parsed {
                aggregate_type: AggregateType::Invocation,
                aggregate_id: "inv-7f3e",
                session_id: "session-0a1b",
                event: "completed",
            }
        );
        assert_eq!(
            parse("es.session.session-0a1b.closed").unwrap().session_id,
            "session-0a1b"
        );
        for bad in [
            "es.session.session-0a1b",
            "es.session.session-0a1b.closed.extra",
            "es.invocation.inv-7f3e.closed",
            "es.widget.w-1.made",
            "other.session.s.created",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn event_types_map_to_one_token_without_their_aggregate_prefix() {
        assert_eq!(
            event_token(AggregateType::Session, "session.provisioning_failed"),
            Some("provisioning_failed")
        );
        assert_eq!(
            event_token(AggregateType::Invocation, "session.created"),
            None
        );
        assert_eq!(event_token(AggregateType::Session, "session.a.b"), None);
        assert_eq!(event_token(AggregateType::Session, "session."), None);
        assert_eq!(event_token(AggregateType::Session, "sessioncreated"), None);
        assert!(!valid_token("a b") && !valid_token("a*") && !valid_token(">"));
    }

    #[test]
    fn subscriber_filters_select_a_session_or_an_event_type() {
        assert_eq!(
            filters::session_invocations("session-0a1b"),
            "es.invocation.*.session-0a1b.*"
        );
        assert_eq!(
            filters::session_lifecycle("session-0a1b"),
            "es.session.session-0a1b.>"
        );
        assert_eq!(
            filters::event_type("invocation.completed").as_deref(),
            Some("es.invocation.*.*.completed")
        );
        assert_eq!(
            filters::event_type("session.closed").as_deref(),
            Some("es.session.*.closed")
        );
        assert_eq!(filters::event_type("closed"), None);
    }
}
