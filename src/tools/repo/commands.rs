//! The argv each repo action runs, per language (REFERENCE §3.6 and, for `repo.test_file`,
//! §13.3).
//!
//! A [`Plan`] is one or more argv vectors (never a shell string), the directories to create and
//! the files to remove around them, and the artifact the tool attaches. Arguments reach a plan
//! only as checked values ([`Target`], [`ExtraArgs`], [`TestFilePath`], [`TestPattern`]), so
//! nothing here re-validates; this module never runs anything.

use serde::Serialize;

use super::args::{ExtraArgs, Target, TestFilePath, TestPattern};
use super::detect::{Flavor, Listing, Project, ProjectType};

/// One program and its arguments; the first element is the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Argv(Vec<String>);

impl Argv {
    fn new(program: &str, args: &[&str]) -> Self {
        let mut v = Vec::with_capacity(args.len() + 1);
        v.push(program.to_owned());
        v.extend(args.iter().map(|a| (*a).to_owned()));
        Self(v)
    }

    fn arg(mut self, a: impl Into<String>) -> Self {
        self.0.push(a.into());
        self
    }

    fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.0.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The program (`go`, `cargo`, ...).
    pub fn program(&self) -> &str {
        &self.0[0]
    }

    /// The arguments after the program.
    pub fn arguments(&self) -> &[String] {
        &self.0[1..]
    }

    /// The whole argv.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// The repo actions that run a toolchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `repo.validate`: compile-only check.
    Validate,
    /// `repo.build`.
    Build,
    /// `repo.run_tests` and its alias `repo.test` (also the test run of the summaries).
    RunTests,
    /// `repo.coverage_report`.
    CoverageReport,
    /// `repo.static_analysis`.
    StaticAnalysis,
    /// `repo.package`.
    Package,
}

impl Action {
    /// The tool's short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Build => "build",
            Self::RunTests => "run_tests",
            Self::CoverageReport => "coverage_report",
            Self::StaticAnalysis => "static_analysis",
            Self::Package => "package",
        }
    }

    /// Whether the tool has an `extra_args` input.
    pub fn takes_extra_args(self) -> bool {
        matches!(self, Self::Build | Self::RunTests)
    }

    /// The artifact that carries the full output.
    pub fn artifact_name(self) -> Option<&'static str> {
        match self {
            Self::Validate => Some("validate-output.txt"),
            Self::Build => Some("build-output.txt"),
            Self::RunTests => Some("test-output.txt"),
            Self::StaticAnalysis => Some("static-analysis-output.txt"),
            Self::CoverageReport | Self::Package => None,
        }
    }
}

/// What to run for an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The commands, run in order in the workspace; a failing step stops the plan.
    pub steps: Vec<Argv>,
    /// Workspace-relative directories to create first.
    pub create_dirs: Vec<&'static str>,
    /// Workspace-relative files to remove afterwards (whatever the outcome).
    pub remove_after: Vec<&'static str>,
    /// Where the packaged output lands (`repo.package`).
    pub artifact_path: Option<&'static str>,
    /// Whether the coverage percentage comes from a coverage tool (Go) rather than a
    /// best-effort parse of the test output.
    pub coverage_supported: bool,
}

impl Plan {
    fn one(argv: Argv) -> Self {
        Self {
            steps: vec![argv],
            create_dirs: Vec::new(),
            remove_after: Vec::new(),
            artifact_path: None,
            coverage_supported: false,
        }
    }

    /// The argv reported as the tool's `command` (the main step).
    pub fn command(&self) -> &Argv {
        &self.steps[0]
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The workspace has no recognised project (`execution_failed`).
    #[error("no supported toolchain found")]
    NoToolchain,
    /// `extra_args` given to a tool that has none (`invalid_argument`).
    #[error("repo.{action} takes no extra_args")]
    ExtraArgsNotAccepted {
        /// The action.
        action: &'static str,
    },
    /// A C project without a source file (`execution_failed`).
    #[error("no C source file found (expected a *.c file up to three levels deep)")]
    NoCSource,
    /// `repo.test_file` on a file type it cannot run (`invalid_argument`).
    #[error(
        "unsupported test file type: {path:?} (expected .go, .py, .rs, .test.js, .test.ts, .spec.js or .spec.ts)"
    )]
    UnsupportedTestFile {
        /// The path.
        path: String,
    },
}

/// The output of `go test -coverprofile`, removed after the report.
pub const GO_COVER_PROFILE: &str = ".workspace.cover.out";
/// Where `repo.package` puts Go and C binaries.
pub const DIST_DIR: &str = ".workspace-dist";

/// The plan of `action` for `project`. `listing` is needed for C (which source to compile).
pub fn plan(
    project: Project,
    action: Action,
    target: Option<&Target>,
    extra: &ExtraArgs,
    listing: &Listing,
) -> Result<Plan, CommandError> {
    if !action.takes_extra_args() && !extra.is_empty() {
        return Err(CommandError::ExtraArgsNotAccepted {
            action: action.as_str(),
        });
    }
    let t = target.map(Target::as_str);
    let extra = extra.as_slice();
    let plan = match project.project_type {
        ProjectType::Go => go(action, t, extra),
        ProjectType::Rust => rust(action, t, extra),
        ProjectType::Node => node(action, t, extra),
        ProjectType::Python => python(action, t, extra),
        ProjectType::Java if project.flavor == Flavor::Gradle => gradle(action, t, extra),
        ProjectType::Java => maven(action, t, extra),
        ProjectType::C => c(action, t, extra, listing)?,
        ProjectType::Unknown => return Err(CommandError::NoToolchain),
    };
    Ok(plan)
}

fn go(action: Action, target: Option<&str>, extra: &[String]) -> Plan {
    let all = target.unwrap_or("./...");
    // Flags go before the package pattern: `go build` refuses flags after it.
    match action {
        Action::Validate => Plan::one(Argv::new("go", &["test", "-run", "^$", all])),
        Action::Build => Plan::one(Argv::new("go", &["build"]).args(extra).arg(all)),
        Action::RunTests => Plan::one(Argv::new("go", &["test"]).args(extra).arg(all)),
        Action::CoverageReport => Plan {
            steps: vec![
                Argv::new(
                    "go",
                    &[
                        "test",
                        "-coverprofile",
                        GO_COVER_PROFILE,
                        "-covermode=atomic",
                        all,
                    ],
                ),
                Argv::new("go", &["tool", "cover"]).arg(format!("-func={GO_COVER_PROFILE}")),
            ],
            create_dirs: Vec::new(),
            remove_after: vec![GO_COVER_PROFILE],
            artifact_path: None,
            coverage_supported: true,
        },
        Action::StaticAnalysis => Plan::one(Argv::new("go", &["vet", all])),
        Action::Package => Plan {
            steps: vec![Argv::new(
                "go",
                &["build", "-o", ".workspace-dist/app", target.unwrap_or(".")],
            )],
            create_dirs: vec![DIST_DIR],
            remove_after: Vec::new(),
            artifact_path: Some(".workspace-dist/app"),
            coverage_supported: false,
        },
    }
}

fn rust(action: Action, target: Option<&str>, extra: &[String]) -> Plan {
    let with_package = |argv: Argv| match target {
        Some(t) => argv.arg("--package").arg(t),
        None => argv,
    };
    match action {
        Action::Validate => Plan::one(with_package(Argv::new("cargo", &["check"]))),
        Action::Build => Plan::one(with_package(Argv::new("cargo", &["build"])).args(extra)),
        Action::RunTests | Action::CoverageReport => {
            Plan::one(with_package(Argv::new("cargo", &["test"])).args(extra))
        }
        Action::StaticAnalysis => Plan::one(Argv::new(
            "cargo",
            &[
                "clippy",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
        )),
        Action::Package => Plan {
            artifact_path: Some("target/release"),
            ..Plan::one(with_package(Argv::new("cargo", &["build", "--release"])))
        },
    }
}

fn node(action: Action, target: Option<&str>, extra: &[String]) -> Plan {
    let after_dashes = |argv: Argv| {
        if target.is_none() && extra.is_empty() {
            return argv;
        }
        argv.arg("--")
            .args(&target.into_iter().collect::<Vec<_>>())
            .args(extra)
    };
    match action {
        Action::Validate => Plan::one(Argv::new("npm", &["run", "lint", "--if-present"])),
        Action::Build => Plan::one(after_dashes(Argv::new(
            "npm",
            &["run", "build", "--if-present"],
        ))),
        Action::RunTests | Action::CoverageReport => {
            Plan::one(after_dashes(Argv::new("npm", &["test"])))
        }
        Action::StaticAnalysis => Plan::one(after_dashes(Argv::new(
            "npm",
            &["run", "lint", "--if-present"],
        ))),
        Action::Package => Plan::one(Argv::new("npm", &["pack", "--silent"])),
    }
}

fn python(action: Action, target: Option<&str>, extra: &[String]) -> Plan {
    match action {
        Action::Validate | Action::Build | Action::StaticAnalysis => {
            Plan::one(Argv::new("python", &["-m", "compileall"]).arg(target.unwrap_or(".")))
        }
        Action::RunTests | Action::CoverageReport => {
            let argv = Argv::new("pytest", &["-q"]).args(extra);
            Plan::one(match target {
                Some(t) => argv.arg(t),
                None => argv,
            })
        }
        Action::Package => Plan {
            create_dirs: vec![DIST_DIR],
            artifact_path: Some(DIST_DIR),
            ..Plan::one(Argv::new("pip", &["wheel", ".", "-w", DIST_DIR]))
        },
    }
}

fn maven(action: Action, target: Option<&str>, extra: &[String]) -> Plan {
    match action {
        Action::Validate => Plan::one(Argv::new("mvn", &["-q", "-DskipTests", "compile"])),
        Action::Build => Plan::one(Argv::new("mvn", &["-q", "-DskipTests", "package"]).args(extra)),
        Action::RunTests | Action::CoverageReport => {
            let argv = Argv::new("mvn", &["-q", "test"]).args(extra);
            Plan::one(match target {
                Some(t) => argv.arg(format!("-Dtest={t}")),
                None => argv,
            })
        }
        Action::StaticAnalysis => Plan::one(Argv::new("mvn", &["-q", "-DskipTests", "verify"])),
        Action::Package => Plan {
            artifact_path: Some("target"),
            ..Plan::one(Argv::new("mvn", &["-q", "-DskipTests", "package"]))
        },
    }
}

fn gradle(action: Action, target: Option<&str>, extra: &[String]) -> Plan {
    match action {
        Action::Validate => Plan::one(Argv::new("gradle", &["classes"])),
        Action::Build => Plan::one(Argv::new("gradle", &["build", "-x", "test"]).args(extra)),
        Action::RunTests | Action::CoverageReport => {
            let argv = Argv::new("gradle", &["test"]).args(extra);
            Plan::one(match target {
                Some(t) => argv.arg("--tests").arg(t),
                None => argv,
            })
        }
        Action::StaticAnalysis => Plan::one(Argv::new("gradle", &["check", "-x", "test"])),
        Action::Package => Plan {
            artifact_path: Some("build/libs"),
            ..Plan::one(Argv::new("gradle", &["assemble"]))
        },
    }
}

fn c(
    action: Action,
    target: Option<&str>,
    extra: &[String],
    listing: &Listing,
) -> Result<Plan, CommandError> {
    let tests = action == Action::RunTests || action == Action::CoverageReport;
    let source = target
        .map(str::to_owned)
        .or_else(|| c_source(listing, tests))
        .ok_or(CommandError::NoCSource)?;
    Ok(match action {
        Action::Validate | Action::StaticAnalysis => {
            Plan::one(Argv::new("cc", &["-std=c11", "-fsyntax-only", &source]))
        }
        Action::Build => Plan::one(
            Argv::new(
                "cc",
                &[
                    "-std=c11",
                    "-O2",
                    "-Wall",
                    "-Wextra",
                    "-o",
                    ".workspace-c-build",
                    &source,
                ],
            )
            .args(extra),
        ),
        Action::RunTests | Action::CoverageReport => Plan {
            steps: vec![
                Argv::new(
                    "cc",
                    &[
                        "-std=c11",
                        "-O0",
                        "-g",
                        "-Wall",
                        "-Wextra",
                        "-o",
                        ".workspace-c-test",
                        &source,
                    ],
                )
                .args(extra),
                Argv::new("./.workspace-c-test", &[]),
            ],
            create_dirs: Vec::new(),
            remove_after: vec![".workspace-c-test"],
            artifact_path: None,
            coverage_supported: false,
        },
        Action::Package => Plan {
            create_dirs: vec![DIST_DIR],
            artifact_path: Some(".workspace-dist/c-app"),
            ..Plan::one(Argv::new(
                "cc",
                &[
                    "-std=c11",
                    "-O2",
                    "-Wall",
                    "-Wextra",
                    "-o",
                    ".workspace-dist/c-app",
                    &source,
                ],
            ))
        },
    })
}

/// The C file to compile: for tests, the first file whose name mentions `test`; otherwise (or
/// when none does) `main.c`, `src/main.c`, then the first `*.c` in path order.
fn c_source(listing: &Listing, tests: bool) -> Option<String> {
    let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    if tests && let Some(p) = listing.c_sources().find(|p| name(p).contains("test")) {
        return Some(p.to_owned());
    }
    ["main.c", "src/main.c"]
        .into_iter()
        .find(|p| listing.has(p))
        .map(str::to_owned)
        .or_else(|| listing.c_sources().next().map(str::to_owned))
}

/// `repo.test_file`'s timeout: default 120 s, at most 600 s.
pub fn test_file_timeout(seconds: Option<i64>) -> u32 {
    match seconds {
        Some(s) if s > 600 => 600,
        Some(s) if s > 0 => u32::try_from(s).unwrap_or(600),
        _ => 120,
    }
}

/// `repo.test_file`'s command, chosen by the file's suffix (first match wins).
///
/// Deliberate differences from HEAD: a bare Go file tests its package (`.`), not the file alone;
/// pytest gets no `--timeout` (it needs a plugin; the runner enforces the deadline); `npx` is
/// told never to install (`--no`), so a missing jest is an error rather than a download.
pub fn test_file(
    path: &TestFilePath,
    pattern: Option<&TestPattern>,
    timeout_seconds: u32,
) -> Result<Plan, CommandError> {
    let p = path.as_str();
    let pattern = pattern.map(TestPattern::as_str);
    let argv = if p.ends_with(".go") {
        let dir = match p.rsplit_once('/') {
            Some((dir, _)) => format!("./{dir}"),
            None => ".".to_owned(),
        };
        let argv = Argv::new("go", &["test", "-v"]);
        let argv = match pattern {
            Some(pat) => argv.arg("-run").arg(pat),
            None => argv,
        };
        argv.arg("-timeout")
            .arg(format!("{timeout_seconds}s"))
            .arg(dir)
    } else if p.ends_with(".py") {
        let argv = Argv::new("python", &["-m", "pytest", "-v"]);
        let argv = match pattern {
            Some(pat) => argv.arg("-k").arg(pat),
            None => argv,
        };
        argv.arg(p)
    } else if [".test.js", ".test.ts", ".spec.js", ".spec.ts"]
        .iter()
        .any(|s| p.ends_with(s))
    {
        Argv::new("npx", &["--no", "jest", p, "--no-coverage"])
    } else if p.ends_with(".rs") {
        let argv = Argv::new("cargo", &["test"]);
        let argv = match pattern {
            Some(pat) => argv.arg(pat),
            None => argv,
        };
        argv.args(&["--", "--nocapture"])
    } else {
        return Err(CommandError::UnsupportedTestFile { path: p.to_owned() });
    };
    Ok(Plan::one(argv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::repo::args::{self, Mode};
    use crate::tools::repo::detect::detect;

    fn project(marker: &str) -> Project {
        detect(&Listing::new([marker]))
    }

    fn argv_of(
        marker: &str,
        action: Action,
        target: Option<&str>,
        extra: &[&str],
    ) -> Vec<Vec<String>> {
        let listing = Listing::new([marker]);
        let p = detect(&listing);
        let target = args::validate_target(p, target).unwrap();
        let mode = if action == Action::Build {
            Mode::Build
        } else {
            Mode::Test
        };
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let extra = args::validate_extra_args(p, mode, &extra).unwrap();
        plan(p, action, target.as_ref(), &extra, &listing)
            .unwrap()
            .steps
            .into_iter()
            .map(|a| a.as_slice().to_vec())
            .collect()
    }

    fn s(words: &str) -> Vec<String> {
        words.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn go_commands_follow_the_reference_with_flags_before_the_pattern() {
        assert_eq!(
            argv_of("go.mod", Action::Validate, None, &[]),
            [s("go test -run ^$ ./...")]
        );
        assert_eq!(
            argv_of("go.mod", Action::Build, None, &["-trimpath"]),
            [s("go build -trimpath ./...")]
        );
        assert_eq!(
            argv_of(
                "go.mod",
                Action::RunTests,
                Some("./calc/..."),
                &["-v", "-count=1"]
            ),
            [s("go test -v -count=1 ./calc/...")]
        );
        assert_eq!(
            argv_of("go.mod", Action::StaticAnalysis, None, &[]),
            [s("go vet ./...")]
        );
        assert_eq!(
            argv_of("go.mod", Action::CoverageReport, None, &[]),
            [
                s("go test -coverprofile .workspace.cover.out -covermode=atomic ./..."),
                s("go tool cover -func=.workspace.cover.out")
            ]
        );
        let listing = Listing::new(["go.mod"]);
        let p = plan(
            project("go.mod"),
            Action::Package,
            None,
            &ExtraArgs::none(),
            &listing,
        )
        .unwrap();
        assert_eq!(
            p.command().as_slice(),
            s("go build -o .workspace-dist/app .")
        );
        assert_eq!(
            (p.create_dirs, p.artifact_path),
            (vec![".workspace-dist"], Some(".workspace-dist/app"))
        );
        let cov = plan(
            project("go.mod"),
            Action::CoverageReport,
            None,
            &ExtraArgs::none(),
            &listing,
        )
        .unwrap();
        assert!(cov.coverage_supported);
        assert_eq!(cov.remove_after, [".workspace.cover.out"]);
    }

    #[test]
    fn rust_commands_follow_the_reference() {
        assert_eq!(
            argv_of("Cargo.toml", Action::Validate, None, &[]),
            [s("cargo check")]
        );
        assert_eq!(
            argv_of("Cargo.toml", Action::Build, Some("calc"), &["--locked"]),
            [s("cargo build --package calc --locked")]
        );
        assert_eq!(
            argv_of("Cargo.toml", Action::RunTests, None, &[]),
            [s("cargo test")]
        );
        assert_eq!(
            argv_of("Cargo.toml", Action::StaticAnalysis, None, &[]),
            [s(
                "cargo clippy --all-targets --all-features -- -D warnings"
            )]
        );
        assert_eq!(
            argv_of("Cargo.toml", Action::Package, None, &[]),
            [s("cargo build --release")]
        );
    }

    #[test]
    fn node_python_and_jvm_commands_follow_the_reference() {
        assert_eq!(
            argv_of("package.json", Action::Validate, None, &[]),
            [s("npm run lint --if-present")]
        );
        assert_eq!(
            argv_of("package.json", Action::Build, Some("src"), &[]),
            [s("npm run build --if-present -- src")]
        );
        assert_eq!(
            argv_of("package.json", Action::Build, None, &[]),
            [s("npm run build --if-present")]
        );
        assert_eq!(
            argv_of(
                "package.json",
                Action::RunTests,
                Some("test/a.test.js"),
                &[]
            ),
            [s("npm test -- test/a.test.js")]
        );
        assert_eq!(
            argv_of("package.json", Action::Package, None, &[]),
            [s("npm pack --silent")]
        );
        assert_eq!(
            argv_of("pyproject.toml", Action::Validate, None, &[]),
            [s("python -m compileall .")]
        );
        assert_eq!(
            argv_of(
                "pyproject.toml",
                Action::RunTests,
                Some("tests"),
                &["--maxfail=1"]
            ),
            [s("pytest -q --maxfail=1 tests")]
        );
        assert_eq!(
            argv_of("pyproject.toml", Action::Package, None, &[]),
            [s("pip wheel . -w .workspace-dist")]
        );
        assert_eq!(
            argv_of("pom.xml", Action::Validate, None, &[]),
            [s("mvn -q -DskipTests compile")]
        );
        assert_eq!(
            argv_of("pom.xml", Action::Build, None, &[]),
            [s("mvn -q -DskipTests package")]
        );
        assert_eq!(
            argv_of("pom.xml", Action::RunTests, Some("CalcTest"), &[]),
            [s("mvn -q test -Dtest=CalcTest")]
        );
        assert_eq!(
            argv_of("pom.xml", Action::StaticAnalysis, None, &[]),
            [s("mvn -q -DskipTests verify")]
        );
        assert_eq!(
            argv_of("build.gradle", Action::Validate, None, &[]),
            [s("gradle classes")]
        );
        assert_eq!(
            argv_of("build.gradle", Action::Build, None, &["--no-daemon"]),
            [s("gradle build -x test --no-daemon")]
        );
        assert_eq!(
            argv_of("build.gradle", Action::RunTests, Some("*CalcTest"), &[]),
            [s("gradle test --tests *CalcTest")]
        );
        assert_eq!(
            argv_of("build.gradle", Action::StaticAnalysis, None, &[]),
            [s("gradle check -x test")]
        );
        assert_eq!(
            argv_of("build.gradle", Action::Package, None, &[]),
            [s("gradle assemble")]
        );
    }

    #[test]
    fn c_commands_pick_a_source_and_run_the_test_binary() {
        let listing = Listing::new(["src/util.c", "src/main.c", "tests/test_util.c"]);
        let p = detect(&listing);
        let none = ExtraArgs::none();
        let build = plan(p, Action::Build, None, &none, &listing).unwrap();
        assert_eq!(
            build.command().as_slice(),
            s("cc -std=c11 -O2 -Wall -Wextra -o .workspace-c-build src/main.c")
        );
        let test = plan(p, Action::RunTests, None, &none, &listing).unwrap();
        assert_eq!(
            test.steps[0].as_slice(),
            s("cc -std=c11 -O0 -g -Wall -Wextra -o .workspace-c-test tests/test_util.c")
        );
        assert_eq!(test.steps[1].program(), "./.workspace-c-test");
        let check = plan(p, Action::Validate, None, &none, &listing).unwrap();
        assert_eq!(
            check.command().as_slice(),
            s("cc -std=c11 -fsyntax-only src/main.c")
        );
        let cmake_only = Listing::new(["CMakeLists.txt"]);
        assert_eq!(
            plan(detect(&cmake_only), Action::Build, None, &none, &cmake_only),
            Err(CommandError::NoCSource)
        );
    }

    #[test]
    fn unknown_projects_and_stray_extra_args_are_typed_errors() {
        let listing = Listing::new(["README.md"]);
        let err = plan(
            detect(&listing),
            Action::Build,
            None,
            &ExtraArgs::none(),
            &listing,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no supported toolchain found");
        let listing = Listing::new(["go.mod"]);
        let extra =
            args::validate_extra_args(project("go.mod"), Mode::Test, &["-v".to_owned()]).unwrap();
        let err = plan(
            project("go.mod"),
            Action::StaticAnalysis,
            None,
            &extra,
            &listing,
        )
        .unwrap_err();
        assert_eq!(
            err,
            CommandError::ExtraArgsNotAccepted {
                action: "static_analysis"
            }
        );
    }

    #[test]
    fn test_file_commands_are_chosen_by_suffix() {
        let path = |p: &str| args::validate_test_file_path(p).unwrap();
        let pat = args::validate_test_pattern(Some("TestAdd")).unwrap();
        let argv = |p: &str, pattern: Option<&TestPattern>| {
            test_file(&path(p), pattern, 120)
                .unwrap()
                .command()
                .as_slice()
                .to_vec()
        };
        assert_eq!(
            argv("pkg/calc_test.go", pat.as_ref()),
            s("go test -v -run TestAdd -timeout 120s ./pkg")
        );
        assert_eq!(argv("calc_test.go", None), s("go test -v -timeout 120s ."));
        assert_eq!(
            argv("tests/test_calc.py", pat.as_ref()),
            s("python -m pytest -v -k TestAdd tests/test_calc.py")
        );
        assert_eq!(
            argv("web/a.spec.ts", None),
            s("npx --no jest web/a.spec.ts --no-coverage")
        );
        assert_eq!(
            argv("src/lib.rs", pat.as_ref()),
            s("cargo test TestAdd -- --nocapture")
        );
        let err = test_file(&path("README.md"), None, 120).unwrap_err();
        assert!(
            matches!(err, CommandError::UnsupportedTestFile { .. }),
            "{err}"
        );
        assert_eq!(
            (
                test_file_timeout(None),
                test_file_timeout(Some(0)),
                test_file_timeout(Some(30)),
                test_file_timeout(Some(9000))
            ),
            (120, 120, 30, 600)
        );
    }
}
