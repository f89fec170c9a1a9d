//! What the family reports about a filesystem entry (`fs.list`, `fs.stat`, `fs.copy`): the
//! entry type and the original's Go-style mode string.

use schemars::JsonSchema;
use serde::Serialize;

use crate::runner::protocol::{self, EntryType};

/// The type of an entry: `file`, `dir`, `symlink` (never followed) or `other` (fifo, socket,
/// device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl From<EntryType> for Kind {
    fn from(kind: EntryType) -> Self {
        match kind {
            EntryType::File => Kind::File,
            EntryType::Dir => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Other => Kind::Other,
        }
    }
}

impl Kind {
    /// The name the output uses.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Other => "other",
        }
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub(super) struct Entry {
    /// Workspace-relative path.
    pub path: String,
    /// Entry type.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Go-style mode string (`-rw-r--r--`, `drwxr-xr-x`).
    pub mode: String,
    /// Modification time, RFC 3339.
    pub modified_at: String,
}

impl From<protocol::Entry> for Entry {
    fn from(entry: protocol::Entry) -> Self {
        Self {
            mode: mode_string(entry.entry_type, entry.mode),
            kind: entry.entry_type.into(),
            path: entry.path,
            size_bytes: entry.size_bytes,
            modified_at: entry.modified_at,
        }
    }
}

/// Renders a mode the way the original did (Go's `FileMode.String()`): type letters (`d`
/// directory, `L` symlink, `?` anything else), then `u`/`g`/`t` for setuid, setgid and sticky,
/// or `-` when there are none, then `rwxrwxrwx`.
pub(super) fn mode_string(kind: EntryType, mode: u32) -> String {
    let mut out = String::with_capacity(12);
    match kind {
        EntryType::Dir => out.push('d'),
        EntryType::Symlink => out.push('L'),
        EntryType::File | EntryType::Other => {}
    }
    for (bit, letter) in [(0o4000, 'u'), (0o2000, 'g'), (0o1000, 't')] {
        if mode & bit != 0 {
            out.push(letter);
        }
    }
    if kind == EntryType::Other {
        out.push('?');
    }
    if out.is_empty() {
        out.push('-');
    }
    for (i, letter) in "rwxrwxrwx".chars().enumerate() {
        out.push(if mode & (1 << (8 - i)) != 0 {
            letter
        } else {
            '-'
        });
    }
    out
}
