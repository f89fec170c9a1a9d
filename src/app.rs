//! Wiring of the roles: `serve` holds the projector and its read models, the executor, the
//! session service and the HTTP API in one process; `api`, `executor` and `projector` each run
//! one role ([`Roles`](crate::config::Roles)) beside the others in other processes, over the JetStream stream and
//! the Valkey read models. Everything above the `EventLog` trait is the same in both modes. `Server::bind` takes the HTTP port first (a busy port
//! fails before anything is created on disk), then opens the event store (an unreachable NATS
//! fails before anything is created either), then prepares everything (rebuilding read models
//! from the events and repairing what a crash left behind); `run_until_stopped` serves until
//! the shutdown token fires.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::artifacts::{
    ArtifactBucketOptions, ArtifactError, ArtifactStore, JetStreamArtifactStore, LocalArtifactStore,
};
use crate::config::{Config, EventStoreConfig, ReadModelConfig};
use crate::eventstore::jetstream::JetStreamEventLog;
use crate::eventstore::{AggregateStore, EventLog, FileEventLog, FsyncPolicy, StoreError};
use crate::executor::Executor;
use crate::invocations::Invocations;
use crate::live::jetstream::JetStreamLive;
use crate::live::memory::MemoryLive;
use crate::live::{LiveError, LiveOutput};
use crate::projector::{Projector, ProjectorError};
use crate::readmodel::{MemoryStore, ReadModelError, ReadModelStore, Retention, ValkeyStore};
use crate::runner::RunnerProvider;
use crate::runner::sandbox::{LocalSandboxConfig, LocalSandboxProvider};
use crate::sessions::Sessions;
use crate::sessions::provisioner::Provisioner;
use crate::telemetry::Metrics;
use crate::tools::Catalog;
use crate::workqueue::jetstream::{JetStreamWorkQueue, JetStreamWorkQueueOptions};
use crate::workqueue::memory::{MemoryOptions, MemoryWorkQueue};
use crate::workqueue::{Provision, WorkQueue, WorkQueueError};

/// What the HTTP API and the session and invocation services use (every role serves its health routes from
/// it). The executor is not in it: it is a role of its own ([`Server`]).
pub struct App {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The event store.
    pub log: Arc<dyn EventLog>,
    /// The projector and its read models.
    pub projector: Arc<Projector>,
    /// Session lifecycle.
    pub sessions: Arc<Sessions>,
    /// Invocation acceptance.
    pub invocations: Arc<Invocations>,
    /// The tool catalog.
    pub catalog: Arc<Catalog>,
    /// Artifact bytes.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Session runners.
    pub runners: Arc<dyn RunnerProvider>,
    /// Where executors take queued invocations from: the in-process queue with the file log,
    /// the shared JetStream consumer with JetStream (ADR 0009). The API offers each `queued`
    /// event it commits.
    pub work: Arc<dyn WorkQueue>,
    /// The live output of running programs (ADR 0010): executors publish, streams read.
    pub live: Arc<dyn LiveOutput>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Kubernetes API client could not be configured (WORKSPACE_BACKEND=kubernetes).
    #[error("kubernetes client (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Kube(String),
    /// The event store could not be opened, or failed while the read models were rebuilt.
    #[error("event store: {0}")]
    EventStore(#[from] StoreError),
    /// The JetStream event store could not be reached or set up.
    #[error("cannot open the JetStream event store at {servers} (NATS_URL): {source}")]
    JetStream {
        /// The configured servers, without credentials.
        servers: String,
        /// The error (never holding a password or token).
        #[source]
        source: StoreError,
    },
    /// The work queue could not be opened (its consumer's settings did not take).
    #[error("work queue: {0}")]
    WorkQueue(#[from] WorkQueueError),
    /// The live output stream could not be opened.
    #[error("live output: {0}")]
    Live(#[from] LiveError),
    /// The read-model store failed.
    #[error("read models: {0}")]
    ReadModel(#[from] ReadModelError),
    /// The artifact store could not be opened.
    #[error("artifact store: {0}")]
    Artifacts(#[from] ArtifactError),
    /// The HTTP address could not be bound.
    #[error(
        "cannot listen on {addr} (set by PORT / --port and WORKSPACE_BIND_ADDR / --bind-addr): {source}"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A directory could not be created.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the configured event store: the log file in `events_dir` (locked by this process),
/// or the JetStream stream (connected, its server and settings checked, within the request
/// timeout for an unreachable server).
pub async fn open_event_log(
    store: &EventStoreConfig,
    events_dir: &std::path::Path,
    fsync: &FsyncPolicy,
) -> Result<Arc<dyn EventLog>, StartError> {
    match store {
        EventStoreConfig::File => Ok(FileEventLog::open(events_dir, fsync.clone()).await?),
        EventStoreConfig::JetStream(options) => {
            let servers = options.servers_for_display();
            match JetStreamEventLog::connect(options.clone()).await {
                Ok(log) => Ok(Arc::new(log)),
                Err(source) => Err(StartError::JetStream { servers, source }),
            }
        }
    }
}

/// The event store, the work sources and the live output that go with it.
type LogAndQueues = (
    Arc<dyn EventLog>,
    Arc<dyn WorkQueue>,
    Arc<dyn WorkQueue<Provision>>,
    Arc<dyn LiveOutput>,
);

/// Opens the configured event store and the work queues that go with it: the log file and
/// the in-process queues, or the JetStream stream and the durable consumers on it that every
/// executor process shares, one for queued invocations and one for created sessions (ADR
/// 0009).
async fn open_event_log_and_queue(config: &Config) -> Result<LogAndQueues, StartError> {
    let tuning = config.work_queue;
    match &config.event_store {
        EventStoreConfig::File => {
            let log = FileEventLog::open(&config.events_dir, config.fsync.clone()).await?;
            let options = MemoryOptions {
                ack_wait: tuning.ack_wait,
                max_deliver: tuning.max_deliver,
            };
            let work: MemoryWorkQueue = MemoryWorkQueue::new(options);
            let provisions: MemoryWorkQueue<Provision> = MemoryWorkQueue::new(options);
            let live: Arc<dyn LiveOutput> = Arc::new(MemoryLive::default());
            Ok((log, Arc::new(work), Arc::new(provisions), live))
        }
        EventStoreConfig::JetStream(options) => {
            let servers = options.servers_for_display();
            let log = match JetStreamEventLog::connect(options.clone()).await {
                Ok(log) => log,
                Err(source) => return Err(StartError::JetStream { servers, source }),
            };
            let work: JetStreamWorkQueue = JetStreamWorkQueue::open(
                log.jetstream(),
                log.stream_name(),
                JetStreamWorkQueueOptions {
                    ack_wait: tuning.ack_wait,
                    max_deliver: tuning.max_deliver,
                    ..JetStreamWorkQueueOptions::default()
                },
            )
            .await?;
            let provisions: JetStreamWorkQueue<Provision> = JetStreamWorkQueue::open(
                log.jetstream(),
                log.stream_name(),
                JetStreamWorkQueueOptions {
                    ack_wait: tuning.ack_wait,
                    max_deliver: tuning.max_deliver,
                    ..JetStreamWorkQueueOptions::provisioners()
                },
            )
            .await?;
            let live = JetStreamLive::open(log.jetstream().clone(), options.replicas).await?;
            Ok((
                Arc::new(log),
                Arc::new(work),
                Arc::new(provisions),
                Arc::new(live),
            ))
        }
    }
}

/// Opens the configured read-model store: an empty [`MemoryStore`], or the [`ValkeyStore`]
/// (connected, answering PING). Terminal views leave it after INVOCATION_STORE_TTL_SECONDS and
/// SESSION_STORE_TTL_SECONDS (their events stay in the log). `serve` and `replay` share it.
pub async fn open_read_models(
    config: &ReadModelConfig,
) -> Result<Arc<dyn ReadModelStore>, ReadModelError> {
    let retention = Retention {
        invocations: config.invocations.ttl,
        sessions: config.sessions.ttl,
    };
    let Some(valkey) = &config.valkey else {
        return Ok(Arc::new(MemoryStore::new(retention)));
    };
    let store = ValkeyStore::connect(&crate::readmodel::ValkeyConfig {
        host: valkey.host.clone(),
        port: valkey.port,
        db: i64::from(valkey.db),
        password: valkey.password.as_ref().map(|p| p.expose().to_owned()),
        invocation_prefix: config.invocations.key_prefix.clone(),
        session_prefix: config.sessions.key_prefix.clone(),
        retention,
        ..crate::readmodel::ValkeyConfig::default()
    })
    .await?;
    tracing::info!(host = %valkey.host, port = valkey.port, "read models in Valkey");
    Ok(Arc::new(store))
}

/// A bound, ready process with its roles.
pub struct Server {
    app: Arc<App>,
    /// The executor role: the executor, and the provisioner of created sessions beside it.
    executor: Option<Arc<Executor>>,
    provisioner: Option<Arc<Provisioner>>,
    /// The pod janitor, beside the executor on the kubernetes backend.
    janitor: Option<Arc<crate::kube::janitor::Janitor>>,
    /// Whether this process folds the events into its read models: the projector role, or
    /// read models in this process's memory (nobody else can fold them).
    projects: bool,
    listener: TcpListener,
}

impl Server {
    /// Opens the stores, rebuilds the read models (in memory, kept for the seed's default
    /// retention), repairs interrupted work and binds.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let read_models = open_read_models(&config.read_models).await?;
        Self::bind_with(config, read_models).await
    }

    /// [`Server::bind`] with the read models in `read_models` (an empty [`MemoryStore`] is
    /// filled from the log here; a shared store is caught up from its checkpoint).
    pub async fn bind_with(
        config: Config,
        read_models: Arc<dyn ReadModelStore>,
    ) -> Result<Self, StartError> {
        Self::bind_with_catalog(config, read_models, Catalog::builtin()).await
    }

    /// [`Server::bind_with`] offering the tools of `catalog` instead of the built-in ones
    /// (tests that need a tool of their own; the service always runs [`Catalog::builtin`]).
    pub async fn bind_with_catalog(
        config: Config,
        read_models: Arc<dyn ReadModelStore>,
        catalog: Catalog,
    ) -> Result<Self, StartError> {
        Self::bind_with_kube(config, read_models, catalog, None).await
    }

    /// [`Server::bind_with_catalog`] with the kubernetes backend's API client given (tests
    /// hand in a client over kube's mock API); `None` builds it from the environment
    /// ([`crate::kube::client_from_environment`]). The client is only used when
    /// `WORKSPACE_BACKEND=kubernetes`.
    pub async fn bind_with_kube(
        config: Config,
        read_models: Arc<dyn ReadModelStore>,
        catalog: Catalog,
        kube: Option<kube::Client>,
    ) -> Result<Self, StartError> {
        let config = Arc::new(config);
        // First: a busy port must fail before anything exists on disk. Connections that arrive
        // while the read models are rebuilt wait in the backlog.
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        // Second, the event store: an unreachable NATS fails before anything is created on
        // disk.
        let (log, work, provisions, live) = open_event_log_and_queue(&config).await?;
        tracing::info!(event_store = %config.event_store.describe(), "event store open");
        for (dir, context) in [
            (&config.workspace_root, "creating WORKSPACE_ROOT"),
            (&config.run_dir, "creating the runner socket directory"),
        ] {
            std::fs::create_dir_all(dir).map_err(|source| StartError::Io { context, source })?;
        }
        // Artifacts live beside the events: a local directory with the file log, the
        // JetStream object store with JetStream, so any replica serves them (ADR 0008).
        let artifacts: Arc<dyn ArtifactStore> = match &config.event_store {
            EventStoreConfig::File => Arc::new(LocalArtifactStore::open(
                &config.artifact_root,
                matches!(config.fsync, FsyncPolicy::Always),
            )?),
            EventStoreConfig::JetStream(nats) => Arc::new(
                JetStreamArtifactStore::connect(
                    nats,
                    ArtifactBucketOptions {
                        replicas: nats.replicas,
                        ..ArtifactBucketOptions::default()
                    },
                )
                .await?,
            ),
        };
        let metrics = Arc::new(Metrics::default());
        let roles = config.roles;
        let projects = roles.projector || config.read_models.valkey.is_none();
        let projector = Arc::new(Projector::new(log.clone(), read_models, metrics.clone()).await?);
        if projects {
            let head = projector.catch_up().await.map_err(|e| match e {
                ProjectorError::Log(e) => StartError::EventStore(e),
                ProjectorError::ReadModel(e) => StartError::ReadModel(e),
            })?;
            tracing::info!(events = head, "read models rebuilt from the event log");
        }
        // The kubernetes backend's API client, built once: the runner seam, the executor's
        // k8s.* tools and the pod janitor share it.
        let mut kube_client: Option<(kube::Client, String)> = None;
        let runners: Arc<dyn RunnerProvider> = match &config.backend {
            crate::config::Backend::Local => {
                Arc::new(LocalSandboxProvider::new(LocalSandboxConfig {
                    mode: config.sandbox,
                    runner_exe: config.runner_exe.clone(),
                    bwrap: config.bwrap.clone(),
                    run_dir: config.run_dir.clone(),
                    start_timeout: std::time::Duration::from_secs(10),
                    sandbox_user: config.sandbox_user,
                    limits: config.sandbox_limits,
                    toolchains: config.toolchains.clone(),
                }))
            }
            crate::config::Backend::Kubernetes(settings) => {
                let client = match kube {
                    Some(client) => client,
                    None => crate::kube::client_from_environment()
                        .await
                        .map_err(|e| StartError::Kube(e.to_string()))?,
                };
                kube_client = Some((client.clone(), settings.namespace.clone()));
                Arc::new(crate::kube::provider::KubeRunnerProvider::start(
                    client,
                    Arc::new((**settings).clone()),
                    config.run_dir.clone(),
                    roles.executor,
                ))
            }
        };
        let sessions = Arc::new(Sessions::new(
            AggregateStore::new(log.clone()).with_typed(projector.typed().clone()),
            projector.clone(),
            runners.clone(),
            provisions.clone(),
            config.clone(),
        ));
        // Workspaces left on disk by sessions that ended are removed (nothing is appended: a
        // session still provisioning is left to the deadline rule).
        if roles.api || roles.executor {
            sessions.recover().await;
        }
        let catalog = Arc::new(catalog);
        let executor = roles.executor.then(|| {
            let executor = Executor::new(
                log.clone(),
                projector.clone(),
                sessions.clone(),
                runners.clone(),
                catalog.clone(),
                artifacts.clone(),
                work.clone(),
                live.clone(),
                config.work_queue.liveness_grace,
                config.max_inline_bytes,
                config.executor_concurrency,
            );
            Arc::new(match &kube_client {
                Some((client, _)) => executor.with_kube(client.clone()),
                None => executor,
            })
        });
        // The pod janitor runs beside executors on the kubernetes backend.
        let janitor = match &kube_client {
            Some((client, namespace)) if roles.executor && config.janitor.enabled => {
                Some(Arc::new(crate::kube::janitor::Janitor::new(
                    client.clone(),
                    namespace,
                    config.janitor,
                    projector.store().clone(),
                    AggregateStore::new(log.clone()).with_typed(projector.typed().clone()),
                )))
            }
            _ => None,
        };
        let provisioner = roles.executor.then(|| {
            Arc::new(Provisioner::new(
                sessions.clone(),
                runners.clone(),
                provisions,
                config.work_queue.liveness_grace,
                config.executor_concurrency,
            ))
        });
        let invocations = Arc::new(Invocations::new(
            AggregateStore::new(log.clone()).with_typed(projector.typed().clone()),
            projector.clone(),
            artifacts.clone(),
            work.clone(),
            config.clone(),
        ));
        let app = Arc::new(App {
            invocations,
            config,
            log,
            projector,
            sessions,
            catalog,
            artifacts,
            metrics,
            runners,
            work,
            live,
        });
        Ok(Server {
            app,
            executor,
            provisioner,
            janitor,
            projects,
            listener,
        })
    }

    /// The executor role, when this process runs it.
    pub fn executor(&self) -> Option<Arc<Executor>> {
        self.executor.clone()
    }

    /// The bound address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.app.config.listen)
    }

    /// The shared state, for tests that drive roles directly.
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until `shutdown` fires, then drains the requests in flight, stops the background
    /// roles and the sandboxes.
    ///
    /// The projector and the executor outlive the HTTP drain: a synchronous invoke still in
    /// flight when `shutdown` fires needs its run to finish and be projected to be answered.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let app = self.app;
        let tasks = tokio_util::task::TaskTracker::new();
        let roles = CancellationToken::new();
        if self.projects {
            tasks.spawn(app.projector.clone().run_until_stopped(roles.clone()));
        }
        if let Some(executor) = self.executor {
            tasks.spawn(executor.run_until_stopped(roles.clone()));
        }
        if let Some(provisioner) = self.provisioner {
            tasks.spawn(provisioner.run_until_stopped(roles.clone()));
        }
        if let Some(janitor) = self.janitor {
            tasks.spawn(janitor.run_until_stopped(roles.clone()));
        }
        let api = app.config.roles.api;
        if api {
            let app = app.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(app.config.expiry_sweep);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => { app.sessions.expire_due().await; }
                    }
                }
            });
        }
        tasks.close();
        // Open event streams end when the service stops: a graceful shutdown waits for them.
        let router = if api {
            crate::api::router(app.clone())
        } else {
            crate::api::health_router(app.clone())
        }
        .layer(axum::Extension(crate::api::StopStreams(shutdown.clone())));
        tracing::info!(
            addr = %self.listener.local_addr()?,
            roles = %app.config.roles.describe(),
            "workspace service listening"
        );
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        shutdown.cancel();
        roles.cancel();
        tasks.wait().await;
        // Only the runners this process started: other processes' sessions keep theirs.
        app.runners.detach_all().await;
        tracing::info!("workspace service stopped");
        served
    }
}
