//! The distributed roles as separate processes of the real binary, on one nats-server
//! (JetStream) and one redis-server (Valkey's protocol): two `api` replicas, two `executor`s and
//! one `projector`. The seeds' smoke flow across replicas, read-your-writes on the other
//! replica, `kill -9` of an executor in the middle of a backlog (every invocation ends exactly
//! once), `kill -9` of the projector (it resumes from its checkpoint: no gap, no duplicate), and
//! the persistence validation (every process restarted, every GET answers the same).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::nats::NatsServer;
use crate::support::{eventually, require_binary, runner_exe, send};
use crate::valkey::{RedisServer, free_port};

/// One process of the binary running a role.
struct Role {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Role {
    fn spawn(name: &str, role: &str, env: Vec<(String, String)>, logs: &Path) -> Role {
        let port = free_port();
        let mut env = env;
        env.push(("PORT".into(), port.to_string()));
        env.push((
            "WORKSPACE_DATA_DIR".into(),
            logs.join(format!("data-{name}")).display().to_string(),
        ));
        let mut role = Role {
            name: name.into(),
            args: vec![role.into()],
            env,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: logs.join(format!("{name}.log")),
            child: None,
        };
        role.start();
        role
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(runner_exe())
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the workspace binary starts");
        self.child = Some(child);
    }

    /// `kill -9`: no shutdown, no outcome recorded, nothing acknowledged.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for the process to finish what it had in flight.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    fn output(&self) -> String {
        format!(
            "----- {} -----\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = send(self.addr, Method::GET, path, None, &[]).await;
        (status, body)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let bytes = serde_json::to_vec(&body).expect("json");
        let (status, _, body) = send(self.addr, Method::POST, path, Some(bytes), &[]).await;
        (status, body)
    }

    /// Waits until the process answers `/readyz` with 200.
    async fn ready(&self) -> bool {
        eventually(Duration::from_secs(30), || async {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return false;
            }
            self.get("/readyz").await.0 == StatusCode::OK
        })
        .await
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything of one deployment: the servers, and the processes by role.
struct Deployment {
    _nats: NatsServer,
    _redis: RedisServer,
    apis: Vec<Role>,
    executors: Vec<Role>,
    projector: Role,
    _dir: tempfile::TempDir,
}

impl Deployment {
    async fn start(apis: usize, executors: usize) -> Deployment {
        require_binary("bwrap", "install bubblewrap (apt-get install bubblewrap)");
        require_binary("git", "install git (apt-get install git)");
        let nats = NatsServer::start();
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        // One node: every process shares the workspaces (local sandboxes); each has its own
        // data dir (runner sockets), and artifacts are in the JetStream object store.
        let env: Vec<(String, String)> = [
            ("NATS_URL", nats.url().to_owned()),
            ("VALKEY_ADDR", format!("127.0.0.1:{}", redis.port)),
            ("INVOCATION_STORE_BACKEND", "valkey".into()),
            ("SESSION_STORE_BACKEND", "valkey".into()),
            (
                "WORKSPACE_ROOT",
                dir.path().join("workspaces").display().to_string(),
            ),
            ("WORKSPACE_RUNNER_EXE", runner_exe().display().to_string()),
            ("WORKSPACE_EXECUTOR_ACK_WAIT_SECONDS", "2".into()),
            ("WORKSPACE_EXECUTOR_LIVENESS_GRACE_SECONDS", "2".into()),
            ("LOG_LEVEL", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let projector = Role::spawn("projector", "projector", env.clone(), dir.path());
        let executors = (0..executors)
            .map(|i| {
                Role::spawn(
                    &format!("executor-{i}"),
                    "executor",
                    env.clone(),
                    dir.path(),
                )
            })
            .collect();
        let apis = (0..apis)
            .map(|i| Role::spawn(&format!("api-{i}"), "api", env.clone(), dir.path()))
            .collect();
        let deployment = Deployment {
            _nats: nats,
            _redis: redis,
            apis,
            executors,
            projector,
            _dir: dir,
        };
        for role in deployment.roles() {
            assert!(
                role.ready().await,
                "{} never ready\n{}",
                role.name,
                deployment.logs()
            );
        }
        deployment
    }

    fn roles(&self) -> impl Iterator<Item = &Role> {
        self.apis
            .iter()
            .chain(&self.executors)
            .chain(std::iter::once(&self.projector))
    }

    fn logs(&self) -> String {
        self.roles()
            .map(Role::output)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn session_body() -> Value {
    json!({
        "principal": {"tenant_id": "acme", "actor_id": "alice", "roles": ["developer"]},
        "allowed_paths": ["."],
    })
}

/// The terminal statuses.
fn is_terminal(status: &Value) -> bool {
    matches!(status.as_str(), Some("succeeded" | "failed" | "denied"))
}

/// The event types of an invocation, read through `api`.
async fn event_types(api: &Role, id: &str) -> Vec<String> {
    let (status, body) = api.get(&format!("/v1/invocations/{id}/events")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// What a client sees of a session and its invocations, through `api`.
async fn snapshot(api: &Role, session: &str, invocations: &[String]) -> Vec<Value> {
    let mut seen = vec![api.get(&format!("/v1/sessions/{session}")).await.1];
    for id in invocations {
        seen.push(api.get(&format!("/v1/invocations/{id}")).await.1);
    }
    seen.push(
        api.get(&format!("/v1/sessions/{session}/invocations?limit=500"))
            .await
            .1,
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_two_executors_and_a_projector_lose_nothing_and_run_nothing_twice() {
    let mut d = Deployment::start(2, 2).await;
    let logs = |d: &Deployment| d.logs();

    // The smoke flow across replicas: created on one, read on the other at once
    // (read-your-writes: the create answered after the projector wrote it to Valkey).
    let (status, body) = d.apis[0].post("/v1/sessions", session_body()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}\n{}", logs(&d));
    let session = body["session"]["id"].as_str().expect("id").to_owned();
    let (status, body) = d.apis[1].get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["session"]["status"], "ready", "{body}");
    let tools = format!("/v1/sessions/{session}/tools");
    let write = json!({"approved": true, "args": {"path": "notes/a.txt", "content": "hola"}});
    let (status, body) = d.apis[1]
        .post(&format!("{tools}/fs.write_file/invoke"), write)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", logs(&d));
    assert_eq!(body["invocation"]["status"], "succeeded", "{body}");
    let written = body["invocation"]["id"].as_str().expect("id").to_owned();
    let (status, _) = d.apis[0].get(&format!("/v1/invocations/{written}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the other replica reads the write at once"
    );
    let read = json!({"args": {"path": "notes/a.txt"}});
    let (status, body) = d.apis[0]
        .post(&format!("{tools}/fs.read_file/invoke"), read)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["invocation"]["output"]["content"], "hola", "{body}");

    // A backlog across both replicas, and kill -9 of an executor in the middle of it.
    let mut ids = vec![written];
    for i in 0..60 {
        let api = &d.apis[i % 2];
        let body = json!({"async": true, "approved": true,
            "args": {"path": format!("backlog/{i}.txt"), "content": format!("{i}")}});
        let (status, body) = api
            .post(&format!("{tools}/fs.write_file/invoke"), body)
            .await;
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::OK,
            "{status} {body}"
        );
        ids.push(body["invocation"]["id"].as_str().expect("id").to_owned());
        if i == 20 {
            d.executors[0].kill();
        }
    }
    let all_done = eventually(Duration::from_secs(60), || {
        let (api, ids) = (&d.apis[0], &ids);
        async move {
            for id in ids {
                if !is_terminal(
                    &api.get(&format!("/v1/invocations/{id}")).await.1["invocation"]["status"],
                ) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(all_done, "the backlog did not finish\n{}", logs(&d));
    let mut executors = std::collections::BTreeSet::new();
    for id in &ids {
        let (_, body) = d.apis[1].get(&format!("/v1/invocations/{id}/events")).await;
        for event in body["events"].as_array().expect("events") {
            if event["event_type"] == "invocation.started" {
                executors.insert(event["payload"]["executor_id"].to_string());
            }
        }
        let (_, body) = d.apis[1].get(&format!("/v1/invocations/{id}")).await;
        let invocation = &body["invocation"];
        // Exactly one outcome: succeeded, or interrupted when the killed executor had it.
        let ok =
            invocation["status"] == "succeeded" || invocation["error"]["code"] == "interrupted";
        assert!(ok, "{body}");
        let types = event_types(&d.apis[1], id).await;
        let completed = types
            .iter()
            .filter(|t| *t == "invocation.completed")
            .count();
        let started = types.iter().filter(|t| *t == "invocation.started").count();
        assert_eq!((completed, started <= 1), (1, true), "{id}: {types:?}");
    }
    assert!(
        executors.len() >= 2,
        "both executors took work: {executors:?}"
    );

    // kill -9 of the projector: an API cannot read its own writes, so it answers 503
    // `unavailable` (the invocation was recorded and runs); a retry with the same correlation
    // id after the projector is back gets that invocation, run once. The restarted projector
    // resumes from its checkpoint: no gap, no duplicate.
    d.projector.kill();
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..3 {
        let addr = d.apis[i % 2].addr;
        let path = format!("{tools}/fs.write_file/invoke");
        pending.spawn(async move {
            let body = json!({"async": true, "approved": true, "correlation_id": format!("later-{i}"),
                "args": {"path": format!("later/{i}.txt"), "content": "x"}});
            let bytes = serde_json::to_vec(&body).expect("json");
            send(addr, Method::POST, &path, Some(bytes), &[]).await
        });
    }
    while let Some(answer) = pending.join_next().await {
        let (status, _, body) = answer.expect("request");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }
    d.projector.start();
    assert!(d.projector.ready().await, "{}", logs(&d));
    let mut later = Vec::new();
    for i in 0..3 {
        let body = json!({"async": true, "approved": true, "correlation_id": format!("later-{i}"),
            "args": {"path": format!("later/{i}.txt"), "content": "x"}});
        let (status, body) = d.apis[(i + 1) % 2]
            .post(&format!("{tools}/fs.write_file/invoke"), body)
            .await;
        assert!(status.is_success(), "{status} {body}\n{}", logs(&d));
        later.push(body["invocation"]["id"].as_str().expect("id").to_owned());
    }
    let caught_up = eventually(Duration::from_secs(30), || {
        let (api, later) = (&d.apis[1], &later);
        async move {
            for id in later {
                let (status, body) = api.get(&format!("/v1/invocations/{id}")).await;
                if status != StatusCode::OK || body["invocation"]["status"] != "succeeded" {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(caught_up, "the projector did not resume\n{}", logs(&d));
    for id in &later {
        let types = event_types(&d.apis[0], id).await;
        assert_eq!(
            types,
            [
                "invocation.queued",
                "invocation.started",
                "invocation.completed"
            ],
            "{id}"
        );
    }
    ids.extend(later);
    let (_, list) = d.apis[0]
        .get(&format!("/v1/sessions/{session}/invocations?limit=500"))
        .await;
    // Every invocation once (2 smoke + 60 + 3): no gap, no duplicate.
    assert_eq!(list["total"], ids.len() + 1, "{list}");

    // The seeds' persistence validation: restart every process; every GET answers the same.
    let before = snapshot(&d.apis[0], &session, &ids).await;
    for role in d
        .apis
        .iter_mut()
        .chain(d.executors.iter_mut())
        .chain(std::iter::once(&mut d.projector))
    {
        role.stop();
    }
    for role in d
        .apis
        .iter_mut()
        .chain(d.executors.iter_mut())
        .chain(std::iter::once(&mut d.projector))
    {
        role.start();
    }
    for role in d.roles() {
        assert!(
            role.ready().await,
            "{} not ready after restart\n{}",
            role.name,
            logs(&d)
        );
    }
    for api in &d.apis {
        let after = snapshot(api, &session, &ids).await;
        assert_eq!(before, after, "{}", api.name);
    }
}
