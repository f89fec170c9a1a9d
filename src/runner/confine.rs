//! Path confinement: the workspace filesystem as the runner sees it.
//!
//! Every path in a request becomes a [`WorkspacePath`] (relative, normalised, no `..`, no NUL,
//! bounded length) and every filesystem operation goes through [`Workspace`], which holds one
//! `cap_std` directory handle on the root. cap-std resolves each path beneath that handle
//! (`openat2(RESOLVE_BENEATH)` on Linux), so a symlink that leads out of the workspace, whether
//! absolute or relative, planted before the session or created by a tool inside it, is an error
//! and never a followed link. On top of that this module refuses regular files with more than
//! one hard link (the other name may be outside), device files, fifos and sockets.
//!
//! Writes (write, mkdir, move, copy's destination, delete) never change anything inside a
//! `.git` directory, at any depth: repository metadata decides which commands git runs, and
//! only the git tools, through their hardened git, may change it. The check is made twice:
//! on the path's names ([`WorkspacePath::is_protected`]), and on the directory the operation
//! actually opened ([`Workspace::open_parent`] walks up from the open handle), so a symlink
//! `x -> .git` or a concurrent rename cannot route a write into it. Reads of `.git` are
//! allowed.
//!
//! This module never touches a path through ambient authority (`std::fs` with a joined host
//! path) and never puts a host path in an error message: messages name workspace-relative paths
//! only. It decides nothing about policy; it is the last line of defence under it.

use std::ffi::{CString, OsStr};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, File, Metadata, MetadataExt, OpenOptions};
use cap_std::fs::{OpenOptionsExt, Permissions, PermissionsExt};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::protocol::{Entry, EntryType, Reply, RunnerErrorCode, SearchMatch};

/// Longest accepted request path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest accepted path component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Walks (list, search, glob, copy) do not descend deeper than this; deeper trees are reported
/// as truncated rather than recursed into, so a hostile tree cannot exhaust the stack.
pub const MAX_WALK_DEPTH: usize = 128;
/// Longest search snippet, in bytes.
pub const MAX_SNIPPET_BYTES: usize = 512;
/// A file whose first this-many bytes contain a NUL is treated as binary by search.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;
/// Largest directory tree `copy` accepts, in entries.
const MAX_COPY_ENTRIES: usize = 100_000;

/// The directory file tools never write into (see the module docs).
pub const PROTECTED_DIR: &str = ".git";

/// A failed operation: a stable code and a message naming workspace-relative paths only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct OpError {
    /// Stable code sent to the client.
    pub code: RunnerErrorCode,
    /// Human-readable message, free of host paths.
    pub message: String,
}

impl OpError {
    /// An error with a code and message.
    pub fn new(code: RunnerErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn denied(message: impl Into<String>) -> Self {
        Self::new(RunnerErrorCode::PolicyDenied, message)
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(RunnerErrorCode::InvalidArgument, message)
    }

    fn not_found(path: &WorkspacePath) -> Self {
        Self::new(RunnerErrorCode::NotFound, format!("{path}: not found"))
    }

    fn protected(path: &WorkspacePath) -> Self {
        Self::denied(format!(
            "{path}: is inside .git, a protected path: file tools never write there \
             (the git tools own it)"
        ))
    }

    fn exists(path: &WorkspacePath) -> Self {
        Self::new(
            RunnerErrorCode::AlreadyExists,
            format!("{path}: already exists"),
        )
    }

    /// The protocol reply carrying this error.
    pub fn into_reply(self) -> Reply {
        Reply::Error {
            code: self.code,
            message: self.message,
        }
    }
}

/// Whether cap-std refused the path because it would leave the root. cap-std reports this as
/// `PermissionDenied` without an OS error number; a real `EACCES` carries one.
fn is_escape(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::PermissionDenied && err.raw_os_error().is_none()
}

/// Classifies an I/O error on `path`. The message uses the error's kind or errno text, which
/// never contains a path.
fn io_error(path: &WorkspacePath, err: &io::Error) -> OpError {
    if is_escape(err) {
        return OpError::denied(format!("{path}: path escapes the workspace"));
    }
    match err.raw_os_error() {
        Some(libc::ELOOP) => {
            return OpError::invalid(format!("{path}: too many levels of symbolic links"));
        }
        Some(libc::ENOTDIR) => {
            return OpError::new(
                RunnerErrorCode::NotFound,
                format!("{path}: not found (a parent is not a directory)"),
            );
        }
        Some(libc::EISDIR) => return OpError::invalid(format!("{path}: is a directory")),
        Some(libc::ENOTEMPTY) => {
            return OpError::invalid(format!("{path}: directory is not empty"));
        }
        Some(libc::ENAMETOOLONG) => return OpError::denied(format!("{path}: name too long")),
        Some(libc::ENXIO) | Some(libc::ENODEV) => {
            return OpError::denied(format!("{path}: is not a regular file"));
        }
        _ => {}
    }
    match err.kind() {
        io::ErrorKind::NotFound => OpError::not_found(path),
        io::ErrorKind::AlreadyExists => OpError::exists(path),
        _ => OpError::new(RunnerErrorCode::Io, format!("{path}: {err}")),
    }
}

/// A validated workspace-relative path: `/`-separated, without empty, `.` or `..` components.
/// The empty path is the workspace root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkspacePath(String);

impl WorkspacePath {
    /// Parses a request path. Refuses (policy_denied) absolute paths, `..` components, NUL
    /// bytes, paths over [`MAX_PATH_BYTES`] and components over [`MAX_COMPONENT_BYTES`].
    /// `""` and `"."` are the root; `a//b/./c/` is `a/b/c`; `..cache` is an ordinary name.
    pub fn parse(raw: &str) -> Result<Self, OpError> {
        if raw.len() > MAX_PATH_BYTES {
            return Err(OpError::denied(format!(
                "path is longer than {MAX_PATH_BYTES} bytes"
            )));
        }
        if raw.as_bytes().contains(&0) {
            return Err(OpError::denied("path contains a NUL byte"));
        }
        if raw.starts_with('/') {
            return Err(OpError::denied(
                "absolute paths are refused: paths are relative to the workspace",
            ));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(OpError::denied("`..` path components are refused")),
                name if name.len() > MAX_COMPONENT_BYTES => {
                    return Err(OpError::denied(format!(
                        "a path component is longer than {MAX_COMPONENT_BYTES} bytes"
                    )));
                }
                name => parts.push(name),
            }
        }
        Ok(Self(parts.join("/")))
    }

    /// The workspace root.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Whether this is the workspace root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The normalised path; `""` for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path to hand to cap-std (`"."` for the root).
    fn as_path(&self) -> &Path {
        if self.is_root() {
            Path::new(".")
        } else {
            Path::new(&self.0)
        }
    }

    /// The parent (the root for a single component); `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((parent, _)) => Self(parent.to_owned()),
            None => Self::root(),
        })
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            return None;
        }
        Some(self.0.rsplit_once('/').map_or(self.0.as_str(), |(_, n)| n))
    }

    /// Appends one directory-entry name (lossily, for names that are not UTF-8: such paths are
    /// for display; walks open entries by their real name).
    fn join(&self, name: &OsStr) -> Self {
        let name = name.to_string_lossy();
        if self.is_root() {
            Self(name.into_owned())
        } else {
            Self(format!("{}/{}", self.0, name))
        }
    }

    /// Whether a component is `.git`, in any ASCII case (a case-insensitive filesystem would
    /// make `.GIT` the repository's directory): such a path is never written.
    pub fn is_protected(&self) -> bool {
        self.0
            .split('/')
            .any(|part| part.eq_ignore_ascii_case(PROTECTED_DIR))
    }

    /// Whether `self` is `other` or lies inside it (component-wise).
    pub fn starts_with(&self, other: &Self) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl std::fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Result of [`Workspace::read_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    /// The bytes read.
    pub content: Vec<u8>,
    /// Full size of the file.
    pub size_bytes: u64,
    /// Whether `content` is shorter than the file.
    pub truncated: bool,
}

/// Result of [`Workspace::write_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes written.
    pub bytes_written: u64,
    /// Whether the file did not exist before.
    pub created: bool,
}

/// Result of [`Workspace::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Whether something was removed.
    pub deleted: bool,
    /// Whether the path existed.
    pub existed: bool,
}

/// A bounded list of items and whether the bound (or [`MAX_WALK_DEPTH`]) cut it short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounded<T> {
    /// Items, in path order.
    pub items: Vec<T>,
    /// Whether more items exist than were returned.
    pub truncated: bool,
}

/// What a walk visitor wants next.
enum Visit {
    /// Go on (descending into this entry when it is a real directory and the walk recurses).
    Continue,
    /// Go on, but do not descend into this directory.
    SkipDir,
    /// Stop the whole walk.
    Stop,
}

/// One entry met by a walk: its parent directory handle, its name there, its path and lstat.
struct WalkEntry<'a> {
    parent: &'a Dir,
    name: &'a OsStr,
    path: WorkspacePath,
    meta: Metadata,
}

fn entry_type(meta: &Metadata) -> EntryType {
    let ft = meta.file_type();
    if ft.is_symlink() {
        EntryType::Symlink
    } else if ft.is_dir() {
        EntryType::Dir
    } else if ft.is_file() {
        EntryType::File
    } else {
        EntryType::Other
    }
}

fn describe(path: &WorkspacePath, meta: &Metadata) -> Entry {
    let nanos = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    let modified_at = OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
    Entry {
        path: path.to_string(),
        entry_type: entry_type(meta),
        size_bytes: meta.size(),
        mode: meta.mode() & 0o7777,
        modified_at,
    }
}

/// Unique names for temporary files, across every runner of the workspace: two executors on
/// one node each run a runner for the same session, over the same directory, and each
/// sandbox's pid namespace gives its runner the same pid, so pid plus a counter collided
/// (two concurrent writes failed `already exists`, ninth session). A ULID (random, 80 bits)
/// does not; `create_new` makes a collision with a user's file an error rather than a
/// clobber.
fn temp_name() -> String {
    format!(".ws-tmp-{}", ulid::Ulid::generate())
}

/// Checks an opened file (by fstat, so the check is about the inode actually opened) is a
/// regular file with a single link.
fn check_regular(path: &WorkspacePath, file: &File) -> Result<Metadata, OpError> {
    let meta = file.metadata().map_err(|e| io_error(path, &e))?;
    check_regular_meta(path, &meta)?;
    Ok(meta)
}

fn check_regular_meta(path: &WorkspacePath, meta: &Metadata) -> Result<(), OpError> {
    if meta.is_dir() {
        return Err(OpError::invalid(format!("{path}: is a directory")));
    }
    if !meta.is_file() {
        return Err(OpError::denied(format!(
            "{path}: is not a regular file (device, fifo or socket)"
        )));
    }
    if meta.nlink() > 1 {
        return Err(OpError::denied(format!(
            "{path}: has more than one hard link and may alias a file outside the workspace"
        )));
    }
    Ok(())
}

/// Options to open an existing file for reading without ever blocking (a fifo swapped in
/// after the type check opens at once with `O_NONBLOCK` and is then refused by fstat) or
/// acquiring a controlling terminal.
fn read_options(follow: FollowSymlinks) -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .follow(follow);
    opts
}

/// The workspace root, opened once; every operation resolves beneath it.
#[derive(Debug)]
pub struct Workspace {
    root: Dir,
    root_path: PathBuf,
    /// Device and inode of the root: where the walk up from an opened directory stops.
    root_id: (u64, u64),
    /// One-level undo snapshots of files (see [`super::undo`]).
    undo: super::undo::UndoStore,
}

impl Workspace {
    /// Opens the workspace root (ambient authority is used once, here).
    pub fn open(root: &Path) -> io::Result<Self> {
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority())?;
        let meta = dir.dir_metadata()?;
        Ok(Self {
            root: dir,
            root_path: root.to_path_buf(),
            root_id: (meta.dev(), meta.ino()),
            undo: super::undo::UndoStore::default(),
        })
    }

    /// The workspace's undo snapshots (kept in the runner's memory, see [`super::undo`]).
    pub fn undo_store(&self) -> &super::undo::UndoStore {
        &self.undo
    }

    /// The root as the runner was told it (used for `HOME` of executed programs).
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// lstat beneath the root; `None` when the path does not exist.
    fn lstat(&self, path: &WorkspacePath) -> Result<Option<Metadata>, OpError> {
        let result = if path.is_root() {
            self.root.dir_metadata()
        } else {
            self.root.symlink_metadata(path.as_path())
        };
        match result {
            Ok(meta) => Ok(Some(meta)),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                Ok(None)
            }
            Err(e) => Err(io_error(path, &e)),
        }
    }

    /// Opens a directory, following symlinks only while they stay inside the workspace.
    pub fn open_dir(&self, path: &WorkspacePath) -> Result<Dir, OpError> {
        let dir = if path.is_root() {
            self.root.try_clone()
        } else {
            self.root.open_dir(path.as_path())
        };
        dir.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) => OpError::invalid(format!("{path}: is not a directory")),
            _ => io_error(path, &e),
        })
    }

    /// Opens the parent directory of `path` for a write and returns it with the final name.
    /// With `create_parents`, missing parents are created first.
    ///
    /// Every write goes through here, so this is where the protected path is enforced: the
    /// names are checked first, then the directory really opened (after symlinks) must not be
    /// inside a `.git`; with `create_parents`, the deepest existing ancestor is checked before
    /// anything is created.
    fn open_parent<'p>(
        &self,
        path: &'p WorkspacePath,
        create_parents: bool,
    ) -> Result<(Dir, &'p str), OpError> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(OpError::denied("refusing to operate on the workspace root"));
        };
        if path.is_protected() {
            return Err(OpError::protected(path));
        }
        if create_parents && !parent.is_root() {
            let mut existing = parent.clone();
            let ancestor = loop {
                // Missing (or not a directory, or leading out: create_dir_all below reports
                // those): look one level up. The root always opens.
                match self.open_dir(&existing) {
                    Ok(dir) => break dir,
                    Err(_) => existing = existing.parent().unwrap_or_else(WorkspacePath::root),
                }
            };
            if self.inside_git(&ancestor, path)? {
                return Err(OpError::protected(path));
            }
            if let Err(e) = self.root.create_dir_all(parent.as_path()) {
                // create_dir_all reports an existing symlink that leads outside as "already
                // exists"; resolving it says what is really wrong.
                return Err(match self.open_dir(&parent) {
                    Err(denied) if denied.code == RunnerErrorCode::PolicyDenied => denied,
                    _ => io_error(&parent, &e),
                });
            }
        }
        let dir = self.open_dir(&parent)?;
        if self.inside_git(&dir, path)? {
            return Err(OpError::protected(path));
        }
        Ok((dir, name))
    }

    /// Whether the open directory `dir` is a `.git` directory or lies inside one. It walks up
    /// from the handle itself (`..` of the open directory, not of a path), and at each level
    /// asks whether the directory is its parent's `.git` entry (same device and inode), until
    /// it meets the workspace root. A walk that passes the filesystem root without meeting the
    /// workspace root means the directory is not in the workspace at all: refused. `path` is
    /// only for messages.
    fn inside_git(&self, dir: &Dir, path: &WorkspacePath) -> Result<bool, OpError> {
        let fail = |e: io::Error| io_error(path, &e);
        let mut current = dir.try_clone().map_err(fail)?;
        // Each step climbs one level; a path has at most this many.
        for _ in 0..=MAX_PATH_BYTES / 2 {
            let meta = current.dir_metadata().map_err(fail)?;
            let id = (meta.dev(), meta.ino());
            if id == self.root_id {
                return Ok(false);
            }
            let parent = open_dotdot(&current).map_err(fail)?;
            let parent_meta = parent.dir_metadata().map_err(fail)?;
            if (parent_meta.dev(), parent_meta.ino()) == id {
                break;
            }
            if let Ok(git) = parent.symlink_metadata(PROTECTED_DIR)
                && git.is_dir()
                && (git.dev(), git.ino()) == id
            {
                return Ok(true);
            }
            current = parent;
        }
        Err(OpError::denied(format!(
            "{path}: path escapes the workspace"
        )))
    }

    /// Opens a regular, singly-linked file for reading. The type is checked before opening
    /// (so a device is never opened) and again on the open descriptor (so a swap in between
    /// is caught); returns the file with the metadata checked on the descriptor.
    fn open_regular(
        &self,
        path: &WorkspacePath,
        follow: FollowSymlinks,
    ) -> Result<(File, Metadata), OpError> {
        let pre = match follow {
            FollowSymlinks::Yes => self.root.metadata(path.as_path()),
            FollowSymlinks::No => self.root.symlink_metadata(path.as_path()),
        }
        .map_err(|e| io_error(path, &e))?;
        if pre.file_type().is_symlink() {
            return Err(OpError::invalid(format!("{path}: is a symlink")));
        }
        check_regular_meta(path, &pre)?;
        let file = self
            .root
            .open_with(path.as_path(), &read_options(follow))
            .map_err(|e| io_error(path, &e))?;
        let meta = check_regular(path, &file)?;
        Ok((file, meta))
    }

    /// Reads at most `max_bytes` from the start of a regular file, following symlinks that stay
    /// inside the workspace.
    pub fn read_file(&self, path: &WorkspacePath, max_bytes: u64) -> Result<FileRead, OpError> {
        if path.is_root() {
            return Err(OpError::invalid(".: is a directory"));
        }
        let (file, meta) = self.open_regular(path, FollowSymlinks::Yes)?;
        let size_bytes = meta.size();
        let want = max_bytes.min(size_bytes);
        let mut content = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        file.take(max_bytes)
            .read_to_end(&mut content)
            .map_err(|e| io_error(path, &e))?;
        let truncated = (content.len() as u64) < size_bytes;
        Ok(FileRead {
            content,
            size_bytes,
            truncated,
        })
    }

    /// Creates or atomically replaces a regular file. A final symlink is followed only to a
    /// target inside the workspace; an existing file keeps its permission bits (new files get
    /// 0644) and must have a single link.
    pub fn write_file(
        &self,
        path: &WorkspacePath,
        content: &[u8],
        create_parents: bool,
        create_new: bool,
    ) -> Result<Written, OpError> {
        let (dir, name) = self.open_parent(path, create_parents)?;
        let existing = match dir.symlink_metadata(name) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(path, &e)),
        };
        let mode = match &existing {
            None => 0o644,
            Some(meta) if meta.file_type().is_symlink() => {
                if create_new {
                    return Err(OpError::exists(path));
                }
                // Write through the link only when its target resolves inside the workspace;
                // canonicalize fails with an escape error otherwise.
                let target = self.root.canonicalize(path.as_path()).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        OpError::invalid(format!("{path}: is a dangling symlink"))
                    } else {
                        io_error(path, &e)
                    }
                })?;
                let target = target
                    .to_str()
                    .ok_or_else(|| OpError::invalid(format!("{path}: target is not UTF-8")))
                    .and_then(WorkspacePath::parse)?;
                if target.file_name().is_none() {
                    return Err(OpError::invalid(format!("{path}: is a directory")));
                }
                return self.write_file(&target, content, false, false);
            }
            Some(meta) => {
                if create_new {
                    return Err(OpError::exists(path));
                }
                check_regular_meta(path, meta)?;
                meta.mode() & 0o777
            }
        };
        if create_new {
            // O_EXCL creation is atomic on its own; no temporary file needed.
            let mut opts = OpenOptions::new();
            opts.write(true)
                .create_new(true)
                .mode(mode)
                .follow(FollowSymlinks::No);
            let mut file = dir.open_with(name, &opts).map_err(|e| io_error(path, &e))?;
            write_all_with_mode(&mut file, content, mode).map_err(|e| io_error(path, &e))?;
        } else {
            replace_file(&dir, name, path, content, mode)?;
        }
        Ok(Written {
            bytes_written: content.len() as u64,
            created: existing.is_none(),
        })
    }

    /// Lists a directory (following symlinks inside the workspace to reach it, never while
    /// walking) or describes one non-directory entry.
    pub fn list(
        &self,
        path: &WorkspacePath,
        recursive: bool,
        max_entries: u64,
    ) -> Result<Bounded<Entry>, OpError> {
        let Some(lmeta) = self.lstat(path)? else {
            return Err(OpError::not_found(path));
        };
        let is_dir = if lmeta.file_type().is_symlink() {
            // The link itself may point outside: resolving it beneath the root refuses that.
            self.root
                .metadata(path.as_path())
                .map_err(|e| io_error(path, &e))?
                .is_dir()
        } else {
            lmeta.is_dir()
        };
        if !is_dir {
            let truncated = max_entries == 0;
            let items = if truncated {
                Vec::new()
            } else {
                vec![describe(path, &lmeta)]
            };
            return Ok(Bounded { items, truncated });
        }
        let dir = self.open_dir(path)?;
        let limit = usize::try_from(max_entries).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut truncated = false;
        walk(&dir, path, recursive, 0, &mut truncated, &mut |e| {
            if items.len() >= limit {
                return Ok(Visit::Stop);
            }
            items.push(describe(&e.path, &e.meta));
            Ok(Visit::Continue)
        })
        .map(|stopped| Bounded {
            items,
            truncated: truncated || stopped,
        })
    }

    /// Describes a path without following a final symlink; `None` when it does not exist.
    pub fn stat(&self, path: &WorkspacePath) -> Result<Option<Entry>, OpError> {
        Ok(self.lstat(path)?.map(|meta| describe(path, &meta)))
    }

    /// Creates a directory with exactly `mode & 0o777` (not masked by the umask). Returns
    /// whether it was created now.
    pub fn mkdir(
        &self,
        path: &WorkspacePath,
        create_parents: bool,
        mode: u32,
        exist_ok: bool,
    ) -> Result<bool, OpError> {
        let mode = mode & 0o777;
        let already = |meta: Option<Metadata>| match meta {
            Some(m) if m.is_dir() && exist_ok => Ok(false),
            _ => Err(OpError::exists(path)),
        };
        if path.is_root() {
            return already(self.lstat(path)?);
        }
        let (dir, name) = self.open_parent(path, create_parents)?;
        let mut builder = DirBuilder::new();
        builder.mode(mode);
        match dir.create_dir_with(name, &builder) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A symlink to a directory inside the workspace counts as the directory.
                let meta = match dir.metadata(name) {
                    Ok(m) => Some(m),
                    Err(e) if is_escape(&e) => return Err(io_error(path, &e)),
                    Err(_) => None,
                };
                return already(meta);
            }
            Err(e) => return Err(io_error(path, &e)),
        }
        dir.set_permissions(name, Permissions::from_mode(mode))
            .map_err(|e| io_error(path, &e))?;
        Ok(true)
    }

    /// Renames `from` to `to`. Returns false when both are the same path.
    pub fn rename(
        &self,
        from: &WorkspacePath,
        to: &WorkspacePath,
        overwrite: bool,
        create_parents: bool,
    ) -> Result<bool, OpError> {
        if from.is_root() || to.is_root() {
            return Err(OpError::denied("refusing to move the workspace root"));
        }
        if from == to {
            return Ok(false);
        }
        if self.lstat(from)?.is_none() {
            return Err(OpError::not_found(from));
        }
        if to.starts_with(from) {
            return Err(OpError::invalid(format!(
                "cannot move {from} into itself ({to})"
            )));
        }
        let (from_dir, from_name) = self.open_parent(from, false)?;
        let (to_dir, to_name) = self.open_parent(to, create_parents)?;
        rename_at(&from_dir, from_name, &to_dir, to_name, !overwrite).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EEXIST) => OpError::exists(to),
                Some(libc::ENOTEMPTY) => {
                    OpError::exists(to).with_message(format!("{to}: is a non-empty directory"))
                }
                Some(libc::ENOTDIR) | Some(libc::EISDIR) => {
                    OpError::invalid(format!("cannot replace {to} with an entry of another type"))
                }
                Some(libc::EINVAL) => OpError::invalid(format!("cannot move {from} to {to}")),
                _ => io_error(from, &e),
            }
        })?;
        Ok(true)
    }

    /// Copies a regular file, or with `recursive` a directory tree. Symlinks anywhere in the
    /// source are refused (copying one would either leak its target or plant an escape).
    pub fn copy(
        &self,
        from: &WorkspacePath,
        to: &WorkspacePath,
        recursive: bool,
        overwrite: bool,
        create_parents: bool,
    ) -> Result<EntryType, OpError> {
        if from == to {
            return Err(OpError::invalid("source and destination are the same path"));
        }
        if to.is_root() {
            return Err(OpError::denied("refusing to copy onto the workspace root"));
        }
        let Some(meta) = self.lstat(from)? else {
            return Err(OpError::not_found(from));
        };
        let kind = entry_type(&meta);
        match kind {
            EntryType::Symlink => {
                return Err(OpError::invalid(format!(
                    "{from}: is a symlink; copying symlinks is refused"
                )));
            }
            EntryType::Other => {
                return Err(OpError::denied(format!(
                    "{from}: is not a regular file (device, fifo or socket)"
                )));
            }
            EntryType::Dir if !recursive => {
                return Err(OpError::invalid(format!(
                    "{from}: is a directory; set recursive to copy it"
                )));
            }
            EntryType::Dir if to.starts_with(from) => {
                return Err(OpError::invalid(format!(
                    "cannot copy {from} into itself ({to})"
                )));
            }
            EntryType::File | EntryType::Dir => {}
        }
        let dest = self.lstat(to)?;
        match (&dest, kind) {
            (None, _) => {}
            (Some(_), _) if !overwrite => return Err(OpError::exists(to)),
            (Some(d), EntryType::File) if d.is_dir() => {
                return Err(OpError::exists(to).with_message(format!("{to}: is a directory")));
            }
            (Some(d), EntryType::Dir) if !d.is_dir() => {
                return Err(OpError::exists(to).with_message(format!("{to}: is not a directory")));
            }
            (Some(d), _) if !d.is_dir() && !d.is_file() && !d.file_type().is_symlink() => {
                return Err(OpError::denied(format!("{to}: is not a regular file")));
            }
            _ => {}
        }
        if kind == EntryType::File {
            let (dir, name) = self.open_parent(to, create_parents)?;
            self.copy_file(from, &dir, name, to)?;
            return Ok(EntryType::File);
        }

        // Validate the whole tree before writing anything, so a refused tree copies nothing.
        let src = self.open_dir(from)?;
        let mut plan: Vec<(WorkspacePath, bool, u32)> = Vec::new();
        let mut too_deep = false;
        walk(&src, from, true, 0, &mut too_deep, &mut |e| {
            let t = entry_type(&e.meta);
            match t {
                EntryType::Symlink => Err(OpError::invalid(format!(
                    "{}: is a symlink; copying symlinks is refused",
                    e.path
                ))),
                EntryType::Other => Err(OpError::denied(format!(
                    "{}: is not a regular file (device, fifo or socket)",
                    e.path
                ))),
                EntryType::File if e.meta.nlink() > 1 => Err(OpError::denied(format!(
                    "{}: has more than one hard link",
                    e.path
                ))),
                // The copy would create a .git (a repository git would use) at the
                // destination: that is writing inside .git.
                _ if e
                    .name
                    .as_bytes()
                    .eq_ignore_ascii_case(PROTECTED_DIR.as_bytes()) =>
                {
                    Err(OpError::denied(format!(
                        "{}: is a .git; copying a repository's metadata is refused (the git \
                         tools own it)",
                        e.path
                    )))
                }
                _ if plan.len() >= MAX_COPY_ENTRIES => Err(OpError::invalid(format!(
                    "{from}: has more than {MAX_COPY_ENTRIES} entries"
                ))),
                _ => {
                    plan.push((e.path.clone(), t == EntryType::Dir, e.meta.mode() & 0o777));
                    Ok(Visit::Continue)
                }
            }
        })?;
        if too_deep {
            return Err(OpError::invalid(format!(
                "{from}: is nested deeper than {MAX_WALK_DEPTH} levels"
            )));
        }
        let (parent, name) = self.open_parent(to, create_parents)?;
        let root_mode = meta.mode() & 0o777;
        // Directories are created owner-writable and get their real mode once filled, so a
        // read-only source directory can still be copied.
        let mut dirs = vec![(to.clone(), root_mode)];
        make_dir(&parent, name, to)?;
        for (src_path, is_dir, mode) in plan {
            let rel = &src_path.as_str()[from.as_str().len()..];
            let rel = rel.trim_start_matches('/');
            let dst_path = WorkspacePath::parse(&format!("{}/{rel}", to.as_str()))?;
            let (dst_dir, dst_name) = self.open_parent(&dst_path, false)?;
            if is_dir {
                make_dir(&dst_dir, dst_name, &dst_path)?;
                dirs.push((dst_path, mode));
            } else {
                if let Some(d) = self.lstat(&dst_path)?
                    && d.is_dir()
                {
                    return Err(OpError::exists(&dst_path));
                }
                self.copy_file(&src_path, &dst_dir, dst_name, &dst_path)?;
            }
        }
        for (path, mode) in dirs.into_iter().rev() {
            self.root
                .set_permissions(path.as_path(), Permissions::from_mode(mode))
                .map_err(|e| io_error(&path, &e))?;
        }
        Ok(EntryType::Dir)
    }

    /// Copies one regular file's content and permission bits to `dir/name` (atomic replace).
    fn copy_file(
        &self,
        from: &WorkspacePath,
        dir: &Dir,
        name: &str,
        to: &WorkspacePath,
    ) -> Result<(), OpError> {
        let (mut src, meta) = self.open_regular(from, FollowSymlinks::No)?;
        let mode = meta.mode() & 0o777;
        replace_with(dir, name, to, mode, |out| {
            io::copy(&mut src, out).map(|_| ())
        })
    }

    /// Removes a file, a symlink (never its target) or, with `recursive`, a directory tree.
    pub fn remove(
        &self,
        path: &WorkspacePath,
        recursive: bool,
        force: bool,
    ) -> Result<Removed, OpError> {
        if path.is_root() {
            return Err(OpError::denied("refusing to delete workspace root"));
        }
        if path.is_protected() {
            return Err(OpError::protected(path));
        }
        let Some(meta) = self.lstat(path)? else {
            if force {
                return Ok(Removed {
                    deleted: false,
                    existed: false,
                });
            }
            return Err(OpError::not_found(path));
        };
        // Through the parent's handle, checked like any write's: a parent reached through a
        // symlink to .git is refused, and nothing re-resolves the path after the check.
        let (dir, name) = self.open_parent(path, false)?;
        let result = if meta.is_dir() {
            if recursive {
                dir.remove_dir_all(name)
            } else {
                dir.remove_dir(name)
            }
        } else {
            // unlink never follows the final component: a symlink goes, its target stays.
            dir.remove_file_or_symlink(name)
        };
        match result {
            Ok(()) => Ok(Removed {
                deleted: true,
                existed: true,
            }),
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Err(OpError::invalid(format!(
                "{path}: directory is not empty; set recursive to remove it"
            ))),
            Err(e) if force && e.kind() == io::ErrorKind::NotFound => Ok(Removed {
                deleted: false,
                existed: true,
            }),
            Err(e) => Err(io_error(path, &e)),
        }
    }

    /// Searches regular files under `path` (or `path` itself) for lines matching `regex`.
    /// Skips `.git` directories, symlinks, non-regular and multiply-linked files, and files
    /// with a NUL byte in their first 8 KiB.
    pub fn search(
        &self,
        path: &WorkspacePath,
        regex: &regex::bytes::Regex,
        include: Option<&globset::GlobMatcher>,
        max_results: u64,
    ) -> Result<Bounded<SearchMatch>, OpError> {
        let limit = usize::try_from(max_results).unwrap_or(usize::MAX);
        let mut matches = Vec::new();
        let mut truncated = false;
        let meta = self
            .root
            .metadata(path.as_path())
            .map_err(|e| io_error(path, &e))?;
        if !meta.is_dir() {
            let (file, _) = self.open_regular(path, FollowSymlinks::Yes)?;
            let stopped = search_file(file, path, regex, limit, &mut matches)
                .map_err(|e| io_error(path, &e))?;
            return Ok(Bounded {
                items: matches,
                truncated: stopped,
            });
        }
        let dir = self.open_dir(path)?;
        let stopped = walk(&dir, path, true, 0, &mut truncated, &mut |e| {
            let ft = e.meta.file_type();
            if ft.is_dir() {
                return Ok(if e.name == OsStr::new(".git") {
                    Visit::SkipDir
                } else {
                    Visit::Continue
                });
            }
            if !ft.is_file() || e.meta.nlink() > 1 {
                return Ok(Visit::Continue);
            }
            if include.is_some_and(|g| !g.is_match(e.path.as_str())) {
                return Ok(Visit::Continue);
            }
            let Ok(file) = e
                .parent
                .open_with(e.name, &read_options(FollowSymlinks::No))
            else {
                return Ok(Visit::Continue);
            };
            // Re-check on the descriptor: the entry may have been swapped since the lstat.
            if check_regular(&e.path, &file).is_err() {
                return Ok(Visit::Continue);
            }
            match search_file(file, &e.path, regex, limit, &mut matches) {
                Ok(true) => Ok(Visit::Stop),
                Ok(false) | Err(_) => Ok(Visit::Continue),
            }
        })?;
        Ok(Bounded {
            items: matches,
            truncated: truncated || stopped,
        })
    }

    /// Finds entries under `path` whose workspace-relative path matches `glob`. Never follows
    /// symlinks while walking and does not descend into `.git` unless asked to.
    pub fn glob(
        &self,
        path: &WorkspacePath,
        glob: &globset::GlobMatcher,
        pattern_mentions_git: bool,
        max_results: u64,
    ) -> Result<Bounded<Entry>, OpError> {
        let limit = usize::try_from(max_results).unwrap_or(usize::MAX);
        let dir = self.open_dir(path)?;
        let mut items = Vec::new();
        let mut truncated = false;
        let stopped = walk(&dir, path, true, 0, &mut truncated, &mut |e| {
            if glob.is_match(e.path.as_str()) {
                if items.len() >= limit {
                    return Ok(Visit::Stop);
                }
                items.push(describe(&e.path, &e.meta));
            }
            if e.meta.is_dir() && e.name == OsStr::new(".git") && !pattern_mentions_git {
                return Ok(Visit::SkipDir);
            }
            Ok(Visit::Continue)
        })?;
        Ok(Bounded {
            items,
            truncated: truncated || stopped,
        })
    }
}

impl OpError {
    fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}

/// Walks `dir` depth-first in name order (so results come out sorted by path, component by
/// component), never following symlinks. Returns whether the visitor stopped the walk; sets
/// `too_deep` when [`MAX_WALK_DEPTH`] kept it from descending. Entries that vanish or cannot be
/// read mid-walk are skipped: the workspace changes under concurrent tools.
fn walk(
    dir: &Dir,
    prefix: &WorkspacePath,
    recursive: bool,
    depth: usize,
    too_deep: &mut bool,
    visit: &mut dyn FnMut(&WalkEntry<'_>) -> Result<Visit, OpError>,
) -> Result<bool, OpError> {
    let read = dir.entries().map_err(|e| io_error(prefix, &e))?;
    let mut names: Vec<_> = read.filter_map(Result::ok).map(|e| e.file_name()).collect();
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let Ok(meta) = dir.symlink_metadata(&name) else {
            continue;
        };
        let entry = WalkEntry {
            parent: dir,
            name: &name,
            path: prefix.join(&name),
            meta,
        };
        match visit(&entry)? {
            Visit::Stop => return Ok(true),
            Visit::SkipDir => continue,
            Visit::Continue => {}
        }
        if !recursive || !entry.meta.is_dir() {
            continue;
        }
        if depth + 1 >= MAX_WALK_DEPTH {
            *too_deep = true;
            continue;
        }
        let Ok(sub) = dir.open_dir_nofollow(&name) else {
            continue;
        };
        if walk(&sub, &entry.path, recursive, depth + 1, too_deep, visit)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Searches one opened file. Returns whether `limit` was reached with more matches left.
fn search_file(
    file: File,
    path: &WorkspacePath,
    regex: &regex::bytes::Regex,
    limit: usize,
    out: &mut Vec<SearchMatch>,
) -> io::Result<bool> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let head = reader.fill_buf()?;
    if head[..head.len().min(BINARY_SNIFF_BYTES)].contains(&0) {
        return Ok(false);
    }
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(false);
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !regex.is_match(text) {
            continue;
        }
        if out.len() >= limit {
            return Ok(true);
        }
        out.push(SearchMatch {
            path: path.to_string(),
            line: number,
            snippet: snippet(text),
        });
    }
}

/// At most [`MAX_SNIPPET_BYTES`] of a line, cut on a character boundary.
fn snippet(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    if text.len() <= MAX_SNIPPET_BYTES {
        return text.into_owned();
    }
    let mut end = MAX_SNIPPET_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn write_all_with_mode(file: &mut File, content: &[u8], mode: u32) -> io::Result<()> {
    file.write_all(content)?;
    // Explicit fchmod: the umask must not decide the mode of files the agent writes.
    file.set_permissions(Permissions::from_mode(mode))
}

/// Replaces `dir/name` with `content` through a temporary file and a rename in the same
/// directory, so readers see the old or the new content, never a torn write.
fn replace_file(
    dir: &Dir,
    name: &str,
    path: &WorkspacePath,
    content: &[u8],
    mode: u32,
) -> Result<(), OpError> {
    replace_with(dir, name, path, mode, |out| out.write_all(content))
}

fn replace_with(
    dir: &Dir,
    name: &str,
    path: &WorkspacePath,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), OpError> {
    let tmp = temp_name();
    let mut opts = OpenOptions::new();
    opts.write(true)
        .create_new(true)
        .mode(mode)
        .follow(FollowSymlinks::No);
    let mut file = dir.open_with(&tmp, &opts).map_err(|e| io_error(path, &e))?;
    let result = fill(&mut file)
        .and_then(|()| file.set_permissions(Permissions::from_mode(mode)))
        .and_then(|()| dir.rename(&tmp, dir, name));
    if let Err(e) = result {
        // Best effort: the temporary name is ours alone.
        let _ = dir.remove_file(&tmp);
        return Err(match e.raw_os_error() {
            Some(libc::EISDIR) | Some(libc::ENOTEMPTY) => {
                OpError::invalid(format!("{path}: is a directory"))
            }
            _ => io_error(path, &e),
        });
    }
    Ok(())
}

fn make_dir(dir: &Dir, name: &str, path: &WorkspacePath) -> Result<(), OpError> {
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    match dir.create_dir_with(name, &builder) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Merging into an existing directory (copy with overwrite); it must be a real one.
            match dir.symlink_metadata(name) {
                Ok(m) if m.is_dir() => Ok(()),
                _ => Err(OpError::exists(path)),
            }
        }
        Err(e) => Err(io_error(path, &e)),
    }
}

/// Opens the parent of an open directory (`openat(fd, "..")`): cap-std refuses `..`, which is
/// right for paths but not for this walk, which only looks at what it opens.
fn open_dotdot(dir: &Dir) -> io::Result<Dir> {
    // SAFETY: `dir` is an open directory borrowed for the call; the name is a NUL-terminated
    // literal; on success the returned descriptor is new and owned by nobody else.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"..".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened above and is owned by nothing else.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    Ok(Dir::from_std_file(std::fs::File::from(owned)))
}

/// `renameat2` between two directory handles with single-component names, so no path is
/// resolved outside the handles. `noreplace` makes "destination exists" atomic; filesystems
/// without `RENAME_NOREPLACE` fall back to check-then-rename.
fn rename_at(
    from: &Dir,
    from_name: &str,
    to: &Dir,
    to_name: &str,
    noreplace: bool,
) -> io::Result<()> {
    let from_c = CString::new(from_name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let to_c = CString::new(to_name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
    // SAFETY: both descriptors are open directories borrowed for the call; the names are
    // NUL-terminated C strings that live across it.
    let rc = unsafe {
        libc::renameat2(
            from.as_raw_fd(),
            from_c.as_ptr(),
            to.as_raw_fd(),
            to_c.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if noreplace && matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        if to.symlink_metadata(to_name).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        return rename_at(from, from_name, to, to_name, false);
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::fs::symlink;

    fn p(raw: &str) -> WorkspacePath {
        WorkspacePath::parse(raw).unwrap()
    }

    fn denied(raw: &str) -> OpError {
        WorkspacePath::parse(raw).unwrap_err()
    }

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Workspace) {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside secret").unwrap();
        let workspace = Workspace::open(ws.path()).unwrap();
        (ws, outside, workspace)
    }

    #[test]
    fn paths_are_normalised_and_the_root_is_empty_or_dot() {
        assert!(p("").is_root());
        assert!(p(".").is_root());
        assert!(p("./").is_root());
        assert_eq!(p("a//b/./c/").as_str(), "a/b/c");
        assert_eq!(p("a/b").to_string(), "a/b");
        assert_eq!(p("").to_string(), ".");
        assert_eq!(p("..cache/x").as_str(), "..cache/x");
        assert_eq!(p("a..b").as_str(), "a..b");
        assert_eq!(p("a/b/c").parent(), Some(p("a/b")));
        assert_eq!(p("a").parent(), Some(WorkspacePath::root()));
        assert_eq!(p("a/b/c").file_name(), Some("c"));
        assert!(p("a/b").starts_with(&p("a")));
        assert!(!p("ab").starts_with(&p("a")));
        assert!(p("a").starts_with(&WorkspacePath::root()));
    }

    #[test]
    fn escaping_paths_are_refused_as_policy_denied_without_echoing_them() {
        for raw in ["/etc/passwd", "..", "../x", "a/../../x", "a/..", "a\0b"] {
            let err = denied(raw);
            assert_eq!(err.code, RunnerErrorCode::PolicyDenied, "{raw:?}");
            assert!(!err.message.contains("etc"), "{}", err.message);
        }
        let long = "a/".repeat(2049);
        assert_eq!(denied(&long).code, RunnerErrorCode::PolicyDenied);
        let component = "x".repeat(256);
        assert_eq!(denied(&component).code, RunnerErrorCode::PolicyDenied);
        assert!(WorkspacePath::parse(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn a_symlink_to_a_file_outside_is_refused_for_read_and_write() {
        let (ws, outside, w) = setup();
        symlink(outside.path().join("secret"), ws.path().join("abs")).unwrap();
        symlink("../../../../../../../../etc/passwd", ws.path().join("rel")).unwrap();
        for name in ["abs", "rel"] {
            let err = w.read_file(&p(name), 100).unwrap_err();
            assert_eq!(err.code, RunnerErrorCode::PolicyDenied, "{name}: {err:?}");
            assert!(err.message.contains("escapes the workspace"));
            assert!(!err.message.contains(outside.path().to_str().unwrap()));
            let err = w.write_file(&p(name), b"x", false, false).unwrap_err();
            assert_eq!(err.code, RunnerErrorCode::PolicyDenied, "{name}: {err:?}");
        }
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"outside secret"
        );
    }

    #[test]
    fn a_symlink_to_an_outside_directory_cannot_be_traversed() {
        let (ws, outside, w) = setup();
        symlink(outside.path(), ws.path().join("out")).unwrap();
        for path in ["out", "out/secret"] {
            let err = w.list(&p(path), false, 10).unwrap_err();
            assert_eq!(err.code, RunnerErrorCode::PolicyDenied, "{path}");
        }
        assert_eq!(
            w.read_file(&p("out/secret"), 10).unwrap_err().code,
            RunnerErrorCode::PolicyDenied
        );
        assert_eq!(
            w.write_file(&p("out/new"), b"x", false, false)
                .unwrap_err()
                .code,
            RunnerErrorCode::PolicyDenied
        );
        assert_eq!(
            w.mkdir(&p("out/d"), true, 0o755, false).unwrap_err().code,
            RunnerErrorCode::PolicyDenied
        );
        assert!(!outside.path().join("new").exists());
        // The link itself can be described and removed; its target stays.
        let entry = w.stat(&p("out")).unwrap().unwrap();
        assert_eq!(entry.entry_type, EntryType::Symlink);
        assert!(w.remove(&p("out"), true, false).unwrap().deleted);
        assert!(outside.path().join("secret").exists());
    }

    #[test]
    fn symlinks_that_stay_inside_are_followed() {
        let (ws, _outside, w) = setup();
        std::fs::create_dir(ws.path().join("docs")).unwrap();
        std::fs::write(ws.path().join("docs/README.md"), b"hello").unwrap();
        symlink("docs/README.md", ws.path().join("README.md")).unwrap();
        symlink("docs", ws.path().join("d")).unwrap();
        assert_eq!(w.read_file(&p("README.md"), 100).unwrap().content, b"hello");
        assert_eq!(
            w.read_file(&p("d/README.md"), 100).unwrap().content,
            b"hello"
        );
        let written = w.write_file(&p("README.md"), b"new", false, false).unwrap();
        assert!(!written.created);
        assert!(
            std::fs::symlink_metadata(ws.path().join("README.md"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read(ws.path().join("docs/README.md")).unwrap(),
            b"new"
        );
        let listed = w.list(&p("d"), false, 10).unwrap();
        assert_eq!(listed.items[0].path, "d/README.md");
    }

    #[test]
    fn hard_links_fifos_and_loops_are_refused_without_blocking() {
        let (ws, outside, w) = setup();
        std::fs::hard_link(outside.path().join("secret"), ws.path().join("hard")).unwrap();
        let err = w.read_file(&p("hard"), 100).unwrap_err();
        assert_eq!(err.code, RunnerErrorCode::PolicyDenied);
        let err = w.write_file(&p("hard"), b"x", false, false).unwrap_err();
        assert_eq!(err.code, RunnerErrorCode::PolicyDenied);
        assert_eq!(
            w.copy(&p("hard"), &p("copy"), false, false, false)
                .unwrap_err()
                .code,
            RunnerErrorCode::PolicyDenied
        );

        let fifo = CString::new(ws.path().join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert_eq!(
            w.read_file(&p("fifo"), 100).unwrap_err().code,
            RunnerErrorCode::PolicyDenied
        );
        assert_eq!(
            w.write_file(&p("fifo"), b"x", false, false)
                .unwrap_err()
                .code,
            RunnerErrorCode::PolicyDenied
        );

        symlink("loop-b", ws.path().join("loop-a")).unwrap();
        symlink("loop-a", ws.path().join("loop-b")).unwrap();
        let err = w.read_file(&p("loop-a"), 100).unwrap_err();
        assert!(
            matches!(
                err.code,
                RunnerErrorCode::InvalidArgument | RunnerErrorCode::PolicyDenied
            ),
            "{err:?}"
        );
        assert_eq!(
            w.stat(&p("loop-a")).unwrap().unwrap().entry_type,
            EntryType::Symlink
        );
    }

    #[test]
    fn reads_report_full_size_and_truncation() {
        let (ws, _o, w) = setup();
        std::fs::write(ws.path().join("f"), b"0123456789").unwrap();
        let r = w.read_file(&p("f"), 4).unwrap();
        assert_eq!(
            (r.content.as_slice(), r.size_bytes, r.truncated),
            (&b"0123"[..], 10, true)
        );
        let r = w.read_file(&p("f"), 100).unwrap();
        assert_eq!((r.content.len(), r.truncated), (10, false));
        assert_eq!(
            w.read_file(&p("missing"), 1).unwrap_err().code,
            RunnerErrorCode::NotFound
        );
        assert_eq!(
            w.read_file(&p("f/x"), 1).unwrap_err().code,
            RunnerErrorCode::NotFound
        );
        assert_eq!(
            w.read_file(&p(""), 1).unwrap_err().code,
            RunnerErrorCode::InvalidArgument
        );
    }

    #[test]
    fn writes_replace_atomically_and_keep_or_set_the_mode() {
        let (ws, _o, w) = setup();
        let r = w.write_file(&p("a/b/c.txt"), b"one", true, false).unwrap();
        assert_eq!(
            r,
            Written {
                bytes_written: 3,
                created: true
            }
        );
        let mode = std::fs::metadata(ws.path().join("a/b/c.txt"))
            .unwrap()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644);
        std::fs::set_permissions(
            ws.path().join("a/b/c.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let r = w
            .write_file(&p("a/b/c.txt"), b"two!", false, false)
            .unwrap();
        assert_eq!(
            r,
            Written {
                bytes_written: 4,
                created: false
            }
        );
        let meta = std::fs::metadata(ws.path().join("a/b/c.txt")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(ws.path().join("a/b/c.txt")).unwrap(), b"two!");
        let err = w
            .write_file(&p("a/b/c.txt"), b"x", false, true)
            .unwrap_err();
        assert_eq!(err.code, RunnerErrorCode::AlreadyExists);
        let err = w.write_file(&p("x/y"), b"x", false, false).unwrap_err();
        assert_eq!(err.code, RunnerErrorCode::NotFound);
        let err = w.write_file(&p("a"), b"x", false, false).unwrap_err();
        assert_eq!(err.code, RunnerErrorCode::InvalidArgument);
        assert!(w.write_file(&p("n"), b"x", false, true).unwrap().created);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(ws.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.txt"]);
    }

    #[test]
    fn listing_is_sorted_bounded_and_never_follows_symlinks() {
        let (ws, outside, w) = setup();
        for f in ["b/z", "b/a", "a", "c/d/e"] {
            w.write_file(&p(f), b"x", true, false).unwrap();
        }
        symlink(outside.path(), ws.path().join("b/out")).unwrap();
        let all = w.list(&p(""), true, 100).unwrap();
        let paths: Vec<_> = all.items.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["a", "b", "b/a", "b/out", "b/z", "c", "c/d", "c/d/e"]
        );
        assert!(!all.truncated);
        assert_eq!(all.items[3].entry_type, EntryType::Symlink);
        let top = w.list(&p("."), false, 100).unwrap();
        assert_eq!(top.items.len(), 3);
        let cut = w.list(&p(""), true, 2).unwrap();
        assert_eq!(cut.items.len(), 2);
        assert!(cut.truncated);
        let exact = w.list(&p("b"), false, 3).unwrap();
        assert!(!exact.truncated);
        let one = w.list(&p("b/a"), false, 10).unwrap();
        assert_eq!(one.items.len(), 1);
        assert_eq!(one.items[0].entry_type, EntryType::File);
        assert_eq!(
            w.list(&p("nope"), false, 1).unwrap_err().code,
            RunnerErrorCode::NotFound
        );
    }

    #[test]
    fn mkdir_move_copy_and_remove_follow_the_contract() {
        let (ws, outside, w) = setup();
        assert!(w.mkdir(&p("d/e"), true, 0o750, false).unwrap());
        let mode = std::fs::metadata(ws.path().join("d/e")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o750);
        assert!(!w.mkdir(&p("d/e"), false, 0o755, true).unwrap());
        assert_eq!(
            w.mkdir(&p("d/e"), false, 0o755, false).unwrap_err().code,
            RunnerErrorCode::AlreadyExists
        );
        w.write_file(&p("f"), b"data", false, false).unwrap();
        assert_eq!(
            w.mkdir(&p("f"), false, 0o755, true).unwrap_err().code,
            RunnerErrorCode::AlreadyExists
        );
        assert!(!w.mkdir(&p(""), false, 0o755, true).unwrap());

        assert!(!w.rename(&p("f"), &p("./f"), false, false).unwrap());
        w.write_file(&p("g"), b"g", false, false).unwrap();
        assert_eq!(
            w.rename(&p("f"), &p("g"), false, false).unwrap_err().code,
            RunnerErrorCode::AlreadyExists
        );
        assert!(w.rename(&p("f"), &p("g"), true, false).unwrap());
        assert_eq!(std::fs::read(ws.path().join("g")).unwrap(), b"data");
        assert!(w.rename(&p("g"), &p("new/dir/g"), false, true).unwrap());
        assert_eq!(
            w.rename(&p("d"), &p("d/e/inside"), false, false)
                .unwrap_err()
                .code,
            RunnerErrorCode::InvalidArgument
        );

        assert_eq!(
            w.copy(&p("new"), &p("copy"), false, false, false)
                .unwrap_err()
                .code,
            RunnerErrorCode::InvalidArgument
        );
        assert_eq!(
            w.copy(&p("new"), &p("new"), true, false, false)
                .unwrap_err()
                .code,
            RunnerErrorCode::InvalidArgument
        );
        assert_eq!(
            w.copy(&p("new"), &p("copy"), true, false, false).unwrap(),
            EntryType::Dir
        );
        assert_eq!(
            std::fs::read(ws.path().join("copy/dir/g")).unwrap(),
            b"data"
        );
        assert_eq!(
            w.copy(&p("new/dir/g"), &p("copy/dir/g"), false, false, false)
                .unwrap_err()
                .code,
            RunnerErrorCode::AlreadyExists
        );
        symlink(outside.path(), ws.path().join("new/link")).unwrap();
        assert_eq!(
            w.copy(&p("new"), &p("copy2"), true, false, false)
                .unwrap_err()
                .code,
            RunnerErrorCode::InvalidArgument
        );
        assert!(
            !ws.path().join("copy2").exists(),
            "a refused tree copies nothing"
        );
        assert_eq!(
            w.copy(&p("new/link"), &p("l2"), false, false, false)
                .unwrap_err()
                .code,
            RunnerErrorCode::InvalidArgument
        );

        let err = w.remove(&p("."), true, true).unwrap_err();
        assert_eq!(err.code, RunnerErrorCode::PolicyDenied);
        assert_eq!(err.message, "refusing to delete workspace root");
        assert_eq!(
            w.remove(&p("new"), false, false).unwrap_err().code,
            RunnerErrorCode::InvalidArgument
        );
        assert_eq!(
            w.remove(&p("new/link"), false, false).unwrap(),
            Removed {
                deleted: true,
                existed: true
            }
        );
        assert!(outside.path().join("secret").exists());
        assert!(w.remove(&p("new"), true, false).unwrap().deleted);
        assert_eq!(
            w.remove(&p("new"), false, true).unwrap(),
            Removed {
                deleted: false,
                existed: false
            }
        );
        assert_eq!(
            w.remove(&p("new"), false, false).unwrap_err().code,
            RunnerErrorCode::NotFound
        );
    }

    #[test]
    fn writes_never_reach_inside_git_by_name_or_through_a_symlink() {
        let (ws, _o, w) = setup();
        std::fs::create_dir_all(ws.path().join(".git/hooks")).unwrap();
        std::fs::write(ws.path().join(".git/config"), b"[core]\n").unwrap();
        std::fs::create_dir(ws.path().join("sub")).unwrap();
        symlink(".git", ws.path().join("g")).unwrap();
        symlink("../.git/hooks", ws.path().join("sub/h")).unwrap();
        let refused = |r: Result<(), OpError>, what: &str| {
            let e = r.expect_err(what);
            assert_eq!(e.code, RunnerErrorCode::PolicyDenied, "{what}: {e}");
            assert!(e.message.contains("protected path"), "{what}: {e}");
        };
        for name in [
            ".git/config",
            ".GIT/x",
            "a/.git",
            "g/config",
            "sub/h/pre-commit",
        ] {
            refused(w.write_file(&p(name), b"x", true, false).map(drop), name);
            refused(
                w.mkdir(&p(&format!("{name}/d")), true, 0o755, true)
                    .map(drop),
                name,
            );
        }
        refused(
            w.write_file(&p("g/new/deep/x"), b"x", true, false)
                .map(drop),
            "create_parents",
        );
        assert!(!ws.path().join(".git/new").exists());
        w.write_file(&p("a.txt"), b"a", false, false).unwrap();
        refused(
            w.rename(&p("a.txt"), &p("g/a.txt"), false, false).map(drop),
            "move in",
        );
        refused(
            w.rename(&p("g/config"), &p("c"), false, false).map(drop),
            "move out",
        );
        refused(
            w.rename(&p(".git"), &p("old"), false, false).map(drop),
            "move .git",
        );
        refused(
            w.copy(&p("a.txt"), &p("sub/h/x"), false, false, true)
                .map(drop),
            "copy in",
        );
        refused(w.remove(&p("g/config"), false, false).map(drop), "delete");
        refused(w.remove(&p(".git"), true, false).map(drop), "delete .git");
        assert_eq!(
            std::fs::read(ws.path().join(".git/config")).unwrap(),
            b"[core]\n"
        );
        // Reads and copies out of .git are fine; the link itself is an ordinary entry.
        assert_eq!(
            w.read_file(&p("g/config"), 100).unwrap().content,
            b"[core]\n"
        );
        w.copy(&p(".git/config"), &p("config.txt"), false, false, true)
            .unwrap();
        w.remove(&p("g"), false, false).unwrap();
        assert!(ws.path().join(".git/config").exists());
    }

    #[test]
    fn search_skips_git_binaries_and_links_and_cuts_snippets() {
        let (ws, outside, w) = setup();
        w.write_file(
            &p("src/a.rs"),
            b"fn main() {}\nlet needle = 1;\n",
            true,
            false,
        )
        .unwrap();
        // .git is never written through the workspace: the fixture goes to disk directly.
        std::fs::create_dir(ws.path().join(".git")).unwrap();
        std::fs::write(ws.path().join(".git/config"), b"needle").unwrap();
        w.write_file(&p("bin"), b"needle\0binary", false, false)
            .unwrap();
        let long = format!("needle {}", "é".repeat(400));
        w.write_file(&p("long.txt"), long.as_bytes(), false, false)
            .unwrap();
        std::fs::write(outside.path().join("secret"), b"needle outside").unwrap();
        symlink(outside.path().join("secret"), ws.path().join("link")).unwrap();
        std::fs::hard_link(outside.path().join("secret"), ws.path().join("hard")).unwrap();
        let re = regex::bytes::Regex::new("needle").unwrap();
        let found = w.search(&p(""), &re, None, 10).unwrap();
        let paths: Vec<_> = found
            .items
            .iter()
            .map(|m| (m.path.as_str(), m.line))
            .collect();
        assert_eq!(paths, [("long.txt", 1), ("src/a.rs", 2)]);
        assert!(found.items[0].snippet.len() <= MAX_SNIPPET_BYTES);
        assert!(found.items[0].snippet.len() >= MAX_SNIPPET_BYTES - 1);
        let only_rs = globset::Glob::new("**/*.rs").unwrap().compile_matcher();
        let found = w.search(&p(""), &re, Some(&only_rs), 10).unwrap();
        assert_eq!(found.items.len(), 1);
        let cut = w.search(&p(""), &re, None, 1).unwrap();
        assert!(cut.truncated);
        assert_eq!(cut.items.len(), 1);
        assert_eq!(
            w.search(&p("link"), &re, None, 1).unwrap_err().code,
            RunnerErrorCode::PolicyDenied
        );
    }

    #[test]
    fn glob_matches_relative_paths_of_files_and_directories() {
        let (ws, _o, w) = setup();
        for f in ["src/a.rs", "src/sub/b.rs", "README.md"] {
            w.write_file(&p(f), b"x", true, false).unwrap();
        }
        // .git is never written through the workspace: the fixture goes to disk directly.
        std::fs::create_dir(ws.path().join(".git")).unwrap();
        std::fs::write(ws.path().join(".git/x.rs"), b"x").unwrap();
        let g = globset::GlobBuilder::new("**/*.rs")
            .literal_separator(true)
            .build()
            .unwrap()
            .compile_matcher();
        let found = w.glob(&p(""), &g, false, 10).unwrap();
        let paths: Vec<_> = found.items.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["src/a.rs", "src/sub/b.rs"]);
        let dirs = globset::Glob::new("src/*").unwrap().compile_matcher();
        let found = w.glob(&p("src"), &dirs, false, 1).unwrap();
        assert_eq!(found.items.len(), 1);
        assert!(found.truncated);
    }
}
