//! `git.branch_list`: the branches, parsed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{OUTPUT_BYTES, Repo, base, run_git, whole_records};
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// One NUL-terminated record per branch: name, upstream, commit, `*` when checked out.
const FORMAT: &str = "--format=%(refname:short)%00%(upstream:short)%00%(objectname)%00%(HEAD)%00";

/// Arguments of `git.branch_list`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Local and remote-tracking branches (`-a`).
    #[serde(default)]
    pub all: bool,
    /// Remote-tracking branches only (`-r`).
    #[serde(default)]
    pub remotes: bool,
}

/// One branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Branch {
    /// Short name.
    pub name: String,
    /// Upstream's short name ("" when none).
    pub upstream: String,
    /// The commit it points at.
    pub commit: String,
    /// Whether it is checked out.
    pub current: bool,
}

/// Output of `git.branch_list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The command line run.
    pub command: Vec<String>,
    /// Number of branches.
    pub count: usize,
    /// The branches, in git's order.
    pub branches: Vec<Branch>,
    /// Git printed more than 1 MiB: the branches stop before the first one the cap cut.
    pub truncated: bool,
}

/// `git.branch_list`.
pub struct BranchList;

/// Parses [`FORMAT`]'s records (git ends each line with a newline after the last NUL).
pub(super) fn parse_branches(raw: &str) -> Vec<Branch> {
    let fields: Vec<&str> = raw.split('\0').collect();
    fields
        .chunks(4)
        .filter(|c| c.len() == 4)
        .filter_map(|c| {
            let name = c[0].trim_start_matches('\n');
            (!name.is_empty()).then(|| Branch {
                name: name.to_owned(),
                upstream: c[1].to_owned(),
                commit: c[2].to_owned(),
                current: c[3] == "*",
            })
        })
        .collect()
}

impl Tool for BranchList {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![json!({"all": true})],
            ..base(
                "git.branch_list",
                "git branch --list (-a when all, -r when remotes), parsed to branches {name, \
                 upstream, commit, current}.",
                20,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let repo = Repo::open(ctx).await?;
        let mut command = repo.git("branch").read_only().args(["--list", FORMAT]);
        if args.all {
            command = command.arg("-a");
        } else if args.remotes {
            command = command.arg("-r");
        }
        let ran = run_git(ctx, command, None, OUTPUT_BYTES).await?;
        let truncated = ran.output.stdout_truncated;
        let branches = parse_branches(whole_records(&ran.stdout(), truncated, '\n'));
        let summary = format!("{} branches", branches.len());
        Ok(Completed::new(
            Output {
                command: ran.command,
                count: branches.len(),
                branches,
                truncated,
            },
            summary,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_records_parse_with_upstream_and_current() {
        let raw = "main\0origin/main\0abc\0*\0\nfeature/x\0\0def\0 \0\n";
        let branches = parse_branches(raw);
        assert_eq!(branches.len(), 2);
        assert_eq!(branches[0].upstream, "origin/main");
        assert!(branches[0].current);
        assert_eq!(branches[1].name, "feature/x");
        assert_eq!(branches[1].upstream, "");
        assert!(!branches[1].current);
        // Cut after the second record's commit: its HEAD mark is unknown, so it is left out.
        let cut = "main\0origin/main\0abc\0*\0\nfeature/x\0\0def\0";
        let whole = parse_branches(whole_records(cut, true, '\n'));
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].name, "main");
    }
}
