//! `repo.package`: the project's build output packaged (a binary, a crate's release build, an
//! npm tarball, a wheel, a jar).

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::commands::Action;
use super::args::Mode;
use super::run::{TargetArgs, base, run_action, runs_code};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, stdout_line};

/// Output of `repo.package`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The detected project type.
    pub project_type: String,
    /// The argv run.
    pub command: Vec<String>,
    /// Its exit code.
    pub exit_code: i32,
    /// Where the package is, workspace-relative (empty for npm, which names the tarball in
    /// its output).
    pub artifact_path: String,
    /// The output (64 KiB of each stream at most).
    pub output: String,
}

/// `repo.package`.
pub struct Package;

impl Tool for Package {
    type Args = TargetArgs;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({}), json!({"target": "./cmd/app"})],
            ..runs_code(base(
                "repo.package",
                "Package the build output: go build -o .workspace-dist/app, cargo build \
                 --release (target/release), npm pack, pip wheel . -w .workspace-dist, gradle \
                 assemble (build/libs), mvn package (target), cc -o .workspace-dist/c-app. Runs \
                 the repository's build scripts.",
                300,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: TargetArgs) -> Result<Completed<Output>, ToolFailure> {
        // No extra_args: the plan is the reference's, with the target only.
        let acted = run_action(ctx, Action::Package, Mode::Test, args.target.as_deref(), &[]).await?;
        let (project, plan, ran) = (acted.project, acted.plan, acted.ran);
        let summary = format!("{} exited {}", ran.command.join(" "), ran.exit_code);
        Ok(Completed {
            output: Output {
                project_type: project.project_type.as_str().to_owned(),
                command: ran.command,
                exit_code: ran.exit_code,
                artifact_path: plan.artifact_path.unwrap_or("").to_owned(),
                output: ran.output,
            },
            logs: vec![stdout_line(summary)],
            artifacts: Vec::new(),
            exit_code: ran.exit_code,
        })
    }
}
