//! `repo.detect_project_type`: the project type from the workspace root's marker files.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::detect::{ProjectTypeOutput, detect};
use super::run::{base, listing};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `repo.detect_project_type`: none.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {}

/// `repo.detect_project_type`.
pub struct DetectProjectType;

impl Tool for DetectProjectType {
    type Args = Args;
    type Output = ProjectTypeOutput;

    fn metadata(&self) -> Metadata {
        base(
            "repo.detect_project_type",
            "Detect the project type by marker files at the workspace root (go.mod > Cargo.toml \
             > package.json (+tsconfig.json) > python > maven > gradle > C); unknown is a \
             result, never an error. Reads the listing only; runs nothing.",
            15,
        )
    }

    async fn run(&self, ctx: &ToolContext, _: Args) -> Result<Completed<ProjectTypeOutput>, ToolFailure> {
        let project = detect(&listing(ctx).await?);
        let summary = format!("project type {}", project.project_type);
        Ok(Completed::new(ProjectTypeOutput::from(project), summary))
    }
}
