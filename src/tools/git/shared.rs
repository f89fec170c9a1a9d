//! What the `git.*` tools share: their metadata defaults, one way to run git in the workspace's
//! repository with the original's exit-code mapping (128 `git_repo_error`, 129
//! `git_usage_error`, a timeout `timeout` with the partial output), the session metadata
//! allowlists (`allowed_git_remotes`, `allowed_git_ref_prefixes`), the commit identity, and the
//! remotes a network tool may reach.
//!
//! It never runs git other than through [`GitCommand`], and never lets a remote tool reach
//! anything but a repository inside the workspace: every URL remote is `network_disabled` on
//! the local sandbox, and a local one runs the other side's `upload-pack`/`receive-pack` with
//! the same overrides as every command (so the remote's hooks never run).

use serde::Serialize;

use super::{
    GitCommand, Network, Output, RepoConfig, Repository, STATIC_OVERRIDES, open_repository, run,
    run_keeping,
};
use crate::error_code::ErrorCode;
use crate::policy::paths;
use crate::runner::protocol::{EntryType, Reply, Request};
use crate::tools::exec;
use crate::tools::{
    ArgField, Constraints, Idempotency, Metadata, NewArtifact, RiskLevel, Scope, SideEffects,
    ToolContext, ToolFailure, call_runner, runner_failure, stdout_line,
};

/// Output kept of a git command, per stream (the original's 1 MiB diff cap).
pub const OUTPUT_BYTES: u64 = 1024 * 1024;

/// A tool of the family with the defaults most share (repo scope, low risk, no approval, no
/// side effects, guaranteed idempotency); each tool overrides what differs.
pub fn base(name: &'static str, description: &'static str, timeout_seconds: u64) -> Metadata {
    Metadata {
        name,
        description,
        scope: Scope::Repo,
        side_effects: SideEffects::None,
        risk_level: RiskLevel::Low,
        requires_approval: false,
        idempotency: Idempotency::Guaranteed,
        // Every git tool runs git hardened (`tools::git`): no hook, filter or driver.
        runs_repository_code: false,
        constraints: Constraints {
            timeout_seconds,
            max_retries: 2,
            output_limit_kb: None,
        },
        preconditions: vec!["the workspace is a git repository"],
        postconditions: Vec::new(),
        cost_hint: "low",
        arg_fields: Vec::new(),
        examples: Vec::new(),
    }
}

/// The defaults of a tool that changes the repository.
pub fn writes(mut metadata: Metadata) -> Metadata {
    metadata.side_effects = SideEffects::Reversible;
    metadata.risk_level = RiskLevel::Medium;
    metadata.idempotency = Idempotency::BestEffort;
    metadata.constraints.max_retries = 0;
    metadata
}

/// Characters a ref, remote or refspec may not contain (the original's SHELL set).
pub const SHELL: &[&str] = &[
    ";", "|", "&", "$", "`", ">", "<", "\n", "\r", "(", ")", "\\",
];

/// The default ref of the read tools.
pub fn head() -> String {
    "HEAD".to_owned()
}

/// The default remote of the network tools.
pub fn origin() -> String {
    "origin".to_owned()
}

/// The default of the `true`-by-default flags.
pub fn yes() -> bool {
    true
}

pub fn invalid(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::InvalidArgument, message)
}

pub fn denied(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::PolicyDenied, message)
}

/// The workspace's repository, inspected: what every command runs against. No `.git` at all
/// runs git outside any repository, which then answers `git_repo_error` as the original did.
pub struct Repo {
    repository: Repository,
    config: RepoConfig,
}

impl Repo {
    pub async fn open(ctx: &ToolContext) -> Result<Self, ToolFailure> {
        Ok(match open_repository(ctx).await? {
            Some(config) => Self {
                repository: Repository::Workspace,
                config,
            },
            None => Self {
                repository: Repository::Outside,
                config: RepoConfig::default(),
            },
        })
    }

    /// `git <subcommand>` with no network.
    pub fn git(&self, subcommand: &str) -> GitCommand {
        self.git_with(subcommand, Network::Denied)
    }

    /// `git <subcommand>` with `network`.
    pub fn git_with(&self, subcommand: &str, network: Network) -> GitCommand {
        GitCommand::new(subcommand, network, self.repository).neutralise(&self.config)
    }
}

/// A git command that ran and exited 0.
pub struct Ran {
    /// The command line as run.
    pub command: Vec<String>,
    /// What it printed.
    pub output: Output,
}

impl Ran {
    /// Standard output as text; when it was cut, a multi-byte character cut at the end is
    /// dropped rather than replaced.
    pub fn stdout(&self) -> String {
        let bytes = &self.output.stdout;
        let bytes = if self.output.stdout_truncated {
            &bytes[..whole_chars(bytes)]
        } else {
            bytes
        };
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// The full stdout as the artifact `<tool>.stdout.txt` when the inline part was cut
    /// (what was kept of it: at most [`exec::DEFAULT_CAPTURE_BYTES`] with
    /// [`run_git_keeping`]); none otherwise.
    pub fn stdout_artifacts(&self, tool: &str) -> Vec<NewArtifact> {
        if !self.output.stdout_truncated {
            return Vec::new();
        }
        vec![NewArtifact {
            name: format!("{tool}.stdout.txt"),
            content_type: "text/plain; charset=utf-8".to_owned(),
            bytes: self.output.stdout_full.clone(),
        }]
    }

    /// Standard output then standard error, as text.
    pub fn combined(&self) -> String {
        combined(&self.output)
    }
}

/// The records of `raw` that end before `terminator` when the output was cut: a record the
/// cap cut short is left out rather than answered half (a subject without its parents, a branch
/// without its HEAD mark).
pub fn whole_records(raw: &str, truncated: bool, terminator: char) -> &str {
    if !truncated {
        return raw;
    }
    raw.rfind(terminator).map_or("", |end| &raw[..end])
}

/// The length of `bytes` without a UTF-8 sequence its end cuts short.
fn whole_chars(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let at = bytes.len() - back;
        let byte = bytes[at];
        // A continuation byte: look further back for the sequence's first byte.
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let needed = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needed > back { at } else { bytes.len() };
    }
    bytes.len()
}

fn combined(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

/// Partial output of a failed git command: the command and what it printed.
#[derive(Serialize)]
struct Partial<'a> {
    command: &'a [String],
    output: String,
}

/// Runs `command` and maps how it ended: a timeout is `timeout` (retryable), exit 128
/// `git_repo_error`, 129 `git_usage_error`, any other non-zero `execution_failed`; each
/// failure carries the command and git's output as partial output.
pub async fn run_git(
    ctx: &ToolContext,
    command: GitCommand,
    stdin: Option<Vec<u8>>,
    max_output: u64,
) -> Result<Ran, ToolFailure> {
    let output = run(ctx, &command, stdin, max_output).await?;
    ended(&command, output)
}

/// [`run_git`] for a read tool whose stdout is its answer: `max_output` bytes inline, and
/// when git printed more, up to [`exec::DEFAULT_CAPTURE_BYTES`] kept for
/// [`Ran::stdout_artifacts`].
pub async fn run_git_keeping(
    ctx: &ToolContext,
    command: GitCommand,
    max_output: u64,
) -> Result<Ran, ToolFailure> {
    let capture = exec::DEFAULT_CAPTURE_BYTES.max(max_output);
    let output = run_keeping(ctx, &command, max_output, capture).await?;
    ended(&command, output)
}

/// Maps how `command` ended (see [`run_git`]).
fn ended(command: &GitCommand, output: Output) -> Result<Ran, ToolFailure> {
    let argv = command.argv().to_vec();
    if !output.timed_out && output.exit_code == 0 {
        return Ok(Ran {
            command: argv,
            output,
        });
    }
    let text = combined(&output);
    let first = String::from_utf8_lossy(&output.stderr)
        .lines()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or_default();
    let (code, message) = if output.timed_out {
        (
            ErrorCode::Timeout,
            format!("command timed out: {}", argv.join(" ")),
        )
    } else {
        let code = match output.exit_code {
            128 => ErrorCode::GitRepoError,
            129 => ErrorCode::GitUsageError,
            _ => ErrorCode::ExecutionFailed,
        };
        (
            code,
            format!(
                "command failed: {} (exit code {}): {first}",
                argv.join(" "),
                output.exit_code
            ),
        )
    };
    let mut failure = ToolFailure::new(code, message).with_output(&Partial {
        command: &argv,
        output: text.clone(),
    });
    if !text.trim().is_empty() {
        failure.logs = vec![stdout_line(text.trim_end())];
    }
    failure.exit_code = output.exit_code;
    Err(failure)
}

/// A ref argument, trimmed: empty is `invalid_argument`, and so is a leading `-`, which git
/// would read as an option (`--output=<file>` writes a file).
pub fn ref_value(value: &str, field: &str) -> Result<String, ToolFailure> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    if value.starts_with('-') {
        return Err(invalid(format!(
            "{field} must not start with '-' (git would read it as an option)"
        )));
    }
    Ok(value.to_owned())
}

/// The session's comma-separated list under `key`; `None` (no restriction) when it is absent,
/// empty or contains `*`.
fn allowlist<'a>(ctx: &'a ToolContext, key: &str) -> Option<Vec<&'a str>> {
    let raw = ctx.session.metadata.get(key)?;
    let entries: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() || entries.contains(&"*") {
        None
    } else {
        Some(entries)
    }
}

/// Whether `reference` passes `allowed_git_ref_prefixes`: it, or it under `refs/heads/`,
/// `refs/tags/` or `refs/remotes/`, starts with an allowed prefix (a leading `+` ignored).
pub fn ref_allowed(ctx: &ToolContext, reference: &str) -> bool {
    let Some(prefixes) = allowlist(ctx, "allowed_git_ref_prefixes") else {
        return true;
    };
    let reference = reference.trim().trim_start_matches('+');
    let candidates = [
        reference.to_owned(),
        format!("refs/heads/{reference}"),
        format!("refs/tags/{reference}"),
        format!("refs/remotes/{reference}"),
    ];
    candidates
        .iter()
        .any(|c| prefixes.iter().any(|p| c.starts_with(p)))
}

/// Checks a ref argument against `allowed_git_ref_prefixes` (`policy_denied "<field> outside
/// allowlist"`).
pub fn check_ref(ctx: &ToolContext, reference: &str, field: &str) -> Result<(), ToolFailure> {
    if ref_allowed(ctx, reference) {
        Ok(())
    } else {
        Err(denied(format!("{field} outside allowlist")))
    }
}

/// Checks a refspec (`src:dst`, both sides) against `allowed_git_ref_prefixes`.
pub fn check_refspec(ctx: &ToolContext, refspec: &str) -> Result<(), ToolFailure> {
    let refspec = refspec.trim().trim_start_matches('+');
    let sides = match refspec.split_once(':') {
        Some((src, dst)) => vec![src, dst],
        None => vec![refspec],
    };
    if sides
        .into_iter()
        .filter(|s| !s.is_empty())
        .all(|s| ref_allowed(ctx, s))
    {
        Ok(())
    } else {
        Err(denied("refspec outside allowlist"))
    }
}

/// Checks a remote name against `allowed_git_remotes` (exact names or `*`).
pub fn check_remote(ctx: &ToolContext, remote: &str) -> Result<(), ToolFailure> {
    match allowlist(ctx, "allowed_git_remotes") {
        Some(names) if !names.contains(&remote) => Err(denied("remote outside allowlist")),
        _ => Ok(()),
    }
}

/// A metadata value made safe for an identity: CR and LF removed, trimmed, at most 128
/// characters; `None` when nothing is left.
fn identity_value(raw: &str) -> Option<String> {
    let clean: String = raw
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .take(128)
        .collect();
    let clean = clean.trim().to_owned();
    (!clean.is_empty()).then_some(clean)
}

/// The author (and committer) of commits: metadata `git_author_name`, else the actor, else
/// `workspace-bot`; metadata `git_author_email` when it contains `@`, else
/// `<actor>@workspace.local`. No configuration file is read for them.
pub fn author(ctx: &ToolContext) -> (String, String) {
    let metadata = &ctx.session.metadata;
    let actor = identity_value(&ctx.session.principal.actor_id);
    let name = metadata
        .get("git_author_name")
        .and_then(|n| identity_value(n))
        .or_else(|| actor.clone())
        .unwrap_or_else(|| "workspace-bot".to_owned());
    let email = metadata
        .get("git_author_email")
        .and_then(|e| identity_value(e))
        .filter(|e| e.contains('@'))
        .unwrap_or_else(|| {
            format!(
                "{}@workspace.local",
                actor.as_deref().unwrap_or("workspace-bot")
            )
        });
    (name, email)
}

/// Where a remote's URL points, for the local sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteUrl {
    /// A repository on a network (`https://`, `ssh://`, `git://`, `host:path`).
    Network,
    /// A path (or `file://` URL) on this machine, as written.
    Local(String),
}

/// Classifies a URL the way git's transport selection does: `<scheme>://` is a URL (`file`
/// is local), a `:` before the first `/` is scp-like ssh, anything else a path.
pub fn classify_url(url: &str) -> RemoteUrl {
    if let Some((scheme, rest)) = url.split_once("://") {
        return if scheme.eq_ignore_ascii_case("file") {
            RemoteUrl::Local(rest.to_owned())
        } else {
            RemoteUrl::Network
        };
    }
    let first_slash = url.find('/').unwrap_or(url.len());
    match url.find(':') {
        Some(colon) if colon < first_slash => RemoteUrl::Network,
        _ => RemoteUrl::Local(url.to_owned()),
    }
}

/// The `-c` arguments every other-side `upload-pack`/`receive-pack` runs with: the fixed
/// overrides (hooks under `/dev/null`, no fsmonitor, ...), and a receiving repository never
/// updates a work tree (which would run its filters). Git clears the command-scope
/// configuration (`GIT_CONFIG_COUNT`) for a local remote's process, so it is passed again here.
fn pack_command(program: &str) -> String {
    let mut words: Vec<String> = vec!["git".to_owned()];
    let extra = [
        ("receive.denyCurrentBranch", "refuse"),
        ("receive.denyDeleteCurrent", "refuse"),
        ("receive.procReceiveRefs", ""),
    ];
    for (key, value) in STATIC_OVERRIDES.iter().chain(extra.iter()) {
        words.push("-c".to_owned());
        words.push(shell_quote(&format!("{key}={value}")));
    }
    words.push(program.to_owned());
    words.join(" ")
}

/// Single-quotes a word for `sh` (git runs a local remote's pack program through the shell).
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The transports a local remote needs.
const LOCAL: &[&str] = &["file"];

/// Which way a network tool talks to its remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// fetch and pull: the other side runs `upload-pack`.
    Fetch,
    /// push: the other side runs `receive-pack`.
    Push,
}

/// Checks the remote a network tool names and returns the command for it, with the transport
/// and the other side's pack program set. The URL is what git itself resolves for the remote
/// (`remote get-url`, `insteadOf` applied, every URL, the push URLs for a push); a name that is
/// no remote is the URL itself. A network URL is `network_disabled` (the local sandbox has no
/// network); a local one must name a directory inside the workspace and its `allowed_paths`,
/// outside `.git`, or it is `policy_denied`.
pub async fn remote_command(
    ctx: &ToolContext,
    repo: &Repo,
    subcommand: &str,
    remote: &str,
    direction: Direction,
) -> Result<GitCommand, ToolFailure> {
    let mut probe = repo.git("remote").args(["get-url", "--all"]).read_only();
    if direction == Direction::Push {
        probe = probe.arg("--push");
    }
    let probed = run(ctx, &probe.arg(remote), None, 64 * 1024).await?;
    let urls: Vec<String> = if probed.exit_code == 0 {
        String::from_utf8_lossy(&probed.stdout)
            .lines()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        vec![remote.to_owned()]
    };
    for url in &urls {
        match classify_url(url) {
            RemoteUrl::Network => {
                return Err(ToolFailure::new(
                    ErrorCode::NetworkDisabled,
                    format!(
                        "remote {remote} is a network URL; the local sandbox has no network \
                         (only a repository inside the workspace can be a remote here)"
                    ),
                ));
            }
            RemoteUrl::Local(path) => check_local_remote(ctx, &path).await?,
        }
    }
    let (option, program) = match direction {
        Direction::Fetch => ("--upload-pack", "upload-pack"),
        Direction::Push => ("--receive-pack", "receive-pack"),
    };
    Ok(repo
        .git_with(subcommand, Network::Allowed(LOCAL))
        .arg(format!("{option}={}", pack_command(program))))
}

/// A local remote must be a workspace-relative directory (a real one, not a symlink) inside
/// `allowed_paths` and outside `.git`.
async fn check_local_remote(ctx: &ToolContext, path: &str) -> Result<(), ToolFailure> {
    if path.starts_with('/') || path.starts_with('~') {
        return Err(denied(
            "a local remote must be a path relative to the workspace: path escapes workspace",
        ));
    }
    let normalized = paths::normalize(path).map_err(|d| denied(d.to_string()))?;
    if normalized == "." || paths::is_protected(&normalized) {
        return Err(denied(
            "a local remote must be a repository inside the workspace, not the workspace's own \
             repository",
        ));
    }
    if !paths::is_allowed(&normalized, &ctx.session.allowed_paths) {
        return Err(denied("remote path outside allowed_paths"));
    }
    let entry = match call_runner(
        ctx,
        Request::Stat {
            path: normalized.clone(),
        },
    )
    .await?
    {
        Reply::Stat { entry } => entry,
        Reply::Error { code, message } => return Err(runner_failure(code, message)),
        _ => {
            return Err(ToolFailure::new(
                ErrorCode::Internal,
                "unexpected reply from the session runner",
            ));
        }
    };
    match entry.map(|e| e.entry_type) {
        Some(EntryType::Dir) => Ok(()),
        None => Err(ToolFailure::new(
            ErrorCode::GitRepoError,
            format!("remote repository {normalized} does not exist"),
        )),
        Some(_) => Err(denied(format!(
            "remote {normalized} is not a directory (a symlink could point outside the \
             workspace)"
        ))),
    }
}

/// The output of `git.fetch`, `git.pull` and `git.push`: each sets its own flag (`fetched`,
/// `pulled`, `pushed`), as the original's outputs did.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct NetworkOutput {
    /// The command line run.
    pub command: Vec<String>,
    /// The remote.
    pub remote: String,
    /// The refspec ("" when none).
    pub refspec: String,
    /// git.fetch: whether it fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<bool>,
    /// git.pull: whether it pulled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pulled: Option<bool>,
    /// git.push: whether it pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<bool>,
    /// What git printed.
    pub output: String,
}

impl NetworkOutput {
    pub fn new(ran: &Ran, remote: String, refspec: Option<String>, verb: &str) -> Self {
        Self {
            command: ran.command.clone(),
            remote,
            refspec: refspec.unwrap_or_default(),
            fetched: (verb == "fetched").then_some(true),
            pulled: (verb == "pulled").then_some(true),
            pushed: (verb == "pushed").then_some(true),
            output: ran.combined(),
        }
    }
}

/// The catalog rules of the network tools' `remote` (128 characters) and `refspec` (512), no
/// shell characters or spaces.
pub fn network_rules() -> Vec<ArgField> {
    let mut deny = SHELL.to_vec();
    deny.push(" ");
    [("remote", 128), ("refspec", 512)]
        .into_iter()
        .map(|(field, max)| ArgField {
            field,
            multi: false,
            max_items: None,
            max_length: Some(max),
            allowed_values: Vec::new(),
            allowed_prefix: Vec::new(),
            denied_prefix: Vec::new(),
            deny_characters: deny.clone(),
        })
        .collect()
}

/// A network tool's remote and refspec, trimmed, checked (no leading `-`) and allowed by the
/// session's allowlists.
pub fn remote_args(
    ctx: &ToolContext,
    remote: &str,
    refspec: Option<&str>,
) -> Result<(String, Option<String>), ToolFailure> {
    let remote = ref_value(remote, "remote")?;
    check_remote(ctx, &remote)?;
    let refspec = match refspec.map(str::trim) {
        Some(r) if !r.is_empty() => {
            let r = ref_value(r, "refspec")?;
            check_refspec(ctx, &r)?;
            Some(r)
        }
        _ => None,
    };
    Ok((remote, refspec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_classified_as_git_selects_a_transport() {
        assert_eq!(
            classify_url("https://example.com/r.git"),
            RemoteUrl::Network
        );
        assert_eq!(classify_url("ssh://git@example.com/r"), RemoteUrl::Network);
        assert_eq!(classify_url("git://example.com/r"), RemoteUrl::Network);
        assert_eq!(classify_url("git@example.com:r.git"), RemoteUrl::Network);
        assert_eq!(
            classify_url("file://remote.git"),
            RemoteUrl::Local("remote.git".into())
        );
        assert_eq!(
            classify_url("remotes/origin.git"),
            RemoteUrl::Local("remotes/origin.git".into())
        );
        assert_eq!(classify_url("./a:b/c"), RemoteUrl::Local("./a:b/c".into()));
    }

    #[test]
    fn a_character_cut_at_the_end_is_dropped_whole() {
        let text = "aé€😀".as_bytes();
        assert_eq!(whole_chars(text), text.len());
        // Every cut inside the last character drops it; cuts between characters keep all.
        for (cut, kept) in [
            (9, 6),
            (8, 6),
            (7, 6),
            (6, 6),
            (5, 3),
            (4, 3),
            (2, 1),
            (1, 1),
        ] {
            assert_eq!(whole_chars(&text[..cut]), kept, "cut at {cut}");
        }
        assert_eq!(whole_chars(b""), 0);
        assert_eq!(
            whole_chars(b"\xff\xfe"),
            2,
            "invalid bytes are not a cut character"
        );
    }

    #[test]
    fn the_pack_command_quotes_every_override_for_the_shell() {
        let cmd = pack_command("receive-pack");
        assert!(
            cmd.starts_with("git '-c' ") || cmd.starts_with("git -c "),
            "{cmd}"
        );
        assert!(cmd.contains("'core.hooksPath=/dev/null'"), "{cmd}");
        assert!(cmd.contains("'receive.denyCurrentBranch=refuse'"), "{cmd}");
        assert!(cmd.ends_with(" receive-pack"), "{cmd}");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
