//! Upcasters: turn a stored payload of an old schema version into the current version.
//!
//! Readers run [`upcast`] on every stored envelope before decoding it. Upcasters are applied in
//! list order as a fold, so a chain v1 → v2 → v3 works when listed in that order. [`registry`]
//! holds the upcasters of the shipped contract: `invocation.completed` v1 → v2 today.

use crate::envelope::EventEnvelope;

/// Rewrites one `(event_type, schema_version)` into the next version.
pub trait Upcaster: Send + Sync {
    /// Whether this upcaster handles the given type and version.
    fn can_upcast(&self, event_type: &str, schema_version: u32) -> bool;
    /// Rewrites the payload (and may rename the type); must bump `schema_version`.
    fn upcast(&self, envelope: EventEnvelope) -> EventEnvelope;
}

/// An upcaster built from a function: handles `event_type` at exactly `from_version` and
/// produces `from_version + 1`.
pub struct FnUpcaster<F> {
    event_type: &'static str,
    from_version: u32,
    rewrite: F,
}

impl<F> FnUpcaster<F>
where
    F: Fn(serde_json::Value) -> serde_json::Value + Send + Sync,
{
    /// An upcaster for `event_type` from `from_version` to `from_version + 1`.
    pub fn new(event_type: &'static str, from_version: u32, rewrite: F) -> Self {
        Self {
            event_type,
            from_version,
            rewrite,
        }
    }
}

impl<F> Upcaster for FnUpcaster<F>
where
    F: Fn(serde_json::Value) -> serde_json::Value + Send + Sync,
{
    fn can_upcast(&self, event_type: &str, schema_version: u32) -> bool {
        event_type == self.event_type && schema_version == self.from_version
    }

    /// A payload that does not parse as a JSON tree (deeper than serde_json's nesting limit)
    /// is left as it is, at its old version, so decoding it reports the unsupported version
    /// rather than a rewritten guess.
    fn upcast(&self, mut envelope: EventEnvelope) -> EventEnvelope {
        if let Ok(value) = envelope.payload.to_value() {
            envelope.payload = (self.rewrite)(value).into();
            envelope.schema_version = self.from_version + 1;
        }
        envelope
    }
}

/// The upcasters of the current contract, in application order.
pub fn registry() -> Vec<Box<dyn Upcaster>> {
    vec![Box::new(FnUpcaster::new(
        crate::InvocationEvent::COMPLETED,
        1,
        completed_v1_to_v2,
    ))]
}

/// `invocation.completed` v1 → v2: v1's whole milliseconds become nanoseconds (the exact value
/// v1 kept; the fraction it dropped is lost) and its exit code, always present in v1, stays.
/// A v1 payload without a whole-number `duration_ms` gets no `duration_ns`, so decoding
/// reports it as invalid rather than inventing a duration.
fn completed_v1_to_v2(mut payload: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = payload.as_object_mut()
        && let Some(ms) = fields.remove("duration_ms")
        && let Some(ms) = ms.as_u64()
    {
        fields.insert("duration_ns".into(), ms.saturating_mul(1_000_000).into());
    }
    payload
}

/// Applies every matching upcaster, in order, until none matches.
pub fn upcast(upcasters: &[Box<dyn Upcaster>], mut envelope: EventEnvelope) -> EventEnvelope {
    for upcaster in upcasters {
        if upcaster.can_upcast(&envelope.event_type, envelope.schema_version) {
            envelope = upcaster.upcast(envelope);
        }
    }
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::EventContract;
    use crate::envelope::AggregateType;
    use serde_json::json;

    fn envelope(version: u32, payload: serde_json::Value) -> EventEnvelope {
        let payload = payload.into();
        EventEnvelope {
            event_id: ulid::Ulid::nil(),
            aggregate_type: AggregateType::Session,
            aggregate_id: "session-1".into(),
            aggregate_version: 1,
            event_type: "session.renamed".into(),
            schema_version: version,
            occurred_at: time::OffsetDateTime::UNIX_EPOCH,
            correlation_id: None,
            causation_id: None,
            actor: None,
            payload,
        }
    }

    fn chain() -> Vec<Box<dyn Upcaster>> {
        vec![
            Box::new(FnUpcaster::new("session.renamed", 1, |mut v| {
                v["title"] = v["name"].take();
                v
            })),
            Box::new(FnUpcaster::new("session.renamed", 2, |mut v| {
                v["labels"] = json!([]);
                v
            })),
        ]
    }

    #[test]
    fn a_chain_of_upcasters_brings_v1_to_the_newest_version() {
        let out = upcast(&chain(), envelope(1, json!({"name": "a", "title": null})));
        assert_eq!(out.schema_version, 3);
        assert_eq!(
            out.payload.to_value().unwrap(),
            json!({"name": null, "title": "a", "labels": []})
        );
    }

    #[test]
    fn a_current_event_passes_through_unchanged() {
        let current = envelope(3, json!({"title": "a", "labels": []}));
        assert_eq!(upcast(&chain(), current.clone()), current);
    }

    #[test]
    fn the_shipped_registry_never_rewrites_a_current_version() {
        let reg = registry();
        for (event_type, version) in crate::SessionEvent::CURRENT_VERSIONS
            .iter()
            .chain(crate::InvocationEvent::CURRENT_VERSIONS.iter())
        {
            assert!(reg.iter().all(|u| !u.can_upcast(event_type, *version)));
        }
    }

    fn completed_v1(payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            aggregate_type: AggregateType::Invocation,
            aggregate_id: "inv-1".into(),
            event_type: crate::InvocationEvent::COMPLETED.into(),
            ..envelope(1, payload)
        }
    }

    #[test]
    fn a_v1_completed_event_gets_its_milliseconds_as_nanoseconds() {
        let out = upcast(
            &registry(),
            completed_v1(json!({
                "outcome": "failed", "exit_code": 124, "duration_ms": 1500,
                "completed_at": "2026-11-23T10:00:00Z"
            })),
        );
        assert_eq!(out.schema_version, 2);
        assert_eq!(
            out.payload.to_value().unwrap(),
            json!({
                "outcome": "failed", "exit_code": 124, "duration_ns": 1_500_000_000u64,
                "completed_at": "2026-11-23T10:00:00Z"
            })
        );
        let decoded = crate::InvocationEvent::decode(&out.event_type, 2, &out.payload).unwrap();
        let crate::InvocationEvent::Completed(c) = decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!((c.exit_code, c.duration_ns), (Some(124), 1_500_000_000));
    }

    #[test]
    fn a_v1_completed_event_without_a_duration_is_invalid_not_guessed() {
        let out = upcast(
            &registry(),
            completed_v1(json!({
                "outcome": "failed", "exit_code": 1, "duration_ms": -3,
                "completed_at": "2026-11-23T10:00:00Z"
            })),
        );
        let err = crate::InvocationEvent::decode(&out.event_type, out.schema_version, &out.payload)
            .unwrap_err();
        assert!(
            matches!(err, crate::DecodeError::Payload { version: 2, .. }),
            "{err}"
        );
    }
}
