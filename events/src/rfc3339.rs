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
pub(crate) const MAX_LEN: usize = 48;

/// Writes `value` as RFC 3339 (the text `time` writes; `Z` for UTC).
pub fn serialize<S: Serializer>(value: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    let len = match format(value, &mut buf) {
        Some(len) => len,
        // What RFC 3339 cannot express: `time` says why.
        None => {
            let mut out = &mut buf[..];
            value
                .format_into(&mut out, &Rfc3339)
                .map_err(S::Error::custom)?;
            // What was written is what the cursor moved past (time 0.3's returned count leaves
            // out the fraction of a second).
            MAX_LEN - out.len()
        }
    };
    let text = std::str::from_utf8(&buf[..len]).map_err(S::Error::custom)?;
    serializer.serialize_str(text)
}

/// Formats `value` as `time`'s `Rfc3339` does, byte for byte, without its generic component
/// machinery; `None` for what RFC 3339 cannot express (a year
/// outside 0..=9999, an offset with seconds or beyond 23 hours), left to `time` to report.
pub(crate) fn format(value: &OffsetDateTime, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let (year, month, day) = value.to_calendar_date();
    let (hour, minute, second, nanos) = value.to_hms_nano();
    let offset = value.offset();
    let (offset_hours, offset_minutes, offset_seconds) = offset.as_hms();
    if !(0..10_000).contains(&year) || offset_seconds != 0 || offset_hours.unsigned_abs() > 23 {
        return None;
    }
    let year = year as u32;
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        buf[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    let [y1, y2] = pair(year / 100);
    let [y3, y4] = pair(year);
    let [mo1, mo2] = pair(u32::from(u8::from(month)));
    let [d1, d2] = pair(u32::from(day));
    let [h1, h2] = pair(u32::from(hour));
    let [mi1, mi2] = pair(u32::from(minute));
    let [s1, s2] = pair(u32::from(second));
    put(&[
        y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, b'T', h1, h2, b':', mi1, mi2, b':', s1, s2,
    ]);
    if nanos != 0 {
        // Nine digits, less the trailing zeros.
        let mut fraction = [b'.'; 10];
        let mut n = nanos;
        for slot in fraction[1..].iter_mut().rev() {
            *slot = digit(n);
            n /= 10;
        }
        let mut end = 10;
        while fraction[end - 1] == b'0' {
            end -= 1;
        }
        put(&fraction[..end]);
    }
    if offset.is_utc() {
        put(b"Z");
    } else {
        let [oh1, oh2] = pair(u32::from(offset_hours.unsigned_abs()));
        let [om1, om2] = pair(u32::from(offset_minutes.unsigned_abs()));
        let sign = if offset.is_negative() { b'-' } else { b'+' };
        put(&[sign, oh1, oh2, b':', om1, om2]);
    }
    Some(len)
}

/// The last two decimal digits of `n`, as ASCII.
fn pair(n: u32) -> [u8; 2] {
    [digit(n / 10), digit(n)]
}

/// The last decimal digit of `n`, as ASCII.
fn digit(n: u32) -> u8 {
    b'0' + (n % 10) as u8
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
    fn the_fast_format_matches_time_over_a_sweep_of_instants_and_offsets() {
        // A fixed pseudo-random sweep: years 0..=9999, any nanosecond (and some with trailing
        // zeros), offsets on both sides of UTC, with and without minutes.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let min = datetime!(0000-01-02 00:00 UTC).unix_timestamp();
        let max = datetime!(9999-12-30 00:00 UTC).unix_timestamp();
        for i in 0..20_000u64 {
            let secs = min + (next() % (max - min) as u64) as i64;
            let nanos = match i % 4 {
                0 => 0,
                1 => (next() % 1_000_000_000) as i128,
                2 => (next() % 1000) as i128 * 1_000_000,
                _ => (next() % 1_000_000) as i128 * 1000,
            };
            let at =
                OffsetDateTime::from_unix_timestamp_nanos(secs as i128 * 1_000_000_000 + nanos)
                    .unwrap();
            let hours = (next() % 47) as i8 - 23;
            let minutes = match i % 3 {
                0 => 0,
                _ => ((next() % 60) as i8) * if hours < 0 { -1 } else { 1 },
            };
            let offset = time::UtcOffset::from_hms(hours, minutes, 0).unwrap();
            for at in [at, at.to_offset(offset)] {
                let ours = serde_json::to_string(&Ours { at, maybe: None }).unwrap();
                let theirs = serde_json::to_string(&Theirs { at, maybe: None }).unwrap();
                assert_eq!(ours, theirs, "{at:?}");
            }
        }
    }

    #[test]
    fn a_timestamp_rfc_3339_cannot_express_is_an_error() {
        let at =
            datetime!(2026-01-01 0:00 UTC).to_offset(time::UtcOffset::from_hms(1, 0, 30).unwrap());
        assert!(serde_json::to_string(&Ours { at, maybe: None }).is_err());
        let at = datetime!(-0001-12-31 23:00 UTC);
        assert!(serde_json::to_string(&Ours { at, maybe: None }).is_err());
    }
}
