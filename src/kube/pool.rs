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
//! from memory, so replicas that refill at once overshoot by at most one round. It first
//! deletes the warm pods that will never serve a session: those that ended (phase `Failed`,
//! `Succeeded`, `Unknown`) and those still not ready past the ready timeout since their
//! creation (`WORKSPACE_K8S_READY_TIMEOUT_SECONDS`, the cold path's bound); each deletion is
//! conditional on the pod's uid and resource version, so a pod claimed meanwhile is left
//! alone. The pods deleted are not counted, so the same round replaces them.
//!
//! A warm pod is created without `activeDeadlineSeconds` (it waits for a session of unknown
//! lifetime). The claim sets it to what the cold pod of the session would have (the
//! session's lifetime) plus the warm pod's age, since the kubelet counts the deadline from
//! the pod's start: a claimed warm pod is stopped by the kubelet when its session's lifetime
//! ends, exactly as a cold one ([`claimed_deadline`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use time::OffsetDateTime;
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

/// The `activeDeadlineSeconds` a claimed warm pod gets: the session's `lifetime` (the cold
/// pod's `activeDeadlineSeconds`) plus the pod's age at `now`, counted from its start (the
/// kubelet's origin for the deadline), else its creation (a pure function).
pub fn claimed_deadline(warm: &Pod, lifetime: i64, now: OffsetDateTime) -> i64 {
    let since = warm
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(warm.metadata.creation_timestamp.as_ref())
        .and_then(|t| OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond()).ok());
    let age = since.map_or(0, |t| {
        let d = now - t;
        // Rounded up: the deadline is never shorter than the session's lifetime.
        d.whole_seconds() + i64::from(d.subsec_nanoseconds() > 0)
    });
    lifetime.saturating_add(age.max(0)).max(1)
}

/// Why a warm pod is replaced instead of counted (`None`: it counts).
fn hopeless(pod: &Pod, ready_timeout: Duration, now: OffsetDateTime) -> Option<String> {
    match readiness(pod) {
        Readiness::Failed(reason) => Some(reason),
        Readiness::Ready => None,
        Readiness::Waiting(last) => {
            let created = pod.metadata.creation_timestamp.as_ref().and_then(|t| {
                OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond()).ok()
            })?;
            (now - created >= ready_timeout).then(|| {
                format!(
                    "not ready within {}s{}",
                    ready_timeout.as_secs(),
                    last.map(|l| format!(": {l}")).unwrap_or_default()
                )
            })
        }
    }
}

/// What one refill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refill {
    /// Warm pods created.
    pub created: usize,
    /// Warm pods this replica deleted (ended, or not ready in time), by name.
    pub removed: Vec<String>,
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
        let lifetime = session_pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds);
        for pod in candidates {
            if pod.metadata.deletion_timestamp.is_some() || readiness(&pod) != Readiness::Ready {
                continue;
            }
            let mut claimed = labels.clone();
            claimed.insert("app".into(), APP_LABEL.into());
            let deadline = lifetime.map(|l| claimed_deadline(&pod, l, OffsetDateTime::now_utc()));
            if let Some(p) = self
                .pods
                .claim(&pod, &claimed, &annotations, deadline)
                .await?
            {
                return Ok(p.metadata.name);
            }
        }
        Ok(None)
    }

    /// Deletes the warm pods that will never serve a session and creates the pods missing
    /// from each profile's pool.
    pub async fn refill(&self) -> Result<Refill, PodError> {
        let mut done = Refill::default();
        for profile in profiles(&self.settings) {
            let mut have = 0;
            for pod in self.pods.list(&Self::selector(profile.as_deref())).await? {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let now = OffsetDateTime::now_utc();
                let Some(why) = hopeless(&pod, self.settings.ready_timeout, now) else {
                    have += 1;
                    continue;
                };
                let name = pod.metadata.name.clone().unwrap_or_default();
                if self.pods.delete_unchanged(&pod).await? {
                    tracing::info!(pod = %name, reason = %why, "warm runner pod deleted");
                    done.removed.push(name);
                } else {
                    tracing::info!(pod = %name, "warm runner pod gone or changed before its deletion");
                }
            }
            for _ in have..self.size {
                let suffix = ulid::Ulid::generate().to_string().to_ascii_lowercase();
                let pod = warm_pod(&self.settings, profile.as_deref(), &suffix)
                    .map_err(|e| PodError::Failed(e.to_string()))?;
                self.pods.create(&pod).await?;
                done.created += 1;
            }
        }
        Ok(done)
    }

    /// Refills every `every` until `shutdown` (and at once).
    pub async fn refill_until(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            match self.refill().await {
                Ok(r) if r.created == 0 && r.removed.is_empty() => {}
                Ok(r) => tracing::info!(
                    created = r.created,
                    removed = r.removed.len(),
                    "warm pool refilled"
                ),
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn at(unix: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(unix).unwrap())
    }

    #[test]
    fn a_claimed_deadline_is_the_lifetime_plus_the_age_from_the_pods_start() {
        let now = OffsetDateTime::from_unix_timestamp(10_000).unwrap();
        let mut pod = Pod::default();
        assert_eq!(claimed_deadline(&pod, 3600, now), 3600, "unknown age");
        pod.metadata.creation_timestamp = Some(at(9_000));
        assert_eq!(claimed_deadline(&pod, 3600, now), 4600, "from its creation");
        pod.status = Some(PodStatus {
            start_time: Some(at(9_400)),
            ..PodStatus::default()
        });
        assert_eq!(claimed_deadline(&pod, 3600, now), 4200, "from its start");
        let half = now + time::Duration::milliseconds(500);
        assert_eq!(claimed_deadline(&pod, 3600, half), 4201, "rounded up");
        pod.status = Some(PodStatus {
            start_time: Some(at(20_000)),
            ..PodStatus::default()
        });
        assert_eq!(claimed_deadline(&pod, 3600, now), 3600, "a clock ahead");
    }

    #[test]
    fn a_warm_pod_is_replaced_when_it_ended_or_is_not_ready_past_the_timeout() {
        let now = OffsetDateTime::from_unix_timestamp(10_000).unwrap();
        let timeout = Duration::from_secs(60);
        let pod = |phase: &str, created: i64| Pod {
            metadata: kube::api::ObjectMeta {
                creation_timestamp: Some(at(created)),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert!(hopeless(&pod("Failed", 9_990), timeout, now).is_some());
        assert!(hopeless(&pod("Succeeded", 9_990), timeout, now).is_some());
        assert!(hopeless(&pod("Pending", 9_990), timeout, now).is_none());
        let overdue = hopeless(&pod("Pending", 9_900), timeout, now).expect("overdue");
        assert!(overdue.starts_with("not ready within 60s"), "{overdue}");
    }
}
