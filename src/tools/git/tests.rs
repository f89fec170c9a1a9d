//! Hardened git against hostile repositories, with real git.
//!
//! Each test writes a repository whose `.git/config` (put on disk directly, as a copied
//! repository or a build tool would leave it) makes git run a command that creates a marker
//! file. It runs the same git command twice: as git ran before hardening (only system and
//! global configuration off, which is what `fs.patch` did), proving the vector is real, and
//! through [`GitCommand`] (inspection first, as [`super::open_repository`] does), asserting
//! the marker never appears and, where it can, that git still did its job. The runner is not
//! involved: these pin what git does with the argv and environment; `fs::tests` and the
//! integration tests run the same through the runner.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::*;

/// A repository in a temporary directory, with a markers directory beside it.
struct Repo {
    dir: tempfile::TempDir,
}

fn base_command(cwd: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", crate::runner::server::EXEC_PATH)
        .env("HOME", cwd)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.spawn().expect("git runs");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

impl Repo {
    /// `git init` with one committed file, `f.txt` = "hello\n".
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ws")).unwrap();
        std::fs::create_dir(dir.path().join("markers")).unwrap();
        let repo = Self { dir };
        repo.setup(&["init", "-q", "-b", "main"]);
        repo.setup(&["config", "user.email", "agent@example.com"]);
        repo.setup(&["config", "user.name", "agent"]);
        repo.write("f.txt", "hello\n");
        repo.setup(&["add", "f.txt"]);
        repo.setup(&["commit", "-q", "-m", "init"]);
        repo
    }

    fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.ws().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.ws().join(rel)).unwrap()
    }

    /// An executable script that creates marker `name` (and exits `code`).
    fn script(&self, name: &str, code: i32) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(format!("{name}.sh"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\ntouch '{}'\nexit {code}\n",
                self.marker_path(name).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// A shell command that creates marker `name`.
    fn touch(&self, name: &str) -> String {
        format!("touch '{}'", self.marker_path(name).display())
    }

    fn marker_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("markers").join(name)
    }

    /// Whether marker `name` exists, removing it.
    fn took(&self, name: &str) -> bool {
        std::fs::remove_file(self.marker_path(name)).is_ok()
    }

    /// Trusted setup, as a developer's git would run it.
    fn setup(&self, args: &[&str]) {
        let mut cmd = base_command(&self.ws());
        cmd.args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        let out = run_with_stdin(cmd, b"");
        assert!(out.status.success(), "setup git {args:?}: {out:?}");
    }

    /// Sets a key in the repository's own `.git/config`, as a hostile file on disk would.
    fn config(&self, key: &str, value: &str) {
        self.setup(&["config", "--local", key, value]);
    }

    /// git as it ran before hardening: system and global configuration off, nothing else.
    fn unhardened(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = base_command(&self.ws());
        cmd.args(["-c", "core.fsmonitor=false"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        run_with_stdin(cmd, stdin)
    }

    /// Runs `command` the way a tool does: the inspection first (when it needs the
    /// repository), then the command with the repository's drivers neutralised.
    fn hardened(&self, command: GitCommand, stdin: &[u8]) -> Result<Output, Unsafe> {
        let command = match command.repository {
            Repository::Outside => command,
            Repository::Workspace => {
                let probe = self.exec(&RepoConfig::probe(), b"");
                assert!(probe.status.success(), "probe: {probe:?}");
                command.neutralise(&RepoConfig::parse(&probe.stdout)?)
            }
        };
        Ok(self.exec(&command, stdin))
    }

    fn exec(&self, command: &GitCommand, stdin: &[u8]) -> Output {
        let (program, args) = command.argv().split_first().unwrap();
        // base_command runs git from PATH, as the runner does.
        assert_eq!(program, "git");
        let mut cmd = base_command(&self.ws());
        cmd.args(args).envs(command.env());
        run_with_stdin(cmd, stdin)
    }
}

fn git(subcommand: &str) -> GitCommand {
    GitCommand::new(subcommand, Network::Denied, Repository::Workspace)
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "git failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const CHANGE: &str = "--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-hello\n+bye\n";

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

#[test]
fn a_smudge_filter_of_the_repository_never_runs() {
    let repo = Repo::new();
    repo.config("filter.x.smudge", &format!("{}; cat", repo.touch("smudge")));
    repo.write(".gitattributes", "* filter=x\n");

    // git apply writes the patched file through the smudge filter.
    assert!(
        repo.unhardened(&["apply"], CHANGE.as_bytes())
            .status
            .success()
    );
    assert!(repo.took("smudge"), "the vector is real");
    repo.write("f.txt", "hello\n");

    for repository in [Repository::Outside, Repository::Workspace] {
        let apply = GitCommand::new("apply", Network::Denied, repository);
        ok(&repo.hardened(apply, CHANGE.as_bytes()).unwrap());
        assert!(!repo.took("smudge"), "{repository:?}");
        assert_eq!(repo.read("f.txt"), "bye\n", "{repository:?}");
        repo.write("f.txt", "hello\n");
    }
    // Checkout writes through smudge too.
    std::fs::remove_file(repo.ws().join("f.txt")).unwrap();
    ok(&repo
        .hardened(git("checkout").args(["--", "f.txt"]), b"")
        .unwrap());
    assert!(!repo.took("smudge"));
    assert_eq!(repo.read("f.txt"), "hello\n");
}

#[test]
fn clean_and_process_filters_never_run_even_when_required() {
    let repo = Repo::new();
    repo.config("filter.x.clean", &format!("{}; cat", repo.touch("clean")));
    repo.config("filter.x.required", "true");
    // A subsection with a dot and `=`: only GIT_CONFIG_KEY_<n> can name it.
    repo.config(
        "filter.a=b.c.process",
        &format!("sh -c \"{}; exit 1\"", repo.touch("process")),
    );
    repo.write(".gitattributes", "*.txt filter=x\n*.bin filter=a=b.c\n");
    repo.write("g.txt", "g\n");
    repo.write("h.bin", "h\n");

    repo.unhardened(&["add", "g.txt", "h.bin"], b"");
    assert!(
        repo.took("clean") && repo.took("process"),
        "the vectors are real"
    );
    repo.setup(&["reset", "-q"]);
    // The trusted reset ran them too; only the hardened add below counts.
    repo.took("clean");
    repo.took("process");

    ok(&repo
        .hardened(git("add").args(["g.txt", "h.bin"]), b"")
        .unwrap());
    assert!(!repo.took("clean"));
    assert!(!repo.took("process"));
    let staged = ok(&repo
        .hardened(git("diff").args(["--cached", "--name-only"]), b"")
        .unwrap());
    assert_eq!(staged, "g.txt\nh.bin\n");
}

// ---------------------------------------------------------------------------------------------
// Hooks, hooksPath, fsmonitor
// ---------------------------------------------------------------------------------------------

#[test]
fn hooks_in_the_repository_never_run() {
    let repo = Repo::new();
    let hooks = repo.ws().join(".git/hooks");
    for (hook, code) in [("pre-commit", 0), ("commit-msg", 0), ("post-commit", 0)] {
        std::fs::copy(repo.script(hook, code), hooks.join(hook)).unwrap();
    }
    repo.write("f.txt", "two\n");
    assert!(
        repo.unhardened(&["commit", "-qam", "two"], b"")
            .status
            .success()
    );
    for hook in ["pre-commit", "commit-msg", "post-commit"] {
        assert!(repo.took(hook), "the vector is real: {hook}");
    }

    repo.write("f.txt", "three\n");
    ok(&repo
        .hardened(git("commit").args(["-qam", "three"]), b"")
        .unwrap());
    for hook in ["pre-commit", "commit-msg", "post-commit"] {
        assert!(!repo.took(hook), "{hook}");
    }
    let log = ok(&repo
        .hardened(git("log").args(["-1", "--format=%s"]), b"")
        .unwrap());
    assert_eq!(log, "three\n", "the commit was made");
}

#[test]
fn core_hooks_path_of_the_repository_is_overridden() {
    let repo = Repo::new();
    let dir = repo.ws().join("tools/hooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(repo.script("hookspath", 0), dir.join("pre-commit")).unwrap();
    repo.config("core.hooksPath", "tools/hooks");
    repo.write("f.txt", "two\n");
    assert!(
        repo.unhardened(&["commit", "-qam", "two"], b"")
            .status
            .success()
    );
    assert!(repo.took("hookspath"), "the vector is real");

    repo.write("f.txt", "three\n");
    ok(&repo
        .hardened(git("commit").args(["-qam", "three"]), b"")
        .unwrap());
    assert!(!repo.took("hookspath"));
}

#[test]
fn core_fsmonitor_of_the_repository_never_runs() {
    let repo = Repo::new();
    repo.config("core.fsmonitor", &repo.script("fsmonitor", 1));
    repo.write("f.txt", "changed\n");
    // What fs.patch passed before: `-c core.fsmonitor=false` on the command line. Without it:
    let mut cmd = base_command(&repo.ws());
    cmd.args(["status", "--short"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    run_with_stdin(cmd, b"");
    assert!(repo.took("fsmonitor"), "the vector is real");

    let status = ok(&repo
        .hardened(git("status").arg("--short").read_only(), b"")
        .unwrap());
    assert!(!repo.took("fsmonitor"));
    assert_eq!(status, " M f.txt\n");
}

// ---------------------------------------------------------------------------------------------
// Diff: diff.external, diff drivers, textconv; merge drivers
// ---------------------------------------------------------------------------------------------

#[test]
fn diff_external_and_diff_driver_commands_never_run() {
    let repo = Repo::new();
    repo.config("diff.external", &repo.touch("external"));
    repo.config("diff.x.command", &repo.touch("command"));
    repo.write(".gitattributes", "g.txt diff=x\n");
    repo.write("g.txt", "g\n");
    repo.setup(&["add", "g.txt", ".gitattributes"]);
    repo.write("f.txt", "changed\n");
    repo.write("g.txt", "changed\n");

    repo.unhardened(&["diff"], b"");
    assert!(
        repo.took("external") || repo.took("command"),
        "the vector is real"
    );
    repo.took("external");
    repo.took("command");

    let diff = ok(&repo.hardened(git("diff"), b"").unwrap());
    assert!(!repo.took("external") && !repo.took("command"));
    assert!(diff.contains("-hello\n+changed"), "{diff}");
    assert!(diff.contains("+++ b/g.txt"), "{diff}");
    let shown = ok(&repo.hardened(git("log").args(["-p", "-1"]), b"").unwrap());
    assert!(shown.contains("init"), "{shown}");
    assert!(!repo.took("external") && !repo.took("command"));
}

#[test]
fn textconv_of_the_repository_never_runs() {
    let repo = Repo::new();
    repo.config(
        "diff.x.textconv",
        &format!("sh -c '{}; cat \"$1\"' --", repo.touch("textconv")),
    );
    repo.write(".gitattributes", "* diff=x\n");
    repo.write("f.txt", "changed\n");
    repo.unhardened(&["diff"], b"");
    assert!(repo.took("textconv"), "the vector is real");
    repo.unhardened(&["blame", "f.txt"], b"");
    assert!(repo.took("textconv"), "the vector is real for blame");

    let diff = ok(&repo.hardened(git("diff"), b"").unwrap());
    assert!(diff.contains("+changed"), "{diff}");
    let blame = ok(&repo.hardened(git("blame").arg("f.txt"), b"").unwrap());
    assert!(blame.contains("changed"), "{blame}");
    assert!(!repo.took("textconv"));
}

#[test]
fn merge_drivers_of_the_repository_never_run_in_a_three_way_apply() {
    let repo = Repo::new();
    repo.write("f.txt", "a\nb\nc\n");
    repo.setup(&["commit", "-qam", "base"]);
    let diff = "diff --git a/f.txt b/f.txt\nindex de98044..8fbbfa8 100644\n--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n";
    repo.write("f.txt", "a\nb2\nc\n");
    repo.setup(&["commit", "-qam", "theirs"]);
    repo.config(
        "merge.x.driver",
        &format!("{}; exit 0", repo.touch("merge")),
    );
    repo.write(".gitattributes", "* merge=x\n");

    repo.unhardened(&["apply", "--3way"], diff.as_bytes());
    assert!(repo.took("merge"), "the vector is real");
    repo.setup(&["reset", "-q", "--hard"]);

    let out = repo
        .hardened(
            GitCommand::new("apply", Network::Denied, Repository::Workspace).arg("--3way"),
            diff.as_bytes(),
        )
        .unwrap();
    assert!(!repo.took("merge"));
    // The driver is not run, so the merge is not made: a conflict, the file left as it was.
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(repo.read("f.txt"), "a\nb2\nc\n");
}

// ---------------------------------------------------------------------------------------------
// Pager, editor, signing
// ---------------------------------------------------------------------------------------------

#[test]
fn pagers_of_the_repository_never_run_even_on_a_terminal() {
    // git only pages to a terminal; `script` gives it one.
    assert!(
        Path::new("/usr/bin/script").is_file(),
        "`script` (util-linux) is needed to give git a terminal: apt-get install bsdutils"
    );
    let repo = Repo::new();
    repo.config("core.pager", &format!("{}; cat", repo.touch("pager")));
    repo.config("pager.log", &format!("{}; cat", repo.touch("pager-log")));
    let on_tty = |env: &BTreeMap<String, String>, argv: &str| {
        let mut cmd = Command::new("/usr/bin/script");
        cmd.current_dir(repo.ws())
            .env_clear()
            .env("PATH", crate::runner::server::EXEC_PATH)
            .env("HOME", repo.ws())
            .envs(env)
            .args(["-qec", argv, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_with_stdin(cmd, b"")
    };
    let plain: BTreeMap<String, String> = [
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    on_tty(&plain, "git log -1 --oneline");
    assert!(repo.took("pager-log"), "the vector is real");

    let probe = repo.exec(&RepoConfig::probe(), b"");
    let log = git("log")
        .args(["-1", "--oneline"])
        .neutralise(&RepoConfig::parse(&probe.stdout).unwrap());
    let out = on_tty(&log.env(), &log.argv().join(" "));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("init"),
        "{out:?}"
    );
    assert!(!repo.took("pager") && !repo.took("pager-log"));
}

#[test]
fn editors_of_the_repository_never_run() {
    let repo = Repo::new();
    repo.config("core.editor", &repo.touch("editor"));
    repo.write("f.txt", "two\n");
    repo.setup(&["add", "f.txt"]);
    repo.unhardened(&["commit", "-q"], b"");
    assert!(repo.took("editor"), "the vector is real");

    // No message and no editor: git aborts rather than asking anyone.
    let out = repo.hardened(git("commit").arg("-q"), b"").unwrap();
    assert!(!repo.took("editor"));
    assert!(!out.status.success());
    ok(&repo
        .hardened(git("commit").args(["-qm", "two"]), b"")
        .unwrap());
}

#[test]
fn signing_programs_of_the_repository_never_run() {
    let repo = Repo::new();
    repo.config("commit.gpgSign", "true");
    repo.config("gpg.program", &repo.script("gpg", 1));
    repo.write("f.txt", "two\n");
    repo.unhardened(&["commit", "-qam", "two"], b"");
    assert!(repo.took("gpg"), "the vector is real");

    ok(&repo
        .hardened(git("commit").args(["-qam", "two"]), b"")
        .unwrap());
    assert!(!repo.took("gpg"));
    repo.config("gpg.format", "ssh");
    repo.config("gpg.ssh.program", &repo.script("gpg-ssh", 1));
    repo.config("gpg.ssh.defaultKeyCommand", &repo.touch("key-command"));
    repo.write("f.txt", "three\n");
    ok(&repo
        .hardened(git("commit").args(["-qam", "three"]), b"")
        .unwrap());
    assert!(!repo.took("gpg-ssh") && !repo.took("key-command"));
}

// ---------------------------------------------------------------------------------------------
// Credentials, ssh, transports
// ---------------------------------------------------------------------------------------------

#[test]
fn credential_helpers_and_askpass_of_the_repository_never_run() {
    let repo = Repo::new();
    repo.config(
        "credential.helper",
        &format!("!{}; echo", repo.touch("helper")),
    );
    repo.config(
        "credential.https://example.com.helper",
        &format!("!{}; echo", repo.touch("url-helper")),
    );
    repo.config("core.askPass", &repo.script("askpass", 0));
    let request = b"protocol=https\nhost=example.com\n\n";
    repo.unhardened(&["credential", "fill"], request);
    assert!(
        repo.took("helper") && repo.took("url-helper") && repo.took("askpass"),
        "the vectors are real"
    );

    let out = repo
        .hardened(git("credential").arg("fill"), request)
        .unwrap();
    assert!(!repo.took("helper") && !repo.took("url-helper") && !repo.took("askpass"));
    // Nobody to ask: git gives up rather than prompting.
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("terminal prompts disabled"),
        "{out:?}"
    );
}

#[test]
fn core_ssh_command_of_the_repository_never_runs() {
    let repo = Repo::new();
    repo.config("core.sshCommand", &repo.touch("ssh"));
    repo.unhardened(&["ls-remote", "ssh://example.invalid/repo.git"], b"");
    assert!(repo.took("ssh"), "the vector is real");

    let denied = repo
        .hardened(git("ls-remote").arg("ssh://example.invalid/repo.git"), b"")
        .unwrap();
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("transport 'ssh' not allowed"),
        "{denied:?}"
    );
    // A network tool that allows ssh gets plain ssh, never the repository's command.
    let allowed = GitCommand::new(
        "ls-remote",
        Network::Allowed(&["ssh"]),
        Repository::Workspace,
    )
    .arg("ssh://example.invalid/repo.git");
    let out = repo.hardened(allowed, b"").unwrap();
    assert!(!out.status.success());
    assert!(!repo.took("ssh"));
}

#[test]
fn ext_and_local_transports_are_refused_whatever_the_repository_allows() {
    let repo = Repo::new();
    repo.config("protocol.allow", "always");
    repo.config("protocol.ext.allow", "always");
    repo.config("protocol.file.allow", "always");
    repo.config(
        "remote.evil.url",
        &format!("ext::sh -c {}", repo.touch("ext").replace(' ', "% ")),
    );
    // A local "remote" runs its upload-pack command here.
    repo.config("remote.local.url", &repo.ws().to_string_lossy());
    repo.config(
        "remote.local.uploadpack",
        &format!("{}; git-upload-pack", repo.touch("uploadpack")),
    );
    repo.unhardened(&["ls-remote", "evil"], b"");
    repo.unhardened(&["ls-remote", "local"], b"");
    assert!(
        repo.took("ext") && repo.took("uploadpack"),
        "the vectors are real"
    );

    for network in [Network::Denied, Network::Allowed(&["https"])] {
        for (remote, transport) in [("evil", "ext"), ("local", "file")] {
            let out = repo
                .hardened(
                    GitCommand::new("ls-remote", network, Repository::Workspace).arg(remote),
                    b"",
                )
                .unwrap();
            assert!(!out.status.success(), "{network:?} {remote}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("transport '{transport}' not allowed")),
                "{network:?} {remote}: {stderr}"
            );
        }
    }
    assert!(!repo.took("ext") && !repo.took("uploadpack"));
}

// ---------------------------------------------------------------------------------------------
// Includes, the repository's location
// ---------------------------------------------------------------------------------------------

#[test]
fn includes_in_the_repository_config_are_refused_naming_the_key() {
    let repo = Repo::new();
    repo.write(
        "included.cfg",
        &format!("[filter \"y\"]\n\tsmudge = {}\n", repo.touch("included")),
    );
    repo.write(".gitattributes", "* filter=y\n");
    repo.config("include.path", "../included.cfg");
    repo.unhardened(&["apply"], CHANGE.as_bytes());
    assert!(repo.took("included"), "the vector is real");
    repo.write("f.txt", "hello\n");

    let refused = repo.hardened(
        GitCommand::new("apply", Network::Denied, Repository::Workspace),
        CHANGE.as_bytes(),
    );
    assert_eq!(
        refused.unwrap_err(),
        Unsafe {
            key: "include.path".to_owned()
        }
    );
    repo.setup(&["config", "--local", "--unset", "include.path"]);
    repo.config("includeIf.gitdir:/.path", "../included.cfg");
    let refused = repo.hardened(git("status"), b"").unwrap_err();
    assert_eq!(refused.key, "includeif.gitdir:/.path");
    assert!(
        refused.to_string().contains("includeif.gitdir:/.path"),
        "{refused}"
    );
    assert!(!repo.took("included"));
}

#[test]
fn core_worktree_and_a_repository_above_the_workspace_are_ignored() {
    let repo = Repo::new();
    let elsewhere = repo.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    repo.config("core.worktree", &elsewhere.to_string_lossy());
    let status = ok(&repo
        .hardened(git("status").arg("--short").read_only(), b"")
        .unwrap());
    assert_eq!(
        status, "",
        "the work tree is the workspace, not core.worktree"
    );

    // Outside: a repository enclosing the working directory is not found either.
    let sub = repo.ws().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let outside =
        GitCommand::new("rev-parse", Network::Denied, Repository::Outside).arg("--git-dir");
    let (_, args) = outside.argv().split_first().unwrap();
    let mut cmd = base_command(&sub);
    cmd.args(args).envs(outside.env());
    let out = run_with_stdin(cmd, b"");
    assert!(!out.status.success(), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// The builder and the parser
// ---------------------------------------------------------------------------------------------

#[test]
fn the_inspection_lists_names_only_and_neutralises_per_name_commands() {
    let listing = b"core.bare\0filter.lfs.smudge\0filter.lfs.required\0filter.a.b=c.clean\0\
                    diff.X.textconv\0merge.m.driver\0credential.https://h.helper\0\
                    remote.origin.uploadpack\0remote.origin.url\0user.name\0filter.lfs.smudge\0";
    let config = RepoConfig::parse(listing).unwrap();
    assert_eq!(
        config.overrides(),
        &[
            ("filter.lfs.smudge".to_owned(), ""),
            ("filter.lfs.required".to_owned(), "false"),
            ("filter.a.b=c.clean".to_owned(), ""),
            ("diff.X.textconv".to_owned(), ""),
            ("merge.m.driver".to_owned(), ""),
            ("credential.https://h.helper".to_owned(), ""),
            ("remote.origin.uploadpack".to_owned(), "git-upload-pack"),
        ]
    );
    assert_eq!(RepoConfig::parse(b"").unwrap(), RepoConfig::default());
    for key in [
        "include.path",
        "INCLUDE.Path",
        "includeif.onbranch:main.path",
    ] {
        let listing = format!("user.name\0{key}\0");
        assert_eq!(RepoConfig::parse(listing.as_bytes()).unwrap_err().key, key);
    }
}

#[test]
fn the_environment_fixes_configuration_protocols_and_repository() {
    let env = git("status").read_only().env();
    for (key, value) in [
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_ATTR_NOSYSTEM", "1"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_ALLOW_PROTOCOL", ""),
        ("GIT_DIR", ".git"),
        ("GIT_COMMON_DIR", ".git"),
        ("GIT_WORK_TREE", "."),
        ("GIT_OPTIONAL_LOCKS", "0"),
        ("GIT_NO_REPLACE_OBJECTS", "1"),
    ] {
        assert_eq!(env.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(!env.contains_key("GIT_SSH_COMMAND") && !env.contains_key("GIT_ASKPASS"));
    assert_eq!(env["GIT_CONFIG_COUNT"], STATIC_OVERRIDES.len().to_string());
    assert_eq!(env["GIT_CONFIG_KEY_0"], "core.hooksPath");
    assert!(!git("apply").env().contains_key("GIT_OPTIONAL_LOCKS"));
    let network = GitCommand::new(
        "fetch",
        Network::Allowed(&["https", "ssh"]),
        Repository::Workspace,
    );
    assert_eq!(network.env()["GIT_ALLOW_PROTOCOL"], "https:ssh");
    let outside = GitCommand::new("apply", Network::Denied, Repository::Outside).env();
    assert_eq!(outside["GIT_DIR"], "/dev/null");
    assert!(!outside.contains_key("GIT_WORK_TREE"));
    assert_eq!(
        git("diff").arg("x").argv(),
        [
            "git",
            "--no-pager",
            "diff",
            "--no-ext-diff",
            "--no-textconv",
            "x"
        ]
    );
    assert_eq!(
        git("blame").argv(),
        ["git", "--no-pager", "blame", "--no-textconv"]
    );
}
