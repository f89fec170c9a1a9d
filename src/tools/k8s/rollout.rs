//! Waiting for a Deployment's rollout (`k8s.rollout_status`, and `k8s.restart_deployment` with
//! `wait_for_rollout`): kubectl's rule for "complete", followed through one watch.
//!
//! The wait is a GET, then a watch of that one Deployment from the GET's resource version with
//! `timeoutSeconds` = the time left, then (if the watch ended without completion) a last GET.
//! A watch the API server ends is its timeout (it honours `timeoutSeconds`); an `ERROR` event
//! (`410 Gone`: the resource version is too old) starts over with a GET and a new watch while
//! time is left. The observations are capped ([`MAX_OBSERVATIONS`], with the total).

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{WatchEvent, WatchParams};
use schemars::JsonSchema;
use serde::Serialize;

use super::api_failure;
use crate::error_code::ErrorCode;
use crate::tools::ToolFailure;

/// The most observations kept in an output.
pub const MAX_OBSERVATIONS: usize = 50;

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    /// Every replica runs the current template and is available.
    Complete(String),
    /// Still rolling out.
    Waiting(String),
    /// The Deployment's progress deadline passed.
    Failed(String),
}

/// kubectl's `rollout status` rule.
fn progress(d: &Deployment) -> Progress {
    let name = d.metadata.name.as_deref().unwrap_or("deployment");
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Waiting(format!(
            "waiting for deployment {name:?} spec update to be observed"
        ));
    }
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Progress::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let current = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        Progress::Waiting(format!(
            "waiting for deployment {name:?} rollout to finish: {updated} out of {desired} new replicas have been updated"
        ))
    } else if current > updated {
        Progress::Waiting(format!(
            "waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination",
            current - updated
        ))
    } else if available < updated {
        Progress::Waiting(format!(
            "waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available"
        ))
    } else {
        Progress::Complete(format!("deployment {name:?} successfully rolled out"))
    }
}

/// A rollout as last observed.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RolloutOut {
    /// The Deployment.
    pub deployment_name: String,
    /// Its namespace.
    pub namespace: String,
    /// Whether the rollout is complete.
    pub complete: bool,
    /// kubectl's message for the last state observed.
    pub message: String,
    /// Desired replicas.
    pub replicas: i32,
    /// Replicas of the current template.
    pub updated_replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
    /// Available replicas.
    pub available_replicas: i32,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`.
    pub observed_generation: i64,
    /// The distinct states observed, in order (at most 50).
    pub observations: Vec<String>,
    /// How many distinct states were observed.
    pub total_observations: usize,
    /// Whether observations were left out.
    pub truncated: bool,
}

struct Tracker {
    out: RolloutOut,
}

impl Tracker {
    fn new(name: &str, namespace: &str) -> Self {
        Self {
            out: RolloutOut {
                deployment_name: name.into(),
                namespace: namespace.into(),
                complete: false,
                message: String::new(),
                replicas: 0,
                updated_replicas: 0,
                ready_replicas: 0,
                available_replicas: 0,
                generation: 0,
                observed_generation: 0,
                observations: Vec::new(),
                total_observations: 0,
                truncated: false,
            },
        }
    }

    fn observe(&mut self, d: &Deployment) -> Progress {
        let p = progress(d);
        let status = d.status.clone().unwrap_or_default();
        let o = &mut self.out;
        o.replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        o.updated_replicas = status.updated_replicas.unwrap_or(0);
        o.ready_replicas = status.ready_replicas.unwrap_or(0);
        o.available_replicas = status.available_replicas.unwrap_or(0);
        o.generation = d.metadata.generation.unwrap_or(0);
        o.observed_generation = status.observed_generation.unwrap_or(0);
        let message = match &p {
            Progress::Complete(m) | Progress::Waiting(m) | Progress::Failed(m) => m.clone(),
        };
        o.complete = matches!(p, Progress::Complete(_));
        if o.message != message {
            o.total_observations += 1;
            if o.observations.len() < MAX_OBSERVATIONS {
                o.observations.push(message.clone());
            } else {
                o.truncated = true;
            }
            o.message = message;
        }
        p
    }

    /// The answer for a progress: done, failed, or `None` (keep waiting).
    fn settle(&self, p: &Progress) -> Option<Result<RolloutOut, ToolFailure>> {
        match p {
            Progress::Complete(_) => Some(Ok(self.out.clone())),
            Progress::Failed(m) => {
                Some(Err(
                    ToolFailure::new(ErrorCode::ExecutionFailed, m.clone()).with_output(&self.out)
                ))
            }
            Progress::Waiting(_) => None,
        }
    }
}

/// Waits up to `wait` for the rollout of `name` to complete. A rollout still going at the end
/// is `timeout` (with the last observation as partial output); one past its progress deadline
/// `execution_failed`; a Deployment that is missing or removed `not_found`.
pub async fn wait(
    api: &Api<Deployment>,
    namespace: &str,
    name: &str,
    wait: Duration,
) -> Result<RolloutOut, ToolFailure> {
    let until = Instant::now() + wait;
    let what = format!("deployment {name}");
    let mut tracker = Tracker::new(name, namespace);
    loop {
        let d = api.get(name).await.map_err(|e| api_failure(&what, e))?;
        let p = tracker.observe(&d);
        if let Some(done) = tracker.settle(&p) {
            return done;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let rv = d.metadata.resource_version.clone().unwrap_or_default();
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(u32::try_from(left.as_secs().max(1)).unwrap_or(u32::MAX));
        let stream = api
            .watch(&wp, &rv)
            .await
            .map_err(|e| api_failure(&format!("watching {what}"), e))?;
        let mut stream = std::pin::pin!(stream);
        let mut restart = false;
        while let Some(event) = stream.next().await {
            match event.map_err(|e| api_failure(&format!("watching {what}"), e))? {
                WatchEvent::Added(d) | WatchEvent::Modified(d) => {
                    let p = tracker.observe(&d);
                    if let Some(done) = tracker.settle(&p) {
                        return done;
                    }
                }
                WatchEvent::Deleted(_) => {
                    return Err(ToolFailure::new(
                        ErrorCode::NotFound,
                        format!("{what} was deleted during the rollout"),
                    )
                    .with_output(&tracker.out));
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(status) if status.code == 410 => {
                    restart = true;
                    break;
                }
                WatchEvent::Error(status) => {
                    return Err(api_failure(
                        &format!("watching {what}"),
                        kube::Error::Api(status),
                    ));
                }
            }
        }
        if !restart || Instant::now() >= until {
            break;
        }
    }
    // The watch ended: the API server's timeout. One last look.
    let d = api.get(name).await.map_err(|e| api_failure(&what, e))?;
    let p = tracker.observe(&d);
    if let Some(done) = tracker.settle(&p) {
        return done;
    }
    Err(ToolFailure::new(
        ErrorCode::Timeout,
        format!(
            "{what} did not finish its rollout within {} s: {}",
            wait.as_secs(),
            tracker.out.message
        ),
    )
    .with_output(&tracker.out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).expect("a deployment")
    }

    #[test]
    fn a_rollout_is_complete_only_when_every_replica_is_updated_and_available() {
        let d = |generation: i64, obs: i64, updated: i32, current: i32, available: i32| {
            deployment(json!({
                "metadata": {"name": "web", "generation": generation},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": {"observedGeneration": obs, "updatedReplicas": updated,
                           "replicas": current, "availableReplicas": available}
            }))
        };
        assert!(
            matches!(progress(&d(2, 1, 2, 2, 2)), Progress::Waiting(m) if m.contains("spec update"))
        );
        assert!(
            matches!(progress(&d(2, 2, 1, 2, 2)), Progress::Waiting(m) if m.contains("1 out of 2 new replicas"))
        );
        assert!(
            matches!(progress(&d(2, 2, 2, 3, 2)), Progress::Waiting(m) if m.contains("1 old replicas"))
        );
        assert!(
            matches!(progress(&d(2, 2, 2, 2, 1)), Progress::Waiting(m) if m.contains("1 of 2 updated replicas are available"))
        );
        assert!(matches!(progress(&d(2, 2, 2, 2, 2)), Progress::Complete(_)));
        let stuck = deployment(json!({
            "metadata": {"name": "web", "generation": 1},
            "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
        }));
        assert!(matches!(progress(&stuck), Progress::Failed(_)));
    }
}
