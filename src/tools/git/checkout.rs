//! `git.checkout`: switch to a ref, or create a branch; refs gated by
//! `allowed_git_ref_prefixes`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{OUTPUT_BYTES, Repo, base, check_ref, ref_value, run_git, writes};
use super::show::ref_rule;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// Arguments of `git.checkout`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The branch, tag or commit (the new branch's name with create).
    #[serde(rename = "ref")]
    pub reference: String,
    /// Create the branch (`-b`).
    #[serde(default)]
    pub create: bool,
    /// With create: where the new branch starts.
    #[serde(default)]
    pub start_point: Option<String>,
    /// Discard local changes (`--force`).
    #[serde(default)]
    pub force: bool,
}

/// Output of `git.checkout`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The command line run.
    pub command: Vec<String>,
    /// The ref checked out.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Whether a branch was created.
    pub created: bool,
    /// What git printed.
    pub output: String,
}

/// `git.checkout`.
pub struct Checkout;

impl Tool for Checkout {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            arg_fields: vec![ref_rule("ref"), ref_rule("start_point")],
            examples: vec![json!({"ref": "feature/x", "create": true, "start_point": "main"})],
            ..writes(base(
                "git.checkout",
                "git checkout [--force] (-b ref [start_point] | ref). ref and start_point must \
                 pass the session's allowed_git_ref_prefixes.",
                30,
            ))
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let reference = ref_value(&args.reference, "ref")?;
        check_ref(ctx, &reference, "ref")?;
        let start_point = match args.start_point.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => {
                let s = ref_value(s, "start_point")?;
                check_ref(ctx, &s, "start_point")?;
                Some(s)
            }
            _ => None,
        };
        let repo = Repo::open(ctx).await?;
        let mut command = repo.git("checkout");
        if args.force {
            command = command.arg("--force");
        }
        if args.create {
            command = command.args(["-b", reference.as_str()]);
            if let Some(start) = &start_point {
                command = command.arg(start.as_str());
            }
        } else {
            command = command.arg(reference.as_str());
        }
        // Everything before is a ref: no path is checked out by accident.
        command = command.arg("--");
        let ran = run_git(ctx, command, None, OUTPUT_BYTES).await?;
        let summary = format!("checked out {reference}");
        Ok(Completed {
            exit_code: 0,
            ..Completed::new(
                Output {
                    command: ran.command.clone(),
                    reference,
                    created: args.create,
                    output: ran.combined(),
                },
                summary,
            )
        })
    }
}
