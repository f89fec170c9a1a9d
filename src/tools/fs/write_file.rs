//! `fs.write_file`: create or replace a file.

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::read_file::Encoding;
use super::{WRITE_MAX_BYTES, base, invalid, resolve, sha256_hex, unexpected, writes};
use crate::runner::protocol::{Bytes, Reply, Request};
use crate::tools::args::{WorkspacePath, Write};
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Arguments of `fs.write_file`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// File to write, relative to the workspace.
    pub path: WorkspacePath<Write>,
    /// The new content, encoded as `encoding` says.
    pub content: String,
    /// How content is encoded: utf8 or base64.
    #[serde(default)]
    pub encoding: Encoding,
    /// Create missing parent directories.
    #[serde(default = "super::yes")]
    pub create_parents: bool,
}

/// Output of `fs.write_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// Bytes written.
    pub bytes_written: u64,
    /// SHA-256 of the bytes written, hex.
    pub sha256: String,
}

/// `fs.write_file`.
pub struct WriteFile;

/// Decodes `fs.write_file` content. Base64 may be wrapped over lines (ASCII whitespace is
/// ignored, as Go's decoder ignored newlines).
pub(super) fn decode_content(content: &str, encoding: Encoding) -> Result<Vec<u8>, ToolFailure> {
    let bytes = match encoding {
        Encoding::Utf8 => content.as_bytes().to_vec(),
        Encoding::Base64 => {
            let compact: Vec<u8> = content
                .bytes()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| invalid("invalid base64 content"))?
        }
    };
    if bytes.len() > WRITE_MAX_BYTES {
        return Err(invalid("content exceeds 1MB limit"));
    }
    Ok(bytes)
}

impl Tool for WriteFile {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            requires_approval: true,
            postconditions: vec!["the file holds exactly the given content"],
            examples: vec![json!({"path": "notes/todo.md", "content": "- ship it\n"})],
            ..writes(base(
                "fs.write_file",
                "Create or replace a file with utf8 or base64 content (at most 1 MiB decoded). \
                 Missing parent directories are created unless create_parents is false. Returns \
                 the bytes written and their sha256. workspace.undo_edit puts the previous \
                 content back (or removes a file this created).",
                20,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let bytes = decode_content(&args.content, args.encoding)?;
        let sha256 = sha256_hex(&bytes);
        let request = Request::WriteFile {
            path: path.clone(),
            content: Bytes(bytes),
            create_parents: args.create_parents,
            create_new: false,
            snapshot: true,
        };
        let bytes_written = match call_runner(ctx, request).await? {
            Reply::Written { bytes_written, .. } => bytes_written,
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
        let summary = format!("wrote {bytes_written} bytes to {path}");
        Ok(Completed::new(
            Output {
                path,
                bytes_written,
                sha256,
            },
            summary,
        ))
    }
}
