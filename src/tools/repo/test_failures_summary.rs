//! `repo.test_failures_summary`: the failed tests of a run, parsed from the output given or
//! from a test run of the project.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::args::Mode;
use super::commands::Action;
use super::failures::{FailureSummary, Limits};
use super::run::{base, extra_args_field, failed, run_action, runs_code};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, stdout_line};

/// Characters of the output kept as `output_excerpt`.
const EXCERPT_CHARS: usize = 4000;

/// Arguments of `repo.test_failures_summary`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Test output to parse (go test, pytest, cargo test, node's runner, jest, vitest, JUnit
    /// XML). When given nothing is run.
    #[serde(default)]
    pub output: Option<String>,
    /// Without `output`: the target of the test run (as in repo.run_tests).
    #[serde(default)]
    pub target: Option<String>,
    /// Without `output`: extra arguments of the test run (as in repo.run_tests).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Failed tests kept (default and maximum 200).
    #[serde(default)]
    pub max_failures: Option<i64>,
    /// Diagnostic lines kept (default and maximum 200).
    #[serde(default)]
    pub max_diagnostics: Option<i64>,
}

/// Output of `repo.test_failures_summary`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The detected project type (`""` for provided output).
    pub project_type: String,
    /// `provided_output` or `test_run`.
    pub source: &'static str,
    /// The test run's argv (empty for provided output).
    pub command: Vec<String>,
    /// The test run's exit code (0 for provided output).
    pub exit_code: i32,
    /// The parsed summary.
    #[serde(flatten)]
    pub summary: FailureSummary,
    /// `N passed, M failed[, K skipped]`.
    pub summary_line: String,
    /// The first 4000 characters of the output.
    pub output_excerpt: String,
}

/// `repo.test_failures_summary`.
pub struct TestFailuresSummary;

/// The first `n` characters of `text`.
pub fn excerpt(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

impl Tool for TestFailuresSummary {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            arg_fields: vec![extra_args_field(Mode::Test)],
            examples: vec![
                json!({"output": "--- FAIL: TestAdd (0.00s)\nFAIL\n"}),
                json!({"max_failures": 20}),
            ],
            ..runs_code(base(
                "repo.test_failures_summary",
                "Summarise failed tests: from the output given (nothing runs), or from a test \
                 run of the project (as repo.run_tests, which runs the repository's tests). \
                 Reads go test (text and -json), pytest, cargo test, node's test runner, jest, \
                 vitest and JUnit XML; failed_tests[{name, kind, line, file, message}], counts, \
                 diagnostics. max_failures and max_diagnostics default to and are capped at 200.",
                180,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let limits = Limits::new(args.max_failures, args.max_diagnostics);
        let (project_type, source, command, exit_code, text) = match args.output {
            Some(text) => (String::new(), "provided_output", Vec::new(), 0, text),
            None => {
                let (project, ran) = run_action(
                    ctx,
                    Action::RunTests,
                    Mode::Test,
                    args.target.as_deref(),
                    &args.extra_args,
                )
                .await?;
                (
                    project.project_type.as_str().to_owned(),
                    "test_run",
                    ran.command,
                    ran.exit_code,
                    ran.full,
                )
            }
        };
        // Malformed JUnit XML is the caller's argument when they gave it.
        let summary = super::failures::parse(&text, limits).map_err(|e| {
            if source == "provided_output" {
                super::run::invalid(e.to_string())
            } else {
                failed(e.to_string())
            }
        })?;
        let line = summary.summary();
        Ok(Completed {
            output: Output {
                project_type,
                source,
                command,
                exit_code,
                summary_line: line.clone(),
                summary,
                output_excerpt: excerpt(&text, EXCERPT_CHARS),
            },
            logs: vec![stdout_line(line)],
            artifacts: Vec::new(),
            exit_code,
        })
    }
}
