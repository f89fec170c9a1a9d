//! The `workspace runner` role: the agent that runs inside a session's sandbox.
//!
//! It parses its arguments, arranges to die with its parent, binds the socket, prints one
//! readiness line on stdout (`ready`), and serves until killed or sent SIGTERM. It is started by
//! a [`RunnerProvider`](super::RunnerProvider), never by hand, and decides no policy.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::server::RunnerServer;

/// The line the runner prints on stdout once its socket accepts connections.
pub const READY_LINE: &str = "ready";

/// Isolation the runner reports in `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// A bubblewrap sandbox on the local host.
    Bubblewrap,
    /// No isolation at all (development only).
    Unsandboxed,
    /// A Kubernetes runner pod.
    Pod,
}

impl Isolation {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bubblewrap => "bubblewrap",
            Self::Unsandboxed => "unsandboxed",
            Self::Pod => "pod",
        }
    }
}

/// Arguments of `workspace runner`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunnerArgs {
    /// Unix socket to listen on (created with mode 0600).
    #[arg(long, value_name = "PATH")]
    pub listen: PathBuf,
    /// Workspace root every request path is confined to.
    #[arg(long, value_name = "PATH", default_value = "/workspace")]
    pub root: PathBuf,
    /// Isolation this runner runs in, reported to clients.
    #[arg(long, value_name = "NAME", value_enum, default_value_t = Isolation::Bubblewrap)]
    pub isolation: Isolation,
}

/// Runs the runner until it is killed or receives SIGTERM.
pub fn run(args: RunnerArgs) -> ExitCode {
    // Belt and braces next to bwrap's --die-with-parent (and the only guard when unsandboxed).
    // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WORKSPACE_RUNNER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();

    // Two workers: connections are few and mostly idle; blocking filesystem work has its own
    // (bounded) pool.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("runner")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runner: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = runtime.block_on(async {
        let server = RunnerServer::bind(&args.listen, &args.root, args.isolation.as_str())?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{READY_LINE}")?;
        stdout.flush()?;
        drop(stdout);
        server.run_until_stopped(terminated()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runner: {e}");
            ExitCode::from(1)
        }
    }
}

/// Completes on SIGTERM or SIGINT (never, when the handlers cannot be installed).
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunnerArgs,
    }

    #[test]
    fn defaults_are_the_sandbox_layout() {
        let cli =
            Cli::try_parse_from(["runner", "--listen", "/run/workspace/runner.sock"]).unwrap();
        assert_eq!(cli.args.root, PathBuf::from("/workspace"));
        assert_eq!(cli.args.isolation, Isolation::Bubblewrap);
        let cli = Cli::try_parse_from([
            "runner",
            "--listen",
            "s",
            "--root",
            "/tmp/w",
            "--isolation",
            "unsandboxed",
        ])
        .unwrap();
        assert_eq!(cli.args.isolation.as_str(), "unsandboxed");
        assert!(Cli::try_parse_from(["runner", "--listen", "s", "--isolation", "chroot"]).is_err());
    }
}
