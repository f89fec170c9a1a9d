//! `deploy/stores/nats.yaml` is a configuration the service runs on: the pinned nats-server
//! started with it (its store directory and passwords replaced for the test), the three roles
//! of the real binary as the `workspace` user it defines, and a session that writes a file and
//! reads it back. Its `subscriber` user can read the stream but not publish events.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::nats::NatsServer;
use crate::support::{eventually, require_binary, runner_exe, send};
use crate::valkey::{RedisServer, free_port};

/// The reference's `workspace.conf`, with `store_dir` left to the harness (`-sd`) and the
/// passwords given.
fn reference_conf(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/stores/nats.yaml"),
    )
    .expect("deploy/stores/nats.yaml");
    let doc = Value::deserialize(serde_norway::Deserializer::from_str(&text)).expect("YAML");
    let conf = doc["data"]["workspace.conf"]
        .as_str()
        .expect("workspace.conf");
    assert!(
        conf.contains("store_dir:"),
        "the reference sets a store directory"
    );
    let conf: String = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with("store_dir:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("$WORKSPACE_NATS_PASSWORD", "\"workspace-pw\"")
        .replace("$SUBSCRIBER_NATS_PASSWORD", "\"subscriber-pw\"");
    let path = dir.join("workspace.conf");
    std::fs::write(&path, conf).expect("write conf");
    path
}

struct Process {
    name: String,
    addr: SocketAddr,
    log: std::path::PathBuf,
    child: Child,
}

impl Process {
    fn spawn(role: &str, env: &[(String, String)], dir: &Path) -> Process {
        let port = free_port();
        let log = dir.join(format!("{role}.log"));
        let child = Command::new(runner_exe())
            .arg(role)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PORT", port.to_string())
            .env("WORKSPACE_DATA_DIR", dir.join(format!("data-{role}")))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .expect("log"),
            )
            .spawn()
            .expect("the workspace binary starts");
        Process {
            name: role.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            child,
        }
    }

    fn output(&self) -> String {
        format!(
            "----- {} -----\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roles_run_on_the_nats_reference_configuration_as_its_workspace_user() {
    require_binary("bwrap", "install bubblewrap (apt-get install bubblewrap)");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = reference_conf(dir.path());
    let conf_arg = conf.display().to_string();
    let nats = NatsServer::start_with(&["-c", &conf_arg]);
    let redis = RedisServer::start();
    let env: Vec<(String, String)> = [
        ("NATS_URL", nats.url().to_owned()),
        ("NATS_USER", "workspace".into()),
        ("NATS_PASSWORD", "workspace-pw".into()),
        ("VALKEY_ADDR", format!("127.0.0.1:{}", redis.port)),
        ("INVOCATION_STORE_BACKEND", "valkey".into()),
        ("SESSION_STORE_BACKEND", "valkey".into()),
        (
            "WORKSPACE_ROOT",
            dir.path().join("workspaces").display().to_string(),
        ),
        ("WORKSPACE_RUNNER_EXE", runner_exe().display().to_string()),
        ("LOG_LEVEL", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let roles = [
        Process::spawn("projector", &env, dir.path()),
        Process::spawn("executor", &env, dir.path()),
        Process::spawn("api", &env, dir.path()),
    ];
    let logs = || {
        roles
            .iter()
            .map(Process::output)
            .collect::<Vec<_>>()
            .join("\n")
            + &nats.log()
    };
    for role in &roles {
        let ready = eventually(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(role.addr).await.is_ok()
                && send(role.addr, Method::GET, "/readyz", None, &[]).await.0 == StatusCode::OK
        })
        .await;
        assert!(ready, "{} never became ready:\n{}", role.name, logs());
    }
    let api = roles[2].addr;
    let post = |path: String, body: Value| async move {
        let (status, _, body) = send(
            api,
            Method::POST,
            &path,
            Some(serde_json::to_vec(&body).expect("json")),
            &[],
        )
        .await;
        (status, body)
    };
    let (status, body) = post(
        "/v1/sessions".into(),
        json!({"principal": {"tenant_id": "t", "actor_id": "a", "roles": ["developer"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}\n{}", logs());
    let session = body["session"]["id"]
        .as_str()
        .expect("session id")
        .to_owned();
    let (status, body) = post(
        format!("/v1/sessions/{session}/tools/fs.write_file/invoke"),
        json!({"approved": true, "args": {"path": "a.txt", "content": "hola"}}),
    )
    .await;
    assert_eq!(
        (status, body["invocation"]["status"].as_str()),
        (StatusCode::OK, Some("succeeded")),
        "{body}\n{}",
        logs()
    );
    let (status, body) = post(
        format!("/v1/sessions/{session}/tools/fs.read_file/invoke"),
        json!({"args": {"path": "a.txt"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", logs());
    assert!(body.to_string().contains("hola"), "{body}");

    // The subscriber user reads the stream and cannot append to it.
    let client = async_nats::ConnectOptions::with_user_and_password(
        "subscriber".into(),
        "subscriber-pw".into(),
    )
    .connect(nats.url())
    .await
    .expect("the subscriber connects");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream("WORKSPACE_EVENTS")
        .await
        .expect("the subscriber sees the stream");
    assert!(stream.info().await.expect("stream info").state.messages > 0);
    let published = tokio::time::timeout(Duration::from_secs(5), async {
        match js.publish("es.session.forged.x", "{}".into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        !matches!(published, Ok(true)),
        "the subscriber appended an event"
    );
}
