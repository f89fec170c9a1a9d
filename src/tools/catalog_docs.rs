//! `docs/tool-catalog.md`, rendered from the registered tools (`workspace catalog-docs`).
//!
//! Everything in the document comes from the catalog entries ([`ToolSpec`]): metadata, the
//! derived argument and output schemas, path fields and examples. A golden test keeps the
//! committed file equal to what [`render`] writes, so the document cannot drift from the code.
//! Rendering is pure: no clock, no environment, the same catalog always gives the same bytes.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Catalog, ToolSpec};

/// Where the document lives, relative to the repository root.
pub const PATH: &str = "docs/tool-catalog.md";

/// The whole document.
pub fn render(catalog: &Catalog) -> String {
    let mut out = String::new();
    out.push_str(
        "# Tool catalog\n\n\
         <!-- Generated from the registered tools by `cargo run -- catalog-docs`; do not edit \
         by hand. A test fails when this file is not what the command writes. -->\n\n\
         Every tool the service offers, as `GET /v1/sessions/{id}/tools` serves it (a session \
         lists the tools its principal's roles may see; see [api.md](api.md)). Argument and \
         output schemas are JSON Schema 2020-12 derived from each tool's types: arguments are \
         parsed before policy, unknown arguments are refused, and a failure is \
         `invalid_argument` naming the field (`args.path: ...`). A path argument is a \
         workspace-relative path (`\"x-workspace-path\": \"read\"` or `\"write\"` in its \
         schema): the policy checks every one against the session's `allowed_paths`, and a \
         written path must not be inside `.git`.\n\n",
    );
    out.push_str("| Tool | Scope | Risk | Approval | Side effects | Runs repository code |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for spec in catalog.specs() {
        let _ = writeln!(
            out,
            "| [`{name}`](#{anchor}) | {scope} | {risk} | {approval} | {effects} | {code} |",
            name = spec.name,
            anchor = anchor(spec.name),
            scope = word(&spec.scope),
            risk = word(&spec.risk_level),
            approval = yes_no(spec.requires_approval),
            effects = word(&spec.side_effects),
            code = yes_no(spec.runs_repository_code),
        );
    }
    for spec in catalog.specs() {
        out.push('\n');
        tool(&mut out, spec);
    }
    out
}

fn tool(out: &mut String, spec: &ToolSpec) {
    let _ = writeln!(out, "## `{}`\n\n{}\n", spec.name, spec.description);
    out.push_str("| Metadata | |\n|---|---|\n");
    let rows = [
        ("scope", format!("`{}`", word(&spec.scope))),
        ("risk level", format!("`{}`", word(&spec.risk_level))),
        (
            "requires approval",
            yes_no(spec.requires_approval).to_owned(),
        ),
        ("side effects", format!("`{}`", word(&spec.side_effects))),
        ("idempotency", format!("`{}`", word(&spec.idempotency))),
        (
            "runs repository code",
            yes_no(spec.runs_repository_code).to_owned(),
        ),
        ("timeout", format!("{} s", spec.constraints.timeout_seconds)),
        ("max retries", spec.constraints.max_retries.to_string()),
        ("cost hint", format!("`{}`", spec.cost_hint)),
        (
            "trace / span",
            format!(
                "`{}` / `{}`",
                spec.observability.trace_name, spec.observability.span_name
            ),
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    if let Some(limit) = spec.constraints.output_limit_kb {
        let _ = writeln!(out, "| output limit | {limit} KiB |");
    }
    out.push('\n');
    for (title, items) in [
        ("Preconditions", &spec.preconditions),
        ("Postconditions", &spec.postconditions),
    ] {
        if !items.is_empty() {
            let _ = writeln!(out, "{title}:");
            for item in items {
                let _ = writeln!(out, "- {item}");
            }
            out.push('\n');
        }
    }
    if !spec.policy.path_fields.is_empty() {
        out.push_str("Path arguments: ");
        let fields: Vec<String> = spec
            .policy
            .path_fields
            .iter()
            .map(|f| {
                let access = if f.writes { "written" } else { "read" };
                let multi = if f.multi { ", a list" } else { "" };
                format!("`{}` ({access}{multi})", f.field)
            })
            .collect();
        let _ = writeln!(out, "{}.\n", fields.join(", "));
    }

    out.push_str("### Arguments\n\n");
    let mut args = Vec::new();
    fields(&spec.input_schema, "", &mut args);
    if args.is_empty() {
        out.push_str("None.\n\n");
    } else {
        out.push_str("| Argument | Type | Required | Default | Description |\n");
        out.push_str("|---|---|---|---|---|\n");
        for f in &args {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                f.name,
                f.kind,
                yes_no(f.required),
                f.default
                    .as_ref()
                    .map(|d| format!("`{d}`"))
                    .unwrap_or_default(),
                cell(&f.description),
            );
        }
        out.push('\n');
    }

    out.push_str("### Output\n\n");
    let mut outputs = Vec::new();
    fields(&spec.output_schema, "", &mut outputs);
    out.push_str("| Field | Type | Always present | Description |\n");
    out.push_str("|---|---|---|---|\n");
    for f in &outputs {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            f.name,
            f.kind,
            yes_no(f.required),
            cell(&f.description),
        );
    }
    out.push('\n');

    if !spec.examples.is_empty() {
        out.push_str("### Examples\n\n");
        for example in &spec.examples {
            let json = serde_json::to_string_pretty(example).unwrap_or_default();
            let _ = writeln!(out, "```json\n{json}\n```\n");
        }
    }
    // One trailing newline at the end of the document, not a blank line.
    while out.ends_with("\n\n") {
        out.pop();
    }
}

/// One row of an argument or output table.
struct Field {
    name: String,
    kind: String,
    required: bool,
    default: Option<String>,
    description: String,
}

/// The members of an object schema, nested objects and lists of objects flattened with dots
/// and `[]` (`entries[].path`), each after its parent.
fn fields(schema: &Value, prefix: &str, out: &mut Vec<Field>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, sub) in props {
        let full = format!("{prefix}{name}");
        out.push(Field {
            name: full.clone(),
            kind: kind(sub),
            required: required.contains(&name.as_str()),
            default: sub.get("default").map(Value::to_string),
            description: sub
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        });
        let object = object_branch(sub);
        if object.get("properties").is_some() {
            fields(object, &format!("{full}."), out);
        } else if let Some(items) = object.get("items")
            && object_branch(items).get("properties").is_some()
        {
            fields(object_branch(items), &format!("{full}[]."), out);
        }
    }
}

/// The object schema inside an optional one (`anyOf: [{object}, {null}]`), or the schema.
fn object_branch(schema: &Value) -> &Value {
    schema
        .get("anyOf")
        .and_then(Value::as_array)
        .and_then(|branches| {
            branches
                .iter()
                .find(|b| b.get("type") != Some(&"null".into()))
        })
        .unwrap_or(schema)
}

/// A schema in words: `string`, `integer ≥ 1`, `workspace path (written)`, `one of ...`.
fn kind(schema: &Value) -> String {
    if let Some(access) = schema.get("x-workspace-path").and_then(Value::as_str) {
        let access = if access == "write" { "written" } else { "read" };
        return format!("workspace path ({access})");
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        return format!("one of {}", values.join(", ").replace('"', ""));
    }
    let branch = object_branch(schema);
    if !std::ptr::eq(branch, schema) {
        return format!("{} or null", kind(branch));
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let nullable = types.contains(&"null");
    let main = types
        .iter()
        .find(|t| **t != "null")
        .copied()
        .unwrap_or("any");
    let mut text = match main {
        "array" => match schema.get("items") {
            Some(items) => format!("array of {}", kind(items)),
            None => "array".to_owned(),
        },
        "integer" | "number" => match schema.get("minimum") {
            Some(min) => format!("{main} ≥ {min}"),
            None => main.to_owned(),
        },
        "string" => {
            let min = schema.get("minLength").and_then(Value::as_u64);
            let max = schema.get("maxLength").and_then(Value::as_u64);
            match (min, max) {
                (Some(min), Some(max)) => format!("string ({min} to {max} characters)"),
                (Some(min), None) => format!("string (at least {min} characters)"),
                (None, Some(max)) => format!("string (at most {max} characters)"),
                (None, None) => "string".to_owned(),
            }
        }
        other => other.to_owned(),
    };
    if nullable {
        text.push_str(" or null");
    }
    text
}

/// A value's serde name (`workspace`, `best-effort`).
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Text made safe for a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// GitHub's heading anchor for `` `fs.read_file` ``: `fsread_file`.
fn anchor(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_tool_has_a_section_with_its_arguments_and_output() {
        let catalog = Catalog::builtin();
        let doc = render(&catalog);
        for spec in catalog.specs() {
            assert!(
                doc.contains(&format!("\n## `{}`\n", spec.name)),
                "{}",
                spec.name
            );
            assert!(doc.contains(&format!("(#{})", anchor(spec.name))));
        }
        assert_eq!(doc.matches("### Output").count(), catalog.len());
        assert!(doc.ends_with("```\n") && !doc.ends_with("\n\n"));
        assert_eq!(doc, render(&catalog), "rendering is deterministic");
    }

    #[test]
    fn schemas_read_as_words() {
        assert_eq!(
            kind(&json!({"type": "string", "minLength": 1, "maxLength": 8})),
            "string (1 to 8 characters)"
        );
        assert_eq!(
            kind(&json!({"type": "string", "x-workspace-path": "write"})),
            "workspace path (written)"
        );
        assert_eq!(
            kind(&json!({"type": ["integer", "null"], "minimum": 1})),
            "integer ≥ 1 or null"
        );
        assert_eq!(
            kind(&json!({"type": "string", "enum": ["utf8", "base64"]})),
            "one of `utf8`, `base64`"
        );
        assert_eq!(
            kind(&json!({"type": "array", "items": {"type": "string"}})),
            "array of string"
        );
        assert_eq!(anchor("fs.read_file"), "fsread_file");
        assert_eq!(cell("a | b\nc"), "a \\| b c");
    }
}
