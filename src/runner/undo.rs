//! One-level undo snapshots: what a file held before its last snapshotted write
//! (`write_file` with `snapshot`, sent by `fs.edit`, `fs.insert` and `fs.write_file`), and how
//! `undo_edit` puts it back.
//!
//! Snapshots live in the runner's own memory, never on disk: the workspace and the sandbox's
//! `/tmp` are shared with every program the session runs, so a snapshot there could be read,
//! rewritten or committed by repository code, and would show in `fs.glob`, `git status` and
//! `git add --all` (the original's `.underpass-undo` folder did all three). A runner that
//! restarts (a new service process, a session resumed elsewhere) starts with none. Memory is
//! bounded: a snapshot keeps at most [`MAX_SNAPSHOT_BYTES`] (a larger file is remembered as too
//! large, never cut), and the oldest snapshots are forgotten beyond [`MAX_SNAPSHOT_TOTAL_BYTES`]
//! or [`MAX_SNAPSHOTS`].
//!
//! A snapshot is recorded only after its write succeeded (a failed edit keeps the previous
//! one), records a file that did not exist (undo removes it), is keyed by the normalised
//! workspace path, and is used once. Every read and write here goes through [`Workspace`]'s
//! confined operations; this module adds no path handling of its own.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use super::confine::{OpError, Workspace, WorkspacePath, Written};
use super::protocol::{EntryType, RunnerErrorCode};

/// Largest file content a snapshot keeps (4 MiB).
pub const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024;
/// Largest total of kept snapshot bytes (64 MiB); the oldest go first.
pub const MAX_SNAPSHOT_TOTAL_BYTES: usize = 64 * 1024 * 1024;
/// Most paths with a snapshot at once; the oldest go first.
pub const MAX_SNAPSHOTS: usize = 4096;

/// What a path held before a snapshotted write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Before {
    /// No file: undo removes the one the write created.
    Absent,
    /// The file's bytes.
    Content(Vec<u8>),
    /// A file of this many bytes, over [`MAX_SNAPSHOT_BYTES`]: nothing to restore.
    TooLarge(u64),
}

impl Before {
    fn kept_bytes(&self) -> usize {
        match self {
            Before::Content(bytes) => bytes.len(),
            Before::Absent | Before::TooLarge(_) => 0,
        }
    }
}

/// The snapshots of one workspace, one per path.
#[derive(Debug, Default)]
pub struct UndoStore {
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    /// Path → (sequence number, snapshot); the sequence orders eviction and tells an undo
    /// whether the snapshot it restored is still the current one.
    by_path: HashMap<WorkspacePath, (u64, Before)>,
    next: u64,
    bytes: usize,
}

impl Slots {
    fn record(&mut self, path: WorkspacePath, before: Before) {
        self.forget(&path, None);
        self.next += 1;
        self.bytes += before.kept_bytes();
        self.by_path.insert(path, (self.next, before));
        while self.by_path.len() > MAX_SNAPSHOTS || self.bytes > MAX_SNAPSHOT_TOTAL_BYTES {
            let Some(oldest) = self
                .by_path
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(path, _)| path.clone())
            else {
                break;
            };
            self.forget(&oldest, None);
        }
    }

    /// Removes `path`'s snapshot (only if it is still number `seq`, when given).
    fn forget(&mut self, path: &WorkspacePath, seq: Option<u64>) {
        if let Some((current, _)) = self.by_path.get(path)
            && seq.is_none_or(|s| s == *current)
            && let Some((_, old)) = self.by_path.remove(path)
        {
            self.bytes -= old.kept_bytes();
        }
    }
}

impl UndoStore {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves consistent slots (every update is a few
        // assignments), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of paths with a snapshot.
    pub fn len(&self) -> usize {
        self.lock().by_path.len()
    }

    /// Whether no path has a snapshot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Result of [`Workspace::undo_edit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undone {
    /// Whether the file was removed (it did not exist before the snapshotted write).
    pub deleted: bool,
    /// Size of the restored file (0 when removed).
    pub size_bytes: u64,
    /// SHA-256 of the restored bytes, hex; `None` when removed.
    pub sha256: Option<String>,
}

impl Workspace {
    /// [`Workspace::write_file`], keeping what `path` held before as its undo snapshot once the
    /// write succeeded.
    pub fn write_file_snapshotted(
        &self,
        path: &WorkspacePath,
        content: &[u8],
        create_parents: bool,
        create_new: bool,
    ) -> Result<Written, OpError> {
        let before = match self.read_file(path, MAX_SNAPSHOT_BYTES) {
            Ok(read) if read.truncated => Before::TooLarge(read.size_bytes),
            Ok(read) => Before::Content(read.content),
            Err(e) if e.code == RunnerErrorCode::NotFound => Before::Absent,
            // What stops the read (a directory, a device, a link out) stops the write too.
            Err(e) => return Err(e),
        };
        let written = self.write_file(path, content, create_parents, create_new)?;
        self.undo_store().lock().record(path.clone(), before);
        Ok(written)
    }

    /// Puts back what `path` held before its last snapshotted write and forgets the snapshot.
    /// A failed restore keeps it, so the undo can be retried.
    pub fn undo_edit(&self, path: &WorkspacePath) -> Result<Undone, OpError> {
        let snapshot = self.undo_store().lock().by_path.get(path).cloned();
        let Some((seq, before)) = snapshot else {
            return Err(OpError::new(
                RunnerErrorCode::NotFound,
                format!(
                    "{path}: no undo snapshot (fs.edit, fs.insert and fs.write_file keep one \
                     level per file; it is used once)"
                ),
            ));
        };
        let undone = match before {
            Before::TooLarge(size) => {
                return Err(OpError::new(
                    RunnerErrorCode::NotFound,
                    format!(
                        "{path}: no undo snapshot: the file held {size} bytes before its last \
                         change, over the {MAX_SNAPSHOT_BYTES}-byte snapshot limit"
                    ),
                ));
            }
            Before::Absent => {
                if let Some(entry) = self.stat(path)?
                    && entry.entry_type == EntryType::Dir
                {
                    return Err(OpError::new(
                        RunnerErrorCode::InvalidArgument,
                        format!(
                            "{path}: is now a directory; undo only removes the file the last \
                             write created"
                        ),
                    ));
                }
                self.remove(path, false, true)?;
                Undone {
                    deleted: true,
                    size_bytes: 0,
                    sha256: None,
                }
            }
            Before::Content(bytes) => {
                // Never creates parents: a directory removed since is not silently recreated.
                self.write_file(path, &bytes, false, false)?;
                Undone {
                    deleted: false,
                    size_bytes: bytes.len() as u64,
                    sha256: Some(hex::encode(Sha256::digest(&bytes))),
                }
            }
        };
        self.undo_store().lock().forget(path, Some(seq));
        Ok(undone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        (dir, ws)
    }

    fn p(path: &str) -> WorkspacePath {
        WorkspacePath::parse(path).unwrap()
    }

    #[test]
    fn undo_restores_the_content_before_the_last_write_once() {
        let (dir, ws) = workspace();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        ws.write_file_snapshotted(&p("a.txt"), b"two", false, false)
            .unwrap();
        ws.write_file_snapshotted(&p("a.txt"), b"three", false, false)
            .unwrap();
        let undone = ws.undo_edit(&p("a.txt")).unwrap();
        // One level: the state before the last write.
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"two");
        assert_eq!(
            undone,
            Undone {
                deleted: false,
                size_bytes: 3,
                sha256: Some(hex::encode(Sha256::digest(b"two"))),
            }
        );
        let again = ws.undo_edit(&p("a.txt")).unwrap_err();
        assert_eq!(again.code, RunnerErrorCode::NotFound, "{again:?}");
        assert!(ws.undo_store().is_empty());
    }

    #[test]
    fn undo_of_a_created_file_removes_it_and_keeps_a_directory() {
        let (dir, ws) = workspace();
        ws.write_file_snapshotted(&p("new.txt"), b"x", false, false)
            .unwrap();
        let undone = ws.undo_edit(&p("new.txt")).unwrap();
        assert!(undone.deleted);
        assert!(!dir.path().join("new.txt").exists());

        ws.write_file_snapshotted(&p("d"), b"x", false, false)
            .unwrap();
        std::fs::remove_file(dir.path().join("d")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let refused = ws.undo_edit(&p("d")).unwrap_err();
        assert_eq!(
            refused.code,
            RunnerErrorCode::InvalidArgument,
            "{refused:?}"
        );
        assert!(dir.path().join("d").is_dir());
    }

    #[test]
    fn a_failed_write_keeps_the_previous_snapshot() {
        let (dir, ws) = workspace();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        ws.write_file_snapshotted(&p("a.txt"), b"two", false, false)
            .unwrap();
        // create_new on an existing file fails: no new snapshot.
        ws.write_file_snapshotted(&p("a.txt"), b"three", false, true)
            .unwrap_err();
        ws.undo_edit(&p("a.txt")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"one");
    }

    #[test]
    fn a_file_over_the_limit_is_remembered_as_too_large_never_cut() {
        let (dir, ws) = workspace();
        let big = vec![b'x'; MAX_SNAPSHOT_BYTES as usize + 1];
        std::fs::write(dir.path().join("big"), &big).unwrap();
        ws.write_file_snapshotted(&p("big"), b"small", false, false)
            .unwrap();
        let refused = ws.undo_edit(&p("big")).unwrap_err();
        assert_eq!(refused.code, RunnerErrorCode::NotFound);
        assert!(refused.message.contains("snapshot limit"), "{refused:?}");
        assert_eq!(std::fs::read(dir.path().join("big")).unwrap(), b"small");
    }

    #[test]
    fn a_failed_restore_keeps_the_snapshot_for_a_retry() {
        let (dir, ws) = workspace();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), "one").unwrap();
        ws.write_file_snapshotted(&p("sub/a.txt"), b"two", false, false)
            .unwrap();
        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        let failed = ws.undo_edit(&p("sub/a.txt")).unwrap_err();
        assert_eq!(failed.code, RunnerErrorCode::NotFound, "{failed:?}");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        ws.undo_edit(&p("sub/a.txt")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/a.txt")).unwrap(), b"one");
    }

    #[test]
    fn the_oldest_snapshots_are_forgotten_beyond_the_bounds() {
        let mut slots = Slots::default();
        for i in 0..=MAX_SNAPSHOTS {
            slots.record(p(&format!("f{i}")), Before::Absent);
        }
        assert_eq!(slots.by_path.len(), MAX_SNAPSHOTS);
        assert!(!slots.by_path.contains_key(&p("f0")));
        assert!(slots.by_path.contains_key(&p(&format!("f{MAX_SNAPSHOTS}"))));

        let mut slots = Slots::default();
        let chunk = MAX_SNAPSHOT_BYTES as usize;
        let fit = MAX_SNAPSHOT_TOTAL_BYTES / chunk;
        for i in 0..=fit {
            slots.record(p(&format!("f{i}")), Before::Content(vec![0; chunk]));
        }
        assert_eq!(slots.by_path.len(), fit);
        assert!(slots.bytes <= MAX_SNAPSHOT_TOTAL_BYTES);
        assert!(!slots.by_path.contains_key(&p("f0")));
        // Replacing a snapshot releases its bytes.
        slots.record(p("f1"), Before::Absent);
        assert_eq!(slots.bytes, (fit - 1) * chunk);
    }

    #[test]
    fn writes_into_git_are_refused_before_any_snapshot() {
        let (dir, ws) = workspace();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        let refused = ws
            .write_file_snapshotted(&p(".git/config"), b"x", false, false)
            .unwrap_err();
        assert_eq!(refused.code, RunnerErrorCode::PolicyDenied, "{refused:?}");
        assert!(ws.undo_store().is_empty());
    }
}
