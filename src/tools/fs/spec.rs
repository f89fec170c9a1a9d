//! Metadata of the 14 `fs.*` tools: the ten of the original catalog (scope, risk, approval, side
//! effects, idempotency, timeout, arguments and path fields as the original declared them) and
//! the four of its later version (`fs.edit`, `fs.insert`, `fs.glob`, `fs.read_lines`).
//!
//! Input schemas are closed (`additionalProperties: false`) and typed, so arguments are refused
//! before policy when they are malformed. Numeric caps the original applied silently (list 1000
//! entries, read 1 MiB, search 2000 matches) stay silent clamps in the handlers rather than
//! schema maxima, so a caller relying on the clamp is not broken; lower bounds are schema
//! minima. The limits below are shared with the handlers.

use serde_json::{Value, json};

use crate::tools::{
    Constraints, Idempotency, Observability, PathField, PolicyMetadata, RiskLevel, Scope,
    SideEffects, ToolSpec,
};

/// `fs.list`: entries returned when `max_entries` is not given.
pub const LIST_DEFAULT_ENTRIES: u64 = 200;
/// `fs.list`: larger `max_entries` are clamped to this.
pub const LIST_MAX_ENTRIES: u64 = 1000;
/// `fs.read_file`: bytes returned when `max_bytes` is not given.
pub const READ_DEFAULT_BYTES: u64 = 64 * 1024;
/// `fs.read_file`: larger `max_bytes` are clamped to this.
pub const READ_MAX_BYTES: u64 = 1024 * 1024;
/// `fs.write_file`, `fs.edit`, `fs.insert`: largest content written (decoded).
pub const WRITE_MAX_BYTES: usize = 1024 * 1024;
/// `fs.search` and `fs.glob`: results returned when `max_results` is not given.
pub const SEARCH_DEFAULT_RESULTS: u64 = 200;
/// `fs.search` and `fs.glob`: larger `max_results` are clamped to this.
pub const SEARCH_MAX_RESULTS: u64 = 2000;
/// `fs.read_lines`: lines returned when `max_lines` is not given.
pub const READ_LINES_DEFAULT: u64 = 200;
/// `fs.read_lines`: larger `max_lines` are clamped to this.
pub const READ_LINES_MAX: u64 = 2000;
/// `fs.read_lines`: how much of the file is read; lines past this window are not seen.
pub const READ_LINES_WINDOW_BYTES: u64 = 4 * 1024 * 1024;
/// Longest path argument, in characters (the policy also bounds it to 4096 bytes).
const PATH_MAX_CHARS: u64 = 4096;
/// `fs.patch`: largest diff accepted.
pub const PATCH_MAX_CHARS: u64 = 1024 * 1024;

const TRACE_NAME: &str = "workspace.tools";

/// A tool of the family with the defaults most of them share (workspace scope, low risk, no
/// approval, no side effects, guaranteed idempotency); each tool overrides what differs.
fn base(
    name: &'static str,
    description: &'static str,
    timeout_seconds: u64,
    input_schema: Value,
    output_schema: Value,
) -> ToolSpec {
    ToolSpec {
        name,
        description,
        input_schema,
        output_schema,
        scope: Scope::Workspace,
        side_effects: SideEffects::None,
        risk_level: RiskLevel::Low,
        requires_approval: false,
        idempotency: Idempotency::Guaranteed,
        // No fs tool runs repository code: fs.patch runs git hardened (`tools::git`).
        runs_repository_code: false,
        constraints: Constraints {
            timeout_seconds,
            // Informational, as in the original: reads may be retried freely, writes not
            // automatically.
            max_retries: 2,
            output_limit_kb: None,
        },
        preconditions: Vec::new(),
        postconditions: Vec::new(),
        cost_hint: "low",
        policy: PolicyMetadata::default(),
        observability: Observability {
            trace_name: TRACE_NAME,
            span_name: name,
        },
        examples: Vec::new(),
    }
}

fn writes(mut spec: ToolSpec) -> ToolSpec {
    spec.side_effects = SideEffects::Reversible;
    spec.risk_level = RiskLevel::Medium;
    spec.idempotency = Idempotency::BestEffort;
    spec.constraints.max_retries = 0;
    spec
}

/// Path fields the tool only reads.
fn path_fields(fields: &[&'static str]) -> PolicyMetadata {
    path_fields_writing(fields, &[])
}

/// Path fields, those in `written` being written (so never protected: see `policy::paths`).
fn path_fields_writing(fields: &[&'static str], written: &[&str]) -> PolicyMetadata {
    PolicyMetadata {
        path_fields: fields
            .iter()
            .map(|field| PathField {
                field,
                multi: false,
                workspace_relative: true,
                writes: written.contains(field),
            })
            .collect(),
        arg_fields: Vec::new(),
    }
}

/// One path field, written.
fn written_path(field: &'static str) -> PolicyMetadata {
    path_fields_writing(&[field], &[field])
}

fn path(description: &str) -> Value {
    json!({"type": "string", "maxLength": PATH_MAX_CHARS, "description": description})
}

fn required_path(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": PATH_MAX_CHARS, "description": description})
}

fn flag(default: bool, description: &str) -> Value {
    json!({"type": "boolean", "default": default, "description": description})
}

fn count(default: u64, description: &str) -> Value {
    json!({"type": "integer", "minimum": 1, "default": default, "description": description})
}

fn closed(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

fn output(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn entry_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "type": {"type": "string", "enum": ["file", "dir", "symlink", "other"]},
            "size_bytes": {"type": "integer"},
            "mode": {"type": "string"},
            "modified_at": {"type": "string"}
        },
        "required": ["path", "type", "size_bytes", "mode", "modified_at"]
    })
}

/// `fs.list`.
pub fn list() -> ToolSpec {
    ToolSpec {
        policy: path_fields(&["path"]),
        postconditions: vec!["entries are workspace-relative and sorted by path"],
        examples: vec![json!({"path": "src", "recursive": true, "max_entries": 100})],
        ..base(
            "fs.list",
            "List the entries of a workspace directory (path, type, size, mode, modification \
             time), flat or recursive, sorted by path. Symlinks are listed, never followed.",
            15,
            closed(
                json!({
                    "path": path("Directory to list, relative to the workspace (default \".\")."),
                    "recursive": flag(false, "Descend into subdirectories."),
                    "max_entries": count(LIST_DEFAULT_ENTRIES, "Stop after this many entries (capped at 1000)."),
                }),
                &[],
            ),
            output(
                json!({
                    "entries": {"type": "array", "items": entry_schema()},
                    "count": {"type": "integer"},
                    "truncated": {"type": "boolean"}
                }),
                &["entries", "count", "truncated"],
            ),
        )
    }
}

/// `fs.read_file`.
pub fn read_file() -> ToolSpec {
    ToolSpec {
        policy: path_fields(&["path"]),
        preconditions: vec!["path is a regular file"],
        examples: vec![json!({"path": "README.md", "max_bytes": 4096})],
        ..base(
            "fs.read_file",
            "Read a file: UTF-8 text as is, anything else base64-encoded. At most max_bytes are \
             returned (default 65536, capped at 1 MiB); truncated tells whether the file is \
             longer and size_bytes is its full size.",
            20,
            closed(
                json!({
                    "path": required_path("File to read, relative to the workspace."),
                    "max_bytes": count(READ_DEFAULT_BYTES, "Return at most this many bytes (capped at 1048576)."),
                }),
                &["path"],
            ),
            output(
                json!({
                    "path": {"type": "string"},
                    "encoding": {"type": "string", "enum": ["utf8", "base64"]},
                    "content": {"type": "string"},
                    "size_bytes": {"type": "integer"},
                    "truncated": {"type": "boolean"}
                }),
                &["path", "encoding", "content", "size_bytes", "truncated"],
            ),
        )
    }
}

/// `fs.write_file`.
pub fn write_file() -> ToolSpec {
    ToolSpec {
        requires_approval: true,
        policy: written_path("path"),
        postconditions: vec!["the file holds exactly the given content"],
        examples: vec![json!({"path": "notes/todo.md", "content": "- ship it\n"})],
        ..writes(base(
            "fs.write_file",
            "Create or replace a file with utf8 or base64 content (at most 1 MiB decoded). \
             Missing parent directories are created unless create_parents is false. Returns \
             the bytes written and their sha256.",
            20,
            closed(
                json!({
                    "path": required_path("File to write, relative to the workspace."),
                    "content": {"type": "string", "description": "The new content, encoded as `encoding` says."},
                    "encoding": {"type": "string", "enum": ["utf8", "base64"], "default": "utf8", "description": "How content is encoded."},
                    "create_parents": flag(true, "Create missing parent directories."),
                }),
                &["path", "content"],
            ),
            output(
                json!({
                    "path": {"type": "string"},
                    "bytes_written": {"type": "integer"},
                    "sha256": {"type": "string"}
                }),
                &["path", "bytes_written", "sha256"],
            ),
        ))
    }
}

/// `fs.mkdir`.
pub fn mkdir() -> ToolSpec {
    ToolSpec {
        policy: written_path("path"),
        postconditions: vec!["path is a directory"],
        examples: vec![json!({"path": "build/out", "mode": "0755"})],
        ..writes(base(
            "fs.mkdir",
            "Create a directory (and its missing parents unless create_parents is false) with \
             an octal mode (\"0755\", \"755\" or \"0o755\"; default 0755). An existing \
             directory is a success with created=false unless exist_ok is false.",
            20,
            closed(
                json!({
                    "path": required_path("Directory to create, relative to the workspace."),
                    "create_parents": flag(true, "Create missing parent directories."),
                    "mode": {"type": "string", "minLength": 1, "maxLength": 8, "default": "0755", "description": "Octal permission bits, at most 0777."},
                    "exist_ok": flag(true, "Succeed when the directory already exists."),
                }),
                &["path"],
            ),
            output(
                json!({
                    "path": {"type": "string"},
                    "created": {"type": "boolean"},
                    "mode": {"type": "string"}
                }),
                &["path", "created", "mode"],
            ),
        ))
    }
}

/// `fs.move`.
pub fn move_() -> ToolSpec {
    ToolSpec {
        policy: path_fields_writing(
            &["source_path", "destination_path"],
            &["source_path", "destination_path"],
        ),
        preconditions: vec!["source_path exists"],
        postconditions: vec!["destination_path holds what source_path held"],
        examples: vec![json!({"source_path": "a.txt", "destination_path": "archive/a.txt"})],
        ..writes(base(
            "fs.move",
            "Rename or move a file or directory inside the workspace. An existing destination \
             is refused unless overwrite is true; the same source and destination is a success \
             with moved=false.",
            20,
            closed(
                json!({
                    "source_path": required_path("What to move."),
                    "destination_path": required_path("Where to move it."),
                    "overwrite": flag(false, "Replace an existing destination."),
                    "create_parents": flag(true, "Create missing parents of the destination."),
                }),
                &["source_path", "destination_path"],
            ),
            output(
                json!({
                    "source_path": {"type": "string"},
                    "destination_path": {"type": "string"},
                    "moved": {"type": "boolean"}
                }),
                &["source_path", "destination_path", "moved"],
            ),
        ))
    }
}

/// `fs.copy`.
pub fn copy() -> ToolSpec {
    ToolSpec {
        // Copying out of .git is a read; copying into it is a write.
        policy: path_fields_writing(&["source_path", "destination_path"], &["destination_path"]),
        preconditions: vec!["source_path exists and contains no symlinks"],
        examples: vec![
            json!({"source_path": "templates", "destination_path": "site", "recursive": true}),
        ],
        ..writes(base(
            "fs.copy",
            "Copy a file, or a directory tree with recursive=true, inside the workspace. \
             Symlinks are refused; an existing destination is refused unless overwrite is true.",
            25,
            closed(
                json!({
                    "source_path": required_path("What to copy."),
                    "destination_path": required_path("Where to copy it."),
                    "recursive": flag(false, "Required to copy a directory."),
                    "overwrite": flag(false, "Replace an existing destination."),
                    "create_parents": flag(true, "Create missing parents of the destination."),
                }),
                &["source_path", "destination_path"],
            ),
            output(
                json!({
                    "source_path": {"type": "string"},
                    "destination_path": {"type": "string"},
                    "type": {"type": "string", "enum": ["file", "dir"]}
                }),
                &["source_path", "destination_path", "type"],
            ),
        ))
    }
}

/// `fs.delete`.
pub fn delete() -> ToolSpec {
    let mut spec = writes(base(
        "fs.delete",
        "Delete a file, a symlink (not its target) or, with recursive=true, a directory tree. \
         With force=true a missing path is a success. The workspace root cannot be deleted.",
        20,
        closed(
            json!({
                "path": required_path("What to delete, relative to the workspace."),
                "recursive": flag(false, "Required to delete a directory."),
                "force": flag(false, "Succeed when the path does not exist."),
            }),
            &["path"],
        ),
        output(
            json!({
                "path": {"type": "string"},
                "deleted": {"type": "boolean"},
                "existed": {"type": "boolean"}
            }),
            &["path", "deleted", "existed"],
        ),
    ));
    spec.risk_level = RiskLevel::High;
    spec.side_effects = SideEffects::Irreversible;
    spec.requires_approval = true;
    spec.cost_hint = "medium";
    spec.policy = written_path("path");
    spec.postconditions = vec!["path no longer exists"];
    spec.examples = vec![json!({"path": "build", "recursive": true, "force": true})];
    spec
}

/// `fs.stat`.
pub fn stat() -> ToolSpec {
    ToolSpec {
        policy: path_fields(&["path"]),
        examples: vec![json!({"path": "Cargo.toml"})],
        ..base(
            "fs.stat",
            "Describe a path without following a final symlink: type (file, dir, symlink, \
             other), size, mode and modification time. A missing path is a success with \
             exists=false.",
            15,
            closed(
                json!({"path": required_path("Path to describe, relative to the workspace.")}),
                &["path"],
            ),
            output(
                json!({
                    "path": {"type": "string"},
                    "exists": {"type": "boolean"},
                    "type": {"type": "string", "enum": ["file", "dir", "symlink", "other"]},
                    "size_bytes": {"type": "integer"},
                    "mode": {"type": "string"},
                    "modified_at": {"type": "string"}
                }),
                &["path", "exists"],
            ),
        )
    }
}

/// `fs.patch`. Like the original it declares no path fields: the paths live inside the diff,
/// and the handler checks every one of them against the policy path rules.
pub fn patch() -> ToolSpec {
    ToolSpec {
        requires_approval: true,
        cost_hint: "medium",
        preconditions: vec!["the diff applies to the current workspace content"],
        postconditions: vec!["every file named by the diff is patched, or none is"],
        examples: vec![json!({
            "unified_diff": "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n-hello\n+hello, world\n",
            "strategy": "reject_on_conflict"
        })],
        ..writes(base(
            "fs.patch",
            "Apply a unified diff to the workspace with `git apply` (works without a git \
             repository). strategy reject_on_conflict (default) applies all hunks or nothing; \
             apply uses a three-way merge (--3way, needs a repository). Every path the diff \
             touches must be inside the workspace and the session's allowed_paths.",
            45,
            closed(
                json!({
                    "unified_diff": {"type": "string", "minLength": 1, "maxLength": PATCH_MAX_CHARS, "description": "The diff, as produced by `git diff` or `diff -u` with a/ b/ prefixes."},
                    "strategy": {"type": "string", "enum": ["reject_on_conflict", "apply"], "default": "reject_on_conflict", "description": "reject_on_conflict or apply (three-way merge)."},
                }),
                &["unified_diff"],
            ),
            output(
                json!({
                    "applied": {"type": "boolean"},
                    "strategy": {"type": "string"},
                    "changed_paths": {"type": "array", "items": {"type": "string"}},
                    "output": {"type": "string"}
                }),
                &["applied", "strategy", "changed_paths", "output"],
            ),
        ))
    }
}

/// `fs.search`.
pub fn search() -> ToolSpec {
    ToolSpec {
        cost_hint: "medium",
        policy: path_fields(&["path"]),
        examples: vec![json!({"pattern": "fn main", "path": "src", "max_results": 50})],
        ..base(
            "fs.search",
            "Search the lines of the regular files under a path for a regular expression (RE2 \
             syntax), skipping .git directories, symlinks and binary files. Returns matches \
             sorted by path and line (default 200, capped at 2000).",
            30,
            closed(
                json!({
                    "pattern": {"type": "string", "minLength": 1, "maxLength": 4096, "description": "Regular expression matched against each line."},
                    "path": path("Directory or file to search (default \".\")."),
                    "max_results": count(SEARCH_DEFAULT_RESULTS, "Stop after this many matches (capped at 2000)."),
                }),
                &["pattern"],
            ),
            output(
                json!({
                    "matches": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string"},
                            "line": {"type": "integer"},
                            "snippet": {"type": "string"}
                        },
                        "required": ["path", "line", "snippet"]
                    }},
                    "count": {"type": "integer"},
                    "truncated": {"type": "boolean"}
                }),
                &["matches", "count", "truncated"],
            ),
        )
    }
}

/// `fs.edit` (later version of the original): exact search and replace in one file.
pub fn edit() -> ToolSpec {
    ToolSpec {
        requires_approval: true,
        policy: written_path("path"),
        preconditions: vec![
            "path is a UTF-8 text file of at most 1 MiB",
            "old_string occurs exactly once, or replace_all is true",
        ],
        examples: vec![
            json!({"path": "src/lib.rs", "old_string": "fn old()", "new_string": "fn new()"}),
        ],
        ..writes(base(
            "fs.edit",
            "Replace an exact string in a UTF-8 text file (at most 1 MiB). old_string must occur \
             exactly once unless replace_all is true; add surrounding context to make it unique.",
            20,
            closed(
                json!({
                    "path": required_path("File to edit, relative to the workspace."),
                    "old_string": {"type": "string", "minLength": 1, "description": "Exact text to replace."},
                    "new_string": {"type": "string", "description": "Replacement text."},
                    "replace_all": flag(false, "Replace every occurrence."),
                }),
                &["path", "old_string", "new_string"],
            ),
            output(
                json!({
                    "path": {"type": "string"},
                    "replacements": {"type": "integer"},
                    "bytes_written": {"type": "integer"},
                    "sha256": {"type": "string"}
                }),
                &["path", "replacements", "bytes_written", "sha256"],
            ),
        ))
    }
}

/// `fs.insert` (later version of the original): insert lines into a file.
pub fn insert() -> ToolSpec {
    ToolSpec {
        requires_approval: true,
        policy: written_path("path"),
        preconditions: vec!["path is a file of at most 1 MiB"],
        examples: vec![json!({"path": "CHANGELOG.md", "line": 3, "content": "- fixed a bug\n"})],
        ..writes(base(
            "fs.insert",
            "Insert text before a 1-based line of a file (at most 1 MiB); line 0 or the line \
             count + 1 appends. A missing final newline is added to the inserted text.",
            20,
            closed(
                json!({
                    "path": required_path("File to change, relative to the workspace."),
                    "line": {"type": "integer", "minimum": 0, "description": "Insert before this 1-based line; 0 or line count + 1 appends."},
                    "content": {"type": "string", "description": "Text to insert (one or more lines)."},
                }),
                &["path", "line", "content"],
            ),
            output(
                json!({
                    "path": {"type": "string"},
                    "inserted_lines": {"type": "integer"},
                    "bytes_written": {"type": "integer"}
                }),
                &["path", "inserted_lines", "bytes_written"],
            ),
        ))
    }
}

/// `fs.glob` (later version of the original): find paths by glob.
pub fn glob() -> ToolSpec {
    ToolSpec {
        policy: path_fields(&["path"]),
        examples: vec![json!({"pattern": "**/*.rs", "path": "src"})],
        ..base(
            "fs.glob",
            "Find files and directories under a path whose path relative to it matches a glob \
             (`*` stays within a directory, `**` crosses directories, `?`, `[a-z]`, `{a,b}`). \
             .git is skipped unless the pattern names it. Returns workspace-relative paths, \
             sorted (default 200, capped at 2000).",
            20,
            closed(
                json!({
                    "pattern": {"type": "string", "minLength": 1, "maxLength": 4096, "description": "Glob, relative to path."},
                    "path": path("Directory to search (default \".\")."),
                    "max_results": count(SEARCH_DEFAULT_RESULTS, "Stop after this many paths (capped at 2000)."),
                }),
                &["pattern"],
            ),
            output(
                json!({
                    "paths": {"type": "array", "items": {"type": "string"}},
                    "count": {"type": "integer"},
                    "truncated": {"type": "boolean"}
                }),
                &["paths", "count", "truncated"],
            ),
        )
    }
}

/// `fs.read_lines` (later version of the original): a numbered range of lines.
pub fn read_lines() -> ToolSpec {
    ToolSpec {
        policy: path_fields(&["path"]),
        examples: vec![json!({"path": "src/main.rs", "start_line": 10, "end_line": 40})],
        ..base(
            "fs.read_lines",
            "Read numbered lines of a text file, from start_line (default 1) to end_line \
             (default: the end), at most max_lines (default 200, capped at 2000). Only the first \
             4 MiB of a file are read. Invalid UTF-8 is replaced with U+FFFD.",
            20,
            closed(
                json!({
                    "path": required_path("File to read, relative to the workspace."),
                    "start_line": count(1, "First line to return (1-based)."),
                    "end_line": {"type": "integer", "minimum": 1, "description": "Last line to return (inclusive)."},
                    "max_lines": count(READ_LINES_DEFAULT, "Return at most this many lines (capped at 2000)."),
                }),
                &["path"],
            ),
            output(
                json!({
                    "path": {"type": "string"},
                    "start_line": {"type": "integer"},
                    "end_line": {"type": "integer"},
                    "total_lines": {"type": "integer"},
                    "lines": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"number": {"type": "integer"}, "text": {"type": "string"}},
                        "required": ["number", "text"]
                    }},
                    "truncated": {"type": "boolean"}
                }),
                &[
                    "path",
                    "start_line",
                    "end_line",
                    "total_lines",
                    "lines",
                    "truncated",
                ],
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<ToolSpec> {
        vec![
            list(),
            read_file(),
            write_file(),
            mkdir(),
            move_(),
            copy(),
            delete(),
            stat(),
            patch(),
            search(),
            edit(),
            insert(),
            glob(),
            read_lines(),
        ]
    }

    /// (name, risk, approval, side effects, idempotency, timeout, required, optional, path_fields)
    type Row = (
        &'static str,
        RiskLevel,
        bool,
        SideEffects,
        Idempotency,
        u64,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );

    const ROWS: &[Row] = {
        use Idempotency::{BestEffort as B, Guaranteed as G};
        use RiskLevel::{High, Low, Medium};
        use SideEffects::{Irreversible as I, None as N, Reversible as R};
        &[
            (
                "fs.list",
                Low,
                false,
                N,
                G,
                15,
                &[],
                &["path", "recursive", "max_entries"],
                &["path"],
            ),
            (
                "fs.read_file",
                Low,
                false,
                N,
                G,
                20,
                &["path"],
                &["max_bytes"],
                &["path"],
            ),
            (
                "fs.write_file",
                Medium,
                true,
                R,
                B,
                20,
                &["path", "content"],
                &["encoding", "create_parents"],
                &["path"],
            ),
            (
                "fs.mkdir",
                Medium,
                false,
                R,
                B,
                20,
                &["path"],
                &["create_parents", "mode", "exist_ok"],
                &["path"],
            ),
            (
                "fs.move",
                Medium,
                false,
                R,
                B,
                20,
                &["source_path", "destination_path"],
                &["overwrite", "create_parents"],
                &["source_path", "destination_path"],
            ),
            (
                "fs.copy",
                Medium,
                false,
                R,
                B,
                25,
                &["source_path", "destination_path"],
                &["recursive", "overwrite", "create_parents"],
                &["source_path", "destination_path"],
            ),
            (
                "fs.delete",
                High,
                true,
                I,
                B,
                20,
                &["path"],
                &["recursive", "force"],
                &["path"],
            ),
            ("fs.stat", Low, false, N, G, 15, &["path"], &[], &["path"]),
            (
                "fs.patch",
                Medium,
                true,
                R,
                B,
                45,
                &["unified_diff"],
                &["strategy"],
                &[],
            ),
            (
                "fs.search",
                Low,
                false,
                N,
                G,
                30,
                &["pattern"],
                &["path", "max_results"],
                &["path"],
            ),
            (
                "fs.edit",
                Medium,
                true,
                R,
                B,
                20,
                &["path", "old_string", "new_string"],
                &["replace_all"],
                &["path"],
            ),
            (
                "fs.insert",
                Medium,
                true,
                R,
                B,
                20,
                &["path", "line", "content"],
                &[],
                &["path"],
            ),
            (
                "fs.glob",
                Low,
                false,
                N,
                G,
                20,
                &["pattern"],
                &["path", "max_results"],
                &["path"],
            ),
            (
                "fs.read_lines",
                Low,
                false,
                N,
                G,
                20,
                &["path"],
                &["start_line", "end_line", "max_lines"],
                &["path"],
            ),
        ]
    };

    #[test]
    fn metadata_matches_the_reference_table() {
        let specs = all();
        assert_eq!(specs.len(), ROWS.len());
        for (spec, row) in specs.iter().zip(ROWS) {
            let (name, risk, approval, effects, idem, timeout, required, optional, paths) = *row;
            assert_eq!(spec.name, name);
            assert_eq!(spec.scope, Scope::Workspace, "{name}");
            assert_eq!(spec.risk_level, risk, "{name}");
            assert_eq!(spec.requires_approval, approval, "{name}");
            assert_eq!(spec.side_effects, effects, "{name}");
            assert_eq!(spec.idempotency, idem, "{name}");
            assert_eq!(spec.constraints.timeout_seconds, timeout, "{name}");
            let mut want_required: Vec<&str> = required.to_vec();
            want_required.sort_unstable();
            let mut got_required: Vec<&str> = spec.input_schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            got_required.sort_unstable();
            assert_eq!(got_required, want_required, "{name}: required");
            let mut want_all: Vec<&str> = required.iter().chain(optional).copied().collect();
            want_all.sort_unstable();
            let mut got_all: Vec<&str> = spec.input_schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            got_all.sort_unstable();
            assert_eq!(got_all, want_all, "{name}: properties");
            let got_paths: Vec<&str> = spec.policy.path_fields.iter().map(|f| f.field).collect();
            assert_eq!(got_paths, paths.to_vec(), "{name}: path_fields");
            assert!(
                spec.policy
                    .path_fields
                    .iter()
                    .all(|f| !f.multi && f.workspace_relative)
            );
            assert!(spec.policy.arg_fields.is_empty(), "{name}");
        }
    }

    #[test]
    fn enumerations_and_counts_are_typed() {
        let write = write_file();
        assert_eq!(
            write.input_schema["properties"]["encoding"]["enum"],
            json!(["utf8", "base64"])
        );
        let patch = patch();
        assert_eq!(
            patch.input_schema["properties"]["strategy"]["enum"],
            json!(["reject_on_conflict", "apply"])
        );
        for (spec, field) in [
            (list(), "max_entries"),
            (read_file(), "max_bytes"),
            (search(), "max_results"),
            (glob(), "max_results"),
            (read_lines(), "max_lines"),
            (read_lines(), "start_line"),
        ] {
            let p = &spec.input_schema["properties"][field];
            assert_eq!(p["type"], "integer", "{} {field}", spec.name);
            assert_eq!(p["minimum"], 1, "{} {field}", spec.name);
        }
    }

    #[test]
    fn written_path_fields_are_declared_and_no_fs_tool_runs_repository_code() {
        let written = |spec: &ToolSpec| -> Vec<&str> {
            spec.policy
                .path_fields
                .iter()
                .filter(|f| f.writes)
                .map(|f| f.field)
                .collect()
        };
        for spec in all() {
            assert!(!spec.runs_repository_code, "{}", spec.name);
            let want: &[&str] = match spec.name {
                "fs.write_file" | "fs.mkdir" | "fs.delete" | "fs.edit" | "fs.insert" => &["path"],
                "fs.move" => &["source_path", "destination_path"],
                "fs.copy" => &["destination_path"],
                // fs.patch has no path fields: its handler checks the diff's paths.
                _ => &[],
            };
            assert_eq!(written(&spec), want, "{}", spec.name);
        }
        let json = serde_json::to_value(write_file()).unwrap();
        assert_eq!(json["runs_repository_code"], false);
        assert_eq!(json["policy"]["path_fields"][0]["writes"], true);
    }
}
