//! JSON kept as text: event payloads and tool output.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// One JSON value kept as its text: an event's payload, or a tool's output. It is encoded once,
/// when the event is written or the tool returns, and then stored, copied into records, read
/// models and responses as is. Readers decode it straight into a typed value
/// ([`crate::EventContract::decode`]); no `serde_json::Value` tree is built on the way
/// (building, re-encoding and freeing such trees was over a tenth of the service's CPU per
/// invocation).
///
/// The text is always one valid JSON value, kept byte for byte: a payload read back from a store
/// has the text that was written. Two values are equal when they mean the same JSON (whitespace
/// and key order inside objects carry no meaning).
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Encodes a typed payload (or any serializable value) as compact JSON.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(RawJson)
    }

    /// The JSON that `write` appends to an empty buffer (of `capacity` bytes). `write` must append exactly one
    /// well-formed JSON value and nothing else: it is one of this crate's writers
    /// ([`crate::json`]), each tested to write what serde_json writes for its type. Debug builds
    /// parse the text again to check it; release builds trust the writer.
    pub(crate) fn written(
        capacity: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
    ) -> Result<Self, serde_json::Error> {
        let mut buf = Vec::with_capacity(capacity);
        write(&mut buf)?;
        let text =
            String::from_utf8(buf).map_err(<serde_json::Error as serde::ser::Error>::custom)?;
        // SAFETY: `text` is one well-formed JSON value without surrounding whitespace: the
        // writers are this crate's own, each pinned byte for byte to serde_json's output by
        // tests (and `from_string_unchecked` re-parses it in debug builds, where the tests run).
        Ok(RawJson(unsafe { RawValue::from_string_unchecked(text) }))
    }

    /// Checks that `json` is one JSON value and keeps its text unchanged.
    pub fn parse(json: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json).map(RawJson)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Decodes the payload into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The payload as a JSON tree (for upcasters, tests and tools that inspect it generically).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.decode()
    }
}

impl From<serde_json::Value> for RawJson {
    fn from(value: serde_json::Value) -> Self {
        // Invariant: a `Value`'s map keys are strings and its numbers finite, so encoding it
        // cannot fail.
        RawJson::encode(&value).expect("a serde_json::Value always encodes")
    }
}

impl Default for RawJson {
    /// `null`.
    fn default() -> Self {
        RawJson(RawValue::NULL.to_owned())
    }
}

impl PartialEq for RawJson {
    /// Equal text, or else equal meaning (whitespace and key order aside).
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
            || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(RawJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Carrier {
        p: RawJson,
    }

    #[test]
    fn a_payload_keeps_its_text_through_a_round_trip() {
        let text = r#"{"z":1,"a":[true,null,"x"]}"#;
        let carrier = Carrier {
            p: RawJson::parse(text.to_owned()).unwrap(),
        };
        let encoded = serde_json::to_string(&carrier).unwrap();
        // Through a Value the keys would come back sorted; the payload's text is untouched.
        assert_eq!(encoded, format!(r#"{{"p":{text}}}"#));
        let back: Carrier = serde_json::from_str(&encoded).unwrap();
        assert_eq!(back, carrier);
        assert_eq!(back.p.get(), text);
        assert_eq!(
            back.p.to_value().unwrap(),
            json!({"a": [true, null, "x"], "z": 1})
        );
    }

    #[test]
    fn equality_is_meaning_not_layout() {
        let compact = RawJson::parse(r#"{"a":1,"b":[2]}"#.to_owned()).unwrap();
        let pretty = RawJson::parse("{ \"b\": [ 2 ],\n  \"a\": 1 }".to_owned()).unwrap();
        assert_eq!(compact, pretty);
        assert_ne!(
            compact,
            RawJson::parse(r#"{"a":1,"b":[3]}"#.to_owned()).unwrap()
        );
    }

    #[test]
    fn text_that_is_not_one_json_value_is_refused() {
        for bad in ["", "{", "{} {}", "nul", "[1,]"] {
            assert!(RawJson::parse(bad.to_owned()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_typed_value_decodes_back() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct P {
            path: String,
            n: u32,
        }
        let p = P {
            path: "a/b".into(),
            n: 7,
        };
        let payload = RawJson::encode(&p).unwrap();
        assert_eq!(payload.get(), r#"{"path":"a/b","n":7}"#);
        assert_eq!(payload.decode::<P>().unwrap(), p);
        assert_eq!(
            RawJson::from(json!({"n": 7, "path": "a/b"}))
                .decode::<P>()
                .unwrap(),
            p
        );
    }
}
