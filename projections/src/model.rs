//! The read model and the pure fold of events into it.

use foldhash::HashMap;
use std::sync::{Arc, RwLock};

use workspace_events::upcast::{self, Upcaster};
use workspace_events::{
    AggregateType, EventContract, InvocationEvent, InvocationStatus, RecordedEvent, SessionEvent,
    WorkspaceSource,
};

use crate::views::{InvocationView, SessionView};

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Already applied (an older or equal version, or a sequence before the checkpoint).
    Skipped,
    /// A session view changed.
    Session {
        /// Session id.
        id: String,
    },
    /// An invocation view changed.
    Invocation {
        /// Invocation id.
        id: String,
        /// Its new status.
        status: InvocationStatus,
    },
    /// The event could not be decoded or does not follow its view; it was not applied.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// An event in typed form, as the writer that appended it holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedEvent {
    /// A session event.
    Session(SessionEvent),
    /// An invocation event.
    Invocation(InvocationEvent),
}

impl From<SessionEvent> for TypedEvent {
    fn from(event: SessionEvent) -> Self {
        TypedEvent::Session(event)
    }
}

impl From<InvocationEvent> for TypedEvent {
    fn from(event: InvocationEvent) -> Self {
        TypedEvent::Invocation(event)
    }
}

/// Every view, plus the checkpoint: the global sequence applied up to.
#[derive(Debug, Default, Clone)]
pub struct ReadModel {
    // Views are shared (`Arc`) so a reader takes one without copying it; applying an event
    // copies a view only while a reader still holds it.
    sessions: HashMap<String, Arc<SessionView>>,
    invocations: HashMap<String, Arc<InvocationView>>,
    session_invocations: HashMap<String, Vec<String>>,
    checkpoint: u64,
}

impl ReadModel {
    /// A model holding `sessions` and `invocations` as loaded from a store, at `checkpoint`:
    /// what a store that keeps views elsewhere (Valkey) folds a batch onto. The per-session
    /// index lists the given invocations in the order given.
    pub fn from_views(
        checkpoint: u64,
        sessions: impl IntoIterator<Item = Arc<SessionView>>,
        invocations: impl IntoIterator<Item = Arc<InvocationView>>,
    ) -> Self {
        let mut model = ReadModel {
            checkpoint,
            ..ReadModel::default()
        };
        let (sessions, invocations) = (sessions.into_iter(), invocations.into_iter());
        model.sessions.reserve(sessions.size_hint().0);
        model.invocations.reserve(invocations.size_hint().0);
        for view in sessions {
            model.sessions.insert(view.id.clone(), view);
        }
        for view in invocations {
            model
                .session_invocations
                .entry(view.session_id.clone())
                .or_default()
                .push(view.id.clone());
            model.invocations.insert(view.id.clone(), view);
        }
        model
    }

    /// Every view, moved out (no copy): the inverse of [`ReadModel::from_views`].
    pub fn into_views(self) -> (Vec<Arc<SessionView>>, Vec<Arc<InvocationView>>) {
        (
            self.sessions.into_values().collect(),
            self.invocations.into_values().collect(),
        )
    }

    /// The global sequence of the last event applied.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// A session view.
    pub fn session(&self, id: &str) -> Option<&SessionView> {
        self.sessions.get(id).map(|v| &**v)
    }

    /// A session view to keep beyond the lock, without copying it.
    pub fn shared_session(&self, id: &str) -> Option<Arc<SessionView>> {
        self.sessions.get(id).cloned()
    }

    /// An invocation view to keep beyond the lock, without copying it.
    pub fn shared_invocation(&self, id: &str) -> Option<Arc<InvocationView>> {
        self.invocations.get(id).cloned()
    }

    /// An invocation view.
    pub fn invocation(&self, id: &str) -> Option<&InvocationView> {
        self.invocations.get(id).map(|v| &**v)
    }

    /// Every session view.
    pub fn sessions(&self) -> impl Iterator<Item = &SessionView> {
        self.sessions.values().map(|v| &**v)
    }

    /// Every invocation view.
    pub fn invocations(&self) -> impl Iterator<Item = &InvocationView> {
        self.invocations.values().map(|v| &**v)
    }

    /// A session's invocations, newest first: skip `offset`, take `limit`. Also returns the
    /// total count.
    pub fn session_invocations(
        &self,
        session_id: &str,
        offset: usize,
        limit: usize,
    ) -> (Vec<&InvocationView>, usize) {
        let Some(ids) = self.session_invocations.get(session_id) else {
            return (Vec::new(), 0);
        };
        let page = ids
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .filter_map(|id| self.invocation(id))
            .collect();
        (page, ids.len())
    }

    /// Folds one event into the model.
    pub fn apply(&mut self, upcasters: &[Box<dyn Upcaster>], event: &RecordedEvent) -> Applied {
        self.apply_with(upcasters, event, None)
    }

    /// Folds one event into the model, given its typed form when the caller has it (the writer
    /// that appended it): then its JSON is not decoded again. `typed` must be the event `event`
    /// records; it is ignored for an event that needs upcasting, or of another aggregate type.
    pub fn apply_with(
        &mut self,
        upcasters: &[Box<dyn Upcaster>],
        event: &RecordedEvent,
        typed: Option<TypedEvent>,
    ) -> Applied {
        if event.sequence <= self.checkpoint {
            return Applied::Skipped;
        }
        self.checkpoint = event.sequence;
        let current = !upcasters
            .iter()
            .any(|u| u.can_upcast(&event.envelope.event_type, event.envelope.schema_version));
        let env = &event.envelope;
        // A typed event is taken only as the event it claims to be.
        match (typed, env.aggregate_type) {
            (Some(TypedEvent::Session(e)), AggregateType::Session)
                if current && e.event_type() == env.event_type =>
            {
                return self.apply_session(&env.aggregate_id, env.aggregate_version, e);
            }
            (Some(TypedEvent::Invocation(e)), AggregateType::Invocation)
                if current && e.event_type() == env.event_type =>
            {
                return self.apply_invocation(&env.aggregate_id, env.aggregate_version, e);
            }
            _ => {}
        }
        // Only an event that needs upcasting is copied; the rest decode from the stored JSON.
        let upcasted = (!current).then(|| upcast::upcast(upcasters, env.clone()));
        let env = upcasted.as_ref().unwrap_or(&event.envelope);
        match env.aggregate_type {
            AggregateType::Session => {
                match SessionEvent::decode(&env.event_type, env.schema_version, &env.payload) {
                    Ok(e) => self.apply_session(&env.aggregate_id, env.aggregate_version, e),
                    Err(err) => Applied::Rejected {
                        reason: err.to_string(),
                    },
                }
            }
            AggregateType::Invocation => {
                match InvocationEvent::decode(&env.event_type, env.schema_version, &env.payload) {
                    Ok(e) => self.apply_invocation(&env.aggregate_id, env.aggregate_version, e),
                    Err(err) => Applied::Rejected {
                        reason: err.to_string(),
                    },
                }
            }
        }
    }

    fn apply_session(&mut self, id: &str, version: u64, event: SessionEvent) -> Applied {
        let Some(status) = event
            .status()
            .or_else(|| self.sessions.get(id).map(|v| v.status))
        else {
            // A runner removal of a session without a view (never created here, or past its
            // retention): nothing to show it on.
            return Applied::Skipped;
        };
        if let SessionEvent::Created(c) = event {
            if self.sessions.contains_key(id) {
                return Applied::Skipped;
            }
            if version != 1 {
                return Applied::Rejected {
                    reason: format!("session {id}: created at version {version}"),
                };
            }
            let (repo_url, repo_ref, source_repo_path) = match c.source {
                WorkspaceSource::Empty => (None, None, None),
                WorkspaceSource::Copy { source_repo_path } => (None, None, Some(source_repo_path)),
                WorkspaceSource::Git { repo_url, repo_ref } => (Some(repo_url), repo_ref, None),
            };
            self.sessions.insert(
                id.to_owned(),
                Arc::new(SessionView {
                    id: id.to_owned(),
                    status,
                    workspace_path: "/workspace".into(),
                    runtime: None,
                    repo_url,
                    repo_ref,
                    source_repo_path,
                    allowed_paths: c.allowed_paths,
                    principal: c.principal,
                    metadata: c.metadata,
                    created_at: c.created_at,
                    expires_at: c.expires_at,
                    closed_at: None,
                    failure: None,
                    version,
                }),
            );
            return Applied::Session { id: id.to_owned() };
        }
        let Some(view) = self.sessions.get_mut(id).map(Arc::make_mut) else {
            return Applied::Rejected {
                reason: format!("session {id}: event before session.created"),
            };
        };
        if version <= view.version {
            return Applied::Skipped;
        }
        if version != view.version + 1 {
            return Applied::Rejected {
                reason: format!("session {id}: version {version} after {}", view.version),
            };
        }
        view.version = version;
        match event {
            // Only the first event creates; a later one changes nothing.
            SessionEvent::Created(_) => {}
            SessionEvent::Provisioned(p) => {
                view.status = status;
                view.workspace_path = p.runtime.workdir.clone();
                view.runtime = Some(p.runtime);
            }
            SessionEvent::ProvisioningFailed(f) => {
                view.status = status;
                view.failure = Some(f.error);
            }
            SessionEvent::Closed(c) => {
                view.status = status;
                view.closed_at = Some(c.closed_at);
            }
            // The pod janitor's record; the view keeps its status and fields.
            SessionEvent::RunnerRemoved(_) => {}
        }
        Applied::Session { id: id.to_owned() }
    }

    fn apply_invocation(&mut self, id: &str, version: u64, event: InvocationEvent) -> Applied {
        let status = event.status();
        if let Some(request) = event.request() {
            if self.invocations.contains_key(id) {
                return Applied::Skipped;
            }
            if version != 1 {
                return Applied::Rejected {
                    reason: format!("invocation {id}: first event at version {version}"),
                };
            }
            let error = match &event {
                InvocationEvent::Denied(r) | InvocationEvent::Rejected(r) => Some(r.error.clone()),
                InvocationEvent::Queued(_)
                | InvocationEvent::Started(_)
                | InvocationEvent::Completed(_) => None,
            };
            let view = InvocationView {
                id: id.to_owned(),
                session_id: request.session_id.clone(),
                tool_name: request.tool_name.clone(),
                correlation_id: request.correlation_id.clone(),
                status,
                approved: request.approved,
                started_at: request.requested_at,
                run_started_at: None,
                completed_at: status.is_terminal().then_some(request.requested_at),
                duration_ms: 0,
                duration_ns: 0,
                trace_name: "workspace.tools".into(),
                span_name: request.tool_name.clone(),
                // Nothing ran yet, or ever will for a refusal: no exit is known.
                exit_code: None,
                output: None,
                output_ref: None,
                logs: Vec::new(),
                logs_ref: None,
                artifacts: Vec::new(),
                error,
                version,
            };
            self.session_invocations
                .entry(view.session_id.clone())
                .or_default()
                .push(id.to_owned());
            self.invocations.insert(id.to_owned(), Arc::new(view));
            return Applied::Invocation {
                id: id.to_owned(),
                status,
            };
        }
        let Some(view) = self.invocations.get_mut(id).map(Arc::make_mut) else {
            return Applied::Rejected {
                reason: format!("invocation {id}: event before its request"),
            };
        };
        if version <= view.version {
            return Applied::Skipped;
        }
        if version != view.version + 1 {
            return Applied::Rejected {
                reason: format!("invocation {id}: version {version} after {}", view.version),
            };
        }
        view.version = version;
        match event {
            InvocationEvent::Started(s) => {
                view.status = status;
                view.run_started_at = Some(s.started_at);
            }
            InvocationEvent::Completed(c) => {
                // The projector usually holds the only reference: no copy.
                let c = Arc::unwrap_or_clone(c);
                view.status = status;
                view.completed_at = Some(c.completed_at);
                view.duration_ms = c.duration_ns / 1_000_000;
                view.duration_ns = c.duration_ns;
                view.exit_code = c.exit_code;
                view.output = c.output;
                view.output_ref = c.output_ref.map(|r| r.artifact_id);
                view.logs = c.logs;
                view.logs_ref = c.logs_ref.map(|r| r.artifact_id);
                view.artifacts = c.artifacts;
                view.error = c.error;
            }
            InvocationEvent::Queued(_)
            | InvocationEvent::Denied(_)
            | InvocationEvent::Rejected(_) => {}
        }
        Applied::Invocation {
            id: id.to_owned(),
            status: view.status,
        }
    }
}

/// The embedded mode's read-model store: the model behind a lock.
#[derive(Default)]
pub struct MemoryReadModel {
    model: RwLock<ReadModel>,
}

impl MemoryReadModel {
    /// Runs `f` with shared access to the model.
    pub fn read<T>(&self, f: impl FnOnce(&ReadModel) -> T) -> T {
        // A poisoned lock means a panic while applying; the model is still a valid fold of a
        // prefix of the log, so keep serving it.
        let guard = self.model.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Applies a batch of events under one write lock.
    pub fn apply_all(
        &self,
        upcasters: &[Box<dyn Upcaster>],
        events: &[std::sync::Arc<RecordedEvent>],
    ) -> Vec<Applied> {
        self.apply_all_with(upcasters, events, |_| None)
    }

    /// [`MemoryReadModel::apply_all`], asking `typed` for each event's typed form, once per event
    /// and in order (see [`ReadModel::apply_with`]).
    pub fn apply_all_with(
        &self,
        upcasters: &[Box<dyn Upcaster>],
        events: &[std::sync::Arc<RecordedEvent>],
        mut typed: impl FnMut(&RecordedEvent) -> Option<TypedEvent>,
    ) -> Vec<Applied> {
        let mut guard = self.model.write().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .map(|e| guard.apply_with(upcasters, e, typed(e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;
    use workspace_events::*;

    fn recorded<E: EventContract>(seq: u64, id: &str, version: u64, e: &E) -> RecordedEvent {
        RecordedEvent {
            sequence: seq,
            envelope: EventEnvelope {
                event_id: ulid::Ulid::from_parts(seq, 1),
                aggregate_type: E::AGGREGATE_TYPE,
                aggregate_id: id.into(),
                aggregate_version: version,
                event_type: e.event_type().into(),
                schema_version: e.schema_version(),
                occurred_at: datetime!(2026-11-23 10:00 UTC),
                correlation_id: None,
                causation_id: None,
                actor: None,
                payload: e.to_payload(),
            },
        }
    }

    fn history() -> Vec<RecordedEvent> {
        let created = SessionEvent::Created(SessionCreated {
            session_id: "s1".into(),
            principal: Principal {
                tenant_id: "t".into(),
                actor_id: "a".into(),
                roles: vec![],
            },
            source: WorkspaceSource::Empty,
            allowed_paths: vec![".".into()],
            metadata: Default::default(),
            created_at: datetime!(2026-11-23 10:00 UTC),
            expires_at: datetime!(2026-11-23 11:00 UTC),
        });
        let provisioned = SessionEvent::Provisioned(SessionProvisioned {
            runtime: RuntimeRef {
                kind: "local".into(),
                isolation: "bubblewrap".into(),
                workdir: "/workspace".into(),
                namespace: None,
                pod_name: None,
            },
            provisioned_at: datetime!(2026-11-23 10:00 UTC),
        });
        let request = InvocationRequest {
            invocation_id: "i1".into(),
            session_id: "s1".into(),
            tool_name: "fs.stat".into(),
            correlation_id: None,
            approved: false,
            args: Some(json!({"path": "a"})),
            args_ref: None,
            requested_at: datetime!(2026-11-23 10:00:01 UTC),
        };
        let queued = InvocationEvent::Queued(InvocationQueued {
            request: request.into(),
            timeout_seconds: 15,
            start_deadline: datetime!(2026-11-23 10:01 UTC),
        });
        let started = InvocationEvent::Started(InvocationStarted {
            executor_id: "e".into(),
            started_at: datetime!(2026-11-23 10:00:02 UTC),
            deadline: datetime!(2026-11-23 10:00:17 UTC),
        });
        let completed = InvocationEvent::Completed(Arc::new(InvocationCompleted {
            outcome: InvocationOutcome::Succeeded,
            exit_code: Some(0),
            duration_ns: 4_260_000,
            output: Some(json!({"exists": true}).into()),
            output_ref: None,
            logs: vec![],
            logs_ref: None,
            artifacts: vec![],
            error: None,
            completed_at: datetime!(2026-11-23 10:00:03 UTC),
        }));
        vec![
            recorded(1, "s1", 1, &created),
            recorded(2, "s1", 2, &provisioned),
            recorded(3, "i1", 1, &queued),
            recorded(4, "i1", 2, &started),
            recorded(5, "i1", 3, &completed),
        ]
    }

    #[test]
    fn folding_the_history_builds_the_views() {
        let mut m = ReadModel::default();
        for e in history() {
            assert!(!matches!(m.apply(&[], &e), Applied::Rejected { .. }));
        }
        assert_eq!(m.checkpoint(), 5);
        assert_eq!(m.session("s1").unwrap().status, SessionStatus::Ready);
        let inv = m.invocation("i1").unwrap();
        assert_eq!(inv.status, InvocationStatus::Succeeded);
        assert_eq!((inv.duration_ms, inv.duration_ns), (4, 4_260_000));
        assert_eq!(inv.exit_code, Some(0));
        assert_eq!(inv.version, 3);
        assert_eq!(m.session_invocations("s1", 0, 10).1, 1);
    }

    /// The typed form of each event of [`history`], decoded from its record.
    fn typed(e: &RecordedEvent) -> TypedEvent {
        let env = &e.envelope;
        match env.aggregate_type {
            AggregateType::Session => {
                SessionEvent::decode(&env.event_type, env.schema_version, &env.payload)
                    .unwrap()
                    .into()
            }
            AggregateType::Invocation => {
                InvocationEvent::decode(&env.event_type, env.schema_version, &env.payload)
                    .unwrap()
                    .into()
            }
        }
    }

    #[test]
    fn a_typed_event_folds_to_the_same_views_as_its_record() {
        let (mut decoded, mut given) = (ReadModel::default(), ReadModel::default());
        for e in history() {
            let a = decoded.apply(&[], &e);
            let b = given.apply_with(&[], &e, Some(typed(&e)));
            assert_eq!(a, b);
        }
        assert_eq!(decoded.session("s1"), given.session("s1"));
        assert_eq!(decoded.invocation("i1"), given.invocation("i1"));
    }

    #[test]
    fn a_typed_event_that_is_not_the_recorded_one_is_ignored() {
        let events = history();
        let mut m = ReadModel::default();
        // The session's `created` offered for its `provisioned` record, and an invocation
        // event for a session record: both decoded from the record instead.
        m.apply(&[], &events[0]);
        m.apply_with(&[], &events[1], Some(typed(&events[0])));
        assert_eq!(m.session("s1").unwrap().status, SessionStatus::Ready);
        m.apply_with(&[], &events[2], Some(typed(&events[1])));
        assert_eq!(m.invocation("i1").unwrap().status, InvocationStatus::Queued);
    }

    #[test]
    fn folding_onto_views_taken_out_of_a_model_matches_folding_the_whole_history() {
        let h = history();
        let mut whole = ReadModel::default();
        for e in &h {
            whole.apply(&[], e);
        }
        let mut first = ReadModel::default();
        for e in &h[..3] {
            first.apply(&[], e);
        }
        let (sessions, invocations) = first.clone().into_views();
        let mut rest = ReadModel::from_views(first.checkpoint(), sessions, invocations);
        assert_eq!(rest.apply(&[], &h[2]), Applied::Skipped);
        for e in &h[3..] {
            rest.apply(&[], e);
        }
        assert_eq!(rest.checkpoint(), whole.checkpoint());
        assert_eq!(rest.session("s1"), whole.session("s1"));
        assert_eq!(rest.invocation("i1"), whole.invocation("i1"));
        assert_eq!(rest.session_invocations("s1", 0, 10).1, 1);
    }

    #[test]
    fn replaying_events_again_changes_nothing() {
        let mut once = ReadModel::default();
        for e in history() {
            once.apply(&[], &e);
        }
        let mut twice = once.clone();
        for e in history() {
            assert_eq!(twice.apply(&[], &e), Applied::Skipped);
        }
        assert_eq!(
            twice.invocation("i1").unwrap(),
            once.invocation("i1").unwrap()
        );
        assert_eq!(twice.session_invocations("s1", 0, 10).1, 1);
    }

    #[test]
    fn a_redelivered_older_version_is_skipped_even_after_a_checkpoint_reset() {
        let mut m = ReadModel::default();
        for e in history() {
            m.apply(&[], &e);
        }
        // A store that lost its checkpoint but kept its views (Valkey after a partial write)
        // must not go back in time: the aggregate version guards each view.
        m.checkpoint = 0;
        let mut stale = history()[3].clone();
        stale.sequence = 6;
        assert_eq!(m.apply(&[], &stale), Applied::Skipped);
        assert_eq!(
            m.invocation("i1").unwrap().status,
            InvocationStatus::Succeeded
        );
    }

    #[test]
    fn an_event_that_skips_a_version_is_rejected_not_applied() {
        let mut m = ReadModel::default();
        let h = history();
        m.apply(&[], &h[2]);
        let mut completed = h[4].clone();
        completed.sequence = 4;
        assert!(matches!(m.apply(&[], &completed), Applied::Rejected { .. }));
        assert_eq!(m.invocation("i1").unwrap().status, InvocationStatus::Queued);
    }

    #[test]
    fn an_invocation_has_no_exit_code_until_its_run_ends() {
        let h = history();
        let mut m = ReadModel::default();
        for e in &h[..2] {
            m.apply(&[], e);
        }
        for (e, status) in [
            (&h[2], InvocationStatus::Queued),
            (&h[3], InvocationStatus::Running),
        ] {
            m.apply(&[], e);
            let inv = m.invocation("i1").unwrap();
            assert_eq!((inv.status, inv.exit_code), (status, None));
            let json = serde_json::to_value(inv).unwrap();
            assert!(json["exit_code"].is_null(), "{json}");
            assert!(
                json.as_object().unwrap().contains_key("exit_code"),
                "{json}"
            );
        }
        m.apply(&[], &h[4]);
        assert_eq!(m.invocation("i1").unwrap().exit_code, Some(0));
    }

    #[test]
    fn a_refused_invocation_has_no_exit_code() {
        let h = history();
        let mut m = ReadModel::default();
        m.apply(&[], &h[0]);
        m.apply(&[], &h[1]);
        let InvocationEvent::Queued(q) =
            InvocationEvent::decode(InvocationEvent::QUEUED, 1, &h[2].envelope.payload).unwrap()
        else {
            unreachable!()
        };
        let refused = InvocationRefused {
            request: q.request,
            error: ErrorInfo {
                code: ErrorCode::ApprovalRequired.into(),
                message: "no".into(),
                retryable: false,
            },
        };
        for (seq, id, event) in [
            (3, "denied", InvocationEvent::Denied(refused.clone())),
            (4, "rejected", InvocationEvent::Rejected(refused)),
        ] {
            m.apply(&[], &recorded(seq, id, 1, &event));
            let inv = m.invocation(id).unwrap();
            assert!(inv.is_terminal(), "{id}");
            assert_eq!(inv.exit_code, None, "{id}");
        }
    }

    #[test]
    fn a_v1_completed_event_folds_through_its_upcaster() {
        let mut h = history();
        let v1 = &mut h[4].envelope;
        v1.schema_version = 1;
        v1.payload = json!({
            "outcome": "failed", "exit_code": 124, "duration_ms": 1500,
            "completed_at": "2026-11-23T10:00:03Z"
        })
        .into();
        let mut m = ReadModel::default();
        let upcasters = upcast::registry();
        for e in &h {
            assert!(!matches!(m.apply(&upcasters, e), Applied::Rejected { .. }));
        }
        let inv = m.invocation("i1").unwrap();
        assert_eq!(inv.status, InvocationStatus::Failed);
        assert_eq!((inv.duration_ms, inv.duration_ns), (1500, 1_500_000_000));
        assert_eq!(inv.exit_code, Some(124));
    }
}
