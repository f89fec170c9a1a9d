//! `artifact.download`: a workspace file's bytes returned inline, base64 or UTF-8.

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base, clamp_bytes, read_prefix};
use crate::runner::protocol::utf8_text;
use crate::tools::args::{Count, WorkspacePath};
use crate::tools::fs::{failed, resolve, sha256_hex};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// How `artifact.download` returns the bytes: `base64` (the default, any file) or `utf8`
/// (text files only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Base64,
    Utf8,
}

/// Arguments of `artifact.download`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// File to return, relative to the workspace.
    pub path: WorkspacePath,
    /// base64 (default) or utf8 (the file must be UTF-8 text).
    #[serde(default)]
    pub encoding: Encoding,
    /// Return at most this many bytes (default 256 KiB, clamped to 1 KiB..10 MiB).
    #[serde(default)]
    pub max_bytes: Count<{ 256 * 1024 }, { super::MAX_BYTES }>,
}

/// Output of `artifact.download`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// How the bytes are returned.
    pub encoding: Encoding,
    /// The text (utf8 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The bytes, base64 (base64 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// Bytes returned (at most max_bytes).
    pub returned_bytes: u64,
    /// The file's full size.
    pub size_bytes: u64,
    /// SHA-256 of the returned bytes, hex.
    pub sha256: String,
    /// Whether the file is longer than what was returned.
    pub truncated: bool,
}

/// `artifact.download`.
pub struct Download;

impl Tool for Download {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        let mut metadata = base(
            "artifact.download",
            "Return a workspace file's bytes inline: base64 (default, content_base64) or utf8 \
             (content; a file that is not UTF-8 text fails). At most max_bytes are returned \
             (default 256 KiB, clamped to 1 KiB..10 MiB); truncated tells whether the file is \
             longer, sha256 is the digest of the returned bytes.",
        );
        metadata.preconditions = vec!["path is a regular file"];
        metadata.examples = vec![
            json!({"path": "dist/app.tar.gz"}),
            json!({"path": "README.md", "encoding": "utf8", "max_bytes": 4096}),
        ];
        metadata
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let max_bytes = clamp_bytes(args.max_bytes.get());
        let (bytes, size_bytes, truncated) = read_prefix(ctx, &path, max_bytes).await?;
        let (returned_bytes, sha256, content, content_base64) = match args.encoding {
            Encoding::Base64 => (
                bytes.len() as u64,
                sha256_hex(&bytes),
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
            ),
            Encoding::Utf8 => {
                // A read cut inside a character drops that character (truncated says so).
                let text = utf8_text(bytes, truncated).map_err(|_| {
                    failed(format!(
                        "{path}: is not UTF-8 text; download it with encoding base64"
                    ))
                })?;
                (
                    text.len() as u64,
                    sha256_hex(text.as_bytes()),
                    Some(text),
                    None,
                )
            }
        };
        let summary = format!("returned {returned_bytes} of {size_bytes} bytes of {path}");
        Ok(Completed::new(
            Output {
                path,
                encoding: args.encoding,
                content,
                content_base64,
                returned_bytes,
                size_bytes,
                sha256,
                truncated,
            },
            summary,
        ))
    }
}
