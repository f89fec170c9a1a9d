//! Runners: the agent inside a session's isolation boundary, and how executors reach it.
//!
//! A [`RunnerProvider`] starts one persistent runner per session (a bubblewrap sandbox running
//! `workspace runner` here; a runner pod in Kubernetes) and hands out a [`SessionRunner`], a
//! client that sends [`protocol::Request`]s over the framed protocol. The runner executes tool
//! primitives confined to the workspace. This module owns isolation; it never decides policy.

pub mod cli;
pub mod client;
pub mod confine;
pub mod frame;
pub mod limits;
pub mod protocol;
pub mod sandbox;
pub mod seccomp;
pub mod server;
pub mod undo;

pub use client::SocketRunner;
pub use sandbox::{LocalSandboxConfig, LocalSandboxProvider, SandboxMode};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::ids::SessionId;
pub use protocol::OutputChannel;
use protocol::{Reply, Request};

/// Why a runner could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The isolation mechanism is missing on this host (no `bwrap`, user namespaces disabled).
    #[error("sandbox unavailable: {0}")]
    Unavailable(String),
    /// The runner process started but did not become ready.
    #[error("runner failed to start: {0}")]
    Start(String),
    /// The connection to the runner failed.
    #[error("runner connection failed")]
    Io(#[source] std::io::Error),
    /// The runner sent something that is not a valid frame.
    #[error("runner protocol error: {0}")]
    Protocol(String),
    /// No reply before the deadline.
    #[error("runner did not answer in time")]
    Timeout,
}

/// What a provider needs to start a session's runner.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The session.
    pub session_id: SessionId,
    /// Host directory holding the workspace; mounted read-write at [`WORKDIR`].
    pub workspace_dir: PathBuf,
}

/// What a provider needs to provision a session: the workspace, from its source, and the
/// runner over it.
#[derive(Debug, Clone)]
pub struct ProvisionSpec<'a> {
    /// The session and, for providers on this host, its workspace directory.
    pub sandbox: SandboxSpec,
    /// The session's owner.
    pub tenant_id: &'a str,
    /// The session's actor.
    pub actor_id: &'a str,
    /// The session's metadata (as recorded: secret-looking values redacted, except the keys
    /// of [`RunnerProvider::plain_metadata_keys`]).
    pub metadata: &'a std::collections::BTreeMap<String, String>,
    /// What the workspace starts from.
    pub source: &'a workspace_events::WorkspaceSource,
    /// How long the session lives from now.
    pub expires_in: Option<Duration>,
    /// The host directories a copy may come from.
    pub sources: &'a crate::sessions::SourcePolicy,
}

/// Where the workspace appears inside every runner.
pub const WORKDIR: &str = "/workspace";

/// Part of a running program's output, as the runner streamed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// Which stream.
    pub channel: OutputChannel,
    /// Position of the first byte of `data` in the stream, from 0.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A connected runner of one session.
#[async_trait::async_trait]
pub trait SessionRunner: Send + Sync {
    /// Sends one request and waits for its reply for at most `timeout`.
    async fn call(&self, request: Request, timeout: Duration) -> Result<Reply, RunnerError>;

    /// Runs an [`Request::Exec`] with its output streamed: each chunk goes to `chunks` as the
    /// runner reads it (in order per stream, without gaps; a full `chunks` slows the program
    /// down), then the final [`Reply::Exited`] comes back with empty `stdout` and `stderr`.
    /// The default, for a runner that cannot stream, runs it to the end and hands its output
    /// out as one chunk per stream before returning.
    async fn exec_streaming(
        &self,
        mut request: Request,
        timeout: Duration,
        chunks: tokio::sync::mpsc::Sender<OutputChunk>,
    ) -> Result<Reply, RunnerError> {
        if let Request::Exec { stream_output, .. } = &mut request {
            *stream_output = false;
        }
        let mut reply = self.call(request, timeout).await?;
        if let Reply::Exited { stdout, stderr, .. } = &mut reply {
            for (channel, bytes) in [
                (OutputChannel::Stdout, std::mem::take(stdout)),
                (OutputChannel::Stderr, std::mem::take(stderr)),
            ] {
                if !bytes.0.is_empty() {
                    let chunk = OutputChunk {
                        channel,
                        offset: 0,
                        data: bytes.0,
                    };
                    let _ = chunks.send(chunk).await;
                }
            }
        }
        Ok(reply)
    }

    /// The isolation this runner runs in (`bubblewrap`, `unsandboxed`, `pod`).
    fn isolation(&self) -> &'static str;
}

/// Starts, finds and stops session runners.
#[async_trait::async_trait]
pub trait RunnerProvider: Send + Sync {
    /// Refuses, before anything is recorded or created, a session this provider cannot
    /// provision (a runner profile it does not know, a host path it cannot reach). The
    /// default admits everything.
    fn admit(
        &self,
        _source: &workspace_events::WorkspaceSource,
        _metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), workspace_events::ErrorInfo> {
        Ok(())
    }

    /// Metadata keys whose values this provider needs as given (object names such as a git
    /// credentials Secret's), kept out of the redaction of secret-looking keys.
    fn plain_metadata_keys(&self) -> Vec<String> {
        Vec::new()
    }

    /// Provisions a session: fills its workspace from `spec.source` and starts its runner.
    /// On failure nothing of the session is left running.
    async fn provision(
        &self,
        spec: &ProvisionSpec<'_>,
    ) -> Result<workspace_events::RuntimeRef, workspace_events::ErrorInfo>;

    /// Returns the session's runner, starting it when it is not running (after a restart, a
    /// ready session's runner starts again on first use; in an executor that did not provision
    /// the session, over the same workspace directory).
    async fn ensure(&self, spec: &SandboxSpec) -> Result<Arc<dyn SessionRunner>, RunnerError>;

    /// Stops the session's runner and kills everything it started. Idempotent.
    async fn stop(&self, session_id: &SessionId);

    /// The sessions whose runner this provider started and still holds (a local provider's
    /// own processes, never another process's): what a stopping executor stops, and what the
    /// provisioner's sweep checks against ended sessions.
    fn sessions(&self) -> Vec<SessionId>;

    /// Lets go of everything this process holds as it stops. The default stops every runner
    /// it started (a local sandbox dies with its process anyway); a provider whose runners
    /// outlive the process (runner pods) only closes its connections.
    async fn detach_all(&self) {
        for id in self.sessions() {
            self.stop(&id).await;
        }
    }

    /// Host PID of the session's runner process, when this provider started one that is
    /// running (diagnostics and tests; `None` for runners that are not local processes).
    async fn pid(&self, _session_id: &SessionId) -> Option<u32> {
        None
    }

    /// The isolation this provider gives (`bubblewrap`, `unsandboxed`, `pod`).
    fn isolation(&self) -> &'static str;
}
