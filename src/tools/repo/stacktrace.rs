//! Stack-trace summaries for `repo.stacktrace_summary`: Go panics (`panic`), Python tracebacks
//! (`python_traceback`, chained with "During handling..." / "The above exception was the direct
//! cause..."), Java exceptions (`java_exception`, with `Caused by:` and `... N more`) and Rust
//! panics (`rust_panic`, with or without `RUST_BACKTRACE` frames).
//!
//! Each trace keeps its message, its frames innermost first (Python prints them outermost first
//! and is reversed), the number of frames before the cap, and the first frame inside the
//! workspace. Parsing is pure and never fails: text that is not a trace is skipped.

use schemars::JsonSchema;
use serde::Serialize;

/// The largest `max_traces`; also its default.
pub const MAX_TRACES: usize = 50;
/// The largest `max_frames`; also its default.
pub const MAX_FRAMES: usize = 80;

/// The caps of one summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Traces kept.
    pub max_traces: usize,
    /// Frames kept per trace (and per cause).
    pub max_frames: usize,
}

impl Limits {
    /// The caps from the tool's inputs: missing or non-positive values take the default, larger
    /// values are clamped (`max_traces` ≤ 50, `max_frames` ≤ 80).
    pub fn new(max_traces: Option<i64>, max_frames: Option<i64>) -> Self {
        let clamp = |v: Option<i64>, max: usize| match v {
            Some(v) if v > 0 => usize::try_from(v).map_or(max, |v| v.min(max)),
            _ => max,
        };
        Self {
            max_traces: clamp(max_traces, MAX_TRACES),
            max_frames: clamp(max_frames, MAX_FRAMES),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(None, None)
    }
}

/// The kind of trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TraceType {
    /// A Go panic with its goroutine trace.
    Panic,
    /// A Python traceback.
    PythonTraceback,
    /// A Java exception.
    JavaException,
    /// A Rust panic.
    RustPanic,
}

/// One stack frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Frame {
    /// The function or method (`main.load`, `com.x.App.run`, `calc::parse`).
    pub function: String,
    /// The source file, as printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line in `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// An exception behind the reported one (Java `Caused by:`, Python's chained tracebacks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Cause {
    /// `cause` (Java `Caused by:`, Python `raise ... from`) or `context` (Python "During
    /// handling of the above exception").
    pub relation: String,
    /// The exception line.
    pub message: String,
    /// Frames, innermost first, capped.
    pub frames: Vec<Frame>,
    /// Frames before the cap.
    pub frame_count: usize,
    /// Frames Java left out as `... N more`.
    pub omitted_frames: usize,
}

/// One summarised trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Stacktrace {
    /// The kind.
    #[serde(rename = "type")]
    pub trace_type: TraceType,
    /// The panic message or exception line.
    pub message: String,
    /// Frames, innermost first, capped at `max_frames`.
    pub frames: Vec<Frame>,
    /// Frames before the cap.
    pub frame_count: usize,
    /// Where it was raised: the panic location (Rust) or the innermost frame's `file:line`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The innermost frame in the workspace's own code (not the standard library, a dependency
    /// cache or the test harness).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_workspace_frame: Option<Frame>,
    /// Frames Java left out as `... N more`.
    pub omitted_frames: usize,
    /// The exceptions behind this one, nearest first.
    pub caused_by: Vec<Cause>,
}

/// Every trace in `output`, in order of appearance, at most `limits.max_traces`. `workspace`
/// is the workspace root as the traced program saw it (absolute frames under it count as the
/// workspace's own); relative paths always do.
pub fn parse(output: &str, workspace: Option<&str>, limits: Limits) -> Vec<Stacktrace> {
    summarise(output, workspace, limits).0
}

/// [`parse`], and how many traces there were before the cap.
pub fn summarise(
    output: &str,
    workspace: Option<&str>,
    limits: Limits,
) -> (Vec<Stacktrace>, usize) {
    let lines: Vec<&str> = output.lines().collect();
    let mut traces = Vec::new();
    let mut found = 0;
    let mut i = 0;
    while i < lines.len() {
        let parsed = go_panic(&lines, i)
            .or_else(|| python_traceback(&lines, i))
            .or_else(|| java_exception(&lines, i))
            .or_else(|| rust_panic(&lines, i));
        match parsed {
            Some((raw, next)) => {
                found += 1;
                if traces.len() < limits.max_traces {
                    traces.push(raw.finish(workspace, limits));
                }
                i = next.max(i + 1);
            }
            None => i += 1,
        }
    }
    (traces, found)
}

/// A trace before caps and workspace detection.
struct Raw {
    trace_type: TraceType,
    message: String,
    frames: Vec<Frame>,
    location: Option<String>,
    omitted: usize,
    causes: Vec<RawCause>,
}

struct RawCause {
    relation: &'static str,
    message: String,
    frames: Vec<Frame>,
    omitted: usize,
}

impl Raw {
    fn finish(self, workspace: Option<&str>, limits: Limits) -> Stacktrace {
        let in_workspace = |f: &&Frame| is_workspace_frame(f, workspace);
        let location_frame = || {
            let loc = self.location.as_deref()?;
            let (file, line) = split_location(loc);
            let frame = Frame {
                function: String::new(),
                file: Some(file.to_owned()),
                line,
            };
            is_workspace_frame(&frame, workspace).then_some(frame)
        };
        let first_workspace_frame = self
            .frames
            .iter()
            .find(in_workspace)
            .cloned()
            .or_else(location_frame);
        let location = self.location.clone().or_else(|| {
            let f = self.frames.first()?;
            Some(match (&f.file, f.line) {
                (Some(file), Some(line)) => format!("{file}:{line}"),
                (Some(file), None) => file.clone(),
                _ => return None,
            })
        });
        let frame_count = self.frames.len();
        let mut frames = self.frames;
        frames.truncate(limits.max_frames);
        Stacktrace {
            trace_type: self.trace_type,
            message: self.message,
            frames,
            frame_count,
            location,
            first_workspace_frame,
            omitted_frames: self.omitted,
            caused_by: self
                .causes
                .into_iter()
                .map(|c| {
                    let frame_count = c.frames.len();
                    let mut frames = c.frames;
                    frames.truncate(limits.max_frames);
                    Cause {
                        relation: c.relation.to_owned(),
                        message: c.message,
                        frames,
                        frame_count,
                        omitted_frames: c.omitted,
                    }
                })
                .collect(),
        }
    }
}

/// Path fragments of code that is not the workspace's own.
const FOREIGN: &[&str] = &[
    "/rustc/",
    "/.cargo/registry/",
    "/.cargo/git/",
    "/.rustup/",
    "/go/src/",
    "/pkg/mod/",
    "site-packages/",
    "dist-packages/",
    "/lib/python",
    "node_modules/",
    "node:",
    "<frozen ",
    "<string>",
];

/// JVM packages of the platform and common harnesses.
const FOREIGN_JVM: &[&str] = &[
    "java.",
    "javax.",
    "jdk.",
    "sun.",
    "com.sun.",
    "kotlin.",
    "org.junit.",
    "junit.",
    "org.apache.maven.",
    "org.gradle.",
];

fn is_workspace_frame(frame: &Frame, workspace: Option<&str>) -> bool {
    let Some(file) = frame.file.as_deref() else {
        return false;
    };
    if FOREIGN.iter().any(|f| file.contains(f)) {
        return false;
    }
    if file.ends_with(".java") || file.ends_with(".kt") || file.ends_with(".scala") {
        let function = frame.function.rsplit('/').next().unwrap_or(&frame.function);
        return !FOREIGN_JVM.iter().any(|p| function.starts_with(p));
    }
    if file.starts_with('/') {
        return match workspace {
            Some(root) => {
                let root = root.trim_end_matches('/');
                file.strip_prefix(root)
                    .is_some_and(|rest| rest.starts_with('/'))
            }
            None => false,
        };
    }
    true
}

/// `path:line[:col]` → (`path`, line).
fn split_location(loc: &str) -> (&str, Option<u32>) {
    let num = |s: &str| s.parse::<u32>().ok();
    if let Some((head, last)) = loc.rsplit_once(':')
        && num(last).is_some()
    {
        if let Some((file, line)) = head.rsplit_once(':')
            && let Some(l) = num(line)
        {
            return (file, Some(l));
        }
        return (head, num(last));
    }
    (loc, None)
}

// --- Go -----------------------------------------------------------------------------------

fn go_panic(lines: &[&str], start: usize) -> Option<(Raw, usize)> {
    let first = lines[start];
    let message = first
        .strip_prefix("panic: ")
        .or_else(|| first.strip_prefix("fatal error: "))?;
    let message = message
        .trim_end_matches(" [recovered, repanicked]")
        .trim_end_matches(" [recovered]")
        .trim()
        .to_owned();
    let mut i = start + 1;
    // Continuation of a nested panic ("\tpanic: ...") and blank lines before the goroutine.
    while i < lines.len() && !lines[i].starts_with("goroutine ") {
        if i > start + 6 {
            return None;
        }
        i += 1;
    }
    if i >= lines.len() {
        return None;
    }
    i += 1;
    let mut frames = Vec::new();
    while i + 1 < lines.len() {
        let func = lines[i];
        let loc = lines[i + 1];
        if func.is_empty() || func.starts_with(char::is_whitespace) || !loc.starts_with('\t') {
            break;
        }
        let location = loc.split_whitespace().next().unwrap_or("");
        let (file, line) = split_location(location);
        frames.push(Frame {
            function: strip_go_args(func.trim()).to_owned(),
            file: Some(file.to_owned()),
            line,
        });
        i += 2;
    }
    if frames.is_empty() {
        return None;
    }
    Some((
        Raw {
            trace_type: TraceType::Panic,
            message,
            frames,
            location: None,
            omitted: 0,
            causes: Vec::new(),
        },
        i,
    ))
}

/// `pkg.f(0x1, ...)` → `pkg.f`; `created by pkg.g in goroutine 1` is kept as is.
fn strip_go_args(func: &str) -> &str {
    if !func.ends_with(')') {
        return func;
    }
    let mut depth = 0usize;
    for (idx, ch) in func.char_indices().rev() {
        match ch {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    return &func[..idx];
                }
            }
            _ => {}
        }
    }
    func
}

// --- Python -------------------------------------------------------------------------------

const PY_HEADER: &str = "Traceback (most recent call last):";
const PY_CONTEXT: &str = "During handling of the above exception, another exception occurred:";
const PY_CAUSE: &str = "The above exception was the direct cause of the following exception:";

/// One traceback block: frames innermost first, the exception line, the index after it.
fn python_block(lines: &[&str], start: usize) -> Option<(Vec<Frame>, String, usize)> {
    if lines[start].trim() != PY_HEADER {
        return None;
    }
    let indent = lines[start].len() - lines[start].trim_start().len();
    let mut frames = Vec::new();
    let mut i = start + 1;
    while i < lines.len() {
        let line = lines[i];
        let body = line.get(indent..).unwrap_or("");
        if let Some(rest) = body.strip_prefix("  File \"") {
            let (file, rest) = rest.split_once('"').unwrap_or((rest, ""));
            let mut line_no = None;
            let mut function = String::new();
            for part in rest.split(", ") {
                if let Some(n) = part.trim().strip_prefix("line ") {
                    line_no = n.parse().ok();
                } else if let Some(f) = part.trim().strip_prefix("in ") {
                    function = f.to_owned();
                }
            }
            frames.push(Frame {
                function,
                file: Some(file.to_owned()),
                line: line_no,
            });
            i += 1;
        } else if body.starts_with("  ") || body.trim().is_empty() && frames.is_empty() {
            i += 1;
        } else {
            break;
        }
    }
    let message = lines.get(i)?.trim();
    if message.is_empty() || frames.is_empty() {
        return None;
    }
    frames.reverse();
    Some((frames, message.to_owned(), i + 1))
}

fn python_traceback(lines: &[&str], start: usize) -> Option<(Raw, usize)> {
    let (mut frames, mut message, mut next) = python_block(lines, start)?;
    let mut causes = Vec::new();
    loop {
        let mut j = next;
        while j < lines.len() && lines[j].trim().is_empty() {
            j += 1;
        }
        let relation = match lines.get(j).map(|l| l.trim()) {
            Some(PY_CONTEXT) => "context",
            Some(PY_CAUSE) => "cause",
            _ => break,
        };
        j += 1;
        while j < lines.len() && lines[j].trim().is_empty() {
            j += 1;
        }
        let Some((f, m, n)) = (j < lines.len()).then(|| python_block(lines, j)).flatten() else {
            break;
        };
        // The later exception is the one reported; the earlier becomes its cause.
        causes.insert(
            0,
            RawCause {
                relation,
                message: std::mem::replace(&mut message, m),
                frames: std::mem::replace(&mut frames, f),
                omitted: 0,
            },
        );
        next = n;
    }
    Some((
        Raw {
            trace_type: TraceType::PythonTraceback,
            message,
            frames,
            location: None,
            omitted: 0,
            causes,
        },
        next,
    ))
}

// --- Java ---------------------------------------------------------------------------------

/// `\tat pkg.Class.method(File.java:10)` → a frame.
fn java_frame(line: &str) -> Option<Frame> {
    let rest = line.trim_start().strip_prefix("at ")?;
    if !line.starts_with(char::is_whitespace) {
        return None;
    }
    let (function, inside) = rest.trim_end().strip_suffix(')')?.split_once('(')?;
    let (file, line_no) = match inside.rsplit_once(':') {
        Some((f, n)) if n.parse::<u32>().is_ok() => (Some(f.to_owned()), n.parse().ok()),
        _ if inside.contains('.') => (Some(inside.to_owned()), None),
        _ => (None, None),
    };
    Some(Frame {
        function: function.to_owned(),
        file,
        line: line_no,
    })
}

fn java_omitted(line: &str) -> Option<usize> {
    line.trim()
        .strip_prefix("... ")?
        .strip_suffix(" more")?
        .parse()
        .ok()
}

/// Frames from `start` on, stopping at the first line that is neither a frame nor `... N more`
/// (nested `Suppressed:` blocks are skipped with their frames).
fn java_frames(lines: &[&str], start: usize, depth: usize) -> (Vec<Frame>, usize, usize) {
    let mut frames = Vec::new();
    let mut omitted = 0;
    let mut i = start;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        if indent > depth && line.trim_start().starts_with("Suppressed: ") {
            i += 1;
            while i < lines.len() && {
                let l = lines[i];
                l.len() - l.trim_start().len() > indent
            } {
                i += 1;
            }
            continue;
        }
        if let Some(f) = java_frame(line) {
            frames.push(f);
        } else if let Some(n) = java_omitted(line) {
            omitted = n;
        } else {
            break;
        }
        i += 1;
    }
    (frames, omitted, i)
}

fn java_exception(lines: &[&str], start: usize) -> Option<(Raw, usize)> {
    let header = lines[start];
    if header.starts_with(char::is_whitespace) || header.starts_with("Caused by: ") {
        return None;
    }
    java_frame(lines.get(start + 1)?)?;
    let message = match header.strip_prefix("Exception in thread \"") {
        Some(rest) => rest.split_once("\" ").map_or(rest, |(_, m)| m),
        None => header,
    }
    .trim()
    .to_owned();
    let (frames, omitted, mut i) = java_frames(lines, start + 1, 0);
    let mut causes = Vec::new();
    while let Some(cause) = lines.get(i).and_then(|l| l.strip_prefix("Caused by: ")) {
        let (f, o, next) = java_frames(lines, i + 1, 0);
        causes.push(RawCause {
            relation: "cause",
            message: cause.trim().to_owned(),
            frames: f,
            omitted: o,
        });
        i = next;
    }
    Some((
        Raw {
            trace_type: TraceType::JavaException,
            message,
            frames,
            location: None,
            omitted,
            causes,
        },
        i,
    ))
}

// --- Rust ---------------------------------------------------------------------------------

fn rust_panic(lines: &[&str], start: usize) -> Option<(Raw, usize)> {
    let rest = lines[start].trim_start().strip_prefix("thread '")?;
    let (_, rest) = rest.split_once('\'')?;
    let rest = rest.trim_start();
    // Since Rust 1.89 the thread id follows the name: `thread 'main' (123) panicked at`.
    let rest = match rest.strip_prefix('(') {
        Some(r) => r.split_once(") ").map_or(r, |(_, r)| r),
        None => rest,
    };
    let rest = rest.strip_prefix("panicked at ")?;
    let mut i = start + 1;
    let (message, location) = if let Some(loc) = rest.strip_suffix(':') {
        // `panicked at src/main.rs:2:5:` then the message on the following lines.
        let mut msg = Vec::new();
        while i < lines.len() {
            let l = lines[i];
            if l.is_empty() || l.starts_with("note: ") || l.starts_with("stack backtrace:") {
                break;
            }
            msg.push(l);
            i += 1;
        }
        (msg.join("\n"), loc.to_owned())
    } else {
        // Before Rust 1.73: `panicked at 'message', src/main.rs:2:5`.
        let (msg, loc) = rest.rsplit_once("', ")?;
        (
            msg.trim_start_matches('\'').to_owned(),
            loc.trim().to_owned(),
        )
    };
    let mut frames = Vec::new();
    let mut j = i;
    while j < lines.len() && lines[j].starts_with("note: run with `RUST_BACKTRACE") {
        j += 1;
    }
    if lines.get(j).map(|l| l.trim()) == Some("stack backtrace:") {
        j += 1;
        while j < lines.len() {
            let l = lines[j].trim_start();
            let Some((n, function)) = l.split_once(": ") else {
                break;
            };
            if n.parse::<u32>().is_err() {
                break;
            }
            let mut frame = Frame {
                function: function.trim().to_owned(),
                file: None,
                line: None,
            };
            j += 1;
            if let Some(at) = lines
                .get(j)
                .and_then(|l| l.trim_start().strip_prefix("at "))
            {
                let (file, line) = split_location(at.trim());
                frame.file = Some(file.to_owned());
                frame.line = line;
                j += 1;
            }
            frames.push(frame);
        }
        i = j;
    }
    Some((
        Raw {
            trace_type: TraceType::RustPanic,
            message,
            frames,
            location: Some(location),
            omitted: 0,
            causes: Vec::new(),
        },
        i,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/repo/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            file: Some(file.into()),
            line: Some(line),
        }
    }

    #[test]
    fn a_go_test_panic_keeps_the_message_frames_and_the_workspace_frame() {
        let traces = parse(
            &fixture("go_panic.txt"),
            Some("/work/gopanic"),
            Limits::default(),
        );
        assert_eq!(traces.len(), 1);
        let t = &traces[0];
        assert_eq!(t.trace_type, TraceType::Panic);
        assert_eq!(t.message, "runtime error: integer divide by zero");
        assert_eq!(t.frame_count, 7);
        assert_eq!(
            t.frames[0],
            frame(
                "testing.tRunner.func1.2",
                "/usr/local/go/src/testing/testing.go",
                2125
            )
        );
        assert_eq!(
            t.frames[3],
            frame("example.com/boom.divide", "/work/gopanic/boom_test.go", 5)
        );
        assert_eq!(
            t.frames[6].function,
            "created by testing.(*T).Run in goroutine 1"
        );
        assert_eq!(
            t.first_workspace_frame,
            Some(frame(
                "example.com/boom.divide",
                "/work/gopanic/boom_test.go",
                5
            ))
        );
        assert_eq!(
            t.location.as_deref(),
            Some("/usr/local/go/src/testing/testing.go:2125")
        );
    }

    #[test]
    fn a_go_program_panic_with_an_error_value_is_summarised() {
        let traces = parse(
            &fixture("go_main_panic.txt"),
            Some("/work/gomain/"),
            Limits::default(),
        );
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].message, "config app.yaml not found");
        assert_eq!(
            traces[0].frames,
            [
                frame("main.load", "/work/gomain/main.go", 6),
                frame("main.main", "/work/gomain/main.go", 10)
            ]
        );
        assert_eq!(
            traces[0].first_workspace_frame,
            Some(frame("main.load", "/work/gomain/main.go", 6))
        );
    }

    #[test]
    fn a_frame_cap_keeps_the_count_of_all_frames() {
        let limits = Limits::new(None, Some(2));
        let t = &parse(&fixture("go_panic.txt"), None, limits)[0];
        assert_eq!((t.frames.len(), t.frame_count), (2, 7));
        assert_eq!(
            Limits::new(Some(500), Some(0)),
            Limits {
                max_traces: 50,
                max_frames: 80
            }
        );
    }

    #[test]
    fn chained_python_tracebacks_report_the_last_exception_with_its_causes() {
        let traces = parse(
            &fixture("python_chained.txt"),
            Some("/work/py"),
            Limits::default(),
        );
        assert_eq!(traces.len(), 1, "{traces:#?}");
        let t = &traces[0];
        assert_eq!(t.trace_type, TraceType::PythonTraceback);
        assert_eq!(t.message, "KeyError: 'fallback'");
        assert_eq!(
            t.frames,
            [
                frame("main", "/work/py/chained.py", 16),
                frame("<module>", "/work/py/chained.py", 19)
            ]
        );
        assert_eq!(t.location.as_deref(), Some("/work/py/chained.py:16"));
        let causes: Vec<_> = t
            .caused_by
            .iter()
            .map(|c| (c.relation.as_str(), c.message.as_str()))
            .collect();
        assert_eq!(
            causes,
            [
                ("context", "RuntimeError: could not load config"),
                (
                    "cause",
                    "ValueError: invalid literal for int() with base 10: 'x'"
                ),
            ]
        );
        assert_eq!(
            t.caused_by[1].frames[0],
            frame("parse", "/work/py/chained.py", 2)
        );
    }

    #[test]
    fn python_frames_in_the_standard_library_are_not_the_workspace_frame() {
        let out = "Traceback (most recent call last):\n  File \"app/main.py\", line 3, in <module>\n    json.loads(x)\n  File \"/usr/lib/python3.11/json/__init__.py\", line 346, in loads\n    return _default_decoder.decode(s)\njson.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n";
        let t = &parse(out, None, Limits::default())[0];
        assert_eq!(t.frames[0].function, "loads");
        assert_eq!(
            t.first_workspace_frame,
            Some(frame("<module>", "app/main.py", 3))
        );
    }

    #[test]
    fn java_exceptions_keep_caused_by_chains_and_omitted_frames() {
        let traces = parse(&fixture("java_exception.txt"), None, Limits::default());
        assert_eq!(traces.len(), 1, "{traces:#?}");
        let t = &traces[0];
        assert_eq!(t.trace_type, TraceType::JavaException);
        assert_eq!(
            t.message,
            "java.lang.IllegalStateException: could not load config app.yaml"
        );
        assert_eq!(
            t.frames[0],
            frame("com.example.config.Loader.load", "Loader.java", 42)
        );
        assert_eq!(t.frame_count, 3);
        assert_eq!(t.caused_by.len(), 2);
        assert_eq!(
            t.caused_by[0].message,
            "java.io.UncheckedIOException: java.nio.file.NoSuchFileException: app.yaml"
        );
        assert_eq!(t.caused_by[0].omitted_frames, 2);
        assert_eq!(
            t.caused_by[1].message,
            "java.nio.file.NoSuchFileException: app.yaml"
        );
        assert_eq!(
            t.caused_by[1].frames[0].function,
            "java.base/sun.nio.fs.UnixException.translateToIOException"
        );
        assert_eq!(t.caused_by[1].omitted_frames, 5);
        assert_eq!(
            t.first_workspace_frame,
            Some(frame("com.example.config.Loader.load", "Loader.java", 42))
        );
    }

    #[test]
    fn a_java_trace_starting_in_the_jdk_finds_the_first_own_frame() {
        let out = "java.lang.NullPointerException: name\n\tat java.base/java.util.Objects.requireNonNull(Objects.java:259)\n\tat com.example.App.greet(App.java:7)\n\tat com.example.App.main(App.java:3)\n";
        let t = &parse(out, None, Limits::default())[0];
        assert_eq!(
            t.first_workspace_frame,
            Some(frame("com.example.App.greet", "App.java", 7))
        );
        assert_eq!(t.location.as_deref(), Some("Objects.java:259"));
    }

    #[test]
    fn a_rust_panic_without_a_backtrace_reports_its_location() {
        let traces = parse(&fixture("rust_panic.txt"), None, Limits::default());
        assert_eq!(traces.len(), 1);
        let t = &traces[0];
        assert_eq!(t.trace_type, TraceType::RustPanic);
        assert_eq!(
            t.message,
            "config value must be a number: ParseIntError { kind: InvalidDigit }"
        );
        assert_eq!(t.location.as_deref(), Some("src/main.rs:2:18"));
        assert!(t.frames.is_empty());
        assert_eq!(
            t.first_workspace_frame,
            Some(Frame {
                function: String::new(),
                file: Some("src/main.rs".into()),
                line: Some(2)
            })
        );
    }

    #[test]
    fn a_rust_backtrace_is_parsed_and_the_first_own_frame_skips_std() {
        let t = &parse(
            &fixture("rust_panic_backtrace.txt"),
            None,
            Limits::default(),
        )[0];
        assert_eq!(t.frame_count, 7);
        assert_eq!(t.frames[0].function, "__rustc::rust_begin_unwind");
        assert_eq!(
            t.first_workspace_frame,
            Some(frame("calc::parse", "./src/main.rs", 2))
        );
    }

    #[test]
    fn each_failing_cargo_test_panic_is_one_trace_and_the_old_format_still_parses() {
        let traces = parse(&fixture("cargo_test.txt"), None, Limits::default());
        let messages: Vec<_> = traces.iter().map(|t| t.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "assertion `left == right` failed: two and two\n  left: 4\n right: 5",
                "called `Option::unwrap()` on a `None` value"
            ]
        );
        let old = "thread 'main' panicked at 'boom', src/main.rs:2:5\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        let t = &parse(old, None, Limits::default())[0];
        assert_eq!(
            (t.message.as_str(), t.location.as_deref()),
            ("boom", Some("src/main.rs:2:5"))
        );
    }

    #[test]
    fn the_trace_cap_applies_and_plain_text_yields_nothing() {
        let two = format!(
            "{}\n{}",
            fixture("rust_panic.txt"),
            fixture("go_main_panic.txt")
        );
        assert_eq!(parse(&two, None, Limits::default()).len(), 2);
        let (kept, found) = summarise(&two, None, Limits::new(Some(1), None));
        assert_eq!((kept.len(), found), (1, 2));
        assert_eq!(kept[0].trace_type, TraceType::RustPanic);
        assert_eq!(
            Limits::new(Some(500), Some(0)),
            Limits {
                max_traces: 50,
                max_frames: 80
            }
        );
        assert!(
            parse(
                "all good\nok  \texample.com/calc\n",
                None,
                Limits::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn a_summary_serialises_with_the_reference_field_names() {
        let t = &parse(&fixture("rust_panic.txt"), None, Limits::default())[0];
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v["type"], "rust_panic");
        assert_eq!(v["frame_count"], 0);
        assert!(v["frames"].as_array().unwrap().is_empty());
    }
}
