//! The `ArtifactStore` contract, one async function per behaviour, run against both stores: a
//! local directory and a JetStream object-store bucket (on a real pinned nats-server per test).
//! Behaviours only the JetStream store has (a server going away, the bucket's settings, chunks)
//! follow the contract.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream as js;
use async_nats::jetstream::stream::StorageType;
use sha2::{Digest, Sha256};
use workspace::artifacts::{
    ArtifactBucketOptions, ArtifactError, ArtifactStore, DEFAULT_BUCKET, JetStreamArtifactStore,
    LocalArtifactStore,
};
use workspace::eventstore::jetstream::JetStreamOptions;
use workspace::ids::{ArtifactId, InvocationId};
use workspace_events::ArtifactRef;

use crate::nats::{DEBIAN_BINARY, NatsServer};

/// Bound on anything that must fail fast (a request to a server that went away).
const DEADLINE: Duration = Duration::from_secs(15);

/// A store and what backs it (held for its `Drop`), with a way behind the store's back.
struct Harness {
    store: Arc<dyn ArtifactStore>,
    backing: Backing,
}

enum Backing {
    Dir(tempfile::TempDir),
    Server(NatsServer),
}

impl Harness {
    async fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::open(dir.path(), false).unwrap();
        Harness {
            store: Arc::new(store),
            backing: Backing::Dir(dir),
        }
    }

    async fn jetstream() -> Self {
        let server = NatsServer::start();
        let store = connect(&server).await;
        Harness {
            store: Arc::new(store),
            backing: Backing::Server(server),
        }
    }

    /// Replaces an artifact's bytes without going through the store: the file rewritten, or
    /// the object put again under the same name (new chunks and a new object-store digest
    /// that matches them).
    async fn overwrite(&self, invocation: &InvocationId, artifact_id: &str, bytes: &[u8]) {
        match &self.backing {
            Backing::Dir(dir) => std::fs::write(
                dir.path().join(invocation.as_str()).join(artifact_id),
                bytes,
            )
            .unwrap(),
            Backing::Server(server) => {
                let bucket = raw_bucket(server).await;
                let id = ArtifactId::parse(artifact_id).unwrap();
                bucket
                    .put(
                        JetStreamArtifactStore::object_name(invocation, &id).as_str(),
                        &mut &bytes[..],
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

async fn connect(server: &NatsServer) -> JetStreamArtifactStore {
    JetStreamArtifactStore::connect(
        &JetStreamOptions::new(server.url()),
        ArtifactBucketOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("connect: {e}\n{}", server.log()))
}

/// The bucket as any other NATS client sees it.
async fn raw_bucket(server: &NatsServer) -> js::object_store::ObjectStore {
    let client = async_nats::connect(server.url()).await.unwrap();
    js::new(client)
        .get_object_store(DEFAULT_BUCKET)
        .await
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `len` bytes that differ from chunk to chunk (xorshift), so a misplaced chunk shows.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn stored_bytes_come_back_exactly_with_the_metadata_recorded_for_them(h: Harness) {
    let inv = InvocationId::generate();
    let bytes = br#"{"ok":true}"#.to_vec();
    let meta = h
        .store
        .put(&inv, "reports/out.json", "application/json", bytes.clone())
        .await
        .unwrap();
    assert!(ArtifactId::parse(&meta.id).is_ok(), "{}", meta.id);
    assert_eq!(meta.name, "out.json");
    assert_eq!(meta.content_type, "application/json");
    assert_eq!(meta.size_bytes, bytes.len() as u64);
    assert_eq!(meta.sha256, sha256_hex(&bytes));
    assert_eq!(h.store.get(&inv, &meta).await.unwrap(), bytes);
    assert_eq!(
        h.store.get_ref(&inv, &meta.reference()).await.unwrap(),
        bytes
    );
}

async fn an_empty_artifact_round_trips(h: Harness) {
    let inv = InvocationId::generate();
    let meta = h
        .store
        .put(&inv, "empty.txt", "text/plain", Vec::new())
        .await
        .unwrap();
    assert_eq!(meta.size_bytes, 0);
    assert_eq!(meta.sha256, sha256_hex(b""));
    assert_eq!(h.store.get(&inv, &meta).await.unwrap(), Vec::<u8>::new());
}

async fn a_multi_mebibyte_artifact_round_trips_byte_for_byte(h: Harness) {
    let inv = InvocationId::generate();
    // Not a multiple of the object store's 128 KiB chunk.
    let bytes = noise(5 * 1024 * 1024 + 7);
    let meta = h
        .store
        .put(&inv, "big.bin", "application/octet-stream", bytes.clone())
        .await
        .unwrap();
    assert_eq!(meta.size_bytes, bytes.len() as u64);
    let read = h.store.get(&inv, &meta).await.unwrap();
    assert!(read == bytes, "the bytes read back differ");
}

async fn an_unknown_artifact_is_not_found(h: Harness) {
    let inv = InvocationId::generate();
    let stored = h
        .store
        .put(&inv, "a.txt", "text/plain", b"abc".to_vec())
        .await
        .unwrap();
    let unknown = ArtifactRef {
        artifact_id: ArtifactId::generate().to_string(),
        ..stored.reference()
    };
    let not_an_id = ArtifactRef {
        artifact_id: "../../etc/passwd".to_owned(),
        ..stored.reference()
    };
    for (what, invocation, reference) in [
        ("an unknown id", &inv, &unknown),
        ("something that is not an id", &inv, &not_an_id),
        (
            "a stored id under an unknown invocation",
            &InvocationId::generate(),
            &stored.reference(),
        ),
    ] {
        let error = h.store.get_ref(invocation, reference).await.unwrap_err();
        assert!(
            matches!(error, ArtifactError::NotFound),
            "{what}: {error:?}"
        );
    }
}

async fn bytes_changed_behind_the_stores_back_are_reported_corrupt_and_never_served(h: Harness) {
    let inv = InvocationId::generate();
    for replacement in [&b"abd"[..], b"abcd", b""] {
        let meta = h
            .store
            .put(&inv, "a.txt", "text/plain", b"abc".to_vec())
            .await
            .unwrap();
        h.overwrite(&inv, &meta.id, replacement).await;
        let error = h.store.get(&inv, &meta).await.unwrap_err();
        assert!(
            matches!(&error, ArtifactError::Corrupt(id) if *id == meta.id),
            "{replacement:?}: {error:?}"
        );
    }
}

async fn a_reference_recording_other_bytes_is_refused_as_corrupt(h: Harness) {
    let inv = InvocationId::generate();
    let meta = h
        .store
        .put(&inv, "a.txt", "text/plain", b"abc".to_vec())
        .await
        .unwrap();
    let other_digest = ArtifactRef {
        sha256: sha256_hex(b"abd"),
        ..meta.reference()
    };
    let other_size = ArtifactRef {
        size_bytes: 4,
        ..meta.reference()
    };
    let not_hex = ArtifactRef {
        sha256: "zz".to_owned(),
        ..meta.reference()
    };
    for reference in [other_digest, other_size, not_hex] {
        let error = h.store.get_ref(&inv, &reference).await.unwrap_err();
        assert!(
            matches!(error, ArtifactError::Corrupt(_)),
            "{reference:?}: {error:?}"
        );
    }
}

async fn artifacts_of_two_invocations_never_collide(h: Harness) {
    let (first, second) = (InvocationId::generate(), InvocationId::generate());
    let a = h
        .store
        .put(&first, "out.txt", "text/plain", b"first".to_vec())
        .await
        .unwrap();
    let b = h
        .store
        .put(&second, "out.txt", "text/plain", b"second".to_vec())
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(h.store.get(&first, &a).await.unwrap(), b"first");
    assert_eq!(h.store.get(&second, &b).await.unwrap(), b"second");
    for (invocation, meta) in [(&first, &b), (&second, &a)] {
        let error = h.store.get(invocation, meta).await.unwrap_err();
        assert!(matches!(error, ArtifactError::NotFound), "{error:?}");
    }
}

async fn artifacts_stored_concurrently_each_come_back_as_stored(h: Harness) {
    let inv = InvocationId::generate();
    let puts = (0..16u8).map(|i| {
        let store = h.store.clone();
        let inv = inv.clone();
        async move {
            let bytes = vec![i; 1000 + usize::from(i) * 4096];
            let meta = store
                .put(
                    &inv,
                    &format!("part-{i}"),
                    "application/octet-stream",
                    bytes.clone(),
                )
                .await
                .unwrap();
            (meta, bytes)
        }
    });
    let stored = futures::future::join_all(puts).await;
    for (meta, bytes) in stored {
        assert_eq!(
            h.store.get(&inv, &meta).await.unwrap(),
            bytes,
            "{}",
            meta.name
        );
    }
}

async fn a_healthy_store_answers_ping(h: Harness) {
    h.store.ping().await.unwrap();
}

/// Runs each contract function against both stores, as `<function>` in `local` and
/// `jetstream`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::local().await).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::jetstream().await).await;
                }
            )*
        }
    };
}

contract!(
    stored_bytes_come_back_exactly_with_the_metadata_recorded_for_them,
    an_empty_artifact_round_trips,
    a_multi_mebibyte_artifact_round_trips_byte_for_byte,
    an_unknown_artifact_is_not_found,
    bytes_changed_behind_the_stores_back_are_reported_corrupt_and_never_served,
    a_reference_recording_other_bytes_is_refused_as_corrupt,
    artifacts_of_two_invocations_never_collide,
    artifacts_stored_concurrently_each_come_back_as_stored,
    a_healthy_store_answers_ping,
);

// JetStream only.

#[tokio::test]
async fn an_unreachable_nats_server_is_unavailable_at_connect() {
    // A port nothing listens on any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = JetStreamOptions::new(format!("nats://127.0.0.1:{port}"));
    options.request_timeout = Duration::from_secs(1);
    let error = tokio::time::timeout(
        DEADLINE,
        JetStreamArtifactStore::connect(&options, ArtifactBucketOptions::default()),
    )
    .await
    .expect("connect did not give up within the deadline")
    .unwrap_err();
    assert!(matches!(error, ArtifactError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains(&port.to_string()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_server_stopped_is_unavailable_rather_than_missing() {
    let server = NatsServer::start();
    let mut options = JetStreamOptions::new(server.url());
    options.request_timeout = Duration::from_secs(1);
    let store = JetStreamArtifactStore::connect(&options, ArtifactBucketOptions::default())
        .await
        .unwrap();
    let inv = InvocationId::generate();
    let meta = store
        .put(&inv, "a.txt", "text/plain", b"abc".to_vec())
        .await
        .unwrap();
    drop(server);

    let within = |what: &'static str| {
        move |result: Result<Result<(), ArtifactError>, _>| match result {
            Ok(Err(ArtifactError::Unavailable(_))) => {}
            Ok(other) => panic!("{what}: {other:?}"),
            Err(_) => panic!("{what} did not give up within {DEADLINE:?}"),
        }
    };
    within("ping")(tokio::time::timeout(DEADLINE, store.ping()).await);
    within("get")(
        tokio::time::timeout(DEADLINE, async { store.get(&inv, &meta).await.map(|_| ()) }).await,
    );
    within("put")(
        tokio::time::timeout(DEADLINE, async {
            store
                .put(&inv, "b.txt", "text/plain", b"def".to_vec())
                .await
                .map(|_| ())
        })
        .await,
    );
}

#[tokio::test]
async fn the_bucket_is_file_backed_unlimited_in_age_and_read_from_its_leader() {
    let server = NatsServer::start();
    let store = connect(&server).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut stream = js::new(client)
        .get_stream(format!("OBJ_{DEFAULT_BUCKET}"))
        .await
        .unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(store.bucket_name(), DEFAULT_BUCKET);
    assert_eq!(config.storage, StorageType::File);
    assert_eq!(config.num_replicas, 1);
    assert!(config.max_age.is_zero());
    assert!(config.allow_rollup);
    assert!(!config.allow_direct);
}

#[tokio::test]
async fn an_object_is_named_by_invocation_and_artifact_and_carries_name_type_and_digest() {
    let server = NatsServer::start();
    let store = connect(&server).await;
    let inv = InvocationId::generate();
    let meta = store
        .put(&inv, "../notes.md", "text/markdown", b"# notes".to_vec())
        .await
        .unwrap();
    let info = raw_bucket(&server)
        .await
        .info(format!("{}/{}", inv.as_str(), meta.id))
        .await
        .unwrap();
    assert_eq!(info.size, 7);
    assert_eq!(info.metadata["name"], "notes.md");
    assert_eq!(info.metadata["content-type"], "text/markdown");
    assert_eq!(info.metadata["sha256"], meta.sha256);
    assert!(info.digest.unwrap().starts_with("SHA-256="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_reuses_the_bucket_and_reads_what_the_first_stored() {
    let server = NatsServer::start();
    let first = connect(&server).await;
    let inv = InvocationId::generate();
    let meta = first
        .put(&inv, "a.txt", "text/plain", b"shared".to_vec())
        .await
        .unwrap();
    let second = connect(&server).await;
    assert_eq!(second.get(&inv, &meta).await.unwrap(), b"shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_added_behind_the_stores_back_is_reported_corrupt() {
    let server = NatsServer::start();
    let store = connect(&server).await;
    let inv = InvocationId::generate();
    let meta = store
        .put(&inv, "a.bin", "application/octet-stream", noise(300_000))
        .await
        .unwrap();
    // The object's size and digest are unchanged; only its chunk subject has one more message.
    let bucket = raw_bucket(&server).await;
    let info = bucket
        .info(format!("{}/{}", inv.as_str(), meta.id))
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    js::new(client)
        .publish(
            format!("$O.{DEFAULT_BUCKET}.C.{}", info.nuid),
            b"extra".to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let error = store.get(&inv, &meta).await.unwrap_err();
    assert!(matches!(error, ArtifactError::Corrupt(_)), "{error:?}");
}

#[tokio::test]
async fn an_old_nats_server_is_refused_naming_the_minimum() {
    let server = NatsServer::start_binary(std::path::Path::new(DEBIAN_BINARY));
    let error = JetStreamArtifactStore::connect(
        &JetStreamOptions::new(server.url()),
        ArtifactBucketOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ArtifactError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains("2.9.10"), "{error}");
}

#[tokio::test]
async fn a_bucket_with_more_replicas_than_servers_is_refused_at_connect() {
    let server = NatsServer::start();
    let error = JetStreamArtifactStore::connect(
        &JetStreamOptions::new(server.url()),
        ArtifactBucketOptions {
            replicas: 3,
            ..ArtifactBucketOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ArtifactError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains(DEFAULT_BUCKET), "{error}");
}
