//! A JSON writer for the paths every invocation takes: event payloads, envelopes and the invoke
//! answer are written field by field into one buffer, byte for byte what serde_json writes for
//! the same types (tests compare the two over varied values), without serde's per-field work:
//! keys are constants written as they are, and strings are scanned eight bytes at a time.
//!
//! Anything else (nested values the hot paths rarely carry) goes through serde_json itself
//! ([`Object::serde`]).

use serde::Serialize;
use time::OffsetDateTime;

/// Appends `value` as a JSON string, escaped as serde_json escapes it: `"`, `\` and the control
/// characters below U+0020 (`\b \t \n \f \r`, and `\u00xx` with lower-case hex digits for the
/// others); everything else, non-ASCII included, as it is.
pub fn string(buf: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        // Eight bytes at a time while none of them needs an escape.
        if let Some(chunk) = bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if !needs_escape_any(word) {
                at += 8;
                continue;
            }
        }
        let byte = bytes[at];
        if needs_escape(byte) {
            buf.extend_from_slice(&bytes[start..at]);
            escape(buf, byte);
            start = at + 1;
        }
        at += 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether one of the eight bytes of `word` is below 0x20, `"` or `\` (exact: the classic
/// "has a byte less than n" and "has a zero byte" tests, which never miss and whose false
/// positives only come after a true hit; bytes from 0x80 up never match).
fn needs_escape_any(word: u64) -> bool {
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v;
    (below_space | zero_in(quote) | zero_in(backslash)) & HIGHS != 0
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

fn escape(buf: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => buf.extend_from_slice(b"\\\""),
        b'\\' => buf.extend_from_slice(b"\\\\"),
        0x08 => buf.extend_from_slice(b"\\b"),
        0x09 => buf.extend_from_slice(b"\\t"),
        0x0a => buf.extend_from_slice(b"\\n"),
        0x0c => buf.extend_from_slice(b"\\f"),
        0x0d => buf.extend_from_slice(b"\\r"),
        _ => buf.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
    }
}

/// Appends `value` in decimal.
pub fn u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends `value` as a quoted RFC 3339 timestamp, the text [`crate::rfc3339`] writes; an
/// error for what RFC 3339 cannot express.
pub fn timestamp(buf: &mut Vec<u8>, value: &OffsetDateTime) -> Result<(), serde_json::Error> {
    let mut text = [0u8; crate::rfc3339::MAX_LEN];
    let len = crate::rfc3339::format(value, &mut text).ok_or_else(|| {
        <serde_json::Error as serde::ser::Error>::custom("timestamp out of RFC 3339's range")
    })?;
    buf.push(b'"');
    buf.extend_from_slice(&text[..len]);
    buf.push(b'"');
    Ok(())
}

/// One JSON object being written: fields in the order they are added, as serde's derive writes
/// a struct's. The first error is kept and returned by [`Object::end`].
pub struct Object<'a> {
    buf: &'a mut Vec<u8>,
    empty: bool,
    error: Option<serde_json::Error>,
}

impl<'a> Object<'a> {
    /// Opens an object at the end of `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.push(b'{');
        Object {
            buf,
            empty: true,
            error: None,
        }
    }

    /// Starts the field `key` (a plain ASCII name: written as it is) and returns the buffer to
    /// write its value into.
    pub fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        debug_assert!(!key.bytes().any(needs_escape), "{key} needs escaping");
        if !self.empty {
            self.buf.push(b',');
        }
        self.empty = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
        self.buf
    }

    /// A string field.
    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        string(self.key(key), value);
        self
    }

    /// A string field, left out when `None` (`skip_serializing_if = "Option::is_none"`).
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(key, value);
        }
        self
    }

    /// An unsigned number field.
    pub fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        u64(self.key(key), value);
        self
    }

    /// A signed number field.
    pub fn i64(&mut self, key: &'static str, value: i64) -> &mut Self {
        let buf = self.key(key);
        buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// A signed number field that is `null` when `None` (an `Option` serde writes, not skips).
    pub fn nullable_i64(&mut self, key: &'static str, value: Option<i64>) -> &mut Self {
        match value {
            Some(value) => self.i64(key, value),
            None => {
                self.key(key).extend_from_slice(b"null");
                self
            }
        }
    }

    /// A boolean field.
    pub fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        let buf = self.key(key);
        buf.extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// A timestamp field (RFC 3339).
    pub fn time(&mut self, key: &'static str, value: &OffsetDateTime) -> &mut Self {
        if let Err(e) = timestamp(self.key(key), value) {
            self.fail(e);
        }
        self
    }

    /// A timestamp field, left out when `None`.
    pub fn opt_time(&mut self, key: &'static str, value: Option<&OffsetDateTime>) -> &mut Self {
        if let Some(value) = value {
            self.time(key, value);
        }
        self
    }

    /// A field whose value is JSON text already (copied as it is).
    pub fn raw(&mut self, key: &'static str, json: &str) -> &mut Self {
        self.key(key).extend_from_slice(json.as_bytes());
        self
    }

    /// A field whose value serde_json writes.
    pub fn serde<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> &mut Self {
        if let Err(e) = serde_json::to_writer(&mut *self.key(key), value) {
            self.fail(e);
        }
        self
    }

    /// An array field, each item written by `write`.
    pub fn array<T>(
        &mut self,
        key: &'static str,
        items: &[T],
        write: impl FnMut(&mut Vec<u8>, &T) -> Result<(), serde_json::Error>,
    ) -> &mut Self {
        if let Err(e) = array(self.key(key), items, write) {
            self.fail(e);
        }
        self
    }

    /// Records a failure of a value written through [`Object::key`].
    pub fn fail(&mut self, error: serde_json::Error) {
        self.error.get_or_insert(error);
    }

    /// Closes the object.
    pub fn end(self) -> Result<(), serde_json::Error> {
        self.buf.push(b'}');
        match self.error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// Writes the items of `items` as a JSON array, each with `write`.
pub fn array<T>(
    buf: &mut Vec<u8>,
    items: &[T],
    mut write: impl FnMut(&mut Vec<u8>, &T) -> Result<(), serde_json::Error>,
) -> Result<(), serde_json::Error> {
    buf.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write(buf, item)?;
    }
    buf.push(b']');
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Strings that exercise every escape, runs around them at every alignment, and non-ASCII.
    pub(crate) fn tricky_strings() -> Vec<String> {
        let mut strings: Vec<String> = [
            "",
            "plain",
            "exactly8",
            "sixteen bytes!!!",
            "quote \" inside",
            "back\\slash",
            "\u{0}\u{1}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1f} \u{7f}",
            "héllo wörld — ünïcode 😀 \u{2028}\u{2029}",
            "ends with a quote\"",
            "\"starts with one",
            "/slash/ is not escaped",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every escapable byte at every offset of a 20-byte run.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '~', 'é'] {
            for at in 0..20 {
                let mut s: String = "abcdefghijklmnopqrst".into();
                s.insert(at, special);
                strings.push(s);
            }
        }
        strings
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in tricky_strings() {
            let mut ours = Vec::new();
            string(&mut ours, &s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
        // Every single byte value that is a whole character.
        for c in (0u8..0x80).map(char::from) {
            let s = format!("ab{c}cdefghijkl{c}");
            let mut ours = Vec::new();
            string(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{c:?}");
        }
    }

    #[test]
    fn the_word_test_finds_exactly_the_bytes_to_escape() {
        for byte in 0u8..=255 {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = byte;
                assert_eq!(
                    needs_escape_any(u64::from_le_bytes(word)),
                    needs_escape(byte),
                    "{byte:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn objects_are_written_as_serde_derives_them() {
        #[derive(Serialize)]
        struct Like<'a> {
            a: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            b: Option<&'a str>,
            n: u64,
            i: i64,
            z: Option<i64>,
            t: bool,
            #[serde(with = "crate::rfc3339")]
            at: OffsetDateTime,
            v: serde_json::Value,
        }
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_790_000_000_123_000_000).unwrap();
        for (b, i, z) in [(None, -5, None), (Some("x\"y"), i64::MIN, Some(-7))] {
            let v = serde_json::json!({"k": [1, "two", null]});
            let theirs = serde_json::to_vec(&Like {
                a: "q\n",
                b,
                n: u64::MAX,
                i,
                z,
                t: true,
                at,
                v: v.clone(),
            })
            .unwrap();
            let mut ours = Vec::new();
            let mut o = Object::new(&mut ours);
            o.str("a", "q\n")
                .opt_str("b", b)
                .u64("n", u64::MAX)
                .i64("i", i)
                .nullable_i64("z", z)
                .bool("t", true)
                .time("at", &at)
                .serde("v", &v);
            o.end().unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
    }

    #[test]
    fn a_timestamp_out_of_range_fails_the_object() {
        let mut buf = Vec::new();
        let mut o = Object::new(&mut buf);
        o.time("at", &time::macros::datetime!(-0001-01-01 0:00 UTC));
        assert!(o.end().is_err());
    }
}
