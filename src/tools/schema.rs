//! Validation of tool arguments (and outputs) against the JSON Schemas of the catalog.
//!
//! This is deliberately not a general JSON Schema implementation: it understands exactly the
//! subset the catalog's schemas use, and [`check_supported`] (run over every catalog schema by a
//! unit test) keeps the catalog inside it, so a keyword this module would silently ignore can
//! never creep in. The subset:
//!
//! | keyword | meaning |
//! |---|---|
//! | `type` | a type name or an array of them: `object`, `array`, `string`, `integer`, `number`, `boolean`, `null`; `integer` accepts whole floats (`5.0`) |
//! | `properties` | schemas of named object members |
//! | `required` | members that must be present |
//! | `additionalProperties` | `false` refuses members not named in `properties` (`true` is the default) |
//! | `enum` | the value must equal one of these |
//! | `minimum` / `maximum` | inclusive numeric bounds |
//! | `minLength` / `maxLength` | string length in characters (Unicode scalar values) |
//! | `items` | schema of every array element |
//! | `minItems` / `maxItems` | array length bounds |
//! | `default`, `description`, `title`, `examples` | annotations, ignored by validation |
//!
//! Validation stops at the first error and reports where it happened as a dotted path rooted at
//! `args` (`args.path: expected string`, `args.paths[2]: expected string`). A missing argument
//! object (`null`) validates as `{}`. The module never looks at anything but its two inputs.

use std::fmt;

use serde_json::{Map, Value};

/// The keywords [`validate`] understands. Anything else in a schema is refused by
/// [`check_supported`].
pub const SUPPORTED_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "items",
    "minItems",
    "maxItems",
    "default",
    "description",
    "title",
    "examples",
];

const TYPE_NAMES: &[&str] = &[
    "object", "array", "string", "integer", "number", "boolean", "null",
];

/// Why a value does not match a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    /// Where: `args`, `args.path`, `args.paths[0]`, ...
    pub path: String,
    /// What is wrong (`expected string`, `missing required property "path"`, ...).
    pub message: String,
}

impl SchemaError {
    fn new(path: &Location<'_>, message: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// Validates tool arguments against an input schema; errors are rooted at `args`. A `null`
/// value (no arguments at all) validates as `{}`.
pub fn validate(schema: &Value, value: &Value) -> Result<(), SchemaError> {
    validate_as(schema, value, "args")
}

/// Validates `value` against `schema`, naming the root `root` in errors (`output` for a tool's
/// output). A `null` value is treated as `{}` when the schema expects an object and no `null`.
pub fn validate_as(schema: &Value, value: &Value, root: &str) -> Result<(), SchemaError> {
    let empty = Value::Object(Map::new());
    let value = if value.is_null() && expects_object_not_null(schema) {
        &empty
    } else {
        value
    };
    check(schema, value, &Location::Root(root))
}

fn expects_object_not_null(schema: &Value) -> bool {
    let accepts = |name: &str| match schema.get("type") {
        Some(Value::String(t)) => t == name,
        Some(Value::Array(ts)) => ts.iter().any(|t| t == name),
        _ => false,
    };
    accepts("object") && !accepts("null")
}

/// Where a value sits inside the validated document; rendered only when an error is reported,
/// so a successful validation allocates nothing for paths.
enum Location<'a> {
    Root(&'a str),
    Member(&'a Location<'a>, &'a str),
    Index(&'a Location<'a>, usize),
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Root(name) => f.write_str(name),
            Location::Member(parent, name) => write!(f, "{parent}.{name}"),
            Location::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64()
                    || n.is_u64()
                    || n.as_f64()
                        .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
            }
            _ => false,
        },
        _ => false,
    }
}

fn check(schema: &Value, value: &Value, at: &Location<'_>) -> Result<(), SchemaError> {
    let Some(schema) = schema.as_object() else {
        // `true`/`{}`-like schemas accept everything; the catalog only uses objects.
        return Ok(());
    };

    if let Some(t) = schema.get("type") {
        let names: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.is_empty() && !names.iter().any(|n| type_matches(n, value)) {
            return Err(SchemaError::new(
                at,
                format!("expected {}", names.join(" or ")),
            ));
        }
    }

    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.iter().any(|a| json_equal(a, value))
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(SchemaError::new(
            at,
            format!("must be one of {}", list.join(", ")),
        ));
    }

    match value {
        Value::Number(n) => check_number(schema, n, at)?,
        Value::String(s) => check_string(schema, s, at)?,
        Value::Array(items) => check_array(schema, items, at)?,
        Value::Object(members) => check_object(schema, members, at)?,
        Value::Null | Value::Bool(_) => {}
    }
    Ok(())
}

/// JSON equality where `1` equals `1.0` (serde_json's `==` tells them apart).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

fn check_number(
    schema: &Map<String, Value>,
    n: &serde_json::Number,
    at: &Location<'_>,
) -> Result<(), SchemaError> {
    let Some(v) = n.as_f64() else {
        return Ok(());
    };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && v < min
    {
        return Err(SchemaError::new(at, format!("must be >= {}", show(min))));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && v > max
    {
        return Err(SchemaError::new(at, format!("must be <= {}", show(max))));
    }
    Ok(())
}

/// Renders a bound without a spurious `.0` (`1`, not `1.0`).
fn show(bound: f64) -> String {
    if bound.fract() == 0.0 && bound.abs() < 1e15 {
        format!("{}", bound as i64)
    } else {
        bound.to_string()
    }
}

fn check_string(
    schema: &Map<String, Value>,
    s: &str,
    at: &Location<'_>,
) -> Result<(), SchemaError> {
    let min = schema.get("minLength").and_then(Value::as_u64);
    let max = schema.get("maxLength").and_then(Value::as_u64);
    if min.is_none() && max.is_none() {
        return Ok(());
    }
    // JSON Schema counts characters, not bytes; counting stops early past the maximum so a
    // huge string costs no more than the bound.
    let limit = max.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let len = s.chars().take(limit.saturating_add(1)).count() as u64;
    if let Some(min) = min
        && len < min
    {
        return Err(SchemaError::new(
            at,
            format!("must be at least {min} characters"),
        ));
    }
    if let Some(max) = max
        && len > max
    {
        return Err(SchemaError::new(
            at,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

fn check_array(
    schema: &Map<String, Value>,
    items: &[Value],
    at: &Location<'_>,
) -> Result<(), SchemaError> {
    let len = items.len() as u64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && len < min
    {
        return Err(SchemaError::new(
            at,
            format!("must have at least {min} items"),
        ));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && len > max
    {
        return Err(SchemaError::new(
            at,
            format!("must have at most {max} items"),
        ));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &Location::Index(at, i))?;
        }
    }
    Ok(())
}

fn check_object(
    schema: &Map<String, Value>,
    members: &Map<String, Value>,
    at: &Location<'_>,
) -> Result<(), SchemaError> {
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !members.contains_key(name) {
                return Err(SchemaError::new(
                    at,
                    format!("missing required property {}", quote(name)),
                ));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    // Members are checked in the map's iteration order, which is deterministic, so the same
    // input always reports the same first error.
    for (name, member) in members {
        match properties.and_then(|p| p.get(name)) {
            Some(member_schema) => check(member_schema, member, &Location::Member(at, name))?,
            None if closed => {
                return Err(SchemaError::new(
                    at,
                    format!("unknown property {}", quote(name)),
                ));
            }
            None => {}
        }
    }
    Ok(())
}

/// A property name as it appears in messages: JSON-quoted, so control characters or quotes in
/// a caller's key cannot garble the message.
fn quote(name: &str) -> String {
    Value::String(name.to_owned()).to_string()
}

/// Checks that `schema` only uses [`SUPPORTED_KEYWORDS`], with well-formed values (types from
/// the supported list, `required` names that exist in `properties`, boolean
/// `additionalProperties`, non-negative integer length bounds). Returns the first problem,
/// located by a JSON-pointer-like path.
pub fn check_supported(schema: &Value) -> Result<(), String> {
    check_schema(schema, "#")
}

fn check_schema(schema: &Value, at: &str) -> Result<(), String> {
    let Some(map) = schema.as_object() else {
        return Err(format!("{at}: a schema must be an object"));
    };
    for (keyword, value) in map {
        let here = format!("{at}/{keyword}");
        match keyword.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(ts) if !ts.is_empty() => ts.iter().collect(),
                    Value::String(_) => vec![value],
                    _ => return Err(format!("{here}: must be a type name or a non-empty array")),
                };
                for name in names {
                    if !name.as_str().is_some_and(|n| TYPE_NAMES.contains(&n)) {
                        return Err(format!("{here}: unsupported type {name}"));
                    }
                }
            }
            "properties" => {
                let Some(props) = value.as_object() else {
                    return Err(format!("{here}: must be an object"));
                };
                for (name, sub) in props {
                    check_schema(sub, &format!("{here}/{name}"))?;
                }
            }
            "required" => {
                let Some(names) = value.as_array() else {
                    return Err(format!("{here}: must be an array"));
                };
                let props = map.get("properties").and_then(Value::as_object);
                for name in names {
                    let Some(name) = name.as_str() else {
                        return Err(format!("{here}: names must be strings"));
                    };
                    if !props.is_some_and(|p| p.contains_key(name)) {
                        return Err(format!("{here}: {name:?} is not in properties"));
                    }
                }
            }
            "additionalProperties" => {
                if !value.is_boolean() {
                    return Err(format!("{here}: only true or false is supported"));
                }
            }
            "enum" => {
                if value.as_array().is_none_or(|a| a.is_empty()) {
                    return Err(format!("{here}: must be a non-empty array"));
                }
            }
            "minimum" | "maximum" => {
                if !value.is_number() {
                    return Err(format!("{here}: must be a number"));
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                if value.as_u64().is_none() {
                    return Err(format!("{here}: must be a non-negative integer"));
                }
            }
            "items" => check_schema(value, &here)?,
            "default" | "examples" => {}
            "description" | "title" => {
                if !value.is_string() {
                    return Err(format!("{here}: must be a string"));
                }
            }
            other => return Err(format!("{at}: unsupported keyword {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1, "maxLength": 5},
                "max": {"type": "integer", "minimum": 1, "maximum": 10},
                "ratio": {"type": "number"},
                "flag": {"type": "boolean", "default": false},
                "encoding": {"type": "string", "enum": ["utf8", "base64"]},
                "paths": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
                "maybe": {"type": ["string", "null"]},
                "nested": {
                    "type": "object",
                    "properties": {"inner": {"type": "integer"}},
                    "additionalProperties": false
                }
            },
            "required": ["path"],
            "additionalProperties": false
        })
    }

    fn err(value: Value) -> String {
        validate(&schema(), &value).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_object_passes() {
        let value = json!({
            "path": "a.txt", "max": 3, "ratio": 0.5, "flag": true, "encoding": "utf8",
            "paths": ["x"], "maybe": null, "nested": {"inner": 2}
        });
        assert_eq!(validate(&schema(), &value), Ok(()));
    }

    #[test]
    fn wrong_types_name_the_field() {
        assert_eq!(err(json!({"path": 1})), "args.path: expected string");
        assert_eq!(
            err(json!({"path": "a", "flag": "yes"})),
            "args.flag: expected boolean"
        );
        assert_eq!(
            err(json!({"path": "a", "maybe": 3})),
            "args.maybe: expected string or null"
        );
        assert_eq!(err(json!("a")), "args: expected object");
    }

    #[test]
    fn integers_accept_whole_floats_only() {
        assert_eq!(
            validate(&schema(), &json!({"path": "a", "max": 5.0})),
            Ok(())
        );
        assert_eq!(
            err(json!({"path": "a", "max": 5.5})),
            "args.max: expected integer"
        );
        assert_eq!(
            err(json!({"path": "a", "max": "5"})),
            "args.max: expected integer"
        );
        assert_eq!(
            validate(&schema(), &json!({"path": "a", "ratio": 3})),
            Ok(())
        );
    }

    #[test]
    fn missing_required_and_unknown_properties_are_reported() {
        assert_eq!(err(json!({})), "args: missing required property \"path\"");
        assert_eq!(
            err(json!({"path": "a", "pathh": "b"})),
            "args: unknown property \"pathh\""
        );
        assert_eq!(
            err(json!({"path": "a", "nested": {"other": 1}})),
            "args.nested: unknown property \"other\""
        );
    }

    #[test]
    fn null_arguments_validate_as_an_empty_object() {
        let optional = json!({"type": "object", "properties": {"path": {"type": "string"}}, "additionalProperties": false});
        assert_eq!(validate(&optional, &Value::Null), Ok(()));
        assert_eq!(
            validate(&schema(), &Value::Null).unwrap_err().to_string(),
            "args: missing required property \"path\""
        );
    }

    #[test]
    fn enums_bounds_and_lengths_are_enforced() {
        assert_eq!(
            err(json!({"path": "a", "encoding": "hex"})),
            "args.encoding: must be one of \"utf8\", \"base64\""
        );
        assert_eq!(
            err(json!({"path": "a", "max": 0})),
            "args.max: must be >= 1"
        );
        assert_eq!(
            err(json!({"path": "a", "max": 11})),
            "args.max: must be <= 10"
        );
        assert_eq!(
            err(json!({"path": ""})),
            "args.path: must be at least 1 characters"
        );
        assert_eq!(
            err(json!({"path": "abcdef"})),
            "args.path: must be at most 5 characters"
        );
        // Characters, not bytes: five two-byte characters fit a maxLength of 5.
        assert_eq!(validate(&schema(), &json!({"path": "ééééé"})), Ok(()));
    }

    #[test]
    fn array_items_and_lengths_are_enforced() {
        assert_eq!(
            err(json!({"path": "a", "paths": []})),
            "args.paths: must have at least 1 items"
        );
        assert_eq!(
            err(json!({"path": "a", "paths": ["a", "b", "c"]})),
            "args.paths: must have at most 2 items"
        );
        assert_eq!(
            err(json!({"path": "a", "paths": ["a", 2]})),
            "args.paths[1]: expected string"
        );
    }

    #[test]
    fn enum_comparison_treats_equal_numbers_as_equal() {
        let s = json!({"type": "integer", "enum": [1, 2]});
        assert_eq!(validate_as(&s, &json!(2.0), "v"), Ok(()));
        assert_eq!(
            validate_as(&s, &json!(3), "v").unwrap_err().to_string(),
            "v: must be one of 1, 2"
        );
    }

    #[test]
    fn the_supported_subset_check_refuses_other_keywords() {
        assert_eq!(check_supported(&schema()), Ok(()));
        assert!(
            check_supported(&json!({"type": "string", "pattern": "^a"}))
                .unwrap_err()
                .contains("pattern")
        );
        assert!(
            check_supported(&json!({"type": "object", "properties": {"a": {"oneOf": []}}}))
                .is_err()
        );
        assert!(check_supported(&json!({"type": "uuid"})).is_err());
        assert!(
            check_supported(&json!({"type": "object", "additionalProperties": {"type": "string"}}))
                .is_err()
        );
        assert!(
            check_supported(&json!({"type": "object", "properties": {}, "required": ["x"]}))
                .is_err()
        );
        assert!(check_supported(&json!({"type": "string", "maxLength": -1})).is_err());
    }
}
