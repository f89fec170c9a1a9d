//! `artifact.list`: the files under a workspace directory that could be uploaded.

use globset::{GlobBuilder, GlobMatcher};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::base;
use super::upload::base_name;
use crate::runner::protocol::{Entry, EntryType, Reply, Request};
use crate::tools::args::{Count, NonEmptyString, WorkspacePath};
use crate::tools::fs::{invalid, resolve, unexpected};
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Most entries (files and directories) one listing examines: a larger tree is reported as
/// truncated. Bounds the runner's reply (about 150 bytes an entry) well below a frame.
pub const WALK_MAX_ENTRIES: u64 = 20_000;

/// Arguments of `artifact.list`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Directory to list, relative to the workspace (default: the workspace root).
    #[serde(default = "root")]
    pub path: WorkspacePath,
    /// Descend into subdirectories (default true).
    #[serde(default = "yes")]
    pub recursive: bool,
    /// Only files whose path relative to `path`, or whose base name, matches this glob (`*`
    /// and `?` stop at `/`, `[...]` classes, `{a,b}` alternatives, `**` any directories).
    #[serde(default)]
    pub pattern: Option<NonEmptyString<1024>>,
    /// Return at most this many files (default 200, capped at 2000).
    #[serde(default)]
    pub max_entries: Count<200, 2000>,
}

fn root() -> WorkspacePath {
    WorkspacePath::root()
}

fn yes() -> bool {
    true
}

/// One listed file.
#[derive(Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Listed {
    /// Workspace-relative path (what artifact.upload takes).
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// Output of `artifact.list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised directory.
    pub path: String,
    /// Whether subdirectories were listed.
    pub recursive: bool,
    /// The pattern, if any.
    pub pattern: Option<String>,
    /// Number of files returned.
    pub count: usize,
    /// Regular files, sorted by path.
    pub artifacts: Vec<Listed>,
    /// Whether files were left out (max_entries reached, or the tree is larger than one
    /// listing examines).
    pub truncated: bool,
}

/// `artifact.list`.
pub struct List;

/// Compiles a pattern with the original's `filepath.Match` meaning of `*` and `?` (never
/// across `/`).
pub(super) fn compile(pattern: &str) -> Result<GlobMatcher, ToolFailure> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| invalid(format!("invalid pattern: {}", e.kind())))
}

/// The regular files among `entries` (listed under `dir`) that match `pattern`, at most
/// `max`, and whether matching files were left out.
pub(super) fn select(
    entries: Vec<Entry>,
    dir: &str,
    pattern: Option<&GlobMatcher>,
    max: usize,
) -> (Vec<Listed>, bool) {
    let prefix = if dir == "." {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut files = Vec::new();
    let mut left_out = false;
    for entry in entries {
        if entry.entry_type != EntryType::File {
            continue;
        }
        let matches = pattern.is_none_or(|glob| {
            let relative = entry.path.strip_prefix(&prefix).unwrap_or(&entry.path);
            glob.is_match(relative) || glob.is_match(base_name(&entry.path))
        });
        if !matches {
            continue;
        }
        if files.len() == max {
            left_out = true;
            break;
        }
        files.push(Listed {
            path: entry.path,
            size_bytes: entry.size_bytes,
        });
    }
    (files, left_out)
}

impl Tool for List {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        let mut metadata = base(
            "artifact.list",
            "List the regular files under a workspace directory (recursive by default) with \
             their sizes, optionally only those whose path relative to the directory or whose \
             base name matches a glob pattern. At most max_entries files (default 200, capped \
             at 2000); truncated tells whether files were left out.",
        );
        metadata.postconditions = vec!["paths are workspace-relative and sorted"];
        metadata.examples = vec![
            json!({"path": "dist", "pattern": "*.tar.gz"}),
            json!({"recursive": false, "max_entries": 50}),
        ];
        metadata
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let pattern = args.pattern.as_deref().map(compile).transpose()?;
        let request = Request::List {
            path: path.clone(),
            recursive: args.recursive,
            max_entries: WALK_MAX_ENTRIES,
        };
        let (entries, walk_truncated) = match call_runner(ctx, request).await? {
            Reply::Entries { entries, truncated } => (entries, truncated),
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        let max = usize::try_from(args.max_entries.get()).unwrap_or(usize::MAX);
        let (artifacts, left_out) = select(entries, &path, pattern.as_ref(), max);
        let count = artifacts.len();
        Ok(Completed::new(
            Output {
                path: path.clone(),
                recursive: args.recursive,
                pattern: args.pattern.map(|p| p.as_str().to_owned()),
                count,
                artifacts,
                truncated: left_out || walk_truncated,
            },
            format!("listed {count} files under {path}"),
        ))
    }
}
