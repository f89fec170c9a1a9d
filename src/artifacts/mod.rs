//! The artifact store: bytes too large to travel in events (tool output, logs, large arguments,
//! files a tool produces), kept beside the log and referenced from events by id and digest.
//!
//! Local layout: `<ARTIFACT_ROOT>/<invocation_id>/<artifact_id>`; the name and content type live
//! in the events. Ids are validated before they reach a path. An artifact is written (and
//! renamed into place) before the event that references it is appended, so a crash can leave an
//! unreferenced file behind but never a reference to missing bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use workspace_events::{ArtifactMeta, ArtifactRef};

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
    /// I/O failure.
    #[error("artifact store I/O failed")]
    Io(#[from] std::io::Error),
}

/// Artifacts on a local (or shared) filesystem.
#[derive(Debug, Clone)]
pub struct LocalArtifactStore {
    root: PathBuf,
    fsync: bool,
}

impl LocalArtifactStore {
    /// A store rooted at `root` (created when missing). With `fsync`, every artifact is synced
    /// before it is referenced.
    pub fn open(root: &Path, fsync: bool) -> Result<Self, ArtifactError> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            fsync,
        })
    }

    fn path(&self, invocation: &InvocationId, artifact: &ArtifactId) -> PathBuf {
        self.root.join(invocation.as_str()).join(artifact.as_str())
    }

    /// Stores bytes for an invocation; returns their metadata.
    pub async fn put(
        &self,
        invocation: &InvocationId,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<ArtifactMeta, ArtifactError> {
        let id = ArtifactId::generate();
        let path = self.path(invocation, &id);
        let fsync = self.fsync;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            if fsync {
                file.sync_data()?;
            }
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| ArtifactError::Io(std::io::Error::other(e)))??;
        Ok(ArtifactMeta {
            id: id.to_string(),
            name: sanitize_name(name),
            content_type: content_type.to_owned(),
            size_bytes: size,
            sha256,
            created_at: OffsetDateTime::now_utc(),
        })
    }

    /// Reads an artifact's bytes and checks them against the recorded digest when given.
    pub async fn get(
        &self,
        invocation: &InvocationId,
        artifact: &ArtifactId,
        expected_sha256: Option<&str>,
    ) -> Result<Vec<u8>, ArtifactError> {
        let path = self.path(invocation, artifact);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ArtifactError::NotFound);
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(expected) = expected_sha256
            && hex::encode(Sha256::digest(&bytes)) != expected
        {
            return Err(ArtifactError::Corrupt(artifact.to_string()));
        }
        Ok(bytes)
    }

    /// Reads the bytes an event refers to.
    pub async fn get_ref(
        &self,
        invocation: &InvocationId,
        reference: &ArtifactRef,
    ) -> Result<Vec<u8>, ArtifactError> {
        let id = ArtifactId::parse(&reference.artifact_id).map_err(|_| ArtifactError::NotFound)?;
        self.get(invocation, &id, Some(&reference.sha256)).await
    }

    /// Checks the root is writable (for `/readyz`).
    pub fn ping(&self) -> Result<(), ArtifactError> {
        std::fs::metadata(&self.root)?;
        Ok(())
    }
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

    #[tokio::test]
    async fn stored_bytes_come_back_with_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::open(dir.path(), false).unwrap();
        let inv = InvocationId::generate();
        let meta = store
            .put(&inv, "out.json", "application/json", b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(meta.size_bytes, 2);
        let id = ArtifactId::parse(&meta.id).unwrap();
        let bytes = store.get(&inv, &id, Some(&meta.sha256)).await.unwrap();
        assert_eq!(bytes, b"{}");
    }

    #[tokio::test]
    async fn a_tampered_artifact_is_reported_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::open(dir.path(), false).unwrap();
        let inv = InvocationId::generate();
        let meta = store
            .put(&inv, "a", "text/plain", b"abc".to_vec())
            .await
            .unwrap();
        std::fs::write(dir.path().join(inv.as_str()).join(&meta.id), b"abd").unwrap();
        let id = ArtifactId::parse(&meta.id).unwrap();
        let err = store.get(&inv, &id, Some(&meta.sha256)).await.unwrap_err();
        assert!(matches!(err, ArtifactError::Corrupt(_)));
    }

    #[tokio::test]
    async fn a_missing_artifact_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::open(dir.path(), false).unwrap();
        let err = store
            .get(&InvocationId::generate(), &ArtifactId::generate(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::NotFound));
    }

    #[test]
    fn names_are_reduced_to_a_safe_base_name() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("a\\b\nc"), "bc");
        assert_eq!(sanitize_name(".."), "artifact.bin");
        assert_eq!(sanitize_name(""), "artifact.bin");
    }
}
