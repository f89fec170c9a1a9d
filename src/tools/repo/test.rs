//! `repo.test`: an alias of `repo.run_tests`.

use serde_json::json;

use super::args::Mode;
use super::commands::Action;
use super::run::{ExtraArgsInput, RunOutput, base, extra_args_field, runs_code};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// `repo.test`.
pub struct Test;

impl Tool for Test {
    type Args = ExtraArgsInput;
    type Output = RunOutput;

    fn metadata(&self) -> Metadata {
        Metadata {
            arg_fields: vec![extra_args_field(Mode::Test)],
            examples: vec![json!({}), json!({"extra_args": ["-v"]})],
            ..runs_code(base(
                "repo.test",
                "Alias of repo.run_tests: the same run, arguments and output. Attaches test-output.txt.",
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
