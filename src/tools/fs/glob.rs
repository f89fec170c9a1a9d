//! `fs.glob`: paths under a directory matching a glob.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::search::MaxResults;
use super::{base, invalid, resolve, unexpected};
use crate::runner::protocol::{Reply, Request};
use crate::tools::args::{NonEmptyString, WorkspacePath};
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Arguments of `fs.glob`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Glob, relative to path.
    pub pattern: NonEmptyString<4096>,
    /// Directory to search.
    #[serde(default = "super::root")]
    pub path: WorkspacePath,
    /// Stop after this many paths (capped at 2000).
    #[serde(default)]
    pub max_results: MaxResults,
}

/// Output of `fs.glob`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// Matching workspace-relative paths, sorted.
    pub paths: Vec<String>,
    /// Number of paths returned.
    pub count: usize,
    /// Whether paths were left out (max_results reached).
    pub truncated: bool,
}

/// `fs.glob`.
pub struct Glob;

/// The glob the runner matches against workspace-relative paths: `pattern` under `dir`, with
/// the directory's own glob metacharacters escaped so a directory named `[x]` is literal.
pub(super) fn glob_under(dir: &str, pattern: &str) -> Result<String, ToolFailure> {
    if pattern.starts_with('/') {
        return Err(invalid("pattern must be relative to path"));
    }
    let pattern = pattern.trim_start_matches("./");
    if dir == "." {
        return Ok(pattern.to_owned());
    }
    let mut out = String::with_capacity(dir.len() + pattern.len() + 1);
    for c in dir.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('/');
    out.push_str(pattern);
    Ok(out)
}

impl Tool for Glob {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({"pattern": "**/*.rs", "path": "src"})],
            ..base(
                "fs.glob",
                "Find files and directories under a path whose path relative to it matches a \
                 glob (`*` stays within a directory, `**` crosses directories, `?`, `[a-z]`, \
                 `{a,b}`). .git is skipped unless the pattern names it. Returns \
                 workspace-relative paths, sorted (default 200, capped at 2000).",
                20,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let pattern = args.pattern.as_str();
        let request = Request::Glob {
            path: path.clone(),
            pattern: glob_under(&path, pattern)?,
            max_results: args.max_results.get(),
        };
        let (entries, truncated) = match call_runner(ctx, request).await? {
            Reply::Entries { entries, truncated } => (entries, truncated),
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        let paths: Vec<String> = entries.into_iter().map(|e| e.path).collect();
        let count = paths.len();
        Ok(Completed::new(
            Output {
                paths,
                count,
                truncated,
            },
            format!("{count} paths under {path} match {pattern}"),
        ))
    }
}
