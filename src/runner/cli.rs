//! The `workspace runner` role: the agent that runs inside a session's sandbox.
//!
//! It parses its arguments, arranges to die with its parent, binds the socket (or takes the
//! listening socket it inherited, as providers start it), prints one readiness line on stdout
//! (`ready`), and serves until killed or sent SIGTERM. It is started by a
//! [`RunnerProvider`](super::RunnerProvider), never by hand, and decides no policy.

use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;

use super::server::{EXEC_PATH, RunnerServer};

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
    /// Unix socket to bind and listen on (created with mode 0600).
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present_any = ["listen_fd", "stdio"],
        conflicts_with_all = ["listen_fd", "stdio"]
    )]
    pub listen: Option<PathBuf>,
    /// An inherited descriptor of a unix socket that is already bound and listening (how
    /// providers start runners: the socket's directory then never has to be visible, let
    /// alone writable, in the sandbox).
    #[arg(long, value_name = "FD", value_parser = clap::value_parser!(RawFd).range(3..), conflicts_with = "stdio")]
    pub listen_fd: Option<RawFd>,
    /// Serve the multiplexed runner stream on stdin and stdout (how an executor reaches a
    /// runner pod through its exec stream, ADR 0011): every channel of the stream is a
    /// connection to a socket of this runner in a private directory under `/tmp`. Prints no
    /// readiness line; ends when the stream ends.
    #[arg(long)]
    pub stdio: bool,
    /// Workspace root every request path is confined to.
    #[arg(long, value_name = "PATH", default_value = "/workspace")]
    pub root: PathBuf,
    /// Isolation this runner runs in, reported to clients.
    #[arg(long, value_name = "NAME", value_enum, default_value_t = Isolation::Bubblewrap)]
    pub isolation: Isolation,
    /// `PATH` of the programs the runner executes: the toolchain directories its provider made
    /// visible, then the system's.
    #[arg(long, value_name = "PATH", default_value = EXEC_PATH)]
    pub exec_path: String,
}

/// Runs the runner until it is killed or receives SIGTERM.
pub fn run(args: RunnerArgs) -> ExitCode {
    // Belt and braces next to bwrap's --die-with-parent (and the only guard when unsandboxed).
    // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    // Claimed before any thread or program starts: from here on the descriptor is
    // close-on-exec, so nothing the runner spawns inherits the listening socket.
    let inherited = match args.listen_fd.map(inherited_listener).transpose() {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("runner: --listen-fd: {e}");
            return ExitCode::from(64);
        }
    };
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
        let isolation = args.isolation.as_str();
        if args.stdio {
            return serve_stdio(&args.root, isolation).await;
        }
        let server = match (inherited, &args.listen) {
            (Some(listener), _) => RunnerServer::from_listener(listener, &args.root, isolation)?,
            (None, Some(path)) => RunnerServer::bind(path, &args.root, isolation)?,
            (None, None) => unreachable!("clap requires --listen or --listen-fd"),
        }
        .with_exec_path(args.exec_path.clone());
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

/// `--stdio`: a runner server on a socket in a fresh private directory, and the multiplexed
/// stream on stdin/stdout connected to it, until the stream ends.
async fn serve_stdio(root: &std::path::Path, isolation: &'static str) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = std::env::temp_dir().join(format!("workspace-runner-{}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let socket = dir.join("runner.sock");
    let server = RunnerServer::bind(&socket, root, isolation)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let served = tokio::spawn(server.run_until_stopped(stop.clone().cancelled_owned()));
    // stdin and stdout as files on the blocking pool (what tokio's own stdio does), from
    // duplicates, so the process's descriptors 0 and 1 stay open for nothing else to reuse.
    let dup = |fd: &std::io::Stdin| -> io::Result<std::fs::File> {
        Ok(std::fs::File::from(
            std::os::fd::AsFd::as_fd(fd).try_clone_to_owned()?,
        ))
    };
    let stdin = dup(&std::io::stdin())?;
    let stdout =
        std::fs::File::from(std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned()?);
    let read: crate::kube::transport::BoxRead = Box::pin(tokio::fs::File::from_std(stdin));
    let write: crate::kube::transport::BoxWrite = Box::pin(tokio::fs::File::from_std(stdout));
    tokio::select! {
        () = crate::kube::transport::serve_stdio(read, write, &socket) => {}
        () = terminated() => {}
    }
    stop.cancel();
    let _ = served.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Takes ownership of the inherited descriptor `fd` after checking that it is an open,
/// listening unix socket, and marks it close-on-exec.
fn inherited_listener(fd: RawFd) -> io::Result<UnixListener> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{fd} {what}"));
    // SAFETY: fcntl, fstat and getsockopt on an integer descriptor with valid pointers to
    // stack values; nothing is owned until every check passed.
    unsafe {
        if libc::fcntl(fd, libc::F_GETFD) < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut stat) != 0 {
            return Err(io::Error::last_os_error());
        }
        if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(invalid("is not a socket"));
        }
        let (mut domain, mut listening): (libc::c_int, libc::c_int) = (0, 0);
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut domain).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut listening).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if domain != libc::AF_UNIX || listening == 0 {
            return Err(invalid("is not a listening unix socket"));
        }
        if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor is open, was handed to this process to own, and is claimed
        // once, here.
        Ok(UnixListener::from(OwnedFd::from_raw_fd(fd)))
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

    #[test]
    fn the_socket_is_a_path_or_an_inherited_descriptor_never_both_nor_neither() {
        let cli = Cli::try_parse_from(["runner", "--listen-fd", "4"]).unwrap();
        assert_eq!((cli.args.listen, cli.args.listen_fd), (None, Some(4)));
        for argv in [
            &["runner"][..],
            &["runner", "--listen", "s", "--listen-fd", "4"],
            &["runner", "--listen-fd", "2"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} accepted");
        }
    }

    #[test]
    fn an_inherited_descriptor_must_be_a_listening_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let err = inherited_listener(std::os::fd::AsRawFd::as_raw_fd(&file)).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = inherited_listener(std::os::fd::AsRawFd::as_raw_fd(&a)).unwrap_err();
        assert!(err.to_string().contains("not a listening"), "{err}");
        let listener = UnixListener::bind(dir.path().join("s")).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
        // SAFETY: clearing FD_CLOEXEC on a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let taken = inherited_listener(fd).unwrap();
        // SAFETY: reading the flags of a descriptor the listener owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        drop(taken);
    }
}
