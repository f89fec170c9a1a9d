//! `repo.stacktrace_summary`: the stack traces in the output given, or in a test run's output.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::args::Mode;
use super::run::{base, extra_args_field, output_or_test_run, runs_code};
use super::stacktrace::{Limits, Stacktrace};
use crate::runner::WORKDIR;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, stdout_line};

/// Arguments of `repo.stacktrace_summary`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Output holding stack traces. When given nothing is run.
    #[serde(default)]
    pub output: Option<String>,
    /// Without `output`: the target of the test run (as in repo.run_tests).
    #[serde(default)]
    pub target: Option<String>,
    /// Without `output`: extra arguments of the test run (as in repo.run_tests).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Traces kept (default and maximum 50).
    #[serde(default)]
    pub max_traces: Option<i64>,
    /// Frames kept per trace (default and maximum 80).
    #[serde(default)]
    pub max_frames: Option<i64>,
}

/// Output of `repo.stacktrace_summary`.
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
    /// The traces, in order of appearance.
    pub stacktraces: Vec<Stacktrace>,
    /// How many traces were kept.
    pub count: usize,
    /// Whether max_traces left traces out.
    pub truncated: bool,
}

/// `repo.stacktrace_summary`.
pub struct StacktraceSummary;

impl Tool for StacktraceSummary {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            arg_fields: vec![extra_args_field(Mode::Test)],
            examples: vec![
                json!({"output": "panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/workspace/main.go:5 +0x1d\n"}),
                json!({"max_traces": 5, "max_frames": 20}),
            ],
            ..runs_code(base(
                "repo.stacktrace_summary",
                "Summarise stack traces (panic, python_traceback, java_exception, rust_panic): \
                 from the output given (nothing runs), or from a test run of the project (as \
                 repo.run_tests, which runs the repository's tests). Frames innermost first, \
                 the first frame in the workspace, causes. max_traces defaults to and is capped \
                 at 50 (truncated when traces were left out), max_frames at 80. A test run attaches \
                 test-output.txt.",
                180,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let limits = Limits::new(args.max_traces, args.max_frames);
        let given =
            output_or_test_run(ctx, args.output, args.target.as_deref(), &args.extra_args).await?;
        let (stacktraces, found) = super::stacktrace::summarise(&given.text, Some(WORKDIR), limits);
        let summary = format!("{found} stack traces");
        let artifacts = given.artifacts();
        Ok(Completed {
            output: Output {
                project_type: given.project_type,
                source: given.source,
                command: given.command,
                exit_code: given.exit_code,
                count: stacktraces.len(),
                truncated: found > stacktraces.len(),
                stacktraces,
            },
            logs: vec![stdout_line(summary)],
            artifacts,
            exit_code: given.exit_code,
        })
    }
}
