//! Session lifecycle: create (validate, record, wait for the provisioning), close, expire, and
//! the repairs a restart needs. Provisioning prepares the workspace directory on the host
//! (empty, a copy of `source_repo_path`, or a `git clone`) and starts the session's runner; it
//! reacts to `session.created` in an executor process ([`provisioner::Provisioner`]), not in
//! the API request. Every outcome is an event, and every transitional state has a deadline:
//! a session still `provisioning` past `created_at` plus the provision timeout plus the
//! liveness grace is failed by any process, never because some process restarted.
//!
//! This module never runs tools and never decides policy.

mod provision;
pub mod provisioner;
mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cqrs_es::AggregateError;
use time::OffsetDateTime;
use workspace_events::{
    Actor, AggregateType, CloseReason, ErrorInfo, Principal, SessionCreated, SessionEvent,
    WorkspaceSource,
};
use workspace_projections::SessionView;

use crate::config::Config;
use crate::domain::{Session, SessionCommand, SessionError, SessionStatus};
use crate::error_code::{Code, ErrorCode};
use crate::eventstore::{AggregateStore, CommandMetadata, CommitReceipt, Known, decode_event};
use crate::ids::SessionId;
use crate::projector::Projector;
use crate::readmodel::ReadModelError;
use crate::runner::{ProvisionSpec, RunnerProvider, SandboxSpec};
use crate::workqueue::{Provision, WorkQueue};

pub use provision::{prepare_workspace, redact_metadata};
pub use source::{CloneSource, SOURCE_ROOTS_VAR, SourcePolicy, SourceRefusal, UnsupportedRepoUrl};

/// A validated request to create a session.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Id (generated when the caller gave none).
    pub id: SessionId,
    /// Owner.
    pub principal: Principal,
    /// Initial content.
    pub source: WorkspaceSource,
    /// Allowlist.
    pub allowed_paths: Vec<String>,
    /// Metadata (redacted before it is recorded).
    pub metadata: BTreeMap<String, String>,
    /// Lifetime.
    pub expires_in: time::Duration,
}

/// A failure of a session operation, classified for the API.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SessionFailure {
    /// Stable code.
    /// A failed provisioning's code is the one recorded, which may be one this build does not
    /// know.
    pub code: Code,
    /// Message safe to show.
    pub message: String,
    /// The session, when it exists.
    pub session: Option<Box<SessionView>>,
}

impl SessionFailure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            session: None,
        }
    }
}

fn read_model_failure(err: ReadModelError) -> SessionFailure {
    tracing::error!(error = %err, "read-model store failed");
    let message = match err.code() {
        ErrorCode::Unavailable => "read model unavailable",
        _ => "internal error",
    };
    SessionFailure::new(err.code(), message)
}

fn classify(err: AggregateError<SessionError>) -> SessionFailure {
    match err {
        AggregateError::UserError(SessionError::AlreadyExists) => {
            SessionFailure::new(ErrorCode::Conflict, "session already exists")
        }
        AggregateError::UserError(SessionError::NotFound) => {
            SessionFailure::new(ErrorCode::NotFound, "session not found")
        }
        AggregateError::UserError(e) => SessionFailure::new(ErrorCode::Conflict, e.to_string()),
        AggregateError::AggregateConflict => SessionFailure::new(
            ErrorCode::Conflict,
            "concurrent update of the session; retry",
        ),
        AggregateError::DatabaseConnectionError(e) => {
            tracing::error!(error = %e, "event store unavailable");
            SessionFailure::new(ErrorCode::Unavailable, "event store unavailable")
        }
        other => {
            tracing::error!(error = %other, "session command failed");
            SessionFailure::new(ErrorCode::Internal, "internal error")
        }
    }
}

/// Creates, closes and expires sessions.
pub struct Sessions {
    store: AggregateStore<Session>,
    projector: Arc<Projector>,
    runners: Arc<dyn RunnerProvider>,
    /// Where provisioners take created sessions from; offered each `created` committed here.
    provisions: Arc<dyn WorkQueue<Provision>>,
    config: Arc<Config>,
}

const READ_YOUR_WRITES: std::time::Duration = std::time::Duration::from_secs(5);

/// How long past the provisioning deadline a create request waits for the provisioner's own
/// `failed` (`timeout`) to be recorded and projected, before it answers `unavailable`.
const ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A session as its events leave it.
pub(crate) struct LoadedSession {
    pub(crate) known: Known<Session>,
    pub(crate) created: Option<SessionCreated>,
}

impl LoadedSession {
    /// Its status; `None` when it has no event.
    pub(crate) fn status(&self) -> Option<SessionStatus> {
        self.known.state.status()
    }
}

/// Offers a look-up of the session to the provisioners unless disarmed: a create request
/// cancelled during its append may have committed `created`, which must still reach a
/// provisioner (in process; the JetStream queue has it anyway).
struct OfferOnDrop<'a> {
    provisions: &'a dyn WorkQueue<Provision>,
    session_id: Option<String>,
}

impl Drop for OfferOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(session_id) = self.session_id.take() {
            self.provisions.offer(Provision {
                session_id,
                sequence: 0,
                created: None,
            });
        }
    }
}

impl Sessions {
    /// The session service; `provisions` is offered every `created` it commits.
    pub fn new(
        store: AggregateStore<Session>,
        projector: Arc<Projector>,
        runners: Arc<dyn RunnerProvider>,
        provisions: Arc<dyn WorkQueue<Provision>>,
        config: Arc<Config>,
    ) -> Self {
        Self {
            store,
            projector,
            runners,
            provisions,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// When a session created at `created_at` must be provisioned by: its provisioner stops
    /// there and records `timeout`.
    pub fn provision_deadline(&self, created_at: OffsetDateTime) -> OffsetDateTime {
        created_at + self.config.provision_timeout
    }

    /// Takes the provisioning lock of a session's directory on this host (creating the
    /// directory), `None` when another provisioner holds it. Every process of a deployment
    /// with local sandboxes shares `WORKSPACE_ROOT`, so one provisioner at a time prepares a
    /// workspace (docs/architecture.md, one node).
    pub fn lock_provisioning(
        &self,
        tenant_id: &str,
        session: &SessionId,
    ) -> std::io::Result<Option<provisioner::ProvisioningLock>> {
        provisioner::ProvisioningLock::try_take(&self.session_dir(tenant_id, session))
    }

    /// Loads a session's events (upcast) and folds them.
    pub(crate) async fn load(&self, id: &str) -> Result<LoadedSession, String> {
        let events = self
            .store
            .log()
            .load(AggregateType::Session, id)
            .await
            .map_err(|e| e.to_string())?;
        let upcasters = workspace_events::upcast::registry();
        let mut loaded = LoadedSession {
            known: Known {
                state: Session::default(),
                version: 0,
            },
            created: None,
        };
        for event in &events {
            let event =
                decode_event::<SessionEvent>(&upcasters, event).map_err(|e| e.to_string())?;
            if let SessionEvent::Created(created) = &event {
                loaded.created = Some(created.clone());
            }
            cqrs_es::Aggregate::apply(&mut loaded.known.state, event);
            loaded.known.version += 1;
        }
        Ok(loaded)
    }

    /// The host directory holding a session's workspace.
    pub fn workspace_dir(&self, tenant_id: &str, session: &SessionId) -> PathBuf {
        self.session_dir(tenant_id, session).join("repo")
    }

    fn session_dir(&self, tenant_id: &str, session: &SessionId) -> PathBuf {
        // Tenant ids are validated at the edge to the same alphabet as session ids.
        self.config
            .workspace_root
            .join(tenant_id)
            .join(session.as_str())
    }

    /// The host directories a session may copy, and the service's own, which it never may.
    pub fn source_policy(&self) -> SourcePolicy {
        let c = &self.config;
        SourcePolicy::new(
            c.source_roots.clone(),
            vec![
                c.data_dir.clone(),
                c.events_dir.clone(),
                c.workspace_root.clone(),
                c.artifact_root.clone(),
                c.run_dir.clone(),
            ],
        )
    }

    /// The sandbox spec of a session.
    pub fn sandbox_spec(&self, view: &SessionView) -> Option<SandboxSpec> {
        let id = SessionId::parse(&view.id).ok()?;
        Some(SandboxSpec {
            workspace_dir: self.workspace_dir(&view.principal.tenant_id, &id),
            session_id: id,
        })
    }

    async fn execute(
        &self,
        id: &SessionId,
        command: SessionCommand,
        meta: &CommandMetadata,
    ) -> Result<CommitReceipt, SessionFailure> {
        let receipt = self
            .store
            .execute(id.as_str(), command, &(), meta)
            .await
            .map_err(classify)?;
        self.projector
            .wait_for(receipt.last_sequence, READ_YOUR_WRITES)
            .await;
        Ok(receipt)
    }

    async fn view(&self, id: &SessionId) -> Result<Option<Arc<SessionView>>, SessionFailure> {
        self.projector
            .store()
            .session(id.as_str())
            .await
            .map_err(read_model_failure)
    }

    /// Creates and provisions a session; returns its view once it is `ready`, or the failure
    /// (with the `failed` session attached) when provisioning failed.
    pub async fn create(
        &self,
        request: NewSession,
        correlation_id: &str,
    ) -> Result<SessionView, SessionFailure> {
        // Refused before anything is recorded: a path the policy refuses names no session.
        let host_path = match &request.source {
            WorkspaceSource::Copy { source_repo_path } => Some(source_repo_path.clone()),
            WorkspaceSource::Git { repo_url, .. } => match CloneSource::classify(repo_url) {
                Ok(CloneSource::Local(path)) => Some(path),
                Ok(CloneSource::Remote) => None,
                Err(e) => {
                    return Err(SessionFailure::new(
                        ErrorCode::InvalidArgument,
                        e.to_string(),
                    ));
                }
            },
            WorkspaceSource::Empty => None,
        };
        if let Some(path) = host_path {
            self.source_policy()
                .admit(&path)
                .map_err(|r| SessionFailure::new(r.code(), r.to_string()))?;
        }
        // The runner backend refuses what it cannot provision (an unknown runner profile)
        // before anything is recorded or created.
        self.runners
            .admit(&request.source, &request.metadata)
            .map_err(|e| {
                SessionFailure::new(e.code.known().unwrap_or(ErrorCode::Internal), e.message)
            })?;
        let now = OffsetDateTime::now_utc();
        let meta = CommandMetadata {
            correlation_id: Some(correlation_id.to_owned()),
            causation_id: None,
            actor: Some(Actor {
                tenant_id: request.principal.tenant_id.clone(),
                actor_id: request.principal.actor_id.clone(),
            }),
        };
        let created = SessionCreated {
            session_id: request.id.to_string(),
            principal: request.principal.clone(),
            source: request.source.clone(),
            allowed_paths: request.allowed_paths,
            metadata: provision::redact_metadata_except(
                request.metadata,
                &self.runners.plain_metadata_keys(),
            ),
            created_at: now,
            expires_at: now + request.expires_in,
        };
        let deadline = self.provision_deadline(now) + ANSWER_MARGIN;
        let mut guard = OfferOnDrop {
            provisions: self.provisions.as_ref(),
            session_id: Some(request.id.to_string()),
        };
        let receipt = match self
            .execute(&request.id, SessionCommand::Create(created.clone()), &meta)
            .await
        {
            Ok(receipt) => receipt,
            Err(failure) => {
                // Refused (an id that exists): nothing was committed by this request.
                if failure.code == ErrorCode::Conflict {
                    guard.session_id = None;
                }
                return Err(failure);
            }
        };
        guard.session_id = None;
        self.provisions.offer(Provision {
            session_id: request.id.to_string(),
            sequence: receipt.last_sequence,
            created: Some(created),
        });
        let wait =
            std::time::Duration::try_from(deadline - OffsetDateTime::now_utc()).unwrap_or_default();
        let view = self
            .projector
            .wait_provisioned(request.id.as_str(), wait)
            .await
            .map_err(read_model_failure)?
            .ok_or_else(|| SessionFailure::new(ErrorCode::Internal, "session view missing"))?;
        let view = Arc::unwrap_or_clone(view);
        match view.status {
            SessionStatus::Ready => Ok(view),
            SessionStatus::Failed => {
                let (code, message) = match &view.failure {
                    Some(err) => (err.code.clone(), err.message.clone()),
                    None => (ErrorCode::Internal.into(), "provisioning failed".to_owned()),
                };
                Err(SessionFailure {
                    code,
                    message,
                    session: Some(Box::new(view)),
                })
            }
            // No provisioner recorded an outcome by the deadline (none is running, or all are
            // busy): the session fails by the deadline rule; the caller may try again.
            SessionStatus::Provisioning => Err(SessionFailure {
                code: ErrorCode::Unavailable.into(),
                message: "no executor provisioned the session before its deadline; it will be \
                          failed, create another one"
                    .to_owned(),
                session: Some(Box::new(view)),
            }),
            // Closed (or expired) while it was provisioning.
            SessionStatus::Closed | SessionStatus::Expired => Err(SessionFailure {
                code: ErrorCode::Conflict.into(),
                message: format!("session was {} while it was provisioning", view.status),
                session: Some(Box::new(view)),
            }),
        }
    }

    /// Prepares the workspace of a session and starts its runner, within `within`; the
    /// runtime to record, or the failure (the workspace then torn down by the caller).
    pub(crate) async fn provision_within(
        &self,
        id: &SessionId,
        created: &SessionCreated,
        within: std::time::Duration,
    ) -> Result<workspace_events::RuntimeRef, ErrorInfo> {
        let dir = self.workspace_dir(&created.principal.tenant_id, id);
        tokio::time::timeout(within, self.provision(id, created, dir))
            .await
            .unwrap_or_else(|_| {
                Err(ErrorInfo {
                    code: ErrorCode::Timeout.into(),
                    message: "provisioning did not finish before its deadline".into(),
                    retryable: true,
                })
            })
    }

    /// Records the outcome of a provisioning on the session as `loaded` left it (reloaded on a
    /// lost race). A failure, or an outcome that could not be recorded because the session
    /// moved on (closed meanwhile), tears this host's copy of it down. `Err` when the store
    /// could not record it: the delivery comes back.
    pub(crate) async fn record_provisioning(
        &self,
        id: &SessionId,
        tenant_id: &str,
        outcome: Result<workspace_events::RuntimeRef, ErrorInfo>,
        correlation_id: Option<String>,
    ) -> Result<(), SessionFailure> {
        let failed = outcome.is_err();
        let command = match outcome {
            Ok(runtime) => SessionCommand::MarkProvisioned {
                runtime,
                at: OffsetDateTime::now_utc(),
            },
            Err(error) => SessionCommand::FailProvisioning {
                error,
                at: OffsetDateTime::now_utc(),
            },
        };
        let meta = CommandMetadata {
            correlation_id,
            ..Default::default()
        };
        if failed {
            self.teardown(tenant_id, id).await;
        }
        match self.execute(id, command, &meta).await {
            Ok(_) => Ok(()),
            Err(f) if f.code == ErrorCode::Conflict => {
                tracing::info!(session_id = %id, reason = %f, "the session moved on while it was provisioned; removed here");
                self.teardown(tenant_id, id).await;
                Ok(())
            }
            Err(f) => {
                if !failed {
                    // Nothing recorded: the next delivery provisions again from scratch.
                    self.runners.stop(id).await;
                }
                Err(f)
            }
        }
    }

    /// Fails a session still provisioning past its deadline (the deadline rule), after the
    /// version `loaded` holds; a lost race (it was provisioned or failed meanwhile) does
    /// nothing.
    pub(crate) async fn fail_overdue(&self, id: &SessionId, loaded: LoadedSession) {
        let tenant_id = loaded
            .created
            .as_ref()
            .map(|c| c.principal.tenant_id.clone());
        let command = SessionCommand::FailProvisioning {
            error: ErrorInfo {
                code: ErrorCode::Unavailable.into(),
                message: "provisioning did not finish in time".into(),
                retryable: true,
            },
            at: OffsetDateTime::now_utc(),
        };
        let meta = CommandMetadata {
            correlation_id: Some("provision-deadline".into()),
            ..Default::default()
        };
        match self
            .store
            .execute_known(id.as_str(), Some(loaded.known), command, &(), &meta)
            .await
        {
            Ok((receipt, _)) => {
                tracing::warn!(session_id = %id, "provisioning did not finish in time; the session failed");
                self.projector
                    .wait_for(receipt.last_sequence, READ_YOUR_WRITES)
                    .await;
                if let Some(tenant_id) = tenant_id {
                    self.teardown(&tenant_id, id).await;
                }
            }
            Err(AggregateError::UserError(_)) => {}
            Err(err) => {
                tracing::warn!(session_id = %id, error = %err, "could not fail an overdue provisioning")
            }
        }
    }

    async fn provision(
        &self,
        id: &SessionId,
        created: &SessionCreated,
        dir: PathBuf,
    ) -> Result<workspace_events::RuntimeRef, ErrorInfo> {
        let spec = ProvisionSpec {
            sandbox: SandboxSpec {
                session_id: id.clone(),
                workspace_dir: dir,
            },
            tenant_id: &created.principal.tenant_id,
            actor_id: &created.principal.actor_id,
            metadata: &created.metadata,
            source: &created.source,
            expires_in: (created.expires_at - OffsetDateTime::now_utc())
                .try_into()
                .ok(),
            sources: &self.source_policy(),
        };
        self.runners.provision(&spec).await
    }

    /// Closes a session and removes its sandbox and workspace. Closing a closed session
    /// succeeds again (idempotent); an unknown session is `not_found`.
    pub async fn close(
        &self,
        id: &SessionId,
        reason: CloseReason,
        correlation_id: &str,
    ) -> Result<(), SessionFailure> {
        let Some(view) = self.view(id).await? else {
            return Err(SessionFailure::new(
                ErrorCode::NotFound,
                "session not found",
            ));
        };
        let meta = CommandMetadata {
            correlation_id: Some(correlation_id.to_owned()),
            causation_id: None,
            actor: Some(Actor {
                tenant_id: view.principal.tenant_id.clone(),
                actor_id: view.principal.actor_id.clone(),
            }),
        };
        let command = SessionCommand::Close {
            reason,
            at: OffsetDateTime::now_utc(),
        };
        match self.execute(id, command, &meta).await {
            Ok(_) => {}
            Err(f) if f.code == ErrorCode::Conflict && f.message.contains("already closed") => {}
            Err(f) => return Err(f),
        }
        self.teardown(&view.principal.tenant_id, id).await;
        Ok(())
    }

    /// Stops this process's runner of the session and removes its directory on this host.
    pub(crate) async fn teardown(&self, tenant_id: &str, id: &SessionId) {
        self.runners.stop(id).await;
        let dir = self.session_dir(tenant_id, id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(session_id = %id, error = %e, "could not remove the workspace")
            }
        }
    }

    /// Closes every session whose `expires_at` passed; returns how many were closed.
    pub async fn expire_due(&self) -> usize {
        let now = OffsetDateTime::now_utc();
        let due = match self.projector.store().sessions_due(now).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the sessions due to expire");
                return 0;
            }
        };
        let mut closed = 0;
        for view in due {
            let Ok(id) = SessionId::parse(&view.id) else {
                continue;
            };
            match self.close(&id, CloseReason::Expired, "expiry").await {
                Ok(()) => {
                    tracing::info!(session_id = %id, "session expired");
                    closed += 1;
                }
                Err(e) => tracing::warn!(session_id = %id, error = %e, "could not expire session"),
            }
        }
        closed
    }

    /// Repairs what a crash can leave behind: a workspace left on disk by a session that ended
    /// (or that the log does not hold) is removed. A session stuck in `provisioning` is left
    /// to the deadline rule ([`provisioner::Provisioner`]): another process may be provisioning
    /// it right now.
    pub async fn recover(&self) {
        // The directories on disk are the truth about leftover workspaces.
        for (tenant_id, id) in self.session_dirs().await {
            match self.projector.store().session(id.as_str()).await {
                Ok(Some(view)) if !view.is_terminal() => {}
                Ok(Some(_)) => self.teardown(&tenant_id, &id).await,
                // Not in the read models: ended and past its retention, or created by another
                // process a moment ago. The log says which.
                Ok(None) => match self.load(id.as_str()).await {
                    Ok(loaded) if loaded.status().is_none_or(SessionStatus::is_terminal) => {
                        self.teardown(&tenant_id, &id).await
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(session_id = %id, error = %e, "could not load a session to recover")
                    }
                },
                Err(e) => {
                    tracing::warn!(session_id = %id, error = %e, "could not look up a session to recover")
                }
            }
        }
    }

    /// The sessions that have a directory under `WORKSPACE_ROOT` (`<tenant>/<session id>`).
    async fn session_dirs(&self) -> Vec<(String, SessionId)> {
        async fn names(dir: &std::path::Path) -> Vec<String> {
            let mut names = Vec::new();
            let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
                return names;
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                if entry.file_type().await.is_ok_and(|t| t.is_dir())
                    && let Ok(name) = entry.file_name().into_string()
                {
                    names.push(name);
                }
            }
            names
        }
        let root = &self.config.workspace_root;
        let mut found = Vec::new();
        for tenant_id in names(root).await {
            for name in names(&root.join(&tenant_id)).await {
                if let Ok(id) = SessionId::parse(&name) {
                    found.push((tenant_id.clone(), id));
                }
            }
        }
        found
    }
}
