//! `fs.mkdir`: create a directory with an octal mode.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base, failed, resolve, unexpected, writes};
use crate::runner::protocol::{Entry, EntryType, Reply, Request, RunnerErrorCode};
use crate::tools::args::{WorkspacePath, Write};
use crate::tools::{
    Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure,
};

/// Permission bits, at most `0777`, parsed from an octal string (`755`, `0755`, `0o755`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mode(u32);

impl Default for Mode {
    fn default() -> Self {
        Mode(0o755)
    }
}

impl TryFrom<String> for Mode {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        parse_mode(&raw).map(Mode)
    }
}

impl From<Mode> for String {
    fn from(mode: Mode) -> String {
        format!("{:04o}", mode.0)
    }
}

impl JsonSchema for Mode {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Mode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "minLength": 1, "maxLength": 8})
    }
}

/// Parses an octal permission string: `755`, `0755` or `0o755`, at most `0777`.
pub(super) fn parse_mode(raw: &str) -> Result<u32, String> {
    let digits = raw
        .strip_prefix("0o")
        .or_else(|| raw.strip_prefix("0O"))
        .unwrap_or(raw);
    let bad = || format!("mode must be octal permission bits such as \"0755\", got {raw:?}");
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(bad());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    if mode > 0o777 {
        return Err(format!(
            "mode must be at most 0777 (no setuid, setgid or sticky bits), got {raw:?}"
        ));
    }
    Ok(mode)
}

/// Arguments of `fs.mkdir`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Directory to create, relative to the workspace.
    pub path: WorkspacePath<Write>,
    /// Create missing parent directories.
    #[serde(default = "super::yes")]
    pub create_parents: bool,
    /// Octal permission bits, at most 0777.
    #[serde(default)]
    pub mode: Mode,
    /// Succeed when the directory already exists.
    #[serde(default = "super::yes")]
    pub exist_ok: bool,
}

/// Output of `fs.mkdir`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The normalised path.
    pub path: String,
    /// Whether the directory was created (false: it existed).
    pub created: bool,
    /// The mode asked for, four octal digits.
    pub mode: String,
}

/// `fs.mkdir`.
pub struct Mkdir;

impl Tool for Mkdir {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            postconditions: vec!["path is a directory"],
            examples: vec![json!({"path": "build/out", "mode": "0755"})],
            ..writes(base(
                "fs.mkdir",
                "Create a directory (and its missing parents unless create_parents is false) \
                 with an octal mode (\"0755\", \"755\" or \"0o755\"; default 0755). An existing \
                 directory is a success with created=false unless exist_ok is false.",
                20,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let path = resolve(ctx, &args.path)?;
        let Mode(mode) = args.mode;
        let request = Request::Mkdir {
            path: path.clone(),
            create_parents: args.create_parents,
            mode,
            exist_ok: args.exist_ok,
        };
        let created = match call_runner(ctx, request).await? {
            Reply::Mkdir { created } => created,
            Reply::Error {
                code: RunnerErrorCode::AlreadyExists,
                ..
            } => {
                // The original told these apart; one more round trip on the error path says
                // which.
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
        let mode = String::from(Mode(mode));
        let summary = if created {
            format!("created directory {path} with mode {mode}")
        } else {
            format!("directory {path} already exists")
        };
        Ok(Completed::new(
            Output {
                path,
                created,
                mode,
            },
            summary,
        ))
    }
}
