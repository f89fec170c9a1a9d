//! Preparing a workspace directory on the host: empty, a copy of a host directory, or a shallow
//! `git clone`. Runs before the session's sandbox starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use workspace_events::{ErrorInfo, WorkspaceSource};

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
    metadata
        .into_iter()
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            if SECRET_KEY_PARTS.iter().any(|p| lower.contains(p)) {
                (k, "[REDACTED]".to_owned())
            } else {
                (k, v)
            }
        })
        .collect()
}

fn failed(code: ErrorCode, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo {
        code: code.as_str().into(),
        message: message.into(),
        retryable: false,
    }
}

/// Creates `dir` (replacing leftovers of an interrupted attempt) and fills it from `source`.
pub async fn prepare_workspace(source: &WorkspaceSource, dir: &Path) -> Result<(), ErrorInfo> {
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
            let from = Path::new(source_repo_path).to_path_buf();
            let to = dir.to_path_buf();
            tokio::task::spawn_blocking(move || copy_tree(&from, &to))
                .await
                .map_err(|e| io(std::io::Error::other(e)))?
        }
        WorkspaceSource::Git { repo_url, repo_ref } => {
            clone(repo_url, repo_ref.as_deref(), dir).await
        }
    }
}

/// Copies regular files and directories; symlinks, devices, fifos and sockets are skipped, so
/// nothing outside the source can be pulled in through a link.
fn copy_tree(from: &Path, to: &Path) -> Result<(), ErrorInfo> {
    let meta = std::fs::symlink_metadata(from).map_err(|_| {
        failed(
            ErrorCode::InvalidArgument,
            "source_repo_path does not exist",
        )
    })?;
    if !meta.is_dir() {
        return Err(failed(
            ErrorCode::InvalidArgument,
            "source_repo_path must be a directory (symlinks are not followed)",
        ));
    }
    let io = |e: std::io::Error| {
        tracing::error!(error = %e, "copying source_repo_path failed");
        failed(
            ErrorCode::ExecutionFailed,
            "copying source_repo_path failed",
        )
    };
    std::fs::create_dir_all(to).map_err(io)?;
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = stack.pop() {
        for entry in std::fs::read_dir(&src).map_err(io)? {
            let entry = entry.map_err(io)?;
            let kind = entry.file_type().map_err(io)?;
            let target = dst.join(entry.file_name());
            if kind.is_dir() {
                std::fs::create_dir(&target).map_err(io)?;
                stack.push((entry.path(), target));
            } else if kind.is_file() {
                std::fs::copy(entry.path(), &target).map_err(io)?;
                // Drop setuid/setgid/sticky bits; keep rwx.
                use std::os::unix::fs::PermissionsExt;
                let mode = entry.metadata().map_err(io)?.permissions().mode() & 0o777;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(io)?;
            }
        }
    }
    Ok(())
}

async fn clone(url: &str, reference: Option<&str>, dir: &Path) -> Result<(), ErrorInfo> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("LANG", "C.UTF-8")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["clone", "--depth", "1", "--no-hardlinks", "--quiet"]);
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
                code: ErrorCode::Unavailable.as_str().into(),
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
    async fn a_copy_skips_symlinks_that_point_outside() {
        let src = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), src.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), src.path().join("dirlink")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let ws = dst.path().join("repo");
        let source = WorkspaceSource::Copy {
            source_repo_path: src.path().to_string_lossy().into_owned(),
        };
        prepare_workspace(&source, &ws).await.unwrap();
        assert_eq!(std::fs::read_to_string(ws.join("sub/a.txt")).unwrap(), "a");
        assert!(!ws.join("link").exists() && std::fs::symlink_metadata(ws.join("link")).is_err());
        assert!(std::fs::symlink_metadata(ws.join("dirlink")).is_err());
    }

    #[tokio::test]
    async fn a_clone_of_a_missing_repository_fails_with_gits_reason() {
        let dst = tempfile::tempdir().unwrap();
        let ws = dst.path().join("repo");
        let source = WorkspaceSource::Git {
            repo_url: dst.path().join("nope").to_string_lossy().into_owned(),
            repo_ref: None,
        };
        let err = prepare_workspace(&source, &ws).await.unwrap_err();
        assert_eq!(err.code, "git_repo_error");
        assert!(
            err.message.starts_with("git clone failed"),
            "{}",
            err.message
        );
    }
}
