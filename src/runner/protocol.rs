//! The framed protocol between an executor and the runner inside a session's isolation boundary.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of JSON. The client sends a
//! [`Frame<Request>`], the runner answers with one [`Frame<Reply>`] carrying the same `id`; an
//! `exec` with `stream_output` is answered by any number of [`Reply::Output`] frames (the
//! program's output as it is read, with byte offsets) and then its final `exited` frame.
//! A connection carries one request at a time; the client keeps a pool of connections for
//! concurrency. The same frames travel over a unix socket (local sandbox) or a pod's exec stream
//! (Kubernetes).
//!
//! Every path in a request is workspace-relative; the runner confines it again (no `..`, no
//! absolute path, no symlink or hard-link escape, no device file), whatever the caller checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest frame either side accepts (16 MiB): a 1 MiB file travels base64-encoded well within.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Protocol version; the runner refuses a `hello` with another version. 2: externally tagged
/// messages and `read_text`; 3: `text` replies carry `returned_bytes` and stay JSON strings on
/// arrival ([`JsonText`]); 4: `exec` with `stream_output` answers with [`Reply::Output`] frames
/// while the program runs, before its final `exited`; 5: `write_file` with `snapshot` keeps the
/// file's previous state for `undo_edit`, answered by [`Reply::Undone`].
pub const PROTOCOL_VERSION: u32 = 5;

/// One message with its request id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frame<T> {
    /// Request id chosen by the client, echoed by the reply.
    pub id: u64,
    /// The message.
    pub body: T,
}

/// Bytes carried as base64 in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

/// Text that travels as a JSON string and stays one where it arrives: the executor copies the
/// string literal into the tool's output as it came, instead of unescaping it into a `String`
/// and escaping it again.
#[derive(Debug, Clone)]
pub enum JsonText {
    /// Text to send (the runner's side), escaped when the message is encoded.
    Text(String),
    /// A JSON string literal as received, quotes and escapes included.
    Json(Box<serde_json::value::RawValue>),
}

impl JsonText {
    /// The text itself (decoded when it arrived as JSON).
    pub fn to_text(&self) -> Result<std::borrow::Cow<'_, str>, serde_json::Error> {
        match self {
            JsonText::Text(text) => Ok(std::borrow::Cow::Borrowed(text)),
            JsonText::Json(raw) => serde_json::from_str::<String>(raw.get()).map(Into::into),
        }
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            JsonText::Text(text) => s.serialize_str(text),
            JsonText::Json(raw) => raw.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        if !raw.get().starts_with('"') {
            return Err(serde::de::Error::custom("expected a JSON string"));
        }
        Ok(JsonText::Json(raw))
    }
}

/// The UTF-8 text of `bytes`, or the bytes back when they are not text. When the read stopped
/// inside a multi-byte character (`truncated`), the partial character is dropped rather than
/// turning a whole text file into binary (the content is cut anyway).
pub fn utf8_text(mut bytes: Vec<u8>, truncated: bool) -> Result<String, Vec<u8>> {
    match std::str::from_utf8(&bytes) {
        Ok(_) => {}
        Err(e) if truncated && e.error_len().is_none() => bytes.truncate(e.valid_up_to()),
        Err(_) => return Err(bytes),
    }
    String::from_utf8(bytes).map_err(|e| e.into_bytes())
}

/// What the executor asks the runner to do. Paths are workspace-relative.
#[derive(Debug, Clone, Serialize, Deserialize)]
// Externally tagged (`{"read_file": {...}}`): serde decodes it in one pass, where an internally
// tagged enum first buffers every field of the message.
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Liveness and version check.
    Hello {
        /// Client protocol version.
        version: u32,
    },
    /// Read at most `max_bytes` of a regular file.
    ReadFile {
        /// File path.
        path: String,
        /// Read at most this many bytes from the start.
        max_bytes: u64,
    },
    /// Read at most `max_bytes` of a regular file as text: answered with `text` when the bytes
    /// are UTF-8 (see [`utf8_text`]), with `file` otherwise.
    ReadText {
        /// File path.
        path: String,
        /// Read at most this many bytes from the start.
        max_bytes: u64,
    },
    /// Create or replace a regular file.
    WriteFile {
        /// File path.
        path: String,
        /// New content.
        content: Bytes,
        /// Create missing parent directories.
        create_parents: bool,
        /// Fail with `already_exists` when the file exists.
        #[serde(default)]
        create_new: bool,
        /// Once the write succeeded, keep what the path held before it (its bytes, or that it
        /// did not exist) as the path's one-level undo snapshot, replacing an older one.
        #[serde(default)]
        snapshot: bool,
    },
    /// Put back the state a path had before its last snapshotted write, and forget the
    /// snapshot: the file's bytes (atomically, temporary file then rename), or its absence
    /// (the file is removed). No snapshot is `not_found`.
    UndoEdit {
        /// File path, as the snapshotted write named it.
        path: String,
    },
    /// List a directory (or describe one file).
    List {
        /// Directory path.
        path: String,
        /// Descend into subdirectories (never following symlinks).
        recursive: bool,
        /// Stop after this many entries.
        max_entries: u64,
    },
    /// Describe a path without following a final symlink.
    Stat {
        /// Path.
        path: String,
    },
    /// Create a directory.
    Mkdir {
        /// Directory path.
        path: String,
        /// Create missing parents.
        create_parents: bool,
        /// Permission bits (e.g. 0o755).
        mode: u32,
        /// Succeed with `created: false` when it already exists as a directory.
        exist_ok: bool,
    },
    /// Rename a file or directory inside the workspace.
    Move {
        /// Source path.
        from: String,
        /// Destination path.
        to: String,
        /// Replace an existing destination.
        overwrite: bool,
        /// Create missing parents of the destination.
        create_parents: bool,
    },
    /// Copy a file or (with `recursive`) a directory tree; symlinks are refused.
    Copy {
        /// Source path.
        from: String,
        /// Destination path.
        to: String,
        /// Required to copy a directory.
        recursive: bool,
        /// Replace an existing destination file.
        overwrite: bool,
        /// Create missing parents of the destination.
        create_parents: bool,
    },
    /// Remove a file, a symlink (not its target) or (with `recursive`) a directory tree.
    Remove {
        /// Path; the workspace root itself is refused.
        path: String,
        /// Required to remove a non-empty directory.
        recursive: bool,
        /// Succeed when the path does not exist.
        force: bool,
    },
    /// Search regular files under `path` for lines matching a regular expression.
    Search {
        /// Directory or file to search.
        path: String,
        /// Regular expression (Rust `regex` syntax, RE2-like).
        pattern: String,
        /// Stop after this many matches.
        max_results: u64,
        /// Skip files whose relative path does not match this glob, when given.
        #[serde(default)]
        include_glob: Option<String>,
    },
    /// Find paths under `path` whose workspace-relative path matches a glob.
    Glob {
        /// Directory to walk.
        path: String,
        /// Glob (`**/*.rs`), matched against the workspace-relative path.
        pattern: String,
        /// Stop after this many paths.
        max_results: u64,
    },
    /// Run a program (no shell) inside the workspace.
    Exec {
        /// Program and arguments; `argv[0]` is looked up in the sandbox's `PATH`.
        argv: Vec<String>,
        /// Extra environment (the runner's environment is already scrubbed).
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Working directory (workspace-relative).
        #[serde(default = "dot")]
        cwd: String,
        /// Bytes written to stdin, then stdin is closed.
        #[serde(default)]
        stdin: Option<Bytes>,
        /// Kill the whole process group after this long.
        timeout_ms: u64,
        /// Keep at most this many bytes of stdout and of stderr each (streamed: send at most
        /// this many of each as [`Reply::Output`] frames; the rest is only counted).
        max_output_bytes: u64,
        /// Send the output while the program runs, as [`Reply::Output`] frames with this
        /// request's id, before the final [`Reply::Exited`], whose `stdout` and `stderr` are then
        /// empty (every byte kept travelled in a chunk). Without it the output arrives only in
        /// the final reply, at most [`MAX_FRAME_BYTES`] together.
        #[serde(default)]
        stream_output: bool,
    },
}

/// Which output stream of a program a chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputChannel {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputChannel {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

fn dot() -> String {
    ".".to_owned()
}

impl Request {
    /// Requests that touch at most one small file or one directory entry. The runner runs them
    /// inline on the connection's task (a handful of local syscalls costs less than a hand-off
    /// to its blocking pool), so they answer promptly and in order, and the client may pipeline
    /// them on a shared connection. Walks, copies, large transfers and programs are not quick.
    pub fn is_quick(&self) -> bool {
        const QUICK_BYTES: u64 = 256 * 1024;
        match self {
            Request::Hello { .. } | Request::Stat { .. } | Request::Mkdir { .. } => true,
            Request::Move { .. } => true,
            Request::ReadFile { max_bytes, .. } | Request::ReadText { max_bytes, .. } => {
                *max_bytes <= QUICK_BYTES
            }
            // A snapshot reads the previous content first, which may be large.
            Request::WriteFile {
                content, snapshot, ..
            } => !snapshot && content.0.len() as u64 <= QUICK_BYTES,
            Request::Remove { recursive, .. } => !recursive,
            Request::List {
                recursive,
                max_entries,
                ..
            } => !recursive && *max_entries <= 1024,
            _ => false,
        }
    }
}

/// Type of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (never followed by `list` or `stat`).
    Symlink,
    /// Anything else (fifo, socket, device).
    Other,
}

/// One filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Workspace-relative path, `/`-separated.
    pub path: String,
    /// Entry type.
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, RFC 3339.
    pub modified_at: String,
}

/// One matching line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchMatch {
    /// Workspace-relative path.
    pub path: String,
    /// 1-based line number.
    pub line: u64,
    /// The line (at most 512 bytes, cut on a character boundary).
    pub snippet: String,
}

/// The runner's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
// Externally tagged, like `Request`.
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Answer to `hello`.
    Hello {
        /// Runner protocol version.
        version: u32,
        /// Isolation the runner sees itself in (`bubblewrap`, `unsandboxed`, `pod`).
        isolation: String,
    },
    /// Answer to `read_file`.
    File {
        /// The bytes read (at most `max_bytes`).
        content: Bytes,
        /// Full size of the file.
        size_bytes: u64,
        /// Whether `content` is shorter than the file.
        truncated: bool,
    },
    /// Answer to `read_text` when the content is text: it travels as a JSON string rather than
    /// base64, so neither side encodes it.
    Text {
        /// The text read (at most `max_bytes`, less a character cut at the end).
        text: JsonText,
        /// Length of `text` in bytes.
        returned_bytes: u64,
        /// Full size of the file.
        size_bytes: u64,
        /// Whether `text` is shorter than the file.
        truncated: bool,
    },
    /// Answer to `write_file`.
    Written {
        /// Bytes written.
        bytes_written: u64,
        /// Whether the file did not exist before.
        created: bool,
    },
    /// Answer to `undo_edit`.
    Undone {
        /// Whether the file was removed (it did not exist before the snapshotted write).
        deleted: bool,
        /// Size of the restored file (0 when removed).
        size_bytes: u64,
        /// SHA-256 of the restored bytes, hex; `None` when removed.
        sha256: Option<String>,
    },
    /// Answer to `list` and `glob`.
    Entries {
        /// Entries, sorted by path.
        entries: Vec<Entry>,
        /// Whether the walk stopped at `max_entries`.
        truncated: bool,
    },
    /// Answer to `stat`.
    Stat {
        /// `None` when the path does not exist.
        entry: Option<Entry>,
    },
    /// Answer to `mkdir`.
    Mkdir {
        /// Whether the directory was created now.
        created: bool,
    },
    /// Answer to `move`.
    Moved {
        /// False when source and destination are the same path.
        moved: bool,
    },
    /// Answer to `copy`.
    Copied {
        /// What was copied.
        entry_type: EntryType,
    },
    /// Answer to `remove`.
    Removed {
        /// Whether something was removed.
        deleted: bool,
        /// Whether the path existed.
        existed: bool,
    },
    /// Answer to `search`.
    Matches {
        /// Matches in path then line order.
        matches: Vec<SearchMatch>,
        /// Whether the search stopped at `max_results`.
        truncated: bool,
    },
    /// Part of a running `exec`'s output (only with `stream_output`): the bytes of `channel`
    /// from byte `offset` on. Chunks of one channel arrive in order and without gaps, until
    /// `max_output_bytes` of it were sent.
    Output {
        /// Which stream.
        channel: OutputChannel,
        /// Position of the first byte of `data` in the stream, from 0.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Answer to `exec`.
    Exited {
        /// Exit code; 124 after a timeout, 128+N when killed by signal N.
        exit_code: i32,
        /// Captured stdout (at most `max_output_bytes`; empty when streamed).
        stdout: Bytes,
        /// Captured stderr (at most `max_output_bytes`; empty when streamed).
        stderr: Bytes,
        /// Total stdout bytes the process wrote.
        stdout_total_bytes: u64,
        /// Total stderr bytes the process wrote.
        stderr_total_bytes: u64,
        /// Whether the timeout killed the process group.
        timed_out: bool,
        /// Run time.
        duration_ms: u64,
    },
    /// The request failed.
    Error {
        /// Stable code.
        code: RunnerErrorCode,
        /// Message with workspace-relative paths only.
        message: String,
    },
}

/// Stable failure codes of the runner; the tools map them onto the API's error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerErrorCode {
    /// The path does not exist.
    NotFound,
    /// The path escapes the workspace, is a device file or a hard link, or is otherwise refused.
    PolicyDenied,
    /// The request itself is wrong (bad regex, empty argv, directory where a file is needed...).
    InvalidArgument,
    /// The destination exists.
    AlreadyExists,
    /// Any other I/O failure.
    Io,
    /// The program could not be started.
    SpawnFailed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_text_keeps_text_and_returns_other_bytes() {
        assert_eq!(utf8_text(b"abc".to_vec(), false), Ok("abc".to_owned()));
        // "é" is two bytes: a read cut after the first drops it when the file goes on...
        assert_eq!(utf8_text(b"a\xc3".to_vec(), true), Ok("a".to_owned()));
        // ...but a file that ends there is not text.
        assert_eq!(utf8_text(b"a\xc3".to_vec(), false), Err(b"a\xc3".to_vec()));
        assert_eq!(utf8_text(vec![0xff, b'a'], true), Err(vec![0xff, b'a']));
    }

    #[test]
    fn messages_are_externally_tagged() {
        let request = Request::ReadText {
            path: "a.txt".into(),
            max_bytes: 5,
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"read_text":{"path":"a.txt","max_bytes":5}}"#
        );
        let reply: Reply = serde_json::from_str(
            r#"{"text":{"text":"h\u00e9\"","returned_bytes":4,"size_bytes":4,"truncated":false}}"#,
        )
        .unwrap();
        let Reply::Text { text, .. } = reply else {
            panic!("{reply:?}")
        };
        // Kept as it came, and decoded on demand.
        assert!(matches!(&text, JsonText::Json(raw) if raw.get() == r#""h\u00e9\"""#));
        assert_eq!(text.to_text().unwrap(), "hé\"");
        assert_eq!(serde_json::to_string(&text).unwrap(), r#""h\u00e9\"""#);
        // Sent as text, escaped once.
        assert_eq!(
            serde_json::to_string(&JsonText::Text("hé\"".into())).unwrap(),
            r#""hé\"""#
        );
        // Anything but a string is refused.
        assert!(serde_json::from_str::<JsonText>("12").is_err());
    }
}
