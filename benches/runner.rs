//! Benchmark harness (not a timed test): the session runner alone, through a real bubblewrap
//! sandbox over its unix socket, without HTTP or the event log. It separates what a tool call
//! costs in the runner from what the service adds around it: a 1 KiB `ReadFile` round trip,
//! and process runs (`/bin/true`, `git --version`) spawned by the runner inside the sandbox.
//!
//! Run: `cargo bench --bench runner` (add `-- --quick` for a short run). Needs bubblewrap.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use workspace::ids::SessionId;
use workspace::runner::protocol::{Reply, Request};
use workspace::runner::sandbox::{LocalSandboxConfig, LocalSandboxProvider, SandboxMode};
use workspace::runner::{RunnerProvider, SandboxSpec, SessionRunner};

// The same allocator as the `workspace` binary.
#[global_allocator]
static ALLOCATOR: workspace::alloc::Allocator = workspace::alloc::Allocator;

const CALL: Duration = Duration::from_secs(20);

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "| {name} | {} | {:.1} | {:.1} |",
        samples.len(),
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    );
}

async fn measure(
    runner: &dyn SessionRunner,
    n: usize,
    request: impl Fn() -> Request,
) -> Vec<Duration> {
    for _ in 0..n.div_ceil(10) {
        runner.call(request(), CALL).await.expect("warm-up");
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let reply = runner.call(request(), CALL).await.expect("runner answers");
        samples.push(started.elapsed());
        match reply {
            Reply::File { .. } | Reply::Exited { exit_code: 0, .. } => {}
            other => panic!("unexpected reply: {other:?}"),
        }
    }
    samples
}

fn exec(argv: &[&str]) -> Request {
    Request::Exec {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        env: BTreeMap::new(),
        cwd: ".".into(),
        stdin: None,
        timeout_ms: 15_000,
        max_output_bytes: 64 * 1024,
        stream_output: false,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 4 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("ws")).expect("ws");
        std::fs::write(dir.path().join("ws/f.txt"), vec![b'x'; 1024]).expect("file");
        let provider = LocalSandboxProvider::new(LocalSandboxConfig {
            mode: SandboxMode::Bubblewrap,
            runner_exe: PathBuf::from(env!("CARGO_BIN_EXE_workspace")),
            bwrap: PathBuf::from("bwrap"),
            run_dir: dir.path().join("run"),
            start_timeout: Duration::from_secs(20),
            sandbox_user: Default::default(),
            limits: Default::default(),
            toolchains: Default::default(),
        });
        let session = SessionId::parse("sess-bench-1").expect("session id");
        let spec = SandboxSpec {
            session_id: session.clone(),
            workspace_dir: dir.path().join("ws"),
        };
        let runner = provider.ensure(&spec).await.expect("runner starts");
        println!("| runner call (bubblewrap) | samples | p50 µs | p99 µs |");
        println!("|---|---|---|---|");
        let read = || Request::ReadFile {
            path: "f.txt".into(),
            max_bytes: 4096,
        };
        report(
            "ReadFile 1 KiB",
            measure(runner.as_ref(), 500 * scale, read).await,
        );
        let truth = || exec(&["/bin/true"]);
        report(
            "Exec /bin/true",
            measure(runner.as_ref(), 100 * scale, truth).await,
        );
        let git = || exec(&["git", "--version"]);
        report(
            "Exec git --version",
            measure(runner.as_ref(), 100 * scale, git).await,
        );
        provider.stop(&session).await;
    });
}
