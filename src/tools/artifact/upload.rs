//! `artifact.upload`: a workspace file stored as an artifact of the invocation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base, clamp_bytes, read_prefix};
use crate::tools::args::{Count, NonEmptyString, WorkspacePath};
use crate::tools::fs::{invalid, resolve, sha256_hex};
use crate::tools::{
    Completed, Idempotency, Metadata, NewArtifact, SideEffects, Tool, ToolContext, ToolFailure,
};

/// Content type of an upload that names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Longest accepted `content_type`.
const MAX_CONTENT_TYPE_CHARS: usize = 255;

/// Arguments of `artifact.upload`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// File to upload, relative to the workspace.
    pub path: WorkspacePath,
    /// Artifact name (default: the file's base name; directories are dropped by the store).
    #[serde(default)]
    pub name: Option<NonEmptyString<255>>,
    /// MIME type of the artifact (default application/octet-stream).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Upload at most this many bytes (default 2 MiB, clamped to 1 KiB..10 MiB).
    #[serde(default)]
    pub max_bytes: Count<{ 2 * 1024 * 1024 }, { super::MAX_BYTES }>,
}

/// Output of `artifact.upload`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// The artifact's name (as given to the store, which sanitises it).
    pub artifact_name: String,
    /// The artifact's content type.
    pub content_type: String,
    /// Bytes uploaded (at most max_bytes).
    pub size_bytes: u64,
    /// The file's full size.
    pub file_size_bytes: u64,
    /// SHA-256 of the uploaded bytes, hex (the artifact's digest).
    pub sha256: String,
    /// Whether the file is longer than what was uploaded.
    pub truncated: bool,
}

/// `artifact.upload`.
pub struct Upload;

/// A content type that can travel as an HTTP header value: `type/subtype` with optional
/// parameters, printable ASCII.
pub(super) fn check_content_type(value: &str) -> Result<(), ToolFailure> {
    let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    let (kind, subtype) = value.split_once('/').unwrap_or(("", ""));
    if value.len() > MAX_CONTENT_TYPE_CHARS
        || !printable
        || kind.trim().is_empty()
        || subtype.trim().is_empty()
    {
        return Err(invalid(
            "content_type must be a MIME type such as text/plain (printable ASCII, at most 255 \
             characters)",
        ));
    }
    Ok(())
}

/// The default artifact name: the path's last component.
pub(super) fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Tool for Upload {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        let mut metadata = base(
            "artifact.upload",
            "Store a workspace file as an artifact of this invocation (downloadable from \
             GET /v1/invocations/{id}/artifacts/{artifact_id}). At most max_bytes are stored \
             (default 2 MiB, clamped to 1 KiB..10 MiB); truncated tells whether the file is \
             longer. name defaults to the file's base name, content_type to \
             application/octet-stream.",
        );
        metadata.side_effects = SideEffects::Reversible;
        metadata.idempotency = Idempotency::BestEffort;
        metadata.preconditions = vec!["path is a regular file"];
        metadata.postconditions = vec!["the invocation has one more artifact holding the bytes"];
        metadata.examples = vec![
            json!({"path": "dist/report.html", "content_type": "text/html"}),
            json!({"path": "build.log", "name": "build-log.txt", "max_bytes": 65536}),
        ];
        metadata
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let content_type = match args.content_type {
            Some(value) => {
                check_content_type(&value)?;
                value
            }
            None => DEFAULT_CONTENT_TYPE.to_owned(),
        };
        let name = match &args.name {
            Some(name) => name.as_str().to_owned(),
            None => base_name(&path).to_owned(),
        };
        let max_bytes = clamp_bytes(args.max_bytes.get());
        let (bytes, file_size_bytes, truncated) = read_prefix(ctx, &path, max_bytes).await?;
        let size_bytes = bytes.len() as u64;
        let sha256 = sha256_hex(&bytes);
        let summary = format!(
            "uploaded {size_bytes} of {file_size_bytes} bytes of {path} as artifact {name}"
        );
        let mut completed = Completed::new(
            Output {
                path,
                artifact_name: name.clone(),
                content_type: content_type.clone(),
                size_bytes,
                file_size_bytes,
                sha256,
                truncated,
            },
            summary,
        );
        completed.artifacts.push(NewArtifact {
            name,
            content_type,
            bytes,
        });
        Ok(completed)
    }
}
