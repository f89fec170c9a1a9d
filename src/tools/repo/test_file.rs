//! `repo.test_file`: the tests of one file (REFERENCE §13.3), with a timeout of its own.
//!
//! Deliberate differences from the reference: the path is a workspace path (confined, under
//! `allowed_paths`; the reference checked nothing); the command is an argv, never `sh -c`; a
//! missing toolchain is `toolchain_unavailable` and a timeout `timeout` with the partial
//! output, not a success with `passed: false`.

use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::run::{base, refused, run_plan, runs_code};
use crate::tools::args::WorkspacePath;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, stdout_line};

/// Arguments of `repo.test_file`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The test file: `.go` (its package is tested), `.py`, `.rs`, `.test.js`, `.test.ts`,
    /// `.spec.js` or `.spec.ts`.
    pub path: WorkspacePath,
    /// Only tests matching this (go -run, pytest -k, cargo test filter).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Seconds before the run is killed (default 120, 1..600).
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
}

/// Output of `repo.test_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The path, normalised.
    pub path: String,
    /// The argv run.
    pub command: Vec<String>,
    /// Whether it exited 0.
    pub passed: bool,
    /// Its exit code.
    pub exit_code: i32,
    /// Its output, stdout then stderr (64 KiB of each at most).
    pub output: String,
}

/// `repo.test_file`.
pub struct TestFile;

impl Tool for TestFile {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        let mut m = runs_code(base(
            "repo.test_file",
            "Run the tests of one file by its suffix: .go → go test -v [-run pattern] of its \
             package; .py → pytest -v [-k pattern]; .rs → cargo test [pattern] -- --nocapture; \
             .test/.spec .js/.ts → npx --no jest. timeout_seconds default 120, capped at 600; \
             a timeout kills the whole process tree and answers timeout with the partial \
             output. Runs the repository's tests.",
            600,
        ));
        m.scope = crate::tools::Scope::Workspace;
        m.requires_approval = true;
        m.constraints.output_limit_kb = Some(512);
        m.examples = vec![
            json!({"path": "calc/calc_test.go", "pattern": "TestAdd"}),
            json!({"path": "tests/test_app.py", "timeout_seconds": 60}),
        ];
        m
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = args
            .path
            .resolve(&ctx.session.allowed_paths)
            .map_err(|d| ToolFailure::new(d.code, d.message))?;
        let checked = super::args::validate_test_file_path(&path).map_err(|e| refused(&e))?;
        let pattern = super::args::validate_test_pattern(args.pattern.as_deref())
            .map_err(|e| refused(&e))?;
        let seconds = super::commands::test_file_timeout(args.timeout_seconds);
        let plan = super::commands::test_file(&checked, pattern.as_ref(), seconds)
            .map_err(|e| super::run::plan_failure(&e))?;
        // The tool's own deadline, inside the invocation's.
        let mut bounded = ctx.clone();
        bounded.deadline = ctx
            .deadline
            .min(Instant::now() + Duration::from_secs(u64::from(seconds)));
        let ran = run_plan(&bounded, &plan).await?;
        let summary = format!("{} exited {}", ran.command.join(" "), ran.exit_code);
        Ok(Completed {
            output: Output {
                path,
                command: ran.command,
                passed: ran.exit_code == 0,
                exit_code: ran.exit_code,
                output: ran.output,
            },
            logs: vec![stdout_line(summary)],
            artifacts: Vec::new(),
            exit_code: ran.exit_code,
        })
    }
}
