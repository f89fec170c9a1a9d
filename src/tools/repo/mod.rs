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
