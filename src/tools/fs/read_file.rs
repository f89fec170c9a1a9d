//! `fs.read_file`: a file's content, UTF-8 text as is, anything else base64-encoded.

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base, resolve, unexpected};
use crate::runner::protocol::{JsonText, Reply, Request, utf8_text};
use crate::tools::args::{Count, WorkspacePath};
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Arguments of `fs.read_file`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// File to read, relative to the workspace.
    pub path: WorkspacePath,
    /// Return at most this many bytes (capped at 1048576).
    #[serde(default)]
    pub max_bytes: Count<{ 64 * 1024 }, { 1024 * 1024 }>,
}

/// How file content is encoded in an output: `utf8` (the text itself) or `base64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

/// Output of `fs.read_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// How `content` is encoded.
    pub encoding: Encoding,
    /// The content (at most max_bytes of it).
    #[schemars(with = "String")]
    pub content: JsonText,
    /// The file's full size.
    pub size_bytes: u64,
    /// Whether the file is longer than what was returned.
    pub truncated: bool,
}

/// `fs.read_file`.
pub struct ReadFile;

/// Chooses the output encoding of file content: UTF-8 text when it is, base64 otherwise. When
/// the read stopped inside a multi-byte character, the partial character is dropped rather than
/// turning a whole text file into base64 (the content is cut anyway; `truncated` says so).
pub(super) fn encode_content(bytes: Vec<u8>, truncated: bool) -> (Encoding, String) {
    match utf8_text(bytes, truncated) {
        Ok(text) => (Encoding::Utf8, text),
        Err(bytes) => (
            Encoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
    }
}

impl Tool for ReadFile {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            preconditions: vec!["path is a regular file"],
            examples: vec![json!({"path": "README.md", "max_bytes": 4096})],
            ..base(
                "fs.read_file",
                "Read a file: UTF-8 text as is, anything else base64-encoded. At most max_bytes \
                 are returned (default 65536, capped at 1 MiB); truncated tells whether the file \
                 is longer and size_bytes is its full size.",
                20,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let request = Request::ReadText {
            path: path.clone(),
            max_bytes: args.max_bytes.get(),
        };
        let (returned, encoding, content, size_bytes, truncated) =
            match call_runner(ctx, request).await? {
                // The text stays the JSON string the runner sent.
                Reply::Text {
                    text,
                    returned_bytes,
                    size_bytes,
                    truncated,
                } => (returned_bytes, Encoding::Utf8, text, size_bytes, truncated),
                Reply::File {
                    content,
                    size_bytes,
                    truncated,
                } => {
                    let returned = content.0.len() as u64;
                    let (encoding, content) = encode_content(content.0, truncated);
                    (
                        returned,
                        encoding,
                        JsonText::Text(content),
                        size_bytes,
                        truncated,
                    )
                }
                Reply::Error { code, message } => return Err(runner_failure(code, message)),
                other => return Err(unexpected(&other)),
            };
        let summary = format!("read {returned} of {size_bytes} bytes from {path}");
        Ok(Completed::new(
            Output {
                path,
                encoding,
                content,
                size_bytes,
                truncated,
            },
            summary,
        ))
    }
}
