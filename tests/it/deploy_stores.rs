//! `deploy/stores/` holds configurations the service runs on: the pinned nats-server started
//! with `nats.yaml`'s (its store directory and passwords replaced for the test) and
//! redis-server (standing in for Valkey) with `valkey.yaml`'s and a password; the three roles
//! of the real binary as the `workspace` user, and a session that writes a file and reads it
//! back. Valkey restarted on its append-only file still holds every view (no rebuild needed);
//! the NATS `subscriber` user can read the stream but not publish events.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::nats::NatsServer;
use crate::support::{eventually, require_binary, runner_exe, send};
use crate::valkey::free_port;

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

/// redis-server with the reference `valkey.conf`, a password and its data in `dir`.
struct Valkey {
    port: u16,
    conf: std::path::PathBuf,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

const VALKEY_PASSWORD: &str = "valkey-pw";

impl Valkey {
    fn start(dir: &Path) -> Valkey {
        require_binary("redis-server", "apt-get install redis-server");
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/stores/valkey.yaml"),
        )
        .expect("deploy/stores/valkey.yaml");
        let doc = Value::deserialize(serde_norway::Deserializer::from_str(&text)).expect("YAML");
        let conf = dir.join("valkey.conf");
        std::fs::write(
            &conf,
            doc["data"]["valkey.conf"].as_str().expect("valkey.conf"),
        )
        .expect("write");
        let data = dir.join("valkey-data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let mut valkey = Valkey {
            port: free_port(),
            conf,
            dir: data,
            child: None,
        };
        valkey.spawn();
        valkey
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .arg(&self.conf)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--requirepass", VALKEY_PASSWORD])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("valkey.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    /// SIGTERM (the append-only file is flushed), then the same server again on the same files.
    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        self.spawn();
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let url = format!("redis://:{VALKEY_PASSWORD}@127.0.0.1:{}/0", self.port);
        let client = redis::Client::open(url).expect("url");
        let mut last = String::new();
        for _ in 0..100 {
            match client.get_multiplexed_async_connection().await {
                Ok(mut c) => {
                    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                    if pong.is_ok() {
                        return c;
                    }
                    last = format!("{pong:?}");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "redis-server with the reference configuration did not answer ({last}):\n{}",
            std::fs::read_to_string(self.dir.join("valkey.log")).unwrap_or_default()
        );
    }

    async fn config(&self, name: &str) -> String {
        let mut c = self.connection().await;
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut c)
            .await
            .expect("CONFIG GET");
        pair.get(1).cloned().unwrap_or_default()
    }
}

impl Drop for Valkey {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
async fn the_roles_run_on_the_nats_and_valkey_reference_configurations() {
    require_binary("bwrap", "install bubblewrap (apt-get install bubblewrap)");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = reference_conf(dir.path());
    let conf_arg = conf.display().to_string();
    let nats = NatsServer::start_with(&["-c", &conf_arg]);
    let mut valkey = Valkey::start(dir.path());
    assert_eq!(valkey.config("maxmemory-policy").await, "noeviction");
    assert_eq!(valkey.config("appendonly").await, "yes");
    let env: Vec<(String, String)> = [
        ("NATS_URL", nats.url().to_owned()),
        ("NATS_USER", "workspace".into()),
        ("NATS_PASSWORD", "workspace-pw".into()),
        ("VALKEY_ADDR", format!("127.0.0.1:{}", valkey.port)),
        ("VALKEY_PASSWORD", VALKEY_PASSWORD.into()),
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
    let get = |path: String| async move {
        let (status, _, body) = send(api, Method::GET, &path, None, &[]).await;
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
    let read = body["invocation"]["id"]
        .as_str()
        .expect("invocation id")
        .to_owned();

    // Valkey restarted: its append-only file brings every view back. The projector (the one
    // role that could rebuild them from the stream) is stopped first, so what the API then
    // answers can only come from Valkey's own files.
    let (_, before) = get(format!("/v1/invocations/{read}")).await;
    let projector = roles[0].child.id().to_string();
    let stopped = Command::new("kill").args(["-KILL", &projector]).status();
    assert!(
        stopped.is_ok_and(|s| s.success()),
        "the projector is stopped"
    );
    valkey.restart();
    let _ = valkey.connection().await;
    // The API's connection comes back by itself within a moment; the view is then the same.
    let path = format!("/v1/invocations/{read}");
    let same = eventually(Duration::from_secs(15), || async {
        get(path.clone()).await == (StatusCode::OK, before.clone())
    })
    .await;
    assert!(
        same,
        "the view did not survive the restart: {:?}\n{}",
        get(path.clone()).await,
        logs()
    );

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
