//! [`KubeRunnerProvider`]: the runner seam (`RunnerProvider`) on Kubernetes. Provisioning a
//! session creates its runner pod ([`super::pod::runner_pod`]) or claims a warm one
//! ([`super::pool::WarmPool`]), waits until it is ready within the ready timeout, and deletes
//! it when it is not (recording the pod's reason). A session's runner is reached through the
//! pod's exec stream ([`super::transport`]), one per session per executor, behind a private
//! unix socket of this executor, so the executor's [`SocketRunner`] and everything above it
//! are the same as for a local sandbox.
//!
//! This module never builds pod specs itself and never decides policy.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use tokio::io::{AsyncRead, ReadBuf};
use workspace_events::{ErrorInfo, RuntimeRef, WorkspaceSource};

use super::client::{PodError, RunnerPods};
use super::config::KubeSettings;
use super::pod::{RunnerPodRequest, label_value, runner_pod};
use super::pool::WarmPool;
use super::transport::{BoxRead, BoxWrite, Bridge, Dial};
use crate::error_code::ErrorCode;
use crate::ids::SessionId;
use crate::runner::{
    ProvisionSpec, RunnerError, RunnerProvider, SandboxSpec, SessionRunner, SocketRunner,
};

/// Where the runner image keeps the `workspace` binary (runner-images/Dockerfile).
pub const RUNNER_BINARY: &str = "/usr/local/bin/workspace";

/// The command an executor starts in the runner container: the runner serving the
/// multiplexed stream on stdin/stdout, confined to the checkout.
pub fn exec_argv(settings: &KubeSettings) -> Vec<String> {
    vec![
        RUNNER_BINARY.into(),
        "runner".into(),
        "--stdio".into(),
        "--root".into(),
        settings.workdir.clone(),
        "--isolation".into(),
        "pod".into(),
    ]
}

/// The exec parameters: the runner container, stdin and stdout only (stderr is the runner's
/// log and would interleave), no TTY.
pub fn attach_params(settings: &KubeSettings) -> AttachParams {
    AttachParams::default()
        .container(settings.container.clone())
        .stdin(true)
        .stdout(true)
        .stderr(false)
        .tty(false)
}

/// Opens the byte stream to a pod's runner.
#[async_trait::async_trait]
pub trait PodExec: Send + Sync + 'static {
    /// A new stream to `workspace runner --stdio` in `pod`.
    async fn dial(&self, pod: &str) -> io::Result<(BoxRead, BoxWrite)>;
}

/// [`PodExec`] through the API server's exec endpoint (WebSocket, `v5.channel.k8s.io`).
pub struct KubeExec {
    pods: RunnerPods,
    settings: Arc<KubeSettings>,
}

impl KubeExec {
    /// Exec into the pods of `pods`.
    pub fn new(pods: RunnerPods, settings: Arc<KubeSettings>) -> Self {
        Self { pods, settings }
    }
}

/// The exec stream's stdout, holding the attached process (dropping it ends the stream).
struct ExecOut {
    out: tokio::io::ReadHalf<tokio::io::SimplexStream>,
    _process: kube::api::AttachedProcess,
}

impl AsyncRead for ExecOut {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.out).poll_read(cx, buf)
    }
}

#[async_trait::async_trait]
impl PodExec for KubeExec {
    async fn dial(&self, pod: &str) -> io::Result<(BoxRead, BoxWrite)> {
        let mut process = self
            .pods
            .api()
            .exec(
                pod,
                exec_argv(&self.settings),
                &attach_params(&self.settings),
            )
            .await
            .map_err(io::Error::other)?;
        let (Some(stdin), Some(stdout)) = (process.stdin(), process.stdout()) else {
            return Err(io::Error::other("the exec stream has no stdin or stdout"));
        };
        let read: BoxRead = Box::pin(ExecOut {
            out: stdout,
            _process: process,
        });
        Ok((read, Box::pin(stdin)))
    }
}

struct PodDial {
    exec: Arc<dyn PodExec>,
    pod: String,
}

#[async_trait::async_trait]
impl Dial for PodDial {
    async fn dial(&self) -> io::Result<(BoxRead, BoxWrite)> {
        self.exec.dial(&self.pod).await
    }
}

struct Attached {
    pod: String,
    _bridge: Bridge,
    runner: Arc<SocketRunner>,
}

/// The Kubernetes runner provider; see the module documentation.
pub struct KubeRunnerProvider {
    settings: Arc<KubeSettings>,
    pods: RunnerPods,
    exec: Arc<dyn PodExec>,
    run_dir: PathBuf,
    attached: Mutex<HashMap<SessionId, Arc<Attached>>>,
    pool: Option<Arc<WarmPool>>,
    refill: Option<tokio_util::sync::DropGuard>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn info(code: ErrorCode, message: impl Into<String>, retryable: bool) -> ErrorInfo {
    ErrorInfo {
        code: code.into(),
        message: message.into(),
        retryable,
    }
}

fn pod_failure(e: &PodError) -> ErrorInfo {
    let retryable = matches!(e, PodError::NotReady { .. } | PodError::Api(_));
    info(e.code(), e.message(), retryable)
}

impl KubeRunnerProvider {
    /// A provider creating pods through `pods`, reaching them through `exec`; the bridges'
    /// sockets live in `run_dir` (private to the service). With `pool`, sessions with an
    /// empty workspace take a warm pod when one is ready.
    pub fn new(
        settings: Arc<KubeSettings>,
        pods: RunnerPods,
        exec: Arc<dyn PodExec>,
        run_dir: PathBuf,
        pool: Option<Arc<WarmPool>>,
    ) -> Self {
        Self {
            settings,
            pods,
            exec,
            run_dir,
            attached: Mutex::new(HashMap::new()),
            pool,
            refill: None,
        }
    }

    /// The provider of a service process: pods through `client`, reached over their exec
    /// stream; with `refills` (an executor process) and a configured pool size, the warm pool
    /// is refilled in the background while the provider lives.
    pub fn start(
        client: kube::Client,
        settings: Arc<KubeSettings>,
        run_dir: PathBuf,
        refills: bool,
    ) -> Self {
        let pods = RunnerPods::new(client, &settings.namespace);
        let exec = Arc::new(KubeExec::new(pods.clone(), settings.clone()));
        let pool = (settings.warm_pool_size > 0).then(|| {
            Arc::new(WarmPool::new(
                settings.clone(),
                pods.clone(),
                settings.warm_pool_size,
            ))
        });
        let mut provider = Self::new(settings.clone(), pods, exec, run_dir, pool.clone());
        if let Some(pool) = pool.filter(|_| refills) {
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(pool.refill_until(settings.warm_pool_refill, stop.clone()));
            provider.refill = Some(stop.drop_guard());
        }
        provider
    }

    /// The settings.
    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    fn attach(&self, id: &SessionId, pod: &str) -> Result<Arc<Attached>, RunnerError> {
        if let Some(a) = lock(&self.attached).get(id).filter(|a| a.pod == pod) {
            return Ok(a.clone());
        }
        let socket = self.run_dir.join(format!("{}.kube.sock", id.as_str()));
        let bridge = Bridge::bind(
            socket.clone(),
            Arc::new(PodDial {
                exec: self.exec.clone(),
                pod: pod.to_owned(),
            }),
        )
        .map_err(RunnerError::Io)?;
        let attached = Arc::new(Attached {
            pod: pod.to_owned(),
            _bridge: bridge,
            runner: Arc::new(SocketRunner::new(socket, "pod")),
        });
        lock(&self.attached).insert(id.clone(), attached.clone());
        Ok(attached)
    }

    /// The session's pod: known here, or found by its label (provisioned by another
    /// executor, or before a restart).
    async fn find_pod(&self, id: &SessionId) -> Result<Option<String>, PodError> {
        if let Some(a) = lock(&self.attached).get(id) {
            return Ok(Some(a.pod.clone()));
        }
        let selector = format!(
            "app={},workspace_id={}",
            super::pod::APP_LABEL,
            label_value(id.as_str())
        );
        let pods = self.pods.list(&selector).await?;
        Ok(pods
            .into_iter()
            .find(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(super::client::SESSION_ANNOTATION))
                    .is_some_and(|s| s == id.as_str())
            })
            .and_then(|p| p.metadata.name))
    }

    fn runtime(&self, pod: &str) -> RuntimeRef {
        RuntimeRef {
            kind: "kubernetes".into(),
            isolation: "pod".into(),
            workdir: self.settings.workdir.clone(),
            namespace: Some(self.settings.namespace.clone()),
            pod_name: Some(pod.to_owned()),
        }
    }

    /// The cold path: create the pod, wait until it is ready, delete it when it is not.
    async fn create_and_wait(&self, pod: &Pod) -> Result<String, ErrorInfo> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(e) = self.pods.create(pod).await {
            tracing::error!(pod = %name, error = %e, "runner pod not created");
            return Err(pod_failure(&e));
        }
        match self
            .pods
            .wait_ready(&name, self.settings.ready_timeout)
            .await
        {
            Ok(_) => Ok(name),
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "runner pod not ready; deleting it");
                if let Err(d) = self.pods.delete(&name).await {
                    tracing::error!(pod = %name, error = %d, "could not delete a runner pod that failed");
                }
                Err(pod_failure(&e))
            }
        }
    }
}

/// Whether a session can start from a warm pod: an empty workspace, no credentials.
fn warm_eligible(spec: &ProvisionSpec<'_>, settings: &KubeSettings) -> bool {
    matches!(spec.source, WorkspaceSource::Empty)
        && settings
            .git_auth_secret(spec.metadata)
            .ok()
            .flatten()
            .is_none()
}

#[async_trait::async_trait]
impl RunnerProvider for KubeRunnerProvider {
    fn admit(
        &self,
        source: &WorkspaceSource,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), ErrorInfo> {
        let invalid = |m: String| Err(info(ErrorCode::InvalidArgument, m, false));
        if let Err(e) = self.settings.runner_image(metadata) {
            return invalid(e.to_string());
        }
        if let Err(e) = self.settings.git_auth_secret(metadata) {
            return invalid(e.to_string());
        }
        match source {
            WorkspaceSource::Copy { .. } => invalid(
                "source_repo_path is not supported on the kubernetes backend: runner pods never see host paths; use repo_url".into(),
            ),
            WorkspaceSource::Git { repo_url, .. } => match crate::sessions::CloneSource::classify(repo_url) {
                Ok(crate::sessions::CloneSource::Remote) => Ok(()),
                Ok(_) => invalid("repo_url must be a network URL on the kubernetes backend (no host paths)".into()),
                Err(e) => invalid(e.to_string()),
            },
            WorkspaceSource::Empty => Ok(()),
        }
    }

    fn plain_metadata_keys(&self) -> Vec<String> {
        vec![
            self.settings.git_auth_key.clone(),
            self.settings.profile_key.clone(),
        ]
    }

    async fn provision(&self, spec: &ProvisionSpec<'_>) -> Result<RuntimeRef, ErrorInfo> {
        self.admit(spec.source, spec.metadata)?;
        let id = &spec.sandbox.session_id;
        let (repo_url, repo_ref) = match spec.source {
            WorkspaceSource::Git { repo_url, repo_ref } => {
                (Some(repo_url.as_str()), repo_ref.as_deref())
            }
            _ => (None, None),
        };
        let request = RunnerPodRequest {
            session_id: id,
            tenant_id: spec.tenant_id,
            actor_id: spec.actor_id,
            metadata: spec.metadata,
            repo_url,
            repo_ref,
            expires_in: spec.expires_in,
        };
        let pod = runner_pod(&self.settings, &request)
            .map_err(|e| info(e.code(), e.to_string(), false))?;
        if let Some(pool) = self
            .pool
            .as_ref()
            .filter(|_| warm_eligible(spec, &self.settings))
        {
            let profile = self
                .settings
                .runner_image(spec.metadata)
                .ok()
                .and_then(|c| c.profile);
            match pool.claim(profile.as_deref(), &pod).await {
                Ok(Some(name)) => {
                    tracing::info!(session_id = %id, pod = %name, "claimed a warm runner pod");
                    self.attach(id, &name)
                        .map_err(|e| info(ErrorCode::Internal, e.to_string(), true))?;
                    return Ok(self.runtime(&name));
                }
                Ok(None) => {
                    tracing::info!(session_id = %id, "no warm runner pod ready; creating one")
                }
                Err(e) => {
                    tracing::warn!(session_id = %id, error = %e, "warm pool claim failed; creating a pod")
                }
            }
        }
        let name = self.create_and_wait(&pod).await?;
        self.attach(id, &name).map_err(|e| {
            tracing::error!(session_id = %id, error = %e, "runner bridge not bound");
            info(
                ErrorCode::Internal,
                "the session runner could not be reached",
                true,
            )
        })?;
        Ok(self.runtime(&name))
    }

    async fn ensure(&self, spec: &SandboxSpec) -> Result<Arc<dyn SessionRunner>, RunnerError> {
        let id = &spec.session_id;
        if let Some(a) = lock(&self.attached).get(id) {
            return Ok(a.runner.clone());
        }
        let pod = self
            .find_pod(id)
            .await
            .map_err(|e| RunnerError::Unavailable(e.message()))?
            .ok_or_else(|| RunnerError::Start("the session has no runner pod".into()))?;
        Ok(self.attach(id, &pod)?.runner.clone())
    }

    async fn stop(&self, session_id: &SessionId) {
        let attached = lock(&self.attached).remove(session_id);
        let pod = match attached {
            Some(a) => Some(a.pod.clone()),
            None => self.find_pod(session_id).await.ok().flatten(),
        };
        if let Some(pod) = pod
            && let Err(e) = self.pods.delete(&pod).await
        {
            tracing::error!(session_id = %session_id, pod = %pod, error = %e, "could not delete the runner pod");
        }
    }

    fn sessions(&self) -> Vec<SessionId> {
        lock(&self.attached).keys().cloned().collect()
    }

    /// Runner pods outlive an executor: stopping only closes this process's streams.
    async fn detach_all(&self) {
        lock(&self.attached).clear();
    }

    fn isolation(&self) -> &'static str {
        "pod"
    }
}
