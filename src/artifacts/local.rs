//! Artifacts on a local (or shared) filesystem: `<ARTIFACT_ROOT>/<invocation_id>/<artifact_id>`.
//! The name and content type live in the events only. Ids are validated newtypes before they
//! reach a path. A put writes a temporary file and renames it into place before the event that
//! references it is appended; with `fsync` the file and then the directory entries are synced.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use time::OffsetDateTime;
use workspace_events::{ArtifactMeta, ArtifactRef};

use super::{ArtifactError, ArtifactStore, parse_id, sanitize_name, sha256_hex, verify};
use crate::ids::{ArtifactId, InvocationId};

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
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(Path::new("."));
            let new_dir = !dir.exists();
            std::fs::create_dir_all(dir)?;
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            if fsync {
                file.sync_data()?;
            }
            std::fs::rename(&tmp, &path)?;
            if fsync {
                // The rename (and a new invocation directory) must be durable too, or a crash
                // after the referencing event is synced could lose the name of the bytes.
                std::fs::File::open(dir)?.sync_all()?;
                if new_dir {
                    std::fs::File::open(&root)?.sync_all()?;
                }
            }
            Ok(())
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
        let bytes = self.read(invocation, artifact).await?;
        if let Some(expected) = expected_sha256
            && sha256_hex(&bytes) != expected
        {
            return Err(ArtifactError::Corrupt(artifact.to_string()));
        }
        Ok(bytes)
    }

    /// Reads the bytes an event refers to, checked against its recorded size and digest.
    pub async fn get_ref(
        &self,
        invocation: &InvocationId,
        reference: &ArtifactRef,
    ) -> Result<Vec<u8>, ArtifactError> {
        let id = parse_id(reference)?;
        let bytes = self.read(invocation, &id).await?;
        verify(reference, &bytes)?;
        Ok(bytes)
    }

    async fn read(
        &self,
        invocation: &InvocationId,
        artifact: &ArtifactId,
    ) -> Result<Vec<u8>, ArtifactError> {
        match tokio::fs::read(self.path(invocation, artifact)).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ArtifactError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks the root is writable (for `/readyz`).
    pub fn ping(&self) -> Result<(), ArtifactError> {
        std::fs::metadata(&self.root)?;
        Ok(())
    }
}

// The inherent methods above are what today's callers use (inherent methods win over the
// trait's of the same name); the trait delegates to them.
#[async_trait]
impl ArtifactStore for LocalArtifactStore {
    async fn put(
        &self,
        invocation: &InvocationId,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<ArtifactMeta, ArtifactError> {
        LocalArtifactStore::put(self, invocation, name, content_type, bytes).await
    }

    async fn get_ref(
        &self,
        invocation: &InvocationId,
        reference: &ArtifactRef,
    ) -> Result<Vec<u8>, ArtifactError> {
        LocalArtifactStore::get_ref(self, invocation, reference).await
    }

    async fn ping(&self) -> Result<(), ArtifactError> {
        tokio::fs::metadata(&self.root).await?;
        Ok(())
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
    async fn a_synced_store_round_trips_into_new_and_existing_invocation_directories() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::open(dir.path(), true).unwrap();
        let inv = InvocationId::generate();
        for bytes in [&b"first"[..], b"second"] {
            let meta = store
                .put(&inv, "a", "text/plain", bytes.to_vec())
                .await
                .unwrap();
            assert_eq!(store.get_ref(&inv, &meta.reference()).await.unwrap(), bytes);
        }
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
}
