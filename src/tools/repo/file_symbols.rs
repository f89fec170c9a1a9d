//! `repo.symbols`: the symbols a file declares (REFERENCE §13.3), extracted by
//! [`super::symbols`] from the file read through the runner.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::run::{base, invalid};
use super::symbols::{MAX_FILE_BYTES, SymbolsOutput, extract};
use crate::error_code::ErrorCode;
use crate::runner::protocol::{Reply, Request};
use crate::tools::args::WorkspacePath;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure, call_runner, runner_failure};

/// Arguments of `repo.symbols`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The source file (at most 1 MiB).
    pub path: WorkspacePath,
}

/// `repo.symbols`.
pub struct Symbols;

impl Tool for Symbols {
    type Args = Args;
    type Output = SymbolsOutput;

    fn metadata(&self) -> Metadata {
        Metadata {
            scope: crate::tools::Scope::Workspace,
            examples: vec![json!({"path": "main.go"})],
            ..base(
                "repo.symbols",
                "List the symbols a source file declares (package, import, function, type, \
                 class, method, struct, enum, trait, ...), by language from the extension: \
                 {kind, name, line, signature}. A file over 1 MiB is invalid_argument; a \
                 missing one not_found. Runs nothing.",
                15,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<SymbolsOutput>, ToolFailure> {
        let path = args
            .path
            .resolve(&ctx.session.allowed_paths)
            .map_err(|d| ToolFailure::new(d.code, d.message))?;
        let request = Request::ReadFile {
            path: path.clone(),
            max_bytes: MAX_FILE_BYTES as u64,
        };
        let text = match call_runner(ctx, request).await? {
            Reply::File {
                truncated: true, ..
            } => return Err(invalid("file exceeds 1MB limit for symbol extraction")),
            Reply::File { content, .. } => String::from_utf8_lossy(&content.0).into_owned(),
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            _ => {
                return Err(ToolFailure::new(
                    ErrorCode::Internal,
                    "unexpected reply from the session runner",
                ));
            }
        };
        let out = extract(&path, &text).map_err(|e| invalid(e.to_string()))?;
        let summary = format!("{} symbols in {path}", out.count);
        Ok(Completed::new(out, summary))
    }
}
