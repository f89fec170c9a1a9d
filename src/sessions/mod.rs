//! Session lifecycle: create (validate, record, provision), close, expire, and the repairs a
//! restart needs. Provisioning prepares the workspace directory on the host (empty, a copy of
//! `source_repo_path`, or a `git clone`) and starts the session's runner; every outcome is an
//! event, and every transitional state has a deadline.
//!
//! This module never runs tools and never decides policy.

mod provision;
mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cqrs_es::AggregateError;
use time::OffsetDateTime;
use workspace_events::{Actor, CloseReason, ErrorInfo, Principal, SessionCreated, WorkspaceSource};
use workspace_projections::SessionView;

use crate::config::Config;
use crate::domain::{Session, SessionCommand, SessionError};
use crate::error_code::ErrorCode;
use crate::eventstore::{AggregateStore, CommandMetadata, CommitReceipt};
use crate::ids::SessionId;
use crate::projector::Projector;
use crate::readmodel::ReadModelError;
use crate::runner::{RunnerProvider, SandboxSpec};

pub use provision::redact_metadata;
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
    pub code: ErrorCode,
    /// Message safe to show.
    pub message: String,
    /// The session, when it exists.
    pub session: Option<Box<SessionView>>,
}

impl SessionFailure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
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
    config: Arc<Config>,
}

const READ_YOUR_WRITES: std::time::Duration = std::time::Duration::from_secs(5);

impl Sessions {
    /// The session service.
    pub fn new(
        store: AggregateStore<Session>,
        projector: Arc<Projector>,
        runners: Arc<dyn RunnerProvider>,
        config: Arc<Config>,
    ) -> Self {
        Self {
            store,
            projector,
            runners,
            config,
        }
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
            metadata: redact_metadata(request.metadata),
            created_at: now,
            expires_at: now + request.expires_in,
        };
        self.execute(&request.id, SessionCommand::Create(created), &meta)
            .await?;
        let dir = self.workspace_dir(&request.principal.tenant_id, &request.id);
        let outcome = tokio::time::timeout(
            self.config.provision_timeout,
            self.provision(&request.id, &request.source, dir),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ErrorInfo {
                code: ErrorCode::Timeout.as_str().into(),
                message: "provisioning did not finish before its deadline".into(),
                retryable: true,
            })
        });
        let command = match outcome {
            Ok(runtime) => SessionCommand::MarkProvisioned {
                runtime,
                at: OffsetDateTime::now_utc(),
            },
            Err(error) => {
                self.teardown(&request.principal.tenant_id, &request.id)
                    .await;
                SessionCommand::FailProvisioning {
                    error,
                    at: OffsetDateTime::now_utc(),
                }
            }
        };
        self.execute(&request.id, command, &meta).await?;
        let view = self
            .view(&request.id)
            .await?
            .ok_or_else(|| SessionFailure::new(ErrorCode::Internal, "session view missing"))?;
        let view = Arc::unwrap_or_clone(view);
        match &view.failure {
            Some(err) if view.status == "failed" => Err(SessionFailure {
                code: ErrorCode::parse(&err.code).unwrap_or(ErrorCode::Internal),
                message: err.message.clone(),
                session: Some(Box::new(view)),
            }),
            _ => Ok(view),
        }
    }

    async fn provision(
        &self,
        id: &SessionId,
        source: &WorkspaceSource,
        dir: PathBuf,
    ) -> Result<workspace_events::RuntimeRef, ErrorInfo> {
        provision::prepare_workspace(source, &dir, &self.source_policy()).await?;
        let spec = SandboxSpec {
            session_id: id.clone(),
            workspace_dir: dir,
        };
        let runner = self.runners.ensure(&spec).await.map_err(|e| {
            tracing::error!(session_id = %id, error = %e, "runner failed to start");
            match e {
                // The install hint is meant for the caller; it names no host path.
                crate::runner::RunnerError::Unavailable(hint) => ErrorInfo {
                    code: ErrorCode::Unavailable.as_str().into(),
                    message: hint,
                    retryable: true,
                },
                // Anything else is ours to fix; its details (host paths, stderr) stay in the log.
                _ => ErrorInfo {
                    code: ErrorCode::Internal.as_str().into(),
                    message: "the session runner could not be started".into(),
                    retryable: true,
                },
            }
        })?;
        Ok(workspace_events::RuntimeRef {
            kind: "local".into(),
            isolation: runner.isolation().into(),
            workdir: crate::runner::WORKDIR.into(),
            namespace: None,
            pod_name: None,
        })
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

    async fn teardown(&self, tenant_id: &str, id: &SessionId) {
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

    /// Repairs what a crash can leave behind: a session stuck in `provisioning` fails (its
    /// provisioning died with the process), and a workspace left on disk by a session that
    /// ended (or that the read models no longer hold: ended views leave them after their
    /// retention) is removed.
    pub async fn recover(&self) {
        let live = match self.projector.store().live_sessions().await {
            Ok(live) => live,
            Err(e) => {
                tracing::error!(error = %e, "could not list the live sessions to recover");
                return;
            }
        };
        for view in live.iter().filter(|v| v.status == "provisioning") {
            let Ok(id) = SessionId::parse(&view.id) else {
                continue;
            };
            let meta = CommandMetadata {
                correlation_id: Some("recovery".into()),
                ..Default::default()
            };
            let command = SessionCommand::FailProvisioning {
                error: ErrorInfo {
                    code: ErrorCode::Unavailable.as_str().into(),
                    message: "provisioning was interrupted by a service restart".into(),
                    retryable: true,
                },
                at: OffsetDateTime::now_utc(),
            };
            if let Err(e) = self.execute(&id, command, &meta).await {
                tracing::warn!(session_id = %id, error = %e, "could not fail an interrupted provisioning");
            }
            self.teardown(&view.principal.tenant_id, &id).await;
        }
        // The directories on disk are the truth about leftover workspaces.
        for (tenant_id, id) in self.session_dirs().await {
            match self.projector.store().session(id.as_str()).await {
                Ok(Some(view)) if !view.is_terminal() => {}
                Ok(_) => self.teardown(&tenant_id, &id).await,
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
