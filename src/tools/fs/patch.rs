//! `fs.patch`: apply a unified diff with `git apply`, hardened.
//!
//! Like the original it declares no path arguments: the paths live inside the diff, and the
//! run checks every one of them (old and new names) against the policy's path rules before
//! git sees the diff.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base, invalid, writes};
use crate::error_code::ErrorCode;
use crate::policy::paths;
use crate::tools::args::NonEmptyString;
use crate::tools::git::{self, GitCommand, Network, Repository};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, stdout_line};

/// Largest diff accepted, in characters.
pub const PATCH_MAX_CHARS: usize = 1024 * 1024;

/// How to apply: `reject_on_conflict` applies all hunks or nothing; `apply` merges three-way
/// (`--3way`, needs a repository).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    RejectOnConflict,
    Apply,
}

/// Arguments of `fs.patch`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The diff, as produced by `git diff` or `diff -u` with a/ b/ prefixes.
    pub unified_diff: NonEmptyString<PATCH_MAX_CHARS>,
    /// reject_on_conflict or apply (three-way merge).
    #[serde(default)]
    pub strategy: Strategy,
}

/// Output of `fs.patch` (also the partial output of a failed apply, with applied=false).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// Whether the diff was applied.
    pub applied: bool,
    /// The strategy used.
    pub strategy: Strategy,
    /// Every path the diff touches, normalised, in order of first appearance.
    pub changed_paths: Vec<String>,
    /// What git printed.
    pub output: String,
}

/// `fs.patch`.
pub struct Patch;

/// Output of `git apply` kept in the reply, per stream.
const PATCH_OUTPUT_BYTES: u64 = 256 * 1024;

/// Why a diff was refused before running git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DiffRefusal {
    /// Not a diff git could apply safely (no paths, a header without a directory prefix, a
    /// path naming the workspace root). `invalid_argument`.
    Invalid(String),
    /// A path that is absolute or climbs out of the workspace. `policy_denied`.
    Denied(String),
}

impl DiffRefusal {
    pub(super) fn into_failure(self) -> ToolFailure {
        match self {
            DiffRefusal::Invalid(m) => invalid(m),
            DiffRefusal::Denied(m) => ToolFailure::new(ErrorCode::PolicyDenied, m),
        }
    }
}

/// Undoes git's C-style quoting of a path (`"a\tb\303\251"`): git quotes names with control
/// characters, quotes, backslashes or non-ASCII bytes.
fn unquote_c(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let escaped = match bytes.next()? {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'v' => 0x0b,
            b'"' => b'"',
            b'\\' => b'\\',
            d @ b'0'..=b'3' => {
                let mut value = u32::from(d - b'0');
                for _ in 0..2 {
                    let next = bytes.next()?;
                    if !(b'0'..=b'7').contains(&next) {
                        return None;
                    }
                    value = value * 8 + u32::from(next - b'0');
                }
                u8::try_from(value).ok()?
            }
            _ => return None,
        };
        out.push(escaped);
    }
    String::from_utf8(out).ok()
}

/// Index of the quote closing a C-quoted string that starts at `quoted[0]`.
fn closing_quote(quoted: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in quoted.char_indices().skip(1) {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// The name in a `--- `/`+++ ` header, without a trailing timestamp (`diff -u` separates it
/// with a tab, and git adds a tab after names containing spaces) and unquoted.
fn header_name(rest: &str) -> Option<String> {
    if rest.starts_with('"') {
        return unquote_c(&rest[..=closing_quote(rest)?]);
    }
    let name = rest.split('\t').next().unwrap_or(rest);
    Some(name.trim_end_matches('\r').to_owned())
}

/// Checks one name as git will use it. `prefixed` names (headers) lose their first component
/// the way `git apply -p1` strips it; names from `rename`/`copy` lines are used as they are.
/// A `..` component anywhere in the raw name is refused, even where it would cancel out
/// lexically: a diff has no business spelling paths that way, and the prefix git strips is
/// part of what it reads.
fn diff_path(raw: &str, prefixed: bool) -> Result<Option<String>, DiffRefusal> {
    if raw == "/dev/null" {
        return Ok(None);
    }
    if raw.starts_with('/') {
        return Err(DiffRefusal::Denied(
            "patch paths must be relative: absolute paths are not allowed".to_owned(),
        ));
    }
    let name = if prefixed {
        match raw.split_once('/') {
            Some((_, rest)) => rest,
            None => {
                return Err(DiffRefusal::Invalid(format!(
                    "invalid unified diff: header path {raw:?} has no a/ or b/ prefix"
                )));
            }
        }
    } else {
        raw
    };
    if raw.split('/').any(|part| part == "..") {
        return Err(DiffRefusal::Denied(
            "patch paths must stay inside the workspace: path escapes workspace".to_owned(),
        ));
    }
    let normalized = paths::normalize(name).map_err(|d| DiffRefusal::Denied(d.to_string()))?;
    if normalized == "." {
        return Err(DiffRefusal::Invalid(
            "invalid unified diff: a path names the workspace root".to_owned(),
        ));
    }
    Ok(Some(normalized))
}

/// Splits the `a/X b/Y` of a `diff --git` header. Unquoted names with spaces are ambiguous; git
/// resolves them by requiring both names to be equal after their prefix, and so does this
/// (`None` when the header cannot be split).
fn git_header_names(rest: &str) -> Option<(String, String)> {
    let rest = rest.trim_end_matches('\r');
    if rest.starts_with('"') {
        let end = closing_quote(rest)?;
        let a = unquote_c(&rest[..=end])?;
        let b = header_name(rest[end + 1..].trim_start())?;
        return Some((a, b));
    }
    if let Some(pos) = rest.find(" \"") {
        let b = header_name(&rest[pos + 1..])?;
        return Some((rest[..pos].to_owned(), b));
    }
    // Unquoted: the split point is the space where both halves name the same file after their
    // prefixes, e.g. `a/x y b/x y`.
    let strip = |s: &str| s.split_once('/').map(|(_, r)| r.to_owned());
    for (i, _) in rest.match_indices(' ') {
        let (a, b) = (&rest[..i], &rest[i + 1..]);
        if strip(a).is_some() && strip(a) == strip(b) {
            return Some((a.to_owned(), b.to_owned()));
        }
    }
    // Different names (a rename): only unambiguous with a single space.
    match rest.split_once(' ') {
        Some((a, b)) if !b.contains(' ') => Some((a.to_owned(), b.to_owned())),
        _ => None,
    }
}

/// Every path a unified diff touches, in order of first appearance, normalised.
///
/// Headers (`--- `, `+++ `, `diff --git`, `rename from/to`, `copy from/to`) are only read
/// outside hunks: hunk bodies are skipped by their line counts, so a removed line that reads
/// `-- x` (shown as `--- x`) or an added `++ x` is never mistaken for a header. Both old and
/// new names count, so deleting or renaming a file outside `allowed_paths` is caught too.
pub(super) fn diff_paths(diff: &str) -> Result<Vec<String>, DiffRefusal> {
    let mut found: Vec<String> = Vec::new();
    let mut push = |path: Option<String>| {
        if let Some(p) = path
            && !found.contains(&p)
        {
            found.push(p);
        }
    };
    let (mut old_left, mut new_left) = (0u64, 0u64);
    for line in diff.split('\n') {
        if old_left > 0 || new_left > 0 {
            match line.as_bytes().first() {
                Some(b'-') => old_left = old_left.saturating_sub(1),
                Some(b'+') => new_left = new_left.saturating_sub(1),
                Some(b'\\') => {}
                // A context line; some tools drop the single space of an empty context line.
                Some(b' ') | None => {
                    old_left = old_left.saturating_sub(1);
                    new_left = new_left.saturating_sub(1);
                }
                Some(b'\r') if line.len() == 1 => {
                    old_left = old_left.saturating_sub(1);
                    new_left = new_left.saturating_sub(1);
                }
                Some(_) => {
                    return Err(DiffRefusal::Invalid(
                        "invalid unified diff: a hunk is shorter than its header says".to_owned(),
                    ));
                }
            }
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("--- ")
            .or_else(|| line.strip_prefix("+++ "))
        {
            let name = header_name(rest).ok_or_else(|| {
                DiffRefusal::Invalid("invalid unified diff: malformed file header".to_owned())
            })?;
            push(diff_path(&name, true)?);
        } else if let Some(rest) = line.strip_prefix("diff --git ") {
            // git only falls back on these names when no other header names the file, and it
            // ignores an unquoted header it cannot split; so does this (the other headers are
            // checked). A quoted header that does not parse is refused: git might read it.
            match git_header_names(rest) {
                Some((a, b)) => {
                    push(diff_path(&a, true)?);
                    push(diff_path(&b, true)?);
                }
                None if rest.contains('"') => {
                    return Err(DiffRefusal::Invalid(
                        "invalid unified diff: malformed diff --git header".to_owned(),
                    ));
                }
                None => {}
            }
        } else if let Some(rest) = ["rename from ", "rename to ", "copy from ", "copy to "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
        {
            let name = header_name(rest).ok_or_else(|| {
                DiffRefusal::Invalid("invalid unified diff: malformed rename header".to_owned())
            })?;
            push(diff_path(&name, false)?);
        } else if let Some(rest) = line.strip_prefix("@@ -") {
            let (old, new) = hunk_counts(rest).ok_or_else(|| {
                DiffRefusal::Invalid("invalid unified diff: malformed hunk header".to_owned())
            })?;
            old_left = old;
            new_left = new;
        }
    }
    if found.is_empty() {
        return Err(DiffRefusal::Invalid(
            "invalid unified diff: no file paths found".to_owned(),
        ));
    }
    Ok(found)
}

/// The old and new line counts of a hunk header's remainder (`1,3 +1,4 @@ ...`); a range
/// without a count has one line.
fn hunk_counts(rest: &str) -> Option<(u64, u64)> {
    let (old, rest) = rest.split_once(" +")?;
    let (new, _) = rest.split_once(" @@")?;
    let count = |range: &str| -> Option<u64> {
        match range.split_once(',') {
            Some((start, n)) => {
                start.parse::<u64>().ok()?;
                n.parse().ok()
            }
            None => range.parse::<u64>().ok().map(|_| 1),
        }
    };
    Some((count(old)?, count(new)?))
}


impl Tool for Patch {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            requires_approval: true,
            cost_hint: "medium",
            preconditions: vec!["the diff applies to the current workspace content"],
            postconditions: vec!["every file named by the diff is patched, or none is"],
            examples: vec![json!({
                "unified_diff": "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n-hello\n+hello, world\n",
                "strategy": "reject_on_conflict"
            })],
            ..writes(base(
                "fs.patch",
                "Apply a unified diff to the workspace with `git apply` (works without a git \
                 repository). strategy reject_on_conflict (default) applies all hunks or \
                 nothing; apply uses a three-way merge (--3way, needs a repository). Every path \
                 the diff touches must be inside the workspace and the session's allowed_paths.",
                45,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let diff = args.unified_diff.as_str();
        let strategy = args.strategy;
        let three_way = strategy == Strategy::Apply;
        let changed_paths = diff_paths(diff).map_err(DiffRefusal::into_failure)?;
        if changed_paths
            .iter()
            .any(|p| !paths::is_allowed(p, &ctx.session.allowed_paths))
        {
            return Err(ToolFailure::new(
                ErrorCode::PolicyDenied,
                "patch touches paths outside allowed_paths",
            ));
        }
        // Old and new names alike: deleting or renaming a file out of .git changes it too.
        if changed_paths.iter().any(|p| paths::is_protected(p)) {
            return Err(ToolFailure::new(
                ErrorCode::PolicyDenied,
                "patch touches .git, a protected path: file tools never write there (the git \
                 tools own it)",
            ));
        }

        // Without --3way, git apply needs no repository: it runs outside any (no repository
        // configuration is read at all, so nothing the repository names can run). A three-way
        // apply needs the repository's objects and index: it is inspected and its drivers
        // neutralised first (see `tools::git`).
        let command = if three_way {
            match git::open_repository(ctx).await? {
                Some(config) => {
                    GitCommand::new("apply", Network::Denied, Repository::Workspace)
                        .neutralise(&config)
                }
                // git explains that --3way needs a repository.
                None => GitCommand::new("apply", Network::Denied, Repository::Outside),
            }
            .args(["--whitespace=nowarn", "--3way"])
        } else {
            GitCommand::new("apply", Network::Denied, Repository::Outside)
                .arg("--whitespace=nowarn")
        };
        let git::Output {
            exit_code,
            stdout,
            stderr,
            timed_out,
            ..
        } = git::run(
            ctx,
            &command,
            Some(diff.as_bytes().to_vec()),
            PATCH_OUTPUT_BYTES,
        )
        .await?;
        let mut output = String::from_utf8_lossy(&stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&stderr));
        let mut logs = if output.trim().is_empty() {
            Vec::new()
        } else {
            vec![stdout_line(output.trim_end())]
        };
        if timed_out || exit_code != 0 {
            let (code, message) = if timed_out {
                (ErrorCode::Timeout, "git apply timed out".to_owned())
            } else {
                let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                (
                    ErrorCode::ExecutionFailed,
                    format!("git apply failed (exit code {exit_code}): {first}"),
                )
            };
            let partial = Output {
                applied: false,
                strategy,
                changed_paths,
                output,
            };
            let mut failure = ToolFailure::new(code, message).with_output(&partial);
            failure.logs = logs;
            failure.exit_code = exit_code;
            return Err(failure);
        }
        logs.push(stdout_line(format!(
            "applied patch to {} paths",
            changed_paths.len()
        )));
        Ok(Completed {
            output: Output {
                applied: true,
                strategy,
                changed_paths,
                output,
            },
            logs,
            artifacts: Vec::new(),
            exit_code,
        })
    }
}
