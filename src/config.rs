//! Configuration of the `serve` role. Each knob is declared once, as a clap argument with its
//! environment variable (the original service's names where one existed), typed and defaulted;
//! cross-field rules are checked in [`Config::try_from`]. Tests build [`Config`] directly and
//! never touch the process environment.
//!
//! The event store ([`event_store`]) and the read-model stores ([`read_models`]) have their
//! own argument groups, shared with the roles that need them; `docs/configuration.md` lists
//! every setting and the mode rules.

pub mod event_store;
pub mod read_models;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::eventstore::FsyncPolicy;
use crate::runner::limits::{DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PROCESSES, SandboxLimits};
use crate::runner::sandbox::{
    DEFAULT_SANDBOX_GID, DEFAULT_SANDBOX_UID, HostIdentity, SandboxMode, Toolchains,
};

pub use self::event_store::{EventStoreArgs, EventStoreConfig};
pub use self::read_models::{ReadModelArgs, ReadModelConfig};

/// Command-line and environment settings of `workspace serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = 50053)]
    pub port: u16,
    /// Address to listen on. Loopback by default: set 0.0.0.0 behind an authenticating proxy
    /// or with WORKSPACE_AUTH_MODE=trusted_headers.
    #[arg(long, env = "WORKSPACE_BIND_ADDR", default_value = "127.0.0.1")]
    pub bind_addr: IpAddr,
    /// Directory holding the event log (and, by default, workspaces and artifacts).
    #[arg(long, env = "WORKSPACE_DATA_DIR", default_value = ".workspace-data")]
    pub data_dir: PathBuf,
    /// Root of session workspaces (default `<data dir>/workspaces`).
    #[arg(long, env = "WORKSPACE_ROOT")]
    pub workspace_root: Option<PathBuf>,
    /// Root of artifacts (default `<data dir>/artifacts`).
    #[arg(long, env = "ARTIFACT_ROOT")]
    pub artifact_root: Option<PathBuf>,
    /// Host directories sessions may copy with `source_repo_path`, `:`-separated. Unset: no
    /// host directory may be copied. Never the service's own directories, even below a root.
    #[arg(long, env = "WORKSPACE_SOURCE_ROOTS", value_name = "DIR[:DIR...]")]
    pub source_roots: Option<String>,
    /// Host toolchain `bin` directories sandboxes see read-only, `:`-separated, first on the
    /// `PATH` of the programs tools run (each one's parent, the toolchain root, is bound at the
    /// same path). Unset: only `/usr`'s programs.
    #[arg(long, env = "WORKSPACE_TOOLCHAIN_DIRS", value_name = "DIR[:DIR...]")]
    pub toolchain_dirs: Option<String>,
    /// Event log durability: `interval` (write before ack, fsync every second), `always`
    /// (fsync before ack), `never`, or an interval such as `200ms`.
    #[arg(long, env = "WORKSPACE_EVENTLOG_FSYNC", default_value = "interval")]
    pub eventlog_fsync: String,
    /// Session runner isolation: `bubblewrap`, or `unsandboxed` (development only: tools run
    /// on the host without isolation).
    #[arg(long, env = "WORKSPACE_RUNNER", default_value = "bubblewrap")]
    pub runner: String,
    /// The binary started inside sandboxes as the runner (default: this binary).
    #[arg(long, env = "WORKSPACE_RUNNER_EXE")]
    pub runner_exe: Option<PathBuf>,
    /// Host uid bubblewrap sandboxes run as when the service runs as root (never 0; ignored
    /// when the service is not root: sandboxes then run as the service's user). Pick an id no
    /// account uses: it owns every workspace, and its process limit is shared by all
    /// sandboxes.
    #[arg(long, env = "WORKSPACE_SANDBOX_UID", default_value_t = DEFAULT_SANDBOX_UID)]
    pub sandbox_uid: u32,
    /// Host gid bubblewrap sandboxes run as when the service runs as root (never 0).
    #[arg(long, env = "WORKSPACE_SANDBOX_GID", default_value_t = DEFAULT_SANDBOX_GID)]
    pub sandbox_gid: u32,
    /// RLIMIT_NPROC of sandboxes: processes and threads the sandbox uid may have, all
    /// sandboxes together (enforced by the kernel for a non-root uid only).
    #[arg(
        long,
        env = "WORKSPACE_SANDBOX_MAX_PROCESSES",
        default_value_t = DEFAULT_MAX_PROCESSES
    )]
    pub sandbox_max_processes: u64,
    /// RLIMIT_FSIZE of sandboxes: the largest file a program in one may write, in bytes.
    #[arg(
        long,
        env = "WORKSPACE_SANDBOX_MAX_FILE_BYTES",
        default_value_t = DEFAULT_MAX_FILE_BYTES
    )]
    pub sandbox_max_file_bytes: u64,
    /// Authentication: `payload` (trust the body principal) or `trusted_headers`.
    #[arg(long, env = "WORKSPACE_AUTH_MODE", default_value = "payload")]
    pub auth_mode: String,
    /// Shared token required in trusted_headers mode.
    #[arg(long, env = "WORKSPACE_AUTH_SHARED_TOKEN", hide_env_values = true)]
    pub auth_shared_token: Option<String>,
    /// Tenant header (trusted_headers mode).
    #[arg(
        long,
        env = "WORKSPACE_AUTH_TENANT_HEADER",
        default_value = "X-Workspace-Tenant-Id"
    )]
    pub auth_tenant_header: String,
    /// Actor header (trusted_headers mode).
    #[arg(
        long,
        env = "WORKSPACE_AUTH_ACTOR_HEADER",
        default_value = "X-Workspace-Actor-Id"
    )]
    pub auth_actor_header: String,
    /// Roles header (trusted_headers mode).
    #[arg(
        long,
        env = "WORKSPACE_AUTH_ROLES_HEADER",
        default_value = "X-Workspace-Roles"
    )]
    pub auth_roles_header: String,
    /// Token header (trusted_headers mode).
    #[arg(
        long,
        env = "WORKSPACE_AUTH_TOKEN_HEADER",
        default_value = "X-Workspace-Auth-Token"
    )]
    pub auth_token_header: String,
    /// Output, logs and arguments larger than this many bytes leave the event and go to an
    /// artifact.
    #[arg(long, env = "WORKSPACE_MAX_INLINE_BYTES", default_value_t = 8192)]
    pub max_inline_bytes: usize,
    /// Invocations one executor runs at once.
    #[arg(long, env = "WORKSPACE_EXECUTOR_CONCURRENCY", default_value_t = 64)]
    pub executor_concurrency: usize,
    /// A queued invocation that no executor started within this many seconds fails with
    /// `timeout`.
    #[arg(long, env = "WORKSPACE_QUEUE_TIMEOUT_SECONDS", default_value_t = 60)]
    pub queue_timeout_seconds: u64,
    /// Provisioning (copy or clone, sandbox start) fails after this many seconds.
    #[arg(
        long,
        env = "WORKSPACE_PROVISION_TIMEOUT_SECONDS",
        default_value_t = 300
    )]
    pub provision_timeout_seconds: u64,
    /// How often expired sessions are looked for.
    #[arg(long, env = "WORKSPACE_EXPIRY_SWEEP_SECONDS", default_value_t = 5)]
    pub expiry_sweep_seconds: u64,
    /// How long after a claim's `started.deadline` an executor presumes its claimer gone and
    /// fails the invocation `interrupted` (ADR 0009).
    #[arg(
        long,
        env = "WORKSPACE_EXECUTOR_LIVENESS_GRACE_SECONDS",
        default_value_t = 30
    )]
    pub executor_liveness_grace_seconds: u64,
    /// How long a delivery of queued work may go unacknowledged (no outcome, no heartbeat)
    /// before the work queue delivers it again: how soon a crashed executor's work is noticed
    /// (ADR 0009). Heartbeats go every third of it while a tool runs.
    #[arg(
        long,
        env = "WORKSPACE_EXECUTOR_ACK_WAIT_SECONDS",
        default_value_t = 30
    )]
    pub executor_ack_wait_seconds: u64,
    /// Log level: debug, info, warn, error.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// The event store: the embedded log file, or a JetStream stream when NATS_URL is set.
    #[command(flatten, next_help_heading = "Event store")]
    pub event_store: EventStoreArgs,
    /// The read-model stores (memory; Valkey is declared but not available yet).
    #[command(flatten, next_help_heading = "Read-model stores")]
    pub read_models: ReadModelArgs,
    /// Offer the k8s delivery tools (k8s.apply_manifest, k8s.rollout_status,
    /// k8s.restart_deployment) to kubernetes sessions. Give the executors the
    /// `workspace-delivery` service account too (deploy/11-rbac.yaml).
    #[arg(
        long,
        env = "WORKSPACE_ENABLE_K8S_DELIVERY_TOOLS",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = crate::kube::config::parse_bool
    )]
    pub enable_k8s_delivery_tools: bool,
    /// The pod janitor of the kubernetes backend.
    #[command(flatten, next_help_heading = "Kubernetes pod janitor")]
    pub janitor: crate::kube::janitor::JanitorArgs,
    /// Where session runners live: `local` (a sandbox on this host, WORKSPACE_RUNNER) or
    /// `kubernetes` (a runner pod per session, the WORKSPACE_K8S_* settings).
    #[arg(long, env = "WORKSPACE_BACKEND", default_value = "local")]
    pub backend: String,
    /// The Kubernetes runner backend (read only with WORKSPACE_BACKEND=kubernetes).
    #[command(flatten, next_help_heading = "Kubernetes runner backend")]
    pub kube: crate::kube::config::KubeArgs,
}

/// Where session runners live.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// A sandbox on this host per session ([`Config::sandbox`]).
    Local,
    /// A runner pod per session.
    Kubernetes(Box<crate::kube::config::KubeSettings>),
}

/// How callers are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// The principal in the create-session body is trusted; no ownership checks.
    Payload,
    /// A shared token plus tenant/actor/roles headers; sessions are bound to their owner.
    TrustedHeaders {
        /// The shared token.
        token: String,
        /// Tenant header name.
        tenant_header: String,
        /// Actor header name.
        actor_header: String,
        /// Roles header name.
        roles_header: String,
        /// Token header name.
        token_header: String,
    },
}

/// Validated configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The data directory (event log, and by default workspaces, artifacts and sockets).
    pub data_dir: PathBuf,
    /// Host directories sessions may copy (`WORKSPACE_SOURCE_ROOTS`); empty: none.
    pub source_roots: Vec<PathBuf>,
    /// Where the events are kept: the log file in `events_dir`, or a JetStream stream.
    pub event_store: EventStoreConfig,
    /// Event log directory (of the file store).
    pub events_dir: PathBuf,
    /// Workspaces root.
    pub workspace_root: PathBuf,
    /// Artifacts root.
    pub artifact_root: PathBuf,
    /// Per-session runner socket directories.
    pub run_dir: PathBuf,
    /// Event log (file store) and artifact durability.
    pub fsync: FsyncPolicy,
    /// The read-model stores.
    pub read_models: ReadModelConfig,
    /// Runner isolation.
    pub sandbox: SandboxMode,
    /// Runner binary.
    pub runner_exe: PathBuf,
    /// The bubblewrap program: a name looked up on `PATH` (`bwrap`) or a path.
    pub bwrap: PathBuf,
    /// Host uid and gid of bubblewrap sandboxes when the service runs as root.
    pub sandbox_user: HostIdentity,
    /// Limits of every process in a bubblewrap sandbox.
    pub sandbox_limits: SandboxLimits,
    /// Host toolchains sandboxes see read-only.
    pub toolchains: Toolchains,
    /// Where session runners live (`WORKSPACE_BACKEND`).
    pub backend: Backend,
    /// Authentication.
    pub auth: AuthMode,
    /// Inline size limit of output, logs and arguments.
    pub max_inline_bytes: usize,
    /// Executor concurrency.
    pub executor_concurrency: usize,
    /// Queue deadline.
    pub queue_timeout: Duration,
    /// Provisioning deadline.
    pub provision_timeout: Duration,
    /// Expiry sweep interval.
    pub expiry_sweep: Duration,
    /// How the executors' work queue delivers (ADR 0009).
    pub work_queue: WorkQueueConfig,
    /// The roles this process runs: all three for `serve`.
    pub roles: Roles,
    /// Whether the k8s delivery tools are offered (`WORKSPACE_ENABLE_K8S_DELIVERY_TOOLS`).
    pub k8s_delivery_tools: bool,
    /// The pod janitor's settings (it runs beside executors on the kubernetes backend).
    pub janitor: crate::kube::janitor::JanitorSettings,
}

/// The roles of one process: `serve` runs all three; `api`, `executor` and `projector` run one
/// each, beside the others in other processes on the same JetStream stream (and Valkey).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP API (every route): validates, decides policy, appends commands, reads the read
    /// models. Without it a process serves only `/healthz`, `/readyz` and `/metrics`.
    pub api: bool,
    /// Takes queued invocations from the work queue and runs them in the session's runner.
    pub executor: bool,
    /// Folds the events into the shared read models (Valkey). A process whose read models are
    /// in its own memory always folds them itself, whatever its roles.
    pub projector: bool,
}

impl Roles {
    /// `serve`: the whole service in one process.
    pub const ALL: Roles = Roles {
        api: true,
        executor: true,
        projector: true,
    };
    /// `api`.
    pub const API: Roles = Roles {
        api: true,
        executor: false,
        projector: false,
    };
    /// `executor`.
    pub const EXECUTOR: Roles = Roles {
        api: false,
        executor: true,
        projector: false,
    };
    /// `projector`.
    pub const PROJECTOR: Roles = Roles {
        api: false,
        executor: false,
        projector: true,
    };

    /// The roles by name, for logs: `api+executor+projector`.
    pub fn describe(self) -> String {
        let names: Vec<&str> = [
            (self.api, "api"),
            (self.executor, "executor"),
            (self.projector, "projector"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        names.join("+")
    }
}

/// How the executors' work queue delivers and when a claim is presumed dead (ADR 0009): the
/// grace (`WORKSPACE_EXECUTOR_LIVENESS_GRACE_SECONDS`) and the ack wait
/// (`WORKSPACE_EXECUTOR_ACK_WAIT_SECONDS`) are options; the deliveries are the ADR's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkQueueConfig {
    /// How long a delivery may go unsettled before it is delivered again.
    pub ack_wait: Duration,
    /// Deliveries of one invocation at most (the last one never starts a run).
    pub max_deliver: u32,
    /// How long after `started.deadline` a claim is presumed dead.
    pub liveness_grace: Duration,
}

impl Default for WorkQueueConfig {
    fn default() -> Self {
        Self {
            ack_wait: crate::workqueue::DEFAULT_ACK_WAIT,
            max_deliver: crate::workqueue::DEFAULT_MAX_DELIVER,
            liveness_grace: crate::workqueue::DEFAULT_LIVENESS_GRACE,
        }
    }
}

/// A configuration error: the process exits with 64 before binding anything.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The fewest processes a sandbox uid may be limited to.
const MIN_SANDBOX_PROCESSES: u64 = 64;
/// The smallest file-size limit of a sandbox: above any file a file tool writes (a frame).
const MIN_SANDBOX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A sandbox uid or gid: never root, and never an id the kernel or NFS treat specially
/// (65534, the overflow id `nobody` that other daemons share; 65535 and 2^32-1, which mean -1).
fn sandbox_id(name: &str, id: u32) -> Result<u32, ConfigError> {
    match id {
        0 => Err(ConfigError(format!(
            "{name}=0: sandboxes never run as root"
        ))),
        65534 | 65535 | u32::MAX => Err(ConfigError(format!(
            "{name}={id} is reserved (nobody, or -1); pick an id no account uses"
        ))),
        id => Ok(id),
    }
}

impl TryFrom<ServeArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, Self::Error> {
        let event_store = EventStoreConfig::try_from(args.event_store)?;
        let read_models = ReadModelConfig::try_from(args.read_models)?;
        read_models.check_one_store()?;
        let fsync: FsyncPolicy = args
            .eventlog_fsync
            .parse()
            .map_err(|e| ConfigError(format!("WORKSPACE_EVENTLOG_FSYNC: {e}")))?;
        let sandbox = match args.runner.to_ascii_lowercase().as_str() {
            "bubblewrap" | "bwrap" => SandboxMode::Bubblewrap,
            "unsandboxed" => SandboxMode::Unsandboxed,
            other => {
                return Err(ConfigError(format!(
                    "WORKSPACE_RUNNER={other}: use `bubblewrap` or `unsandboxed`"
                )));
            }
        };
        let auth = match args.auth_mode.to_ascii_lowercase().as_str() {
            "payload" => AuthMode::Payload,
            "trusted_headers" => {
                let token = args
                    .auth_shared_token
                    .filter(|t| !t.trim().is_empty())
                    .ok_or_else(|| {
                        ConfigError(
                            "WORKSPACE_AUTH_SHARED_TOKEN is required when WORKSPACE_AUTH_MODE=trusted_headers"
                                .into(),
                        )
                    })?;
                AuthMode::TrustedHeaders {
                    token,
                    tenant_header: args.auth_tenant_header,
                    actor_header: args.auth_actor_header,
                    roles_header: args.auth_roles_header,
                    token_header: args.auth_token_header,
                }
            }
            other => {
                return Err(ConfigError(format!(
                    "unsupported WORKSPACE_AUTH_MODE={other}: use `payload` or `trusted_headers`"
                )));
            }
        };
        if args.executor_concurrency == 0 {
            return Err(ConfigError(
                "WORKSPACE_EXECUTOR_CONCURRENCY must be > 0".into(),
            ));
        }
        let sandbox_user = HostIdentity {
            uid: sandbox_id("WORKSPACE_SANDBOX_UID", args.sandbox_uid)?,
            gid: sandbox_id("WORKSPACE_SANDBOX_GID", args.sandbox_gid)?,
        };
        if args.sandbox_max_processes < MIN_SANDBOX_PROCESSES {
            return Err(ConfigError(format!(
                "WORKSPACE_SANDBOX_MAX_PROCESSES must be at least {MIN_SANDBOX_PROCESSES}: a sandbox alone needs up to about 21"
            )));
        }
        if args.sandbox_max_file_bytes < MIN_SANDBOX_FILE_BYTES {
            return Err(ConfigError(format!(
                "WORKSPACE_SANDBOX_MAX_FILE_BYTES must be at least {MIN_SANDBOX_FILE_BYTES}: the file tools write files up to the frame size"
            )));
        }
        let sandbox_limits = SandboxLimits {
            max_processes: args.sandbox_max_processes,
            max_file_bytes: args.sandbox_max_file_bytes,
        };
        let runner_exe = match args.runner_exe {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| ConfigError(format!("cannot locate this binary: {e}")))?,
        };
        let source_roots = parse_source_roots(args.source_roots.as_deref().unwrap_or(""))?;
        let janitor = crate::kube::janitor::JanitorSettings::try_from(args.janitor)
            .map_err(|e| ConfigError(e.to_string()))?;
        let toolchains = parse_toolchain_dirs(args.toolchain_dirs.as_deref().unwrap_or(""))?;
        let backend = match args.backend.to_ascii_lowercase().as_str() {
            "local" => Backend::Local,
            "kubernetes" | "k8s" => Backend::Kubernetes(Box::new(
                crate::kube::config::KubeSettings::try_from(args.kube)
                    .map_err(|e| ConfigError(e.0))?,
            )),
            other => {
                return Err(ConfigError(format!(
                    "WORKSPACE_BACKEND={other}: use `local` or `kubernetes`"
                )));
            }
        };
        let data = args.data_dir;
        Ok(Config {
            listen: SocketAddr::new(args.bind_addr, args.port),
            data_dir: data.clone(),
            source_roots,
            event_store,
            events_dir: data.join("events"),
            workspace_root: args
                .workspace_root
                .unwrap_or_else(|| data.join("workspaces")),
            artifact_root: args.artifact_root.unwrap_or_else(|| data.join("artifacts")),
            run_dir: data.join("run"),
            fsync,
            read_models,
            sandbox,
            runner_exe,
            bwrap: PathBuf::from("bwrap"),
            sandbox_user,
            sandbox_limits,
            toolchains,
            backend,
            auth,
            max_inline_bytes: args.max_inline_bytes,
            executor_concurrency: args.executor_concurrency,
            queue_timeout: Duration::from_secs(args.queue_timeout_seconds.max(1)),
            provision_timeout: Duration::from_secs(args.provision_timeout_seconds.max(1)),
            expiry_sweep: Duration::from_secs(args.expiry_sweep_seconds.max(1)),
            work_queue: WorkQueueConfig {
                liveness_grace: Duration::from_secs(args.executor_liveness_grace_seconds),
                ack_wait: Duration::from_secs(args.executor_ack_wait_seconds.max(1)),
                ..WorkQueueConfig::default()
            },
            roles: Roles::ALL,
            k8s_delivery_tools: args.enable_k8s_delivery_tools,
            janitor,
        })
    }
}

impl Config {
    /// This configuration for a process running only `roles`. Roles in separate processes
    /// share the events, so they need the JetStream store (the log file is locked by the one
    /// process that serves it); a projector alone needs the shared read models it writes.
    pub fn for_roles(mut self, roles: Roles) -> Result<Self, ConfigError> {
        if roles != Roles::ALL && matches!(self.event_store, EventStoreConfig::File) {
            return Err(ConfigError(format!(
                "the `{}` role runs beside the others only on the JetStream event store: set NATS_URL \
                 (the event log file is locked by the one process that serves it; `serve` runs \
                 every role in one process)",
                roles.describe()
            )));
        }
        if roles == Roles::PROJECTOR && self.read_models.valkey.is_none() {
            return Err(ConfigError(
                "the `projector` role writes the shared read models: set VALKEY_ADDR (or \
                 VALKEY_HOST) with INVOCATION_STORE_BACKEND=valkey and SESSION_STORE_BACKEND=valkey"
                    .into(),
            ));
        }
        self.roles = roles;
        Ok(self)
    }
}

/// `WORKSPACE_SOURCE_ROOTS`: absolute, existing directories, never `/` (that would let a
/// session copy the whole host, `/etc/shadow` included).
fn parse_source_roots(list: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let bad = |root: &std::path::Path, why: &str| {
        ConfigError(format!("WORKSPACE_SOURCE_ROOTS: {}: {why}", root.display()))
    };
    let mut roots = Vec::new();
    for root in std::env::split_paths(list).filter(|p| !p.as_os_str().is_empty()) {
        if !root.is_absolute() {
            return Err(bad(&root, "must be an absolute path"));
        }
        match std::fs::canonicalize(&root) {
            Ok(real) if real == std::path::Path::new("/") => {
                return Err(bad(
                    &root,
                    "the host's root directory cannot be a source root",
                ));
            }
            Ok(real) if real.is_dir() => {}
            Ok(_) => return Err(bad(&root, "not a directory")),
            Err(e) => return Err(bad(&root, &e.to_string())),
        }
        roots.push(root);
    }
    Ok(roots)
}

/// `WORKSPACE_TOOLCHAIN_DIRS`: absolute directories, canonicalised (a sandbox binds the real
/// path), never `/` nor a directory whose parent is `/` (its root would be the host's).
pub fn parse_toolchain_dirs(list: &str) -> Result<Toolchains, ConfigError> {
    let bad = |dir: &std::path::Path, why: &str| {
        ConfigError(format!(
            "WORKSPACE_TOOLCHAIN_DIRS: {}: {why}",
            dir.display()
        ))
    };
    let mut bins = Vec::new();
    for dir in std::env::split_paths(list).filter(|p| !p.as_os_str().is_empty()) {
        if !dir.is_absolute() {
            return Err(bad(&dir, "must be an absolute path"));
        }
        let real = std::fs::canonicalize(&dir).map_err(|e| bad(&dir, &e.to_string()))?;
        if !real.is_dir() {
            return Err(bad(&dir, "not a directory"));
        }
        if real.parent().is_none_or(|p| p == std::path::Path::new("/")) {
            return Err(bad(
                &dir,
                "its parent would be the host's root directory: name a toolchain's bin directory",
            ));
        }
        bins.push(real);
    }
    Ok(Toolchains::new(bins))
}

impl Config {
    /// A configuration for tests: everything under `data_dir`, port 0, loopback.
    pub fn for_tests(
        data_dir: &std::path::Path,
        runner_exe: PathBuf,
        sandbox: SandboxMode,
    ) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
            source_roots: Vec::new(),
            event_store: EventStoreConfig::File,
            events_dir: data_dir.join("events"),
            workspace_root: data_dir.join("workspaces"),
            artifact_root: data_dir.join("artifacts"),
            run_dir: data_dir.join("run"),
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            read_models: ReadModelConfig::default(),
            sandbox,
            runner_exe,
            bwrap: PathBuf::from("bwrap"),
            sandbox_user: HostIdentity::default(),
            sandbox_limits: SandboxLimits::default(),
            toolchains: Toolchains::default(),
            backend: Backend::Local,
            auth: AuthMode::Payload,
            max_inline_bytes: 8192,
            executor_concurrency: 64,
            queue_timeout: Duration::from_secs(60),
            provision_timeout: Duration::from_secs(120),
            expiry_sweep: Duration::from_millis(200),
            // A delivery left by a stopped server comes back within seconds, not 30 s.
            work_queue: WorkQueueConfig {
                ack_wait: Duration::from_secs(3),
                ..WorkQueueConfig::default()
            },
            roles: Roles::ALL,
            k8s_delivery_tools: false,
            janitor: crate::kube::janitor::JanitorSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["serve", "--runner-exe", "/bin/true"];
        argv.extend_from_slice(extra);
        Config::try_from(Cli::try_parse_from(argv).expect("arguments parse").args)
    }

    #[test]
    fn the_defaults_are_the_embedded_mode_on_port_50053() {
        let c = parse(&[]).expect("valid");
        assert_eq!(c.listen.port(), 50053);
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.events_dir, PathBuf::from(".workspace-data/events"));
        assert_eq!(c.fsync, FsyncPolicy::Interval(Duration::from_secs(1)));
        assert_eq!(c.sandbox, SandboxMode::Bubblewrap);
        assert_eq!(c.auth, AuthMode::Payload);
        assert_eq!(c.event_store, EventStoreConfig::File);
        assert_eq!(c.read_models, ReadModelConfig::default());
    }

    #[test]
    fn nats_url_selects_the_jetstream_store_and_valkey_is_refused_for_now() {
        let c = parse(&["--nats-url", "nats://127.0.0.1:4223"]).expect("valid");
        assert!(
            matches!(&c.event_store, EventStoreConfig::JetStream(o) if o.url == "nats://127.0.0.1:4223"),
            "{:?}",
            c.event_store
        );
        let err = parse(&[
            "--invocation-store-backend",
            "valkey",
            "--valkey-addr",
            "127.0.0.1:6379",
        ])
        .unwrap_err();
        assert!(err.0.contains("SESSION_STORE_BACKEND"), "{err}");
        let err = parse(&["--event-store", "file", "--nats-url", "nats://h:4222"]).unwrap_err();
        assert!(
            err.0.contains("WORKSPACE_EVENT_STORE") && err.0.contains("NATS_URL"),
            "{err}"
        );
    }

    #[test]
    fn trusted_headers_without_a_token_is_refused() {
        let err = parse(&["--auth-mode", "trusted_headers"]).unwrap_err();
        assert!(err.0.contains("WORKSPACE_AUTH_SHARED_TOKEN"), "{err}");
        let ok = parse(&["--auth-mode", "trusted_headers", "--auth-shared-token", "t"]).unwrap();
        assert!(matches!(ok.auth, AuthMode::TrustedHeaders { .. }));
    }

    #[test]
    fn unknown_values_are_refused_before_anything_starts() {
        for args in [
            &["--auth-mode", "magic"][..],
            &["--runner", "chroot"],
            &["--event-store", "jetstream"],
            &["--event-store", "kafka"],
            &["--eventlog-fsync", "sometimes"],
            &["--executor-concurrency", "0"],
            &["--source-roots", "relative/dir"],
            &["--source-roots", "/"],
            &["--source-roots", "/nonexistent-source-root"],
            &["--source-roots", "/etc/passwd"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn source_roots_are_a_colon_separated_list_and_default_to_none() {
        assert!(parse(&[]).unwrap().source_roots.is_empty());
        let c = parse(&["--source-roots", "/usr:/tmp:"]).unwrap();
        assert_eq!(
            c.source_roots,
            [PathBuf::from("/usr"), PathBuf::from("/tmp")]
        );
    }

    #[test]
    fn sandboxes_run_as_an_unprivileged_configurable_user_with_limits() {
        let c = parse(&[]).expect("valid");
        assert_eq!(
            c.sandbox_user,
            HostIdentity {
                uid: 61000,
                gid: 61000
            }
        );
        assert_eq!(c.sandbox_limits, SandboxLimits::default());
        let c = parse(&[
            "--sandbox-uid",
            "70000",
            "--sandbox-gid",
            "70001",
            "--sandbox-max-processes",
            "512",
            "--sandbox-max-file-bytes",
            "1073741824",
        ])
        .expect("valid");
        assert_eq!(
            c.sandbox_user,
            HostIdentity {
                uid: 70000,
                gid: 70001
            }
        );
        assert_eq!(c.sandbox_limits.max_processes, 512);
        assert_eq!(c.sandbox_limits.max_file_bytes, 1 << 30);
        for args in [
            &["--sandbox-uid", "0"][..],
            &["--sandbox-gid", "0"],
            &["--sandbox-uid", "65534"],
            &["--sandbox-gid", "4294967295"],
            &["--sandbox-max-processes", "10"],
            &["--sandbox-max-file-bytes", "1000"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn the_unsandboxed_runner_must_be_asked_for_by_name() {
        assert_eq!(
            parse(&["--runner", "unsandboxed"]).unwrap().sandbox,
            SandboxMode::Unsandboxed
        );
    }
}
