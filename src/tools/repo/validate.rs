//! `repo.validate`: a compile-only check with the project's own toolchain.

use std::sync::LazyLock;

use regex::Regex;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::args::Mode;
use super::commands::Action;
use super::run::{TargetArgs, base, run_action, runs_code};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, stdout_line};

/// Diagnostic lines kept.
const MAX_DIAGNOSTICS: usize = 50;

/// Output of `repo.validate`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// Language of the detected project.
    pub language: String,
    /// Its build system.
    pub build_system: String,
    /// Its test framework.
    pub test_framework: String,
    /// The argv run.
    pub command: Vec<String>,
    /// Its exit code (0: the project compiles).
    pub exit_code: i32,
    /// Whether it exited 0.
    pub passed: bool,
    /// Compiler lines that name an error or a warning or point at `file:line:`, at most 50.
    pub diagnostics: Vec<String>,
    /// The output, stdout then stderr (64 KiB of each at most).
    pub output: String,
}

/// `repo.validate`.
pub struct Validate;

/// A compiler's `file.ext:line[:column]: message` line (Go prints its errors without the word
/// "error").
static LOCATED: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"^\s*[^\s:]+\.\w+:\d+(:\d+)?: ").expect("literal regex compiles")
});

/// The lines of `output` a compiler or linter reports problems on: those naming an error or a
/// warning, and `file:line: message` lines.
pub fn diagnostics(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("error") || lower.contains("warning") || LOCATED.is_match(l)
        })
        .take(MAX_DIAGNOSTICS)
        .map(|l| l.trim_end().to_owned())
        .collect()
}

impl Tool for Validate {
    type Args = TargetArgs;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({}), json!({"target": "./..."})],
            ..runs_code(base(
                "repo.validate",
                "Compile-only check: go test -run ^$, cargo check, npm run lint --if-present, \
                 python -m compileall, mvn -q -DskipTests compile, gradle classes, cc \
                 -fsyntax-only. Runs the repository's lint script (Node) and build scripts \
                 (Cargo). diagnostics keeps up to 50 error or warning lines. Attaches \
                 validate-output.txt.",
                180,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: TargetArgs) -> Result<Completed<Output>, ToolFailure> {
        let acted = run_action(ctx, Action::Validate, Mode::Test, args.target.as_deref(), &[]).await?;
        let toolchain = super::detect::toolchain(acted.project, &acted.listing);
        let ran = acted.ran;
        let summary = format!("{} exited {}", ran.command.join(" "), ran.exit_code);
        let artifacts = Action::Validate
            .artifact_name()
            .map(|a| ran.artifact(a))
            .into_iter()
            .collect();
        Ok(Completed {
            output: Output {
                language: toolchain.language,
                build_system: toolchain.build_system,
                test_framework: toolchain.test_framework,
                diagnostics: diagnostics(&ran.full),
                command: ran.command,
                exit_code: ran.exit_code,
                passed: ran.exit_code == 0,
                output: ran.output,
            },
            logs: vec![stdout_line(summary)],
            artifacts,
            exit_code: ran.exit_code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_keep_fifty_error_or_warning_lines() {
        let go = "# example.com/calc\n./calc.go:4:2: undefined: x\nok\n";
        assert_eq!(diagnostics(go), ["./calc.go:4:2: undefined: x"]);
        let cargo = "warning: unused variable: `x`\n   Compiling adder\nerror[E0425]: cannot \
                     find value `y`\n";
        assert_eq!(diagnostics(cargo).len(), 2);
        let many = "main.c:1:1: error: expected ';'\n".repeat(80);
        assert_eq!(diagnostics(&many).len(), MAX_DIAGNOSTICS);
    }
}
