//! Benchmark harness (not a timed test): p50/p99 of `git.status` and `git.diff` through the
//! real HTTP server and the bubblewrap sandbox, on a generated repository of 1,000 files of
//! which 50 are modified. One client, requests one after the other.
//!
//! Run: `cargo bench --bench git_tools` (`-- --quick` for 20 requests per tool instead of 200).
//! Needs bubblewrap and git, like the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use workspace::config::Config;
use workspace::runner::sandbox::SandboxMode;

#[global_allocator]
static ALLOCATOR: workspace::alloc::Allocator = workspace::alloc::Allocator;

const FILES: usize = 1000;
const MODIFIED: usize = 50;

async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    body: &Value,
) -> (StatusCode, Value) {
    sender.ready().await.expect("ready");
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "safe.directory=*",
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
        ])
        .args(args)
        .output()
        .expect("git runs (install git)");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

async fn measure(addr: SocketAddr, path: &str, args: Value, n: usize) -> Vec<Duration> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let body = json!({"args": args});
    // Warm-up: the first call also fills git's index stat cache.
    let (status, value) = post(&mut sender, path, &body).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, value) = post(&mut sender, path, &body).await;
        lat.push(t.elapsed());
        assert_eq!(status, StatusCode::OK, "{value}");
    }
    lat.sort();
    lat
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 20 } else { 200 };
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_workspace"));
    let config = Config::for_tests(dir.path(), exe, SandboxMode::Bubblewrap);
    let server = workspace::app::Server::bind(config).await.expect("bind");
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run_until_stopped(shutdown.clone()));

    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let (status, created) = post(
        &mut sender,
        "/v1/sessions",
        &json!({"principal": {"tenant_id": "bench", "actor_id": "bench", "roles": ["developer"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let session = created["session"]["id"].as_str().expect("id").to_owned();

    // The workspace on the host: 1,000 files in 20 directories, committed, 50 then modified.
    let ws = dir
        .path()
        .join("workspaces")
        .join("bench")
        .join(&session)
        .join("repo");
    for i in 0..FILES {
        let sub = ws.join(format!("dir{:02}", i % 20));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let lines: String = (0..40).map(|l| format!("file {i} line {l}\n")).collect();
        std::fs::write(sub.join(format!("file{i:04}.txt")), lines).expect("write");
    }
    git(&ws, &["init", "-q", "-b", "main"]);
    git(&ws, &["add", "."]);
    git(&ws, &["commit", "-qm", "seed"]);
    for i in (0..FILES).step_by(FILES / MODIFIED) {
        let path = ws.join(format!("dir{:02}/file{i:04}.txt", i % 20));
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("a change\n");
        std::fs::write(path, text).expect("write");
    }
    let owner = workspace::runner::sandbox::HostIdentity::default();
    let chown = std::process::Command::new("chown")
        .args(["-R", &format!("{}:{}", owner.uid, owner.gid)])
        .arg(&ws)
        .status()
        .expect("chown");
    assert!(chown.success());

    println!("{FILES} files, {MODIFIED} modified, {n} sequential requests per tool");
    println!("| tool | requests | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (tool, args) in [("git.status", json!({})), ("git.diff", json!({}))] {
        let path = format!("/v1/sessions/{session}/tools/{tool}/invoke");
        let lat = measure(addr, &path, args, n).await;
        println!(
            "| {tool} | {} | {:.2} | {:.2} |",
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99)
        );
    }
    shutdown.cancel();
    let _ = task.await;
}
