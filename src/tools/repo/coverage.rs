//! Coverage percentages for `repo.coverage_report`: Go's `go tool cover -func` total, and a
//! best-effort read of other runners' summaries (pytest-cov `TOTAL`, `coverage: N% of
//! statements`, istanbul's `All files` row, cargo-llvm-cov / tarpaulin lines). A percentage that
//! parses makes `coverage_supported` true (the HEAD behaviour); none leaves it `None`.

use std::sync::LazyLock;

use regex::Regex;

static GO_FUNC_TOTAL: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?m)^total:\s+\(statements\)\s+([0-9]+(?:\.[0-9]+)?)%\s*$"));
static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // pytest-cov / coverage.py: `TOTAL    120    12    90%`
        r"(?m)^TOTAL\s+.*?([0-9]+(?:\.[0-9]+)?)%\s*$",
        // go test -cover: `coverage: 81.2% of statements`
        r"coverage: ([0-9]+(?:\.[0-9]+)?)% of statements",
        // istanbul / jest --coverage text table: `All files |   85.71 | ...`
        r"(?m)^All files\s*\|\s*([0-9]+(?:\.[0-9]+)?)\s*\|",
        // cargo-tarpaulin: `78.50% coverage, 157/200 lines covered`
        r"([0-9]+(?:\.[0-9]+)?)% coverage, \d+/\d+ lines covered",
        // cargo-llvm-cov summary: `TOTAL ... 81.25%` is caught above.
    ]
    .iter()
    .map(|p| re(p))
    .collect()
});

/// Compiles a pattern written in this file; every pattern is exercised by the tests.
fn re(pattern: &str) -> Regex {
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("literal regex compiles")
}

/// The total of `go tool cover -func` output.
pub fn go_func_total(output: &str) -> Option<f64> {
    GO_FUNC_TOTAL
        .captures(output)
        .and_then(|c| c[1].parse().ok())
}

/// The last coverage percentage any known runner printed (the overall figure comes last).
pub fn best_effort(output: &str) -> Option<f64> {
    if let Some(total) = go_func_total(output) {
        return Some(total);
    }
    PATTERNS
        .iter()
        .filter_map(|p| p.captures_iter(output).last())
        .filter_map(|c| c.get(1).map(|m| (m.start(), m.as_str().to_owned())))
        .max_by_key(|(at, _)| *at)
        .and_then(|(_, v)| v.parse().ok())
        .filter(|v: &f64| (0.0..=100.0).contains(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_tool_cover_func_total_is_read() {
        let out = "example.com/calc/calc.go:3:\tAdd\t\t100.0%\nexample.com/calc/calc.go:5:\tDiv\t\t0.0%\ntotal:\t\t\t(statements)\t50.0%\n";
        assert_eq!(go_func_total(out), Some(50.0));
        assert_eq!(best_effort(out), Some(50.0));
    }

    #[test]
    fn other_runners_summaries_are_read_best_effort() {
        let cases = [
            (
                "Name    Stmts   Miss  Cover\n---\ncalc.py     10      1    90%\nTOTAL       10      1    90%\n",
                90.0,
            ),
            (
                "ok  \texample.com/calc\t0.01s\tcoverage: 81.2% of statements\n",
                81.2,
            ),
            (
                "----------|---------|\nAll files |   85.71 |      100 |\n calc.js |   85.71 |\n",
                85.71,
            ),
            (
                "|| Tested/Total Lines:\n78.50% coverage, 157/200 lines covered\n",
                78.5,
            ),
        ];
        for (out, want) in cases {
            assert_eq!(best_effort(out), Some(want), "{out}");
        }
    }

    #[test]
    fn output_without_a_percentage_has_no_coverage() {
        assert_eq!(best_effort("3 passed in 0.1s\n"), None);
        assert_eq!(go_func_total("coverage: 81.2% of statements"), None);
    }
}
