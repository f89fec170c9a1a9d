//! The executor: takes queued invocations, claims each by appending `started` with the version
//! it loaded (so two executors can never both run one), runs the tool in the session's runner,
//! publishes the output of its programs live while they run (ADR 0010), stores large output
//! and logs as artifacts, and appends the one terminal outcome.
//!
//! It never decides policy (that happened before the invocation was queued) and never reads the
//! workspace except through the runner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::AggregateError;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use workspace_events::{
    ArtifactMeta, ArtifactRef, ErrorInfo, InvocationCompleted, InvocationEvent, InvocationOutcome,
    InvocationQueued, InvocationStarted, LogLine, RawJson,
};

use crate::artifacts::ArtifactStore;
use crate::domain::{Invocation, InvocationCommand, InvocationError, InvocationStatus};
use crate::error_code::ErrorCode;
use crate::eventstore::{AggregateStore, CommandMetadata, EventLog, Known, decode_event};
use crate::ids::InvocationId;
use crate::live::{LiveOutput, OutputSink};
use crate::projector::Projector;
use crate::runner::RunnerProvider;
use crate::sessions::Sessions;
use crate::tools::{Catalog, SessionContext, ToolContext, ToolFailure, ToolSuccess};
use crate::workqueue::{
    Claimant, Claimed, EarlyClaim, Job, Standing, StartClaim, Verdict, Work, WorkQueue,
    delay_until, verdict,
};

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
    work: Arc<dyn WorkQueue>,
    /// Where the output of running programs is published while they run (ADR 0010).
    live: Arc<dyn LiveOutput>,
    /// How long after a claim's `started.deadline` its claimer is presumed gone (ADR 0009).
    grace: Duration,
    max_inline_bytes: usize,
    slots: Arc<Semaphore>,
    /// Every run in flight, so a shutdown lets them record their outcome.
    runs: TaskTracker,
    /// `started_at` (Unix nanoseconds) of this executor's latest claim: claims get strictly
    /// increasing times, so two `started` events of one executor never compare equal.
    last_claim: std::sync::atomic::AtomicI64,
    /// The Kubernetes API client the `k8s.*` tools of kubernetes sessions use; `None`
    /// (the local backend) leaves those tools without a cluster.
    kube: Option<kube::Client>,
}

/// An invocation as its events leave it, loaded (or known from the work item) to decide what
/// a delivery calls for.
struct Loaded {
    known: Known<Invocation>,
    queued: Option<InvocationQueued>,
    started: Option<InvocationStarted>,
}

impl Loaded {
    fn standing(&self) -> Standing<'_> {
        match (self.known.state.status(), &self.queued, &self.started) {
            (None, _, _) => Standing::Absent,
            (Some(InvocationStatus::Queued), Some(q), _) => Standing::Queued {
                start_deadline: q.start_deadline,
            },
            (Some(InvocationStatus::Running), _, Some(s)) => Standing::Running(s),
            _ => Standing::Over,
        }
    }
}

/// How handling one claimed or refused run ended.
enum Handled {
    /// Its terminal event is appended: the delivery is done.
    Recorded,
    /// Another executor claimed it first (or recorded its end): look again.
    Lost,
    /// The terminal event could not be appended: leave the delivery to come back.
    NotRecorded,
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

/// How long to wait before looking again after the queue or the store failed.
const RETRY: Duration = Duration::from_millis(200);

impl Executor {
    /// An executor taking its work from `work`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        log: Arc<dyn EventLog>,
        projector: Arc<Projector>,
        sessions: Arc<Sessions>,
        runners: Arc<dyn RunnerProvider>,
        catalog: Arc<Catalog>,
        artifacts: Arc<dyn ArtifactStore>,
        work: Arc<dyn WorkQueue>,
        live: Arc<dyn LiveOutput>,
        grace: Duration,
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
            work,
            live,
            grace,
            max_inline_bytes,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            runs: TaskTracker::new(),
            last_claim: std::sync::atomic::AtomicI64::new(0),
            kube: None,
        }
    }

    /// This executor with the Kubernetes API client of the `k8s.*` tools (handed only to
    /// tools of sessions whose runtime is `kubernetes`).
    pub fn with_kube(mut self, client: kube::Client) -> Self {
        self.kube = Some(client);
        self
    }

    /// This executor's id, as its `started` events carry it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Takes one run slot until the permit is dropped (`None` when none is free): while every
    /// slot is held, deliveries wait and nothing is claimed.
    pub fn hold_a_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Takes work from the queue until `shutdown`, then lets the runs in flight record their
    /// outcome. At start it offers every invocation the read models show open (the in-process
    /// queue is empty after a restart; a JetStream queue ignores the offers), and every
    /// `grace` it sweeps for claims past their deadline that no delivery will come back for.
    pub async fn run_until_stopped(self: Arc<Self>, shutdown: CancellationToken) {
        // Early claims (in process only, ADR 0009) while this runs: the queue holds the
        // claimant weakly, so none is taken once this returns.
        let claims: Arc<dyn Claimant<Job>> = Arc::new(EarlyClaims {
            executor: Arc::downgrade(&self),
            shutdown: shutdown.clone(),
        });
        self.work.attach(Arc::downgrade(&claims));
        if self.offer_open_work(&shutdown).await {
            let sweeper = self.runs.spawn(self.clone().sweep_until(shutdown.clone()));
            self.take_work_until(&shutdown).await;
            sweeper.abort();
        }
        self.runs.close();
        self.runs.wait().await;
    }

    /// The intake loop ([`crate::workqueue::take_until`]): each delivery handled on its own
    /// task, in one of the run slots.
    async fn take_work_until(self: &Arc<Self>, shutdown: &CancellationToken) {
        let handle = |work: Work, slot: OwnedSemaphorePermit| {
            let (this, shutdown) = (self.clone(), shutdown.clone());
            async move {
                let _slot = slot;
                this.handle(work, &shutdown).await;
            }
        };
        crate::workqueue::take_until(
            self.work.as_ref(),
            &self.slots,
            &self.runs,
            shutdown,
            "executor",
            handle,
        )
        .await;
    }

    /// Offers every queued and running invocation of the read models as a look-up. Retries
    /// while the store cannot answer; false on shutdown.
    async fn offer_open_work(&self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.projector.store().open_invocations().await {
                Ok(open) => {
                    for view in open {
                        self.work.offer(Job {
                            invocation_id: view.id.clone(),
                            session_id: view.session_id.clone(),
                            sequence: 0,
                            queued: None,
                        });
                    }
                    return true;
                }
                Err(err) => {
                    tracing::error!(error = %err, "executor could not read the open invocations; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
    }

    /// The backstop of the liveness rule (ADR 0009): every `grace`, the invocations the read
    /// models show open that are running past their deadline plus the grace, or queued past
    /// their start deadline, are ended as the rule says. Only ever `Expire` or `Interrupt`,
    /// both optimistic appends, so concurrent sweepers and deliveries are harmless.
    async fn sweep_until(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.grace.max(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let open = match self.projector.store().open_invocations().await {
                Ok(open) => open,
                Err(err) => {
                    tracing::warn!(error = %err, "sweep: could not read the open invocations");
                    continue;
                }
            };
            // Open invocations are few (queued or running): each is loaded and judged from its
            // events, which carry the deadlines.
            for view in open {
                self.settle_overdue(&view.id).await;
            }
        }
    }

    /// Ends one overdue invocation found by the sweep, if its events agree it is overdue.
    async fn settle_overdue(&self, id: &str) {
        let Ok(loaded) = self.load(id).await else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        match verdict(loaded.standing(), true, now, self.grace) {
            Verdict::Expire => {
                let meta = Self::recovery_metadata(id);
                let result = RunResult::start_deadline_passed().unstarted();
                self.complete(id, Some(loaded.known), &meta, result, 0)
                    .await;
            }
            Verdict::Interrupt => {
                let meta = Self::recovery_metadata(id);
                self.complete(id, Some(loaded.known), &meta, RunResult::interrupted(), 0)
                    .await;
            }
            _ => {}
        }
    }

    /// Loads an invocation's events (upcast: an older `completed` must count, never be skipped
    /// as undecodable).
    async fn load(&self, id: &str) -> Result<Loaded, String> {
        let events = self
            .log
            .load(workspace_events::AggregateType::Invocation, id)
            .await
            .map_err(|e| e.to_string())?;
        let upcasters = workspace_events::upcast::registry();
        let mut decoded = Vec::with_capacity(events.len());
        for event in &events {
            decoded.push(
                decode_event::<InvocationEvent>(&upcasters, event).map_err(|e| e.to_string())?,
            );
        }
        Ok(fold(decoded))
    }

    /// Applies the liveness rule to one delivery until it is settled.
    async fn handle(&self, work: Work, shutdown: &CancellationToken) {
        let id = work.job.invocation_id.clone();
        if work.job.queued.is_some() {
            // Where the delivered `queued` (the aggregate's first event) is: the claim that
            // follows it then needs no look-up of the aggregate's last position.
            self.log.remember_position(
                workspace_events::AggregateType::Invocation,
                &id,
                1,
                work.job.sequence,
                &work.job.session_id,
            );
        }
        // The queued event the queue decoded is the state at version 1; anything else, or a
        // second look, loads the events.
        let mut known = work
            .job
            .queued
            .clone()
            .map(|q| fold([InvocationEvent::Queued(q)]));
        loop {
            let loaded = match known.take() {
                Some(loaded) => loaded,
                None => match self.load(&id).await {
                    Ok(loaded) => loaded,
                    Err(err) => {
                        tracing::error!(invocation_id = %id, error = %err, "could not load a delivered invocation; it comes back");
                        let _ = work.nak(Duration::from_secs(1)).await;
                        return;
                    }
                },
            };
            let now = OffsetDateTime::now_utc();
            let handled = match verdict(loaded.standing(), work.last_attempt(), now, self.grace) {
                Verdict::Done => Handled::Recorded,
                Verdict::Claim => {
                    if shutdown.is_cancelled() {
                        let _ = work.nak(Duration::ZERO).await;
                        return;
                    }
                    let Some(queued) = loaded.queued.clone() else {
                        return;
                    };
                    let run = self.execute_one(queued, Some(loaded.known));
                    tokio::pin!(run);
                    tokio::select! {
                        biased;
                        handled = &mut run => handled,
                        _ = work.keep_alive() => Handled::NotRecorded,
                    }
                }
                Verdict::Expire => {
                    let Some(queued) = &loaded.queued else { return };
                    let result = RunResult::start_deadline_passed().unstarted();
                    self.complete(&id, Some(loaded.known), &Self::metadata(queued), result, 0)
                        .await
                }
                Verdict::GiveUp => {
                    let Some(queued) = &loaded.queued else { return };
                    let message = format!(
                        "no executor could take the invocation in {} deliveries",
                        work.delivery()
                    );
                    let result = RunResult::failed(ErrorCode::Unavailable, &message).unstarted();
                    self.complete(&id, Some(loaded.known), &Self::metadata(queued), result, 0)
                        .await
                }
                Verdict::Interrupt => {
                    let meta = Self::recovery_metadata(&id);
                    self.complete(&id, Some(loaded.known), &meta, RunResult::interrupted(), 0)
                        .await
                }
                Verdict::Wait { until } => {
                    let delay = delay_until(until, now);
                    if !work.last_attempt() {
                        let _ = work.nak(delay).await;
                        return;
                    }
                    // Nothing delivers it again: hold it until the claimer is presumed gone.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                        _ = work.keep_alive() => {}
                    }
                    Handled::Lost
                }
            };
            match handled {
                Handled::Recorded => {
                    if let Err(err) = work.ack().await {
                        tracing::warn!(invocation_id = %id, error = %err, "could not ack a settled delivery; it comes back and is acked then");
                    }
                    return;
                }
                Handled::Lost => continue,
                Handled::NotRecorded => {
                    let _ = work.nak(Duration::from_secs(1)).await;
                    return;
                }
            }
        }
    }

    fn metadata(queued: &InvocationQueued) -> CommandMetadata {
        CommandMetadata {
            correlation_id: queued.request.correlation_id.clone(),
            causation_id: Some(queued.request.invocation_id.clone()),
            actor: None,
        }
    }

    /// The correlation of events an executor records about another one's claim.
    fn recovery_metadata(id: &str) -> CommandMetadata {
        CommandMetadata {
            correlation_id: Some("recovery".into()),
            causation_id: Some(id.to_owned()),
            actor: None,
        }
    }

    /// Claims one queued invocation (appending `started` after `known`, or after the loaded
    /// state) and runs it, or records why it cannot run.
    async fn execute_one(
        &self,
        queued: InvocationQueued,
        known: Option<Known<Invocation>>,
    ) -> Handled {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "invocation",
            invocation_id = %queued.request.invocation_id,
            session_id = %queued.request.session_id,
            tool = %queued.request.tool_name,
            correlation_id = queued.request.correlation_id.as_deref().unwrap_or(""),
        );
        self.execute_one_inner(queued, known).instrument(span).await
    }

    async fn execute_one_inner(
        &self,
        queued: InvocationQueued,
        known: Option<Known<Invocation>>,
    ) -> Handled {
        let id = queued.request.invocation_id.clone();
        let meta = Self::metadata(&queued);
        let now = OffsetDateTime::now_utc();
        if now > queued.start_deadline {
            // Unclaimed: abandoned only while still queued (another delivery of the same
            // queued event may have claimed it meanwhile).
            let result = RunResult::start_deadline_passed().unstarted();
            return self.complete(&id, known, &meta, result, 0).await;
        }
        let timeout = Duration::from_secs(queued.timeout_seconds.max(1));
        let started = self.started(now, timeout);
        // The session is read while the claim is appended (one wait instead of two, on the
        // path of every invocation); a session closed or unreadable fails the claimed run
        // before it starts, as an early claim's does.
        let (session, claim) = tokio::join!(
            self.ready_session(&queued),
            self.store
                .execute_known(&id, known, InvocationCommand::Start(started), &(), &meta)
        );
        let claimed = match claim {
            Ok((_, claimed)) => claimed,
            Err(AggregateError::UserError(
                InvocationError::NotQueued(_) | InvocationError::NotFound,
            )) => return Handled::Lost,
            Err(err) => {
                tracing::error!(invocation_id = %id, error = %err, "could not claim invocation");
                return Handled::NotRecorded;
            }
        };
        match session {
            Ok(session) => self.run_claimed(&queued, Some(session), claimed).await,
            Err(result) => self.complete(&id, Some(claimed), &meta, result, 0).await,
        }
    }

    /// The invocation's session, if it is ready to run in; otherwise the result that records
    /// why not. Never run unchecked: without the session there is no allowlist to trust.
    async fn ready_session(
        &self,
        queued: &InvocationQueued,
    ) -> Result<Arc<workspace_projections::SessionView>, RunResult> {
        match self
            .projector
            .store()
            .session(&queued.request.session_id)
            .await
        {
            Ok(Some(s)) if s.status == workspace_events::SessionStatus::Ready => Ok(s),
            Err(e) => {
                tracing::error!(error = %e, "could not read the invocation's session");
                Err(RunResult::failed(
                    ErrorCode::Unavailable,
                    "the session could not be read",
                ))
            }
            Ok(_) => Err(RunResult::failed(
                ErrorCode::NotFound,
                "session is closed or not ready",
            )),
        }
    }

    /// Runs an invocation this executor has claimed (`claimed` holds its `started`) and
    /// records its outcome.
    async fn run_claimed(
        &self,
        queued: &InvocationQueued,
        session: Option<Arc<workspace_projections::SessionView>>,
        claimed: Known<Invocation>,
    ) -> Handled {
        let id = &queued.request.invocation_id;
        let meta = Self::metadata(queued);
        let timeout = Duration::from_secs(queued.timeout_seconds.max(1));
        let begun = Instant::now();
        let output = OutputSink::new(self.live.clone(), id.clone());
        let result = self
            .run(queued, session.as_deref(), begun + timeout, &output)
            .await;
        // Before the terminal event: a stream that reads it finds every chunk before it.
        output.finish().await;
        // Exact: a run shorter than a millisecond is not a zero.
        let duration_ns = u64::try_from(begun.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.complete(id, Some(claimed), &meta, result, duration_ns)
            .await
    }

    /// Runs an invocation claimed early ([`EarlyClaim`]): its `queued` and `started` were
    /// committed together, so the session was ready when it was accepted; it is read again
    /// for the run, and a session closed meanwhile fails the run as a claimed one.
    async fn run_claimed_early(&self, queued: InvocationQueued, claimed: Known<Invocation>) {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "invocation",
            invocation_id = %queued.request.invocation_id,
            session_id = %queued.request.session_id,
            tool = %queued.request.tool_name,
            correlation_id = queued.request.correlation_id.as_deref().unwrap_or(""),
        );
        async {
            match self.ready_session(&queued).await {
                Ok(session) => {
                    self.run_claimed(&queued, Some(session), claimed).await;
                }
                Err(result) => {
                    let id = &queued.request.invocation_id;
                    let meta = Self::metadata(&queued);
                    self.complete(id, Some(claimed), &meta, result, 0).await;
                }
            }
        }
        .instrument(span)
        .await;
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
        output: &OutputSink,
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
                runtime: session.runtime.clone(),
            }),
            runner,
            deadline,
            output: output.clone(),
            // Only a kubernetes session reaches the cluster, and only through this client.
            kube: self.kube.clone().filter(|_| {
                session
                    .runtime
                    .as_ref()
                    .is_some_and(|r| r.kind == crate::tools::k8s::KUBERNETES_RUNTIME)
            }),
        };
        let run = tool.run(ctx, args);
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
    ) -> Handled {
        let Ok(inv) = InvocationId::parse(id) else {
            tracing::error!(
                invocation_id = id,
                "not an invocation id; nothing to record"
            );
            return Handled::Recorded;
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
                        code: ErrorCode::Internal.into(),
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
        let status = InvocationStatus::from(completed.outcome).as_str();
        let code = completed.error.as_ref().map(|e| e.code.to_string());
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
            Ok(_) => {
                tracing::info!(
                    invocation_id = id,
                    status,
                    error_code = code.as_deref().unwrap_or(""),
                    duration_ms = duration_ns / 1_000_000,
                    duration_ns,
                    "audit.tool_invocation"
                );
                Handled::Recorded
            }
            // Claimed by another delivery meanwhile (an unstarted end), or ended by someone
            // else (an interrupt that lost to the claimer's outcome): look again.
            Err(AggregateError::UserError(
                InvocationError::NotQueued(_) | InvocationError::CannotComplete(_),
            )) => {
                tracing::debug!(invocation_id = id, "its state moved on; not recorded");
                Handled::Lost
            }
            Err(err) => {
                tracing::error!(invocation_id = id, error = %err, "could not record the outcome");
                Handled::NotRecorded
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
}

/// The state and version of an invocation after `events`, its whole history, with the events
/// the liveness rule reads.
/// The executor as the in-process queue's [`Claimant`]: claims a queued invocation as it is
/// committed when a run slot is free and the executor is not stopping (ADR 0009).
struct EarlyClaims {
    executor: std::sync::Weak<Executor>,
    shutdown: CancellationToken,
}

impl Claimant<Job> for EarlyClaims {
    fn claim(&self, job: &Job) -> Option<EarlyClaim<Job>> {
        if self.shutdown.is_cancelled() {
            return None;
        }
        let queued = job.queued.as_ref()?;
        let now = OffsetDateTime::now_utc();
        if now > queued.start_deadline {
            return None;
        }
        let executor = self.executor.upgrade()?;
        let slot = executor.hold_a_slot()?;
        let timeout = Duration::from_secs(queued.timeout_seconds.max(1));
        let started = executor.started(now, timeout);
        let claim = StartClaim {
            started: started.clone(),
            metadata: Executor::metadata(queued),
        };
        let claimed = Early {
            executor,
            invocation_id: job.invocation_id.clone(),
            started,
            slot,
        };
        Some(EarlyClaim::new(claim, Box::new(claimed)))
    }
}

/// One early claim, holding its run slot until it runs or is found not to be needed.
struct Early {
    executor: Arc<Executor>,
    invocation_id: String,
    started: InvocationStarted,
    slot: OwnedSemaphorePermit,
}

impl Claimed<Job> for Early {
    fn committed(self: Box<Self>, job: Job) {
        let Early {
            executor,
            started,
            slot,
            ..
        } = *self;
        let Some(queued) = job.queued else {
            // A job claimed early always carries its event; without it, look it up.
            return Box::new(Early {
                executor,
                invocation_id: job.invocation_id,
                started,
                slot,
            })
            .abandoned();
        };
        let known = fold([
            InvocationEvent::Queued(queued.clone()),
            InvocationEvent::Started(started),
        ])
        .known;
        let this = executor.clone();
        executor.runs.spawn(async move {
            let _slot = slot;
            this.run_claimed_early(queued, known).await;
        });
    }

    fn abandoned(self: Box<Self>) {
        let Early {
            executor,
            invocation_id,
            started,
            slot,
        } = *self;
        let this = executor.clone();
        // The append failed, was refused, or its outcome is unknown: the claim runs only if
        // the log holds exactly it as the invocation's latest event (nobody else runs a run
        // claimed by this executor); otherwise the invocation is someone else's, or its
        // `queued` is offered and taken the usual way.
        executor.runs.spawn(async move {
            let _slot = slot;
            let loaded = match this.load(&invocation_id).await {
                Ok(loaded) => loaded,
                Err(err) => {
                    tracing::warn!(invocation_id = %invocation_id, error = %err, "could not look up an early claim; the sweep ends it if it was committed");
                    return;
                }
            };
            let ours = matches!(loaded.standing(), Standing::Running(s) if *s == started);
            if let (true, Some(queued)) = (ours, loaded.queued) {
                this.run_claimed_early(queued, loaded.known).await;
            }
        });
    }
}

fn fold(events: impl IntoIterator<Item = InvocationEvent>) -> Loaded {
    let mut loaded = Loaded {
        known: Known {
            state: Invocation::default(),
            version: 0,
        },
        queued: None,
        started: None,
    };
    for event in events {
        match &event {
            InvocationEvent::Queued(q) => loaded.queued = Some(q.clone()),
            InvocationEvent::Started(s) => loaded.started = Some(s.clone()),
            _ => {}
        }
        cqrs_es::Aggregate::apply(&mut loaded.known.state, event);
        loaded.known.version += 1;
    }
    loaded
}

impl RunResult {
    /// No executor claimed it before its start deadline.
    fn start_deadline_passed() -> Self {
        Self::failed(
            ErrorCode::Timeout,
            "no executor started the invocation before its start deadline",
        )
    }

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
                code: code.into(),
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
                code: f.code.into(),
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
        assert_eq!(error.code, ErrorCode::Interrupted);
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
