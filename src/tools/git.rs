//! Hardened git: the one way a tool runs git in the workspace.
//!
//! A repository can name commands for git to run: hooks, `core.fsmonitor`, `core.hooksPath`,
//! filter drivers (`filter.<name>.clean/smudge/process`, selected by `.gitattributes`), diff
//! drivers and textconv, merge drivers, `diff.external`, pagers, editors, `core.sshCommand`,
//! credential helpers, `gpg.program`, transports such as `ext::`. Any of them turns "apply
//! this diff" into "run what the repository says". [`GitCommand`] builds the argv and
//! environment of a runner `exec` so that git runs none of them:
//!
//! - no system or global configuration (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`,
//!   `GIT_ATTR_NOSYSTEM`; `HOME` is the workspace, so `~/.gitconfig` would be the agent's);
//! - fixed overrides ([`STATIC_OVERRIDES`]) in the command scope, which git reads after the
//!   repository's own files, so they win: hooks, fsmonitor, pager, editor, askpass, ssh,
//!   credential helpers, signing programs, attribute file, external diff;
//! - the per-name drivers the repository defines (which no fixed key can reach) neutralised
//!   one by one ([`RepoConfig`]): git is asked for the names of the repository's own keys
//!   first (`git config --list --name-only --no-includes`, which runs nothing), and each
//!   command-valued one gets an empty value;
//! - `include.path` and `includeIf.*.path` refused ([`Unsafe`]): the included file may live in
//!   the working tree, which file tools write, so what was inspected might not be what git
//!   reads a moment later;
//! - the repository fixed to the workspace's own `.git` directory (`GIT_DIR`,
//!   `GIT_COMMON_DIR`, `GIT_WORK_TREE`), so neither a `.git` file pointing elsewhere, a
//!   `commondir` file, `core.worktree` nor a repository above the workspace is used;
//!   commands that need no repository run with `GIT_DIR=/dev/null` and read no repository
//!   configuration at all;
//! - no transport unless the tool is a network tool ([`Network`]): `GIT_ALLOW_PROTOCOL` is
//!   empty, which no `protocol.*.allow` of the repository can widen; network tools name
//!   their protocols (never `ext`, `fd` or `file`);
//! - flags where a subcommand has them (`--no-ext-diff`, `--no-textconv`, `--no-pager`).
//!
//! Overrides travel as `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_<n>`/`GIT_CONFIG_VALUE_<n>` rather
//! than `-c`: a key's subsection may contain `=` (`[filter "a=b"]`), which `-c key=value`
//! cannot spell. Git passes both to the git processes it starts itself.
//!
//! What an empty value does was checked against git 2.47's source and behaviour (the tests
//! below run real git against hostile repositories): an empty filter command is disabled
//! (convert.c runs a driver only `if (cmd && *cmd)`, `process` likewise); an empty
//! `credential.helper` resets the helper list; an empty `core.askPass` is skipped; an empty
//! diff `command`/`textconv`, merge `driver` or `diff.external` is a command git cannot run,
//! so the operation fails or (a merge) reports a conflict, and never runs repository code.
//!
//! The inspection and the command are two execs: a tool that can write `.git/config` between
//! them could add a driver. Only tools that run repository code by design can write there
//! (file tools never write inside `.git`), and those already run what they like.
//!
//! The `git.*` tools live beside this file (`git/<tool>.rs`, what they share in
//! `git/shared.rs`) and run git only through [`GitCommand`].
//!
//! This module never runs git on the host: it builds [`Program`]s for the process helper
//! ([`crate::tools::exec`]), which runs them in the session's runner.

use std::collections::BTreeMap;

use crate::error_code::ErrorCode;
use crate::runner::protocol::{EntryType, Reply, Request};
use crate::tools::exec::{self, Finished, Program};
use crate::tools::{ToolContext, ToolFailure, call_runner, runner_failure};

/// Which transports a command may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// None: every tool that is not a network tool. Local paths (`file`) are refused too: a
    /// local "remote" runs `remote.<name>.uploadpack` on this machine.
    Denied,
    /// Exactly these protocols (`https`, `ssh`, ...), for network tools.
    Allowed(&'static [&'static str]),
}

/// Which repository a command sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repository {
    /// None: `GIT_DIR=/dev/null`, so git runs as outside any repository and reads no
    /// repository configuration (`git apply` without `--3way` needs nothing more).
    Outside,
    /// The workspace root's `.git` directory, inspected first ([`RepoConfig`]).
    Workspace,
}

/// Fixed configuration overrides, applied after every configuration file git reads.
///
/// Each line names what it turns off. A value git cannot run as a command ("") fails closed.
pub const STATIC_OVERRIDES: &[(&str, &str)] = &[
    // Hooks: `<hooksPath>/<name>` is never an executable under /dev/null.
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    // `:` is git's "no editor": the message file is used as it is.
    ("core.editor", ":"),
    ("sequence.editor", ":"),
    // Empty: skipped, then GIT_TERMINAL_PROMPT=0 refuses to prompt.
    ("core.askPass", ""),
    // Plain ssh from PATH (only reachable when a network tool allows `ssh`).
    ("core.sshCommand", "ssh"),
    ("core.alternateRefsCommand", ""),
    ("core.attributesFile", "/dev/null"),
    // Empty: git cannot run it; diff subcommands also get --no-ext-diff.
    ("diff.external", ""),
    // Empty resets the list of helpers, URL-specific ones included.
    ("credential.helper", ""),
    ("protocol.allow", "never"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("push.gpgSign", "false"),
    ("merge.verifySignatures", "false"),
    ("log.showSignature", "false"),
    ("gpg.program", "gpg"),
    ("gpg.openpgp.program", "gpg"),
    ("gpg.x509.program", "gpgsm"),
    ("gpg.ssh.program", "ssh-keygen"),
    ("gpg.ssh.defaultKeyCommand", ""),
    ("interactive.diffFilter", ""),
    // Submodules have repositories of their own, which were not inspected.
    ("submodule.recurse", "false"),
    // The index is often written on the host (the session's clone, as root) and read in the
    // sandbox, where owners are mapped and the hand-over to the sandbox user changed every
    // ctime: compare only what says a file's content changed (whole-second mtime, size),
    // or every file looks modified and `apply --3way` refuses ("does not match index").
    ("core.checkStat", "minimal"),
    ("core.trustCtime", "false"),
    // No background maintenance processes.
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
];

/// Per-name keys whose value is a command, as `(section, variable)`, and the value that
/// neutralises them. A repository can define any number of names (`[filter "lfs"]`), so
/// these are found by inspection and overridden one by one.
const PER_NAME_COMMANDS: &[(&str, &str, &str)] = &[
    ("filter", "clean", ""),
    ("filter", "smudge", ""),
    ("filter", "process", ""),
    // A required filter without a command would fail every file it selects.
    ("filter", "required", "false"),
    ("diff", "command", ""),
    ("diff", "textconv", ""),
    ("merge", "driver", ""),
    ("credential", "helper", ""),
    ("remote", "uploadpack", "git-upload-pack"),
    ("remote", "receivepack", "git-receive-pack"),
    ("mergetool", "cmd", ""),
    ("difftool", "cmd", ""),
    ("tar", "command", ""),
    // Config-based hooks (newer git); harmless where git does not know them.
    ("hook", "command", ""),
];

/// Sections whose keys make git read another file, which cannot be neutralised.
const INCLUDE_SECTIONS: &[&str] = &["include", "includeif"];

/// Subcommands that take `--no-ext-diff --no-textconv` (they run diffs by default).
const DIFF_SUBCOMMANDS: &[&str] = &[
    "diff",
    "diff-files",
    "diff-index",
    "diff-tree",
    "log",
    "show",
    "whatchanged",
];

/// Largest configuration listing accepted from the inspection, in bytes.
const PROBE_OUTPUT_BYTES: u64 = 256 * 1024;

/// The repository's configuration uses a key that cannot be neutralised from the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the repository's configuration sets {key}, which makes git read another file; git tools \
     refuse to run on it (remove the key from .git/config outside the session)"
)]
pub struct Unsafe {
    /// The key, as git lists it (section and variable lowercased).
    pub key: String,
}

/// What the inspection found in the repository's own configuration: the per-name command keys
/// to neutralise, with their neutral values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoConfig {
    overrides: Vec<(String, &'static str)>,
}

impl RepoConfig {
    /// The inspection command: the names of every key git reads for this repository (the
    /// command scope adds only [`STATIC_OVERRIDES`]), without following includes. It runs
    /// no hook, filter or driver.
    pub fn probe() -> GitCommand {
        GitCommand::new("config", Network::Denied, Repository::Workspace)
            .args(["--list", "--name-only", "-z", "--no-includes"])
            .read_only()
    }

    /// Parses the probe's output (NUL-terminated key names).
    pub fn parse(listing: &[u8]) -> Result<Self, Unsafe> {
        let mut overrides: Vec<(String, &'static str)> = Vec::new();
        for raw in listing.split(|b| *b == 0).filter(|k| !k.is_empty()) {
            let key = String::from_utf8_lossy(raw).into_owned();
            // Section and variable are case-insensitive (git lists them lowercased); the
            // subsection, between them, is kept as written and may contain dots.
            let Some((section, rest)) = key.split_once('.') else {
                continue;
            };
            let section = section.to_ascii_lowercase();
            if INCLUDE_SECTIONS.contains(&section.as_str()) {
                return Err(Unsafe { key });
            }
            let Some((_, variable)) = rest.rsplit_once('.') else {
                continue;
            };
            let variable = variable.to_ascii_lowercase();
            if let Some((_, _, value)) = PER_NAME_COMMANDS
                .iter()
                .find(|(s, v, _)| *s == section && *v == variable)
                && !overrides.iter().any(|(k, _)| *k == key)
            {
                overrides.push((key, value));
            }
        }
        Ok(Self { overrides })
    }

    /// The keys neutralised, with their values.
    pub fn overrides(&self) -> &[(String, &'static str)] {
        &self.overrides
    }
}

/// A git command line and environment for a [`Program`], hardened as the module docs say.
/// Build it, then [`run`] it (or take its [`GitCommand::program`]).
#[derive(Debug, Clone)]
pub struct GitCommand {
    network: Network,
    repository: Repository,
    read_only: bool,
    argv: Vec<String>,
    repo_overrides: Vec<(String, &'static str)>,
    identity: Option<(String, String)>,
}

impl GitCommand {
    /// `git <subcommand>`, with the subcommand's own hardening flags.
    pub fn new(subcommand: &str, network: Network, repository: Repository) -> Self {
        let mut argv: Vec<String> = ["git", "--no-pager", subcommand]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if DIFF_SUBCOMMANDS.contains(&subcommand) {
            argv.extend(["--no-ext-diff".to_owned(), "--no-textconv".to_owned()]);
        } else if subcommand == "blame" {
            argv.push("--no-textconv".to_owned());
        }
        Self {
            network,
            repository,
            read_only: false,
            argv,
            repo_overrides: Vec::new(),
            identity: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.argv.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Marks the command read-only: git then takes no optional locks (it does not refresh the
    /// index behind a concurrent writer's back).
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Neutralises the per-name drivers the inspection found.
    pub fn neutralise(mut self, config: &RepoConfig) -> Self {
        self.repo_overrides = config.overrides.clone();
        self
    }

    /// The author and committer of the commits the command makes (no configuration file is
    /// read for them).
    pub fn identity(mut self, name: impl Into<String>, email: impl Into<String>) -> Self {
        self.identity = Some((name.into(), email.into()));
        self
    }

    /// The command line.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The environment (the runner adds `PATH`, `HOME` and `LANG` and nothing else).
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_ATTR_NOSYSTEM", "1"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_PAGER", "cat"),
            ("PAGER", "cat"),
            ("GIT_EDITOR", ":"),
            ("GIT_SEQUENCE_EDITOR", ":"),
            ("GIT_PROTOCOL_FROM_USER", "0"),
            ("GIT_NO_REPLACE_OBJECTS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let allowed = match self.network {
            Network::Denied => String::new(),
            Network::Allowed(protocols) => protocols.join(":"),
        };
        env.insert("GIT_ALLOW_PROTOCOL".to_owned(), allowed);
        match self.repository {
            Repository::Outside => {
                env.insert("GIT_DIR".to_owned(), "/dev/null".to_owned());
            }
            Repository::Workspace => {
                // Relative to the working directory, which is always the workspace root.
                for (k, v) in [
                    ("GIT_DIR", ".git"),
                    ("GIT_COMMON_DIR", ".git"),
                    ("GIT_WORK_TREE", "."),
                ] {
                    env.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        if self.read_only {
            env.insert("GIT_OPTIONAL_LOCKS".to_owned(), "0".to_owned());
        }
        if let Some((name, email)) = &self.identity {
            for key in ["GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"] {
                env.insert(key.to_owned(), name.clone());
            }
            for key in ["GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"] {
                env.insert(key.to_owned(), email.clone());
            }
        }
        let overrides = STATIC_OVERRIDES
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain(self.repo_overrides.iter().map(|(k, v)| (k.as_str(), *v)));
        let mut count = 0usize;
        for (key, value) in overrides {
            env.insert(format!("GIT_CONFIG_KEY_{count}"), key.to_owned());
            env.insert(format!("GIT_CONFIG_VALUE_{count}"), value.to_owned());
            count += 1;
        }
        env.insert("GIT_CONFIG_COUNT".to_owned(), count.to_string());
        env
    }

    /// The environment of the one git the service runs on the host, the session's clone: the
    /// same hardening with `protocols` allowed and no repository selected (clone makes its own).
    pub fn host_clone_env(protocols: &'static [&'static str]) -> BTreeMap<String, String> {
        let mut env = Self::new("clone", Network::Allowed(protocols), Repository::Outside).env();
        env.remove("GIT_DIR");
        env
    }

    /// The program: run at the workspace root with `stdin`, keeping at most `max_output` bytes
    /// of each stream ([`exec`](crate::tools::exec) enforces the invocation's deadline).
    pub fn program(&self, stdin: Option<Vec<u8>>, max_output: u64) -> Program {
        self.program_keeping(stdin, max_output, max_output)
    }

    /// [`GitCommand::program`] keeping up to `capture` bytes of each stream beyond the
    /// `inline` bytes the answer carries (for the full output's artifact).
    pub fn program_keeping(&self, stdin: Option<Vec<u8>>, inline: u64, capture: u64) -> Program {
        Program::new(self.argv.iter().cloned())
            .envs(self.env())
            .cwd(".")
            .stdin(stdin)
            .inline_limit(inline)
            .capture_limit(capture)
    }
}

/// What git printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (124 after a timeout).
    pub exit_code: i32,
    /// Standard output, at most the requested bytes.
    pub stdout: Vec<u8>,
    /// Standard error, at most the requested bytes.
    pub stderr: Vec<u8>,
    /// Whether stdout was cut.
    pub stdout_truncated: bool,
    /// Every byte kept of stdout when it was cut (at most the capture limit), else empty.
    pub stdout_full: Vec<u8>,
    /// Whether the timeout killed it.
    pub timed_out: bool,
}

impl From<Finished> for Output {
    fn from(finished: Finished) -> Self {
        Self {
            exit_code: finished.exit_code,
            stdout_truncated: finished.stdout.truncated,
            stdout_full: if finished.stdout.truncated {
                finished.stdout.kept().to_vec()
            } else {
                Vec::new()
            },
            stdout: finished.stdout.inline,
            stderr: finished.stderr.inline,
            timed_out: finished.timed_out,
        }
    }
}

/// Runs `command` in the session's runner through [`exec::run`], within the invocation's
/// deadline, its output published live as it runs.
pub async fn run(
    ctx: &ToolContext,
    command: &GitCommand,
    stdin: Option<Vec<u8>>,
    max_output: u64,
) -> Result<Output, ToolFailure> {
    exec::run(ctx, &command.program(stdin, max_output))
        .await
        .map(Output::from)
}

/// [`run`] keeping up to `capture` bytes of stdout beyond the `inline` ones
/// ([`Output::stdout_full`]).
pub async fn run_keeping(
    ctx: &ToolContext,
    command: &GitCommand,
    inline: u64,
    capture: u64,
) -> Result<Output, ToolFailure> {
    exec::run(ctx, &command.program_keeping(None, inline, capture))
        .await
        .map(Output::from)
}

/// Opens the workspace's repository for a command that needs one: `.git` at the root must be a
/// real directory (a `.git` file or symlink would point git elsewhere: `policy_denied`), and
/// its configuration must pass [`RepoConfig::parse`] (`policy_denied` naming the key). Returns
/// `None` when there is no `.git` at all; the caller then runs [`Repository::Outside`].
///
/// Refusals are `policy_denied`: the service declines to run git on a repository it cannot
/// make safe, which retrying does not change; a git that cannot list the configuration (a
/// malformed file) is `execution_failed` with git's message.
pub async fn open_repository(ctx: &ToolContext) -> Result<Option<RepoConfig>, ToolFailure> {
    let entry = match call_runner(
        ctx,
        Request::Stat {
            path: ".git".to_owned(),
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
        None => return Ok(None),
        Some(EntryType::Dir) => {}
        Some(_) => {
            return Err(ToolFailure::new(
                ErrorCode::PolicyDenied,
                ".git is not a directory (a .git file or symlink points git at a repository \
                 elsewhere); git tools refuse to run on it",
            ));
        }
    }
    // An inspection of the service's own, not output the caller asked for: not published.
    let probe = exec::run(
        ctx,
        &RepoConfig::probe()
            .program(None, PROBE_OUTPUT_BYTES)
            .quiet(),
    )
    .await
    .map(Output::from)?;
    if probe.timed_out {
        return Err(ToolFailure::new(
            ErrorCode::Timeout,
            "the tool's timeout expired",
        ));
    }
    // git config --list exits 0 even when nothing is set; anything else is a broken file.
    if probe.exit_code != 0 {
        let stderr = String::from_utf8_lossy(&probe.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(ToolFailure::new(
            ErrorCode::ExecutionFailed,
            format!("reading the repository's configuration failed: {first}"),
        ));
    }
    if probe.stdout_truncated {
        return Err(ToolFailure::new(
            ErrorCode::PolicyDenied,
            "the repository's configuration is too large to inspect; git tools refuse to run \
             on it",
        ));
    }
    RepoConfig::parse(&probe.stdout)
        .map(Some)
        .map_err(|e| ToolFailure::new(ErrorCode::PolicyDenied, e.to_string()))
}

/// Declares the `git.*` tools, one `module => Type` line each (as `tools::fs` does): the
/// module is the tool's file, and the line both declares it and registers the tool.
macro_rules! family {
    ($($module:ident => $tool:ident),* $(,)?) => {
        $(mod $module;)*

        /// Adds every tool of the `git.*` family to `registry`.
        pub fn register(registry: &mut crate::tools::catalog::Registry) {
            $(registry.register($module::$tool);)*
        }
    };
}

family! {
    apply_patch => ApplyPatch,
    blame => Blame,
    branch_list => BranchList,
    checkout => Checkout,
    commit => Commit,
    diff => Diff,
    diff_file => DiffFile,
    fetch => Fetch,
    log => Log,
    pull => Pull,
    push => Push,
    show => Show,
    status => Status,
}

/// What the family's tools share: metadata defaults, running git with the exit-code mapping,
/// the metadata allowlists, the commit identity and the remotes.
mod shared;

#[cfg(test)]
mod tests;
