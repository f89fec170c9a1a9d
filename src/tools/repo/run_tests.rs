//! `repo.run_tests`: the project's tests with its own runner (go test, cargo test, npm test, pytest, mvn test, gradle test, a C test program).

use serde_json::json;

use super::args::Mode;
use super::commands::Action;
use super::run::{ExtraArgsInput, RunOutput, base, extra_args_field, runs_code};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// `repo.run_tests`.
pub struct RunTests;

impl Tool for RunTests {
    type Args = ExtraArgsInput;
    type Output = RunOutput;

    fn metadata(&self) -> Metadata {
        Metadata {
            arg_fields: vec![extra_args_field(Mode::Test)],
            examples: vec![json!({}), json!({"target": "./...", "extra_args": ["-count=1"]})],
            ..runs_code(base(
                "repo.run_tests",
                "Language-aware test run: go test, cargo test [--package target], npm test [-- target], pytest -q [target], mvn -q test [-Dtest=target], gradle test [--tests target], or a compiled C test program. Runs the repository's code and test scripts. A failing test is a result (exit_code, passed false), not an error. Attaches test-output.txt.",
                180,
            ))
        }
    }

    async fn run(
        &self,
        ctx: &ToolContext,
        args: ExtraArgsInput,
    ) -> Result<Completed<RunOutput>, ToolFailure> {
        RunOutput::run(
            ctx,
            Action::RunTests,
            Mode::Test,
            args.target.as_deref(),
            &args.extra_args,
        )
        .await
    }
}
