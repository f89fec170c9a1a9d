//! The executor: takes queued invocations, claims each by appending `started` with the version
//! it loaded (so two executors can never both run one), runs the tool in the session's runner,
//! stores large output and logs as artifacts, and appends the one terminal outcome.
//!
//! It never decides policy (that happened before the invocation was queued) and never reads the
//! workspace except through the runner.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_es::AggregateError;
use foldhash::HashSet;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use workspace_events::{
    ArtifactMeta, ArtifactRef, ErrorInfo, InvocationCompleted, InvocationEvent, InvocationOutcome,
    InvocationQueued, InvocationStarted, LogLine, RawJson, RecordedEvent,
};

use crate::artifacts::ArtifactStore;
use crate::domain::{Invocation, InvocationCommand, InvocationError};
use crate::error_code::ErrorCode;
use crate::eventstore::{AggregateStore, CommandMetadata, EventLog, Known, decode_event};
use crate::ids::InvocationId;
use crate::projector::Projector;
use crate::runner::RunnerProvider;
use crate::sessions::Sessions;
use crate::tools::{Catalog, SessionContext, ToolContext, ToolFailure, ToolSuccess};

/// What one executor needs.
pub struct Executor {
    id: String,
    log: Arc<dyn EventLog>,
    store: AggregateStore<Invocation>,
    projector: Arc<Projector>,
    sessions: Arc<Sessions>,
    runners: Arc<dyn RunnerProvider>,
    catalog: Arc<Catalog>,
    artifacts: Arc<dyn ArtifactStore>,
    max_inline_bytes: usize,
    slots: Arc<Semaphore>,
    /// Invocations handed over by the API of this process ([`Handoff`]) whose `queued` event the
    /// log reader has not passed yet: it skips them instead of claiming them a second time.
    handed: Mutex<HashSet<String>>,
    /// Every run in flight, so a shutdown lets them record their outcome.
    runs: TaskTracker,
    /// `started_at` (Unix nanoseconds) of this executor's latest claim: claims get strictly
    /// increasing times, so two `started` events of one executor never compare equal.
    last_claim: std::sync::atomic::AtomicI64,
}

/// An invocation the API is about to queue, reserved for this process's executor: once the
/// `queued` event is committed, [`Handoff::submit`] starts the run directly, with the state the
/// API holds, instead of waiting for the log reader to find the event and reload it. When a run
/// slot is free at reservation, the handoff holds it and [`Handoff::claim`] gives the `started`
/// event to append together with `queued`: the invocation is claimed as it is queued.
///
/// Dropped without `submit` (the append failed or the request was cancelled), the reservation
/// is released and the invocation is looked up again: if it was queued it runs (claimed first
/// if it was not), so committed work is never stranded.
pub struct Handoff {
    executor: Arc<Executor>,
    id: String,
    slot: Option<OwnedSemaphorePermit>,
    /// The `started` event this handoff gave for the claim at enqueue: after a drop, only a
    /// claim recorded with exactly this event is this handoff's to run (a concurrent request
    /// for the same invocation, a retry with its correlation id, may hold another).
    issued: Option<InvocationStarted>,
    submitted: bool,
}

/// How a run gets its claim on the invocation.
pub enum Claim {
    /// Claim it now, by appending `started` after the known state (or the loaded one).
    Take(Option<Known<Invocation>>),
    /// Claimed for this executor when it was queued; the state after `started`.
    Held(Known<Invocation>),
}

/// What a run produced, before it is recorded.
struct RunResult {
    outcome: InvocationOutcome,
    output: Option<RawJson>,
    logs: Vec<LogLine>,
    artifacts: Vec<crate::tools::NewArtifact>,
    /// What the tool reported; `None` when it never ran or its end is unknown.
    exit_code: Option<i32>,
    error: Option<ErrorInfo>,
    /// Recorded for an invocation nobody claimed: only while it is still queued.
    unstarted: bool,
}

impl Executor {
    /// An executor.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        log: Arc<dyn EventLog>,
        projector: Arc<Projector>,
        sessions: Arc<Sessions>,
        runners: Arc<dyn RunnerProvider>,
        catalog: Arc<Catalog>,
        artifacts: Arc<dyn ArtifactStore>,
        max_inline_bytes: usize,
        concurrency: usize,
    ) -> Self {
        Self {
            id: format!("executor-{}", crate::ids::random_hex16()),
            store: AggregateStore::new(log.clone()).with_typed(projector.typed().clone()),
            log,
            projector,
            sessions,
            runners,
            catalog,
            artifacts,
            max_inline_bytes,
            slots: Arc::new(Semaphore::new(concurrency)),
            handed: Mutex::new(HashSet::default()),
            runs: TaskTracker::new(),
            last_claim: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Reserves the invocation `id` (not yet appended) for this executor; see [`Handoff`].
    pub fn reserve(self: &Arc<Self>, id: &str) -> Handoff {
        self.handed_set().insert(id.to_owned());
        Handoff {
            executor: self.clone(),
            id: id.to_owned(),
            slot: self.slots.clone().try_acquire_owned().ok(),
            issued: None,
            submitted: false,
        }
    }

    fn handed_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.handed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `queued` on its own task, in `slot` or once a slot is free.
    fn spawn_run(
        self: Arc<Self>,
        queued: InvocationQueued,
        claim: Claim,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let runs = self.runs.clone();
        runs.spawn(async move {
            // Bounded concurrency: the run waits here for a slot.
            let _slot = match slot {
                Some(slot) => slot,
                None => match self.slots.clone().acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            self.execute_one(queued, claim).await;
        });
    }

    /// Runs the invocation `id` of a dropped handoff if the log says nobody will: it is queued,
    /// or claimed with the handoff's own `issued` event (at enqueue), so nobody else runs it.
    async fn resume(self: Arc<Self>, id: String, issued: Option<InvocationStarted>) {
        let events = match self
            .log
            .load(workspace_events::AggregateType::Invocation, &id)
            .await
        {
            Ok(events) => events,
            Err(err) => {
                tracing::error!(invocation_id = %id, error = %err, "could not look up a handed-off invocation");
                return;
            }
        };
        // Upcast: an older `completed` must count, never be skipped as undecodable.
        let upcasters = workspace_events::upcast::registry();
        let decoded: Vec<InvocationEvent> = events
            .iter()
            .filter_map(|e| decode_event::<InvocationEvent>(&upcasters, e).ok())
            .collect();
        match decoded.as_slice() {
            [InvocationEvent::Queued(queued)] => {
                self.spawn_run(queued.clone(), Claim::Take(None), None)
            }
            [InvocationEvent::Queued(queued), InvocationEvent::Started(s)]
                if issued.as_ref() == Some(s) =>
            {
                let known = fold(decoded.iter().cloned());
                self.spawn_run(queued.clone(), Claim::Held(known), None)
            }
            _ => {}
        }
    }

    /// Recovers after a restart (invocations that were running when the process died end
    /// `failed` with `interrupted`, the queued ones run), then runs every invocation queued
    /// from now on until `shutdown`.
    pub async fn run_until_stopped(self: Arc<Self>, shutdown: CancellationToken) {
        let Some((queued, running, mut cursor)) = self.open_work(&shutdown).await else {
            self.runs.close();
            self.runs.wait().await;
            return;
        };
        for id in running {
            self.interrupt_orphan(&id).await;
        }
        for id in queued {
            if let Ok(events) = self
                .log
                .load(workspace_events::AggregateType::Invocation, &id)
                .await
                && let Some(first) = events.first()
            {
                self.clone().dispatch(first).await;
            }
        }
        let mut head = self.log.head();
        loop {
            match self.log.read_from(cursor, 1024).await {
                Ok(events) if !events.is_empty() => {
                    for event in &events {
                        if event.envelope.event_type == InvocationEvent::QUEUED
                            && !self.handed_set().remove(&event.envelope.aggregate_id)
                        {
                            self.clone().dispatch(event).await;
                        }
                    }
                    if let Some(last) = events.last() {
                        cursor = last.sequence;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(error = %err, "executor could not read the log; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            }
            if *head.borrow_and_update() > cursor {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = head.changed() => if changed.is_err() { break },
            }
        }
        // Let the runs in flight record their outcome.
        self.runs.close();
        self.runs.wait().await;
    }

    /// The invocations left queued and running, and the sequence the log reader starts after.
    ///
    /// The checkpoint is read before the open invocations, so everything queued after it is
    /// found in the log, and what was queued before it is in the list: an invocation queued in
    /// between is in both and dispatched twice, and the `started` claim (appended with the
    /// version it loaded) lets only one of them run it. Retries while the store cannot answer;
    /// `None` on shutdown.
    async fn open_work(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<(Vec<String>, Vec<String>, u64)> {
        loop {
            let store = self.projector.store();
            let found = match store.checkpoint().await {
                Ok(cursor) => store.open_invocations().await.map(|open| (cursor, open)),
                Err(e) => Err(e),
            };
            match found {
                Ok((cursor, open)) => {
                    let (mut queued, mut running) = (Vec::new(), Vec::new());
                    for v in open {
                        match v.status.as_str() {
                            "queued" => queued.push(v.id.clone()),
                            "running" => running.push(v.id.clone()),
                            _ => {}
                        }
                    }
                    return Some((queued, running, cursor));
                }
                Err(err) => {
                    tracing::error!(error = %err, "executor could not read the open invocations; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }

    async fn dispatch(self: Arc<Self>, event: &RecordedEvent) {
        let Ok(InvocationEvent::Queued(queued)) = decode_event::<InvocationEvent>(&[], event)
        else {
            return;
        };
        // Bounded concurrency: waiting here applies back-pressure to the log reader.
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return;
        };
        self.spawn_run(queued, Claim::Take(None), Some(slot));
    }

    fn metadata(queued: &InvocationQueued) -> CommandMetadata {
        CommandMetadata {
            correlation_id: queued.request.correlation_id.clone(),
            causation_id: Some(queued.request.invocation_id.clone()),
            actor: None,
        }
    }

    /// Claims (unless the claim is held already) and runs one queued invocation. Returns false
    /// when another executor had it.
    pub async fn execute_one(&self, queued: InvocationQueued, claim: Claim) -> bool {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "invocation",
            invocation_id = %queued.request.invocation_id,
            session_id = %queued.request.session_id,
            tool = %queued.request.tool_name,
            correlation_id = queued.request.correlation_id.as_deref().unwrap_or(""),
        );
        self.execute_one_inner(queued, claim).instrument(span).await
    }

    async fn execute_one_inner(&self, queued: InvocationQueued, claim: Claim) -> bool {
        let id = queued.request.invocation_id.clone();
        let meta = Self::metadata(&queued);
        let now = OffsetDateTime::now_utc();
        let session = self
            .projector
            .store()
            .session(&queued.request.session_id)
            .await;
        let refusal = match (&session, &claim) {
            (_, Claim::Take(_)) if now > queued.start_deadline => Some((
                ErrorCode::Timeout,
                "no executor started the invocation before its start deadline",
            )),
            (Ok(Some(s)), _) if s.status == "ready" => None,
            // Never run unchecked: without the session there is no allowlist to trust.
            (Err(e), _) => {
                tracing::error!(error = %e, "could not read the invocation's session");
                Some((ErrorCode::Unavailable, "the session could not be read"))
            }
            (Ok(_), _) => Some((ErrorCode::NotFound, "session is closed or not ready")),
        };
        let session = session.ok().flatten();
        let timeout = Duration::from_secs(queued.timeout_seconds.max(1));
        let claimed = match claim {
            Claim::Held(claimed) => claimed,
            Claim::Take(known) => {
                if let Some((code, message)) = refusal {
                    let result = RunResult::failed(code, message);
                    // Unclaimed: abandoned only while still queued (another dispatch of the same
                    // queued event may have claimed it meanwhile).
                    self.complete(&id, known, &meta, result.unstarted(), 0)
                        .await;
                    return true;
                }
                let started = self.started(now, timeout);
                match self
                    .store
                    .execute_known(&id, known, InvocationCommand::Start(started), &(), &meta)
                    .await
                {
                    Ok((_, claimed)) => claimed,
                    Err(AggregateError::UserError(InvocationError::NotQueued(_))) => return false,
                    Err(err) => {
                        tracing::error!(invocation_id = %id, error = %err, "could not claim invocation");
                        return false;
                    }
                }
            }
        };
        if let Some((code, message)) = refusal {
            let result = RunResult::failed(code, message);
            self.complete(&id, Some(claimed), &meta, result, 0).await;
            return true;
        }
        let begun = Instant::now();
        let result = self.run(&queued, session.as_deref(), begun + timeout).await;
        // Exact: a run shorter than a millisecond is not a zero.
        let duration_ns = u64::try_from(begun.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.complete(&id, Some(claimed), &meta, result, duration_ns)
            .await;
        true
    }

    /// The `started` event of a claim by this executor, at `now` or just after its previous
    /// claim.
    fn started(&self, now: OffsetDateTime, timeout: Duration) -> InvocationStarted {
        use std::sync::atomic::Ordering;
        let wanted = i64::try_from(now.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        let previous = self
            .last_claim
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(wanted.max(last.saturating_add(1)))
            })
            .unwrap_or(wanted);
        let at = wanted.max(previous.saturating_add(1));
        let started_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at)).unwrap_or(now);
        InvocationStarted {
            executor_id: self.id.clone(),
            started_at,
            deadline: started_at + timeout,
        }
    }

    async fn run(
        &self,
        queued: &InvocationQueued,
        session: Option<&workspace_projections::SessionView>,
        deadline: Instant,
    ) -> RunResult {
        let request = &queued.request;
        let Some(session) = session else {
            return RunResult::failed(ErrorCode::NotFound, "session not found");
        };
        let Some(tool) = self.catalog.get(&request.tool_name) else {
            return RunResult::failed(ErrorCode::NotFound, "tool not found");
        };
        let args = match (&request.args, &request.args_ref) {
            (Some(a), _) => a.clone(),
            (None, Some(r)) => {
                let Ok(inv) = InvocationId::parse(&request.invocation_id) else {
                    return RunResult::failed(ErrorCode::Internal, "invalid invocation id");
                };
                match self.artifacts.get_ref(&inv, r).await {
                    Ok(bytes) => match serde_json::from_slice(&bytes) {
                        Ok(v) => v,
                        Err(_) => {
                            return RunResult::failed(
                                ErrorCode::Internal,
                                "stored arguments are corrupt",
                            );
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "arguments artifact unreadable");
                        return RunResult::failed(
                            ErrorCode::Internal,
                            "stored arguments are unreadable",
                        );
                    }
                }
            }
            (None, None) => Value::Object(Default::default()),
        };
        let Some(spec) = self.sessions.sandbox_spec(session) else {
            return RunResult::failed(ErrorCode::Internal, "invalid session id");
        };
        let runner = match self.runners.ensure(&spec).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(session_id = %spec.session_id, error = %e, "runner unavailable");
                let code = match e {
                    crate::runner::RunnerError::Unavailable(_) => ErrorCode::Unavailable,
                    _ => ErrorCode::Unavailable,
                };
                return RunResult::failed(code, "session runner unavailable");
            }
        };
        let ctx = ToolContext {
            session: Arc::new(SessionContext {
                id: spec.session_id.clone(),
                principal: session.principal.clone(),
                allowed_paths: session.allowed_paths.clone(),
                metadata: session.metadata.clone(),
            }),
            runner,
            deadline,
        };
        let run = (tool.handler)(ctx, args);
        // The runner enforces timeouts on processes; this is the backstop for everything else.
        let grace = Duration::from_millis(500);
        match tokio::time::timeout_at((deadline + grace).into(), run).await {
            Ok(Ok(success)) => RunResult::succeeded(success),
            Ok(Err(failure)) => RunResult::from_failure(failure),
            Err(_) => RunResult::timed_out(),
        }
    }

    async fn complete(
        &self,
        id: &str,
        known: Option<Known<Invocation>>,
        meta: &CommandMetadata,
        result: RunResult,
        duration_ns: u64,
    ) {
        let Ok(inv) = InvocationId::parse(id) else {
            return;
        };
        let unstarted = result.unstarted;
        let mut artifacts: Vec<ArtifactMeta> = Vec::new();
        let mut error = result.error;
        for a in result.artifacts {
            match self
                .artifacts
                .put(&inv, &a.name, &a.content_type, a.bytes)
                .await
            {
                Ok(m) => artifacts.push(m),
                Err(e) => {
                    tracing::error!(invocation_id = id, error = %e, "artifact could not be stored");
                    error.get_or_insert(ErrorInfo {
                        code: ErrorCode::Internal.as_str().into(),
                        message: "an artifact could not be stored".into(),
                        retryable: true,
                    });
                }
            }
        }
        let (output, output_ref) = self
            .inline_or_artifact(&inv, result.output, &mut artifacts)
            .await;
        let (logs, logs_ref) = self
            .logs_inline_or_artifact(&inv, result.logs, &mut artifacts)
            .await;
        let outcome = match result.outcome {
            InvocationOutcome::Succeeded if error.is_some() => InvocationOutcome::Failed,
            other => other,
        };
        let completed = InvocationCompleted {
            outcome,
            exit_code: result.exit_code,
            duration_ns,
            output,
            output_ref,
            logs,
            logs_ref,
            artifacts,
            error,
            completed_at: OffsetDateTime::now_utc(),
        };
        let status = match completed.outcome {
            InvocationOutcome::Succeeded => "succeeded",
            InvocationOutcome::Failed => "failed",
            InvocationOutcome::Denied => "denied",
        };
        let code = completed.error.as_ref().map(|e| e.code.clone());
        match self
            .store
            .execute_known(
                id,
                known,
                if unstarted {
                    InvocationCommand::Abandon(completed.into())
                } else {
                    InvocationCommand::Complete(completed.into())
                },
                &(),
                meta,
            )
            .await
        {
            // The audit line of the original service, now backed by the event it describes.
            Ok(_) => tracing::info!(
                invocation_id = id,
                status,
                error_code = code.as_deref().unwrap_or(""),
                duration_ms = duration_ns / 1_000_000,
                duration_ns,
                "audit.tool_invocation"
            ),
            // Another dispatch of the same queued event claimed it: that one records the outcome.
            Err(AggregateError::UserError(InvocationError::NotQueued(_))) if unstarted => {
                tracing::debug!(
                    invocation_id = id,
                    "claimed by another dispatch; not abandoned"
                )
            }
            Err(err) => {
                tracing::error!(invocation_id = id, error = %err, "could not record the outcome")
            }
        }
    }

    /// Keeps `bytes` out of the event when they are larger than the inline limit: stores them
    /// as an artifact and returns its reference. `None` means "keep it inline" (small enough,
    /// or the store failed, which is logged).
    async fn spill(
        &self,
        inv: &InvocationId,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
        artifacts: &mut Vec<ArtifactMeta>,
    ) -> Option<ArtifactRef> {
        if bytes.len() <= self.max_inline_bytes {
            return None;
        }
        match self.artifacts.put(inv, name, content_type, bytes).await {
            Ok(meta) => {
                let reference = meta.reference();
                artifacts.push(meta);
                Some(reference)
            }
            Err(e) => {
                tracing::error!(error = %e, name, "artifact could not be stored; keeping it inline");
                None
            }
        }
    }

    /// The output as the handler encoded it is what the event, the read model and the response
    /// carry, or what the artifact holds when it is too large to be inline.
    async fn inline_or_artifact(
        &self,
        inv: &InvocationId,
        output: Option<RawJson>,
        artifacts: &mut Vec<ArtifactMeta>,
    ) -> (Option<RawJson>, Option<ArtifactRef>) {
        let Some(output) = output else {
            return (None, None);
        };
        if output.get().len() <= self.max_inline_bytes {
            return (Some(output), None);
        }
        let bytes = output.get().as_bytes().to_vec();
        match self
            .spill(
                inv,
                "invocation-output.json",
                "application/json",
                bytes,
                artifacts,
            )
            .await
        {
            Some(reference) => (None, Some(reference)),
            None => (Some(output), None),
        }
    }

    async fn logs_inline_or_artifact(
        &self,
        inv: &InvocationId,
        logs: Vec<LogLine>,
        artifacts: &mut Vec<ArtifactMeta>,
    ) -> (Vec<LogLine>, Option<ArtifactRef>) {
        let mut bytes = Vec::new();
        for line in &logs {
            if serde_json::to_writer(&mut bytes, line).is_ok() {
                bytes.push(b'\n');
            }
        }
        match self
            .spill(
                inv,
                "invocation-logs.jsonl",
                "application/x-ndjson",
                bytes,
                artifacts,
            )
            .await
        {
            Some(reference) => (Vec::new(), Some(reference)),
            None => (logs, None),
        }
    }

    /// Records the outcome of an invocation that was running when its executor died: nobody
    /// knows whether the tool took effect (a write may have landed before the crash), so it is
    /// neither reported as a plain failure nor run again; see ADR 0003 for what a retry with
    /// its correlation id gets.
    async fn interrupt_orphan(&self, id: &str) {
        let meta = CommandMetadata {
            correlation_id: Some("recovery".into()),
            causation_id: Some(id.to_owned()),
            actor: None,
        };
        self.complete(id, None, &meta, RunResult::interrupted(), 0)
            .await;
    }
}

impl Handoff {
    /// The `started` event to append together with `queued` when this handoff holds a free
    /// slot (the invocation is claimed as it is queued); `None` to queue it unclaimed.
    pub fn claim(
        &mut self,
        now: OffsetDateTime,
        timeout_seconds: u64,
    ) -> Option<InvocationStarted> {
        self.slot.as_ref()?;
        let started = self
            .executor
            .started(now, Duration::from_secs(timeout_seconds.max(1)));
        self.issued = Some(started.clone());
        Some(started)
    }

    /// Starts the run of the invocation whose events were just committed: `queued`, then the
    /// `started` that [`Handoff::claim`] gave if it was called.
    pub fn submit(mut self, queued: InvocationQueued) {
        self.submitted = true;
        let mut events = vec![InvocationEvent::Queued(queued.clone())];
        let claim = match self.issued.take() {
            Some(started) => {
                events.push(InvocationEvent::Started(started));
                Claim::Held(fold(events))
            }
            None => Claim::Take(Some(fold(events))),
        };
        let slot = self.slot.take();
        self.executor.clone().spawn_run(queued, claim, slot);
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if self.submitted {
            return;
        }
        self.executor.handed_set().remove(&self.id);
        // The events may have been committed (a request cancelled after its append): look.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let id = std::mem::take(&mut self.id);
            runtime.spawn(self.executor.clone().resume(id, self.issued.take()));
        }
    }
}

/// The state and version of an invocation after `events`, its whole history.
fn fold(events: impl IntoIterator<Item = InvocationEvent>) -> Known<Invocation> {
    let mut known = Known {
        state: Invocation::default(),
        version: 0,
    };
    for event in events {
        cqrs_es::Aggregate::apply(&mut known.state, event);
        known.version += 1;
    }
    known
}

impl RunResult {
    /// The tool never ran (its start deadline passed, its session or runner was not there):
    /// no exit code.
    fn failed(code: ErrorCode, message: &str) -> Self {
        RunResult {
            outcome: InvocationOutcome::Failed,
            output: None,
            logs: Vec::new(),
            artifacts: Vec::new(),
            exit_code: None,
            error: Some(ErrorInfo {
                code: code.as_str().into(),
                message: message.into(),
                retryable: retryable(code),
            }),
            unstarted: false,
        }
    }

    /// This result, for an invocation no executor claimed.
    fn unstarted(self) -> Self {
        RunResult {
            unstarted: true,
            ..self
        }
    }

    /// The tool ran past its timeout and was abandoned (the executor's backstop; the runner
    /// kills processes on time itself): 124, as `timeout(1)` and the runner report it.
    fn timed_out() -> Self {
        RunResult {
            exit_code: Some(124),
            ..Self::failed(ErrorCode::Timeout, "the tool's timeout expired")
        }
    }

    /// The run was cut by a crash: outcome unknown, no exit code.
    fn interrupted() -> Self {
        Self::failed(
            ErrorCode::Interrupted,
            "the service stopped while the invocation was running, so its outcome is unknown: \
             the tool may or may not have taken effect. It was not run again; check the \
             workspace, then retry with a new correlation id",
        )
    }

    fn succeeded(s: ToolSuccess) -> Self {
        RunResult {
            outcome: InvocationOutcome::Succeeded,
            output: Some(s.output),
            logs: s.logs,
            artifacts: s.artifacts,
            exit_code: Some(s.exit_code),
            error: None,
            unstarted: false,
        }
    }

    fn from_failure(f: ToolFailure) -> Self {
        RunResult {
            outcome: if f.code.is_denial() {
                InvocationOutcome::Denied
            } else {
                InvocationOutcome::Failed
            },
            output: f.output,
            logs: f.logs,
            artifacts: f.artifacts,
            exit_code: Some(f.exit_code),
            error: Some(ErrorInfo {
                code: f.code.as_str().into(),
                message: f.message,
                retryable: retryable(f.code),
            }),
            unstarted: false,
        }
    }
}

/// Whether sending the request again may succeed: the sandbox may come back, a timeout may
/// not recur, an interrupted run's effect can be checked and the request sent again (under a
/// new correlation id, ADR 0003).
fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_run_fails_retryably_with_an_unknown_outcome_and_no_exit_code() {
        let r = RunResult::interrupted();
        assert_eq!((r.outcome, r.exit_code), (InvocationOutcome::Failed, None));
        let error = r.error.expect("an error");
        assert_eq!(error.code, "interrupted");
        assert!(error.retryable);
        assert!(
            error.message.contains("outcome is unknown"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_tool_that_never_ran_has_no_exit_code_and_one_that_timed_out_has_124() {
        let never = RunResult::failed(ErrorCode::Timeout, "start deadline passed");
        assert_eq!(never.exit_code, None);
        assert_eq!(RunResult::timed_out().exit_code, Some(124));
        let ran = RunResult::succeeded(ToolSuccess::default());
        assert_eq!(ran.exit_code, Some(0));
    }
}
