//! The `workspace` binary: parse the command line, set up logging, validate the configuration
//! (exit 64 before binding anything when it is wrong), run the role, map errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use workspace::config::{Config, Roles, ServeArgs};

// mimalloc (entered as `workspace::alloc` explains): the service allocates many small,
// short-lived buffers (JSON, events) across threads; measured ~10% more throughput than glibc
// malloc in `benches/http_invoke.rs`.
#[global_allocator]
static ALLOCATOR: workspace::alloc::Allocator = workspace::alloc::Allocator;

#[derive(Parser)]
#[command(
    name = "workspace",
    version,
    about = "Governed execution plane for AI coding agents",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `workspace` without a subcommand serves, with these settings.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole service in one process (embedded mode): API, projector, executor. Default.
    Serve(Box<ServeArgs>),
    /// Run only the HTTP API (distributed mode: needs NATS_URL; with Valkey read models the
    /// `projector` process keeps them, otherwise this process folds its own).
    Api(Box<ServeArgs>),
    /// Run only an executor: takes queued invocations from the shared JetStream consumer and
    /// runs them (serves /healthz, /readyz and /metrics).
    Executor(Box<ServeArgs>),
    /// Run only the projector: folds the events into the Valkey read models (serves /healthz,
    /// /readyz and /metrics).
    Projector(Box<ServeArgs>),
    /// Run the runner inside a session's sandbox (started by the service, not by hand).
    Runner(workspace::runner::cli::RunnerArgs),
    /// Rebuild the read models from the event store and print a summary (audit replay).
    Replay(Box<workspace::replay::ReplayArgs>),
    /// Write the tool catalog's documentation (docs/tool-catalog.md) from the registered tools.
    CatalogDocs(CatalogDocsArgs),
}

#[derive(clap::Args)]
struct CatalogDocsArgs {
    /// Where to write the document (`-` for standard output).
    #[arg(long, default_value = workspace::tools::catalog_docs::PATH)]
    output: std::path::PathBuf,
}

/// Exit code for a bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code for a failure to start or serve (EX_SOFTWARE).
const EXIT_RUNTIME: u8 = 70;

fn main() -> ExitCode {
    // A value clap cannot parse (`PORT=http`, `VALKEY_PORT=x`) is a bad configuration too:
    // exit 64 like the rules `Config::try_from` checks, not clap's 2. Help and version are 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Some(Command::Runner(args)) => workspace::runner::cli::run(args),
        Some(Command::Replay(args)) => workspace::replay::run(*args),
        Some(Command::CatalogDocs(args)) => catalog_docs(&args),
        Some(Command::Serve(args)) => serve(*args, Roles::ALL),
        Some(Command::Api(args)) => serve(*args, Roles::API),
        Some(Command::Executor(args)) => serve(*args, Roles::EXECUTOR),
        Some(Command::Projector(args)) => serve(*args, Roles::PROJECTOR),
        None => serve(cli.serve, Roles::ALL),
    }
}

fn catalog_docs(args: &CatalogDocsArgs) -> ExitCode {
    let doc = workspace::tools::catalog_docs::render(&workspace::tools::Catalog::builtin());
    let written = if args.output.as_os_str() == "-" {
        use std::io::Write as _;
        std::io::stdout().write_all(doc.as_bytes())
    } else {
        std::fs::write(&args.output, doc)
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writing {}: {e}", args.output.display());
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn serve(args: ServeArgs, roles: Roles) -> ExitCode {
    let _logs = workspace::telemetry::init_logging(&args.log_level);
    let config = match Config::try_from(args).and_then(|c| c.for_roles(roles)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async move {
        let server = match workspace::app::Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "service failed to start");
                eprintln!("service failed to start: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signal.cancel();
        });
        match server.run_until_stopped(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("server error: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
