//! The record frame of `events.log`: `u32 LE length | u32 LE crc32 | payload`, where the CRC
//! (crc32fast, IEEE) covers the four length bytes and the payload, and the payload is the JSON of
//! one [`RecordedEvent`]. The low 24 bits of the length word are the payload length; its top byte
//! is 1 when the next record belongs to the same append and 0 on an append's last record, so
//! recovery can drop an append that a crash cut short as a whole. Pure byte handling: no file IO
//! happens here.

use workspace_events::RecordedEvent;

/// Length field plus CRC field.
pub(super) const HEADER_LEN: usize = 8;

/// Largest payload accepted (16 MiB - 1, the low 24 bits of the length word). Events stay small
/// (large output goes to artifacts). Because the length word's top byte is 0 or 1, a header
/// always contains a control byte that JSON text never contains raw: an intact frame can never
/// hide inside another record's payload, which is what lets recovery tell a torn tail from damage
/// in the middle of the log.
pub(super) const MAX_PAYLOAD_LEN: usize = (1 << 24) - 1;

/// Top byte of the length word: more records of the same append follow.
const CONTINUES: u32 = 1 << 24;

/// The payload of every record starts with this; the envelope's fields follow (see
/// [`encode_into`]).
const SEQUENCE_PREFIX: &[u8] = b"{\"sequence\":";

/// Bytes [`encode_into`] adds to an envelope's JSON: the prefix, at most 20 digits and a comma,
/// minus the envelope's opening brace.
pub(super) const MAX_ENCODING_OVERHEAD: usize = SEQUENCE_PREFIX.len() + 20 + 1 - 1;

/// Why bytes at some offset are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FrameError {
    /// The bytes end before the header or the payload does.
    Truncated,
    /// The bytes are complete but wrong (the reason says how).
    Invalid(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("record is truncated"),
            FrameError::Invalid(reason) => f.write_str(reason),
        }
    }
}

/// The CRC stored in a record's header.
pub(super) fn checksum(length: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&length);
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the frame of `sequence` to `buf`, given the JSON of its envelope; `continues` marks
/// every record of an append but the last.
///
/// `RecordedEvent` serializes as `{"sequence":N,` followed by the flattened envelope's fields, so
/// the payload is spliced from the envelope JSON (encoded by the appending task, off the writer
/// thread) instead of serializing the whole event again. `envelope_json` must be the
/// `serde_json` encoding of an `EventEnvelope` (a non-empty JSON object) no longer than
/// `MAX_PAYLOAD_LEN - MAX_ENCODING_OVERHEAD`; `append` checks both before a request reaches the
/// writer. A test pins the splice to serde's own output.
pub(super) fn encode_into(buf: &mut Vec<u8>, sequence: u64, envelope_json: &[u8], continues: bool) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    buf.extend_from_slice(SEQUENCE_PREFIX);
    workspace_events::json::u64(buf, sequence);
    buf.push(b',');
    buf.extend_from_slice(envelope_json.get(1..).unwrap_or_default());
    let payload_len = buf.len() - start - HEADER_LEN;
    // Invariant: `append` rejects envelopes that would exceed MAX_PAYLOAD_LEN, so the length
    // fits in 24 bits and never collides with the flag.
    let flag = if continues { CONTINUES } else { 0 };
    let length = (u32::try_from(payload_len).unwrap_or(u32::MAX) | flag).to_le_bytes();
    let crc = checksum(length, &buf[start + HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&length);
    buf[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// What a header's length word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LengthWord {
    /// Payload length in bytes.
    pub payload_len: usize,
    /// More records of the same append follow.
    pub continues: bool,
}

/// Reads the length word of a header, checking it is in range.
pub(super) fn length_word(header: &[u8; HEADER_LEN]) -> Result<LengthWord, FrameError> {
    let word = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let payload_len = (word & 0x00ff_ffff) as usize;
    let flags = word >> 24;
    if payload_len == 0 || flags > 1 {
        return Err(FrameError::Invalid(format!(
            "record length word {word:#010x} is out of range"
        )));
    }
    Ok(LengthWord {
        payload_len,
        continues: flags == 1,
    })
}

/// Checks the CRC of a complete frame and decodes its payload.
pub(super) fn decode(
    header: &[u8; HEADER_LEN],
    payload: &[u8],
) -> Result<RecordedEvent, FrameError> {
    let length = [header[0], header[1], header[2], header[3]];
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if checksum(length, payload) != stored {
        return Err(FrameError::Invalid("crc mismatch".into()));
    }
    serde_json::from_slice(payload)
        .map_err(|e| FrameError::Invalid(format!("payload is not a recorded event: {e}")))
}

/// Decodes the frame at the start of `bytes`, returning the event and the frame's length.
pub(super) fn decode_prefix(bytes: &[u8]) -> Result<(RecordedEvent, usize), FrameError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated)?;
    let length = length_word(header)?.payload_len;
    let payload = bytes
        .get(HEADER_LEN..HEADER_LEN + length)
        .ok_or(FrameError::Truncated)?;
    Ok((decode(header, payload)?, HEADER_LEN + length))
}

/// Whether `window` could start an intact frame, judged from its first `HEADER_LEN + 2` bytes
/// only; `remaining` is how many bytes the file holds from that position. A cheap filter run at
/// every byte offset of a damaged tail before the CRC is checked.
pub(super) fn plausible_frame_start(window: &[u8], remaining: u64) -> Option<usize> {
    let header: &[u8; HEADER_LEN] = window.get(..HEADER_LEN)?.try_into().ok()?;
    let length = length_word(header).ok()?.payload_len;
    let fits = (HEADER_LEN + length) as u64 <= remaining;
    let object = window.get(HEADER_LEN..HEADER_LEN + 2) == Some(b"{\"".as_slice());
    (fits && object).then_some(length)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use ulid::Ulid;
    use workspace_events::{Actor, AggregateType, EventEnvelope};

    use super::*;

    fn recorded(sequence: u64) -> RecordedEvent {
        RecordedEvent {
            sequence,
            envelope: EventEnvelope {
                event_id: Ulid::generate(),
                aggregate_type: AggregateType::Invocation,
                aggregate_id: "inv-1".into(),
                aggregate_version: 3,
                event_type: "invocation.started".into(),
                schema_version: 1,
                occurred_at: datetime!(2026-01-02 03:04:05.123456789 UTC),
                correlation_id: Some("req-1".into()),
                causation_id: None,
                actor: Some(Actor {
                    tenant_id: "t".into(),
                    actor_id: "a \"quoted\" \u{1F600}".into(),
                }),
                payload: serde_json::json!({"nested": {"k": [1, 2, 3]}, "sequence": 99}).into(),
            },
        }
    }

    #[test]
    fn the_spliced_payload_is_byte_identical_to_serde_encoding_of_the_recorded_event() {
        for sequence in [1, 9, 10, 12_345, u64::MAX] {
            let event = recorded(sequence);
            let envelope_json = serde_json::to_vec(&event.envelope).unwrap();
            let mut buf = Vec::new();
            encode_into(&mut buf, sequence, &envelope_json, false);
            assert_eq!(
                &buf[HEADER_LEN..],
                serde_json::to_vec(&event).unwrap().as_slice()
            );
            assert!(envelope_json.len() + MAX_ENCODING_OVERHEAD >= buf.len() - HEADER_LEN);
        }
    }

    #[test]
    fn an_encoded_frame_decodes_to_the_same_event() {
        let event = recorded(42);
        let mut buf = vec![7, 7, 7];
        encode_into(
            &mut buf,
            42,
            &serde_json::to_vec(&event.envelope).unwrap(),
            true,
        );
        let header: [u8; HEADER_LEN] = buf[3..3 + HEADER_LEN].try_into().unwrap();
        assert!(length_word(&header).unwrap().continues);
        let (decoded, len) = decode_prefix(&buf[3..]).unwrap();
        assert_eq!(decoded, event);
        assert_eq!(len, buf.len() - 3);
        assert!(plausible_frame_start(&buf[3..], len as u64).is_some());
    }

    #[test]
    fn any_damage_to_a_frame_is_detected() {
        let event = recorded(5);
        let mut frame = Vec::new();
        encode_into(
            &mut frame,
            5,
            &serde_json::to_vec(&event.envelope).unwrap(),
            false,
        );
        for cut in 0..frame.len() {
            assert_eq!(
                decode_prefix(&frame[..cut]).unwrap_err(),
                FrameError::Truncated
            );
        }
        for at in 0..frame.len() {
            let mut damaged = frame.clone();
            damaged[at] ^= 0x01;
            assert!(
                decode_prefix(&damaged)
                    .map(|(e, _)| e != event)
                    .unwrap_or(true),
                "flipping byte {at} went unnoticed"
            );
        }
    }
}
