//! Project type and toolchain detection from a workspace listing (`repo.detect_project_type`,
//! `repo.detect_toolchain`).
//!
//! Only marker files at the workspace root count, in a fixed priority (go.mod > Cargo.toml >
//! package.json (+tsconfig.json) > python > maven > gradle > C); C also counts a `*.c` file up to
//! three levels deep. Detection never fails: a workspace with no marker is `unknown`. This module
//! never reads the filesystem: the caller hands it a [`Listing`].

use std::collections::BTreeSet;
use std::fmt;

use schemars::JsonSchema;
use serde::Serialize;

/// The languages the repo family knows, in detection priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectType {
    /// A Go module (`go.mod`).
    Go,
    /// A Cargo package or workspace (`Cargo.toml`).
    Rust,
    /// A Node package (`package.json`).
    Node,
    /// A Python project (`pytest.ini`, `pyproject.toml` or `requirements.txt`).
    Python,
    /// A Maven or Gradle project.
    Java,
    /// C sources (`CMakeLists.txt` or a `*.c` file).
    C,
    /// No marker found.
    Unknown,
}

impl ProjectType {
    /// The wire name (`go`, `rust`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Go => "go",
            Self::Rust => "rust",
            Self::Node => "node",
            Self::Python => "python",
            Self::Java => "java",
            Self::C => "c",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ProjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The second half of a detection: how the project is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// No flavor (Go, unknown): serialised as `""`.
    #[serde(rename = "")]
    None,
    /// Cargo.
    Cargo,
    /// Node with a `tsconfig.json`.
    Typescript,
    /// Plain Node.
    Npm,
    /// Python, tested with pytest.
    Pytest,
    /// Java built with Maven.
    Maven,
    /// Java built with Gradle.
    Gradle,
    /// C compiled with `cc`.
    Cc,
}

/// One detected project: the type and its flavor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Project {
    /// The language.
    pub project_type: ProjectType,
    /// How it is built.
    pub flavor: Flavor,
}

impl Project {
    /// The project of an empty or unrecognised workspace.
    pub const UNKNOWN: Project = Project {
        project_type: ProjectType::Unknown,
        flavor: Flavor::None,
    };
}

/// Which Node package manager the lockfiles point to. Informational: the commands use npm, as
/// the reference does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodePackageManager {
    /// `package-lock.json` or no lockfile.
    Npm,
    /// `yarn.lock`.
    Yarn,
    /// `pnpm-lock.yaml`.
    Pnpm,
}

/// What detection needs to know about a workspace: its file paths (relative to the root, `/`
/// separated) and the text of `package.json` when there is one.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    paths: BTreeSet<String>,
    package_json: Option<String>,
}

impl Listing {
    /// A listing of relative paths; `./` prefixes and `\` separators are normalised.
    pub fn new<I, S>(paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let paths = paths
            .into_iter()
            .map(|p| {
                let p = p.as_ref().replace('\\', "/");
                p.trim_start_matches("./").trim_end_matches('/').to_owned()
            })
            .filter(|p| !p.is_empty())
            .collect();
        Self {
            paths,
            package_json: None,
        }
    }

    /// Adds the text of the root `package.json` (read by the caller), used to tell the test
    /// framework apart.
    pub fn with_package_json(mut self, text: impl Into<String>) -> Self {
        self.package_json = Some(text.into());
        self
    }

    /// Whether `path` (relative) is in the listing.
    pub fn has(&self, path: &str) -> bool {
        self.paths.contains(path)
    }

    /// The paths, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(String::as_str)
    }

    /// `*.c` files at most three levels deep (`a.c` is level 1), sorted.
    pub fn c_sources(&self) -> impl Iterator<Item = &str> {
        self.paths()
            .filter(|p| p.ends_with(".c") && p.split('/').count() <= 3)
    }

    fn any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.has(n))
    }
}

/// Every project the root markers describe, in priority order (a polyglot repository yields
/// several); empty when none matches.
pub fn detect_all(listing: &Listing) -> Vec<Project> {
    let mut found = Vec::new();
    let mut push = |project_type, flavor| {
        found.push(Project {
            project_type,
            flavor,
        })
    };
    if listing.has("go.mod") {
        push(ProjectType::Go, Flavor::None);
    }
    if listing.has("Cargo.toml") {
        push(ProjectType::Rust, Flavor::Cargo);
    }
    if listing.has("package.json") {
        if listing.has("tsconfig.json") {
            push(ProjectType::Node, Flavor::Typescript);
        } else {
            push(ProjectType::Node, Flavor::Npm);
        }
    }
    if listing.any(&["pytest.ini", "pyproject.toml", "requirements.txt"]) {
        push(ProjectType::Python, Flavor::Pytest);
    }
    if listing.any(&["mvnw", "pom.xml"]) {
        push(ProjectType::Java, Flavor::Maven);
    }
    if listing.any(&["gradlew", "build.gradle", "build.gradle.kts"]) {
        push(ProjectType::Java, Flavor::Gradle);
    }
    if listing.has("CMakeLists.txt") || listing.c_sources().next().is_some() {
        push(ProjectType::C, Flavor::Cc);
    }
    found
}

/// The project the repo tools act on: the first of [`detect_all`], or [`Project::UNKNOWN`].
pub fn detect(listing: &Listing) -> Project {
    detect_all(listing)
        .into_iter()
        .next()
        .unwrap_or(Project::UNKNOWN)
}

/// The package manager the lockfiles name (pnpm > yarn > npm).
pub fn node_package_manager(listing: &Listing) -> NodePackageManager {
    if listing.has("pnpm-lock.yaml") {
        NodePackageManager::Pnpm
    } else if listing.has("yarn.lock") {
        NodePackageManager::Yarn
    } else {
        NodePackageManager::Npm
    }
}

/// `repo.detect_project_type`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ProjectTypeOutput {
    /// `go`, `rust`, `node`, `python`, `java`, `c` or `unknown`.
    pub project_type: ProjectType,
    /// `cargo`, `typescript`, `npm`, `pytest`, `maven`, `gradle`, `cc` or `""`.
    pub flavor: Flavor,
}

impl From<Project> for ProjectTypeOutput {
    fn from(p: Project) -> Self {
        Self {
            project_type: p.project_type,
            flavor: p.flavor,
        }
    }
}

/// `repo.detect_toolchain`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ToolchainOutput {
    /// The project type's name.
    pub language: String,
    /// `go-mod`, `cargo`, `npm`, `npm-ts`, `pip`, `maven`, `gradle`, `cc` or `unknown`.
    pub build_system: String,
    /// `testing`, `cargo-test`, `npm-test`, `vitest`, `jest`, `pytest`, `junit`, `native` or
    /// `unknown`.
    pub test_framework: String,
    /// Whether a known toolchain can build it in a container (false only for `unknown`).
    pub containerizable: bool,
}

/// Maps a detection to its toolchain; Node's test framework comes from `package.json`'s
/// dependencies (vitest, then jest, else `npm-test`).
pub fn toolchain(project: Project, listing: &Listing) -> ToolchainOutput {
    let (build, test): (&str, &str) = match (project.project_type, project.flavor) {
        (ProjectType::Go, _) => ("go-mod", "testing"),
        (ProjectType::Rust, _) => ("cargo", "cargo-test"),
        (ProjectType::Node, flavor) => (
            if flavor == Flavor::Typescript {
                "npm-ts"
            } else {
                "npm"
            },
            node_test_framework(listing.package_json.as_deref()),
        ),
        (ProjectType::Python, _) => ("pip", "pytest"),
        (ProjectType::Java, Flavor::Gradle) => ("gradle", "junit"),
        (ProjectType::Java, _) => ("maven", "junit"),
        (ProjectType::C, _) => ("cc", "native"),
        (ProjectType::Unknown, _) => ("unknown", "unknown"),
    };
    ToolchainOutput {
        language: project.project_type.as_str().to_owned(),
        build_system: build.to_owned(),
        test_framework: test.to_owned(),
        containerizable: project.project_type != ProjectType::Unknown,
    }
}

fn node_test_framework(package_json: Option<&str>) -> &'static str {
    let Some(text) = package_json else {
        return "npm-test";
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return "npm-test";
    };
    let declares = |name: &str| {
        ["dependencies", "devDependencies"]
            .iter()
            .any(|section| value.get(section).and_then(|d| d.get(name)).is_some())
    };
    if declares("vitest") {
        "vitest"
    } else if declares("jest") {
        "jest"
    } else {
        "npm-test"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(paths: &[&str]) -> Project {
        detect(&Listing::new(paths))
    }

    #[test]
    fn each_marker_detects_its_language_and_flavor() {
        let cases: &[(&[&str], ProjectType, Flavor)] = &[
            (&["go.mod"], ProjectType::Go, Flavor::None),
            (&["Cargo.toml"], ProjectType::Rust, Flavor::Cargo),
            (&["package.json"], ProjectType::Node, Flavor::Npm),
            (
                &["package.json", "tsconfig.json"],
                ProjectType::Node,
                Flavor::Typescript,
            ),
            (&["pytest.ini"], ProjectType::Python, Flavor::Pytest),
            (&["pyproject.toml"], ProjectType::Python, Flavor::Pytest),
            (&["requirements.txt"], ProjectType::Python, Flavor::Pytest),
            (&["pom.xml"], ProjectType::Java, Flavor::Maven),
            (&["mvnw"], ProjectType::Java, Flavor::Maven),
            (&["build.gradle"], ProjectType::Java, Flavor::Gradle),
            (&["build.gradle.kts"], ProjectType::Java, Flavor::Gradle),
            (&["gradlew"], ProjectType::Java, Flavor::Gradle),
            (&["CMakeLists.txt"], ProjectType::C, Flavor::Cc),
            (&["src/main.c"], ProjectType::C, Flavor::Cc),
        ];
        for (paths, ty, flavor) in cases {
            let p = project(paths);
            assert_eq!((p.project_type, p.flavor), (*ty, *flavor), "{paths:?}");
        }
    }

    #[test]
    fn the_priority_order_picks_go_over_everything_else() {
        let all = [
            "main.c",
            "build.gradle",
            "pom.xml",
            "pyproject.toml",
            "package.json",
            "Cargo.toml",
            "go.mod",
        ];
        assert_eq!(project(&all).project_type, ProjectType::Go);
        assert_eq!(project(&all[..6]).project_type, ProjectType::Rust);
        assert_eq!(project(&all[..5]).project_type, ProjectType::Node);
        assert_eq!(project(&all[..4]).project_type, ProjectType::Python);
        assert_eq!(project(&all[..3]).flavor, Flavor::Maven);
        assert_eq!(project(&all[..2]).flavor, Flavor::Gradle);
    }

    #[test]
    fn a_polyglot_repository_lists_every_language_in_priority_order() {
        let listing = Listing::new([
            "go.mod",
            "web/x.js",
            "package.json",
            "pyproject.toml",
            "lib/a.c",
        ]);
        let all: Vec<_> = detect_all(&listing)
            .into_iter()
            .map(|p| p.project_type)
            .collect();
        assert_eq!(
            all,
            [
                ProjectType::Go,
                ProjectType::Node,
                ProjectType::Python,
                ProjectType::C
            ]
        );
    }

    #[test]
    fn only_root_markers_count() {
        assert_eq!(
            project(&["sub/go.mod", "sub/Cargo.toml", "x/package.json"]),
            Project::UNKNOWN
        );
    }

    #[test]
    fn c_sources_count_only_three_levels_deep() {
        assert_eq!(project(&["a/b/c.c"]).project_type, ProjectType::C);
        assert_eq!(project(&["a/b/c/d.c"]), Project::UNKNOWN);
        assert_eq!(project(&["./a/main.c"]).project_type, ProjectType::C);
    }

    #[test]
    fn an_empty_workspace_is_unknown_and_serialises_an_empty_flavor() {
        let out = ProjectTypeOutput::from(project(&[]));
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            serde_json::json!({"project_type": "unknown", "flavor": ""})
        );
        let out = ProjectTypeOutput::from(project(&["Cargo.toml"]));
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"project_type":"rust","flavor":"cargo"}"#
        );
    }

    #[test]
    fn the_toolchain_mapping_follows_the_reference() {
        let cases: &[(&[&str], [&str; 3], bool)] = &[
            (&["go.mod"], ["go", "go-mod", "testing"], true),
            (&["Cargo.toml"], ["rust", "cargo", "cargo-test"], true),
            (&["package.json"], ["node", "npm", "npm-test"], true),
            (
                &["package.json", "tsconfig.json"],
                ["node", "npm-ts", "npm-test"],
                true,
            ),
            (&["requirements.txt"], ["python", "pip", "pytest"], true),
            (&["pom.xml"], ["java", "maven", "junit"], true),
            (&["build.gradle"], ["java", "gradle", "junit"], true),
            (&["x.c"], ["c", "cc", "native"], true),
            (&["README.md"], ["unknown", "unknown", "unknown"], false),
        ];
        for (paths, [lang, build, test], containerizable) in cases {
            let listing = Listing::new(*paths);
            let t = toolchain(detect(&listing), &listing);
            assert_eq!(
                (
                    t.language.as_str(),
                    t.build_system.as_str(),
                    t.test_framework.as_str(),
                    t.containerizable
                ),
                (*lang, *build, *test, *containerizable),
                "{paths:?}"
            );
        }
    }

    #[test]
    fn the_toolchain_output_keeps_the_reference_field_order() {
        let listing = Listing::new(["go.mod"]);
        let json = serde_json::to_string(&toolchain(detect(&listing), &listing)).unwrap();
        assert_eq!(
            json,
            r#"{"language":"go","build_system":"go-mod","test_framework":"testing","containerizable":true}"#
        );
    }

    #[test]
    fn node_test_framework_comes_from_package_json_dependencies() {
        let with = |json: &str| {
            let listing = Listing::new(["package.json"]).with_package_json(json);
            toolchain(detect(&listing), &listing).test_framework
        };
        assert_eq!(with(r#"{"devDependencies":{"vitest":"^2"}}"#), "vitest");
        assert_eq!(with(r#"{"dependencies":{"jest":"29"}}"#), "jest");
        assert_eq!(
            with(r#"{"devDependencies":{"vitest":"1","jest":"29"}}"#),
            "vitest"
        );
        assert_eq!(with(r#"{"scripts":{"test":"node --test"}}"#), "npm-test");
        assert_eq!(with("not json"), "npm-test");
    }

    #[test]
    fn lockfiles_pick_the_node_package_manager() {
        assert_eq!(
            node_package_manager(&Listing::new(["package.json"])),
            NodePackageManager::Npm
        );
        assert_eq!(
            node_package_manager(&Listing::new(["package-lock.json"])),
            NodePackageManager::Npm
        );
        assert_eq!(
            node_package_manager(&Listing::new(["yarn.lock"])),
            NodePackageManager::Yarn
        );
        assert_eq!(
            node_package_manager(&Listing::new(["yarn.lock", "pnpm-lock.yaml"])),
            NodePackageManager::Pnpm
        );
    }
}
