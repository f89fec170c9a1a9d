//! `fs.edit`: exact search and replace in one UTF-8 text file.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    TOO_LARGE_TO_EDIT, WRITE_MAX_BYTES, base, failed, invalid, read_whole, resolve, sha256_hex,
    write_whole, writes,
};
use crate::tools::args::{NonEmptyString, WorkspacePath, Write};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `fs.edit`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// File to edit, relative to the workspace.
    pub path: WorkspacePath<Write>,
    /// Exact text to replace.
    pub old_string: NonEmptyString,
    /// Replacement text.
    pub new_string: String,
    /// Replace every occurrence.
    #[serde(default)]
    pub replace_all: bool,
}

/// Output of `fs.edit`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// Occurrences replaced.
    pub replacements: usize,
    /// Size of the edited file.
    pub bytes_written: u64,
    /// SHA-256 of the edited file, hex.
    pub sha256: String,
}

/// `fs.edit`.
pub struct Edit;

/// The outcome of an exact search and replace.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Edited {
    pub(super) content: String,
    pub(super) replacements: usize,
}

/// Replaces `old` by `new` in `text`: exactly one occurrence, or all with `replace_all`.
pub(super) fn replace_exact(
    text: &str,
    old: &str,
    new: &str,
    replace_all: bool,
) -> Result<Edited, ToolFailure> {
    if old.is_empty() {
        return Err(invalid("old_string must not be empty"));
    }
    let matches = text.matches(old).count();
    match matches {
        0 => Err(failed("old_string not found")),
        1 => Ok(Edited {
            content: text.replacen(old, new, 1),
            replacements: 1,
        }),
        n if replace_all => Ok(Edited {
            content: text.replace(old, new),
            replacements: n,
        }),
        n => Err(failed(format!(
            "old_string is ambiguous: {n} matches; add context or set replace_all"
        ))),
    }
}

impl Tool for Edit {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            requires_approval: true,
            preconditions: vec![
                "path is a UTF-8 text file of at most 1 MiB",
                "old_string occurs exactly once, or replace_all is true",
            ],
            examples: vec![
                json!({"path": "src/lib.rs", "old_string": "fn old()", "new_string": "fn new()"}),
            ],
            ..writes(base(
                "fs.edit",
                "Replace an exact string in a UTF-8 text file (at most 1 MiB). old_string must \
                 occur exactly once unless replace_all is true; add surrounding context to make \
                 it unique. workspace.undo_edit puts the previous content back.",
                20,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let bytes = read_whole(ctx, &path, WRITE_MAX_BYTES, TOO_LARGE_TO_EDIT).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| failed(format!("{path}: is not UTF-8 text; use fs.write_file")))?;
        let edited = replace_exact(&text, &args.old_string, &args.new_string, args.replace_all)?;
        if edited.content.len() > WRITE_MAX_BYTES {
            return Err(failed("the edited file would exceed the 1MB limit"));
        }
        let sha256 = sha256_hex(edited.content.as_bytes());
        let bytes_written = write_whole(ctx, &path, edited.content.into_bytes()).await?;
        let n = edited.replacements;
        let summary = format!("replaced {n} occurrence(s) in {path}");
        Ok(Completed::new(
            Output {
                path,
                replacements: n,
                bytes_written,
                sha256,
            },
            summary,
        ))
    }
}
