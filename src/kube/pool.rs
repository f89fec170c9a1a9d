//! The warm pool: a configured number of ready runner pods per profile with an empty
//! workspace, bound to no session, so a session with an empty workspace starts without
//! waiting for a pod to be scheduled, pulled and started.
//!
//! A warm pod is a session pod spec ([`super::pod::runner_pod`]) for a placeholder session,
//! labelled `app=workspace-warm-runner` (the janitor's `app=workspace-session` selector does
//! not see it) and `workspace.io/pool-profile=<profile>`. A claim ([`WarmPool::claim`]) is
//! one JSON merge patch of the pod's labels and annotations to the session's, conditional on
//! the `resourceVersion` it was listed at: the API server accepts exactly one claim of a pod
//! whatever the number of replicas claiming (the losers get 409 and try the next pod). The
//! refill ([`WarmPool::refill`], in the background) counts the pool from the API server, not
//! from memory, so replicas that refill at once overshoot by at most one round.
//!
//! A warm pod has no `activeDeadlineSeconds` (it waits for a session of unknown lifetime):
//! the session's lifetime is enforced by the service's expiry, not by the kubelet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use super::client::{PodError, Readiness, RunnerPods, readiness};
use super::config::KubeSettings;
use super::pod::{APP_LABEL, RunnerPodRequest, label_value, runner_pod};
use crate::ids::SessionId;

/// `app` label of unclaimed warm pods.
pub const WARM_APP_LABEL: &str = "workspace-warm-runner";
/// Label naming a warm pod's profile (`default` for the default image).
pub const POOL_PROFILE_LABEL: &str = "workspace.io/pool-profile";
/// The profile name of the default image in labels.
pub const DEFAULT_PROFILE: &str = "default";

/// The warm pool of one provider.
pub struct WarmPool {
    settings: Arc<KubeSettings>,
    pods: RunnerPods,
    /// Warm pods kept per profile.
    size: usize,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("size", &self.size)
            .finish()
    }
}

/// The profiles kept warm: the default image and every bundle.
fn profiles(settings: &KubeSettings) -> Vec<Option<String>> {
    std::iter::once(None)
        .chain(settings.bundles.keys().cloned().map(Some))
        .collect()
}

fn profile_label(profile: Option<&str>) -> String {
    label_value(profile.unwrap_or(DEFAULT_PROFILE))
}

/// A warm pod of `profile`, named `<prefix>-warm-<suffix>` (a pure function, like the
/// session pod it is made from).
pub fn warm_pod(
    settings: &KubeSettings,
    profile: Option<&str>,
    suffix: &str,
) -> Result<Pod, super::pod::PodSpecError> {
    let placeholder = SessionId::parse(&format!("warm-{suffix}"))
        .map_err(|e| super::config::KubeConfigError(e.to_string()))?;
    let mut metadata = BTreeMap::new();
    if let Some(p) = profile {
        metadata.insert(settings.profile_key.clone(), p.to_owned());
    }
    let mut pod = runner_pod(
        settings,
        &RunnerPodRequest {
            session_id: &placeholder,
            tenant_id: "",
            actor_id: "",
            metadata: &metadata,
            repo_url: None,
            repo_ref: None,
            expires_in: None,
        },
    )?;
    let labels = pod.metadata.labels.get_or_insert_default();
    labels.insert("app".into(), WARM_APP_LABEL.into());
    labels.insert(POOL_PROFILE_LABEL.into(), profile_label(profile));
    for owner in ["workspace_id", "workspace_tenant", "workspace_actor"] {
        labels.remove(owner);
    }
    pod.metadata.annotations = None;
    Ok(pod)
}

impl WarmPool {
    /// A pool of `size` pods per profile.
    pub fn new(settings: Arc<KubeSettings>, pods: RunnerPods, size: usize) -> Self {
        Self {
            settings,
            pods,
            size,
        }
    }

    fn selector(profile: Option<&str>) -> String {
        format!(
            "app={WARM_APP_LABEL},{POOL_PROFILE_LABEL}={}",
            profile_label(profile)
        )
    }

    /// Claims a ready warm pod of `profile` for the session whose cold pod would be
    /// `session_pod` (its labels and annotations are taken over); `None` when none is ready
    /// or every candidate was claimed by someone else first.
    pub async fn claim(
        &self,
        profile: Option<&str>,
        session_pod: &Pod,
    ) -> Result<Option<String>, PodError> {
        let candidates = self.pods.list(&Self::selector(profile)).await?;
        let labels = session_pod.metadata.labels.clone().unwrap_or_default();
        let annotations = session_pod.metadata.annotations.clone().unwrap_or_default();
        for pod in candidates {
            if pod.metadata.deletion_timestamp.is_some() || readiness(&pod) != Readiness::Ready {
                continue;
            }
            let mut claimed = labels.clone();
            claimed.insert("app".into(), APP_LABEL.into());
            if let Some(p) = self.pods.claim(&pod, &claimed, &annotations).await? {
                return Ok(p.metadata.name);
            }
        }
        Ok(None)
    }

    /// Creates the pods missing from each profile's pool; returns how many it created.
    pub async fn refill(&self) -> Result<usize, PodError> {
        let mut created = 0;
        for profile in profiles(&self.settings) {
            let have = self
                .pods
                .list(&Self::selector(profile.as_deref()))
                .await?
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && !matches!(readiness(p), Readiness::Failed(_))
                })
                .count();
            for _ in have..self.size {
                let suffix = ulid::Ulid::generate().to_string().to_ascii_lowercase();
                let pod = warm_pod(&self.settings, profile.as_deref(), &suffix)
                    .map_err(|e| PodError::Failed(e.to_string()))?;
                self.pods.create(&pod).await?;
                created += 1;
            }
        }
        Ok(created)
    }

    /// Refills every `every` until `shutdown` (and at once).
    pub async fn refill_until(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            match self.refill().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(created = n, "warm runner pods created"),
                Err(e) => tracing::warn!(error = %e, "warm pool refill failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Warm pods kept per profile.
    pub fn size(&self) -> usize {
        self.size
    }
}
