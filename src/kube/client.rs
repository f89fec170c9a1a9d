//! Runner pods on the API server: create ([`RunnerPods::create`]), wait until ready
//! ([`RunnerPods::wait_ready`], a get then a watch, bounded by the ready timeout), find by
//! session label, claim a warm pod ([`RunnerPods::claim`]) and delete ([`RunnerPods::delete`]).
//! Every API failure becomes a [`PodError`] with a stable code; nothing here builds a pod
//! spec (that is [`super::pod`]) or decides when to call these.

use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use tokio::time::Instant;

use crate::error_code::ErrorCode;

/// Longest single watch request (the API server caps them; the loop asks again).
const MAX_WATCH_SECONDS: u32 = 290;

/// Why a runner pod operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The API server refused the executor (its Role lacks the verb).
    #[error("the Kubernetes API refused the executor: {0}")]
    Forbidden(String),
    /// A pod of that name exists and belongs to another session.
    #[error("pod {0} already exists and belongs to another session")]
    Taken(String),
    /// The pod failed or can never become ready.
    #[error("runner pod failed: {0}")]
    Failed(String),
    /// The pod was not ready before the deadline.
    #[error("runner pod not ready within {}s{}", .waited.as_secs(), .last.as_deref().map(|l| format!(" ({l})")).unwrap_or_default())]
    NotReady {
        /// How long it was waited for.
        waited: Duration,
        /// The last reason the pod gave for not being ready.
        last: Option<String>,
    },
    /// Any other API failure (unreachable, 5xx, a malformed answer).
    #[error("Kubernetes API error: {0}")]
    Api(#[source] kube::Error),
}

impl PodError {
    /// The stable error code a session failed by this records.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Forbidden(_) | Self::Taken(_) => ErrorCode::Internal,
            Self::Failed(_) => ErrorCode::ExecutionFailed,
            Self::NotReady { .. } => ErrorCode::Timeout,
            Self::Api(_) => ErrorCode::Unavailable,
        }
    }

    /// The message a failed session records: the pod's own reason, never credentials (the
    /// API server's messages name objects, not their contents).
    pub fn message(&self) -> String {
        match self {
            // The Role is the operator's business: the log has the details.
            Self::Forbidden(_) => {
                "the executor may not manage runner pods (see the service log)".into()
            }
            other => other.to_string(),
        }
    }
}

fn api_error(e: kube::Error) -> PodError {
    match &e {
        kube::Error::Api(status) if status.code == 403 => {
            PodError::Forbidden(status.message.clone())
        }
        _ => PodError::Api(e),
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Where a pod stands on its way to ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every container ready.
    Ready,
    /// Not yet; the reason it gives, if any.
    Waiting(Option<String>),
    /// It never will be: the reason.
    Failed(String),
}

/// Reasons a container waits for that no amount of waiting fixes.
const HOPELESS: [&str; 4] = [
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImageNeverPull",
];

/// Reads a pod's status (a pure function: tested on its own).
pub fn readiness(pod: &Pod) -> Readiness {
    let Some(status) = &pod.status else {
        return Readiness::Waiting(None);
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if matches!(phase, "Failed" | "Succeeded" | "Unknown") {
        let mut reason = format!("phase {phase}");
        if let Some(r) = &status.reason {
            reason.push_str(&format!(": {r}"));
        }
        if let Some(m) = &status.message {
            reason.push_str(&format!(": {m}"));
        }
        // A failed clone says why in its termination message (git's stderr).
        for c in status.init_container_statuses.iter().flatten() {
            if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref())
                && t.exit_code != 0
            {
                reason = format!(
                    "init container {} exited {}{}",
                    c.name,
                    t.exit_code,
                    t.message
                        .as_deref()
                        .or(t.reason.as_deref())
                        .map(|m| format!(": {}", m.trim()))
                        .unwrap_or_default()
                );
            }
        }
        return Readiness::Failed(reason);
    }
    let mut waiting = None;
    for c in status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
    {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_else(|| "waiting".into());
            let text = format!(
                "container {}: {reason}{}",
                c.name,
                w.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            if HOPELESS.contains(&reason.as_str()) {
                return Readiness::Failed(text);
            }
            waiting = Some(text);
        }
    }
    if phase == "Running"
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    {
        return Readiness::Ready;
    }
    if waiting.is_none() {
        waiting = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.status == "False" && c.reason.is_some())
            .map(|c| {
                format!(
                    "{}: {}{}",
                    c.type_,
                    c.reason.as_deref().unwrap_or_default(),
                    c.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )
            });
    }
    Readiness::Waiting(waiting.or_else(|| Some(format!("phase {phase}"))))
}

/// The runner pods of one namespace.
#[derive(Clone)]
pub struct RunnerPods {
    api: Api<Pod>,
}

impl std::fmt::Debug for RunnerPods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerPods").finish_non_exhaustive()
    }
}

/// The annotation naming the session a pod belongs to (exact, unlike the label).
pub const SESSION_ANNOTATION: &str = "workspace.io/session-id";

impl RunnerPods {
    /// The pods of `namespace` through `client`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    /// Creates `pod`. A pod of the same name that already belongs to the same session (an
    /// earlier attempt of this provisioning) is adopted; one of another session is refused.
    pub async fn create(&self, pod: &Pod) -> Result<Pod, PodError> {
        match self.api.create(&PostParams::default(), pod).await {
            Ok(created) => Ok(created),
            Err(e) if status_code(&e) == Some(409) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let existing = self.api.get(&name).await.map_err(api_error)?;
                let owner = |p: &Pod| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(SESSION_ANNOTATION).cloned())
                };
                if owner(&existing).is_some() && owner(&existing) == owner(pod) {
                    tracing::info!(pod = %name, "runner pod already exists for this session; adopted");
                    Ok(existing)
                } else {
                    Err(PodError::Taken(name))
                }
            }
            Err(e) => Err(api_error(e)),
        }
    }

    /// Waits until the pod is ready, for at most `timeout`: a get, then watches of that pod
    /// from the version read (asked again when the API server ends one).
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<Pod, PodError> {
        let deadline = Instant::now() + timeout;
        let not_ready = |last: Option<String>| PodError::NotReady {
            waited: timeout,
            last,
        };
        let mut pod = self.api.get(name).await.map_err(api_error)?;
        let mut last = None;
        loop {
            match readiness(&pod) {
                Readiness::Ready => return Ok(pod),
                Readiness::Failed(reason) => return Err(PodError::Failed(reason)),
                Readiness::Waiting(reason) => last = reason.or(last),
            }
            let version = pod.metadata.resource_version.clone().unwrap_or_default();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(not_ready(last));
            }
            let params = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(
                    u32::try_from(left.as_secs().max(1))
                        .unwrap_or(MAX_WATCH_SECONDS)
                        .min(MAX_WATCH_SECONDS),
                );
            let watched = tokio::time::timeout_at(deadline, async {
                let mut events = self.api.watch(&params, &version).await?.boxed();
                while let Some(event) = events.try_next().await? {
                    match event {
                        WatchEvent::Added(p) | WatchEvent::Modified(p) => return Ok(Some(p)),
                        WatchEvent::Deleted(_) => {
                            return Ok(None);
                        }
                        WatchEvent::Bookmark(_) => {}
                        WatchEvent::Error(status) => {
                            return Err(kube::Error::Api(status));
                        }
                    }
                }
                // The API server ended the watch: read the pod again.
                self.api.get(name).await.map(Some)
            })
            .await;
            pod = match watched {
                Err(_) => return Err(not_ready(last)),
                Ok(Ok(Some(p))) => p,
                Ok(Ok(None)) => return Err(PodError::Failed("the pod was deleted".into())),
                // An expired version (410): start from a fresh read.
                Ok(Err(e)) if status_code(&e) == Some(410) => {
                    self.api.get(name).await.map_err(api_error)?
                }
                Ok(Err(e)) => return Err(api_error(e)),
            };
        }
    }

    /// Deletes the pod; one that is already gone is fine.
    pub async fn delete(&self, name: &str) -> Result<(), PodError> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(api_error(e)),
        }
    }

    /// Deletes the pod as it was listed: conditional on its uid and resource version, so a
    /// pod changed since (claimed by a session on another replica) is left alone. `true`
    /// when this call deleted it; `false` when it was gone (404) or had changed (409).
    pub async fn delete_unchanged(&self, pod: &Pod) -> Result<bool, PodError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &dp).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(false),
            Err(e) => Err(api_error(e)),
        }
    }

    /// The pods matching a label selector.
    pub async fn list(&self, selector: &str) -> Result<Vec<Pod>, PodError> {
        Ok(self
            .api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(api_error)?
            .items)
    }

    /// Claims a warm pod for a session: a JSON merge patch of its labels and annotations and,
    /// with `active_deadline_seconds`, its `spec.activeDeadlineSeconds` (a field the API
    /// server lets a running pod gain), conditional on the `resourceVersion` it was listed
    /// at. `Ok(None)` when another replica changed it first (409): the claim is atomic across
    /// replicas.
    pub async fn claim(
        &self,
        pod: &Pod,
        labels: &std::collections::BTreeMap<String, String>,
        annotations: &std::collections::BTreeMap<String, String>,
        active_deadline_seconds: Option<i64>,
    ) -> Result<Option<Pod>, PodError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut patch = serde_json::json!({
            "metadata": {
                "resourceVersion": pod.metadata.resource_version,
                "labels": labels,
                "annotations": annotations,
            }
        });
        if let Some(seconds) = active_deadline_seconds {
            patch["spec"] = serde_json::json!({ "activeDeadlineSeconds": seconds });
        }
        match self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(p) => Ok(Some(p)),
            Err(e) if matches!(status_code(&e), Some(409 | 404)) => Ok(None),
            Err(e) => Err(api_error(e)),
        }
    }

    /// The kube API handle (the exec stream uses it).
    pub fn api(&self) -> &Api<Pod> {
        &self.api
    }
}
