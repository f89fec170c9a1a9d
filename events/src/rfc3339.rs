//! RFC 3339 timestamps for serde, as `time::serde::rfc3339` writes and reads them, formatted
//! into a stack buffer instead of a `String` per timestamp (an invocation formats a dozen).
//! Use with `#[serde(with = "workspace_events::rfc3339")]` (or `rfc3339::option`).

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Room for the longest RFC 3339 text `time` writes (`YYYY-MM-DDTHH:MM:SS.nnnnnnnnn+HH:MM`,
/// 35 bytes); a longer one would fail to format rather than be cut.
const MAX_LEN: usize = 48;

/// Writes `value` as RFC 3339 (the text `time` writes; `Z` for UTC).
pub fn serialize<S: Serializer>(value: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    let mut out = &mut buf[..];
    value
        .format_into(&mut out, &Rfc3339)
        .map_err(S::Error::custom)?;
    // What was written is what the cursor moved past (time 0.3's returned count leaves out the
    // fraction of a second).
    let len = MAX_LEN - out.len();
    let text = std::str::from_utf8(&buf[..len]).map_err(S::Error::custom)?;
    serializer.serialize_str(text)
}

/// Reads an RFC 3339 timestamp.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OffsetDateTime, D::Error> {
    time::serde::rfc3339::deserialize(deserializer).map_err(D::Error::custom)
}

/// The same for `Option<OffsetDateTime>` (`null` for `None`).
pub mod option {
    use super::*;

    struct Timestamp<'a>(&'a OffsetDateTime);

    impl serde::Serialize for Timestamp<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, serializer)
        }
    }

    /// Writes `Some` as RFC 3339 and `None` as `null`.
    pub fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.serialize_some(&Timestamp(value)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads an RFC 3339 timestamp or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        time::serde::rfc3339::option::deserialize(deserializer).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use time::macros::datetime;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ours {
        #[serde(with = "crate::rfc3339")]
        at: OffsetDateTime,
        #[serde(with = "crate::rfc3339::option")]
        maybe: Option<OffsetDateTime>,
    }

    #[derive(Serialize)]
    struct Theirs {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339::option")]
        maybe: Option<OffsetDateTime>,
    }

    #[test]
    fn timestamps_are_written_as_time_writes_them_and_read_back() {
        for at in [
            datetime!(1970-01-01 00:00 UTC),
            datetime!(2026-11-23 10:00:00.6 UTC),
            datetime!(2026-11-23 10:00:00.000000001 UTC),
            datetime!(9999-12-31 23:59:59.999999999 -23:59),
            datetime!(0000-01-01 00:00 +05:30),
        ] {
            for maybe in [None, Some(at)] {
                let ours = serde_json::to_string(&Ours { at, maybe }).unwrap();
                let theirs = serde_json::to_string(&Theirs { at, maybe }).unwrap();
                assert_eq!(ours, theirs);
                assert_eq!(
                    serde_json::from_str::<Ours>(&ours).unwrap(),
                    Ours { at, maybe }
                );
            }
        }
    }

    #[test]
    fn a_timestamp_rfc_3339_cannot_express_is_an_error() {
        let at =
            datetime!(2026-01-01 0:00 UTC).to_offset(time::UtcOffset::from_hms(1, 0, 30).unwrap());
        assert!(serde_json::to_string(&Ours { at, maybe: None }).is_err());
    }
}
