//! The `replay` role: rebuilds the read models from the event store (the log file, or the
//! JetStream stream with the same settings as `serve`), from sequence 0, and prints what it
//! found. Proves the events alone are enough to recover every read model, and is the audit
//! trail's command-line reader. It never changes the store: a JetStream stream is opened as it
//! is, never created or updated.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use workspace_projections::Applied;

use crate::config::{ConfigError, EventStoreArgs, EventStoreConfig};
use crate::eventstore::FsyncPolicy;
use crate::projector::Projector;
use crate::readmodel::{MemoryStore, ReadModelStore, Retention};
use crate::telemetry::Metrics;

/// Arguments of `workspace replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Data directory of the service (the file store's log is in `<data dir>/events`). With
    /// the file store the service must be stopped: the log is locked by its writer.
    #[arg(long, env = "WORKSPACE_DATA_DIR", default_value = ".workspace-data")]
    pub data_dir: PathBuf,
    /// Print every event as one JSON line.
    #[arg(long)]
    pub events: bool,
    /// The event store to read, as `serve` takes it.
    #[command(flatten, next_help_heading = "Event store")]
    pub event_store: EventStoreArgs,
}

/// The store `replay` reads: `serve`'s settings, with a JetStream stream opened as it is.
fn store(args: EventStoreArgs) -> Result<EventStoreConfig, ConfigError> {
    Ok(match EventStoreConfig::try_from(args)? {
        EventStoreConfig::File => EventStoreConfig::File,
        EventStoreConfig::JetStream(mut options) => {
            options.create_stream = false;
            EventStoreConfig::JetStream(options)
        }
    })
}

/// Runs the replay and prints a JSON summary.
pub fn run(args: ReplayArgs) -> ExitCode {
    let store = match store(args.event_store) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(async move {
        let events_dir = args.data_dir.join("events");
        let log = match crate::app::open_event_log(&store, &events_dir, &FsyncPolicy::Never).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot open the event store: {e}");
                return ExitCode::from(70);
            }
        };
        if args.events {
            let mut after = 0;
            loop {
                let batch = match log.read_from(after, 1024).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        eprintln!("reading the events failed: {e}");
                        return ExitCode::from(70);
                    }
                };
                if batch.is_empty() {
                    break;
                }
                let mut lines = String::new();
                for e in &batch {
                    lines.push_str(&serde_json::to_string(e.as_ref()).unwrap_or_default());
                    lines.push('\n');
                }
                if let Err(code) = emit(&lines) {
                    return code;
                }
                after = batch.last().map(|e| e.sequence).unwrap_or(after);
            }
        }
        // Nothing leaves the store while counting: the summary covers the whole log.
        let store = Arc::new(MemoryStore::new(Retention::FOREVER));
        let projector =
            match Projector::new(log.clone(), store.clone(), Arc::new(Metrics::default())).await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("replay failed: {e}");
                    return ExitCode::from(70);
                }
            };
        let mut invocations = std::collections::BTreeMap::<String, String>::new();
        let mut session_ids = std::collections::BTreeSet::<String>::new();
        let checkpoint = match projector
            .catch_up_observed(|applied| match applied {
                Applied::Invocation { id, status } => {
                    invocations.insert(id.clone(), status.clone());
                }
                Applied::Session { id } => {
                    session_ids.insert(id.clone());
                }
                Applied::Skipped | Applied::Rejected { .. } => {}
            })
            .await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("replay failed: {e}");
                return ExitCode::from(70);
            }
        };
        let mut by_status = std::collections::BTreeMap::<String, usize>::new();
        for status in invocations.into_values() {
            *by_status.entry(status).or_default() += 1;
        }
        let mut sessions = std::collections::BTreeMap::<String, usize>::new();
        for id in session_ids {
            if let Ok(Some(s)) = store.session(&id).await {
                *sessions.entry(s.status.clone()).or_default() += 1;
            }
        }
        let summary = serde_json::json!({
            "events": checkpoint,
            "sessions": sessions,
            "invocations": by_status,
        });
        match emit(&format!("{summary}\n")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => code,
        }
    })
}

/// Writes to stdout. A reader that went away (`replay --events | head -1`) ends the replay
/// quietly with success, as other Unix filters do; any other write error is EX_IOERR.
fn emit(text: &str) -> Result<(), ExitCode> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("cannot write the replay: {e}");
            Err(ExitCode::from(74))
        }
    }
}
