//! Typed argument values every tool family uses, and the parsing of arguments at the edge.
//!
//! A tool's `Args` type is parsed from the request's JSON with serde ([`parse`]): a failure is
//! an [`ArgsError`] naming where it happened (`args.path: ...`), which the API answers as
//! `invalid_argument`. The value types here carry their own rules (and describe them in the
//! schema they derive), so a handler never re-checks a shape:
//!
//! - [`WorkspacePath`]: a path argument. Its access type ([`Read`] or [`Write`]) tells the
//!   policy whether the tool only reads what it names or writes it; the policy finds every path
//!   of an argument value through [`workspace_paths`], never through a list of field names.
//! - [`Count`]: a positive count with a default and a silent cap.
//! - [`NonEmptyString`]: a string of 1 to `MAX` characters.
//!
//! This module never decides policy: it only says which paths an argument value names.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU64;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer, ser};
use serde_json::Value;

use crate::policy::{Denial, paths};

/// Longest path argument, in characters (the policy also bounds it to 4096 bytes).
pub const PATH_MAX_CHARS: usize = 4096;

/// How a tool uses a [`WorkspacePath`]: [`Read`] or [`Write`].
pub trait Access: Send + Sync + 'static {
    /// Whether the tool creates, replaces, moves or removes what the path names. Such paths
    /// must not be protected (`.git` at any depth, see [`crate::policy::paths`]).
    const WRITES: bool;
    /// The value of the `x-workspace-path` schema keyword: `read` or `write`.
    const KEYWORD: &'static str;
    /// The serde newtype name [`workspace_paths`] recognises.
    #[doc(hidden)]
    const MAGIC: &'static str;
}

/// The tool only reads what the path names.
#[derive(Debug)]
pub enum Read {}

/// The tool writes what the path names.
#[derive(Debug)]
pub enum Write {}

impl Access for Read {
    const WRITES: bool = false;
    const KEYWORD: &'static str = "read";
    const MAGIC: &'static str = "$workspace::WorkspacePath<Read>";
}

impl Access for Write {
    const WRITES: bool = true;
    const KEYWORD: &'static str = "write";
    const MAGIC: &'static str = "$workspace::WorkspacePath<Write>";
}

/// A workspace-relative path argument, as the caller wrote it: a non-empty string of at most
/// [`PATH_MAX_CHARS`] characters. It is not yet normalised: absolute paths and `..` escapes
/// are the policy's to refuse (`policy_denied`, not `invalid_argument`), and
/// [`WorkspacePath::resolve`] normalises it and checks it against the session's
/// `allowed_paths` (and, for a [`Write`] path, the protected path) where a handler uses it.
///
/// Its schema is a string with `"x-workspace-path": "read"` or `"write"`; the catalog's
/// `policy.path_fields` are read from that keyword.
pub struct WorkspacePath<A: Access = Read> {
    raw: String,
    access: PhantomData<fn() -> A>,
}

impl<A: Access> WorkspacePath<A> {
    /// The workspace root, `.` (the default of directory arguments).
    pub fn root() -> Self {
        Self::new_unchecked(".".to_owned())
    }

    fn new_unchecked(raw: String) -> Self {
        Self {
            raw,
            access: PhantomData,
        }
    }

    /// A path argument from a string, as deserialisation would take it.
    pub fn parse(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        let chars = raw.chars().count();
        if chars == 0 || chars > PATH_MAX_CHARS {
            return Err(format!(
                "invalid length {chars}, expected {}",
                PathExpectation
            ));
        }
        Ok(Self::new_unchecked(raw))
    }

    /// The path as the caller wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The normalised path, checked against `allowed_paths` (and, for a [`Write`] path, the
    /// protected path): the policy's rule 4 for this one path.
    pub fn resolve(&self, allowed_paths: &[String]) -> Result<String, Denial> {
        if A::WRITES {
            paths::check_writable(&self.raw, allowed_paths)
        } else {
            paths::check(&self.raw, allowed_paths)
        }
    }
}

impl<A: Access> Clone for WorkspacePath<A> {
    fn clone(&self) -> Self {
        Self::new_unchecked(self.raw.clone())
    }
}

impl<A: Access> fmt::Debug for WorkspacePath<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkspacePath<{}>({:?})", A::KEYWORD, self.raw)
    }
}

impl<A: Access> PartialEq for WorkspacePath<A> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

struct PathExpectation;

impl de::Expected for PathExpectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a workspace-relative path of 1 to {PATH_MAX_CHARS} characters"
        )
    }
}

impl fmt::Display for PathExpectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        de::Expected::fmt(self, f)
    }
}

impl<'de, A: Access> Deserialize<'de> for WorkspacePath<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let chars = raw.chars().count();
        if chars == 0 || chars > PATH_MAX_CHARS {
            return Err(de::Error::invalid_length(chars, &PathExpectation));
        }
        Ok(Self::new_unchecked(raw))
    }
}

impl<A: Access> Serialize for WorkspacePath<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A string to every serializer but the path collector, which knows the name.
        serializer.serialize_newtype_struct(A::MAGIC, &self.raw)
    }
}

impl<A: Access> JsonSchema for WorkspacePath<A> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "WorkspacePath".into()
    }

    fn schema_id() -> Cow<'static, str> {
        A::MAGIC.into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": PATH_MAX_CHARS,
            "x-workspace-path": A::KEYWORD,
        })
    }
}

/// A path an argument value names, as [`workspace_paths`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    /// The path as the caller wrote it.
    pub raw: String,
    /// Whether the tool writes it ([`Write`]).
    pub writes: bool,
}

/// Every [`WorkspacePath`] inside `args`, at any depth (options, lists, nested structs), in
/// field order. The policy reads the paths of a tool's arguments from here.
pub fn workspace_paths<T: Serialize + ?Sized>(args: &T) -> Vec<PathArg> {
    let mut collector = PathCollector {
        found: Vec::new(),
        pending: None,
    };
    // The collector itself never fails; a Serialize impl that does is not an argument type.
    if args.serialize(&mut collector).is_err() {
        tracing::error!("an argument value failed to serialize while collecting its paths");
    }
    collector.found
}

/// A positive count (at least 1): `DEFAULT` when absent, silently capped at `MAX` by
/// [`Count::get`] (as the original service clamped). Its schema is an integer with
/// `minimum: 1`; whole floats (`5.0`) are not counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count<const DEFAULT: u64, const MAX: u64 = { u64::MAX }>(NonZeroU64);

impl<const DEFAULT: u64, const MAX: u64> Count<DEFAULT, MAX> {
    /// The count, capped at `MAX`.
    pub fn get(self) -> u64 {
        self.0.get().min(MAX)
    }
}

impl<const DEFAULT: u64, const MAX: u64> Default for Count<DEFAULT, MAX> {
    fn default() -> Self {
        const { assert!(DEFAULT >= 1 && DEFAULT <= MAX) };
        Self(NonZeroU64::new(DEFAULT).unwrap_or(NonZeroU64::MIN))
    }
}

impl<'de, const DEFAULT: u64, const MAX: u64> Deserialize<'de> for Count<DEFAULT, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        NonZeroU64::deserialize(deserializer).map(Self)
    }
}

impl<const DEFAULT: u64, const MAX: u64> Serialize for Count<DEFAULT, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0.get())
    }
}

impl<const DEFAULT: u64, const MAX: u64> JsonSchema for Count<DEFAULT, MAX> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Count".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 1})
    }
}

/// A string of 1 to `MAX` characters (Unicode scalar values, as JSON Schema counts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmptyString<const MAX: usize = { usize::MAX }>(String);

impl<const MAX: usize> NonEmptyString<MAX> {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> std::ops::Deref for NonEmptyString<MAX> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

struct LengthExpectation(usize);

impl de::Expected for LengthExpectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == usize::MAX {
            f.write_str("a non-empty string")
        } else {
            write!(f, "a string of 1 to {} characters", self.0)
        }
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for NonEmptyString<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        // Counting stops one past the bound: a 1 MiB string is not walked twice.
        let chars = s.chars().take(MAX.saturating_add(1)).count();
        if chars == 0 || chars > MAX {
            return Err(de::Error::invalid_length(chars, &LengthExpectation(MAX)));
        }
        Ok(Self(s))
    }
}

impl<const MAX: usize> Serialize for NonEmptyString<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<const MAX: usize> JsonSchema for NonEmptyString<MAX> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "NonEmptyString".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut schema = json_schema!({"type": "string", "minLength": 1});
        if MAX != usize::MAX {
            schema.insert("maxLength".into(), MAX.into());
        }
        schema
    }
}

/// Why arguments did not parse: where (`args`, `args.path`, `args.paths[2]`) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ArgsError {
    /// Where, rooted at `args`.
    pub path: String,
    /// What is wrong: serde's message, except that a missing or unknown field reads
    /// `missing required property "x"` / `unknown property "x"`.
    pub message: String,
}

/// Parses a tool's arguments. `null` (no arguments) parses as `{}`.
pub fn parse<T: serde::de::DeserializeOwned>(args: &Value) -> Result<T, ArgsError> {
    if args.is_null() {
        return from_deserializer(Value::Object(serde_json::Map::new()));
    }
    from_deserializer(args)
}

/// [`parse`] taking the value: strings move into the arguments instead of being copied.
pub fn parse_owned<T: serde::de::DeserializeOwned>(args: Value) -> Result<T, ArgsError> {
    if args.is_null() {
        return from_deserializer(Value::Object(serde_json::Map::new()));
    }
    from_deserializer(args)
}

fn from_deserializer<'de, D, T>(deserializer: D) -> Result<T, ArgsError>
where
    D: Deserializer<'de, Error = serde_json::Error>,
    T: Deserialize<'de>,
{
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let mut path = String::from("args");
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key } => {
                    path.push('.');
                    path.push_str(key);
                }
                serde_path_to_error::Segment::Enum { variant } => {
                    path.push('.');
                    path.push_str(variant);
                }
                serde_path_to_error::Segment::Unknown => path.push_str(".?"),
            }
        }
        let message = message(&e.into_inner().to_string());
        // serde_path_to_error ends an unknown field's path with the field itself; the message
        // names it, so the path stays its object's (`args: unknown property "x"`).
        if let Some(name) = message
            .strip_prefix("unknown property \"")
            .and_then(|rest| rest.strip_suffix('"'))
            && let Some(parent) = path.strip_suffix(&format!(".{name}"))
        {
            path.truncate(parent.len());
        }
        ArgsError { path, message }
    })
}

/// serde's message, with its two field messages in the catalog's words (clients match on
/// them): ``missing field `x` `` and ``unknown field `x`, expected ...``.
fn message(serde: &str) -> String {
    let quoted = |rest: &str| rest.split('`').next().map(str::to_owned);
    if let Some(name) = serde.strip_prefix("missing field `").and_then(quoted) {
        return format!("missing required property \"{name}\"");
    }
    if let Some(name) = serde.strip_prefix("unknown field `").and_then(quoted) {
        return format!("unknown property \"{name}\"");
    }
    serde.to_owned()
}

// ---------------------------------------------------------------------------------------------
// The path collector: a serializer that records the strings inside WorkspacePath newtypes.
// ---------------------------------------------------------------------------------------------

struct PathCollector {
    found: Vec<PathArg>,
    /// Set while the inner string of a path newtype is being serialised: whether it writes.
    pending: Option<bool>,
}

#[derive(Debug)]
struct CollectError(String);

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CollectError {}

impl ser::Error for CollectError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

macro_rules! ignore {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method(self, _: $ty) -> Result<(), CollectError> {
            self.pending = None;
            Ok(())
        }
    )*};
}

impl Serializer for &mut PathCollector {
    type Ok = ();
    type Error = CollectError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    ignore! {
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    }

    fn serialize_str(self, v: &str) -> Result<(), CollectError> {
        if let Some(writes) = self.pending.take() {
            self.found.push(PathArg {
                raw: v.to_owned(),
                writes,
            });
        }
        Ok(())
    }

    fn serialize_none(self) -> Result<(), CollectError> {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CollectError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), CollectError> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), CollectError> {
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), CollectError> {
        self.pending = if name == Read::MAGIC {
            Some(false)
        } else if name == Write::MAGIC {
            Some(true)
        } else {
            None
        };
        let result = value.serialize(&mut *self);
        self.pending = None;
        result
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), CollectError> {
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, CollectError> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, CollectError> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, CollectError> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, CollectError> {
        Ok(self)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self, CollectError> {
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, CollectError> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, CollectError> {
        Ok(self)
    }
}

macro_rules! compound {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for &mut PathCollector {
            type Ok = ();
            type Error = CollectError;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CollectError> {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<(), CollectError> {
                Ok(())
            }
        }
    )*};
}

compound! {
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
}

impl ser::SerializeMap for &mut PathCollector {
    type Ok = ();
    type Error = CollectError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), CollectError> {
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CollectError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), CollectError> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut PathCollector {
    type Ok = ();
    type Error = CollectError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), CollectError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), CollectError> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut PathCollector {
    type Ok = ();
    type Error = CollectError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), CollectError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), CollectError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        target: WorkspacePath<Write>,
    }

    #[derive(Debug, Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        path: WorkspacePath,
        #[serde(default)]
        more: Vec<WorkspacePath>,
        #[serde(default)]
        optional: Option<WorkspacePath<Write>>,
        #[serde(default)]
        nested: Option<Nested>,
        #[serde(default)]
        max: Count<5, 10>,
        #[serde(default)]
        label: Option<NonEmptyString<3>>,
        #[serde(default)]
        note: String,
    }

    fn sample(args: Value) -> Result<Sample, ArgsError> {
        parse(&args)
    }

    fn error(args: Value) -> String {
        sample(args).unwrap_err().to_string()
    }

    #[test]
    fn every_path_of_a_value_is_found_with_its_access_in_field_order() {
        let args = sample(json!({
            "path": "a",
            "more": ["b", "c"],
            "optional": "d",
            "nested": {"target": "e"},
            "note": "not a path",
        }))
        .unwrap();
        let found: Vec<(String, bool)> = workspace_paths(&args)
            .into_iter()
            .map(|p| (p.raw, p.writes))
            .collect();
        assert_eq!(
            found,
            [
                ("a".to_owned(), false),
                ("b".to_owned(), false),
                ("c".to_owned(), false),
                ("d".to_owned(), true),
                ("e".to_owned(), true),
            ]
        );
        let only = sample(json!({"path": "x"})).unwrap();
        assert_eq!(workspace_paths(&only).len(), 1);
        // To every other serializer a path is its string.
        assert_eq!(serde_json::to_value(&only).unwrap()["path"], "x");
    }

    #[test]
    fn errors_name_the_field_that_failed() {
        assert_eq!(error(json!({})), "args: missing required property \"path\"");
        assert_eq!(
            error(json!({"path": "a", "pathh": 1})),
            "args: unknown property \"pathh\""
        );
        assert_eq!(
            error(json!({"path": 7})),
            "args.path: invalid type: integer `7`, expected a string"
        );
        assert_eq!(
            error(json!({"path": "a", "more": ["b", 2]})),
            "args.more[1]: invalid type: integer `2`, expected a string"
        );
        assert_eq!(
            error(json!({"path": "a", "nested": {"target": ""}})),
            "args.nested.target: invalid length 0, expected a workspace-relative path of 1 to \
             4096 characters"
        );
        assert_eq!(
            error(json!({"path": "a", "nested": {"x": "y"}})),
            "args.nested: unknown property \"x\""
        );
        assert_eq!(
            error(json!({"path": "a", "max": 0})),
            "args.max: invalid value: integer `0`, expected a nonzero u64"
        );
        assert_eq!(
            error(json!({"path": "a", "label": "four"})),
            "args.label: invalid length 4, expected a string of 1 to 3 characters"
        );
        assert_eq!(
            error(json!({"path": "x".repeat(PATH_MAX_CHARS + 1)})),
            "args.path: invalid length 4097, expected a workspace-relative path of 1 to 4096 \
             characters"
        );
        // Characters, not bytes: 4096 two-byte characters are a valid argument.
        assert!(sample(json!({"path": "é".repeat(PATH_MAX_CHARS)})).is_ok());
        assert!(parse::<Sample>(&Value::Null).is_err(), "null is {{}}");
    }

    #[test]
    fn counts_default_and_cap_silently() {
        assert_eq!(sample(json!({"path": "a"})).unwrap().max.get(), 5);
        assert_eq!(sample(json!({"path": "a", "max": 7})).unwrap().max.get(), 7);
        assert_eq!(
            sample(json!({"path": "a", "max": 100})).unwrap().max.get(),
            10
        );
        assert!(sample(json!({"path": "a", "max": 5.0})).is_err());
        assert!(sample(json!({"path": "a", "max": -1})).is_err());
    }

    #[test]
    fn schemas_carry_the_rules_the_types_enforce() {
        let schema = serde_json::to_value(schemars::schema_for!(Sample)).unwrap();
        let props = &schema["properties"];
        assert_eq!(props["path"]["x-workspace-path"], "read");
        assert_eq!(props["path"]["minLength"], 1);
        assert_eq!(props["path"]["maxLength"], PATH_MAX_CHARS);
        assert_eq!(props["more"]["items"]["x-workspace-path"], "read");
        assert_eq!(props["max"]["minimum"], 1);
        assert_eq!(props["max"]["default"], 5);
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!(["path"]));
    }

    #[test]
    fn resolve_applies_the_access_rule() {
        let all = vec![".".to_owned()];
        let read: WorkspacePath<Read> = WorkspacePath::parse("./.git/config").unwrap();
        assert_eq!(read.resolve(&all).unwrap(), ".git/config");
        let write: WorkspacePath<Write> = WorkspacePath::parse("./.git/config").unwrap();
        assert_eq!(
            write.resolve(&all).unwrap_err().message,
            paths::PROTECTED_MESSAGE
        );
        assert!(WorkspacePath::<Read>::parse("").is_err());
    }
}
