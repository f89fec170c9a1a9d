//! Test-failure summaries for `repo.test_failures_summary`: `go test` (plain and `-json`),
//! pytest, `cargo test` (libtest), node's test runner (TAP and spec reporters), jest's and
//! vitest's default reporters, and JUnit-style XML (Maven Surefire, Gradle).
//!
//! A summary lists each failed test (name, kind, the output line it came from, `file:line` and
//! message when the runner prints them), the passed/failed/skipped counts, and diagnostic lines
//! (compile errors, panics). Only JUnit XML can fail to parse; plain text never does.

use std::collections::HashMap;
use std::sync::LazyLock;

use quick_xml::events::{BytesStart, Event};
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The largest `max_failures` / `max_diagnostics`; also their default.
pub const MAX_ITEMS: usize = 200;

/// The caps of one summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failed tests kept.
    pub max_failures: usize,
    /// Diagnostic lines kept.
    pub max_diagnostics: usize,
}

impl Limits {
    /// Missing or non-positive values take the default (200); larger ones are clamped to 200.
    pub fn new(max_failures: Option<i64>, max_diagnostics: Option<i64>) -> Self {
        let clamp = |v: Option<i64>| match v {
            Some(v) if v > 0 => usize::try_from(v).map_or(MAX_ITEMS, |v| v.min(MAX_ITEMS)),
            _ => MAX_ITEMS,
        };
        Self {
            max_failures: clamp(max_failures),
            max_diagnostics: clamp(max_diagnostics),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(None, None)
    }
}

/// Which runner's output was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `go test` text.
    GoTest,
    /// `go test -json`.
    GoTestJson,
    /// pytest.
    Pytest,
    /// `cargo test` (libtest).
    CargoTest,
    /// `node --test` with the TAP reporter.
    NodeTap,
    /// `node --test` with the spec reporter.
    NodeSpec,
    /// jest's default reporter.
    Jest,
    /// vitest's default reporter.
    Vitest,
    /// JUnit-style XML.
    Junit,
    /// Nothing recognised.
    Unknown,
}

/// One failed test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct FailedTest {
    /// The test's name as the runner prints it (`TestTable/bad`, `tests/x.py::test_y`,
    /// `tests::adds`, `com.x.CalcTest.adds`).
    pub name: String,
    /// `go_test`, `go_build`, `pytest`, `pytest_error`, `rust_test`, `node_test`, `jest`,
    /// `vitest`, `junit_failure` or `junit_error`.
    pub kind: String,
    /// The output line the failure was found on.
    pub line: String,
    /// `file:line` of the failure, when printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The failure message, when printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Test counts. A runner that prints no count for a status leaves what its per-test lines
/// showed (so plain `go test`, which prints no passing tests, reports 0 passed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Counts {
    /// Passed.
    pub passed: u64,
    /// Failed (errors included).
    pub failed: u64,
    /// Skipped or ignored.
    pub skipped: u64,
}

/// A parsed test run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct FailureSummary {
    /// The recognised format.
    pub format: Format,
    /// Failed tests found, before the cap.
    pub failed_count: usize,
    /// Failed tests, at most `max_failures`.
    pub failed_tests: Vec<FailedTest>,
    /// The counts.
    pub counts: Counts,
    /// Compile errors, panics and other notable lines, at most `max_diagnostics`.
    pub diagnostics: Vec<String>,
    /// Whether `max_failures` or `max_diagnostics` cut a list.
    pub truncated: bool,
}

impl FailureSummary {
    /// One line for humans: `2 failed, 1 passed, 1 skipped` (the closing-line form CI reads).
    pub fn summary(&self) -> String {
        let c = self.counts;
        let mut s = format!("{} passed, {} failed", c.passed, c.failed);
        if c.skipped > 0 {
            s.push_str(&format!(", {} skipped", c.skipped));
        }
        s
    }
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FailuresError {
    /// Malformed JUnit XML (`invalid_argument` when it was the caller's `output`).
    #[error("invalid JUnit XML at byte {position}")]
    Xml {
        /// Where the reader stopped.
        position: u64,
        /// The reader's error.
        #[source]
        source: quick_xml::Error,
    },
}

/// Parses test output, recognising the format from its content.
pub fn parse(output: &str, limits: Limits) -> Result<FailureSummary, FailuresError> {
    let mut acc = match detect(output) {
        Format::Junit => junit(output)?,
        Format::GoTestJson => go_json(output),
        Format::Pytest => pytest(output),
        Format::CargoTest => cargo(output),
        Format::NodeTap => node_tap(output),
        Format::NodeSpec => node_spec(output),
        Format::Jest => jest(output),
        Format::Vitest => vitest(output),
        Format::GoTest => go_text(output),
        Format::Unknown => Acc::new(Format::Unknown),
    };
    if acc.counts.failed < acc.failed.len() as u64 {
        acc.counts.failed = acc.failed.len() as u64;
    }
    let failed_count = acc.failed.len();
    let truncated =
        failed_count > limits.max_failures || acc.diagnostics.len() > limits.max_diagnostics;
    acc.failed.truncate(limits.max_failures);
    acc.diagnostics.truncate(limits.max_diagnostics);
    Ok(FailureSummary {
        format: acc.format,
        failed_count,
        failed_tests: acc.failed,
        counts: acc.counts,
        diagnostics: acc.diagnostics,
        truncated,
    })
}

static CARGO_RESULT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?m)^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored"));
static PYTEST_SUMMARY: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?m)^=*\s*((?:\d+ (?:failed|passed|skipped|errors?|xfailed|xpassed|deselected|warnings?)(?:, )?)+) in [\d.]+s",
    )
});
static GO_TEST_LINE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\s*)--- (FAIL|PASS|SKIP): (\S+) \("));
static GO_LOG_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s+(\S+\.go:\d+): (.*)$"));
static GO_COMPILE: LazyLock<Regex> = LazyLock::new(|| re(r"^\S+\.go:\d+:\d+: "));
static COUNT_PAIR: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+) (\w+)"));
static AT_LOCATION: LazyLock<Regex> =
    LazyLock::new(|| re(r"\(?((?:/|\./|[A-Za-z0-9_])[^\s():]*\.[cm]?[jt]sx?):(\d+):\d+\)?$"));

/// Compiles a pattern written in this file; every pattern is a literal exercised by the tests.
fn re(pattern: &str) -> Regex {
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("literal regex compiles")
}

/// Recognises the runner from markers only it prints.
pub fn detect(output: &str) -> Format {
    let trimmed = output.trim_start();
    if trimmed.starts_with("<?xml") || trimmed.starts_with("<testsuite") {
        return Format::Junit;
    }
    if trimmed.starts_with('{') && trimmed.contains("\"Action\":") {
        return Format::GoTestJson;
    }
    if CARGO_RESULT.is_match(output) || output.contains("\nrunning ") && output.contains(" ... ") {
        return Format::CargoTest;
    }
    if output.contains("TAP version") || output.contains("\n# Subtest: ") {
        return Format::NodeTap;
    }
    if output.contains("ℹ tests ") || output.contains("\nℹ fail ") {
        return Format::NodeSpec;
    }
    if output
        .lines()
        .any(|l| l.starts_with("Tests:") && l.contains(" total"))
    {
        return Format::Jest;
    }
    if output
        .lines()
        .any(|l| l.trim_start().starts_with("Test Files "))
    {
        return Format::Vitest;
    }
    if PYTEST_SUMMARY.is_match(output) || output.contains("short test summary info") {
        return Format::Pytest;
    }
    if output
        .lines()
        .any(|l| GO_TEST_LINE.is_match(l) || l.starts_with("FAIL\t") || l.starts_with("ok  \t"))
    {
        return Format::GoTest;
    }
    Format::Unknown
}

struct Acc {
    format: Format,
    failed: Vec<FailedTest>,
    counts: Counts,
    diagnostics: Vec<String>,
}

impl Acc {
    fn new(format: Format) -> Self {
        Self {
            format,
            failed: Vec::new(),
            counts: Counts::default(),
            diagnostics: Vec::new(),
        }
    }

    /// Records a failed test found on `line`.
    fn fail(
        &mut self,
        name: &str,
        kind: &str,
        line: &str,
        location: Option<String>,
        message: Option<String>,
    ) {
        self.failed.push(FailedTest {
            name: name.to_owned(),
            kind: kind.to_owned(),
            line: line.trim().to_owned(),
            location,
            message,
        });
    }

    /// A runner's closing count line (`# pass 3`, `ℹ fail 1`): it replaces what the per-test
    /// lines counted.
    fn set_count(&mut self, status: &str, n: &str) {
        let n = n.parse().unwrap_or(0);
        match status {
            "pass" => self.counts.passed = n,
            "fail" => self.counts.failed = n,
            _ => self.counts.skipped = n,
        }
    }
}

/// `file:line` of a `file:line:column` location.
fn without_column(location: &str) -> &str {
    location.rsplit_once(':').map_or(location, |(loc, _)| loc)
}

/// The first non-blank line of a failure's body, trimmed: the message JavaScript runners print
/// under a failed test.
fn first_text(body: &[&str]) -> Option<String> {
    body.iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// `file:line` of a JavaScript stack frame or code-frame pointer (`at fn (file.js:6:17)`,
/// `❯ file.ts:9:15`).
fn js_location(line: &str) -> Option<String> {
    let t = line.trim().trim_start_matches('❯').trim();
    AT_LOCATION
        .captures(t)
        .map(|m| format!("{}:{}", &m[1], &m[2]))
}

/// The location (the first `file.go:N:` log line) and message (the log lines) of a failed Go
/// test, from the lines printed under it.
fn go_details<'a>(lines: impl IntoIterator<Item = &'a str>) -> (Option<String>, Option<String>) {
    let mut location = None;
    let mut messages = Vec::new();
    for l in lines {
        let t = l.trim();
        if t.is_empty() || t.starts_with("=== ") || t.starts_with("--- ") {
            continue;
        }
        if let Some(m) = GO_LOG_LINE.captures(l) {
            location.get_or_insert_with(|| m[1].to_owned());
            messages.push(m[2].to_owned());
        } else {
            messages.push(t.to_owned());
        }
    }
    (
        location,
        (!messages.is_empty()).then(|| messages.join("\n")),
    )
}

// --- go test ------------------------------------------------------------------------------

fn go_text(output: &str) -> Acc {
    let mut acc = Acc::new(Format::GoTest);
    let lines: Vec<&str> = output.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(c) = GO_TEST_LINE.captures(line) {
            let indent = c[1].len();
            match &c[2] {
                "PASS" => acc.counts.passed += 1,
                "SKIP" => acc.counts.skipped += 1,
                _ => {
                    let body = lines[i + 1..].iter().copied().take_while(|l| {
                        l.len() - l.trim_start().len() > indent && !GO_TEST_LINE.is_match(l)
                    });
                    let (location, message) = go_details(body);
                    acc.fail(&c[3], "go_test", line, location, message);
                }
            }
        } else if let Some(rest) = line.strip_prefix("FAIL\t") {
            if let Some(pkg) = rest.strip_suffix(" [build failed]") {
                acc.fail(pkg, "go_build", line, None, None);
            }
            acc.diagnostics.push(line.to_owned());
        } else if GO_COMPILE.is_match(line) || line.starts_with("# ") || line.starts_with("panic: ")
        {
            acc.diagnostics.push(line.to_owned());
        }
        i += 1;
    }
    acc
}

/// One `go test -json` event (test2json).
#[derive(Deserialize)]
struct GoEvent {
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Package", default)]
    package: String,
    #[serde(rename = "Test")]
    test: Option<String>,
    #[serde(rename = "Output")]
    output: Option<String>,
}

fn go_json(output: &str) -> Acc {
    let mut acc = Acc::new(Format::GoTestJson);
    let mut outputs: HashMap<(String, String), Vec<String>> = HashMap::new();
    for line in output.lines() {
        let Ok(ev) = serde_json::from_str::<GoEvent>(line) else {
            // Build errors are printed as plain text before the events.
            if GO_COMPILE.is_match(line) || line.starts_with("# ") {
                acc.diagnostics.push(line.to_owned());
            }
            continue;
        };
        let key = (ev.package.clone(), ev.test.clone().unwrap_or_default());
        match (ev.action.as_str(), ev.test.as_deref()) {
            ("output", _) => {
                if let Some(out) = ev.output {
                    let out = out.trim_end_matches('\n');
                    if ev.test.is_none() && (out.starts_with("panic: ") || GO_COMPILE.is_match(out))
                    {
                        acc.diagnostics.push(out.to_owned());
                    }
                    outputs.entry(key).or_default().push(out.to_owned());
                }
            }
            ("build-output", _) => {
                if let Some(out) = ev.output {
                    acc.diagnostics.push(out.trim_end().to_owned());
                }
            }
            ("pass", Some(_)) => acc.counts.passed += 1,
            ("skip", Some(_)) => acc.counts.skipped += 1,
            ("fail", Some(test)) => {
                let lines = outputs.remove(&key).unwrap_or_default();
                let frame = lines
                    .iter()
                    .find(|l| l.trim_start().starts_with("--- FAIL:"))
                    .cloned()
                    .unwrap_or_else(|| format!("--- FAIL: {test}"));
                let (location, message) = go_details(lines.iter().map(String::as_str));
                acc.fail(test, "go_test", &frame, location, message);
            }
            ("fail", None) => {
                let lines = outputs.remove(&key).unwrap_or_default();
                if lines
                    .iter()
                    .any(|l| l.contains("[build failed]") || l.contains("[setup failed]"))
                {
                    acc.fail(
                        &ev.package,
                        "go_build",
                        &format!("FAIL\t{} [build failed]", ev.package),
                        None,
                        None,
                    );
                }
            }
            _ => {}
        }
    }
    acc
}

// --- pytest -------------------------------------------------------------------------------

static PYTEST_SECTION: LazyLock<Regex> = LazyLock::new(|| re(r"^_{3,} (.+?) _{3,}$"));
static PYTEST_LOCATION: LazyLock<Regex> = LazyLock::new(|| re(r"^(\S+\.py):(\d+): (\S.*)$"));

fn pytest(output: &str) -> Acc {
    let mut acc = Acc::new(Format::Pytest);
    // Locations from the FAILURES section, keyed by the section's test name.
    let mut locations: HashMap<String, String> = HashMap::new();
    let mut section: Option<String> = None;
    for line in output.lines() {
        if let Some(c) = PYTEST_SECTION.captures(line) {
            section = Some(c[1].to_owned());
        } else if let (Some(name), Some(c)) = (&section, PYTEST_LOCATION.captures(line)) {
            locations.insert(name.clone(), format!("{}:{}", &c[1], &c[2]));
        } else if line.starts_with("E   ") {
            acc.diagnostics.push(line.to_owned());
        }
        let (rest, kind) = match (line.strip_prefix("FAILED "), line.strip_prefix("ERROR ")) {
            (Some(r), _) => (r, "pytest"),
            (_, Some(r)) => (r, "pytest_error"),
            _ => continue,
        };
        let (name, message) = match rest.split_once(" - ") {
            Some((n, m)) => (n.trim(), Some(m.trim().to_owned())),
            None => (rest.trim(), None),
        };
        // The section header names `Class.test`, the node id `path::Class::test`.
        let short = name.split("::").skip(1).collect::<Vec<_>>().join(".");
        let location = locations.get(&short).cloned();
        acc.fail(name, kind, line, location, message);
    }
    if let Some(c) = PYTEST_SUMMARY.captures_iter(output).last() {
        for pair in COUNT_PAIR.captures_iter(&c[1]) {
            let n: u64 = pair[1].parse().unwrap_or(0);
            match &pair[2] {
                "passed" | "xpassed" => acc.counts.passed += n,
                "failed" | "error" | "errors" => acc.counts.failed += n,
                "skipped" | "xfailed" => acc.counts.skipped += n,
                _ => {}
            }
        }
    }
    acc
}

// --- cargo test ---------------------------------------------------------------------------

static CARGO_TEST_LINE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^test (\S+) \.\.\. (ok|FAILED|ignored)"));
static RUST_PANIC: LazyLock<Regex> =
    LazyLock::new(|| re(r"^thread '([^']+)'(?: \(\d+\))? panicked at (\S+?):?$"));

fn cargo(output: &str) -> Acc {
    let mut acc = Acc::new(Format::CargoTest);
    let lines: Vec<&str> = output.lines().collect();
    let mut per_test = Counts::default();
    let mut panics: HashMap<String, (String, String)> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(c) = CARGO_TEST_LINE.captures(line) {
            match &c[2] {
                "ok" => per_test.passed += 1,
                "ignored" => per_test.skipped += 1,
                _ => acc.fail(&c[1], "rust_test", line, None, None),
            }
        } else if let Some(c) = RUST_PANIC.captures(line) {
            let message: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| {
                    !l.is_empty() && !l.starts_with("note: ") && !l.starts_with("stack backtrace:")
                })
                .copied()
                .collect();
            panics.insert(
                c[1].to_owned(),
                (without_column(&c[2]).to_owned(), message.join("\n")),
            );
        } else if line.starts_with("error[")
            || line.starts_with("error: ")
            || line.trim_start().starts_with("--> ")
        {
            acc.diagnostics.push((*line).to_owned());
        }
    }
    for f in &mut acc.failed {
        if let Some((loc, msg)) = panics.remove(&f.name) {
            f.location = Some(loc);
            f.message = (!msg.is_empty()).then_some(msg);
        }
    }
    let mut results = Counts::default();
    let mut any = false;
    for c in CARGO_RESULT.captures_iter(output) {
        any = true;
        results.passed += c[1].parse::<u64>().unwrap_or(0);
        results.failed += c[2].parse::<u64>().unwrap_or(0);
        results.skipped += c[3].parse::<u64>().unwrap_or(0);
    }
    acc.counts = if any { results } else { per_test };
    acc
}

// --- node ---------------------------------------------------------------------------------

static TAP_RESULT: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\s*)(not ok|ok) \d+ - (.*?)(?: # (SKIP|TODO)\b.*)?$"));
static TAP_COUNT: LazyLock<Regex> = LazyLock::new(|| re(r"^# (pass|fail|skipped) (\d+)$"));

fn node_tap(output: &str) -> Acc {
    let mut acc = Acc::new(Format::NodeTap);
    let lines: Vec<&str> = output.lines().collect();
    let mut counted = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(c) = TAP_COUNT.captures(line) {
            counted = true;
            acc.set_count(&c[1], &c[2]);
        } else if let Some(c) = TAP_RESULT.captures(line) {
            let indent = c[1].len();
            if &c[2] == "not ok" && c.get(4).is_none() {
                let name = c[3].to_owned();
                // The YAML diagnostic block (`  ---` … `  ...`) that follows.
                let mut location = None;
                let mut message = None;
                let mut j = i + 1;
                if lines.get(j).map(|l| l.trim()) == Some("---") {
                    j += 1;
                    while j < lines.len() && lines[j].trim() != "..." {
                        let l = lines[j].trim_start();
                        if let Some(v) = l.strip_prefix("location: ") {
                            location = Some(without_column(v.trim_matches('\'')).to_owned());
                        } else if let Some(v) = l.strip_prefix("error: ") {
                            message = Some(if v == "|-" || v == "|" {
                                let block_indent = lines[j].len() - l.len();
                                let body: Vec<&str> = lines[j + 1..]
                                    .iter()
                                    .take_while(|b| {
                                        b.trim().is_empty()
                                            || b.len() - b.trim_start().len() > block_indent
                                    })
                                    .map(|b| b.trim())
                                    .filter(|b| !b.is_empty())
                                    .collect();
                                body.join("\n")
                            } else {
                                v.trim_matches('\'').to_owned()
                            });
                        }
                        j += 1;
                    }
                }
                // A failing suite repeats its failing subtests: keep the innermost only.
                let is_parent = acc.failed.last().is_some_and(|_| {
                    indent == 0
                        && lines[..i]
                            .iter()
                            .rev()
                            .take_while(|l| !l.starts_with("# Subtest: "))
                            .any(|l| l.starts_with("    not ok"))
                });
                if !is_parent {
                    acc.fail(&name, "node_test", line, location, message);
                }
                i = j;
            } else if !counted {
                if c.get(4).is_some() {
                    acc.counts.skipped += 1;
                } else if &c[2] == "ok" {
                    acc.counts.passed += 1;
                }
            }
        }
        i += 1;
    }
    acc
}

static SPEC_FAIL: LazyLock<Regex> = LazyLock::new(|| re(r"^(\s*)✖ (.+?)(?: \([\d.]+m?s\))?$"));
static SPEC_COUNT: LazyLock<Regex> = LazyLock::new(|| re(r"^ℹ (pass|fail|skipped) (\d+)$"));

fn node_spec(output: &str) -> Acc {
    let mut acc = Acc::new(Format::NodeSpec);
    let lines: Vec<&str> = output.lines().collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(c) = SPEC_COUNT.captures(line) {
            acc.set_count(&c[1], &c[2]);
            continue;
        }
        let Some(c) = SPEC_FAIL.captures(line) else {
            continue;
        };
        let name = c[2].to_owned();
        if name == "failing tests:" {
            continue;
        }
        // The closing "failing tests:" list repeats each failure after `test at file:line:col`.
        let test_at = i
            .checked_sub(1)
            .and_then(|p| lines[p].strip_prefix("test at "))
            .map(|loc| without_column(loc).to_owned());
        if let Some(&k) = index.get(&name) {
            if let Some(loc) = test_at {
                acc.failed[k].location = Some(loc);
            }
            continue;
        }
        let body: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.starts_with("  ") || l.is_empty())
            .copied()
            .collect();
        let location = test_at.or_else(|| body.iter().find_map(|l| js_location(l)));
        index.insert(name.clone(), acc.failed.len());
        acc.fail(&name, "node_test", line, location, first_text(&body));
    }
    acc
}

/// The counts of a jest or vitest summary line (`3 failed, 10 passed, 1 todo`).
fn js_counts(acc: &mut Acc, summary: &str) {
    for pair in COUNT_PAIR.captures_iter(summary) {
        let n: u64 = pair[1].parse().unwrap_or(0);
        match &pair[2] {
            "passed" => acc.counts.passed = n,
            "failed" => acc.counts.failed = n,
            "skipped" | "todo" => acc.counts.skipped += n,
            _ => {}
        }
    }
}

static JEST_HEADER: LazyLock<Regex> = LazyLock::new(|| re(r"^  ● (.+)$"));
static JEST_TESTS: LazyLock<Regex> = LazyLock::new(|| re(r"^Tests:\s+(.*) total$"));

fn jest(output: &str) -> Acc {
    let mut acc = Acc::new(Format::Jest);
    let lines: Vec<&str> = output.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(c) = JEST_TESTS.captures(line) {
            js_counts(&mut acc, &c[1]);
        } else if let Some(c) = JEST_HEADER.captures(line) {
            if c[1].starts_with("Test suite failed to run") {
                acc.diagnostics.push(line.trim().to_owned());
                continue;
            }
            let body: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| {
                    !JEST_HEADER.is_match(l)
                        && !l.starts_with("Test Suites:")
                        && !l.starts_with("Tests:")
                })
                .copied()
                .collect();
            // The stack frames (`at …`), not the code frame's pointer lines.
            let location = body
                .iter()
                .filter(|l| l.trim_start().starts_with("at "))
                .find_map(|l| js_location(l));
            acc.fail(&c[1], "jest", line, location, first_text(&body));
        }
    }
    acc
}

static VITEST_FAIL: LazyLock<Regex> = LazyLock::new(|| re(r"^ FAIL  (\S+) > (.+)$"));
static VITEST_TESTS: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*Tests\s+(.*)\(\d+\)$"));

fn vitest(output: &str) -> Acc {
    let mut acc = Acc::new(Format::Vitest);
    let lines: Vec<&str> = output.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(c) = VITEST_TESTS.captures(line) {
            js_counts(&mut acc, &c[1]);
        } else if let Some(c) = VITEST_FAIL.captures(line) {
            let body = &lines[i + 1..];
            let location = body.iter().take(20).find_map(|l| js_location(l));
            let name = format!("{} > {}", &c[1], &c[2]);
            acc.fail(&name, "vitest", line, location, first_text(body));
        }
    }
    acc
}

// --- JUnit XML ----------------------------------------------------------------------------

/// The testcase being read.
struct Case {
    name: String,
    location: Option<String>,
    outcome: Option<(&'static str, Option<String>, String)>,
    skipped: bool,
    text: String,
    in_outcome: bool,
}

fn attr(e: &BytesStart<'_>, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

fn junit(output: &str) -> Result<Acc, FailuresError> {
    let mut acc = Acc::new(Format::Junit);
    let mut reader = quick_xml::Reader::from_str(output);
    let mut case: Option<Case> = None;
    loop {
        let event = reader.read_event().map_err(|source| FailuresError::Xml {
            position: reader.buffer_position(),
            source,
        })?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            match e.name().as_ref() {
                "testcase" => {
                    let name = attr(e, "name").unwrap_or_default();
                    let full = match attr(e, "classname") {
                        Some(class) if !class.is_empty() => format!("{class}.{name}"),
                        _ => name,
                    };
                    let location = attr(e, "file").map(|f| match attr(e, "line") {
                        Some(l) => format!("{f}:{l}"),
                        None => f,
                    });
                    let c = Case {
                        name: full,
                        location,
                        outcome: None,
                        skipped: false,
                        text: String::new(),
                        in_outcome: false,
                    };
                    if empty {
                        acc.counts.passed += 1;
                    } else {
                        case = Some(c);
                    }
                }
                tag @ ("failure" | "error") => {
                    if let Some(c) = case.as_mut() {
                        let kind = if tag == "failure" {
                            "junit_failure"
                        } else {
                            "junit_error"
                        };
                        c.outcome = Some((
                            kind,
                            attr(e, "message"),
                            attr(e, "type").unwrap_or_default(),
                        ));
                        c.in_outcome = !empty;
                    }
                }
                "skipped" => {
                    if let Some(c) = case.as_mut() {
                        c.skipped = true;
                    }
                }
                _ => {}
            }
            continue;
        }
        match event {
            Event::Text(t) => {
                if let Some(c) = case.as_mut().filter(|c| c.in_outcome) {
                    c.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(c) = case.as_mut().filter(|c| c.in_outcome) {
                    c.text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(c) = case.as_mut().filter(|c| c.in_outcome) {
                    c.text.push_str(match &*r {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Event::End(e) => match e.name().as_ref() {
                "failure" | "error" => {
                    if let Some(c) = case.as_mut() {
                        c.in_outcome = false;
                    }
                }
                "testcase" => {
                    if let Some(c) = case.take() {
                        finish_case(&mut acc, c);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(acc)
}

fn finish_case(acc: &mut Acc, c: Case) {
    let Some((kind, message, ty)) = c.outcome else {
        if c.skipped {
            acc.counts.skipped += 1;
        } else {
            acc.counts.passed += 1;
        }
        return;
    };
    let text = c.text.trim();
    // Without a `file` attribute, the first stack frame of this test's class points at it.
    let class = c.name.rsplit_once('.').map_or("", |(class, _)| class);
    let location = c.location.or_else(|| {
        text.lines().find_map(|l| {
            let frame = l.trim().strip_prefix("at ")?;
            let (function, inside) = frame.strip_suffix(')')?.split_once('(')?;
            (!class.is_empty() && function.starts_with(class)).then(|| inside.to_owned())
        })
    });
    let message = match message {
        Some(m) if !m.is_empty() => Some(if ty.is_empty() || m.starts_with(&ty) {
            m
        } else {
            format!("{ty}: {m}")
        }),
        _ => text.lines().next().map(str::to_owned),
    };
    let line = format!(
        "{} {}",
        if kind == "junit_failure" {
            "FAILURE"
        } else {
            "ERROR"
        },
        c.name
    );
    acc.fail(&c.name, kind, &line, location, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/repo/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn summary(name: &str) -> FailureSummary {
        parse(&fixture(name), Limits::default()).unwrap()
    }

    fn names(s: &FailureSummary) -> Vec<&str> {
        s.failed_tests.iter().map(|f| f.name.as_str()).collect()
    }

    fn counts(passed: u64, failed: u64, skipped: u64) -> Counts {
        Counts {
            passed,
            failed,
            skipped,
        }
    }

    #[test]
    fn plain_go_test_output_lists_failures_with_their_log_lines() {
        let s = summary("go_test_plain.txt");
        assert_eq!(s.format, Format::GoTest);
        assert_eq!(names(&s), ["TestAddWrong", "TestTable", "TestTable/bad"]);
        let first = &s.failed_tests[0];
        assert_eq!(first.kind, "go_test");
        assert_eq!(first.line, "--- FAIL: TestAddWrong (0.00s)");
        assert_eq!(first.location.as_deref(), Some("calc_test.go:13"));
        assert_eq!(first.message.as_deref(), Some("Add(2, 2) = 4, want 5"));
        assert_eq!(
            s.failed_tests[2].location.as_deref(),
            Some("calc_test.go:25")
        );
        assert_eq!(s.counts, counts(0, 3, 0));
    }

    #[test]
    fn verbose_go_test_output_counts_passes_and_skips() {
        let s = summary("go_test_verbose.txt");
        assert_eq!(names(&s), ["TestAddWrong", "TestTable", "TestTable/bad"]);
        assert_eq!(s.counts, counts(2, 3, 1));
    }

    #[test]
    fn go_test_json_events_give_the_same_failures_and_counts() {
        let s = summary("go_test_json.txt");
        assert_eq!(s.format, Format::GoTestJson);
        assert_eq!(names(&s), ["TestAddWrong", "TestTable/bad", "TestTable"]);
        assert_eq!(
            s.failed_tests[0].location.as_deref(),
            Some("calc_test.go:13")
        );
        assert_eq!(
            s.failed_tests[0].message.as_deref(),
            Some("Add(2, 2) = 4, want 5")
        );
        assert_eq!(s.counts, counts(2, 3, 1));
    }

    #[test]
    fn a_go_build_failure_is_a_failed_package_with_compiler_diagnostics() {
        let s = summary("go_build_fail.txt");
        assert_eq!(names(&s), ["example.com/broken"]);
        assert_eq!(s.failed_tests[0].kind, "go_build");
        assert!(
            s.diagnostics
                .contains(&"./b.go:3:23: undefined: undefinedName".to_owned()),
            "{:?}",
            s.diagnostics
        );
    }

    #[test]
    fn a_go_test_panic_is_a_failure_and_a_diagnostic() {
        let s = summary("go_panic.txt");
        assert_eq!(names(&s), ["TestDivide"]);
        assert!(
            s.diagnostics
                .iter()
                .any(|d| d.starts_with("panic: runtime error: integer divide by zero"))
        );
    }

    #[test]
    fn pytest_failures_carry_node_ids_messages_locations_and_counts() {
        let s = summary("pytest_q.txt");
        assert_eq!(s.format, Format::Pytest);
        assert_eq!(
            names(&s),
            [
                "tests/test_calc.py::test_add_wrong",
                "tests/test_calc.py::test_raises"
            ]
        );
        assert_eq!(
            s.failed_tests[0].message.as_deref(),
            Some("AssertionError: two and two")
        );
        assert_eq!(
            s.failed_tests[0].location.as_deref(),
            Some("tests/test_calc.py:13")
        );
        assert_eq!(
            s.failed_tests[1].location.as_deref(),
            Some("tests/test_calc.py:22")
        );
        assert_eq!(s.counts, counts(1, 2, 1));
        assert_eq!(s.summary(), "1 passed, 2 failed, 1 skipped");
        assert!(
            s.diagnostics
                .iter()
                .any(|d| d.contains("KeyError: 'missing'"))
        );
    }

    #[test]
    fn cargo_test_failures_take_the_panic_location_and_message() {
        let s = summary("cargo_test.txt");
        assert_eq!(s.format, Format::CargoTest);
        assert_eq!(names(&s), ["tests::adds_wrong", "tests::unwraps_none"]);
        let f = &s.failed_tests[0];
        assert_eq!(f.line, "test tests::adds_wrong ... FAILED");
        assert_eq!(f.location.as_deref(), Some("src/lib.rs:16"));
        assert_eq!(
            f.message.as_deref(),
            Some("assertion `left == right` failed: two and two\n  left: 4\n right: 5")
        );
        assert_eq!(
            s.failed_tests[1].message.as_deref(),
            Some("called `Option::unwrap()` on a `None` value")
        );
        assert_eq!(s.counts, counts(1, 2, 1));
    }

    #[test]
    fn node_tap_output_reads_the_yaml_diagnostics() {
        let s = summary("node_test_tap.txt");
        assert_eq!(s.format, Format::NodeTap);
        assert_eq!(names(&s), ["adds wrong", "throws"]);
        assert_eq!(
            s.failed_tests[0].location.as_deref(),
            Some("/work/node/test/calc.test.js:8")
        );
        assert_eq!(
            s.failed_tests[0].message.as_deref(),
            Some("Expected values to be strictly equal:\n4 !== 5")
        );
        assert_eq!(
            s.failed_tests[1].message.as_deref(),
            Some("config.port is undefined")
        );
        assert_eq!(s.counts, counts(1, 2, 1));
    }

    #[test]
    fn node_spec_output_is_deduplicated_and_located() {
        let s = summary("node_test_spec.txt");
        assert_eq!(s.format, Format::NodeSpec);
        assert_eq!(names(&s), ["adds wrong", "throws"]);
        assert_eq!(
            s.failed_tests[0].location.as_deref(),
            Some("test/calc.test.js:8")
        );
        assert_eq!(
            s.failed_tests[0].message.as_deref(),
            Some("AssertionError [ERR_ASSERTION]: Expected values to be strictly equal:")
        );
        assert_eq!(
            s.failed_tests[1].location.as_deref(),
            Some("test/calc.test.js:14")
        );
        assert_eq!(s.counts, counts(1, 2, 1));
    }

    #[test]
    fn jest_and_vitest_default_reporters_are_read() {
        let s = summary("jest_default.txt");
        assert_eq!(s.format, Format::Jest);
        assert_eq!(names(&s), ["calc › adds wrong"]);
        assert_eq!(
            s.failed_tests[0].location.as_deref(),
            Some("calc.test.js:6")
        );
        assert_eq!(s.counts, counts(1, 1, 1));
        let s = summary("vitest_default.txt");
        assert_eq!(s.format, Format::Vitest);
        assert_eq!(names(&s), ["test/calc.test.ts > calc > adds wrong"]);
        assert_eq!(
            s.failed_tests[0].message.as_deref(),
            Some("AssertionError: expected 4 to be 5 // Object.is equality")
        );
        assert_eq!(
            s.failed_tests[0].location.as_deref(),
            Some("test/calc.test.ts:9")
        );
        assert_eq!(s.counts, counts(1, 1, 0));
    }

    #[test]
    fn surefire_xml_reports_failures_errors_and_skips() {
        let s = summary("surefire_report.xml");
        assert_eq!(s.format, Format::Junit);
        assert_eq!(
            names(&s),
            [
                "com.example.CalcTest.addsWrong",
                "com.example.CalcTest.divides"
            ]
        );
        let f = &s.failed_tests[0];
        assert_eq!(f.kind, "junit_failure");
        assert_eq!(
            f.message.as_deref(),
            Some("org.opentest4j.AssertionFailedError: expected: <5> but was: <4>")
        );
        assert_eq!(f.location.as_deref(), Some("CalcTest.java:14"));
        assert_eq!(s.failed_tests[1].kind, "junit_error");
        assert_eq!(
            s.failed_tests[1].message.as_deref(),
            Some("java.lang.ArithmeticException: / by zero")
        );
        assert_eq!(s.counts, counts(1, 2, 1));
    }

    #[test]
    fn gradle_xml_with_cdata_output_is_read() {
        let s = summary("gradle_report.xml");
        assert_eq!(names(&s), ["com.example.GreeterTest.greetsNobody"]);
        assert_eq!(
            s.failed_tests[0].message.as_deref(),
            Some("java.lang.NullPointerException: name")
        );
        assert_eq!(
            s.failed_tests[0].location.as_deref(),
            Some("GreeterTest.java:21")
        );
        assert_eq!(s.counts, counts(2, 1, 0));
    }

    #[test]
    fn malformed_junit_xml_is_a_typed_error() {
        let err = parse(
            "<testsuite><testcase name=\"a\"></testsuite>",
            Limits::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("invalid JUnit XML at byte"),
            "{err}"
        );
    }

    #[test]
    fn caps_keep_the_failed_count() {
        let s = parse(&fixture("go_test_plain.txt"), Limits::new(Some(1), Some(1))).unwrap();
        assert_eq!((s.failed_tests.len(), s.failed_count), (1, 3));
        assert!(s.diagnostics.len() <= 1);
        assert!(s.truncated);
        assert!(!summary("go_test_plain.txt").truncated);
        assert_eq!(
            Limits::new(Some(10_000), Some(-1)),
            Limits {
                max_failures: 200,
                max_diagnostics: 200
            }
        );
    }

    #[test]
    fn unrecognised_output_is_an_empty_summary() {
        let s = parse("hello\nworld\n", Limits::default()).unwrap();
        assert_eq!(s.format, Format::Unknown);
        assert!(s.failed_tests.is_empty());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["counts"],
            serde_json::json!({"passed": 0, "failed": 0, "skipped": 0})
        );
    }
}
