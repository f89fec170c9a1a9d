//! `repo.coverage_report`: the tests run with coverage, and the total percentage.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::commands::Action;
use super::args::Mode;
use super::run::{TargetArgs, base, run_action, runs_code};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, stdout_line};

/// Output of `repo.coverage_report`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The detected project type.
    pub project_type: String,
    /// The argv of the test run.
    pub command: Vec<String>,
    /// Whether a percentage was found (Go's coverprofile; another runner's printed total).
    pub coverage_supported: bool,
    /// The total statement coverage, 0 when none was found.
    pub coverage_percent: f64,
    /// Exit code of the last step.
    pub exit_code: i32,
    /// The output (64 KiB of each stream of each step at most).
    pub output: String,
}

/// `repo.coverage_report`.
pub struct CoverageReport;

impl Tool for CoverageReport {
    type Args = TargetArgs;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({}), json!({"target": "./..."})],
            ..runs_code(base(
                "repo.coverage_report",
                "Run the tests with coverage and report the total: Go via go test -coverprofile \
                 and go tool cover -func (the profile is removed afterwards); other languages \
                 run their test command and report a percentage when their output prints one \
                 (coverage_supported). Runs the repository's tests.",
                240,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: TargetArgs) -> Result<Completed<Output>, ToolFailure> {
        // No extra_args: the plan is the reference's, with the target only.
        let acted = run_action(ctx, Action::CoverageReport, Mode::Test, args.target.as_deref(), &[]).await?;
        let (project, plan, ran) = (acted.project, acted.plan, acted.ran);
        // A failing test run stops the plan before `go tool cover`: go test's own
        // `coverage: N% of statements` line is read then.
        let percent = plan
            .coverage_supported
            .then(|| super::coverage::go_func_total(&ran.full))
            .flatten()
            .or_else(|| super::coverage::best_effort(&ran.full));
        let summary = match percent {
            Some(p) => format!("coverage {p:.1}%"),
            None => "no coverage percentage found".to_owned(),
        };
        Ok(Completed {
            output: Output {
                project_type: project.project_type.as_str().to_owned(),
                command: ran.command,
                coverage_supported: percent.is_some(),
                coverage_percent: percent.unwrap_or(0.0),
                exit_code: ran.exit_code,
                output: ran.output,
            },
            logs: vec![stdout_line(summary)],
            artifacts: Vec::new(),
            exit_code: ran.exit_code,
        })
    }
}
