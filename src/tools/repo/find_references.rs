//! `repo.find_references`: the whole-word occurrences of a symbol, each tagged as a declaration
//! or a use. Searched like `repo.symbol_search` (in the runner, no program run).

use std::sync::LazyLock;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::run::base;
use super::symbol_search::{DEFAULT_RESULTS, MAX_RESULTS, clamp, pattern, search, symbol_field};
use crate::tools::args::{NonEmptyString, WorkspacePath};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `repo.find_references`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The symbol (a literal), at most 160 characters.
    pub symbol: NonEmptyString<160>,
    /// Directory or file to search (default the workspace root).
    #[serde(default = "root")]
    pub path: WorkspacePath,
    /// References kept (default 200, capped at 2000; 0 means the default).
    #[serde(default)]
    pub max_references: Option<i64>,
    /// Used when max_references is missing (the reference's later behaviour).
    #[serde(default)]
    pub max_results: Option<i64>,
    /// Match case (default true).
    #[serde(default = "yes")]
    pub case_sensitive: bool,
    /// Keep the declaration lines (default true).
    #[serde(default = "yes")]
    pub include_declarations: bool,
}

fn root() -> WorkspacePath {
    WorkspacePath::root()
}

fn yes() -> bool {
    true
}

/// One reference.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Reference {
    /// Workspace-relative path.
    pub path: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// The line.
    pub snippet: String,
    /// Whether the line declares the symbol (`func X`, `fn X`, `def X`, `class X`, ...).
    pub is_declaration: bool,
}

/// Output of `repo.find_references`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The symbol.
    pub symbol: String,
    /// References sorted by path and line.
    pub references: Vec<Reference>,
    /// How many.
    pub count: usize,
    /// Whether the cap was reached.
    pub truncated: bool,
}

/// `repo.find_references`.
pub struct FindReferences;

/// Words that introduce a declaration of the name after them.
static DECLARATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:func|fn|def|class|struct|enum|trait|interface|type|const|let|var|static|function|module|impl|#define)\s+(?:\([^)]*\)\s*)?(?:mut\s+)?([A-Za-z_$][\w$]*)",
    )
    .expect("a valid regex")
});

/// Whether `line` declares `symbol`.
pub fn declares(line: &str, symbol: &str) -> bool {
    DECLARATION
        .captures_iter(line)
        .any(|c| c.get(1).is_some_and(|m| m.as_str() == symbol))
}

/// The cap: `max_references`, else `max_results` (HEAD honours it when `max_references` is
/// missing), default 200 (also for 0 or less), at most 2000.
pub fn limit(max_references: Option<i64>, max_results: Option<i64>) -> u64 {
    clamp(max_references.or(max_results), DEFAULT_RESULTS)
}

impl Tool for FindReferences {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            idempotency: crate::tools::Idempotency::BestEffort,
            arg_fields: vec![symbol_field()],
            examples: vec![
                json!({"symbol": "Add"}),
                json!({"symbol": "Add", "include_declarations": false, "max_references": 50}),
            ],
            ..base(
                "repo.find_references",
                "Whole-word references of a symbol, each tagged is_declaration; \
                 include_declarations (default true) keeps the declaration lines; \
                 max_references default 200, capped at 2000 (max_results is used when \
                 max_references is missing), truncated when the cap is hit. Runs no program: \
                 the runner searches.",
                120,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let symbol = args.symbol.as_str();
        let max = limit(args.max_references, args.max_results);
        let pattern = pattern(symbol, args.case_sensitive, true, false);
        // Declarations left out must not use up the cap: search to the largest cap, then cut.
        let fetch = if args.include_declarations {
            max
        } else {
            MAX_RESULTS
        };
        let (matches, cut) = search(ctx, &args.path, &pattern, fetch).await?;
        let mut references: Vec<Reference> = matches
            .into_iter()
            .map(|m| Reference {
                is_declaration: declares(&m.snippet, symbol),
                path: m.path,
                line: m.line,
                column: m.column,
                snippet: m.snippet,
            })
            .filter(|r| args.include_declarations || !r.is_declaration)
            .collect();
        let cap = usize::try_from(max).unwrap_or(usize::MAX);
        let truncated = cut || references.len() > cap;
        references.truncate(cap);
        let summary = format!("{} references of {symbol:?}", references.len());
        Ok(Completed::new(
            Output {
                symbol: symbol.to_owned(),
                count: references.len(),
                references,
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
    fn declarations_are_told_from_uses() {
        assert!(declares("func Add(a, b int) int {", "Add"));
        assert!(declares("func (c *Calc) Add(a int) int {", "Add"));
        assert!(declares("pub fn add(a: i32) -> i32 {", "add"));
        assert!(declares("def add(a, b):", "add"));
        assert!(declares("class Adder:", "Adder"));
        assert!(!declares("\treturn Add(1, 2)", "Add"));
        assert!(!declares("fn other() { add(1) }", "add"));
    }

    #[test]
    fn max_references_wins_over_max_results_and_both_are_clamped() {
        assert_eq!(limit(None, None), 200);
        assert_eq!(limit(Some(5), Some(1)), 5);
        assert_eq!(limit(None, Some(7)), 7);
        assert_eq!(limit(Some(0), Some(7)), 200);
        assert_eq!(limit(Some(10_000), None), 2000);
    }
}
