//! The five static rules, one function each, in the order [`super::authorize`] runs them. Reason
//! strings are the original service's, verbatim: clients match on them.

use serde_json::Value;

use crate::error_code::ErrorCode;
use crate::tools::{ArgField, PathArg, RiskLevel, Scope, SessionContext, ToolSpec};

use super::{Denial, paths};

const ROLE_DEVOPS: &str = "devops";
const ROLE_PLATFORM_ADMIN: &str = "platform_admin";

fn denied(message: &str) -> Denial {
    Denial::new(ErrorCode::PolicyDenied, message)
}

/// Whether the principal holds `role` (roles compare trimmed and case-insensitively).
fn has_role(session: &SessionContext, role: &str) -> bool {
    session
        .principal
        .roles
        .iter()
        .any(|r| r.trim().eq_ignore_ascii_case(role))
}

/// Rule 1: `workspace`/`repo` tools are open to anyone; `cluster`/`external` tools need `devops`
/// or `platform_admin`.
pub(super) fn scope(session: &SessionContext, spec: &ToolSpec) -> Result<(), Denial> {
    let allowed = match spec.scope {
        Scope::Workspace | Scope::Repo => true,
        Scope::Cluster | Scope::External => {
            has_role(session, ROLE_DEVOPS) || has_role(session, ROLE_PLATFORM_ADMIN)
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(denied("principal roles cannot access tool scope"))
    }
}

/// Rule 2: `high` risk tools need `platform_admin`.
pub(super) fn risk(session: &SessionContext, spec: &ToolSpec) -> Result<(), Denial> {
    if spec.risk_level == RiskLevel::High && !has_role(session, ROLE_PLATFORM_ADMIN) {
        return Err(denied("high risk capability requires platform_admin role"));
    }
    Ok(())
}

/// Rule 3: tools that require approval need `"approved": true`.
pub(super) fn approval(spec: &ToolSpec, approved: bool) -> Result<(), Denial> {
    if spec.requires_approval && !approved {
        return Err(Denial::new(
            ErrorCode::ApprovalRequired,
            "tool requires explicit approval",
        ));
    }
    Ok(())
}

/// The argument object, `None` when there are no arguments (`null` or `{}`), or the
/// "invalid args payload" denial when they are not an object.
fn arg_object(args: &Value) -> Result<Option<&serde_json::Map<String, Value>>, Denial> {
    match args {
        Value::Null => Ok(None),
        Value::Object(map) if map.is_empty() => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        _ => Err(denied("invalid args payload")),
    }
}

/// Follows a dot-separated field path (`request.path`) into nested objects; `None` when any
/// step is missing or not an object, or when the value is `null` (an unset optional argument).
fn lookup<'a>(args: &'a serde_json::Map<String, Value>, field: &str) -> Option<&'a Value> {
    let mut parts = field.split('.');
    let mut current = args.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    (!current.is_null()).then_some(current)
}

/// The string values of a field: one for a plain field, each element for a `multi` field.
/// `None` when the shape is wrong.
fn string_values(value: &Value, multi: bool) -> Option<Vec<&str>> {
    match (value, multi) {
        (Value::String(s), false) => Some(vec![s.as_str()]),
        (Value::Array(items), true) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// Rule 4: every path the arguments name must normalise inside the workspace and lie inside
/// the session's `allowed_paths`, and a path the tool writes must not be protected (`.git`).
pub(super) fn path_args(session: &SessionContext, named: &[PathArg]) -> Result<(), Denial> {
    for path in named {
        if path.writes {
            paths::check_writable(&path.raw, &session.allowed_paths)?;
        } else {
            paths::check(&path.raw, &session.allowed_paths)?;
        }
    }
    Ok(())
}

/// Rule 5: string arguments with declared rules. For each value (trimmed): empty → deny;
/// longer than `max_length` → deny; contains a denied character → deny; starts with a denied
/// prefix → deny; then it must equal an allowed value when there are any, else start with an
/// allowed prefix when there are any. `max_items` is checked on the list first.
pub(super) fn arg_fields(spec: &ToolSpec, args: &Value) -> Result<(), Denial> {
    if spec.policy.arg_fields.is_empty() {
        return Ok(());
    }
    let Some(args) = arg_object(args)? else {
        return Ok(());
    };
    for rule in &spec.policy.arg_fields {
        let Some(value) = lookup(args, rule.field) else {
            continue;
        };
        if rule.multi
            && let (Value::Array(items), Some(max)) = (value, rule.max_items)
            && items.len() > max
        {
            return Err(denied("argument list exceeds allowed length"));
        }
        let values =
            string_values(value, rule.multi).ok_or_else(|| denied("invalid args field payload"))?;
        if !values.into_iter().all(|v| arg_allowed(rule, v.trim())) {
            return Err(denied("argument not allowed by policy"));
        }
    }
    Ok(())
}

fn arg_allowed(rule: &ArgField, value: &str) -> bool {
    if value.is_empty() {
        return false;
    }
    if rule.max_length.is_some_and(|max| value.len() > max) {
        return false;
    }
    if rule.deny_characters.iter().any(|c| value.contains(c)) {
        return false;
    }
    if rule.denied_prefix.iter().any(|p| value.starts_with(p)) {
        return false;
    }
    if !rule.allowed_values.is_empty() {
        return rule.allowed_values.contains(&value);
    }
    if !rule.allowed_prefix.is_empty() {
        return rule.allowed_prefix.iter().any(|p| value.starts_with(p));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_follows_dotted_paths_and_ignores_nulls() {
        let args = json!({"a": {"b": {"c": "x"}}, "n": null, "s": "v"});
        let map = args.as_object().unwrap();
        assert_eq!(lookup(map, "a.b.c"), Some(&json!("x")));
        assert_eq!(lookup(map, "s"), Some(&json!("v")));
        assert_eq!(lookup(map, "n"), None);
        assert_eq!(lookup(map, "a.x"), None);
        assert_eq!(lookup(map, "s.x"), None);
    }

    #[test]
    fn arg_rules_apply_in_the_documented_order() {
        let rule = ArgField {
            field: "x",
            max_length: Some(8),
            deny_characters: vec![";", " "],
            denied_prefix: vec!["-f"],
            allowed_prefix: vec!["-"],
            ..ArgField::default()
        };
        assert!(arg_allowed(&rule, "-v"));
        assert!(!arg_allowed(&rule, ""));
        assert!(!arg_allowed(&rule, "-verylongflag"));
        assert!(!arg_allowed(&rule, "-v;rm"));
        assert!(
            !arg_allowed(&rule, "-failfast"),
            "plain prefix: -f blocks -failfast"
        );
        assert!(!arg_allowed(&rule, "v"), "allowed_prefix must match");
        let values = ArgField {
            field: "x",
            allowed_values: vec!["a", "b"],
            allowed_prefix: vec!["zzz"],
            ..ArgField::default()
        };
        assert!(arg_allowed(&values, "a"));
        assert!(
            !arg_allowed(&values, "zzz1"),
            "allowed_values wins over allowed_prefix"
        );
        assert!(arg_allowed(&ArgField::default(), "anything"));
    }
}
