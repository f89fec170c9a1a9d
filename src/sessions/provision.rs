//! Preparing a workspace directory on the host: empty, a copy of a host directory, or a shallow
//! `git clone`. Runs before the session's sandbox starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use workspace_events::{ErrorInfo, WorkspaceSource};

use super::source::{CloneSource, SourcePolicy, SourceRefusal};
use crate::error_code::ErrorCode;

const SECRET_KEY_PARTS: [&str; 10] = [
    "token",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
    "connection_profile_endpoints_json",
];

/// Replaces the values of secret-looking metadata keys with `[REDACTED]` so they never reach
/// events, read models or logs.
pub fn redact_metadata(metadata: BTreeMap<String, String>) -> BTreeMap<String, String> {
    redact_metadata_except(metadata, &[])
}

/// [`redact_metadata`], keeping the values of `plain` keys (a runner backend's object names,
/// such as the git credentials Secret's name, which it needs as given and which are not
/// secrets themselves).
pub fn redact_metadata_except(
    metadata: BTreeMap<String, String>,
    plain: &[String],
) -> BTreeMap<String, String> {
    metadata
        .into_iter()
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            if !plain.contains(&k) && SECRET_KEY_PARTS.iter().any(|p| lower.contains(p)) {
                (k, "[REDACTED]".to_owned())
            } else {
                (k, v)
            }
        })
        .collect()
}

fn failed(code: ErrorCode, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo {
        code: code.into(),
        message: message.into(),
        retryable: false,
    }
}

/// Creates `dir` (replacing leftovers of an interrupted attempt) and fills it from `source`. A
/// copy is admitted by `sources` again here (the check at creation may be a restart ago, and the
/// tree may have changed since).
pub async fn prepare_workspace(
    source: &WorkspaceSource,
    dir: &Path,
    sources: &SourcePolicy,
) -> Result<(), ErrorInfo> {
    let io = |e: std::io::Error| {
        tracing::error!(error = %e, "workspace directory could not be prepared");
        failed(
            ErrorCode::Internal,
            "workspace directory could not be prepared",
        )
    };
    if tokio::fs::try_exists(dir).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(dir).await.map_err(io)?;
    }
    match source {
        WorkspaceSource::Empty => tokio::fs::create_dir_all(dir).await.map_err(io),
        WorkspaceSource::Copy { source_repo_path } => {
            let from = sources
                .admit(source_repo_path)
                .map_err(SourceRefusal::into_error_info)?;
            let sources = sources.clone();
            let to = dir.to_path_buf();
            tokio::task::spawn_blocking(move || sources.copy(&from, &to))
                .await
                .map_err(|e| io(std::io::Error::other(e)))?
        }
        WorkspaceSource::Git { repo_url, repo_ref } => {
            let from = CloneSource::classify(repo_url)
                .map_err(|e| failed(ErrorCode::InvalidArgument, e.to_string()))?;
            // A local repository is a host directory: admitted like a copy, cloned from its
            // canonical path.
            let url = match &from {
                CloneSource::Remote => repo_url.clone(),
                CloneSource::Local(path) => sources
                    .admit(path)
                    .map_err(SourceRefusal::into_error_info)?
                    .to_string_lossy()
                    .into_owned(),
            };
            clone(&url, repo_ref.as_deref(), dir, from.allowed_protocols()).await
        }
    }
}

/// `git clone` on the host, as the service, hardened as every git of the service is
/// ([`GitCommand`](crate::tools::git::GitCommand)): no system or global config (so no credential
/// helpers), no templates (so no hooks), only `protocols` (never `ext::` or other
/// program-running transports), no prompt, no home directory.
async fn clone(
    url: &str,
    reference: Option<&str>,
    dir: &Path,
    protocols: &'static [&'static str],
) -> Result<(), ErrorInfo> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("LANG", "C.UTF-8")
        .envs(crate::tools::git::GitCommand::host_clone_env(protocols))
        .args([
            "clone",
            "--template=",
            "--depth",
            "1",
            "--no-hardlinks",
            "--quiet",
        ]);
    if let Some(r) = reference {
        cmd.args(["--branch", r]);
    }
    cmd.arg("--")
        .arg(url)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match cmd.output().await {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ErrorInfo {
                code: ErrorCode::Unavailable.into(),
                message: "git is not installed on the service host (apt-get install git)".into(),
                retryable: false,
            });
        }
        Err(e) => {
            tracing::error!(error = %e, "git clone could not start");
            return Err(failed(ErrorCode::Internal, "git clone could not start"));
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let host = dir.to_string_lossy();
    let message: String = stderr
        .replace(host.as_ref(), "/workspace")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(5)
        .collect::<Vec<_>>()
        .join("; ");
    let code = match output.status.code() {
        Some(128) => ErrorCode::GitRepoError,
        Some(129) => ErrorCode::GitUsageError,
        _ => ErrorCode::ExecutionFailed,
    };
    Err(failed(code, format!("git clone failed: {message}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_metadata_is_redacted() {
        let m = BTreeMap::from([
            ("git_auth_token".to_owned(), "abc".to_owned()),
            ("DB_PASSWORD".to_owned(), "x".to_owned()),
            ("allowed_git_remotes".to_owned(), "origin".to_owned()),
        ]);
        let r = redact_metadata(m);
        assert_eq!(r["git_auth_token"], "[REDACTED]");
        assert_eq!(r["DB_PASSWORD"], "[REDACTED]");
        assert_eq!(r["allowed_git_remotes"], "origin");
    }

    #[tokio::test]
    async fn a_clone_of_a_missing_repository_fails_with_gits_reason() {
        let dst = tempfile::tempdir().unwrap();
        let ws = dst.path().join("repo");
        let source = WorkspaceSource::Git {
            // Nothing listens on the discard port: git fails to connect (exit 128).
            repo_url: "http://127.0.0.1:9/nope.git".to_owned(),
            repo_ref: None,
        };
        let err = prepare_workspace(&source, &ws, &SourcePolicy::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::GitRepoError);
        assert!(
            err.message.starts_with("git clone failed"),
            "{}",
            err.message
        );
    }
}
