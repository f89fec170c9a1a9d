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
//! 4. paths ([`paths`]) — `policy_denied` "absolute paths are not allowed", "path escapes
//!    workspace", "path outside allowed_paths", ...; a path the tool writes must also not be
//!    protected (`.git` at any depth: [`paths::PROTECTED_MESSAGE`])
//! 5. argument rules — `policy_denied` "argument not allowed by policy", "argument list exceeds
//!    allowed length", "invalid args field payload"
//!
//! Rule 4 reads the paths from the parsed arguments: every
//! [`WorkspacePath`](crate::tools::WorkspacePath) value they hold, with its access
//! ([`PathArg`]), found by [`crate::tools::args::workspace_paths`] — never from a list of field
//! names. Rule 5 reads the argument object by the field names of the tool's `arg_fields`, and
//! still checks the shapes it reads, so a bypass of parsing cannot turn into an allow.

pub mod paths;
mod rules;

use serde_json::Value;

use crate::error_code::ErrorCode;
use crate::tools::{PathArg, SessionContext, ToolSpec};

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

/// Decides whether `session`'s principal may run the tool `spec` with `args`, whose parsed
/// value names the workspace paths `paths` (`approved`: the caller's `"approved"` flag). Runs
/// rules 1–5 in order; the first failure wins.
pub fn authorize(
    session: &SessionContext,
    spec: &ToolSpec,
    paths: &[PathArg],
    args: &Value,
    approved: bool,
) -> Result<(), Denial> {
    rules::scope(session, spec)?;
    rules::risk(session, spec)?;
    rules::approval(spec, approved)?;
    rules::path_args(session, paths)?;
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
    use crate::tools::args::{self, Write};
    use crate::tools::{
        ArgField, Constraints, Idempotency, Observability, PolicyMetadata, RiskLevel, Scope,
        SideEffects, WorkspacePath,
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
            runtime: None,
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

    fn read(raw: &str) -> PathArg {
        PathArg {
            raw: raw.to_owned(),
            writes: false,
        }
    }

    fn write(raw: &str) -> PathArg {
        PathArg {
            raw: raw.to_owned(),
            writes: true,
        }
    }

    fn low() -> ToolSpec {
        spec(Scope::Workspace, RiskLevel::Low, false)
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
                authorize(
                    &dev,
                    &spec(scope, RiskLevel::Low, false),
                    &[],
                    &json!({}),
                    false
                ),
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
                reason(authorize(&dev, &s, &[], &json!({}), true)),
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
                assert_eq!(
                    authorize(&ok, &s, &[], &json!({}), true),
                    Ok(()),
                    "{roles:?}"
                );
                assert!(visible(&ok, &s));
            }
        }
    }

    #[test]
    fn high_risk_needs_platform_admin_even_for_devops() {
        let s = spec(Scope::Workspace, RiskLevel::High, false);
        for roles in [&["developer"][..], &["devops"]] {
            assert_eq!(
                reason(authorize(
                    &session(roles, &["."]),
                    &s,
                    &[],
                    &json!({}),
                    true
                )),
                denied("high risk capability requires platform_admin role")
            );
            assert!(!visible(&session(roles, &["."]), &s));
        }
        let admin = session(&[" PLATFORM_ADMIN"], &["."]);
        assert_eq!(authorize(&admin, &s, &[], &json!({}), true), Ok(()));
        assert!(visible(&admin, &s));
    }

    #[test]
    fn approval_is_required_when_declared() {
        let s = spec(Scope::Workspace, RiskLevel::Medium, true);
        let dev = session(&["developer"], &["."]);
        assert_eq!(
            reason(authorize(&dev, &s, &[], &json!({}), false)),
            (
                ErrorCode::ApprovalRequired,
                "tool requires explicit approval".to_owned()
            )
        );
        assert_eq!(authorize(&dev, &s, &[], &json!({}), true), Ok(()));
        assert!(visible(&dev, &s), "approval never hides a tool");
    }

    #[test]
    fn rules_run_in_order_and_the_first_failure_wins() {
        // External + high risk + approval + bad path: the scope rule speaks first.
        let mut s = low();
        s.scope = Scope::External;
        s.risk_level = RiskLevel::High;
        s.requires_approval = true;
        let paths = [read("../x")];
        let args = json!({"path": "../x"});
        let dev = session(&["developer"], &["."]);
        assert_eq!(
            reason(authorize(&dev, &s, &paths, &args, false)).1,
            "principal roles cannot access tool scope"
        );
        let devops = session(&["devops"], &["."]);
        assert_eq!(
            reason(authorize(&devops, &s, &paths, &args, false)).1,
            "high risk capability requires platform_admin role"
        );
        let admin = session(&["platform_admin"], &["."]);
        assert_eq!(
            reason(authorize(&admin, &s, &paths, &args, false)).1,
            "tool requires explicit approval"
        );
        assert_eq!(
            reason(authorize(&admin, &s, &paths, &args, true)).1,
            "path escapes workspace"
        );
    }

    #[test]
    fn the_path_attack_list_is_refused_with_the_right_reason() {
        let s = low();
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
            for path in [read(raw), write(raw)] {
                assert_eq!(
                    reason(authorize(&dev, &s, &[path], &json!({}), false)),
                    denied(want),
                    "{raw:?}"
                );
            }
        }
        for ok in ["..cache", "a/../b", "./src//x", "données/日本語.txt", "."] {
            assert_eq!(
                authorize(&dev, &s, &[read(ok)], &json!({}), false),
                Ok(()),
                "{ok:?}"
            );
        }
    }

    #[test]
    fn written_paths_must_not_be_inside_git() {
        let dev = session(&["developer"], &["."]);
        let s = low();
        // Reading from .git is allowed; writing into it, however spelled, is not.
        assert_eq!(
            authorize(
                &dev,
                &s,
                &[read(".git/config"), write("config.txt")],
                &json!({}),
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
                    &[read("a"), write(target)],
                    &json!({}),
                    false
                )),
                denied(paths::PROTECTED_MESSAGE),
                "{target}"
            );
        }
    }

    #[test]
    fn paths_must_lie_inside_allowed_paths() {
        let s = low();
        let src = session(&["developer"], &["src"]);
        for inside in ["src/x", "src", "./src/a/../b"] {
            assert_eq!(
                authorize(&src, &s, &[read(inside)], &json!({}), false),
                Ok(()),
                "{inside}"
            );
        }
        for outside in ["src2/x", "lib/x", ".", "src/../lib"] {
            assert_eq!(
                reason(authorize(
                    &src,
                    &s,
                    &[read("src/a"), write(outside)],
                    &json!({}),
                    false
                )),
                denied("path outside allowed_paths"),
                "{outside:?}"
            );
        }
    }

    /// Arguments of a made-up tool: a path, a list of paths and a nested written path.
    #[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Typed {
        path: WorkspacePath,
        #[serde(default)]
        paths: Vec<WorkspacePath>,
        #[serde(default)]
        request: Option<Nested>,
    }

    #[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        target: WorkspacePath<Write>,
    }

    fn typed(dev: &SessionContext, args: Value) -> Result<(), Denial> {
        let parsed: Typed = args::parse(&args).expect("the arguments parse");
        authorize(dev, &low(), &args::workspace_paths(&parsed), &args, false)
    }

    #[test]
    fn every_path_of_the_typed_arguments_is_checked_wherever_it_sits() {
        let dev = session(&["developer"], &["src"]);
        assert_eq!(typed(&dev, json!({"path": "src/a"})), Ok(()));
        assert_eq!(
            typed(
                &dev,
                json!({"path": "src/a", "paths": ["src/b", "src/c"], "request": {"target": "src/d"}})
            ),
            Ok(())
        );
        for args in [
            json!({"path": "lib"}),
            json!({"path": "src/a", "paths": ["src/b", "lib"]}),
            json!({"path": "src/a", "request": {"target": "lib"}}),
        ] {
            assert_eq!(
                reason(typed(&dev, args.clone())),
                denied("path outside allowed_paths"),
                "{args}"
            );
        }
        // The nested path is written: its access comes from its type.
        assert_eq!(
            reason(typed(
                &session(&["developer"], &["."]),
                json!({"path": ".git/HEAD", "request": {"target": ".git/HEAD"}})
            )),
            denied(paths::PROTECTED_MESSAGE)
        );
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
                &[],
                &json!({"extra_args": [" -v ", "-run=X"], "mode": "fast"}),
                false
            ),
            Ok(())
        );
        assert_eq!(
            reason(authorize(
                &dev,
                &s,
                &[],
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
                reason(authorize(&dev, &s, &[], &bad, false)),
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
                reason(authorize(&dev, &s, &[], &bad, false)),
                denied("invalid args field payload"),
                "{bad}"
            );
        }
    }
}
