//! `repo.build`: the project's build with its own toolchain (go build, cargo build, npm run build, compileall, mvn package, gradle build, cc).

use serde_json::json;

use super::args::Mode;
use super::commands::Action;
use super::run::{ExtraArgsInput, RunOutput, base, extra_args_field, runs_code};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// `repo.build`.
pub struct Build;

impl Tool for Build {
    type Args = ExtraArgsInput;
    type Output = RunOutput;

    fn metadata(&self) -> Metadata {
        Metadata {
            arg_fields: vec![extra_args_field(Mode::Build)],
            examples: vec![json!({}), json!({"extra_args": ["-trimpath"]})],
            ..runs_code(base(
                "repo.build",
                "Language-aware build: go build, cargo build [--package target], npm run build --if-present, python -m compileall, mvn -q -DskipTests package, gradle build -x test, cc. extra_args from the reference's build allowlist. Runs the repository's build scripts. Attaches build-output.txt.",
                240,
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
            Action::Build,
            Mode::Build,
            args.target.as_deref(),
            &args.extra_args,
        )
        .await
    }
}
