//! `repo.test_failures_summary`: the failed tests of a run, parsed from the output given or
//! from a test run of the project.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::args::Mode;
use super::failures::{FailureSummary, Limits};
use super::run::{base, extra_args_field, failed, invalid, output_or_test_run, runs_code};
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
    pub parsed: FailureSummary,
    /// `N passed, M failed[, K skipped]`.
    #[serde(rename = "summary")]
    pub summary_text: String,
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
                 vitest and JUnit XML; failed_tests[{name, kind, line, location, message}], counts, \
                 diagnostics. max_failures and max_diagnostics default to and are capped at 200 \
                 (truncated when either cut). A test run attaches test-output.txt.",
                180,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let limits = Limits::new(args.max_failures, args.max_diagnostics);
        let given =
            output_or_test_run(ctx, args.output, args.target.as_deref(), &args.extra_args).await?;
        // Malformed JUnit XML is the caller's argument when they gave it.
        let parsed = super::failures::parse(&given.text, limits).map_err(|e| {
            if given.provided() {
                invalid(e.to_string())
            } else {
                failed(e.to_string())
            }
        })?;
        let line = parsed.summary();
        let artifacts = given.artifacts();
        Ok(Completed {
            output: Output {
                project_type: given.project_type,
                source: given.source,
                command: given.command,
                exit_code: given.exit_code,
                summary_text: line.clone(),
                parsed,
                output_excerpt: excerpt(&given.text, EXCERPT_CHARS),
            },
            logs: vec![stdout_line(line)],
            artifacts,
            exit_code: given.exit_code,
        })
    }
}
