//! The argument rules of the repo family: the catalog's `extra_args` rule (REFERENCE §3.4:
//! TEST_SET/BUILD_SET allowed prefixes, DENY_SET denied prefixes, the SHELL characters, 8 items
//! of 64 characters), the per-language handler filters on top of it (§3.6), and the checks on
//! `target`, `test_file` paths and test-name patterns.
//!
//! Every value is hostile: anything that could run code, read a response file or write outside
//! the workspace is refused, and every refusal names the argument. A catalog-rule refusal is
//! `policy_denied`; a handler-filter refusal is `invalid_argument` ([`ArgError::code`]). The
//! result of a successful check is a [`ExtraArgs`] or [`Target`] value, the only way the command
//! builders accept arguments.

use std::sync::LazyLock;

use regex::Regex;

use super::detect::{Flavor, Project, ProjectType};

/// `max_items` of the catalog rule.
pub const MAX_ITEMS: usize = 8;
/// `max_length` of the catalog rule.
pub const MAX_LEN: usize = 64;
/// The longest `target`, test path or pattern accepted.
pub const MAX_TARGET_LEN: usize = 256;

/// The "SHELL" deny set: `;` `|` `&` backtick `$(` `>` `<` NL CR.
pub const SHELL_TOKENS: [&str; 9] = [";", "|", "&", "`", "$(", ">", "<", "\n", "\r"];

/// TEST_SET: the allowed prefixes of test-like `extra_args`.
pub const TEST_SET: &[&str] = &[
    "-v",
    "-q",
    "-race",
    "-cover",
    "-coverprofile=",
    "-run=",
    "-count=",
    "-timeout=",
    "--if-present",
    "--silent",
    "--maxfail=",
    "--disable-warnings",
    "--release",
    "--locked",
    "--offline",
    "--features=",
    "--all-features",
    "--no-default-features",
    "--package=",
    "--tests",
    "-P",
    "--no-daemon",
    "-D",
];

/// BUILD_SET adds these to TEST_SET.
pub const BUILD_EXTRA: &[&str] = &["-trimpath", "-tags="];

/// DENY_SET: denied prefixes (plain string prefixes, so `-f` also blocks `-failfast`).
pub const DENY_SET: &[&str] = &[
    "-exec",
    "-toolexec",
    "-mod=mod",
    "-modfile",
    "-buildmode=plugin",
    "-f",
    "--file",
    "--require",
    "--import",
    "--project-cache-dir",
];

/// Which catalog rule and which handler allowlist apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `repo.build`: BUILD_SET.
    Build,
    /// `repo.test`, `repo.run_tests`, `repo.test_failures_summary`, `repo.stacktrace_summary`:
    /// TEST_SET.
    Test,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Test => "test",
        }
    }
}

/// The error code a rejection maps to at the API edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionCode {
    /// A handler filter refused the value.
    InvalidArgument,
    /// The catalog's declared policy refused the value.
    PolicyDenied,
}

impl RejectionCode {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::PolicyDenied => "policy_denied",
        }
    }
}

/// Why an argument was refused. Every variant names the argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// More than [`MAX_ITEMS`] extra_args.
    #[error("extra_args has {count} items; at most {max} are allowed")]
    TooMany {
        /// Items given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An empty (or all-blank) item.
    #[error("extra_args[{index}] is empty")]
    Empty {
        /// Position in extra_args.
        index: usize,
    },
    /// An item longer than [`MAX_LEN`].
    #[error("extra_args[{index}] {arg:?} is longer than {max} characters")]
    TooLong {
        /// Position in extra_args.
        index: usize,
        /// The argument.
        arg: String,
        /// The limit.
        max: usize,
    },
    /// An item with a shell token.
    #[error("extra_args[{index}] {arg:?} contains the denied character {token:?}")]
    ShellToken {
        /// Position in extra_args.
        index: usize,
        /// The argument.
        arg: String,
        /// The token found.
        token: &'static str,
    },
    /// An item with a DENY_SET prefix.
    #[error("extra_args[{index}] {arg:?} has the denied prefix {prefix:?}")]
    DeniedPrefix {
        /// Position in extra_args.
        index: usize,
        /// The argument.
        arg: String,
        /// The prefix matched.
        prefix: &'static str,
    },
    /// An item matching no TEST_SET/BUILD_SET prefix.
    #[error("extra_args[{index}] {arg:?} does not match any allowed prefix")]
    NoAllowedPrefix {
        /// Position in extra_args.
        index: usize,
        /// The argument.
        arg: String,
    },
    /// The language takes no extra_args in this mode.
    #[error("{language} {mode} takes no extra_args (got {arg:?})")]
    NoneAllowed {
        /// The language.
        language: &'static str,
        /// `build` or `test`.
        mode: &'static str,
        /// The first argument given.
        arg: String,
    },
    /// A flag outside the language's allowlist (or on its explicit deny list).
    #[error("extra_args[{index}] {arg:?} is not allowed for {language} {mode}: {reason}")]
    NotAllowed {
        /// Position in extra_args.
        index: usize,
        /// The argument.
        arg: String,
        /// The language.
        language: &'static str,
        /// `build` or `test`.
        mode: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A value flag at the end of extra_args.
    #[error("extra_args[{index}] {arg:?} needs a value")]
    MissingValue {
        /// Position in extra_args.
        index: usize,
        /// The flag.
        arg: String,
    },
    /// A value that fails its flag's format.
    #[error("extra_args[{index}] {arg:?} has an invalid value: {reason}")]
    BadValue {
        /// Position in extra_args of the value.
        index: usize,
        /// The flag (with its value).
        arg: String,
        /// Why.
        reason: &'static str,
    },
    /// A bad `target`, test path or pattern.
    #[error("{field} {value:?} is invalid: {reason}")]
    BadField {
        /// The argument's name (`target`, `path`, `pattern`).
        field: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
}

impl ArgError {
    /// `policy_denied` for the catalog rule, `invalid_argument` for the handler filters.
    pub fn code(&self) -> RejectionCode {
        match self {
            Self::TooMany { .. }
            | Self::Empty { .. }
            | Self::TooLong { .. }
            | Self::ShellToken { .. }
            | Self::DeniedPrefix { .. }
            | Self::NoAllowedPrefix { .. } => RejectionCode::PolicyDenied,
            _ => RejectionCode::InvalidArgument,
        }
    }
}

/// extra_args that passed both the catalog rule and the language filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraArgs(Vec<String>);

impl ExtraArgs {
    /// No extra arguments.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// The arguments, trimmed.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks extra_args against the catalog rule, then the project's handler filter.
pub fn validate_extra_args(
    project: Project,
    mode: Mode,
    args: &[String],
) -> Result<ExtraArgs, ArgError> {
    let trimmed = catalog_rule(mode, args)?;
    language_filter(project, mode, &trimmed)?;
    Ok(ExtraArgs(trimmed))
}

/// The catalog rule (REFERENCE §3.4, evaluation order): max_items on the array, then per value
/// after trimming: empty, max_length, a deny character, a denied prefix, an allowed prefix.
/// Returns the trimmed values.
pub fn catalog_rule(mode: Mode, args: &[String]) -> Result<Vec<String>, ArgError> {
    if args.len() > MAX_ITEMS {
        return Err(ArgError::TooMany {
            count: args.len(),
            max: MAX_ITEMS,
        });
    }
    let mut out = Vec::with_capacity(args.len());
    for (index, raw) in args.iter().enumerate() {
        let arg = raw.trim();
        if arg.is_empty() {
            return Err(ArgError::Empty { index });
        }
        if arg.chars().count() > MAX_LEN {
            return Err(ArgError::TooLong {
                index,
                arg: arg.to_owned(),
                max: MAX_LEN,
            });
        }
        if let Some(token) = SHELL_TOKENS.iter().find(|t| arg.contains(**t)) {
            return Err(ArgError::ShellToken {
                index,
                arg: arg.to_owned(),
                token,
            });
        }
        if let Some(prefix) = DENY_SET.iter().find(|p| arg.starts_with(**p)) {
            return Err(ArgError::DeniedPrefix {
                index,
                arg: arg.to_owned(),
                prefix,
            });
        }
        let allowed = TEST_SET.iter().any(|p| arg.starts_with(p))
            || (mode == Mode::Build && BUILD_EXTRA.iter().any(|p| arg.starts_with(p)));
        if !allowed {
            return Err(ArgError::NoAllowedPrefix {
                index,
                arg: arg.to_owned(),
            });
        }
        out.push(arg.to_owned());
    }
    Ok(out)
}

/// The format a flag's value must have.
#[derive(Debug, Clone, Copy)]
enum Value {
    /// Go build tags: `a,b.c`.
    GoTags,
    /// A test-name regex or expression: any printable text not starting with `-`.
    Pattern,
    /// A small positive integer.
    Count,
    /// A Go duration (`30s`, `1m30s`).
    GoDuration,
    /// A workspace-relative file path.
    RelativePath,
    /// Cargo features: `a,b c/d`.
    Features,
    /// A Cargo package spec: `name` or `name@1.2.3`.
    Package,
    /// A target triple.
    Triple,
    /// A JVM test selector (`com.x.FooTest#method`, `*Test`).
    JvmTests,
    /// Maven profile ids: `a,!b`.
    Profiles,
}

/// A language's handler allowlist.
struct Allowlist {
    language: &'static str,
    /// Flags allowed exactly.
    exact: &'static [&'static str],
    /// Flags taking a value, as `flag=value` or `flag value` (or, for `attached`, `flagvalue`).
    valued: &'static [(&'static str, Value)],
    /// Value flags written `-Xvalue` (Maven's `-Dtest=`, `-P`).
    attached: &'static [(&'static str, Value)],
    /// Flags refused with a specific reason, checked first (prefix match).
    denied: &'static [(&'static str, &'static str)],
}

const GO: Allowlist = Allowlist {
    language: "go",
    exact: &[
        "-v",
        "-x",
        "-race",
        "-trimpath",
        "-short",
        "-cover",
        "-mod=readonly",
        "-mod=vendor",
    ],
    valued: &[
        ("-tags", Value::GoTags),
        ("-run", Value::Pattern),
        ("-count", Value::Count),
        ("-timeout", Value::GoDuration),
        ("-coverprofile", Value::RelativePath),
    ],
    attached: &[],
    denied: &[
        ("-exec", "runs the test binary through another program"),
        ("-toolexec", "runs the toolchain through another program"),
        ("-mod=mod", "lets go rewrite go.mod and fetch modules"),
        ("-modfile", "reads another go.mod"),
        ("-overlay", "replaces source files from a JSON file"),
        ("-buildmode=plugin", "builds loadable code"),
        ("-C", "changes to another directory"),
        ("-o", "writes the output to a chosen path"),
        ("-pkgdir", "writes packages to a chosen path"),
        ("-ldflags", "passes flags to the linker"),
        ("-gcflags", "passes flags to the compiler"),
    ],
};

const PYTHON: Allowlist = Allowlist {
    language: "python",
    exact: &["-q", "-x", "-s"],
    valued: &[
        ("-k", Value::Pattern),
        ("-m", Value::Pattern),
        ("--maxfail", Value::Count),
    ],
    attached: &[],
    denied: &[
        ("-p", "loads a plugin module"),
        ("-c", "reads another configuration file"),
        ("--rootdir", "moves the root directory"),
        ("--rcfile", "reads another configuration file"),
        ("--confcutdir", "loads conftest.py files from elsewhere"),
        ("--basetemp", "writes to a chosen directory"),
        ("--junitxml", "writes a report to a chosen path"),
        ("--override-ini", "overrides configuration"),
        ("-o", "overrides configuration"),
        ("--pyargs", "imports modules by name"),
    ],
};

const RUST: Allowlist = Allowlist {
    language: "rust",
    exact: &[
        "--release",
        "--locked",
        "--offline",
        "--all-features",
        "--no-default-features",
    ],
    valued: &[
        ("--features", Value::Features),
        ("--package", Value::Package),
        ("--jobs", Value::Count),
        ("--target", Value::Triple),
    ],
    attached: &[],
    denied: &[
        ("-Z", "enables unstable compiler features"),
        (
            "--config",
            "overrides Cargo configuration (can set a runner or rustc wrapper)",
        ),
        ("--target-dir", "writes build output to a chosen directory"),
        ("--manifest-path", "builds another manifest"),
        ("-C", "changes to another directory"),
        ("--artifact-dir", "copies artifacts to a chosen directory"),
        ("--out-dir", "copies artifacts to a chosen directory"),
    ],
};

const MAVEN: Allowlist = Allowlist {
    language: "java (maven)",
    exact: &[
        "-DskipTests",
        "-DskipITs",
        "--batch-mode",
        "--no-transfer-progress",
    ],
    valued: &[],
    attached: &[("-Dtest=", Value::JvmTests), ("-P", Value::Profiles)],
    denied: &[
        ("-s", "reads another settings file"),
        ("-gs", "reads another global settings file"),
        ("--settings", "reads another settings file"),
        ("-f", "builds another POM"),
        ("-Dmaven.repo.local", "moves the local repository"),
        ("-Dexec", "runs a program"),
    ],
};

const GRADLE_BUILD: Allowlist = Allowlist {
    language: "java (gradle)",
    exact: &["--no-daemon", "--info", "--stacktrace"],
    valued: &[],
    attached: &[],
    denied: GRADLE_DENIED,
};

const GRADLE_TEST: Allowlist = Allowlist {
    language: "java (gradle)",
    exact: &["--no-daemon", "--info", "--stacktrace"],
    valued: &[("--tests", Value::JvmTests)],
    attached: &[],
    denied: GRADLE_DENIED,
};

const GRADLE_DENIED: &[(&str, &str)] = &[
    ("-I", "runs an init script"),
    ("--init-script", "runs an init script"),
    ("-b", "builds another build file"),
    ("--build-file", "builds another build file"),
    ("-c", "reads another settings file"),
    ("--settings-file", "reads another settings file"),
    ("-p", "builds another project directory"),
    ("--project-dir", "builds another project directory"),
    ("-g", "moves the Gradle user home"),
    ("--gradle-user-home", "moves the Gradle user home"),
    ("--project-cache-dir", "moves the project cache"),
];

/// The handler filter of `project` in `mode` (REFERENCE §3.6). Node and C take none; Python
/// takes none for builds.
pub fn language_filter(project: Project, mode: Mode, args: &[String]) -> Result<(), ArgError> {
    let list = match (project.project_type, project.flavor, mode) {
        (ProjectType::Go, _, _) => &GO,
        (ProjectType::Python, _, Mode::Test) => &PYTHON,
        (ProjectType::Rust, _, _) => &RUST,
        (ProjectType::Java, Flavor::Gradle, Mode::Test) => &GRADLE_TEST,
        (ProjectType::Java, Flavor::Gradle, Mode::Build) => &GRADLE_BUILD,
        (ProjectType::Java, _, _) => &MAVEN,
        (ProjectType::Python | ProjectType::Node | ProjectType::C | ProjectType::Unknown, _, _) => {
            return match args.first() {
                None => Ok(()),
                Some(arg) => Err(ArgError::NoneAllowed {
                    language: project.project_type.as_str(),
                    mode: mode.as_str(),
                    arg: arg.clone(),
                }),
            };
        }
    };
    apply(list, mode, args)
}

fn apply(list: &Allowlist, mode: Mode, args: &[String]) -> Result<(), ArgError> {
    let not_allowed = |index: usize, arg: &str, reason: &'static str| ArgError::NotAllowed {
        index,
        arg: arg.to_owned(),
        language: list.language,
        mode: mode.as_str(),
        reason,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg.starts_with('@') {
            return Err(not_allowed(i, arg, "response files are not read"));
        }
        if list.exact.contains(&arg) {
            i += 1;
            continue;
        }
        // Exact flags first, so `-mod=readonly` passes while `-mod=mod` is denied.
        if let Some((_, reason)) = list
            .denied
            .iter()
            .find(|(flag, _)| denied_matches(arg, flag))
        {
            return Err(not_allowed(i, arg, reason));
        }
        if let Some((flag, kind)) = list.attached.iter().find(|(flag, _)| arg.starts_with(flag)) {
            check_value(*kind, &arg[flag.len()..]).map_err(|reason| ArgError::BadValue {
                index: i,
                arg: arg.to_owned(),
                reason,
            })?;
            i += 1;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg, None),
        };
        let Some((_, kind)) = list.valued.iter().find(|(flag, _)| *flag == name) else {
            return Err(not_allowed(i, arg, "not on the allowlist"));
        };
        let (value, value_index) = match inline {
            Some(v) => (v, i),
            None => {
                let Some(v) = args.get(i + 1) else {
                    return Err(ArgError::MissingValue {
                        index: i,
                        arg: arg.to_owned(),
                    });
                };
                i += 1;
                (v.as_str(), i)
            }
        };
        check_value(*kind, value).map_err(|reason| ArgError::BadValue {
            index: value_index,
            arg: format!("{name}={value}"),
            reason,
        })?;
        i += 1;
    }
    Ok(())
}

/// A denied flag matches itself, its `=` form, an attached value for one-letter flags (`-C/x`,
/// `-Zflag`, `-pplugin`), and any extension of a flag that already carries `=` or is a `-D`
/// property (`-mod=mod`, `-Dmaven.repo.local=`).
fn denied_matches(arg: &str, flag: &str) -> bool {
    match arg.strip_prefix(flag) {
        Some("") => true,
        Some(rest) => {
            rest.starts_with('=') || flag.len() == 2 || flag.contains('=') || flag.starts_with("-D")
        }
        None => false,
    }
}

static GO_TAGS: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_.,]+$"));
static COUNT: LazyLock<Regex> = LazyLock::new(|| re(r"^[1-9][0-9]{0,3}$"));
static GO_DURATION: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$"));
static FEATURES: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_\-/, ]+$"));
static PACKAGE: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_\-]+(@[0-9A-Za-z.+\-]+)?$"));
static TRIPLE: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"));
static JVM_TESTS: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_.*$#,+!]+$"));
static PROFILES: LazyLock<Regex> =
    LazyLock::new(|| re(r"^!?[A-Za-z0-9_.\-]+(,!?[A-Za-z0-9_.\-]+)*$"));
static PATH_CHARS: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_./\-+]+$"));

/// Compiles a pattern written in this file; every pattern is a literal checked by the tests.
fn re(pattern: &str) -> Regex {
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("literal regex compiles")
}

fn check_value(kind: Value, value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("empty value");
    }
    if value.starts_with('-') {
        return Err("a value may not start with '-'");
    }
    if value.starts_with('@') {
        return Err("response files are not read");
    }
    if value.chars().any(char::is_control) {
        return Err("control characters are not allowed");
    }
    let ok = match kind {
        Value::GoTags => GO_TAGS.is_match(value),
        Value::Pattern => true,
        Value::Count => COUNT.is_match(value),
        Value::GoDuration => GO_DURATION.is_match(value),
        Value::RelativePath => return check_relative_path(value),
        Value::Features => FEATURES.is_match(value),
        Value::Package => PACKAGE.is_match(value),
        Value::Triple => TRIPLE.is_match(value) && !value.ends_with(".json"),
        Value::JvmTests => JVM_TESTS.is_match(value),
        Value::Profiles => PROFILES.is_match(value),
    };
    if ok {
        Ok(())
    } else {
        Err(match kind {
            Value::GoTags => "build tags are letters, digits, '_', '.' and ','",
            Value::Count => "expected a number from 1 to 9999",
            Value::GoDuration => "expected a Go duration such as 30s or 2m",
            Value::Features => "features are names separated by ',' or ' '",
            Value::Package => "expected a package name (optionally name@version)",
            Value::Triple => "expected a target triple name (no file paths)",
            Value::JvmTests => "expected a test class or method pattern",
            Value::Profiles => "expected profile ids separated by ','",
            Value::Pattern | Value::RelativePath => "invalid value",
        })
    }
}

/// A path that stays inside the workspace: relative, no `..`, no leading `-`, plain characters.
fn check_relative_path(value: &str) -> Result<(), &'static str> {
    if value.starts_with('/') || value.starts_with('\\') || value.chars().nth(1) == Some(':') {
        return Err("absolute paths are not allowed");
    }
    if value.split(['/', '\\']).any(|c| c == "..") {
        return Err("'..' would leave the workspace");
    }
    if !PATH_CHARS.is_match(value) {
        return Err("paths are letters, digits and '_' '.' '/' '-' '+'");
    }
    Ok(())
}

/// A checked `target` (package pattern, crate name, test selector or source path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(String);

impl Target {
    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

static GO_PATTERN: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_./\-~+]+$"));
static PYTEST_ID: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[A-Za-z0-9_./\-+]+(::[A-Za-z0-9_\-.\[\]]+)*$"));

/// Checks a `target` for `project`. A blank target is `None` (the language's default applies).
/// Every target is refused when it starts with `-` or `@` (it would become an option or a
/// response file), leaves the workspace, or has characters the language's selector never needs.
pub fn validate_target(project: Project, target: Option<&str>) -> Result<Option<Target>, ArgError> {
    let Some(value) = target.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bad = |reason| ArgError::BadField {
        field: "target",
        value: value.to_owned(),
        reason,
    };
    common_checks(value).map_err(bad)?;
    let ok = match (project.project_type, project.flavor) {
        (ProjectType::Go, _) => {
            check_relative_path(value.trim_end_matches("...")).is_ok() || GO_PATTERN.is_match(value)
        }
        (ProjectType::Rust, _) => PACKAGE.is_match(value),
        (ProjectType::Python, _) => PYTEST_ID.is_match(value),
        (ProjectType::Node, _) => check_relative_path(value).is_ok(),
        (ProjectType::Java, _) => JVM_TESTS.is_match(value),
        (ProjectType::C, _) => check_relative_path(value).is_ok() && value.ends_with(".c"),
        (ProjectType::Unknown, _) => false,
    };
    if !ok {
        return Err(bad(match project.project_type {
            ProjectType::Go => "expected a package pattern such as ./... or ./pkg/...",
            ProjectType::Rust => "expected a package name",
            ProjectType::Python => "expected a test path or node id (path::name)",
            ProjectType::Node => "expected a workspace-relative path",
            ProjectType::Java => "expected a test class or method pattern",
            ProjectType::C => "expected a workspace-relative .c file",
            ProjectType::Unknown => "no supported toolchain found",
        }));
    }
    Ok(Some(Target(value.to_owned())))
}

fn common_checks(value: &str) -> Result<(), &'static str> {
    if value.chars().count() > MAX_TARGET_LEN {
        return Err("longer than 256 characters");
    }
    if value.starts_with('-') {
        return Err("may not start with '-'");
    }
    if value.starts_with('@') {
        return Err("may not start with '@'");
    }
    if value.chars().any(char::is_control) {
        return Err("control characters are not allowed");
    }
    if value.starts_with('/') || value.starts_with('\\') || value.chars().nth(1) == Some(':') {
        return Err("absolute paths are not allowed");
    }
    if value.split(['/', '\\']).any(|c| c == "..") {
        return Err("'..' would leave the workspace");
    }
    Ok(())
}

/// A checked `repo.test_file` path: workspace-relative, no `..` (REFERENCE §12.15 fixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFilePath(String);

impl TestFilePath {
    /// The path as given (trimmed, `./` removed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a `repo.test_file` path.
pub fn validate_test_file_path(path: &str) -> Result<TestFilePath, ArgError> {
    let value = path.trim();
    let bad = |reason| ArgError::BadField {
        field: "path",
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("path is required"));
    }
    common_checks(value).map_err(bad)?;
    check_relative_path(value).map_err(bad)?;
    Ok(TestFilePath(value.trim_start_matches("./").to_owned()))
}

/// A checked test-name pattern (`-run`, `-k`, the libtest filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPattern(String);

impl TestPattern {
    /// The pattern.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a test-name pattern; blank is `None`.
pub fn validate_test_pattern(pattern: Option<&str>) -> Result<Option<TestPattern>, ArgError> {
    let Some(value) = pattern.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let bad = |reason| ArgError::BadField {
        field: "pattern",
        value: value.to_owned(),
        reason,
    };
    if value.chars().count() > MAX_TARGET_LEN {
        return Err(bad("longer than 256 characters"));
    }
    if value.starts_with('-') {
        return Err(bad("may not start with '-'"));
    }
    if value.chars().any(char::is_control) {
        return Err(bad("control characters are not allowed"));
    }
    Ok(Some(TestPattern(value.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_P: Project = Project {
        project_type: ProjectType::Go,
        flavor: Flavor::None,
    };
    const RUST_P: Project = Project {
        project_type: ProjectType::Rust,
        flavor: Flavor::Cargo,
    };
    const PY_P: Project = Project {
        project_type: ProjectType::Python,
        flavor: Flavor::Pytest,
    };
    const NODE_P: Project = Project {
        project_type: ProjectType::Node,
        flavor: Flavor::Npm,
    };
    const C_P: Project = Project {
        project_type: ProjectType::C,
        flavor: Flavor::Cc,
    };
    const MVN_P: Project = Project {
        project_type: ProjectType::Java,
        flavor: Flavor::Maven,
    };
    const GRADLE_P: Project = Project {
        project_type: ProjectType::Java,
        flavor: Flavor::Gradle,
    };

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    fn check(p: Project, mode: Mode, args: &[&str]) -> Result<ExtraArgs, ArgError> {
        validate_extra_args(p, mode, &v(args))
    }

    #[test]
    fn allowed_extra_args_pass_per_language() {
        let ok: &[(Project, Mode, &[&str])] = &[
            (
                GO_P,
                Mode::Test,
                &[
                    "-v",
                    "-race",
                    "-run=TestAdd",
                    "-count=1",
                    "-timeout=30s",
                    "-cover",
                    "-coverprofile=cover.out",
                ],
            ),
            (GO_P, Mode::Build, &["-trimpath", "-tags=integration,linux"]),
            (
                RUST_P,
                Mode::Test,
                &[
                    "--release",
                    "--locked",
                    "--features=serde,cli",
                    "--package=calc",
                    "--offline",
                ],
            ),
            (
                RUST_P,
                Mode::Build,
                &["--all-features", "--no-default-features"],
            ),
            (PY_P, Mode::Test, &["-q", "--maxfail=2"]),
            (
                MVN_P,
                Mode::Test,
                &["-DskipITs", "-Dtest=CalcTest#adds", "-Pci"],
            ),
            (
                GRADLE_P,
                Mode::Test,
                &["--no-daemon", "--tests=com.example.CalcTest"],
            ),
            (NODE_P, Mode::Test, &[]),
        ];
        for (p, mode, args) in ok {
            let got = check(*p, *mode, args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(got.as_slice(), v(args).as_slice());
        }
    }

    #[test]
    fn extra_args_are_trimmed_before_the_rules() {
        let got = check(GO_P, Mode::Test, &["  -v "]).unwrap();
        assert_eq!(got.as_slice(), ["-v"]);
    }

    #[test]
    fn the_catalog_rule_refuses_with_policy_denied_naming_the_argument() {
        let cases: &[(&[&str], &str)] = &[
            (&["-v"; 9], "9 items"),
            (&["-v", " "], "extra_args[1] is empty"),
            (
                &["-run=TestAVeryLongNameThatGoesOnAndOnAndOnPastTheSixtyFourCharLimit"],
                "longer than 64",
            ),
            (&["-run=A;rm -rf /"], "\";\""),
            (&["-run=$(id)"], "\"$(\""),
            (&["-v", "-run=a|b"], "extra_args[1]"),
            (&["-exec=/bin/sh"], "denied prefix \"-exec\""),
            (&["-toolexec=strace"], "denied prefix \"-toolexec\""),
            (&["-modfile=/tmp/go.mod"], "denied prefix \"-modfile\""),
            (&["-failfast"], "denied prefix \"-f\""),
            (&["--file=x"], "denied prefix \"--file\""),
            (&["--import=os"], "denied prefix"),
            (&["--project-cache-dir=/tmp"], "denied prefix"),
            (&["--rcfile=/etc/x"], "does not match any allowed prefix"),
            (
                &["--config=build.rustc-wrapper=/bin/sh"],
                "does not match any allowed prefix",
            ),
            (&["@args.txt"], "does not match any allowed prefix"),
            (&["-o"], "does not match any allowed prefix"),
            (&["-C", "/tmp"], "does not match any allowed prefix"),
            (&["TestAdd"], "does not match any allowed prefix"),
        ];
        for (args, needle) in cases {
            let err = check(GO_P, Mode::Test, args).unwrap_err();
            assert_eq!(err.code(), RejectionCode::PolicyDenied, "{args:?}: {err}");
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn both_layers_apply_so_a_handler_flag_outside_the_catalog_prefixes_is_denied() {
        // The handler allows `-x` and `-mod=readonly`, but TEST_SET/BUILD_SET do not: as at the
        // reference, the catalog rule decides first.
        assert!(language_filter(PY_P, Mode::Test, &v(&["-x"])).is_ok());
        let err = check(PY_P, Mode::Test, &["-x"]).unwrap_err();
        assert_eq!(err.code(), RejectionCode::PolicyDenied);
        assert!(language_filter(GO_P, Mode::Build, &v(&["-mod=readonly"])).is_ok());
        assert!(check(GO_P, Mode::Build, &["-mod=readonly"]).is_err());
    }

    #[test]
    fn build_set_adds_trimpath_and_tags_only_for_builds() {
        assert!(check(GO_P, Mode::Build, &["-trimpath"]).is_ok());
        let err = check(GO_P, Mode::Test, &["-trimpath"]).unwrap_err();
        assert!(
            matches!(err, ArgError::NoAllowedPrefix { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_go_filter_refuses_flags_that_pass_the_catalog_prefixes() {
        let cases: &[(&[&str], &str)] = &[
            (&["-vet=off"], "not on the allowlist"),
            (&["-coverpkg=./..."], "not on the allowlist"),
            (&["-coverprofile=/tmp/x.out"], "absolute paths"),
            (&["-coverprofile=../../x.out"], "'..'"),
            (&["-run=-test.v"], "may not start with '-'"),
            (&["-count=0"], "number"),
            (&["-count=many"], "number"),
            (&["-timeout=forever"], "duration"),
            (&["-DskipTests"], "not on the allowlist"),
            (&["-Pprofile"], "not on the allowlist"),
            (&["--release"], "not on the allowlist"),
        ];
        for (args, needle) in cases {
            let err = check(GO_P, Mode::Test, args).unwrap_err();
            assert_eq!(
                err.code(),
                RejectionCode::InvalidArgument,
                "{args:?}: {err}"
            );
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_go_deny_list_names_the_reason_even_without_the_catalog_rule() {
        let cases: &[(&[&str], &str)] = &[
            (&["-exec", "sh"], "another program"),
            (&["-toolexec=x"], "another program"),
            (&["-mod=mod"], "rewrite go.mod"),
            (&["-modfile=x"], "another go.mod"),
            (&["-overlay=o.json"], "JSON"),
            (&["-buildmode=plugin"], "loadable"),
            (&["-C", "/etc"], "another directory"),
            (&["-C=/etc"], "another directory"),
            (&["-o", "/usr/bin/x"], "chosen path"),
            (&["-ldflags=-X main.v=1"], "linker"),
            (&["@/etc/passwd"], "response files"),
        ];
        for (args, needle) in cases {
            let err = language_filter(GO_P, Mode::Build, &v(args)).unwrap_err();
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
            assert_eq!(err.code(), RejectionCode::InvalidArgument);
        }
        assert!(language_filter(GO_P, Mode::Build, &v(&["-mod=readonly", "-mod=vendor"])).is_ok());
    }

    #[test]
    fn separate_values_are_checked_and_a_missing_value_is_named() {
        assert!(
            language_filter(GO_P, Mode::Test, &v(&["-run", "TestAdd/ok", "-count", "3"])).is_ok()
        );
        let err = language_filter(GO_P, Mode::Test, &v(&["-run"])).unwrap_err();
        assert_eq!(
            err,
            ArgError::MissingValue {
                index: 0,
                arg: "-run".into()
            }
        );
        let err = language_filter(GO_P, Mode::Test, &v(&["-run", "-exec=sh"])).unwrap_err();
        assert!(matches!(err, ArgError::BadValue { index: 1, .. }), "{err}");
        let err = language_filter(RUST_P, Mode::Test, &v(&["--package", "@file"])).unwrap_err();
        assert!(err.to_string().contains("response files"), "{err}");
    }

    #[test]
    fn the_rust_filter_refuses_unstable_config_and_output_dirs() {
        let cases: &[(&[&str], &str)] = &[
            (&["-Zbuild-std"], "unstable"),
            (&["-Z", "unstable-options"], "unstable"),
            (
                &["--config", "target.x86_64-unknown-linux-gnu.runner='sh'"],
                "runner",
            ),
            (&["--config=build.rustc-wrapper=/bin/sh"], "runner"),
            (&["--target-dir=/tmp/out"], "chosen directory"),
            (&["--target-dir", "/tmp/out"], "chosen directory"),
            (&["--manifest-path=/etc/Cargo.toml"], "another manifest"),
            (&["-C", "/"], "another directory"),
            (&["--target=../../spec.json"], "target triple"),
            (&["--target=custom.json"], "target triple"),
            (&["--package=a;b"], "package name"),
            (&["--jobs=0"], "number"),
            (&["--features=a$b"], "features"),
            (&["--frozen"], "not on the allowlist"),
        ];
        for (args, needle) in cases {
            let err = language_filter(RUST_P, Mode::Build, &v(args)).unwrap_err();
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
        assert!(
            language_filter(
                RUST_P,
                Mode::Build,
                &v(&["--target", "x86_64-unknown-linux-gnu", "--jobs", "2"])
            )
            .is_ok()
        );
        assert!(language_filter(RUST_P, Mode::Build, &v(&["--package", "calc@0.1.0"])).is_ok());
    }

    #[test]
    fn the_python_filter_allows_only_test_flags_and_no_build_args() {
        assert!(
            language_filter(
                PY_P,
                Mode::Test,
                &v(&["-x", "-s", "-k", "not slow", "-m", "unit"])
            )
            .is_ok()
        );
        let cases: &[(&[&str], &str)] = &[
            (&["-p", "evil_plugin"], "plugin"),
            (&["-pevil"], "plugin"),
            (&["--rcfile=/etc/x"], "configuration"),
            (&["-c", "/etc/pytest.ini"], "configuration"),
            (&["--rootdir=/"], "root directory"),
            (&["--basetemp=/tmp/x"], "chosen directory"),
            (&["--junitxml=/tmp/r.xml"], "chosen path"),
            (&["-o", "addopts=-p x"], "overrides"),
            (&["--maxfail=none"], "number"),
            (&["-k", "-p"], "may not start"),
            (&["-v"], "not on the allowlist"),
        ];
        for (args, needle) in cases {
            let err = language_filter(PY_P, Mode::Test, &v(args)).unwrap_err();
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
        let err = language_filter(PY_P, Mode::Build, &v(&["-q"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "python build takes no extra_args (got \"-q\")"
        );
    }

    #[test]
    fn node_and_c_take_no_extra_args() {
        for p in [NODE_P, C_P] {
            for mode in [Mode::Build, Mode::Test] {
                assert!(language_filter(p, mode, &[]).is_ok());
                let err = check(p, mode, &["--silent"]).unwrap_err();
                assert!(matches!(err, ArgError::NoneAllowed { .. }), "{err}");
                assert_eq!(err.code(), RejectionCode::InvalidArgument);
            }
        }
    }

    #[test]
    fn the_maven_filter_admits_only_its_properties_and_profiles() {
        let cases: &[(&[&str], &str)] = &[
            (&["-Dmaven.repo.local=/tmp/repo"], "local repository"),
            (&["-Dexec.executable=sh"], "runs a program"),
            (&["-Dfoo=bar"], "not on the allowlist"),
            (&["-Dtest=../x"], "test class"),
            (&["-Dtest=Foo;rm"], "test class"),
            (&["-P"], "empty value"),
            (&["-Pa b"], "profile"),
            (&["-s", "/tmp/settings.xml"], "settings"),
            (&["-f", "/etc/pom.xml"], "another POM"),
        ];
        for (args, needle) in cases {
            let err = language_filter(MVN_P, Mode::Test, &v(args)).unwrap_err();
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_gradle_filter_allows_tests_only_in_test_mode_and_refuses_init_scripts() {
        assert!(
            language_filter(
                GRADLE_P,
                Mode::Test,
                &v(&["--tests", "*CalcTest", "--stacktrace"])
            )
            .is_ok()
        );
        let err = language_filter(GRADLE_P, Mode::Build, &v(&["--tests=X"])).unwrap_err();
        assert!(err.to_string().contains("not on the allowlist"), "{err}");
        for args in [
            &["-I", "evil.gradle"][..],
            &["--init-script=/tmp/x"],
            &["-p", "/"],
            &["--project-dir=/"],
            &["-g", "/tmp"],
        ] {
            let err = language_filter(GRADLE_P, Mode::Test, &v(args)).unwrap_err();
            assert!(
                matches!(err, ArgError::NotAllowed { .. }),
                "{args:?}: {err}"
            );
        }
    }

    #[test]
    fn targets_are_checked_per_language() {
        let ok: &[(Project, &str)] = &[
            (GO_P, "./..."),
            (GO_P, "./internal/calc/..."),
            (GO_P, "example.com/calc"),
            (RUST_P, "calc-core"),
            (PY_P, "tests/test_calc.py::test_add"),
            (PY_P, "tests/test_calc.py::TestX::test_y[1-2]"),
            (NODE_P, "test/calc.test.js"),
            (MVN_P, "CalcTest#adds"),
            (GRADLE_P, "com.example.*"),
            (C_P, "src/main.c"),
        ];
        for (p, t) in ok {
            assert_eq!(validate_target(*p, Some(t)).unwrap().unwrap().as_str(), *t);
        }
        assert_eq!(validate_target(GO_P, Some("  ")).unwrap(), None);
        assert_eq!(validate_target(GO_P, None).unwrap(), None);
    }

    #[test]
    fn hostile_targets_are_refused() {
        let bad: &[(Project, &str, &str)] = &[
            (GO_P, "-exec=sh", "start with '-'"),
            (GO_P, "../../etc", "'..'"),
            (GO_P, "/etc", "absolute"),
            (GO_P, "@args", "'@'"),
            (GO_P, "./x\n-exec", "control"),
            (RUST_P, "calc --config x", "package name"),
            (PY_P, "tests/x.py;id", "node id"),
            (NODE_P, "--inspect", "start with '-'"),
            (MVN_P, "Foo/../Bar", "'..'"),
            (C_P, "main.sh", ".c file"),
            (C_P, "C:/x.c", "absolute"),
        ];
        for (p, t, needle) in bad {
            let err = validate_target(*p, Some(t)).unwrap_err();
            assert!(err.to_string().contains(needle), "{t:?}: {err}");
            assert_eq!(err.code(), RejectionCode::InvalidArgument);
        }
    }

    #[test]
    fn test_file_paths_and_patterns_are_confined() {
        assert_eq!(
            validate_test_file_path("./pkg/calc_test.go")
                .unwrap()
                .as_str(),
            "pkg/calc_test.go"
        );
        for (p, needle) in [
            ("", "required"),
            ("../x_test.go", "'..'"),
            ("/etc/x.py", "absolute"),
            ("-x.py", "'-'"),
            ("a b.py", "letters"),
        ] {
            let err = validate_test_file_path(p).unwrap_err();
            assert!(err.to_string().contains(needle), "{p:?}: {err}");
        }
        assert_eq!(
            validate_test_pattern(Some("TestAdd|TestSub"))
                .unwrap()
                .unwrap()
                .as_str(),
            "TestAdd|TestSub"
        );
        assert_eq!(validate_test_pattern(Some("")).unwrap(), None);
        assert!(validate_test_pattern(Some("--exec")).is_err());
        assert!(validate_test_pattern(Some("a\0b")).is_err());
    }
}
