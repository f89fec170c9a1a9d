//! The `replay` role: rebuilds the read models from the event store (the log file, or the
//! JetStream stream with the same settings as `serve`), from sequence 0, and prints what it
//! found. Proves the events alone are enough to recover every read model, and is the audit
//! trail's command-line reader. It never changes the event store: a JetStream stream is opened
//! as it is, never created or updated.
//!
//! With `serve`'s read-model settings on Valkey it rebuilds the shared read models in place
//! ([`rebuild`]): folds the whole log into a fresh generation beside the active one, with the
//! service's own [`Projector`], then switches readers to it atomically and deletes the old one.
//! A service running meanwhile keeps serving the old generation, then the new one, and its
//! projector carries on in whichever is active. Without Valkey it folds into memory and only
//! prints the summary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use workspace_projections::Applied;

use crate::config::{
    ConfigError, EventStoreArgs, EventStoreConfig, ReadModelArgs, ReadModelConfig,
};
use crate::eventstore::{EventLog, FsyncPolicy};
use crate::projector::{Projector, ProjectorError};
use crate::readmodel::{MemoryStore, ReadModelError, ReadModelStore, Retention};
use crate::telemetry::Metrics;

/// How many times a rebuild catches up with a live projector that moved the active generation
/// on before it gives up (each catch-up reads only what was appended meanwhile).
pub const MAX_CATCH_UPS: u32 = 64;

/// Exit code when another rebuild won, or the active read models kept moving ahead
/// (EX_TEMPFAIL: nothing was switched; running again is safe).
const EXIT_TRY_AGAIN: u8 = 75;

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
    /// The read models, as `serve` takes them: on Valkey they are rebuilt and switched in.
    #[command(flatten, next_help_heading = "Read models")]
    pub read_models: ReadModelArgs,
}

/// Why a rebuild of shared read models did not take over.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The log could not be read, or the rebuild's store failed.
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    /// The read-model store failed.
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    /// Another rebuild was activated while this one ran.
    #[error(
        "another rebuild of the read models was activated while this one ran: its generation \
         serves, this one was not switched in (run `workspace replay` again to rebuild once more)"
    )]
    Superseded,
    /// A live projector kept moving the active generation ahead of each catch-up.
    #[error(
        "the active read models (at sequence {active}) stayed ahead of the rebuild (at {rebuild}) \
         after {attempts} catch-ups: nothing was switched; try again when fewer events arrive"
    )]
    KeptBehind {
        /// Catch-ups tried.
        attempts: u32,
        /// The rebuild's checkpoint at the last attempt.
        rebuild: u64,
        /// The active generation's checkpoint then.
        active: u64,
    },
}

/// A rebuild that took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// The generation now active.
    pub generation: u64,
    /// The checkpoint it took over at (the global sequence folded up to).
    pub events: u64,
    /// Catch-ups after the first pass, because a live projector moved the active one on.
    pub catch_ups: u32,
}

/// Rebuilds `active`'s read models from `log`: folds every event, from sequence 0, into a
/// fresh generation ([`ReadModelStore::rebuild`]) with the service's [`Projector`], showing
/// `observe` what each event did, then activates it. While a live projector has moved the
/// active generation past the rebuild (`Behind`), catches up with what was appended meanwhile
/// and tries again, at most [`MAX_CATCH_UPS`] times.
pub async fn rebuild(
    log: Arc<dyn EventLog>,
    active: &dyn ReadModelStore,
    mut observe: impl FnMut(&Applied) + Send,
) -> Result<Rebuilt, ReplayError> {
    let rebuild = active.rebuild().await?;
    let projector = Projector::new(log, rebuild.store(), Arc::new(Metrics::default())).await?;
    let mut catch_ups = 0;
    loop {
        let events = projector.catch_up_observed(&mut observe).await?;
        match rebuild.activate().await {
            Ok(()) => {
                return Ok(Rebuilt {
                    generation: rebuild.generation(),
                    events,
                    catch_ups,
                });
            }
            Err(ReadModelError::Behind { rebuild, active }) => {
                if catch_ups == MAX_CATCH_UPS {
                    return Err(ReplayError::KeptBehind {
                        attempts: catch_ups,
                        rebuild,
                        active,
                    });
                }
                tracing::info!(
                    rebuild,
                    active,
                    "the active read models moved on; catching up"
                );
                catch_ups += 1;
            }
            Err(ReadModelError::Superseded) => return Err(ReplayError::Superseded),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The store `replay` reads (`serve`'s settings, with a JetStream stream opened as it is) and
/// the read models it rebuilds.
fn settings(args: &ReplayArgs) -> Result<(EventStoreConfig, ReadModelConfig), ConfigError> {
    let store = match EventStoreConfig::try_from(args.event_store.clone())? {
        EventStoreConfig::File => EventStoreConfig::File,
        EventStoreConfig::JetStream(mut options) => {
            options.create_stream = false;
            EventStoreConfig::JetStream(options)
        }
    };
    let read_models = ReadModelConfig::try_from(args.read_models.clone())?;
    read_models.check_one_store()?;
    Ok((store, read_models))
}

/// What the summary counts: the last status of every invocation, the id of every session.
#[derive(Default)]
struct Tally {
    invocations: BTreeMap<String, String>,
    sessions: BTreeSet<String>,
}

impl Tally {
    fn observe(&mut self, applied: &Applied) {
        match applied {
            Applied::Invocation { id, status } => {
                self.invocations.insert(id.clone(), status.to_string());
            }
            Applied::Session { id } => {
                self.sessions.insert(id.clone());
            }
            Applied::Skipped | Applied::Rejected { .. } => {}
        }
    }

    /// `{"events", "sessions": {status: n}, "invocations": {status: n}}`; sessions by the
    /// status `store` holds (a terminal session past its retention has left it).
    async fn summary(self, events: u64, store: &dyn ReadModelStore) -> serde_json::Value {
        let mut by_status = BTreeMap::<String, usize>::new();
        for status in self.invocations.into_values() {
            *by_status.entry(status).or_default() += 1;
        }
        let mut sessions = BTreeMap::<String, usize>::new();
        for id in self.sessions {
            if let Ok(Some(s)) = store.session(&id).await {
                *sessions.entry(s.status.to_string()).or_default() += 1;
            }
        }
        serde_json::json!({
            "events": events,
            "sessions": sessions,
            "invocations": by_status,
        })
    }
}

/// Runs the replay and prints a JSON summary.
pub fn run(args: ReplayArgs) -> ExitCode {
    let (store, read_models) = match settings(&args) {
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
        if args.events
            && let Err(code) = print_events(&*log).await
        {
            return code;
        }
        let summary = if read_models.valkey.is_some() {
            rebuild_shared(log, &read_models).await
        } else {
            fold_in_memory(log).await
        };
        match summary.and_then(|s| emit(&format!("{s}\n"))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => code,
        }
    })
}

/// Every event as one JSON line, in order.
async fn print_events(log: &dyn EventLog) -> Result<(), ExitCode> {
    let mut after = 0;
    loop {
        let batch = log.read_from(after, 1024).await.map_err(|e| {
            eprintln!("reading the events failed: {e}");
            ExitCode::from(70)
        })?;
        let Some(last) = batch.last().map(|e| e.sequence) else {
            return Ok(());
        };
        let mut lines = String::new();
        for e in &batch {
            lines.push_str(&serde_json::to_string(e.as_ref()).unwrap_or_default());
            lines.push('\n');
        }
        emit(&lines)?;
        after = last;
    }
}

/// Folds every event of `log` into a fresh memory store keeping every view, with the
/// service's [`Projector`], showing `observe` what each event did; returns the checkpoint
/// reached and the store.
pub async fn into_memory(
    log: Arc<dyn EventLog>,
    observe: impl FnMut(&Applied) + Send,
) -> Result<(u64, Arc<MemoryStore>), ProjectorError> {
    let store = Arc::new(MemoryStore::new(Retention::FOREVER));
    let projector = Projector::new(log, store.clone(), Arc::new(Metrics::default())).await?;
    let events = projector.catch_up_observed(observe).await?;
    Ok((events, store))
}

/// Folds the log into memory, keeping every view (the summary covers the whole log).
async fn fold_in_memory(log: Arc<dyn EventLog>) -> Result<serde_json::Value, ExitCode> {
    let mut tally = Tally::default();
    let (events, store) = into_memory(log, |a| tally.observe(a)).await.map_err(|e| {
        eprintln!("replay failed: {e}");
        ExitCode::from(70)
    })?;
    Ok(tally.summary(events, &*store).await)
}

/// Rebuilds the read models in Valkey and switches them in; the summary adds the generation
/// now active and the catch-ups a live service caused.
async fn rebuild_shared(
    log: Arc<dyn EventLog>,
    config: &ReadModelConfig,
) -> Result<serde_json::Value, ExitCode> {
    let active = crate::app::open_read_models(config).await.map_err(|e| {
        eprintln!("cannot open the read models: {e}");
        ExitCode::from(70)
    })?;
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let rebuilt = match rebuild(log, &*active, |a| tally.observe(a)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("replay failed: {e}");
            let code = match e {
                ReplayError::Superseded | ReplayError::KeptBehind { .. } => EXIT_TRY_AGAIN,
                ReplayError::Projector(_) | ReplayError::ReadModel(_) => 70,
            };
            return Err(ExitCode::from(code));
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut summary = tally.summary(rebuilt.events, &*active).await;
    summary["generation"] = rebuilt.generation.into();
    summary["catch_ups"] = rebuilt.catch_ups.into();
    summary["seconds"] = ((seconds * 1000.0).round() / 1000.0).into();
    Ok(summary)
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
