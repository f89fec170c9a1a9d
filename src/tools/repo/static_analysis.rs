//! `repo.static_analysis`: static analysis with the project's own linters.

use super::commands::Action;
use super::args::Mode;
use super::run::{RunOutput, TargetArgs, base, runs_code};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// `repo.static_analysis`.
pub struct StaticAnalysis;

impl Tool for StaticAnalysis {
    type Args = TargetArgs;
    type Output = RunOutput;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![serde_json::json!({})],
            ..runs_code(base(
                "repo.static_analysis",
                "Static analysis: go vet, cargo clippy --all-targets --all-features -D warnings, \
                 npm run lint --if-present, python -m compileall, gradle check -x test, mvn -q \
                 -DskipTests verify, cc -fsyntax-only. Runs the repository's lint script (Node) \
                 and build scripts (Cargo). Attaches static-analysis-output.txt.",
                180,
            ))
        }
    }

    async fn run(
        &self,
        ctx: &ToolContext,
        args: TargetArgs,
    ) -> Result<Completed<RunOutput>, ToolFailure> {
        RunOutput::run(
            ctx,
            Action::StaticAnalysis,
            Mode::Test,
            args.target.as_deref(),
            &[],
        )
        .await
    }
}
