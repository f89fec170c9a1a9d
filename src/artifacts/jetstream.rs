//! Artifacts in a JetStream object-store bucket (distributed mode; ADR 0008).
//!
//! One bucket (default [`DEFAULT_BUCKET`], stream `OBJ_<bucket>`, file storage, the configured
//! replicas, no age limit) holds every artifact as the object `<invocation_id>/<artifact_id>`,
//! its sanitised name, content type and hex SHA-256 in the object's metadata. The bucket is
//! created or updated at connect and every setting the guarantees rest on is checked.
//!
//! - **Put** publishes the chunks (128 KiB each) and then the object's metadata, waiting for the
//!   server's ack of each: it returns only when the whole object is stored, so the event that
//!   references it is appended after it. A put that fails part way leaves chunks without
//!   metadata (no object), never an object with missing chunks.
//! - **Get** refuses an object whose size or object-store digest (also SHA-256) differs from the
//!   recorded ones before reading a chunk, bounds every chunk's arrival by the request timeout,
//!   and hashes the bytes itself before returning them: the recorded digest decides, the
//!   object store's own check is a second line.
//! - **Reads see their writes** across processes: the bucket has `allow_direct` off, so object
//!   info comes from the stream leader, never from a replica that has not caught up.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::object_store::{GetErrorKind, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self as js};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use workspace_events::{ArtifactMeta, ArtifactRef};

use super::{ArtifactError, ArtifactStore, parse_id, sanitize_name, sha256_hex, verify};
use crate::eventstore::jetstream::{
    JetStreamOptions, MINIMUM_SERVER_VERSION, ServerVersion, parse_servers,
};
use crate::ids::{ArtifactId, InvocationId};

/// The default bucket name.
pub const DEFAULT_BUCKET: &str = "WORKSPACE_ARTIFACTS";

/// Object metadata keys.
const META_NAME: &str = "name";
const META_CONTENT_TYPE: &str = "content-type";
const META_SHA256: &str = "sha256";

/// The bucket [`JetStreamArtifactStore`] keeps artifacts in. Its storage is always file: the
/// events referencing artifacts are durable, so the bytes must be too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactBucketOptions {
    /// Bucket name (`[A-Za-z0-9_-]+`); its stream is `OBJ_<bucket>`.
    pub bucket: String,
    /// Replicas: 1 for one server, 3 in production (as the event stream).
    pub replicas: usize,
}

impl Default for ArtifactBucketOptions {
    fn default() -> Self {
        Self {
            bucket: DEFAULT_BUCKET.to_owned(),
            replicas: 1,
        }
    }
}

impl ArtifactBucketOptions {
    /// The bucket's stream.
    pub fn stream_name(&self) -> String {
        format!("OBJ_{}", self.bucket)
    }
}

/// Artifacts in a JetStream object store. See the module documentation.
#[derive(Clone)]
pub struct JetStreamArtifactStore {
    context: js::Context,
    bucket: ObjectStore,
    options: ArtifactBucketOptions,
    timeout: Duration,
}

impl fmt::Debug for JetStreamArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamArtifactStore")
            .field("bucket", &self.options.bucket)
            .field("replicas", &self.options.replicas)
            .finish_non_exhaustive()
    }
}

impl JetStreamArtifactStore {
    /// Connects with the event store's NATS settings (URL, credentials, TLS, request timeout;
    /// its stream settings are not used) and opens the bucket as [`Self::open`] does. Every
    /// failure is [`ArtifactError::Unavailable`] naming what is wrong, without secrets.
    pub async fn connect(
        nats: &JetStreamOptions,
        options: ArtifactBucketOptions,
    ) -> Result<Self, ArtifactError> {
        let shown = nats.servers_for_display();
        let servers = parse_servers(&nats.url).map_err(|e| {
            ArtifactError::Unavailable(format!("the NATS URL {shown} is not valid: {e}"))
        })?;
        let client = nats
            .connect_options("workspace-artifacts")
            .await
            .map_err(ArtifactError::Unavailable)?
            .connect(servers)
            .await
            .map_err(|e| {
                ArtifactError::Unavailable(
                    nats.scrub(&format!("connecting to NATS at {shown} failed: {e}")),
                )
            })?;
        Self::open(client, options, nats.request_timeout).await
    }

    /// Opens the bucket on an existing connection: refuses a server older than
    /// [`MINIMUM_SERVER_VERSION`] or without JetStream, creates or updates the bucket and checks
    /// its settings took. `timeout` bounds every request and the arrival of every chunk.
    pub async fn open(
        client: Client,
        options: ArtifactBucketOptions,
        timeout: Duration,
    ) -> Result<Self, ArtifactError> {
        if options.bucket.is_empty()
            || !options
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ArtifactError::Unavailable(format!(
                "the artifact bucket name {:?} is not valid (letters, digits, `_` and `-` only)",
                options.bucket
            )));
        }
        let info = client.server_info();
        let server_version = check_server(&info.version, info.jetstream)?;
        let context = js::ContextBuilder::new().timeout(timeout).build(client);
        let created = context
            .create_or_update_stream(bucket_config(&options))
            .await
            .map_err(|e| unavailable(&format!("creating the bucket {}", options.bucket), e))?;
        check_bucket(&options, &created)?;
        let bucket = context
            .get_object_store(&options.bucket)
            .await
            .map_err(|e| unavailable(&format!("opening the bucket {}", options.bucket), e))?;
        tracing::info!(
            bucket = %options.bucket,
            replicas = options.replicas,
            server_version = %server_version,
            "JetStream artifact store connected"
        );
        Ok(Self {
            context,
            bucket,
            options,
            timeout,
        })
    }

    /// The bucket's name.
    pub fn bucket_name(&self) -> &str {
        &self.options.bucket
    }

    /// The object an artifact is kept as.
    pub fn object_name(invocation: &InvocationId, artifact: &ArtifactId) -> String {
        format!("{}/{}", invocation.as_str(), artifact.as_str())
    }
}

#[async_trait]
impl ArtifactStore for JetStreamArtifactStore {
    async fn put(
        &self,
        invocation: &InvocationId,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<ArtifactMeta, ArtifactError> {
        let id = ArtifactId::generate();
        let meta = ArtifactMeta {
            id: id.to_string(),
            name: sanitize_name(name),
            content_type: content_type.to_owned(),
            size_bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
            created_at: OffsetDateTime::now_utc(),
        };
        let object = ObjectMetadata {
            name: Self::object_name(invocation, &id),
            description: None,
            chunk_size: None,
            metadata: HashMap::from([
                (META_NAME.to_owned(), meta.name.clone()),
                (META_CONTENT_TYPE.to_owned(), meta.content_type.clone()),
                (META_SHA256.to_owned(), meta.sha256.clone()),
            ]),
            headers: None,
        };
        // Every chunk's ack and then the metadata's: the object exists only once all of it
        // is stored.
        self.bucket
            .put(object, &mut bytes.as_slice())
            .await
            .map_err(|e| unavailable(&format!("storing artifact {id}"), e))?;
        Ok(meta)
    }

    async fn get_ref(
        &self,
        invocation: &InvocationId,
        reference: &ArtifactRef,
    ) -> Result<Vec<u8>, ArtifactError> {
        let id = parse_id(reference)?;
        let corrupt = || ArtifactError::Corrupt(reference.artifact_id.clone());
        let mut object = self
            .bucket
            .get(Self::object_name(invocation, &id))
            .await
            .map_err(|e| match e.kind() {
                GetErrorKind::NotFound | GetErrorKind::InvalidName => ArtifactError::NotFound,
                _ => unavailable(&format!("reading artifact {id}"), e),
            })?;
        // Checked before reading: an object replaced behind the store's back is refused without
        // pulling its chunks (and a larger one is never buffered).
        let expected = object_digest(&reference.sha256).ok_or_else(corrupt)?;
        if object.info.size as u64 != reference.size_bytes
            || object.info.digest.as_deref() != Some(expected.as_str())
        {
            return Err(corrupt());
        }
        let size = usize::try_from(reference.size_bytes).map_err(|_| corrupt())?;
        let mut bytes = Vec::with_capacity(size);
        loop {
            let read = tokio::time::timeout(self.timeout, object.read_buf(&mut bytes))
                .await
                .map_err(|_| {
                    ArtifactError::Unavailable(format!(
                        "reading artifact {id}: no chunk arrived within {:?}",
                        self.timeout
                    ))
                })?
                .map_err(|e| match e.kind() {
                    // The object store's own check of the chunks against its digest.
                    std::io::ErrorKind::InvalidData => corrupt(),
                    _ => unavailable(&format!("reading artifact {id}"), e),
                })?;
            if read == 0 {
                break;
            }
            if bytes.len() > size {
                return Err(corrupt());
            }
        }
        verify(reference, &bytes)?;
        Ok(bytes)
    }

    /// A stream info request: it needs the bucket stream's leader, which is what serving needs.
    async fn ping(&self) -> Result<(), ArtifactError> {
        self.context
            .get_stream(self.options.stream_name())
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&format!("checking the bucket {}", self.options.bucket), e))
    }
}

fn unavailable(what: &str, error: impl fmt::Display) -> ArtifactError {
    ArtifactError::Unavailable(format!("{what} failed: {error}"))
}

/// The same minimum as the event store: one server serves both.
fn check_server(version: &str, jetstream: bool) -> Result<ServerVersion, ArtifactError> {
    let parsed = ServerVersion::parse(version).ok_or_else(|| {
        ArtifactError::Unavailable(format!(
            "nats-server reports version {version:?}, which is not major.minor.patch"
        ))
    })?;
    if parsed < MINIMUM_SERVER_VERSION {
        return Err(ArtifactError::Unavailable(format!(
            "nats-server {parsed} is too old: workspace needs nats-server \
             {MINIMUM_SERVER_VERSION} or newer"
        )));
    }
    if !jetstream {
        return Err(ArtifactError::Unavailable(format!(
            "nats-server {parsed} has JetStream disabled (start it with `-js`)"
        )));
    }
    Ok(parsed)
}

/// The object-store layout (`$O.<bucket>.C.>` chunks, `$O.<bucket>.M.>` metadata with rollup)
/// with the settings artifacts need: file storage, nothing ever aged out, direct get off.
fn bucket_config(options: &ArtifactBucketOptions) -> stream::Config {
    stream::Config {
        name: options.stream_name(),
        description: Some("workspace artifacts: bytes events reference (ADR 0008)".into()),
        subjects: bucket_subjects(&options.bucket),
        storage: StorageType::File,
        num_replicas: options.replicas,
        retention: RetentionPolicy::Limits,
        // A limit added by hand refuses new artifacts instead of dropping referenced ones.
        discard: DiscardPolicy::New,
        max_messages: -1,
        max_bytes: -1,
        max_age: Duration::ZERO,
        max_messages_per_subject: -1,
        allow_rollup: true,
        // Object info from the leader only: a replica may not yet hold an object whose event
        // another process has already read.
        allow_direct: false,
        ..stream::Config::default()
    }
}

fn bucket_subjects(bucket: &str) -> Vec<String> {
    vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")]
}

/// Checks the settings the guarantees rest on took: servers drop settings they do not know.
fn check_bucket(options: &ArtifactBucketOptions, info: &stream::Info) -> Result<(), ArtifactError> {
    let config = &info.config;
    let mut wrong = Vec::new();
    if config.storage != StorageType::File {
        wrong.push("file storage");
    }
    if config.num_replicas != options.replicas {
        wrong.push("the replica count");
    }
    if !config.max_age.is_zero() || config.max_messages_per_subject != -1 {
        wrong.push("no age or per-subject limit");
    }
    if config.discard != DiscardPolicy::New {
        wrong.push("discard new");
    }
    if !config.allow_rollup {
        wrong.push("allow_rollup (object metadata)");
    }
    if config.allow_direct {
        wrong.push("allow_direct off (reads from the leader)");
    }
    if config.sealed {
        wrong.push("not sealed");
    }
    let mut subjects = config.subjects.clone();
    subjects.sort();
    if subjects != bucket_subjects(&options.bucket) {
        wrong.push("the object-store subjects");
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(ArtifactError::Unavailable(format!(
            "the artifact bucket {} does not have {}",
            options.bucket,
            wrong.join(", ")
        )))
    }
}

/// The object store's digest notation for a recorded hex SHA-256 (`SHA-256=<base64url>`);
/// `None` when the recorded digest is not hex.
fn object_digest(sha256_hex: &str) -> Option<String> {
    let digest = hex::decode(sha256_hex).ok()?;
    Some(format!("SHA-256={}", URL_SAFE.encode(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_digest_is_written_as_the_object_store_writes_its_own() {
        // SHA-256 of "abc", as async-nats and the Go client encode it.
        assert_eq!(
            object_digest("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
                .as_deref(),
            Some("SHA-256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=")
        );
        assert_eq!(object_digest("not hex"), None);
    }
}
