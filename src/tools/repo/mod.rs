//! The `repo.*` family: the project's toolchain, tests and sources.
//!
//! Two layers. The pure logic (`args`, `commands`, `coverage`, `detect`, `failures`,
//! `stacktrace`, `symbols`) never runs a program, touches the filesystem or knows about the
//! runner: inputs are a workspace listing, argument values and captured output, so every rule is
//! unit-tested on its own. The tools (one file each, declared by `family!`) compose it with the
//! runner and the process helper; `run` holds what they share.
//!
//! Invariant: only the build and test tools (`runs_repository_code` in their metadata:
//! validate, build, test, run_tests, test_file, coverage_report, static_analysis, package, and
//! the two summaries when they run the tests) run a program the repository can configure.
//! The others (detection, tree, symbols, symbol_search, find_references, changed_files, the
//! summaries of a given output) read files through the runner or run git hardened, never an
//! npm script, a Makefile, a setup.py or a git hook.

use crate::tools::catalog::Registry;

/// Declares the family's tools, one `module => Type` line each (as in `tools::fs`).
macro_rules! family {
    ($($module:ident => $tool:ident),* $(,)?) => {
        $(mod $module;)*

        /// Adds every tool of the family to `registry`.
        pub fn register(registry: &mut Registry) {
            $(registry.register($module::$tool);)*
        }
    };
}

family! {
    build => Build,
    changed_files => ChangedFiles,
    coverage_report => CoverageReport,
    detect_project_type => DetectProjectType,
    detect_toolchain => DetectToolchain,
    file_symbols => Symbols,
    find_references => FindReferences,
    package => Package,
    run_tests => RunTests,
    stacktrace_summary => StacktraceSummary,
    static_analysis => StaticAnalysis,
    symbol_search => SymbolSearch,
    test => Test,
    test_failures_summary => TestFailuresSummary,
    test_file => TestFile,
    tree => Tree,
    validate => Validate,
}

pub mod run;

pub mod args;
pub mod commands;
pub mod coverage;
pub mod detect;
pub mod failures;
pub mod stacktrace;
pub mod symbols;

#[cfg(test)]
mod tests {
    use schemars::schema_for;

    fn properties(schema: &schemars::Schema) -> Vec<String> {
        let mut keys: Vec<String> = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    #[test]
    fn every_output_derives_a_schema_with_its_reference_fields() {
        assert_eq!(
            properties(&schema_for!(super::detect::ProjectTypeOutput)),
            ["flavor", "project_type"]
        );
        assert_eq!(
            properties(&schema_for!(super::detect::ToolchainOutput)),
            [
                "build_system",
                "containerizable",
                "language",
                "test_framework"
            ]
        );
        let failures = properties(&schema_for!(super::failures::FailureSummary));
        for field in ["failed_count", "failed_tests", "diagnostics", "counts"] {
            assert!(failures.contains(&field.to_owned()), "{failures:?}");
        }
        let trace = properties(&schema_for!(super::stacktrace::Stacktrace));
        for field in ["type", "message", "frames", "frame_count"] {
            assert!(trace.contains(&field.to_owned()), "{trace:?}");
        }
        assert_eq!(
            properties(&schema_for!(super::symbols::SymbolsOutput)),
            ["count", "language", "path", "symbols"]
        );
    }
}
