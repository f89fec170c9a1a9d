//! Which host directories a session may copy (`source_repo_path`), and the copy itself.
//!
//! A session copies a host directory only when it lies below one of the operator's
//! `WORKSPACE_SOURCE_ROOTS` (none configured: refused), after canonicalisation (a symlink inside
//! a root cannot lead out of it), and never when it is, or lies inside, one of the service's own
//! directories (data dir, event log, workspaces, artifacts, runner sockets), which hold other
//! tenants' work and the audit trail. When the source *contains* one of those directories (the
//! service was started inside the tree being copied), the copy skips it.
//!
//! The copy walks the tree through directory handles opened without following symlinks
//! (`openat(O_NOFOLLOW)` via cap-std), from `/` down, so a path component swapped for a symlink
//! after the check cannot redirect it; it copies directories and regular files only.
//!
//! This module decides nothing about tools and never runs a program.

use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use cap_fs_ext::{DirExt as _, FollowSymlinks, OpenOptionsFollowExt as _};
use cap_std::fs::{Dir, MetadataExt as _, OpenOptions, OpenOptionsExt as _};
use workspace_events::ErrorInfo;

use crate::error_code::ErrorCode;

/// The environment variable naming the copyable roots (a `:`-separated list of directories).
pub const SOURCE_ROOTS_VAR: &str = "WORKSPACE_SOURCE_ROOTS";

/// Why a `source_repo_path` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceRefusal {
    /// No roots are configured: copying host directories is off.
    #[error(
        "source_repo_path is disabled on this service: the operator allows host directories with {SOURCE_ROOTS_VAR}"
    )]
    Disabled,
    /// Not below any configured root (before or after resolving symlinks).
    #[error("source_repo_path must lie below a directory listed in {SOURCE_ROOTS_VAR}")]
    OutsideRoots,
    /// The service's own directories, or a path inside one.
    #[error(
        "source_repo_path must not be the service's data, workspace, artifact or runner directory, nor lie inside one"
    )]
    Protected,
    /// Below a root, but nothing is there.
    #[error("source_repo_path does not exist")]
    Missing,
    /// Below a root, but not a directory.
    #[error("source_repo_path must be a directory")]
    NotDirectory,
    /// Below a root, but unreadable (permissions, I/O).
    #[error("source_repo_path cannot be read: {0}")]
    Unreadable(String),
}

impl SourceRefusal {
    /// The stable code of the refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Disabled | Self::OutsideRoots | Self::Protected => ErrorCode::PolicyDenied,
            Self::Missing | Self::NotDirectory | Self::Unreadable(_) => ErrorCode::InvalidArgument,
        }
    }

    /// The refusal as a recorded error.
    pub fn into_error_info(self) -> ErrorInfo {
        ErrorInfo {
            code: self.code().into(),
            message: self.to_string(),
            retryable: false,
        }
    }
}

/// Where a `repo_url` clones from, as far as the host is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneSource {
    /// A network remote (`https://`, `http://`, `git://`): allowed as given.
    Remote,
    /// A repository on the service host (an absolute path or a `file://` URL): a host
    /// directory like `source_repo_path`, admitted by the same [`SourcePolicy`].
    Local(String),
}

/// Why a `repo_url` is not a clone source this service accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnsupportedRepoUrl(&'static str);

impl CloneSource {
    /// Classifies `url` the way git reads it. Transports that run programs (`ext::`, any
    /// `<helper>::`), ssh (which would use the host's keys: remotes with credentials need a git
    /// auth secret) and relative paths (resolved against the service's working directory) are
    /// refused.
    pub fn classify(url: &str) -> Result<Self, UnsupportedRepoUrl> {
        if let Some((scheme, rest)) = url.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "https" | "http" | "git" => Ok(Self::Remote),
                "file" => match rest.strip_prefix("localhost").unwrap_or(rest) {
                    path if path.starts_with('/') => Ok(Self::Local(path.to_owned())),
                    _ => Err(UnsupportedRepoUrl(
                        "a file:// repo_url must name an absolute path on this host",
                    )),
                },
                "ssh" | "git+ssh" | "ssh+git" => Err(UnsupportedRepoUrl(SSH_REFUSED)),
                _ => Err(UnsupportedRepoUrl(
                    "repo_url must be an https://, http://, git:// or file:// URL, or an absolute path",
                )),
            };
        }
        if url.contains("::") {
            return Err(UnsupportedRepoUrl(
                "repo_url must not name a git transport helper (<transport>::<address>)",
            ));
        }
        if url.starts_with('/') {
            return Ok(Self::Local(url.to_owned()));
        }
        // git reads `host:path` (no slash before the first colon) as an ssh remote.
        match url.split_once(':') {
            Some((host, _)) if !host.contains('/') => Err(UnsupportedRepoUrl(SSH_REFUSED)),
            _ => Err(UnsupportedRepoUrl(
                "a local repo_url must be an absolute path",
            )),
        }
    }

    /// The protocols git may use for this clone (`GIT_ALLOW_PROTOCOL`).
    pub fn allowed_protocols(&self) -> &'static [&'static str] {
        match self {
            Self::Remote => &["https", "http", "git"],
            Self::Local(_) => &["file"],
        }
    }
}

const SSH_REFUSED: &str = "ssh repo_url is not supported: the clone would run with the service host's ssh identity; use https";

/// The roots sessions may copy from and the directories they never may.
#[derive(Debug, Clone, Default)]
pub struct SourcePolicy {
    roots: Vec<PathBuf>,
    protected: Vec<PathBuf>,
}

/// `.` and `..` resolved without touching the filesystem; `path` must be absolute.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

impl SourcePolicy {
    /// A policy over the operator's `roots` (absolute directories) protecting `protected` (the
    /// service's own directories; those that do not exist yet are compared lexically).
    pub fn new(roots: Vec<PathBuf>, protected: Vec<PathBuf>) -> Self {
        Self { roots, protected }
    }

    /// The canonical directory to copy for `raw`, or why not. Paths outside every root are
    /// refused before anything is looked up, so a refusal says nothing about what exists there.
    pub fn admit(&self, raw: &str) -> Result<PathBuf, SourceRefusal> {
        if self.roots.is_empty() {
            return Err(SourceRefusal::Disabled);
        }
        let requested = Path::new(raw);
        if !requested.is_absolute() {
            return Err(SourceRefusal::OutsideRoots);
        }
        let requested = lexical(requested);
        // A root may be spelled through a symlink (`/home` -> `/data/home`); accept either form.
        let roots: Vec<(PathBuf, Option<PathBuf>)> = self
            .roots
            .iter()
            .map(|r| (lexical(r), std::fs::canonicalize(r).ok()))
            .collect();
        let below_a_root = |p: &Path| {
            roots.iter().any(|(given, real)| {
                p.starts_with(given) || real.as_ref().is_some_and(|r| p.starts_with(r))
            })
        };
        if !below_a_root(&requested) {
            return Err(SourceRefusal::OutsideRoots);
        }
        let canonical = std::fs::canonicalize(&requested).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SourceRefusal::Missing,
            io::ErrorKind::NotADirectory => SourceRefusal::NotDirectory,
            _ => SourceRefusal::Unreadable(e.to_string()),
        })?;
        // After symlinks: the real place must still be below a root's real place.
        let below_a_real_root = roots
            .iter()
            .any(|(_, real)| real.as_ref().is_some_and(|r| canonical.starts_with(r)));
        if !below_a_real_root {
            return Err(SourceRefusal::OutsideRoots);
        }
        let inside_protected = self.protected.iter().any(|dir| {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| lexical(dir));
            canonical.starts_with(&dir)
        });
        if inside_protected {
            return Err(SourceRefusal::Protected);
        }
        match std::fs::metadata(&canonical) {
            Ok(m) if m.is_dir() => Ok(canonical),
            Ok(_) => Err(SourceRefusal::NotDirectory),
            Err(e) => Err(SourceRefusal::Unreadable(e.to_string())),
        }
    }

    /// Copies the admitted directory `from` into `to` (created): directories and regular files
    /// only; symlinks, devices, fifos and sockets are skipped, as are the service's own
    /// directories when they lie inside `from`. Setuid, setgid and sticky bits are dropped.
    pub fn copy(&self, from: &Path, to: &Path) -> Result<(), ErrorInfo> {
        let failed = |at: &Path, e: io::Error| {
            let at = if at.as_os_str().is_empty() {
                ".".into()
            } else {
                at.to_string_lossy()
            };
            tracing::warn!(error = %e, at = %at, "copying source_repo_path failed");
            ErrorInfo {
                code: ErrorCode::ExecutionFailed.into(),
                message: format!("copying source_repo_path failed at {at}: {e}"),
                retryable: false,
            }
        };
        // Identity (device, inode) of every directory the copy must not enter, including the
        // destination itself.
        let skip: Vec<(u64, u64)> = self
            .protected
            .iter()
            .map(PathBuf::as_path)
            .chain([to])
            .filter_map(|dir| std::fs::metadata(dir).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        let root = open_nofollow(from).map_err(|e| failed(Path::new(""), e))?;
        std::fs::create_dir_all(to).map_err(|e| failed(Path::new(""), e))?;
        let mut stack = vec![(root, PathBuf::new())];
        while let Some((dir, rel)) = stack.pop() {
            for entry in dir.entries().map_err(|e| failed(&rel, e))? {
                let entry = entry.map_err(|e| failed(&rel, e))?;
                let name = entry.file_name();
                let at = rel.join(&name);
                let kind = entry.file_type().map_err(|e| failed(&at, e))?;
                if kind.is_dir() {
                    let sub = dir.open_dir_nofollow(&name).map_err(|e| failed(&at, e))?;
                    let meta = sub.dir_metadata().map_err(|e| failed(&at, e))?;
                    if skip.contains(&(meta.dev(), meta.ino())) {
                        tracing::info!(at = %at.display(), "copy skips the service's own directory");
                        continue;
                    }
                    std::fs::create_dir(to.join(&at)).map_err(|e| failed(&at, e))?;
                    stack.push((sub, at));
                } else if kind.is_file() {
                    copy_file(&dir, &name, &to.join(&at)).map_err(|e| failed(&at, e))?;
                }
            }
        }
        Ok(())
    }
}

/// Opens `path` (absolute, canonical) one component at a time from `/`, never following a
/// symlink.
fn open_nofollow(path: &Path) -> io::Result<Dir> {
    let mut dir = Dir::open_ambient_dir("/", cap_std::ambient_authority())?;
    for component in path.components() {
        if let Component::Normal(name) = component {
            dir = dir.open_dir_nofollow(name)?;
        }
    }
    Ok(dir)
}

/// Copies one regular file. Opened without following symlinks and without blocking (a fifo
/// swapped in after the listing would otherwise hang the copy), then checked to be a regular
/// file on the descriptor itself.
fn copy_file(dir: &Dir, name: &std::ffi::OsStr, target: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .follow(FollowSymlinks::No)
        .custom_flags(libc::O_NONBLOCK);
    let mut source = dir.open_with(name, &options)?.into_std();
    let meta = source.metadata()?;
    if !meta.is_file() {
        return Ok(());
    }
    let mut out = std::fs::File::create(target)?;
    io::copy(&mut source, &mut out)?;
    out.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o777))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Self {
            let host = Self {
                dir: tempfile::tempdir().expect("tempdir"),
            };
            for d in [
                "allowed/repo/src",
                "allowed/data/workspaces/t/s",
                "elsewhere",
            ] {
                std::fs::create_dir_all(host.path(d)).unwrap();
            }
            std::fs::write(host.path("allowed/repo/src/main.rs"), "fn main() {}").unwrap();
            std::fs::write(host.path("elsewhere/secret"), "secret").unwrap();
            host
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn policy(&self) -> SourcePolicy {
            SourcePolicy::new(
                vec![self.path("allowed")],
                vec![
                    self.path("allowed/data"),
                    self.path("allowed/data/workspaces"),
                ],
            )
        }

        fn admit(&self, rel: &str) -> Result<PathBuf, SourceRefusal> {
            self.policy().admit(&self.path(rel).to_string_lossy())
        }
    }

    #[test]
    fn repo_urls_are_remotes_or_admissible_local_paths() {
        use CloneSource::*;
        for (url, expected) in [
            ("https://example.com/r.git", Ok(Remote)),
            ("HTTP://example.com/r.git", Ok(Remote)),
            ("git://example.com/r.git", Ok(Remote)),
            ("/srv/repos/r", Ok(Local("/srv/repos/r".into()))),
            ("file:///srv/repos/r", Ok(Local("/srv/repos/r".into()))),
            ("file://localhost/srv/r", Ok(Local("/srv/r".into()))),
        ] {
            assert_eq!(CloneSource::classify(url), expected, "{url}");
        }
        for url in [
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "foo::bar",
            "ssh://git@example.com/r.git",
            "git@example.com:org/r.git",
            "relative/repo",
            "./repo",
            "file://otherhost/r",
            "gopher://example.com/r",
        ] {
            assert!(CloneSource::classify(url).is_err(), "{url} accepted");
        }
        assert_eq!(Remote.allowed_protocols(), ["https", "http", "git"]);
        assert_eq!(Local("/x".into()).allowed_protocols(), ["file"]);
    }

    #[test]
    fn without_configured_roots_every_source_is_refused_naming_the_variable() {
        let err = SourcePolicy::default().admit("/etc").unwrap_err();
        assert_eq!(err, SourceRefusal::Disabled);
        assert_eq!(err.code(), ErrorCode::PolicyDenied);
        assert!(err.to_string().contains(SOURCE_ROOTS_VAR), "{err}");
    }

    #[test]
    fn a_directory_below_a_root_is_admitted_as_its_canonical_path() {
        let host = Host::new();
        let admitted = host.admit("allowed/./repo/src/..").unwrap();
        assert_eq!(
            admitted,
            std::fs::canonicalize(host.path("allowed/repo")).unwrap()
        );
    }

    #[test]
    fn host_directories_outside_the_roots_are_refused() {
        let host = Host::new();
        let policy = host.policy();
        for raw in ["/etc", "/", "relative/path"] {
            assert_eq!(policy.admit(raw), Err(SourceRefusal::OutsideRoots), "{raw}");
        }
        assert_eq!(host.admit("elsewhere"), Err(SourceRefusal::OutsideRoots));
        // `..` climbing out of a root, spelled from inside it.
        assert_eq!(
            host.admit("allowed/repo/../../elsewhere"),
            Err(SourceRefusal::OutsideRoots)
        );
    }

    #[test]
    fn a_symlink_inside_a_root_cannot_lead_out_of_it() {
        let host = Host::new();
        std::os::unix::fs::symlink(host.path("elsewhere"), host.path("allowed/link")).unwrap();
        std::os::unix::fs::symlink("/etc", host.path("allowed/etc")).unwrap();
        assert_eq!(host.admit("allowed/link"), Err(SourceRefusal::OutsideRoots));
        assert_eq!(host.admit("allowed/etc"), Err(SourceRefusal::OutsideRoots));
    }

    #[test]
    fn the_services_own_directories_are_refused_even_below_a_root() {
        let host = Host::new();
        for rel in [
            "allowed/data",
            "allowed/data/workspaces",
            "allowed/data/workspaces/t/s",
        ] {
            let err = host.admit(rel).unwrap_err();
            assert_eq!(err, SourceRefusal::Protected, "{rel}");
            assert_eq!(err.code(), ErrorCode::PolicyDenied);
        }
        // Also when reached through a symlink.
        std::os::unix::fs::symlink(
            host.path("allowed/data/workspaces"),
            host.path("allowed/ws"),
        )
        .unwrap();
        assert_eq!(host.admit("allowed/ws"), Err(SourceRefusal::Protected));
    }

    #[test]
    fn missing_and_non_directory_sources_below_a_root_are_invalid_arguments() {
        let host = Host::new();
        assert_eq!(host.admit("allowed/nope"), Err(SourceRefusal::Missing));
        assert_eq!(
            host.admit("allowed/repo/src/main.rs"),
            Err(SourceRefusal::NotDirectory)
        );
        assert_eq!(SourceRefusal::Missing.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn a_copy_of_a_tree_holding_the_services_directories_skips_them() {
        let host = Host::new();
        std::fs::write(host.path("allowed/data/workspaces/t/s/other"), "tenant B").unwrap();
        std::fs::write(host.path("allowed/data/events.log"), "audit").unwrap();
        let policy = host.policy();
        let from = policy
            .admit(&host.path("allowed").to_string_lossy())
            .unwrap();
        // The destination lies inside the source too, as a session workspace does when the
        // service runs in the directory it copies.
        let to = host.path("allowed/data/workspaces/t/new/repo");
        policy.copy(&from, &to).unwrap();
        assert_eq!(
            std::fs::read_to_string(to.join("repo/src/main.rs")).unwrap(),
            "fn main() {}"
        );
        assert!(!to.join("data").exists(), "the data dir was copied");
    }

    #[test]
    fn a_copy_keeps_files_and_directories_and_drops_links_and_special_bits() {
        let host = Host::new();
        let repo = host.path("allowed/repo");
        std::os::unix::fs::symlink(host.path("elsewhere/secret"), repo.join("link")).unwrap();
        std::os::unix::fs::symlink(host.path("elsewhere"), repo.join("dirlink")).unwrap();
        std::fs::write(repo.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(repo.join("tool"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        let fifo = std::ffi::CString::new(repo.join("fifo").to_string_lossy().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let to = host.path("copy");
        let policy = host.policy();
        policy
            .copy(&policy.admit(&repo.to_string_lossy()).unwrap(), &to)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(to.join("src/main.rs")).unwrap(),
            "fn main() {}"
        );
        for gone in ["link", "dirlink", "fifo"] {
            assert!(
                std::fs::symlink_metadata(to.join(gone)).is_err(),
                "{gone} copied"
            );
        }
        let mode = std::fs::metadata(to.join("tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn a_copy_failure_says_where_and_why() {
        let host = Host::new();
        let policy = host.policy();
        let from = policy
            .admit(&host.path("allowed/repo").to_string_lossy())
            .unwrap();
        // The destination's parent is a file: creating the copy fails with the OS's reason.
        std::fs::write(host.path("blocker"), "").unwrap();
        let err = policy.copy(&from, &host.path("blocker/repo")).unwrap_err();
        assert_eq!(err.code, ErrorCode::ExecutionFailed);
        assert!(
            err.message
                .starts_with("copying source_repo_path failed at .: ")
                && err.message.contains("os error"),
            "{}",
            err.message
        );
    }
}
