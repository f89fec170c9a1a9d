//! `fs.read_lines`: a numbered range of lines of a text file.

use std::num::NonZeroU64;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base, invalid, resolve, unexpected};
use crate::runner::protocol::{Reply, Request};
use crate::tools::args::{Count, WorkspacePath};
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// How much of the file is read; lines past this window are not seen.
pub const READ_LINES_WINDOW_BYTES: u64 = 4 * 1024 * 1024;

/// Arguments of `fs.read_lines`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// File to read, relative to the workspace.
    pub path: WorkspacePath,
    /// First line to return (1-based).
    #[serde(default)]
    pub start_line: Count<1>,
    /// Last line to return (inclusive; default: the end).
    pub end_line: Option<NonZeroU64>,
    /// Return at most this many lines (capped at 2000).
    #[serde(default)]
    pub max_lines: Count<200, 2000>,
}

/// One numbered line.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Line {
    /// 1-based line number.
    pub number: u64,
    /// The line without its end (invalid UTF-8 replaced with U+FFFD).
    pub text: String,
}

/// Output of `fs.read_lines`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// First line asked for.
    pub start_line: u64,
    /// Last line returned (start_line - 1 when none was).
    pub end_line: u64,
    /// Lines in the file (in the window read).
    pub total_lines: u64,
    /// The lines.
    pub lines: Vec<Line>,
    /// Whether lines asked for were left out (max_lines, or the 4 MiB window).
    pub truncated: bool,
}

/// `fs.read_lines`.
pub struct ReadLines;

/// A numbered range of lines.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LineRange {
    pub(super) end_line: u64,
    pub(super) total_lines: u64,
    pub(super) lines: Vec<(u64, String)>,
    pub(super) truncated: bool,
}

/// Cuts lines `start..=end` (at most `max` of them) out of `bytes`. `window_cut` says `bytes`
/// is only the start of the file: its last, unterminated line is then incomplete and not
/// returned, `total_lines` counts what was seen, and reaching the cut sets `truncated`.
pub(super) fn select_lines(
    bytes: &[u8],
    window_cut: bool,
    start: u64,
    end: Option<u64>,
    max: u64,
) -> LineRange {
    let mut pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // `split` yields a trailing empty piece after a final newline (or for an empty file), and
    // a cut window's last piece is a partial line: neither is a line to return.
    if window_cut || pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    let total = pieces.len() as u64;
    let wanted_end = end.unwrap_or(u64::MAX).min(total);
    let last = wanted_end.min(start.saturating_add(max).saturating_sub(1));
    let lines: Vec<(u64, String)> = (start..=last)
        .filter_map(|n| {
            let piece = pieces.get(usize::try_from(n - 1).ok()?)?;
            let piece = piece.strip_suffix(b"\r").unwrap_or(piece);
            Some((n, String::from_utf8_lossy(piece).into_owned()))
        })
        .collect();
    let end_line = if lines.is_empty() { start - 1 } else { last };
    // Cut short by max_lines, or the caller wanted lines the window did not reach.
    let truncated = last < wanted_end || (window_cut && end.is_none_or(|e| e > total));
    LineRange {
        end_line,
        total_lines: total,
        lines,
        truncated,
    }
}

impl Tool for ReadLines {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({"path": "src/main.rs", "start_line": 10, "end_line": 40})],
            ..base(
                "fs.read_lines",
                "Read numbered lines of a text file, from start_line (default 1) to end_line \
                 (default: the end), at most max_lines (default 200, capped at 2000). Only the \
                 first 4 MiB of a file are read. Invalid UTF-8 is replaced with U+FFFD.",
                20,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let start = args.start_line.get();
        let end = args.end_line.map(NonZeroU64::get);
        if end.is_some_and(|e| e < start) {
            return Err(invalid(
                "end_line must be greater than or equal to start_line",
            ));
        }
        let request = Request::ReadFile {
            path: path.clone(),
            max_bytes: READ_LINES_WINDOW_BYTES,
        };
        let (content, cut) = match call_runner(ctx, request).await? {
            Reply::File {
                content, truncated, ..
            } => (content.0, truncated),
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        let range = select_lines(&content, cut, start, end, args.max_lines.get());
        let summary = format!(
            "read lines {start}-{} of {} from {path}",
            range.end_line, range.total_lines
        );
        Ok(Completed::new(
            Output {
                path,
                start_line: start,
                end_line: range.end_line,
                total_lines: range.total_lines,
                lines: range
                    .lines
                    .into_iter()
                    .map(|(number, text)| Line { number, text })
                    .collect(),
                truncated: range.truncated,
            },
            summary,
        ))
    }
}
