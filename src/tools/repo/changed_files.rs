//! `repo.changed_files`: the working tree's changes (`git status --porcelain=v1`), the changes
//! since a base (`git diff --name-status <base>...HEAD`), or a porcelain listing given as
//! `output` (nothing runs).
//!
//! Git runs only through the hardened helper ([`crate::tools::git`]): no hook, filter, diff
//! driver, fsmonitor or pager of the repository runs. The runner's build caches
//! ([`crate::runner::server::CACHE_DIR`]) are not the repository's changes and are left out.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::run::{base, failed, invalid};
use crate::error_code::ErrorCode;
use crate::runner::server::CACHE_DIR;
use crate::tools::args::{Count, WorkspacePath};
use crate::tools::git::{self, GitCommand, Network, Repository};
use crate::tools::{ArgField, Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Output git may print.
const GIT_OUTPUT_BYTES: u64 = 4 * 1024 * 1024;

/// Arguments of `repo.changed_files`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Compare `<base_ref>...HEAD` instead of the working tree (a branch, tag or commit).
    #[serde(default)]
    pub base_ref: Option<String>,
    /// Only changes under this path (default the whole workspace).
    #[serde(default = "root")]
    pub path: WorkspacePath,
    /// Files kept (default 500, capped at 2000).
    #[serde(default)]
    pub max_files: Count<500, 2000>,
    /// Working tree mode: list untracked files too (default true).
    #[serde(default = "yes")]
    pub include_untracked: bool,
    /// A `git status --porcelain=v1` listing to parse instead of running git.
    #[serde(default)]
    pub output: Option<String>,
}

fn yes() -> bool {
    true
}

fn root() -> WorkspacePath {
    WorkspacePath::root()
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ChangedFile {
    /// Workspace-relative path (the new path of a rename).
    pub path: String,
    /// The two-letter porcelain status (`M `, ` M`, `??`, `R `), or the diff's letter.
    pub status: String,
    /// The index column (`M`, `A`, `D`, `R`, `C`, `?`, ` `).
    pub index_status: String,
    /// The working-tree column.
    pub worktree_status: String,
    /// Changed in the index.
    pub staged: bool,
    /// Changed in the working tree only.
    pub unstaged: bool,
    /// Not tracked.
    pub untracked: bool,
    /// Deleted.
    pub deleted: bool,
    /// The old path of a rename or copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
}

/// Output of `repo.changed_files`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// `provided_output` or `git`.
    pub source: &'static str,
    /// `working_tree` or `base_ref_diff`.
    pub mode: &'static str,
    /// The base of `base_ref_diff`.
    pub base_ref: String,
    /// The path filter.
    pub path: String,
    /// The git argv (empty for provided output).
    pub command: Vec<String>,
    /// Git's exit code.
    pub exit_code: i32,
    /// The files, sorted by path, at most max_files.
    pub files: Vec<ChangedFile>,
    /// Files found before the cap.
    pub changed_count: usize,
    /// Whether the cap cut the list.
    pub truncated: bool,
    /// `N changed files`.
    pub summary: String,
}

/// `repo.changed_files`.
pub struct ChangedFiles;

/// Reads a path of git's porcelain output: C-quoted when it holds special characters.
fn unquote(path: &str) -> String {
    let Some(inner) = path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) else {
        return path.to_owned();
    };
    let mut bytes = Vec::new();
    let mut chars = inner.bytes().peekable();
    while let Some(b) = chars.next() {
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        match chars.next() {
            Some(b'n') => bytes.push(b'\n'),
            Some(b't') => bytes.push(b'\t'),
            Some(d @ b'0'..=b'7') => {
                let mut v = u32::from(d - b'0');
                for _ in 0..2 {
                    if let Some(&n @ b'0'..=b'7') = chars.peek() {
                        v = v * 8 + u32::from(n - b'0');
                        chars.next();
                    }
                }
                bytes.push(u8::try_from(v).unwrap_or(b'?'));
            }
            Some(other) => bytes.push(other),
            None => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn entry(index: char, worktree: char, path: String, renamed_from: Option<String>) -> ChangedFile {
    let untracked = index == '?';
    ChangedFile {
        status: format!("{index}{worktree}"),
        index_status: index.to_string(),
        worktree_status: worktree.to_string(),
        staged: !untracked && index != ' ',
        unstaged: !untracked && worktree != ' ',
        untracked,
        deleted: index == 'D' || worktree == 'D',
        path,
        renamed_from,
    }
}

/// Parses `git status --porcelain=v1` lines (`XY path`, `XY old -> new`).
pub fn parse_porcelain(text: &str) -> Vec<ChangedFile> {
    text.lines()
        .filter(|l| l.len() > 3)
        .filter_map(|l| {
            let mut cols = l.chars();
            let (x, y) = (cols.next()?, cols.next()?);
            let rest = l.get(3..)?;
            let (path, from) = match rest.split_once(" -> ") {
                Some((old, new)) if matches!(x, 'R' | 'C') => (unquote(new), Some(unquote(old))),
                _ => (unquote(rest), None),
            };
            Some(entry(x, y, path, from))
        })
        .collect()
}

/// Parses `git diff --name-status` lines (`M\tpath`, `R100\told\tnew`).
pub fn parse_name_status(text: &str) -> Vec<ChangedFile> {
    text.lines()
        .filter_map(|l| {
            let mut fields = l.split('\t');
            let status = fields.next()?.chars().next()?;
            let first = unquote(fields.next()?);
            Some(match fields.next() {
                Some(second) => entry(status, ' ', unquote(second), Some(first)),
                None => entry(status, ' ', first, None),
            })
        })
        .collect()
}

impl Tool for ChangedFiles {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            idempotency: crate::tools::Idempotency::BestEffort,
            arg_fields: vec![ArgField {
                field: "base_ref",
                multi: false,
                max_items: None,
                max_length: Some(120),
                allowed_values: Vec::new(),
                allowed_prefix: Vec::new(),
                denied_prefix: Vec::new(),
                deny_characters: super::args::SHELL_TOKENS.to_vec(),
            }],
            examples: vec![
                json!({}),
                json!({"base_ref": "main", "path": "src"}),
                json!({"output": " M src/main.go\n?? notes.txt\n"}),
            ],
            ..base(
                "repo.changed_files",
                "Changed files: git status --porcelain=v1 (working_tree), git diff --name-status \
                 --find-renames <base_ref>...HEAD (base_ref_diff), or a porcelain listing given \
                 as output (nothing runs). Entries sorted by path; max_files default 500, capped \
                 at 2000. Git runs hardened: no hook, filter or driver of the repository runs.",
                90,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = Some(
            args.path
                .resolve(&ctx.session.allowed_paths)
                .map_err(|d| ToolFailure::new(d.code, d.message))?,
        )
        .filter(|p| p != ".");
        let base_ref = args.base_ref.as_deref().map(str::trim).unwrap_or("");
        if base_ref.starts_with('-') {
            return Err(invalid("base_ref must not start with '-'"));
        }
        let mode = if base_ref.is_empty() {
            "working_tree"
        } else {
            "base_ref_diff"
        };
        let (source, command, exit_code, mut files) = match &args.output {
            Some(text) => ("provided_output", Vec::new(), 0, parse_porcelain(text)),
            None => {
                let config = git::open_repository(ctx).await?.ok_or_else(|| {
                    ToolFailure::new(ErrorCode::GitRepoError, "not a git repository")
                })?;
                let command = if base_ref.is_empty() {
                    GitCommand::new("status", Network::Denied, Repository::Workspace)
                        .arg("--porcelain=v1")
                        .arg(if args.include_untracked {
                            "--untracked-files=all"
                        } else {
                            "--untracked-files=no"
                        })
                } else {
                    GitCommand::new("diff", Network::Denied, Repository::Workspace)
                        .args(["--name-status", "--find-renames"])
                        .arg(format!("{base_ref}...HEAD"))
                }
                .read_only()
                .neutralise(&config);
                let command = match &path {
                    Some(p) if p != "." => command.arg("--").arg(p.clone()),
                    _ => command,
                };
                let out = git::run(ctx, &command, None, GIT_OUTPUT_BYTES).await?;
                if out.timed_out {
                    return Err(ToolFailure::new(ErrorCode::Timeout, "git timed out"));
                }
                if out.exit_code != 0 {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let message = format!("command failed: {}", stderr.trim());
                    return Err(match out.exit_code {
                        128 => ToolFailure::new(ErrorCode::GitRepoError, message),
                        129 => ToolFailure::new(ErrorCode::GitUsageError, message),
                        _ => failed(message),
                    });
                }
                let text = String::from_utf8_lossy(&out.stdout);
                let files = if base_ref.is_empty() {
                    parse_porcelain(&text)
                } else {
                    parse_name_status(&text)
                };
                ("git", command.argv().to_vec(), out.exit_code, files)
            }
        };
        files.retain(|f| !f.path.starts_with(CACHE_DIR));
        if let (Some(p), "provided_output") = (&path, source)
            && p != "."
        {
            let prefix = format!("{p}/");
            files.retain(|f| f.path == *p || f.path.starts_with(&prefix));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let changed_count = files.len();
        let max = usize::try_from(args.max_files.get()).unwrap_or(usize::MAX);
        let truncated = files.len() > max;
        files.truncate(max);
        let summary = format!("{changed_count} changed files");
        Ok(Completed::new(
            Output {
                source,
                mode,
                base_ref: base_ref.to_owned(),
                path: path.unwrap_or_default(),
                command,
                exit_code,
                files,
                changed_count,
                truncated,
                summary: summary.clone(),
            },
            summary,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_lines_become_entries_with_renames_and_quoted_paths() {
        let files = parse_porcelain(" M src/a.go\nR  old.txt -> new.txt\n?? \"sp ace\\303\\251.txt\"\nD  gone\n");
        assert_eq!(files.len(), 4);
        assert!(files[0].unstaged && !files[0].staged);
        assert_eq!(files[1].renamed_from.as_deref(), Some("old.txt"));
        assert_eq!(files[1].path, "new.txt");
        assert!(files[2].untracked);
        assert_eq!(files[2].path, "sp aceé.txt");
        assert!(files[3].deleted && files[3].staged);
    }

    #[test]
    fn name_status_lines_become_entries() {
        let files = parse_name_status("M\ta.go\nR087\told.go\tnew.go\nA\tb.go\n");
        assert_eq!(files[1].renamed_from.as_deref(), Some("old.go"));
        assert_eq!(files[2].status, "A ");
    }
}
