//! `git.log`: the history from a ref, parsed to entries.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::shared::{OUTPUT_BYTES, Repo, base, head, ref_value, run_git, whole_records};
use super::show::ref_rule;
use crate::tools::args::Count;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// `--pretty` format: fields separated by the unit separator, each record NUL-terminated (`-z`).
const FORMAT: &str = "--pretty=format:%H%x1f%an%x1f%ae%x1f%aI%x1f%s%x1f%P";

/// Arguments of `git.log`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Start from this ref (default HEAD).
    #[serde(default = "head", rename = "ref")]
    pub reference: String,
    /// At most this many commits (default 20, capped at 200).
    #[serde(default)]
    pub max_count: Count<20, 200>,
}

/// One commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Entry {
    /// Full hash.
    pub hash: String,
    /// Author name.
    pub author_name: String,
    /// Author email.
    pub author_email: String,
    /// Author date, ISO 8601 strict.
    pub date: String,
    /// Subject line.
    pub subject: String,
    /// Parent hashes.
    pub parents: Vec<String>,
}

/// Output of `git.log`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The command line run.
    pub command: Vec<String>,
    /// The ref the history starts from.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Number of entries.
    pub count: usize,
    /// The commits, newest first.
    pub entries: Vec<Entry>,
    /// Git printed more than 1 MiB (very long subjects): the entries stop before the first
    /// commit the cap cut, so there may be fewer than `max_count` although more exist.
    pub truncated: bool,
}

/// `git.log`.
pub struct Log;

/// Parses the `-z` records of [`FORMAT`].
pub(super) fn parse_log(raw: &str) -> Vec<Entry> {
    raw.split('\0')
        .filter(|r| !r.trim().is_empty())
        .filter_map(|record| {
            let mut fields = record.trim_start_matches('\n').split('\x1f');
            Some(Entry {
                hash: fields.next()?.to_owned(),
                author_name: fields.next()?.to_owned(),
                author_email: fields.next()?.to_owned(),
                date: fields.next()?.to_owned(),
                subject: fields.next()?.to_owned(),
                parents: fields
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

impl Tool for Log {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            arg_fields: vec![ref_rule("ref")],
            examples: vec![json!({"ref": "HEAD", "max_count": 10})],
            ..base(
                "git.log",
                "git log from ref (default HEAD), at most max_count commits (default 20, capped \
                 at 200), parsed to entries {hash, author_name, author_email, date, subject, \
                 parents}.",
                20,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let reference = ref_value(&args.reference, "ref")?;
        let repo = Repo::open(ctx).await?;
        let command = repo.git("log").read_only().args([
            "-z".to_owned(),
            FORMAT.to_owned(),
            format!("--max-count={}", args.max_count.get()),
            reference.clone(),
            "--".to_owned(),
        ]);
        let ran = run_git(ctx, command, None, OUTPUT_BYTES).await?;
        let truncated = ran.output.stdout_truncated;
        let entries = parse_log(whole_records(&ran.stdout(), truncated, '\0'));
        let summary = format!("{} commits from {reference}", entries.len());
        Ok(Completed::new(
            Output {
                command: ran.command,
                reference,
                count: entries.len(),
                entries,
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
    fn log_records_parse_with_and_without_parents() {
        let raw = "a1\x1fAnn\x1fann@x\x1f2026-01-01T00:00:00+00:00\x1fsecond; with | chars\x1fb2 c3\0\
                   \nb2\x1fBob\x1fbob@x\x1f2026-01-01T00:00:00+00:00\x1ffirst\x1f\0";
        let entries = parse_log(raw);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].subject, "second; with | chars");
        assert_eq!(entries[0].parents, vec!["b2", "c3"]);
        assert_eq!(entries[1].hash, "b2");
        assert!(entries[1].parents.is_empty());
        // Cut inside the second record (before its parents): it would parse as a root commit,
        // so only the first is answered.
        let cut = &raw[..raw.len() - 2];
        assert_eq!(parse_log(whole_records(cut, true, '\0')).len(), 1);
        assert_eq!(parse_log(whole_records(cut, false, '\0')).len(), 2);
    }
}
