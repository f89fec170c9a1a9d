//! `repo.tree`: a box-drawn directory tree (REFERENCE §13.3), read through the runner one
//! directory at a time so ignored directories are never walked.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::run::base;
use crate::error_code::ErrorCode;
use crate::runner::protocol::{Entry, EntryType, Reply, Request};
use crate::tools::args::WorkspacePath;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure};

/// Entries printed before the tree stops (`truncated`).
pub const MAX_ENTRIES: usize = 2000;
/// The default `ignore` list.
pub const DEFAULT_IGNORE: &str =
    ".git,node_modules,.venv,__pycache__,vendor,.cache,dist,build,.tox,.mypy_cache";
/// Entries read from one directory: one more than the tree prints, so a directory the tree
/// could draw whole is read whole. A larger one is drawn cut and the tree `truncated`.
const DIR_ENTRIES: u64 = MAX_ENTRIES as u64 + 1;

/// Arguments of `repo.tree`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Directory to draw (default the workspace root).
    #[serde(default = "root")]
    pub path: WorkspacePath,
    /// Levels shown (default 3, 1..10; out of range is clamped).
    #[serde(default)]
    pub max_depth: Option<i64>,
    /// Show files, not only directories (default true).
    #[serde(default = "yes")]
    pub show_files: bool,
    /// Comma-separated base names left out at any depth; replaces the default list
    /// (.git,node_modules,.venv,__pycache__,vendor,.cache,dist,build,.tox,.mypy_cache); ""
    /// leaves nothing out.
    #[serde(default)]
    pub ignore: Option<String>,
}

fn root() -> WorkspacePath {
    WorkspacePath::root()
}

fn yes() -> bool {
    true
}

/// Output of `repo.tree`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The tree, one entry a line (`├── `, `└── `; directories end in `/`).
    pub tree: String,
    /// Entries printed.
    pub entries: usize,
    /// Whether it stopped at 2000 entries.
    pub truncated: bool,
}

/// `repo.tree`.
pub struct Tree;

/// One directory's entries, and whether the runner cut them.
async fn list(ctx: &ToolContext, path: &str) -> Result<(Vec<Entry>, bool), ToolFailure> {
    match call_runner(
        ctx,
        Request::List {
            path: path.to_owned(),
            recursive: false,
            max_entries: DIR_ENTRIES,
        },
    )
    .await?
    {
        Reply::Entries { entries, truncated } => Ok((entries, truncated)),
        Reply::Error { code, message } => Err(runner_failure(code, message)),
        _ => Err(ToolFailure::new(
            ErrorCode::Internal,
            "unexpected reply from the session runner",
        )),
    }
}

fn name(entry: &Entry) -> &str {
    entry.path.rsplit('/').next().unwrap_or(&entry.path)
}

struct Drawing {
    lines: Vec<String>,
    truncated: bool,
}

impl Tool for Tree {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            scope: crate::tools::Scope::Workspace,
            examples: vec![json!({}), json!({"path": "src", "max_depth": 2, "show_files": false})],
            ..base(
                "repo.tree",
                "Draw the directory tree under path: directories first, then files, by name; \
                 max_depth default 3 (1..10), show_files default true, ignore replaces the \
                 default list of names (.git, node_modules, ...). Symlinks are shown, never \
                 followed. Stops at 2000 entries (truncated). Runs nothing.",
                15,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let top = args
            .path
            .resolve(&ctx.session.allowed_paths)
            .map_err(|d| ToolFailure::new(d.code, d.message))?;
        let depth = match args.max_depth {
            Some(d) if d > 10 => 10,
            Some(d) if d > 0 => usize::try_from(d).unwrap_or(3),
            _ => 3,
        };
        let ignore: Vec<String> = args
            .ignore
            .as_deref()
            .unwrap_or(DEFAULT_IGNORE)
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let mut drawing = Drawing {
            lines: Vec::new(),
            truncated: false,
        };
        // Depth-first with an explicit stack: (directory, its indent, its depth).
        let mut stack: Vec<(Vec<Entry>, String, usize)> = Vec::new();
        let sorted = |mut entries: Vec<Entry>| {
            entries.sort_by(|a, b| {
                (b.entry_type == EntryType::Dir)
                    .cmp(&(a.entry_type == EntryType::Dir))
                    .then_with(|| name(a).as_bytes().cmp(name(b).as_bytes()))
            });
            entries.reverse();
            entries
        };
        let (entries, cut) = list(ctx, &top).await?;
        drawing.truncated |= cut;
        stack.push((sorted(entries), String::new(), 1));
        while let Some((mut entries, indent, level)) = stack.pop() {
            let Some(entry) = entries.pop() else { continue };
            let last = entries.is_empty();
            stack.push((entries, indent.clone(), level));
            let is_dir = entry.entry_type == EntryType::Dir;
            if ignore.iter().any(|i| i == name(&entry)) || (!is_dir && !args.show_files) {
                continue;
            }
            if drawing.lines.len() >= MAX_ENTRIES {
                drawing.truncated = true;
                break;
            }
            let connector = if last { "└── " } else { "├── " };
            let suffix = if is_dir { "/" } else { "" };
            drawing
                .lines
                .push(format!("{indent}{connector}{}{suffix}", name(&entry)));
            if is_dir && level < depth {
                let child_indent = format!("{indent}{}", if last { "    " } else { "│   " });
                // An unreadable subdirectory is skipped, as in the reference.
                if let Ok((children, cut)) = list(ctx, &entry.path).await {
                    drawing.truncated |= cut;
                    stack.push((sorted(children), child_indent, level + 1));
                }
            }
        }
        let entries = drawing.lines.len();
        let summary = format!("{entries} entries under {top}");
        Ok(Completed::new(
            Output {
                tree: drawing.lines.join("\n"),
                entries,
                truncated: drawing.truncated,
            },
            summary,
        ))
    }
}
