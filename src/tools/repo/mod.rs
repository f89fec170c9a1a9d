//! The pure logic of the `repo.*` family: project detection, the argv of each language's
//! actions, the extra_args and target filters, and the parsers that summarise test failures and
//! stack traces.
//!
//! Nothing here runs a program, touches the filesystem or knows about the runner: inputs are a
//! workspace listing, argument values and captured output, so every rule is unit-tested on its
//! own. The tool handlers (registered elsewhere) compose these with the process helper.

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
