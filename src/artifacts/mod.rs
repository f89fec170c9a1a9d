//! The artifact store: bytes too large to travel in events (tool output, logs, large arguments,
//! files a tool produces), kept beside the log and referenced from events by id, size and
//! SHA-256 (decisions and limits: ADR 0008).
//!
//! [`ArtifactStore`] is the seam; [`LocalArtifactStore`] keeps artifacts in a directory
//! (embedded mode), [`JetStreamArtifactStore`] in a JetStream object-store bucket (distributed
//! mode). Both keep one artifact per `(invocation, artifact id)`, under a fresh id on every put.
//!
//! Invariants, for every implementation:
//! - **Written before referenced**: `put` returns only once the bytes are stored as durably as
//!   the store can make them, so the event naming them is appended after them. A crash can
//!   leave unreferenced bytes behind, never a reference to missing bytes.
//! - **Never served unchecked**: reads take the size and digest the event recorded; bytes that
//!   differ are [`ArtifactError::Corrupt`] and are not returned.
//! - The name and content type the events carry are the truth; a store may keep a copy for
//!   operators but never serves it.

mod jetstream;
mod local;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use workspace_events::{ArtifactMeta, ArtifactRef};

pub use self::jetstream::{ArtifactBucketOptions, DEFAULT_BUCKET, JetStreamArtifactStore};
pub use self::local::LocalArtifactStore;
use crate::ids::{ArtifactId, InvocationId};

/// Why an artifact operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// No such artifact.
    #[error("artifact not found")]
    NotFound,
    /// The stored bytes do not match the recorded digest.
    #[error("artifact {0} does not match its recorded digest")]
    Corrupt(String),
    /// The store's server cannot be reached or did not answer in time; the operation may be
    /// retried.
    #[error("artifact store unavailable: {0}")]
    Unavailable(String),
    /// I/O failure.
    #[error("artifact store I/O failed")]
    Io(#[from] std::io::Error),
}

/// Where artifact bytes live. Reads return whole buffers: every artifact is bounded by the
/// limits of what produces it (ADR 0008), and a digest can only be checked before serving
/// once all the bytes are in hand.
#[async_trait]
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// Stores bytes for an invocation under a new artifact id and returns their metadata (the
    /// name sanitised, the SHA-256 of the bytes). Returns only once the bytes are stored, so the
    /// event referencing them may be appended.
    async fn put(
        &self,
        invocation: &InvocationId,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<ArtifactMeta, ArtifactError>;

    /// The bytes an event refers to, checked against the size and SHA-256 it recorded.
    /// [`ArtifactError::NotFound`] when the invocation has no such artifact (or the id is not an
    /// artifact id), [`ArtifactError::Corrupt`] when the stored bytes differ.
    async fn get_ref(
        &self,
        invocation: &InvocationId,
        reference: &ArtifactRef,
    ) -> Result<Vec<u8>, ArtifactError>;

    /// The bytes of an artifact an invocation lists, checked as [`ArtifactStore::get_ref`] does.
    async fn get(
        &self,
        invocation: &InvocationId,
        artifact: &ArtifactMeta,
    ) -> Result<Vec<u8>, ArtifactError> {
        self.get_ref(invocation, &artifact.reference()).await
    }

    /// Whether the store can serve (for `/readyz`).
    async fn ping(&self) -> Result<(), ArtifactError>;
}

/// The artifact id a reference names; a reference that names none cannot be found.
fn parse_id(reference: &ArtifactRef) -> Result<ArtifactId, ArtifactError> {
    ArtifactId::parse(&reference.artifact_id).map_err(|_| ArtifactError::NotFound)
}

/// Lower-case hex SHA-256, as events record it.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks bytes against the size and digest a reference recorded.
fn verify(reference: &ArtifactRef, bytes: &[u8]) -> Result<(), ArtifactError> {
    if bytes.len() as u64 != reference.size_bytes || sha256_hex(bytes) != reference.sha256 {
        return Err(ArtifactError::Corrupt(reference.artifact_id.clone()));
    }
    Ok(())
}

/// A file name safe to show and to use in `Content-Disposition`: base name only, no control
/// characters, `artifact.bin` when nothing is left.
pub fn sanitize_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(200)
        .collect();
    if clean.is_empty() || clean == "." || clean == ".." {
        "artifact.bin".to_owned()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_reduced_to_a_safe_base_name() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("a\\b\nc"), "bc");
        assert_eq!(sanitize_name(".."), "artifact.bin");
        assert_eq!(sanitize_name(""), "artifact.bin");
    }

    #[test]
    fn bytes_of_another_size_or_digest_fail_verification() {
        let reference = ArtifactRef {
            artifact_id: "artifact-x".into(),
            sha256: sha256_hex(b"abc"),
            size_bytes: 3,
        };
        assert!(verify(&reference, b"abc").is_ok());
        assert!(matches!(
            verify(&reference, b"abd"),
            Err(ArtifactError::Corrupt(_))
        ));
        assert!(matches!(
            verify(&reference, b"abcd"),
            Err(ArtifactError::Corrupt(_))
        ));
    }
}
