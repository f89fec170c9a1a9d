//! The pod janitor: removes runner pods nobody needs any more. It runs beside the executors
//! on the kubernetes backend, on every replica at once, and is safe that way.
//!
//! Every sweep lists the pods labelled `app=workspace-session` ([`APP_LABEL`]) in the runner
//! namespace and looks at each one's session (the `workspace.io/session-id` annotation; the
//! label is lossy) through the read models. A pod is deleted when:
//! - its session is `closed`, `expired` or `failed`, or still live past its `expires_at`
//!   (`session_closed`, `session_expired`, `session_failed`);
//! - it ended (`Succeeded`, `Failed`, `Unknown`) at least the terminal TTL ago
//!   (`terminal_pod_ttl_expired`; "ended" is its last container's finish, else its creation);
//! - no view holds its session and it is older than the missing-session grace
//!   (`session_not_found`: a view appears a moment after the pod, or has left the read models
//!   after its retention).
//!
//! It never touches a pod that is already terminating, one a controller owns (runner pods have
//! no owner), or one without a session annotation (not the service's). Each deletion is
//! conditional on the pod's uid and resource version, so when several replicas delete the same
//! pod the API server accepts exactly one: the others get 409 (changed: someone else deleted
//! it) or 404 (gone), which are not errors. Each accepted deletion is one `session.runner_removed`
//! event on the pod's session. A replica that dies between the deletion and the event loses
//! that one event (the pod is gone either way). The janitor never closes a session and never
//! writes anything else.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Preconditions};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use workspace_events::{RunnerRemovedReason, SessionRunnerRemoved, SessionStatus};

use super::pod::APP_LABEL;
use crate::domain::{Session, SessionCommand};
use crate::eventstore::{AggregateStore, CommandMetadata};
use crate::ids::SessionId;
use crate::readmodel::ReadModelStore;

/// Annotation of a runner pod naming its session exactly.
pub const SESSION_ANNOTATION: &str = "workspace.io/session-id";

/// Page size of the pod lists.
const PAGE: u32 = 500;

/// The janitor's `WORKSPACE_K8S_*` arguments (the original service's names and defaults).
#[derive(Debug, Clone, Args)]
pub struct JanitorArgs {
    /// Run the pod janitor on the kubernetes backend.
    #[arg(
        long = "k8s-pod-janitor-enabled",
        env = "WORKSPACE_K8S_POD_JANITOR_ENABLED",
        default_value = "true",
        action = clap::ArgAction::Set,
        value_parser = super::config::parse_bool
    )]
    pub enabled: bool,
    /// Seconds between sweeps (the first runs at start).
    #[arg(
        long = "k8s-pod-janitor-interval-seconds",
        env = "WORKSPACE_K8S_POD_JANITOR_INTERVAL_SECONDS",
        default_value_t = 60
    )]
    pub interval_seconds: u64,
    /// Seconds a runner pod that ended (Succeeded, Failed, Unknown) is kept.
    #[arg(
        long = "k8s-session-pod-terminal-ttl-seconds",
        env = "WORKSPACE_K8S_SESSION_POD_TERMINAL_TTL_SECONDS",
        default_value_t = 300
    )]
    pub terminal_ttl_seconds: u64,
    /// Seconds a runner pod whose session no view holds is kept.
    #[arg(
        long = "k8s-missing-session-grace-seconds",
        env = "WORKSPACE_K8S_MISSING_SESSION_GRACE_SECONDS",
        default_value_t = 120
    )]
    pub missing_session_grace_seconds: u64,
}

/// The janitor's settings, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JanitorSettings {
    /// Whether it runs.
    pub enabled: bool,
    /// Between sweeps.
    pub interval: Duration,
    /// How long an ended pod is kept.
    pub terminal_ttl: Duration,
    /// How long a pod of an unknown session is kept.
    pub missing_session_grace: Duration,
}

impl Default for JanitorSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(60),
            terminal_ttl: Duration::from_secs(300),
            missing_session_grace: Duration::from_secs(120),
        }
    }
}

/// A janitor setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JanitorConfigError(pub String);

impl TryFrom<JanitorArgs> for JanitorSettings {
    type Error = JanitorConfigError;

    fn try_from(args: JanitorArgs) -> Result<Self, Self::Error> {
        if args.interval_seconds == 0 {
            return Err(JanitorConfigError(
                "WORKSPACE_K8S_POD_JANITOR_INTERVAL_SECONDS must be above 0".into(),
            ));
        }
        Ok(Self {
            enabled: args.enabled,
            interval: Duration::from_secs(args.interval_seconds),
            terminal_ttl: Duration::from_secs(args.terminal_ttl_seconds),
            missing_session_grace: Duration::from_secs(args.missing_session_grace_seconds),
        })
    }
}

/// Why a sweep stopped early.
#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    /// The pods could not be listed.
    #[error("listing runner pods: {0}")]
    List(#[source] kube::Error),
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Runner pods looked at.
    pub examined: usize,
    /// Pods this replica deleted, with why (each recorded as `session.runner_removed`).
    pub deleted: Vec<(String, RunnerRemovedReason)>,
    /// Deletions the API server refused as already done: 404 (gone) or 409 (changed, e.g.
    /// deleted by another replica).
    pub already_gone: usize,
    /// Deletions that failed otherwise (logged; tried again next sweep).
    pub failed: usize,
    /// Deletions whose event could not be recorded (logged).
    pub unrecorded: usize,
}

/// The pod janitor of one replica.
pub struct Janitor {
    pods: Api<Pod>,
    namespace: String,
    settings: JanitorSettings,
    read_models: Arc<dyn ReadModelStore>,
    sessions: AggregateStore<Session>,
}

fn at(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond()).ok()
}

/// When a pod ended: its containers' latest finish, else its creation.
fn ended_at(pod: &Pod) -> Option<OffsetDateTime> {
    let finished = pod
        .status
        .as_ref()
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .filter_map(at)
        .max();
    finished.or_else(|| pod.metadata.creation_timestamp.as_ref().and_then(at))
}

fn older_than(since: Option<OffsetDateTime>, age: Duration, now: OffsetDateTime) -> bool {
    since.is_some_and(|t| now - t >= age)
}

impl Janitor {
    /// A janitor of the runner pods in `namespace`, reading sessions from `read_models` and
    /// recording deletions through `sessions`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        settings: JanitorSettings,
        read_models: Arc<dyn ReadModelStore>,
        sessions: AggregateStore<Session>,
    ) -> Self {
        Self {
            pods: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            settings,
            read_models,
            sessions,
        }
    }

    /// Why `pod` (of `session`) should go, or `None`. Read-model failures keep the pod.
    async fn verdict(
        &self,
        pod: &Pod,
        session: &SessionId,
        now: OffsetDateTime,
    ) -> Option<RunnerRemovedReason> {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ended = matches!(phase, Some("Succeeded" | "Failed" | "Unknown"))
            && older_than(ended_at(pod), self.settings.terminal_ttl, now);
        let view = match self.read_models.session(session.as_str()).await {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!(component = "k8s-pod-janitor", session_id = %session, error = %e, "session view unreadable; pod kept");
                return None;
            }
        };
        match view {
            Some(v) => match v.status {
                SessionStatus::Closed => Some(RunnerRemovedReason::SessionClosed),
                SessionStatus::Expired => Some(RunnerRemovedReason::SessionExpired),
                SessionStatus::Failed => Some(RunnerRemovedReason::SessionFailed),
                SessionStatus::Provisioning | SessionStatus::Ready if v.expires_at <= now => {
                    Some(RunnerRemovedReason::SessionExpired)
                }
                _ if ended => Some(RunnerRemovedReason::TerminalPodTtlExpired),
                _ => None,
            },
            None if ended => Some(RunnerRemovedReason::TerminalPodTtlExpired),
            None => {
                let created = pod.metadata.creation_timestamp.as_ref().and_then(at);
                older_than(created, self.settings.missing_session_grace, now)
                    .then_some(RunnerRemovedReason::SessionNotFound)
            }
        }
    }

    /// One sweep at `now`: lists the runner pods and deletes those that should go.
    pub async fn sweep_once(&self, now: OffsetDateTime) -> Result<Sweep, JanitorError> {
        let mut sweep = Sweep::default();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default()
                .labels(&format!("app={APP_LABEL}"))
                .limit(PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = self.pods.list(&lp).await.map_err(JanitorError::List)?;
            for pod in &page.items {
                self.consider(pod, now, &mut sweep).await;
            }
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(sweep);
            }
        }
    }

    async fn consider(&self, pod: &Pod, now: OffsetDateTime, sweep: &mut Sweep) {
        let meta = &pod.metadata;
        let name = meta.name.clone().unwrap_or_default();
        if meta.deletion_timestamp.is_some()
            || meta
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty())
        {
            return;
        }
        let Some(session) = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(SESSION_ANNOTATION))
            .and_then(|id| SessionId::parse(id).ok())
        else {
            tracing::debug!(component = "k8s-pod-janitor", pod = %name, "no session annotation; not a runner pod of this service");
            return;
        };
        sweep.examined += 1;
        let Some(reason) = self.verdict(pod, &session, now).await else {
            return;
        };
        let (Some(uid), Some(rv)) = (meta.uid.clone(), meta.resource_version.clone()) else {
            return;
        };
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into());
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: Some(rv),
            }),
            ..DeleteParams::default()
        };
        match self.pods.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                sweep.already_gone += 1;
                return;
            }
            Err(e) => {
                tracing::warn!(component = "k8s-pod-janitor", pod = %name, error = %e, "deleting a runner pod failed");
                sweep.failed += 1;
                return;
            }
        }
        tracing::info!(
            component = "k8s-pod-janitor",
            namespace = %self.namespace,
            pod = %name,
            phase = %phase,
            reason = ?reason,
            session_id = %session,
            "pod janitor: deleted pod"
        );
        sweep.deleted.push((name.clone(), reason));
        let event = SessionRunnerRemoved {
            namespace: self.namespace.clone(),
            pod_name: name.clone(),
            pod_uid: uid.clone(),
            phase,
            reason,
            removed_at: OffsetDateTime::now_utc(),
        };
        let meta = CommandMetadata {
            correlation_id: Some(uid),
            causation_id: Some("k8s-pod-janitor".into()),
            actor: None,
        };
        if let Err(e) = self
            .sessions
            .execute(
                session.as_str(),
                SessionCommand::RecordRunnerRemoved(event),
                &(),
                &meta,
            )
            .await
        {
            tracing::error!(component = "k8s-pod-janitor", pod = %name, session_id = %session, error = %e, "the deletion could not be recorded");
            sweep.unrecorded += 1;
        }
    }

    /// Sweeps at once, then every interval, until `shutdown`.
    pub async fn run_until_stopped(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(
            component = "k8s-pod-janitor",
            namespace = %self.namespace,
            interval_seconds = self.settings.interval.as_secs(),
            terminal_ttl_seconds = self.settings.terminal_ttl.as_secs(),
            missing_session_grace_seconds = self.settings.missing_session_grace.as_secs(),
            "kubernetes pod janitor enabled"
        );
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.sweep_once(OffsetDateTime::now_utc()).await {
                        tracing::warn!(component = "k8s-pod-janitor", error = %e, "sweep failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use time::macros::datetime;
    use workspace_events::{
        AggregateType, CloseReason, EventContract, Principal, SessionCreated, SessionEvent,
        WorkspaceSource,
    };

    use super::*;
    use crate::eventstore::{EventLog, FileEventLog, FsyncPolicy};
    use crate::projector::Projector;
    use crate::readmodel::{MemoryStore, Retention};
    use crate::telemetry::Metrics;

    const NS: &str = "workspace-runners";
    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    struct World {
        _dir: tempfile::TempDir,
        log: Arc<dyn EventLog>,
        projector: Arc<Projector>,
        store: AggregateStore<Session>,
    }

    async fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = FileEventLog::open(dir.path(), FsyncPolicy::Never)
            .await
            .unwrap();
        let read_models: Arc<dyn ReadModelStore> = Arc::new(MemoryStore::new(Retention::FOREVER));
        let projector = Arc::new(
            Projector::new(log.clone(), read_models, Arc::new(Metrics::default()))
                .await
                .unwrap(),
        );
        let store = AggregateStore::new(log.clone());
        World {
            _dir: dir,
            log,
            projector,
            store,
        }
    }

    impl World {
        async fn session(&self, id: &str, expires_at: OffsetDateTime, close: Option<CloseReason>) {
            let meta = CommandMetadata::default();
            let created = SessionCreated {
                session_id: id.into(),
                principal: Principal {
                    tenant_id: "acme".into(),
                    actor_id: "alice".into(),
                    roles: vec![],
                },
                source: WorkspaceSource::Empty,
                allowed_paths: vec![".".into()],
                metadata: BTreeMap::new(),
                created_at: datetime!(2026-11-23 09:00 UTC),
                expires_at,
            };
            self.store
                .execute(id, SessionCommand::Create(created), &(), &meta)
                .await
                .unwrap();
            if let Some(reason) = close {
                let at = if reason == CloseReason::Expired {
                    expires_at
                } else {
                    NOW
                };
                self.store
                    .execute(id, SessionCommand::Close { reason, at }, &(), &meta)
                    .await
                    .unwrap();
            }
        }

        async fn events(&self, id: &str) -> Vec<String> {
            self.log
                .load(AggregateType::Session, id)
                .await
                .unwrap()
                .iter()
                .map(|e| e.envelope.event_type.clone())
                .collect()
        }

        async fn removal(&self, id: &str) -> SessionRunnerRemoved {
            let events = self.log.load(AggregateType::Session, id).await.unwrap();
            let last = events.last().expect("an event");
            match SessionEvent::decode(
                &last.envelope.event_type,
                last.envelope.schema_version,
                &last.envelope.payload,
            )
            .unwrap()
            {
                SessionEvent::RunnerRemoved(r) => r,
                other => panic!("{other:?}"),
            }
        }
    }

    fn runner_pod(name: &str, session: Option<&str>, phase: &str, created: &str) -> Value {
        let mut annotations = serde_json::Map::new();
        if let Some(s) = session {
            annotations.insert(SESSION_ANNOTATION.into(), s.into());
        }
        json!({
            "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                         "resourceVersion": format!("rv-{name}"),
                         "labels": {"app": APP_LABEL}, "annotations": annotations,
                         "creationTimestamp": created},
            "spec": {"containers": [{"name": "runner"}]},
            "status": {"phase": phase}
        })
    }

    /// Serves the LIST then one answer per DELETE (by pod name, in the order they come);
    /// returns the requests (method, path and query, body).
    async fn sweep(
        janitor_world: &World,
        pods: Vec<Value>,
        deletes: Vec<(&'static str, u16)>,
    ) -> (Sweep, Vec<(Method, String, Value)>) {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, NS);
        let list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods});
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut answers = vec![(200u16, list)];
            for (name, code) in deletes {
                let body = if code == 200 {
                    json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name}})
                } else {
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                           "reason": if code == 404 { "NotFound" } else { "Conflict" },
                           "message": format!("pods \"{name}\": precondition failed")})
                };
                answers.push((code, body));
            }
            for (code, body) in answers {
                let (req, send) = handle.next_request().await.expect("a request");
                let (parts, body_in) = req.into_parts();
                let bytes = body_in.collect_bytes().await.unwrap();
                let json_in = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                seen.push((parts.method, parts.uri.to_string(), json_in));
                send.send_response(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
            if let Some((req, _)) = handle.next_request().await {
                panic!("unexpected request {} {}", req.method(), req.uri());
            }
            seen
        });
        janitor_world.projector.catch_up().await.unwrap();
        let janitor = Janitor::new(
            client,
            NS,
            JanitorSettings::default(),
            janitor_world.projector.store().clone(),
            janitor_world.store.clone(),
        );
        let done = janitor.sweep_once(NOW).await.unwrap();
        drop(janitor);
        (done, server.await.unwrap())
    }

    #[tokio::test]
    async fn pods_of_closed_expired_failed_and_unknown_sessions_go_and_each_deletion_is_an_event() {
        let w = world().await;
        let later = datetime!(2026-11-23 13:00 UTC);
        w.session("session-live", later, None).await;
        w.session("session-closed", later, Some(CloseReason::Requested))
            .await;
        w.session(
            "session-expired",
            datetime!(2026-11-23 11:00 UTC),
            Some(CloseReason::Expired),
        )
        .await;
        w.session("session-overdue", datetime!(2026-11-23 11:30 UTC), None)
            .await;
        w.session("session-ended", later, None).await;
        let old = "2026-11-23T09:00:00Z";
        let recent = "2026-11-23T11:59:30Z";
        let mut terminating = runner_pod("ws-terminating", Some("session-closed"), "Running", old);
        terminating["metadata"]["deletionTimestamp"] = json!("2026-11-23T11:59:00Z");
        let mut owned = runner_pod("web-abc", Some("session-closed"), "Running", old);
        owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u", "controller": true}]);
        let pods = vec![
            runner_pod("ws-live", Some("session-live"), "Running", old),
            runner_pod("ws-closed", Some("session-closed"), "Running", old),
            runner_pod("ws-expired", Some("session-expired"), "Running", old),
            runner_pod("ws-overdue", Some("session-overdue"), "Running", old),
            runner_pod("ws-ended", Some("session-ended"), "Failed", old),
            runner_pod("ws-unknown-old", Some("session-unknown1"), "Running", old),
            runner_pod(
                "ws-unknown-new",
                Some("session-unknown2"),
                "Pending",
                recent,
            ),
            runner_pod("ws-no-annotation", None, "Running", old),
            terminating,
            owned,
        ];
        let (done, seen) = sweep(
            &w,
            pods,
            vec![
                ("ws-closed", 200),
                ("ws-expired", 404),
                ("ws-overdue", 200),
                ("ws-ended", 409),
                ("ws-unknown-old", 200),
            ],
        )
        .await;
        assert_eq!(seen[0].0, Method::GET);
        assert_eq!(
            seen[0].1,
            format!(
                "/api/v1/namespaces/{NS}/pods?&labelSelector=app%3Dworkspace-session&limit=500"
            )
        );
        let deleted: Vec<(&Method, &str)> =
            seen[1..].iter().map(|(m, u, _)| (m, u.as_str())).collect();
        let path = |p: &str| format!("/api/v1/namespaces/{NS}/pods/{p}?");
        let (a, b, c, d, e) = (
            path("ws-closed"),
            path("ws-expired"),
            path("ws-overdue"),
            path("ws-ended"),
            path("ws-unknown-old"),
        );
        assert_eq!(
            deleted,
            [
                (&Method::DELETE, a.as_str()),
                (&Method::DELETE, b.as_str()),
                (&Method::DELETE, c.as_str()),
                (&Method::DELETE, d.as_str()),
                (&Method::DELETE, e.as_str()),
            ]
        );
        assert_eq!(
            seen[1].2["preconditions"],
            json!({"uid": "uid-ws-closed", "resourceVersion": "rv-ws-closed"})
        );
        assert_eq!(
            done.deleted,
            [
                ("ws-closed".to_owned(), RunnerRemovedReason::SessionClosed),
                ("ws-overdue".to_owned(), RunnerRemovedReason::SessionExpired),
                (
                    "ws-unknown-old".to_owned(),
                    RunnerRemovedReason::SessionNotFound
                ),
            ]
        );
        assert_eq!(
            (
                done.examined,
                done.already_gone,
                done.failed,
                done.unrecorded
            ),
            (7, 2, 0, 0)
        );
        // Each accepted deletion is one event on its session; a 404 or 409 writes nothing.
        assert_eq!(
            w.events("session-closed").await,
            [
                "session.created",
                "session.closed",
                "session.runner_removed"
            ]
        );
        let removed = w.removal("session-closed").await;
        assert_eq!(
            (
                removed.pod_name.as_str(),
                removed.pod_uid.as_str(),
                removed.phase.as_str(),
                removed.namespace.as_str()
            ),
            ("ws-closed", "uid-ws-closed", "Running", NS)
        );
        assert_eq!(
            w.events("session-expired").await,
            ["session.created", "session.closed"]
        );
        assert_eq!(w.events("session-ended").await, ["session.created"]);
        assert_eq!(w.events("session-live").await, ["session.created"]);
        assert_eq!(
            w.events("session-unknown1").await,
            ["session.runner_removed"]
        );
        assert!(w.events("session-unknown2").await.is_empty());
        // The views keep their status; the unknown session gets none.
        w.projector.catch_up().await.unwrap();
        let view = w
            .projector
            .store()
            .session("session-closed")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.status, SessionStatus::Closed);
        assert_eq!(view.version, 3);
        assert!(
            w.projector
                .store()
                .session("session-unknown1")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_second_replica_sweeping_the_same_pods_records_nothing_more() {
        let w = world().await;
        w.session(
            "session-closed",
            datetime!(2026-11-23 13:00 UTC),
            Some(CloseReason::Requested),
        )
        .await;
        let pod = || {
            runner_pod(
                "ws-closed",
                Some("session-closed"),
                "Running",
                "2026-11-23T09:00:00Z",
            )
        };
        let (first, _) = sweep(&w, vec![pod()], vec![("ws-closed", 200)]).await;
        assert_eq!(first.deleted.len(), 1);
        // The other replica listed the pod before the deletion: its conditional delete is
        // refused (409), and a later one finds it gone (404).
        for code in [409, 404] {
            let (again, _) = sweep(&w, vec![pod()], vec![("ws-closed", code)]).await;
            assert!(again.deleted.is_empty());
            assert_eq!(again.already_gone, 1);
        }
        assert_eq!(
            w.events("session-closed").await,
            [
                "session.created",
                "session.closed",
                "session.runner_removed"
            ]
        );
    }

    #[tokio::test]
    async fn a_forbidden_list_stops_the_sweep_with_an_error() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let w = world().await;
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("the list");
            send.send_response(
                Response::builder()
                    .status(403)
                    .body(Body::from(
                        serde_json::to_vec(
                            &json!({"kind": "Status", "code": 403, "reason": "Forbidden",
                                                   "message": "pods is forbidden"}),
                        )
                        .unwrap(),
                    ))
                    .unwrap(),
            );
        });
        let janitor = Janitor::new(
            kube::Client::new(svc, NS),
            NS,
            JanitorSettings::default(),
            w.projector.store().clone(),
            w.store.clone(),
        );
        let e = janitor.sweep_once(NOW).await.expect_err("forbidden");
        assert!(
            matches!(e, JanitorError::List(kube::Error::Api(ref s)) if s.code == 403),
            "{e}"
        );
        server.await.unwrap();
    }

    #[test]
    fn the_settings_take_the_seed_names_and_defaults() {
        let parse = |args: &[&str]| {
            JanitorSettings::try_from(
                crate::kube::config::parse_flags::<JanitorArgs>(args).unwrap(),
            )
        };
        assert_eq!(parse(&[]).unwrap(), JanitorSettings::default());
        let s = parse(&[
            "--k8s-pod-janitor-enabled=off",
            "--k8s-pod-janitor-interval-seconds=5",
            "--k8s-session-pod-terminal-ttl-seconds=0",
            "--k8s-missing-session-grace-seconds=30",
        ])
        .unwrap();
        assert!(!s.enabled);
        assert_eq!(
            (s.interval, s.terminal_ttl, s.missing_session_grace),
            (
                Duration::from_secs(5),
                Duration::ZERO,
                Duration::from_secs(30)
            )
        );
        assert!(parse(&["--k8s-pod-janitor-interval-seconds=0"]).is_err());
    }
}
