//! Handlers of the `fs.*` tools: each turns validated arguments into runner requests and the
//! runner's replies into the tool's output.
//!
//! Handlers never touch the host filesystem; the runner confines every path again (symlink and
//! hard-link escapes, device files). Every path a handler sends is first normalised and checked
//! against the session's `allowed_paths` here too, because the static policy only sees the
//! arguments that were given: a defaulted `path` (`"."`) and the paths inside a diff are only
//! known to the handler.

use base64::Engine;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::spec::{
    LIST_DEFAULT_ENTRIES, LIST_MAX_ENTRIES, READ_DEFAULT_BYTES, READ_LINES_DEFAULT, READ_LINES_MAX,
    READ_LINES_WINDOW_BYTES, READ_MAX_BYTES, SEARCH_DEFAULT_RESULTS, SEARCH_MAX_RESULTS,
    WRITE_MAX_BYTES,
};
use crate::error_code::ErrorCode;
use crate::policy::paths;
use workspace_events::RawJson;

use crate::runner::protocol::{
    Bytes, Entry, EntryType, JsonText, Reply, Request, RunnerErrorCode, utf8_text,
};
use crate::tools::git::{self, GitCommand, Network, Repository};
use crate::tools::{
    ToolContext, ToolFailure, ToolFuture, ToolSuccess, call_runner, runner_failure, stdout_line,
};

/// Exposes `async fn $inner(&ToolContext, &Value)` as a catalog [`crate::tools::Handler`].
macro_rules! handler {
    ($($name:ident => $inner:ident),* $(,)?) => {$(
        #[doc = concat!("Catalog entry point of `", stringify!($name), "`.")]
        pub fn $name(ctx: ToolContext, args: Value) -> ToolFuture {
            Box::pin(async move { $inner(&ctx, &args).await })
        }
    )*};
}

handler! {
    list => run_list,
    read_file => run_read_file,
    write_file => run_write_file,
    mkdir => run_mkdir,
    move_ => run_move,
    copy => run_copy,
    delete => run_delete,
    stat => run_stat,
    patch => run_patch,
    search => run_search,
    edit => run_edit,
    insert => run_insert,
    glob => run_glob,
    read_lines => run_read_lines,
}

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

fn invalid(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::InvalidArgument, message)
}

fn failed(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::ExecutionFailed, message)
}

/// A reply the request cannot produce: a runner speaking another protocol. Internal, never
/// retried as if it were the tool's failure.
fn unexpected(reply: &Reply) -> ToolFailure {
    // The variant only: a reply may carry a whole file.
    let kind = match reply {
        Reply::Hello { .. } => "hello",
        Reply::File { .. } => "file",
        Reply::Text { .. } => "text",
        Reply::Written { .. } => "written",
        Reply::Entries { .. } => "entries",
        Reply::Stat { .. } => "stat",
        Reply::Mkdir { .. } => "mkdir",
        Reply::Moved { .. } => "moved",
        Reply::Copied { .. } => "copied",
        Reply::Removed { .. } => "removed",
        Reply::Matches { .. } => "matches",
        Reply::Exited { .. } => "exited",
        Reply::Output { .. } => "output",
        Reply::Error { .. } => "error",
    };
    tracing::error!(reply = kind, "unexpected reply from the session runner");
    ToolFailure::new(
        ErrorCode::Internal,
        "unexpected reply from the session runner",
    )
}

fn success(output: Value, summary: String) -> ToolSuccess {
    success_json(output.into(), summary)
}

/// A success whose output is already encoded.
fn success_json(output: RawJson, summary: String) -> ToolSuccess {
    ToolSuccess {
        output,
        logs: vec![stdout_line(summary)],
        artifacts: Vec::new(),
        exit_code: 0,
    }
}

/// Read access to validated arguments. The schema already checked them; these accessors check
/// the shapes again (cheaply) so a handler never panics or guesses on a bypassed validation.
/// `null` counts as absent.
struct Args<'a> {
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Args<'a> {
    fn new(args: &'a Value) -> Result<Self, ToolFailure> {
        match args {
            Value::Null => Ok(Self { map: None }),
            Value::Object(map) => Ok(Self { map: Some(map) }),
            _ => Err(invalid("args: expected object")),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map?.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ToolFailure> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("args.{key}: expected string"))),
        }
    }

    /// A required string; empty counts as missing, as in the original (`path is required`).
    fn required(&self, key: &str) -> Result<&'a str, ToolFailure> {
        match self.string(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(invalid(format!(
                "args: missing required property \"{key}\""
            ))),
        }
    }

    /// A required string that may be empty (`content`, `new_string`).
    fn required_text(&self, key: &str) -> Result<&'a str, ToolFailure> {
        self.string(key)?
            .ok_or_else(|| invalid(format!("args: missing required property \"{key}\"")))
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool, ToolFailure> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(format!("args.{key}: expected boolean"))),
        }
    }

    /// A non-negative integer; whole floats (`5.0`) are accepted like the schema does.
    fn integer(&self, key: &str) -> Result<Option<u64>, ToolFailure> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let n = value.as_u64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                .map(|f| f as u64)
        });
        n.map(Some)
            .ok_or_else(|| invalid(format!("args.{key}: expected a non-negative integer")))
    }

    /// A count clamped to `1..=max`, `default` when absent.
    fn count(&self, key: &str, default: u64, max: u64) -> Result<u64, ToolFailure> {
        Ok(self.integer(key)?.unwrap_or(default).clamp(1, max))
    }
}

/// Normalises a path argument and checks it against the session's `allowed_paths` (the same
/// rule the static policy applies; see the module docs for why it runs again here).
fn resolve(ctx: &ToolContext, raw: &str) -> Result<String, ToolFailure> {
    paths::check(raw, &ctx.session.allowed_paths).map_err(|d| ToolFailure::new(d.code, d.message))
}

/// [`resolve`] for a path the tool writes: the protected path (`.git`) is refused too. The
/// runner refuses it again after resolving symlinks.
fn resolve_write(ctx: &ToolContext, raw: &str) -> Result<String, ToolFailure> {
    paths::check_writable(raw, &ctx.session.allowed_paths)
        .map_err(|d| ToolFailure::new(d.code, d.message))
}

fn type_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::File => "file",
        EntryType::Dir => "dir",
        EntryType::Symlink => "symlink",
        EntryType::Other => "other",
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

fn entry_json(entry: &Entry) -> Value {
    json!({
        "path": entry.path,
        "type": type_name(entry.entry_type),
        "size_bytes": entry.size_bytes,
        "mode": mode_string(entry.entry_type, entry.mode),
        "modified_at": entry.modified_at,
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a whole file of at most `limit` bytes; a longer file is `execution_failed` with
/// `too_large` as the message.
async fn read_whole(
    ctx: &ToolContext,
    path: &str,
    limit: usize,
    too_large: &str,
) -> Result<Vec<u8>, ToolFailure> {
    let request = Request::ReadFile {
        path: path.to_owned(),
        max_bytes: limit as u64,
    };
    match call_runner(ctx, request).await? {
        Reply::File {
            truncated: true, ..
        } => Err(failed(too_large)),
        Reply::File { content, .. } => Ok(content.0),
        Reply::Error { code, message } => Err(runner_failure(code, message)),
        other => Err(unexpected(&other)),
    }
}

/// Replaces an existing file's content (no parents created: the file was just read).
async fn write_whole(ctx: &ToolContext, path: &str, content: Vec<u8>) -> Result<u64, ToolFailure> {
    let request = Request::WriteFile {
        path: path.to_owned(),
        content: Bytes(content),
        create_parents: false,
        create_new: false,
    };
    match call_runner(ctx, request).await? {
        Reply::Written { bytes_written, .. } => Ok(bytes_written),
        Reply::Error { code, message } => Err(runner_failure(code, message)),
        other => Err(unexpected(&other)),
    }
}

// ---------------------------------------------------------------------------------------------
// fs.list, fs.read_file, fs.stat
// ---------------------------------------------------------------------------------------------

async fn run_list(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let path = resolve(ctx, args.string("path")?.unwrap_or("."))?;
    let recursive = args.flag("recursive", false)?;
    let max_entries = args.count("max_entries", LIST_DEFAULT_ENTRIES, LIST_MAX_ENTRIES)?;
    let request = Request::List {
        path: path.clone(),
        recursive,
        max_entries,
    };
    let (entries, truncated) = match call_runner(ctx, request).await? {
        Reply::Entries { entries, truncated } => (entries, truncated),
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        other => return Err(unexpected(&other)),
    };
    let count = entries.len();
    let entries: Vec<Value> = entries.iter().map(entry_json).collect();
    Ok(success(
        json!({"entries": entries, "count": count, "truncated": truncated}),
        format!("listed {count} entries under {path}"),
    ))
}

/// Chooses the output encoding of file content: UTF-8 text when it is, base64 otherwise. When
/// the read stopped inside a multi-byte character, the partial character is dropped rather than
/// turning a whole text file into base64 (the content is cut anyway; `truncated` says so).
pub(super) fn encode_content(bytes: Vec<u8>, truncated: bool) -> (&'static str, String) {
    match utf8_text(bytes, truncated) {
        Ok(text) => ("utf8", text),
        Err(bytes) => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
    }
}

async fn run_read_file(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    /// The output, encoded straight from its parts (no `Value` tree for a whole file).
    #[derive(serde::Serialize)]
    struct Output<'a> {
        path: &'a str,
        encoding: &'static str,
        content: &'a JsonText,
        size_bytes: u64,
        truncated: bool,
    }
    let args = Args::new(args)?;
    let path = resolve(ctx, args.required("path")?)?;
    let max_bytes = args.count("max_bytes", READ_DEFAULT_BYTES, READ_MAX_BYTES)?;
    let request = Request::ReadText {
        path: path.clone(),
        max_bytes,
    };
    let (returned, encoding, content, size_bytes, truncated) =
        match call_runner(ctx, request).await? {
            // The text stays the JSON string the runner sent.
            Reply::Text {
                text,
                returned_bytes,
                size_bytes,
                truncated,
            } => (returned_bytes, "utf8", text, size_bytes, truncated),
            Reply::File {
                content,
                size_bytes,
                truncated,
            } => {
                let returned = content.0.len() as u64;
                let (encoding, content) = encode_content(content.0, truncated);
                (
                    returned,
                    encoding,
                    JsonText::Text(content),
                    size_bytes,
                    truncated,
                )
            }
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            other => return Err(unexpected(&other)),
        };
    let output = RawJson::encode(&Output {
        path: &path,
        encoding,
        content: &content,
        size_bytes,
        truncated,
    })
    .map_err(|e| ToolFailure::new(ErrorCode::Internal, format!("encoding the output: {e}")))?;
    Ok(success_json(
        output,
        format!("read {returned} of {size_bytes} bytes from {path}"),
    ))
}

async fn run_stat(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let path = resolve(ctx, args.required("path")?)?;
    let entry = match call_runner(ctx, Request::Stat { path: path.clone() }).await? {
        Reply::Stat { entry } => entry,
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        other => return Err(unexpected(&other)),
    };
    Ok(match entry {
        None => success(
            json!({"path": path, "exists": false}),
            format!("{path} does not exist"),
        ),
        Some(entry) => {
            let kind = type_name(entry.entry_type);
            success(
                json!({
                    "path": path,
                    "exists": true,
                    "type": kind,
                    "size_bytes": entry.size_bytes,
                    "mode": mode_string(entry.entry_type, entry.mode),
                    "modified_at": entry.modified_at,
                }),
                format!("{path} is a {kind} of {} bytes", entry.size_bytes),
            )
        }
    })
}

// ---------------------------------------------------------------------------------------------
// fs.write_file, fs.mkdir, fs.move, fs.copy, fs.delete
// ---------------------------------------------------------------------------------------------

/// Decodes `fs.write_file` content. Base64 may be wrapped over lines (ASCII whitespace is
/// ignored, as Go's decoder ignored newlines).
pub(super) fn decode_content(content: &str, encoding: &str) -> Result<Vec<u8>, ToolFailure> {
    let bytes = match encoding {
        "utf8" => content.as_bytes().to_vec(),
        "base64" => {
            let compact: Vec<u8> = content
                .bytes()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| invalid("invalid base64 content"))?
        }
        _ => return Err(invalid("encoding must be utf8 or base64")),
    };
    if bytes.len() > WRITE_MAX_BYTES {
        return Err(invalid("content exceeds 1MB limit"));
    }
    Ok(bytes)
}

async fn run_write_file(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let path = resolve_write(ctx, args.required("path")?)?;
    let content = args.required_text("content")?;
    let encoding = args.string("encoding")?.unwrap_or("utf8");
    let create_parents = args.flag("create_parents", true)?;
    let bytes = decode_content(content, encoding)?;
    let sha256 = sha256_hex(&bytes);
    let request = Request::WriteFile {
        path: path.clone(),
        content: Bytes(bytes),
        create_parents,
        create_new: false,
    };
    let bytes_written = match call_runner(ctx, request).await? {
        Reply::Written { bytes_written, .. } => bytes_written,
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        other => return Err(unexpected(&other)),
    };
    Ok(success(
        json!({"path": path, "bytes_written": bytes_written, "sha256": sha256}),
        format!("wrote {bytes_written} bytes to {path}"),
    ))
}

/// Parses an octal permission string: `755`, `0755` or `0o755`, at most `0777`.
pub(super) fn parse_mode(raw: &str) -> Result<u32, ToolFailure> {
    let digits = raw
        .strip_prefix("0o")
        .or_else(|| raw.strip_prefix("0O"))
        .unwrap_or(raw);
    let bad = || {
        invalid(format!(
            "mode must be octal permission bits such as \"0755\", got {raw:?}"
        ))
    };
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(bad());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    if mode > 0o777 {
        return Err(invalid(format!(
            "mode must be at most 0777 (no setuid, setgid or sticky bits), got {raw:?}"
        )));
    }
    Ok(mode)
}

async fn run_mkdir(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let path = resolve_write(ctx, args.required("path")?)?;
    let create_parents = args.flag("create_parents", true)?;
    let exist_ok = args.flag("exist_ok", true)?;
    let mode = parse_mode(args.string("mode")?.unwrap_or("0755"))?;
    let request = Request::Mkdir {
        path: path.clone(),
        create_parents,
        mode,
        exist_ok,
    };
    let created = match call_runner(ctx, request).await? {
        Reply::Mkdir { created } => created,
        Reply::Error {
            code: RunnerErrorCode::AlreadyExists,
            ..
        } => {
            // The original told these apart; one more round trip on the error path says which.
            let is_dir = matches!(
                call_runner(ctx, Request::Stat { path: path.clone() }).await?,
                Reply::Stat {
                    entry: Some(Entry {
                        entry_type: EntryType::Dir,
                        ..
                    })
                }
            );
            return Err(failed(if is_dir {
                format!("{path}: directory already exists")
            } else {
                format!("{path}: path exists and is not a directory")
            }));
        }
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        other => return Err(unexpected(&other)),
    };
    let mode = format!("{mode:04o}");
    let summary = if created {
        format!("created directory {path} with mode {mode}")
    } else {
        format!("directory {path} already exists")
    };
    Ok(success(
        json!({"path": path, "created": created, "mode": mode}),
        summary,
    ))
}

/// An existing destination is `execution_failed` with the original's message; anything else
/// maps as usual.
fn destination_failure(code: RunnerErrorCode, message: String, destination: &str) -> ToolFailure {
    if code == RunnerErrorCode::AlreadyExists {
        failed(format!("{destination}: destination already exists"))
    } else {
        runner_failure(code, message)
    }
}

async fn run_move(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    // Moving something out of .git changes .git as much as moving into it.
    let from = resolve_write(ctx, args.required("source_path")?)?;
    let to = resolve_write(ctx, args.required("destination_path")?)?;
    let request = Request::Move {
        from: from.clone(),
        to: to.clone(),
        overwrite: args.flag("overwrite", false)?,
        create_parents: args.flag("create_parents", true)?,
    };
    let moved = match call_runner(ctx, request).await? {
        Reply::Moved { moved } => moved,
        Reply::Error { code, message } => return Err(destination_failure(code, message, &to)),
        other => return Err(unexpected(&other)),
    };
    let summary = if moved {
        format!("moved {from} to {to}")
    } else {
        format!("{from} and {to} are the same path; nothing moved")
    };
    Ok(success(
        json!({"source_path": from, "destination_path": to, "moved": moved}),
        summary,
    ))
}

async fn run_copy(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let from = resolve(ctx, args.required("source_path")?)?;
    // Copying out of .git is a read; only the destination is written.
    let to = resolve_write(ctx, args.required("destination_path")?)?;
    if from == to {
        return Err(invalid("source and destination must differ"));
    }
    let request = Request::Copy {
        from: from.clone(),
        to: to.clone(),
        recursive: args.flag("recursive", false)?,
        overwrite: args.flag("overwrite", false)?,
        create_parents: args.flag("create_parents", true)?,
    };
    let kind = match call_runner(ctx, request).await? {
        Reply::Copied { entry_type } => type_name(entry_type),
        Reply::Error { code, message } => return Err(destination_failure(code, message, &to)),
        other => return Err(unexpected(&other)),
    };
    Ok(success(
        json!({"source_path": from, "destination_path": to, "type": kind}),
        format!("copied {kind} {from} to {to}"),
    ))
}

async fn run_delete(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let path = resolve_write(ctx, args.required("path")?)?;
    let recursive = args.flag("recursive", false)?;
    let force = args.flag("force", false)?;
    if path == "." {
        return Err(ToolFailure::new(
            ErrorCode::PolicyDenied,
            "refusing to delete workspace root",
        ));
    }
    // Look first: a directory needs recursive=true even when empty (the runner alone would
    // remove an empty one), and a missing path is answered without a second request.
    let entry = match call_runner(ctx, Request::Stat { path: path.clone() }).await? {
        Reply::Stat { entry } => entry,
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        other => return Err(unexpected(&other)),
    };
    match entry {
        None if force => {
            return Ok(success(
                json!({"path": path, "deleted": false, "existed": false}),
                format!("{path} does not exist; nothing deleted"),
            ));
        }
        None => {
            return Err(ToolFailure::new(
                ErrorCode::NotFound,
                format!("{path}: not found"),
            ));
        }
        Some(Entry {
            entry_type: EntryType::Dir,
            ..
        }) if !recursive => {
            return Err(invalid(format!(
                "{path}: is a directory; set recursive=true to delete it"
            )));
        }
        Some(_) => {}
    }
    let request = Request::Remove {
        path: path.clone(),
        recursive,
        force,
    };
    let (deleted, existed) = match call_runner(ctx, request).await? {
        Reply::Removed { deleted, existed } => (deleted, existed),
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        other => return Err(unexpected(&other)),
    };
    let summary = if deleted {
        format!("deleted {path}")
    } else {
        format!("{path} was already gone")
    };
    Ok(success(
        json!({"path": path, "deleted": deleted, "existed": existed}),
        summary,
    ))
}

// ---------------------------------------------------------------------------------------------
// fs.patch
// ---------------------------------------------------------------------------------------------

/// Output of `git apply` kept in the reply, per stream.
const PATCH_OUTPUT_BYTES: u64 = 256 * 1024;

/// Why a diff was refused before running git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DiffRefusal {
    /// Not a diff git could apply safely (no paths, a header without a directory prefix, a
    /// path naming the workspace root). `invalid_argument`.
    Invalid(String),
    /// A path that is absolute or climbs out of the workspace. `policy_denied`.
    Denied(String),
}

impl DiffRefusal {
    fn into_failure(self) -> ToolFailure {
        match self {
            DiffRefusal::Invalid(m) => invalid(m),
            DiffRefusal::Denied(m) => ToolFailure::new(ErrorCode::PolicyDenied, m),
        }
    }
}

/// Undoes git's C-style quoting of a path (`"a\tb\303\251"`): git quotes names with control
/// characters, quotes, backslashes or non-ASCII bytes.
fn unquote_c(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let escaped = match bytes.next()? {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'v' => 0x0b,
            b'"' => b'"',
            b'\\' => b'\\',
            d @ b'0'..=b'3' => {
                let mut value = u32::from(d - b'0');
                for _ in 0..2 {
                    let next = bytes.next()?;
                    if !(b'0'..=b'7').contains(&next) {
                        return None;
                    }
                    value = value * 8 + u32::from(next - b'0');
                }
                u8::try_from(value).ok()?
            }
            _ => return None,
        };
        out.push(escaped);
    }
    String::from_utf8(out).ok()
}

/// Index of the quote closing a C-quoted string that starts at `quoted[0]`.
fn closing_quote(quoted: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in quoted.char_indices().skip(1) {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// The name in a `--- `/`+++ ` header, without a trailing timestamp (`diff -u` separates it
/// with a tab, and git adds a tab after names containing spaces) and unquoted.
fn header_name(rest: &str) -> Option<String> {
    if rest.starts_with('"') {
        return unquote_c(&rest[..=closing_quote(rest)?]);
    }
    let name = rest.split('\t').next().unwrap_or(rest);
    Some(name.trim_end_matches('\r').to_owned())
}

/// Checks one name as git will use it. `prefixed` names (headers) lose their first component
/// the way `git apply -p1` strips it; names from `rename`/`copy` lines are used as they are.
/// A `..` component anywhere in the raw name is refused, even where it would cancel out
/// lexically: a diff has no business spelling paths that way, and the prefix git strips is
/// part of what it reads.
fn diff_path(raw: &str, prefixed: bool) -> Result<Option<String>, DiffRefusal> {
    if raw == "/dev/null" {
        return Ok(None);
    }
    if raw.starts_with('/') {
        return Err(DiffRefusal::Denied(
            "patch paths must be relative: absolute paths are not allowed".to_owned(),
        ));
    }
    let name = if prefixed {
        match raw.split_once('/') {
            Some((_, rest)) => rest,
            None => {
                return Err(DiffRefusal::Invalid(format!(
                    "invalid unified diff: header path {raw:?} has no a/ or b/ prefix"
                )));
            }
        }
    } else {
        raw
    };
    if raw.split('/').any(|part| part == "..") {
        return Err(DiffRefusal::Denied(
            "patch paths must stay inside the workspace: path escapes workspace".to_owned(),
        ));
    }
    let normalized = paths::normalize(name).map_err(|d| DiffRefusal::Denied(d.to_string()))?;
    if normalized == "." {
        return Err(DiffRefusal::Invalid(
            "invalid unified diff: a path names the workspace root".to_owned(),
        ));
    }
    Ok(Some(normalized))
}

/// Splits the `a/X b/Y` of a `diff --git` header. Unquoted names with spaces are ambiguous; git
/// resolves them by requiring both names to be equal after their prefix, and so does this
/// (`None` when the header cannot be split).
fn git_header_names(rest: &str) -> Option<(String, String)> {
    let rest = rest.trim_end_matches('\r');
    if rest.starts_with('"') {
        let end = closing_quote(rest)?;
        let a = unquote_c(&rest[..=end])?;
        let b = header_name(rest[end + 1..].trim_start())?;
        return Some((a, b));
    }
    if let Some(pos) = rest.find(" \"") {
        let b = header_name(&rest[pos + 1..])?;
        return Some((rest[..pos].to_owned(), b));
    }
    // Unquoted: the split point is the space where both halves name the same file after their
    // prefixes, e.g. `a/x y b/x y`.
    let strip = |s: &str| s.split_once('/').map(|(_, r)| r.to_owned());
    for (i, _) in rest.match_indices(' ') {
        let (a, b) = (&rest[..i], &rest[i + 1..]);
        if strip(a).is_some() && strip(a) == strip(b) {
            return Some((a.to_owned(), b.to_owned()));
        }
    }
    // Different names (a rename): only unambiguous with a single space.
    match rest.split_once(' ') {
        Some((a, b)) if !b.contains(' ') => Some((a.to_owned(), b.to_owned())),
        _ => None,
    }
}

/// Every path a unified diff touches, in order of first appearance, normalised.
///
/// Headers (`--- `, `+++ `, `diff --git`, `rename from/to`, `copy from/to`) are only read
/// outside hunks: hunk bodies are skipped by their line counts, so a removed line that reads
/// `-- x` (shown as `--- x`) or an added `++ x` is never mistaken for a header. Both old and
/// new names count, so deleting or renaming a file outside `allowed_paths` is caught too.
pub(super) fn diff_paths(diff: &str) -> Result<Vec<String>, DiffRefusal> {
    let mut found: Vec<String> = Vec::new();
    let mut push = |path: Option<String>| {
        if let Some(p) = path
            && !found.contains(&p)
        {
            found.push(p);
        }
    };
    let (mut old_left, mut new_left) = (0u64, 0u64);
    for line in diff.split('\n') {
        if old_left > 0 || new_left > 0 {
            match line.as_bytes().first() {
                Some(b'-') => old_left = old_left.saturating_sub(1),
                Some(b'+') => new_left = new_left.saturating_sub(1),
                Some(b'\\') => {}
                // A context line; some tools drop the single space of an empty context line.
                Some(b' ') | None => {
                    old_left = old_left.saturating_sub(1);
                    new_left = new_left.saturating_sub(1);
                }
                Some(b'\r') if line.len() == 1 => {
                    old_left = old_left.saturating_sub(1);
                    new_left = new_left.saturating_sub(1);
                }
                Some(_) => {
                    return Err(DiffRefusal::Invalid(
                        "invalid unified diff: a hunk is shorter than its header says".to_owned(),
                    ));
                }
            }
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("--- ")
            .or_else(|| line.strip_prefix("+++ "))
        {
            let name = header_name(rest).ok_or_else(|| {
                DiffRefusal::Invalid("invalid unified diff: malformed file header".to_owned())
            })?;
            push(diff_path(&name, true)?);
        } else if let Some(rest) = line.strip_prefix("diff --git ") {
            // git only falls back on these names when no other header names the file, and it
            // ignores an unquoted header it cannot split; so does this (the other headers are
            // checked). A quoted header that does not parse is refused: git might read it.
            match git_header_names(rest) {
                Some((a, b)) => {
                    push(diff_path(&a, true)?);
                    push(diff_path(&b, true)?);
                }
                None if rest.contains('"') => {
                    return Err(DiffRefusal::Invalid(
                        "invalid unified diff: malformed diff --git header".to_owned(),
                    ));
                }
                None => {}
            }
        } else if let Some(rest) = ["rename from ", "rename to ", "copy from ", "copy to "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
        {
            let name = header_name(rest).ok_or_else(|| {
                DiffRefusal::Invalid("invalid unified diff: malformed rename header".to_owned())
            })?;
            push(diff_path(&name, false)?);
        } else if let Some(rest) = line.strip_prefix("@@ -") {
            let (old, new) = hunk_counts(rest).ok_or_else(|| {
                DiffRefusal::Invalid("invalid unified diff: malformed hunk header".to_owned())
            })?;
            old_left = old;
            new_left = new;
        }
    }
    if found.is_empty() {
        return Err(DiffRefusal::Invalid(
            "invalid unified diff: no file paths found".to_owned(),
        ));
    }
    Ok(found)
}

/// The old and new line counts of a hunk header's remainder (`1,3 +1,4 @@ ...`); a range
/// without a count has one line.
fn hunk_counts(rest: &str) -> Option<(u64, u64)> {
    let (old, rest) = rest.split_once(" +")?;
    let (new, _) = rest.split_once(" @@")?;
    let count = |range: &str| -> Option<u64> {
        match range.split_once(',') {
            Some((start, n)) => {
                start.parse::<u64>().ok()?;
                n.parse().ok()
            }
            None => range.parse::<u64>().ok().map(|_| 1),
        }
    };
    Some((count(old)?, count(new)?))
}

async fn run_patch(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let diff = args.required("unified_diff")?;
    let strategy = args.string("strategy")?.unwrap_or("reject_on_conflict");
    let three_way = match strategy {
        "reject_on_conflict" => false,
        "apply" => true,
        other => {
            return Err(invalid(format!(
                "strategy must be reject_on_conflict or apply, got {other:?}"
            )));
        }
    };
    let changed_paths = diff_paths(diff).map_err(DiffRefusal::into_failure)?;
    if changed_paths
        .iter()
        .any(|p| !paths::is_allowed(p, &ctx.session.allowed_paths))
    {
        return Err(ToolFailure::new(
            ErrorCode::PolicyDenied,
            "patch touches paths outside allowed_paths",
        ));
    }
    // Old and new names alike: deleting or renaming a file out of .git changes it too.
    if changed_paths.iter().any(|p| paths::is_protected(p)) {
        return Err(ToolFailure::new(
            ErrorCode::PolicyDenied,
            "patch touches .git, a protected path: file tools never write there (the git \
             tools own it)",
        ));
    }

    // Without --3way, git apply needs no repository: it runs outside any (no repository
    // configuration is read at all, so nothing the repository names can run). A three-way
    // apply needs the repository's objects and index: it is inspected and its drivers
    // neutralised first (see `tools::git`).
    let command = if three_way {
        match git::open_repository(ctx).await? {
            Some(config) => {
                GitCommand::new("apply", Network::Denied, Repository::Workspace).neutralise(&config)
            }
            // git explains that --3way needs a repository.
            None => GitCommand::new("apply", Network::Denied, Repository::Outside),
        }
        .args(["--whitespace=nowarn", "--3way"])
    } else {
        GitCommand::new("apply", Network::Denied, Repository::Outside).arg("--whitespace=nowarn")
    };
    let git::Output {
        exit_code,
        stdout,
        stderr,
        timed_out,
        ..
    } = git::run(
        ctx,
        &command,
        Some(diff.as_bytes().to_vec()),
        PATCH_OUTPUT_BYTES,
    )
    .await?;
    let mut output = String::from_utf8_lossy(&stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&stderr));
    let logs = if output.trim().is_empty() {
        Vec::new()
    } else {
        vec![stdout_line(output.trim_end())]
    };
    let result = |applied: bool| {
        json!({
            "applied": applied,
            "strategy": strategy,
            "changed_paths": changed_paths,
            "output": output,
        })
    };
    if timed_out || exit_code != 0 {
        let (code, message) = if timed_out {
            (ErrorCode::Timeout, "git apply timed out".to_owned())
        } else {
            let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            (
                ErrorCode::ExecutionFailed,
                format!("git apply failed (exit code {exit_code}): {first}"),
            )
        };
        return Err(ToolFailure {
            code,
            message,
            output: Some(result(false).into()),
            logs,
            artifacts: Vec::new(),
            exit_code,
        });
    }
    let mut logs = logs;
    logs.push(stdout_line(format!(
        "applied patch to {} paths",
        changed_paths.len()
    )));
    Ok(ToolSuccess {
        output: result(true).into(),
        logs,
        artifacts: Vec::new(),
        exit_code,
    })
}

// ---------------------------------------------------------------------------------------------
// fs.search, fs.glob
// ---------------------------------------------------------------------------------------------

async fn run_search(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let pattern = args.required("pattern")?;
    let path = resolve(ctx, args.string("path")?.unwrap_or("."))?;
    let max_results = args.count("max_results", SEARCH_DEFAULT_RESULTS, SEARCH_MAX_RESULTS)?;
    let request = Request::Search {
        path: path.clone(),
        pattern: pattern.to_owned(),
        max_results,
        include_glob: None,
    };
    let (matches, truncated) = match call_runner(ctx, request).await? {
        Reply::Matches { matches, truncated } => (matches, truncated),
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        other => return Err(unexpected(&other)),
    };
    let count = matches.len();
    let matches: Vec<Value> = matches
        .into_iter()
        .map(|m| json!({"path": m.path, "line": m.line, "snippet": m.snippet}))
        .collect();
    Ok(success(
        json!({"matches": matches, "count": count, "truncated": truncated}),
        format!("found {count} matches under {path}"),
    ))
}

/// The glob the runner matches against workspace-relative paths: `pattern` under `dir`, with
/// the directory's own glob metacharacters escaped so a directory named `[x]` is literal.
pub(super) fn glob_under(dir: &str, pattern: &str) -> Result<String, ToolFailure> {
    if pattern.starts_with('/') {
        return Err(invalid("pattern must be relative to path"));
    }
    let pattern = pattern.trim_start_matches("./");
    if dir == "." {
        return Ok(pattern.to_owned());
    }
    let mut out = String::with_capacity(dir.len() + pattern.len() + 1);
    for c in dir.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('/');
    out.push_str(pattern);
    Ok(out)
}

async fn run_glob(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let pattern = args.required("pattern")?;
    let path = resolve(ctx, args.string("path")?.unwrap_or("."))?;
    let max_results = args.count("max_results", SEARCH_DEFAULT_RESULTS, SEARCH_MAX_RESULTS)?;
    let request = Request::Glob {
        path: path.clone(),
        pattern: glob_under(&path, pattern)?,
        max_results,
    };
    let (entries, truncated) = match call_runner(ctx, request).await? {
        Reply::Entries { entries, truncated } => (entries, truncated),
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        other => return Err(unexpected(&other)),
    };
    let paths: Vec<String> = entries.into_iter().map(|e| e.path).collect();
    let count = paths.len();
    Ok(success(
        json!({"paths": paths, "count": count, "truncated": truncated}),
        format!("{count} paths under {path} match {pattern}"),
    ))
}

// ---------------------------------------------------------------------------------------------
// fs.edit, fs.insert, fs.read_lines
// ---------------------------------------------------------------------------------------------

/// The outcome of an exact search and replace.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Edited {
    pub(super) content: String,
    pub(super) replacements: usize,
}

/// Replaces `old` by `new` in `text`: exactly one occurrence, or all with `replace_all`.
pub(super) fn replace_exact(
    text: &str,
    old: &str,
    new: &str,
    replace_all: bool,
) -> Result<Edited, ToolFailure> {
    if old.is_empty() {
        return Err(invalid("old_string must not be empty"));
    }
    let matches = text.matches(old).count();
    match matches {
        0 => Err(failed("old_string not found")),
        1 => Ok(Edited {
            content: text.replacen(old, new, 1),
            replacements: 1,
        }),
        n if replace_all => Ok(Edited {
            content: text.replace(old, new),
            replacements: n,
        }),
        n => Err(failed(format!(
            "old_string is ambiguous: {n} matches; add context or set replace_all"
        ))),
    }
}

const TOO_LARGE_TO_EDIT: &str = "file too large to edit (over 1 MiB)";

async fn run_edit(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let path = resolve_write(ctx, args.required("path")?)?;
    let old = args.required("old_string")?;
    let new = args.required_text("new_string")?;
    let replace_all = args.flag("replace_all", false)?;
    let bytes = read_whole(ctx, &path, WRITE_MAX_BYTES, TOO_LARGE_TO_EDIT).await?;
    let text = String::from_utf8(bytes)
        .map_err(|_| failed(format!("{path}: is not UTF-8 text; use fs.write_file")))?;
    let edited = replace_exact(&text, old, new, replace_all)?;
    if edited.content.len() > WRITE_MAX_BYTES {
        return Err(failed("the edited file would exceed the 1MB limit"));
    }
    let sha256 = sha256_hex(edited.content.as_bytes());
    let bytes_written = write_whole(ctx, &path, edited.content.into_bytes()).await?;
    let n = edited.replacements;
    Ok(success(
        json!({
            "path": path,
            "replacements": n,
            "bytes_written": bytes_written,
            "sha256": sha256,
        }),
        format!("replaced {n} occurrence(s) in {path}"),
    ))
}

/// Number of lines: newline-terminated lines plus a final unterminated one.
fn line_count(bytes: &[u8]) -> usize {
    let newlines = bytes.iter().filter(|b| **b == b'\n').count();
    newlines + usize::from(bytes.last().is_some_and(|b| *b != b'\n'))
}

/// Inserts `content` before 1-based `line` of `file` (0 or line count + 1 appends). The
/// inserted text always ends with a newline, and appending to a file whose last line has none
/// adds one first, so no two lines are ever joined. Returns the new bytes and the number of
/// inserted lines.
pub(super) fn insert_lines(
    file: &[u8],
    line: u64,
    content: &str,
) -> Result<(Vec<u8>, usize), ToolFailure> {
    let lines = line_count(file);
    let mut insert = content.as_bytes().to_vec();
    if !insert.is_empty() && insert.last() != Some(&b'\n') {
        insert.push(b'\n');
    }
    let inserted = line_count(&insert);
    let append = line == 0 || line == lines as u64 + 1;
    if !append && line > lines as u64 {
        return Err(invalid(format!(
            "line {line} is out of range: the file has {lines} lines (use 0 or {} to append)",
            lines + 1
        )));
    }
    let mut out = Vec::with_capacity(file.len() + insert.len() + 1);
    if append {
        out.extend_from_slice(file);
        if file.last().is_some_and(|b| *b != b'\n') && !insert.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(&insert);
    } else {
        // Byte offset of the start of `line`: just after the (line-1)th newline.
        let offset = if line == 1 {
            0
        } else {
            file.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(usize::try_from(line - 2).unwrap_or(usize::MAX))
                .map_or(file.len(), |(i, _)| i + 1)
        };
        out.extend_from_slice(&file[..offset]);
        out.extend_from_slice(&insert);
        out.extend_from_slice(&file[offset..]);
    }
    Ok((out, inserted))
}

async fn run_insert(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let path = resolve_write(ctx, args.required("path")?)?;
    let line = args
        .integer("line")?
        .ok_or_else(|| invalid("args: missing required property \"line\""))?;
    let content = args.required_text("content")?;
    if content.len() > WRITE_MAX_BYTES {
        return Err(invalid("content exceeds 1MB limit"));
    }
    let file = read_whole(ctx, &path, WRITE_MAX_BYTES, TOO_LARGE_TO_EDIT).await?;
    let (new_content, inserted_lines) = insert_lines(&file, line, content)?;
    if new_content.len() > WRITE_MAX_BYTES {
        return Err(failed("the file would exceed the 1MB limit"));
    }
    let bytes_written = write_whole(ctx, &path, new_content).await?;
    Ok(success(
        json!({
            "path": path,
            "inserted_lines": inserted_lines,
            "bytes_written": bytes_written,
        }),
        format!("inserted {inserted_lines} line(s) into {path}"),
    ))
}

/// A numbered range of lines.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LineRange {
    pub(super) end_line: u64,
    pub(super) total_lines: u64,
    pub(super) lines: Vec<(u64, String)>,
    pub(super) truncated: bool,
}

/// Cuts lines `start..=end` (at most `max` of them) out of `bytes`. `window_cut` says `bytes`
/// is only the start of the file: its last, unterminated line is then incomplete and not
/// returned, `total_lines` counts what was seen, and reaching the cut sets `truncated`.
pub(super) fn select_lines(
    bytes: &[u8],
    window_cut: bool,
    start: u64,
    end: Option<u64>,
    max: u64,
) -> LineRange {
    let mut pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // `split` yields a trailing empty piece after a final newline (or for an empty file), and
    // a cut window's last piece is a partial line: neither is a line to return.
    if window_cut || pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    let total = pieces.len() as u64;
    let wanted_end = end.unwrap_or(u64::MAX).min(total);
    let last = wanted_end.min(start.saturating_add(max).saturating_sub(1));
    let lines: Vec<(u64, String)> = (start..=last)
        .filter_map(|n| {
            let piece = pieces.get(usize::try_from(n - 1).ok()?)?;
            let piece = piece.strip_suffix(b"\r").unwrap_or(piece);
            Some((n, String::from_utf8_lossy(piece).into_owned()))
        })
        .collect();
    let end_line = if lines.is_empty() { start - 1 } else { last };
    // Cut short by max_lines, or the caller wanted lines the window did not reach.
    let truncated = last < wanted_end || (window_cut && end.is_none_or(|e| e > total));
    LineRange {
        end_line,
        total_lines: total,
        lines,
        truncated,
    }
}

async fn run_read_lines(ctx: &ToolContext, args: &Value) -> Result<ToolSuccess, ToolFailure> {
    let args = Args::new(args)?;
    let path = resolve(ctx, args.required("path")?)?;
    let start = args.integer("start_line")?.unwrap_or(1).max(1);
    let end = args.integer("end_line")?;
    if end.is_some_and(|e| e < start) {
        return Err(invalid(
            "end_line must be greater than or equal to start_line",
        ));
    }
    let max = args.count("max_lines", READ_LINES_DEFAULT, READ_LINES_MAX)?;
    let request = Request::ReadFile {
        path: path.clone(),
        max_bytes: READ_LINES_WINDOW_BYTES,
    };
    let (content, cut) = match call_runner(ctx, request).await? {
        Reply::File {
            content, truncated, ..
        } => (content.0, truncated),
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        other => return Err(unexpected(&other)),
    };
    let range = select_lines(&content, cut, start, end, max);
    let lines: Vec<Value> = range
        .lines
        .iter()
        .map(|(number, text)| json!({"number": number, "text": text}))
        .collect();
    Ok(success(
        json!({
            "path": path,
            "start_line": start,
            "end_line": range.end_line,
            "total_lines": range.total_lines,
            "lines": lines,
            "truncated": range.truncated,
        }),
        format!(
            "read lines {start}-{} of {} from {path}",
            range.end_line, range.total_lines
        ),
    ))
}
