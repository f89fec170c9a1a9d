//! `repo.detect_toolchain`: the detected project's language, build system and test framework.

use super::detect::{ToolchainOutput, detect, toolchain};
use super::detect_project_type::Args;
use super::run::{base, listing};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// `repo.detect_toolchain`.
pub struct DetectToolchain;

impl Tool for DetectToolchain {
    type Args = Args;
    type Output = ToolchainOutput;

    fn metadata(&self) -> Metadata {
        base(
            "repo.detect_toolchain",
            "Map the detected project type to {language, build_system, test_framework, \
             containerizable} (Node's test framework from package.json's dependencies). Reads \
             files only; runs nothing.",
            20,
        )
    }

    async fn run(&self, ctx: &ToolContext, _: Args) -> Result<Completed<ToolchainOutput>, ToolFailure> {
        let listing = listing(ctx).await?;
        let out = toolchain(detect(&listing), &listing);
        let summary = format!("{} with {}", out.build_system, out.test_framework);
        Ok(Completed::new(out, summary))
    }
}
