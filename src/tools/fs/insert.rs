//! `fs.insert`: insert lines into a file.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    TOO_LARGE_TO_EDIT, WRITE_MAX_BYTES, base, failed, invalid, read_whole, resolve, write_whole,
    writes,
};
use crate::tools::args::{WorkspacePath, Write};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `fs.insert`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// File to change, relative to the workspace.
    pub path: WorkspacePath<Write>,
    /// Insert before this 1-based line; 0 or line count + 1 appends.
    pub line: u64,
    /// Text to insert (one or more lines).
    pub content: String,
}

/// Output of `fs.insert`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// Lines inserted.
    pub inserted_lines: usize,
    /// Size of the changed file.
    pub bytes_written: u64,
}

/// `fs.insert`.
pub struct Insert;

/// Number of lines: newline-terminated lines plus a final unterminated one.
fn line_count(bytes: &[u8]) -> usize {
    let newlines = bytes.iter().filter(|b| **b == b'\n').count();
    newlines + usize::from(bytes.last().is_some_and(|b| *b != b'\n'))
}

/// Inserts `content` before 1-based `line` of `file` (0 or line count + 1 appends). The
/// inserted text always ends with a newline, and appending to a file whose last line has none
/// adds one first, so no two lines are ever joined. Returns the new bytes and the number of
/// inserted lines.
pub(super) fn insert_lines(
    file: &[u8],
    line: u64,
    content: &str,
) -> Result<(Vec<u8>, usize), ToolFailure> {
    let lines = line_count(file);
    let mut insert = content.as_bytes().to_vec();
    if !insert.is_empty() && insert.last() != Some(&b'\n') {
        insert.push(b'\n');
    }
    let inserted = line_count(&insert);
    let append = line == 0 || line == lines as u64 + 1;
    if !append && line > lines as u64 {
        return Err(invalid(format!(
            "line {line} is out of range: the file has {lines} lines (use 0 or {} to append)",
            lines + 1
        )));
    }
    let mut out = Vec::with_capacity(file.len() + insert.len() + 1);
    if append {
        out.extend_from_slice(file);
        if file.last().is_some_and(|b| *b != b'\n') && !insert.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(&insert);
    } else {
        // Byte offset of the start of `line`: just after the (line-1)th newline.
        let offset = if line == 1 {
            0
        } else {
            file.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(usize::try_from(line - 2).unwrap_or(usize::MAX))
                .map_or(file.len(), |(i, _)| i + 1)
        };
        out.extend_from_slice(&file[..offset]);
        out.extend_from_slice(&insert);
        out.extend_from_slice(&file[offset..]);
    }
    Ok((out, inserted))
}

impl Tool for Insert {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            requires_approval: true,
            preconditions: vec!["path is a file of at most 1 MiB"],
            examples: vec![
                json!({"path": "CHANGELOG.md", "line": 3, "content": "- fixed a bug\n"}),
            ],
            ..writes(base(
                "fs.insert",
                "Insert text before a 1-based line of a file (at most 1 MiB); line 0 or the \
                 line count + 1 appends. A missing final newline is added to the inserted text. \
                 workspace.undo_edit puts the previous content back.",
                20,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        if args.content.len() > WRITE_MAX_BYTES {
            return Err(invalid("content exceeds 1MB limit"));
        }
        let file = read_whole(ctx, &path, WRITE_MAX_BYTES, TOO_LARGE_TO_EDIT).await?;
        let (new_content, inserted_lines) = insert_lines(&file, args.line, &args.content)?;
        if new_content.len() > WRITE_MAX_BYTES {
            return Err(failed("the file would exceed the 1MB limit"));
        }
        let bytes_written = write_whole(ctx, &path, new_content).await?;
        let summary = format!("inserted {inserted_lines} line(s) into {path}");
        Ok(Completed::new(
            Output {
                path,
                inserted_lines,
                bytes_written,
            },
            summary,
        ))
    }
}
