//! Invocation acceptance: a request to run a tool in a ready session becomes exactly one
//! recorded outcome. The correlation id is checked and names the invocation (a repeated one
//! answers with the first invocation), large arguments leave the event for an artifact, the
//! runtime gating refuses a cluster tool on a session that does not run on Kubernetes and a
//! disabled delivery tool (`invocation.denied`, [`crate::tools::k8s::gate`]), the arguments
//! are validated against the tool's schema (`invocation.rejected`) and policy runs
//! (`invocation.denied`); otherwise `invocation.queued` is appended and offered to the work
//! queue. It also waits for the read models to show what it recorded.
//!
//! This module never runs tools, never speaks HTTP, and never refuses anything silently: every
//! refusal past the correlation-id check is an event.

use std::sync::Arc;
use std::time::Duration;

use cqrs_es::AggregateError;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use workspace_events::{Actor, ErrorInfo, InvocationQueued, InvocationRefused, InvocationRequest};
use workspace_projections::InvocationView;

use crate::artifacts::ArtifactStore;
use crate::config::Config;
use crate::domain::{Invocation, InvocationCommand, InvocationError};
use crate::error_code::ErrorCode;
use crate::eventstore::{AggregateStore, CommandMetadata, CommitReceipt, Known};
use crate::ids::{InvocationId, SessionId};
use crate::projector::{Projector, TerminalWatch};
use crate::readmodel::ReadModelError;
use crate::tools::{ErasedTool, SessionContext};
use crate::workqueue::{Job, WorkQueue};

/// How long past the tool's timeout a synchronous caller waits for the terminal state.
const SYNC_GRACE: Duration = Duration::from_secs(30);
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);
/// The longest correlation id, in bytes.
const MAX_CORRELATION_ID: usize = 256;

/// A request to invoke a tool, as the caller gave it.
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    /// The caller's idempotency key, untrimmed; blank is the same as absent.
    pub correlation_id: Option<String>,
    /// The arguments.
    pub args: Map<String, Value>,
    /// Whether the caller approved a tool that needs approval.
    pub approved: bool,
}

/// What became of an accepted request.
#[derive(Debug)]
pub enum Accepted {
    /// The correlation id names an invocation already recorded (possibly by a concurrent
    /// request): its view; nothing was appended.
    Existing(Arc<InvocationView>),
    /// Refused before anything ran: `invocation.rejected` (`invalid_argument`) or
    /// `invocation.denied` (the policy's code) was recorded.
    Refused {
        /// The invocation.
        invocation_id: InvocationId,
        /// Why.
        code: ErrorCode,
        /// Where the refusal landed.
        receipt: CommitReceipt,
        /// A wait for its view, registered before the append.
        watch: TerminalWatch,
    },
    /// `invocation.queued` was recorded and offered to the work queue.
    Queued {
        /// The invocation.
        invocation_id: InvocationId,
        /// Where it landed.
        receipt: CommitReceipt,
        /// A wait for its terminal view, registered before the append
        /// ([`Invocations::wait_registered`]).
        watch: TerminalWatch,
    },
}

/// A failure to accept or follow an invocation, classified for the API; the cause, when it is
/// not the caller's, has been logged.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InvocationFailure {
    /// Stable code.
    pub code: ErrorCode,
    /// Message safe to show.
    pub message: String,
}

impl InvocationFailure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The read models did not show a recorded invocation in time.
    pub fn not_caught_up() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "read model did not catch up; the invocation was recorded",
        )
    }

    fn read_model(rid: &str) -> impl FnOnce(ReadModelError) -> Self + '_ {
        move |err| {
            let code = err.code();
            let message = match code {
                ErrorCode::Unavailable => "read model unavailable",
                ErrorCode::Conflict => "read model is being rebuilt; retry",
                _ => "internal error",
            };
            tracing::error!(request_id = %rid, error = %err, code = %code, "request failed");
            Self::new(code, message)
        }
    }

    fn internal(cause: &dyn std::fmt::Display, rid: &str) -> Self {
        tracing::error!(request_id = rid, error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

fn classify(err: AggregateError<InvocationError>, rid: &str) -> InvocationFailure {
    match err {
        AggregateError::UserError(InvocationError::AlreadyExists) => {
            InvocationFailure::new(ErrorCode::Conflict, "invocation already exists")
        }
        AggregateError::AggregateConflict => InvocationFailure::new(
            ErrorCode::Conflict,
            "concurrent update of the invocation; retry",
        ),
        AggregateError::DatabaseConnectionError(e) => {
            tracing::error!(request_id = %rid, error = %e, code = %ErrorCode::Unavailable, "request failed");
            InvocationFailure::new(ErrorCode::Unavailable, "event store unavailable")
        }
        other => InvocationFailure::internal(&other, rid),
    }
}

/// The correlation id of a request: trimmed, `None` when blank, at most 256 printable
/// characters.
pub fn correlation_id(raw: Option<&str>) -> Result<Option<String>, InvocationFailure> {
    let Some(c) = raw.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if c.len() > MAX_CORRELATION_ID || c.chars().any(char::is_control) {
        return Err(InvocationFailure::new(
            ErrorCode::InvalidArgument,
            "correlation_id must be at most 256 printable characters",
        ));
    }
    Ok(Some(c.to_owned()))
}

/// The id of an invocation: derived from (session, tool, correlation id) when the caller gave
/// one, so a retry names the same aggregate on any replica; random otherwise.
pub fn invocation_id(
    session: &SessionId,
    tool: &str,
    correlation_id: Option<&str>,
) -> InvocationId {
    match correlation_id {
        Some(c) => InvocationId::for_correlation(session, tool, c),
        None => InvocationId::generate(),
    }
}

/// Offers its job (a look-up) to the work queue when dropped armed: a request cancelled or
/// failed after its `queued` append may have committed it, and committed work is never
/// stranded (the executor acks a look-up of an invocation that does not exist).
struct OfferOnDrop<'a> {
    work: &'a dyn WorkQueue,
    job: Option<Job>,
}

impl Drop for OfferOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            self.work.offer(job);
        }
    }
}

/// Accepts invocations and waits for their views.
pub struct Invocations {
    store: AggregateStore<Invocation>,
    projector: Arc<Projector>,
    artifacts: Arc<dyn ArtifactStore>,
    /// Where executors take queued invocations from; offered each `queued` committed here.
    work: Arc<dyn WorkQueue>,
    config: Arc<Config>,
}

impl Invocations {
    /// The invocation service; `work` is offered every `queued` it commits.
    pub fn new(
        store: AggregateStore<Invocation>,
        projector: Arc<Projector>,
        artifacts: Arc<dyn ArtifactStore>,
        work: Arc<dyn WorkQueue>,
        config: Arc<Config>,
    ) -> Self {
        Self {
            store,
            projector,
            artifacts,
            work,
            config,
        }
    }

    /// The invocation commands (for tests and repairs that record events directly).
    pub fn store(&self) -> &AggregateStore<Invocation> {
        &self.store
    }

    async fn view(
        &self,
        id: &InvocationId,
        rid: &str,
    ) -> Result<Option<Arc<InvocationView>>, InvocationFailure> {
        self.projector
            .store()
            .invocation(id.as_str())
            .await
            .map_err(InvocationFailure::read_model(rid))
    }

    /// Accepts a request to run `tool` in the (ready) session `ctx`: answers with the
    /// invocation its correlation id already names, or records its refusal, or queues it.
    pub async fn accept(
        &self,
        ctx: &SessionContext,
        tool: &dyn ErasedTool,
        request: InvokeRequest,
        rid: &str,
    ) -> Result<Accepted, InvocationFailure> {
        let correlation_id = correlation_id(request.correlation_id.as_deref())?;
        let invocation_id = invocation_id(&ctx.id, tool.spec().name, correlation_id.as_deref());
        // A repeated correlation id answers with the first invocation; the tool never runs twice.
        if correlation_id.is_some()
            && let Some(existing) = self.view(&invocation_id, rid).await?
        {
            return Ok(Accepted::Existing(existing));
        }

        let args = Value::Object(request.args);
        let now = OffsetDateTime::now_utc();
        let mut recorded = InvocationRequest {
            invocation_id: invocation_id.to_string(),
            session_id: ctx.id.to_string(),
            tool_name: tool.spec().name.to_owned(),
            correlation_id: correlation_id.clone(),
            approved: request.approved,
            args: Some(args.clone()),
            args_ref: None,
            requested_at: now,
        };
        let meta = CommandMetadata {
            correlation_id: Some(correlation_id.clone().unwrap_or_else(|| rid.to_owned())),
            causation_id: Some(rid.to_owned()),
            actor: Some(Actor {
                tenant_id: ctx.principal.tenant_id.clone(),
                actor_id: ctx.principal.actor_id.clone(),
            }),
        };

        // Large arguments (a 1 MiB file to write) leave the event for an artifact.
        let args_bytes = serde_json::to_vec(&args).unwrap_or_default();
        if args_bytes.len() > self.config.max_inline_bytes {
            let stored = self
                .artifacts
                .put(
                    &invocation_id,
                    "invocation-args.json",
                    "application/json",
                    args_bytes,
                )
                .await
                .map_err(|e| InvocationFailure::internal(&e, rid))?;
            recorded.args = None;
            recorded.args_ref = Some(stored.reference());
        }

        let spec = tool.spec();
        // The runtime gating comes first (before the arguments and the policy): a cluster tool
        // on a session that does not run on Kubernetes, or a delivery tool while they are
        // disabled, is denied whatever its arguments.
        let gated = crate::tools::k8s::gate(ctx, spec, self.config.k8s_delivery_tools);
        let refusal = match gated.map(|()| tool.check(&args)) {
            Err(denial) => Some((
                InvocationCommand::Deny as fn(InvocationRefused) -> InvocationCommand,
                denial.code,
                denial.message,
            )),
            Ok(Err(e)) => Some((
                InvocationCommand::Reject as fn(InvocationRefused) -> InvocationCommand,
                ErrorCode::InvalidArgument,
                e.to_string(),
            )),
            Ok(Ok(paths)) => {
                match crate::policy::authorize(ctx, spec, &paths, &args, recorded.approved) {
                    Err(denial) => Some((
                        InvocationCommand::Deny as fn(InvocationRefused) -> InvocationCommand,
                        denial.code,
                        denial.message,
                    )),
                    Ok(()) => None,
                }
            }
        };
        let refused = refusal.as_ref().map(|(_, code, _)| *code);
        let command = match refusal {
            Some((make, code, message)) => make(InvocationRefused {
                request: recorded.into(),
                error: ErrorInfo {
                    code: code.into(),
                    message,
                    retryable: false,
                },
            }),
            None => InvocationCommand::Queue(InvocationQueued {
                request: recorded.into(),
                timeout_seconds: tool.spec().constraints.timeout_seconds,
                start_deadline: now
                    + time::Duration::try_from(self.config.queue_timeout)
                        .unwrap_or(time::Duration::MINUTE),
            }),
        };
        // Once committed, the `queued` event is offered to the work queue with the state it
        // holds (the in-process queue wakes a waiting executor; JetStream already has it). A
        // request cancelled during the append may still have committed it: the guard then
        // offers a look-up.
        let (mut offer, queued) = match &command {
            InvocationCommand::Queue(queued) => (
                Some(OfferOnDrop {
                    work: self.work.as_ref(),
                    job: Some(Job {
                        invocation_id: invocation_id.to_string(),
                        session_id: ctx.id.to_string(),
                        sequence: 0,
                        queued: None,
                    }),
                }),
                Some(queued.clone()),
            ),
            _ => (None, None),
        };
        // In process, an executor with a free run slot may claim it now, so `queued` and its
        // `started` commit in one append (ADR 0009, the shortcut behind the work queue).
        let early = offer.as_ref().and_then(|o| o.job.as_ref()).and_then(|job| {
            self.work.claim_early(&Job {
                queued: queued.clone(),
                ..job.clone()
            })
        });
        // A random id names a new aggregate: no load (a round trip to the log, in distributed
        // mode, on the path of every invocation). The append still expects no event before it,
        // so an id that existed would be a refused append and a reload, never a fork. A
        // correlation id may name an existing invocation: that one is loaded.
        // Before the append: the terminal view is then announced to this wait, never before it.
        let watch = self.projector.watch_terminal(invocation_id.as_str());
        let fresh = || {
            correlation_id.is_none().then(|| Known {
                state: Invocation::default(),
                version: 0,
            })
        };
        let committed = match &early {
            Some(early) => {
                let start = InvocationCommand::Start(early.claim.started.clone());
                self.store
                    .execute_all(
                        invocation_id.as_str(),
                        fresh(),
                        &[(command, &meta), (start, &early.claim.metadata)],
                        &(),
                    )
                    .await
                    .map(|(receipt, _)| receipt)
            }
            None => self
                .store
                .execute_known(invocation_id.as_str(), fresh(), command, &(), &meta)
                .await
                .map(|(receipt, _)| receipt),
        };
        let receipt = match committed {
            Ok(r) => {
                if let Some(job) = offer.as_mut().and_then(|o| o.job.take()) {
                    let job = Job {
                        sequence: r.last_sequence,
                        queued,
                        ..job
                    };
                    match early {
                        Some(early) => early.committed(job),
                        None => self.work.offer(job),
                    }
                }
                r
            }
            Err(AggregateError::UserError(InvocationError::AlreadyExists))
                if correlation_id.is_some() =>
            {
                // A concurrent request with the same key won the race: answer with its
                // invocation.
                let sequence = *self.store.log().head().borrow();
                self.projector.wait_for(sequence, READ_YOUR_WRITES).await;
                let existing = self.view(&invocation_id, rid).await?.ok_or_else(|| {
                    InvocationFailure::new(ErrorCode::Conflict, "invocation already exists")
                })?;
                return Ok(Accepted::Existing(existing));
            }
            Err(e) => return Err(classify(e, rid)),
        };
        match refused {
            Some(code) => {
                tracing::info!(
                    request_id = %rid,
                    invocation_id = %invocation_id,
                    session_id = %ctx.id,
                    tool = tool.spec().name,
                    status = if code == ErrorCode::InvalidArgument { "failed" } else { "denied" },
                    error_code = code.as_str(),
                    "audit.tool_invocation"
                );
                Ok(Accepted::Refused {
                    invocation_id,
                    code,
                    receipt,
                    watch,
                })
            }
            None => Ok(Accepted::Queued {
                invocation_id,
                receipt,
                watch,
            }),
        }
    }

    /// The view of an invocation just recorded, once the read models show the write in
    /// `receipt` (read-your-writes: a GET of it then finds it on any replica).
    pub async fn wait_recorded(
        &self,
        id: &InvocationId,
        receipt: &CommitReceipt,
        rid: &str,
    ) -> Result<Arc<InvocationView>, InvocationFailure> {
        if !self
            .projector
            .wait_for(receipt.last_sequence, READ_YOUR_WRITES)
            .await
        {
            return Err(InvocationFailure::not_caught_up());
        }
        self.view(id, rid)
            .await?
            .ok_or_else(|| InvocationFailure::new(ErrorCode::Internal, "invocation view missing"))
    }

    /// [`Invocations::wait_terminal`] on the wait `accept` registered before the append: the
    /// store is read only when no announcement came first.
    pub async fn wait_registered(
        &self,
        watch: TerminalWatch,
        timeout_seconds: u64,
        rid: &str,
    ) -> Result<Option<Arc<InvocationView>>, InvocationFailure> {
        let wait = Duration::from_secs(timeout_seconds) + SYNC_GRACE;
        self.projector
            .wait_registered(watch, wait)
            .await
            .map_err(InvocationFailure::read_model(rid))
    }

    /// The view of an invocation once it is terminal, or as it stands after the tool's
    /// timeout plus a grace; `None` when the read models do not hold it by then. Waiting is
    /// registered per invocation, so concurrent callers do not wake each other.
    pub async fn wait_terminal(
        &self,
        id: &str,
        timeout_seconds: u64,
        rid: &str,
    ) -> Result<Option<Arc<InvocationView>>, InvocationFailure> {
        let wait = Duration::from_secs(timeout_seconds) + SYNC_GRACE;
        self.projector
            .wait_terminal(id, wait)
            .await
            .map_err(InvocationFailure::read_model(rid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<Option<String>, InvocationFailure>) -> ErrorCode {
        r.err().map_or(ErrorCode::Internal, |f| f.code)
    }

    #[test]
    fn a_blank_or_absent_correlation_id_is_none() {
        assert_eq!(correlation_id(None).ok(), Some(None));
        assert_eq!(correlation_id(Some("")).ok(), Some(None));
        assert_eq!(correlation_id(Some("  \t ")).ok(), Some(None));
    }

    #[test]
    fn a_correlation_id_is_trimmed() {
        assert_eq!(
            correlation_id(Some("  key-1 ")).ok(),
            Some(Some("key-1".to_owned()))
        );
    }

    #[test]
    fn a_correlation_id_of_256_bytes_is_accepted_and_257_refused() {
        let max = "k".repeat(256);
        assert_eq!(correlation_id(Some(&max)).ok(), Some(Some(max.clone())));
        let long = "k".repeat(257);
        assert_eq!(
            code(correlation_id(Some(&long))),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn a_correlation_id_with_a_control_character_is_refused() {
        let refused = correlation_id(Some("a\u{7}b"));
        assert_eq!(code(refused), ErrorCode::InvalidArgument);
        let message = correlation_id(Some("a\nb")).err().map(|f| f.message);
        assert_eq!(
            message.as_deref(),
            Some("correlation_id must be at most 256 printable characters")
        );
    }

    #[test]
    fn a_correlation_id_names_the_same_invocation_every_time() {
        let session = SessionId::generate();
        let a = invocation_id(&session, "fs.read", Some("key"));
        assert_eq!(a, invocation_id(&session, "fs.read", Some("key")));
        assert!(a.as_str().starts_with("inv-c"));
        assert_ne!(a, invocation_id(&session, "fs.write", Some("key")));
        assert_ne!(
            a,
            invocation_id(&SessionId::generate(), "fs.read", Some("key"))
        );
    }

    #[test]
    fn without_a_correlation_id_every_invocation_is_new() {
        let session = SessionId::generate();
        assert_ne!(
            invocation_id(&session, "fs.read", None),
            invocation_id(&session, "fs.read", None)
        );
    }
}
