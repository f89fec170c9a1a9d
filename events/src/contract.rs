//! Mapping between typed events and the `(event_type, schema_version, payload)` triple stored in
//! an [`EventEnvelope`](crate::EventEnvelope).

use crate::envelope::AggregateType;
use crate::raw_json::RawJson;

/// Why a stored event could not be turned into a typed event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The event type is not one this version of the contract knows.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// The schema version is newer than this build understands (upgrade the reader).
    #[error("event `{event_type}` has schema version {version}, this build reads up to {current}")]
    UnsupportedVersion {
        /// Event type.
        event_type: String,
        /// Version found.
        version: u32,
        /// Newest version this build knows.
        current: u32,
    },
    /// The payload does not match the schema of its version.
    #[error("event `{event_type}` v{version} has an invalid payload: {source}")]
    Payload {
        /// Event type.
        event_type: String,
        /// Version.
        version: u32,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// A family of typed events belonging to one aggregate type.
pub trait EventContract: Sized {
    /// The aggregate type these events belong to.
    const AGGREGATE_TYPE: AggregateType;

    /// The event type name, e.g. `session.created`.
    fn event_type(&self) -> &'static str;

    /// The current schema version of this event's payload.
    fn schema_version(&self) -> u32;

    /// The payload as JSON at its current schema version.
    fn to_payload(&self) -> RawJson;

    /// Decodes a payload that is already at the current schema version (run the upcasters from
    /// [`crate::upcast`] first).
    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &RawJson,
    ) -> Result<Self, DecodeError>;
}

pub(crate) fn decode_payload<T: serde::de::DeserializeOwned>(
    event_type: &str,
    version: u32,
    current: u32,
    payload: &RawJson,
) -> Result<T, DecodeError> {
    if version != current {
        return Err(DecodeError::UnsupportedVersion {
            event_type: event_type.to_owned(),
            version,
            current,
        });
    }
    payload.decode().map_err(|source| DecodeError::Payload {
        event_type: event_type.to_owned(),
        version,
        source,
    })
}

/// A payload written by hand (`write` appends what serde would write for it) into a buffer of
/// `capacity` bytes.
pub(crate) fn written_payload(
    capacity: usize,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
) -> RawJson {
    // Invariant: as for `encode_payload`, the payloads written by hand hold strings, integers,
    // timestamps and `serde_json::Value`s, so writing them cannot fail.
    RawJson::written(capacity, write).expect("event payloads always encode")
}

/// Encodes a typed payload. Payload types are plain data with string keys and finite numbers.
pub(crate) fn encode_payload<T: serde::Serialize>(payload: &T) -> RawJson {
    // Invariant: the payload types hold strings, integers, timestamps, enums and
    // `serde_json::Value`s (which always encode), so serializing them cannot fail.
    RawJson::encode(payload).expect("event payloads always encode")
}
