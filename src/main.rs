//! The `workspace` binary: parse the command line, run a role, map errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "workspace", version, about = "Governed execution plane for AI coding agents")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the runner inside a session's sandbox (started by the service, not by hand).
    Runner(workspace::runner::cli::RunnerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Runner(args)) => workspace::runner::cli::run(args),
        None => {
            eprintln!("serve is wired in by the service module");
            ExitCode::from(70)
        }
    }
}
