//! The service on its distributed backends together: events in JetStream, read models in
//! Valkey (redis-server stands in), artifacts in the JetStream object store. Every GET answers
//! the same after a restart that keeps Valkey (caught up from its checkpoint), and after one
//! whose Valkey was flushed (rebuilt from the stream).

use hyper::StatusCode;
use serde_json::{Value, json};
use workspace::config::Config;
use workspace::config::read_models::{StoreBackend, StoreConfig, ValkeyConfig};

use crate::support::{Backends, Mode, TestServer};
use crate::valkey::RedisServer;

/// Both read-model stores in the Valkey at `port`.
pub fn on_valkey(port: u16) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        let store = |prefix: &str| StoreConfig {
            backend: StoreBackend::Valkey,
            key_prefix: prefix.to_owned(),
            ttl: None,
        };
        config.read_models.invocations = store("it:invocation");
        config.read_models.sessions = store("it:session");
        config.read_models.valkey = Some(ValkeyConfig {
            host: "127.0.0.1".into(),
            port,
            db: 0,
            password: None,
        });
    }
}

/// What a client sees of the session and its invocations.
async fn snapshot(server: &TestServer, session: &str, invocations: &[String]) -> Vec<Value> {
    let mut seen = Vec::new();
    let (status, _, body) = server.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    seen.push(body);
    for id in invocations {
        let (status, _, body) = server.get(&format!("/v1/invocations/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.push(body);
    }
    let (status, _, body) = server
        .get(&format!("/v1/sessions/{session}/invocations"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    seen.push(body);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_and_valkey_every_get_survives_a_restart_and_a_flushed_valkey() {
    let backends = Backends::start(Mode::JetStream);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    let session = server.create_session(json!({})).await;
    let big = "line of text\n".repeat(2000); // over the inline limit: an artifact
    let (status, body) = server
        .invoke(
            &session,
            "fs.write_file",
            json!({"approved": true, "args": {"path": "big.txt", "content": big}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let write = body["invocation"]["id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .invoke(
            &session,
            "fs.read_file",
            json!({"args": {"path": "big.txt"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["invocation"]["output_ref"].is_string(), "{body}");
    let read = body["invocation"]["id"].as_str().unwrap().to_owned();
    let ids = [write, read];
    let before = snapshot(&server, &session, &ids).await;
    assert_eq!(before[1 + ids.len()]["total"], 2);
    server.stop().await;

    // The views are in Valkey, under the configured prefixes.
    let mut client = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("it:*")
        .query_async(&mut client)
        .await
        .expect("KEYS");
    assert!(
        keys.iter().any(|k| k.contains(&ids[1])) && keys.iter().any(|k| k.contains(&session)),
        "{keys:?}"
    );

    // A restart catches up from Valkey's checkpoint: every GET answers the same.
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    assert_eq!(snapshot(&server, &session, &ids).await, before);
    server.stop().await;

    // Valkey flushed: the next start rebuilds every view from the stream.
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut client)
        .await
        .expect("FLUSHALL");
    let server = TestServer::start_with(&backends, dir.path(), on_valkey(redis.port)).await;
    assert_eq!(snapshot(&server, &session, &ids).await, before);
    let (status, body) = server
        .invoke(&session, "fs.stat", json!({"args": {"path": "big.txt"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}
