//! `fs.search`: lines of the workspace's files matching a regular expression.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base, resolve, unexpected};
use crate::runner::protocol::{Reply, Request};
use crate::tools::args::{Count, NonEmptyString, WorkspacePath};
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// `fs.search` and `fs.glob`: results returned when `max_results` is not given, and the cap.
pub(super) type MaxResults = Count<200, 2000>;

/// Arguments of `fs.search`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Regular expression matched against each line.
    pub pattern: NonEmptyString<4096>,
    /// Directory or file to search.
    #[serde(default = "super::root")]
    pub path: WorkspacePath,
    /// Stop after this many matches (capped at 2000).
    #[serde(default)]
    pub max_results: MaxResults,
}

/// One matching line.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Match {
    /// Workspace-relative path of the file.
    pub path: String,
    /// 1-based line number.
    pub line: u64,
    /// The line (at most 512 bytes).
    pub snippet: String,
}

/// Output of `fs.search`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// Matches, sorted by path and line.
    pub matches: Vec<Match>,
    /// Number of matches returned.
    pub count: usize,
    /// Whether matches were left out (max_results reached).
    pub truncated: bool,
}

/// `fs.search`.
pub struct Search;

impl Tool for Search {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            cost_hint: "medium",
            examples: vec![json!({"pattern": "fn main", "path": "src", "max_results": 50})],
            ..base(
                "fs.search",
                "Search the lines of the regular files under a path for a regular expression \
                 (RE2 syntax), skipping .git directories, symlinks and binary files. Returns \
                 matches sorted by path and line (default 200, capped at 2000).",
                30,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let request = Request::Search {
            path: path.clone(),
            pattern: args.pattern.as_str().to_owned(),
            max_results: args.max_results.get(),
            include_glob: None,
        };
        let (matches, truncated) = match call_runner(ctx, request).await? {
            Reply::Matches { matches, truncated } => (matches, truncated),
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        let count = matches.len();
        let matches = matches
            .into_iter()
            .map(|m| Match {
                path: m.path,
                line: m.line,
                snippet: m.snippet,
            })
            .collect();
        Ok(Completed::new(
            Output {
                matches,
                count,
                truncated,
            },
            format!("found {count} matches under {path}"),
        ))
    }
}
