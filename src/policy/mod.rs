//! Policy: decides, before anything is queued, whether a principal may run a tool with these
//! arguments. Pure functions over the session facts, the tool's metadata and the arguments: no
//! IO, no clock, no filesystem (symlink escapes are the runner's to refuse).
//!
//! [`authorize`] runs rules 1–5 of the original service in order, and the first failure wins:
//!
//! 1. scope vs roles — `policy_denied` "principal roles cannot access tool scope"
//! 2. high risk needs `platform_admin` — `policy_denied` "high risk capability requires
//!    platform_admin role"
//! 3. approval — `approval_required` "tool requires explicit approval"
//! 4. path fields ([`paths`]) — `policy_denied` "absolute paths are not allowed", "path escapes
//!    workspace", "path outside allowed_paths", "invalid path field payload", ...; a field the
//!    tool writes must also not be protected (`.git` at any depth: [`paths::PROTECTED_MESSAGE`])
//! 5. argument rules — `policy_denied` "argument not allowed by policy", "argument list exceeds
//!    allowed length", "invalid args field payload"
//!
//! Arguments are expected to have passed schema validation already; the rules still check the
//! shapes they read, so a bypass of validation cannot turn into an allow.

pub mod paths;
mod rules;

use serde_json::Value;

use crate::error_code::ErrorCode;
use crate::tools::{SessionContext, ToolSpec};

/// A refusal: the stable error code and the reason recorded on the invocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Denial {
    /// `policy_denied` or `approval_required` from the rules; handlers reuse the type for their
    /// own path checks.
    pub code: ErrorCode,
    /// The reason, verbatim from the original service where it had one.
    pub message: String,
}

impl Denial {
    /// A denial with a code and a reason.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Decides whether `session`'s principal may run the tool `spec` with `args` (`approved`: the
/// caller's `"approved"` flag). Runs rules 1–5 in order; the first failure wins.
pub fn authorize(
    session: &SessionContext,
    spec: &ToolSpec,
    args: &Value,
    approved: bool,
) -> Result<(), Denial> {
    rules::scope(session, spec)?;
    rules::risk(session, spec)?;
    rules::approval(spec, approved)?;
    rules::path_fields(session, spec, args)?;
    rules::arg_fields(spec, args)?;
    Ok(())
}

/// Whether the tool appears in the session's tool listing: only rules 1–2 can hide a tool (the
/// original listed with `approved=true` and no arguments).
pub fn visible(session: &SessionContext, spec: &ToolSpec) -> bool {
    rules::scope(session, spec).is_ok() && rules::risk(session, spec).is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use workspace_events::Principal;

    use super::*;
    use crate::ids::SessionId;
    use crate::tools::{
        ArgField, Constraints, Idempotency, Observability, PathField, PolicyMetadata, RiskLevel,
        Scope, SideEffects,
    };

    fn session(roles: &[&str], allowed: &[&str]) -> SessionContext {
        SessionContext {
            id: SessionId::generate(),
            principal: Principal {
                tenant_id: "t".into(),
                actor_id: "a".into(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            },
            allowed_paths: allowed.iter().map(|p| (*p).to_owned()).collect(),
            metadata: BTreeMap::new(),
        }
    }

    fn spec(scope: Scope, risk: RiskLevel, approval: bool) -> ToolSpec {
        ToolSpec {
            name: "test.tool",
            description: "a tool for policy tests",
            input_schema: json!({"type": "object"}),
            output_schema: json!({"type": "object"}),
            scope,
            side_effects: SideEffects::None,
            risk_level: risk,
            requires_approval: approval,
            idempotency: Idempotency::Guaranteed,
            runs_repository_code: false,
            constraints: Constraints {
                timeout_seconds: 10,
                max_retries: 0,
                output_limit_kb: None,
            },
            preconditions: Vec::new(),
            postconditions: Vec::new(),
            cost_hint: "low",
            policy: PolicyMetadata::default(),
            observability: Observability {
                trace_name: "workspace.tools",
                span_name: "test.tool",
            },
            examples: Vec::new(),
        }
    }

    fn path_spec(fields: &[(&'static str, bool)]) -> ToolSpec {
        let mut s = spec(Scope::Workspace, RiskLevel::Low, false);
        s.policy.path_fields = fields
            .iter()
            .map(|(field, multi)| PathField {
                field,
                multi: *multi,
                workspace_relative: true,
                writes: false,
            })
            .collect();
        s
    }

    fn reason(r: Result<(), Denial>) -> (ErrorCode, String) {
        let d = r.unwrap_err();
        (d.code, d.message)
    }

    fn denied(message: &str) -> (ErrorCode, String) {
        (ErrorCode::PolicyDenied, message.to_owned())
    }

    #[test]
    fn workspace_and_repo_scopes_are_open_to_anyone() {
        let dev = session(&["developer"], &["."]);
        for scope in [Scope::Workspace, Scope::Repo] {
            assert_eq!(
                authorize(&dev, &spec(scope, RiskLevel::Low, false), &json!({}), false),
                Ok(())
            );
        }
        let nobody = session(&[], &["."]);
        assert!(visible(
            &nobody,
            &spec(Scope::Repo, RiskLevel::Medium, true)
        ));
    }

    #[test]
    fn cluster_and_external_scopes_need_devops_or_platform_admin() {
        let dev = session(&["developer"], &["."]);
        for scope in [Scope::Cluster, Scope::External] {
            let s = spec(scope, RiskLevel::Low, false);
            assert_eq!(
                reason(authorize(&dev, &s, &json!({}), true)),
                denied("principal roles cannot access tool scope")
            );
            assert!(!visible(&dev, &s));
            for roles in [
                &["devops"][..],
                &["platform_admin"],
                &["  DevOps "],
                &["x", "Platform_Admin"],
            ] {
                let ok = session(roles, &["."]);
                assert_eq!(authorize(&ok, &s, &json!({}), true), Ok(()), "{roles:?}");
                assert!(visible(&ok, &s));
            }
        }
    }

    #[test]
    fn high_risk_needs_platform_admin_even_for_devops() {
        let s = spec(Scope::Workspace, RiskLevel::High, false);
        for roles in [&["developer"][..], &["devops"]] {
            assert_eq!(
                reason(authorize(&session(roles, &["."]), &s, &json!({}), true)),
                denied("high risk capability requires platform_admin role")
            );
            assert!(!visible(&session(roles, &["."]), &s));
        }
        let admin = session(&[" PLATFORM_ADMIN"], &["."]);
        assert_eq!(authorize(&admin, &s, &json!({}), true), Ok(()));
        assert!(visible(&admin, &s));
    }

    #[test]
    fn approval_is_required_when_declared() {
        let s = spec(Scope::Workspace, RiskLevel::Medium, true);
        let dev = session(&["developer"], &["."]);
        assert_eq!(
            reason(authorize(&dev, &s, &json!({}), false)),
            (
                ErrorCode::ApprovalRequired,
                "tool requires explicit approval".to_owned()
            )
        );
        assert_eq!(authorize(&dev, &s, &json!({}), true), Ok(()));
        assert!(visible(&dev, &s), "approval never hides a tool");
    }

    #[test]
    fn rules_run_in_order_and_the_first_failure_wins() {
        // External + high risk + approval + bad path: the scope rule speaks first.
        let mut s = path_spec(&[("path", false)]);
        s.scope = Scope::External;
        s.risk_level = RiskLevel::High;
        s.requires_approval = true;
        let args = json!({"path": "../x"});
        let dev = session(&["developer"], &["."]);
        assert_eq!(
            reason(authorize(&dev, &s, &args, false)).1,
            "principal roles cannot access tool scope"
        );
        let devops = session(&["devops"], &["."]);
        assert_eq!(
            reason(authorize(&devops, &s, &args, false)).1,
            "high risk capability requires platform_admin role"
        );
        let admin = session(&["platform_admin"], &["."]);
        assert_eq!(
            reason(authorize(&admin, &s, &args, false)).1,
            "tool requires explicit approval"
        );
        assert_eq!(
            reason(authorize(&admin, &s, &args, true)).1,
            "path escapes workspace"
        );
    }

    #[test]
    fn the_path_attack_list_is_refused_with_the_right_reason() {
        let s = path_spec(&[("path", false)]);
        let dev = session(&["developer"], &["."]);
        let long = "a/".repeat(3000);
        let component = "x".repeat(300);
        for (raw, want) in [
            ("..", "path escapes workspace"),
            ("../../etc/passwd", "path escapes workspace"),
            ("a/../../b", "path escapes workspace"),
            ("/etc/passwd", "absolute paths are not allowed"),
            ("a\0b", "path contains a NUL byte"),
            (long.as_str(), "path is longer than 4096 bytes"),
            (
                component.as_str(),
                "a path component is longer than 255 bytes",
            ),
        ] {
            assert_eq!(
                reason(authorize(&dev, &s, &json!({"path": raw}), false)),
                denied(want),
                "{raw:?}"
            );
        }
        for ok in [
            "..cache",
            "a/../b",
            "./src//x",
            "données/日本語.txt",
            "",
            ".",
        ] {
            assert_eq!(
                authorize(&dev, &s, &json!({"path": ok}), false),
                Ok(()),
                "{ok:?}"
            );
        }
    }

    #[test]
    fn written_path_fields_must_not_be_inside_git() {
        let mut s = path_spec(&[("source_path", false), ("destination_path", false)]);
        s.policy.path_fields[1].writes = true;
        let dev = session(&["developer"], &["."]);
        // Reading from .git is allowed; writing into it, however spelled, is not.
        assert_eq!(
            authorize(
                &dev,
                &s,
                &json!({"source_path": ".git/config", "destination_path": "config.txt"}),
                false
            ),
            Ok(())
        );
        for target in [
            ".git/config",
            "./.git/hooks/pre-commit",
            "a/../.git",
            "sub/.GIT/x",
        ] {
            assert_eq!(
                reason(authorize(
                    &dev,
                    &s,
                    &json!({"source_path": "a", "destination_path": target}),
                    false
                )),
                denied(paths::PROTECTED_MESSAGE),
                "{target}"
            );
        }
    }

    #[test]
    fn paths_must_lie_inside_allowed_paths() {
        let s = path_spec(&[("source_path", false), ("destination_path", false)]);
        let src = session(&["developer"], &["src"]);
        assert_eq!(
            authorize(&src, &s, &json!({"source_path": "src/x"}), false),
            Ok(())
        );
        assert_eq!(
            authorize(&src, &s, &json!({"source_path": "src"}), false),
            Ok(())
        );
        for outside in ["src2/x", "lib/x", ".", "src/../lib"] {
            assert_eq!(
                reason(authorize(
                    &src,
                    &s,
                    &json!({"source_path": "src/a", "destination_path": outside}),
                    false
                )),
                denied("path outside allowed_paths"),
                "{outside:?}"
            );
        }
    }

    #[test]
    fn path_fields_must_have_the_declared_shape() {
        let single = path_spec(&[("path", false)]);
        let multi = path_spec(&[("paths", true)]);
        let nested = path_spec(&[("request.path", false)]);
        let dev = session(&["developer"], &["src"]);
        for (s, args) in [
            (&single, json!({"path": 1})),
            (&single, json!({"path": ["src/a"]})),
            (&multi, json!({"paths": "src/a"})),
            (&multi, json!({"paths": ["src/a", 2]})),
        ] {
            assert_eq!(
                reason(authorize(&dev, s, &args, false)),
                denied("invalid path field payload"),
                "{args}"
            );
        }
        assert_eq!(
            reason(authorize(&dev, &single, &json!(["src"]), false)),
            denied("invalid args payload")
        );
        assert_eq!(
            authorize(
                &dev,
                &multi,
                &json!({"paths": ["src/a", "", "src/b"]}),
                false
            ),
            Ok(())
        );
        assert_eq!(
            reason(authorize(
                &dev,
                &multi,
                &json!({"paths": ["src/a", "lib"]}),
                false
            )),
            denied("path outside allowed_paths")
        );
        assert_eq!(
            reason(authorize(
                &dev,
                &nested,
                &json!({"request": {"path": "lib"}}),
                false
            )),
            denied("path outside allowed_paths")
        );
        // Absent, null and empty values are not checked here (the handler checks its default).
        for args in [
            json!(null),
            json!({}),
            json!({"path": null}),
            json!({"path": ""}),
        ] {
            assert_eq!(authorize(&dev, &single, &args, false), Ok(()), "{args}");
        }
    }

    #[test]
    fn argument_rules_deny_values_and_long_lists() {
        let mut s = spec(Scope::Workspace, RiskLevel::Low, false);
        s.policy.arg_fields = vec![
            ArgField {
                field: "extra_args",
                multi: true,
                max_items: Some(2),
                denied_prefix: vec!["-exec"],
                allowed_prefix: vec!["-v", "-run="],
                ..ArgField::default()
            },
            ArgField {
                field: "mode",
                allowed_values: vec!["fast", "slow"],
                ..ArgField::default()
            },
        ];
        let dev = session(&["developer"], &["."]);
        assert_eq!(
            authorize(
                &dev,
                &s,
                &json!({"extra_args": [" -v ", "-run=X"], "mode": "fast"}),
                false
            ),
            Ok(())
        );
        assert_eq!(
            reason(authorize(
                &dev,
                &s,
                &json!({"extra_args": ["-v", "-v", "-v"]}),
                false
            )),
            denied("argument list exceeds allowed length")
        );
        for bad in [
            json!({"extra_args": ["-exec=x"]}),
            json!({"extra_args": [""]}),
            json!({"mode": "medium"}),
        ] {
            assert_eq!(
                reason(authorize(&dev, &s, &bad, false)),
                denied("argument not allowed by policy"),
                "{bad}"
            );
        }
        for bad in [
            json!({"extra_args": "-v"}),
            json!({"mode": ["fast"]}),
            json!({"extra_args": [1]}),
        ] {
            assert_eq!(
                reason(authorize(&dev, &s, &bad, false)),
                denied("invalid args field payload"),
                "{bad}"
            );
        }
    }
}
