//! Value types shared by several events.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error_code::Code;

/// Who acts: the tenant, the actor inside it and the roles the actor holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Tenant the actor belongs to.
    pub tenant_id: String,
    /// The acting user or agent.
    pub actor_id: String,
    /// Roles that drive policy (`developer`, `devops`, `platform_admin`, ...).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A stable error as recorded in an event: a snake_case code from the API's error table, a
/// message safe to show to the caller, and whether retrying may succeed.
///
/// A code this build does not know (written by a newer one) is kept as written
/// ([`Code::Unknown`]), never read as another code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Stable error code, e.g. `policy_denied`, `not_found`, `timeout`.
    pub code: Code,
    /// Human-readable message; never contains secrets or host paths.
    pub message: String,
    /// Whether the same request may succeed later.
    #[serde(default)]
    pub retryable: bool,
}

/// A reference from an event to bytes kept in the artifact store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// Artifact id (`artifact-<hex>`), unique within the service.
    pub artifact_id: String,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    /// Size of the bytes.
    pub size_bytes: u64,
}

/// Metadata of an artifact attached to an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// Artifact id (`artifact-<hex>`).
    pub id: String,
    /// File name given by the tool (sanitised, no directories).
    pub name: String,
    /// MIME type of the bytes.
    pub content_type: String,
    /// Size of the bytes.
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    /// When the artifact was stored.
    #[serde(with = "crate::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl ArtifactMeta {
    /// The reference an event carries to these bytes.
    pub fn reference(&self) -> ArtifactRef {
        ArtifactRef {
            artifact_id: self.id.clone(),
            sha256: self.sha256.clone(),
            size_bytes: self.size_bytes,
        }
    }
}

/// The stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogChannel {
    /// Standard output (or the tool's own summary line).
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogChannel {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogChannel::Stdout => "stdout",
            LogChannel::Stderr => "stderr",
        }
    }
}

impl LogLine {
    /// Appends the line's JSON: what serde writes for it, byte for byte.
    pub fn write_json(&self, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let mut o = crate::json::Object::new(buf);
        o.time("at", &self.at)
            .str("channel", self.channel.as_str())
            .str("message", &self.message);
        o.end()
    }
}

/// One log line of an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the line was produced.
    #[serde(with = "crate::rfc3339")]
    pub at: OffsetDateTime,
    /// Which stream produced it.
    pub channel: LogChannel,
    /// The text.
    pub message: String,
}
