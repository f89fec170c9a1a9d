//! `repo.symbol_search`: where a symbol occurs, by line and column.
//!
//! The search runs in the runner (its `search` request: Rust's `regex`, confined to the
//! workspace, `.git` skipped), not as `grep`: nothing outside the runner's confinement reads
//! the tree, and the same engine checks the pattern here first (an invalid one is
//! `invalid_argument` before anything runs). A literal symbol is escaped; `case_sensitive`
//! false adds `(?i)`, `whole_word` surrounds the pattern with `\b`. The column is the match's
//! first character (1-based) on the line.

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::run::{base, invalid};
use crate::runner::protocol::{Reply, Request, SearchMatch};
use crate::tools::args::{NonEmptyString, WorkspacePath};
use crate::tools::{
    ArgField, Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Largest `max_results`.
pub const MAX_RESULTS: u64 = 2000;
/// Default `max_results`.
pub const DEFAULT_RESULTS: u64 = 200;

/// Arguments of `repo.symbol_search`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The symbol (a literal unless use_regex), at most 160 characters.
    pub symbol: NonEmptyString<160>,
    /// Directory or file to search (default the workspace root).
    #[serde(default = "root")]
    pub path: WorkspacePath,
    /// Matches kept (default 200, capped at 2000).
    #[serde(default)]
    pub max_results: Option<i64>,
    /// Match case (default true).
    #[serde(default = "yes")]
    pub case_sensitive: bool,
    /// Match whole words only (default false).
    #[serde(default)]
    pub whole_word: bool,
    /// Read the symbol as a regular expression (default false).
    #[serde(default)]
    pub use_regex: bool,
}

fn root() -> WorkspacePath {
    WorkspacePath::root()
}

fn yes() -> bool {
    true
}

/// One match.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Match {
    /// Workspace-relative path.
    pub path: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column (characters) of the match.
    pub column: u64,
    /// The line.
    pub snippet: String,
}

/// Output of `repo.symbol_search`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The symbol.
    pub symbol: String,
    /// Matches sorted by path and line.
    pub matches: Vec<Match>,
    /// How many.
    pub count: usize,
    /// Whether max_results cut the search.
    pub truncated: bool,
}

/// `repo.symbol_search`.
pub struct SymbolSearch;

/// The symbol's `arg_fields` rule (REFERENCE §3.4).
pub fn symbol_field() -> ArgField {
    ArgField {
        field: "symbol",
        multi: false,
        max_items: None,
        max_length: Some(160),
        allowed_values: Vec::new(),
        allowed_prefix: Vec::new(),
        denied_prefix: Vec::new(),
        deny_characters: vec!["\0", "\n", "\r"],
    }
}

/// The pattern the runner searches for.
pub fn pattern(symbol: &str, case_sensitive: bool, whole_word: bool, use_regex: bool) -> String {
    let core = if use_regex {
        format!("(?:{symbol})")
    } else {
        regex::escape(symbol)
    };
    let core = if whole_word {
        format!(r"\b{core}\b")
    } else {
        core
    };
    if case_sensitive {
        core
    } else {
        format!("(?i){core}")
    }
}

/// A default-or-clamped count: missing or non-positive → `default`, above `MAX_RESULTS` → the
/// cap.
pub fn clamp(value: Option<i64>, default: u64) -> u64 {
    match value {
        Some(v) if v > 0 => u64::try_from(v).unwrap_or(MAX_RESULTS).min(MAX_RESULTS),
        _ => default,
    }
}

/// Searches `path` for `pattern`, returning matches with columns.
pub async fn search(
    ctx: &ToolContext,
    path: &WorkspacePath,
    pattern: &str,
    max: u64,
) -> Result<(Vec<Match>, bool), ToolFailure> {
    let re = Regex::new(pattern).map_err(|e| invalid(format!("invalid regular expression: {e}")))?;
    let path = path
        .resolve(&ctx.session.allowed_paths)
        .map_err(|d| ToolFailure::new(d.code, d.message))?;
    let reply = call_runner(
        ctx,
        Request::Search {
            path,
            pattern: pattern.to_owned(),
            max_results: max,
            include_glob: None,
        },
    )
    .await?;
    let (found, truncated) = match reply {
        Reply::Matches { matches, truncated } => (matches, truncated),
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        _ => {
            return Err(ToolFailure::new(
                crate::error_code::ErrorCode::Internal,
                "unexpected reply from the session runner",
            ));
        }
    };
    let matches = found
        .into_iter()
        .map(|SearchMatch { path, line, snippet }| {
            let column = re
                .find(&snippet)
                .map_or(1, |m| snippet[..m.start()].chars().count() as u64 + 1);
            Match {
                path,
                line,
                column,
                snippet,
            }
        })
        .collect();
    Ok((matches, truncated))
}

impl Tool for SymbolSearch {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            idempotency: crate::tools::Idempotency::BestEffort,
            arg_fields: vec![symbol_field()],
            examples: vec![
                json!({"symbol": "Add"}),
                json!({"symbol": "fn \\w+", "use_regex": true, "path": "src"}),
            ],
            ..base(
                "repo.symbol_search",
                "Search the workspace for a symbol: literal unless use_regex, case-sensitive \
                 unless case_sensitive is false, whole words when whole_word. Matches \
                 {path, line, column, snippet} sorted by path; max_results default 200, capped \
                 at 2000; an invalid regex is invalid_argument. Runs no program: the runner \
                 searches.",
                120,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let symbol = args.symbol.as_str();
        let pattern = pattern(symbol, args.case_sensitive, args.whole_word, args.use_regex);
        let max = clamp(args.max_results, DEFAULT_RESULTS);
        let (matches, truncated) = search(ctx, &args.path, &pattern, max).await?;
        let summary = format!("{} matches of {symbol:?}", matches.len());
        Ok(Completed::new(
            Output {
                symbol: symbol.to_owned(),
                count: matches.len(),
                matches,
                truncated,
            },
            summary,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_escapes_literals_and_adds_word_and_case_flags() {
        assert_eq!(pattern("a.b(", true, false, false), r"a\.b\(");
        assert_eq!(pattern("Add", false, true, false), r"(?i)\bAdd\b");
        assert_eq!(pattern("fn \\w+", true, false, true), r"(?:fn \w+)");
        assert_eq!(clamp(None, 200), 200);
        assert_eq!(clamp(Some(0), 200), 200);
        assert_eq!(clamp(Some(5000), 200), 2000);
    }
}
