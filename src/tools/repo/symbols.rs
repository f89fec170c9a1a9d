//! Symbol extraction for `repo.symbols` (REFERENCE §13.3): the language from the file
//! extension, then ordered per-line rules where the first match wins (at most one symbol per
//! line).
//!
//! Deliberate differences from HEAD's quirks: indented Python `def`s and Rust items (methods) are
//! found; a one-line Go `import "x"` and generic Go functions are found and every Go `type`
//! counts; JS/TS imports are named by their module; a Java method needs a modifier, so
//! `return foo(` is not a method; C and C++ function definitions are found. The caller reads the
//! file; this module only sees its text.

use std::sync::LazyLock;

use regex::Regex;
use schemars::JsonSchema;
use serde::Serialize;

/// Files larger than this are refused (`invalid_argument`).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Signatures longer than this many bytes are cut and end in `...`.
pub const MAX_SIGNATURE_BYTES: usize = 120;

/// One symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Symbol {
    /// `package`, `import`, `use`, `function`, `method`, `type`, `class`, `struct`, `enum`,
    /// `trait`, `impl`, `interface`, `const` or `var`.
    pub kind: String,
    /// The name (for imports, the module).
    pub name: String,
    /// 1-based line.
    pub line: usize,
    /// The trimmed line, cut at 120 bytes.
    pub signature: String,
}

/// `repo.symbols`' output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SymbolsOutput {
    /// The path as given.
    pub path: String,
    /// `go`, `python`, `javascript`, `typescript`, `rust`, `java`, `c`, `cpp`, `ruby` or
    /// `unknown`.
    pub language: String,
    /// The symbols in line order; `null` when there are none (as at HEAD).
    pub symbols: Option<Vec<Symbol>>,
    /// How many.
    pub count: usize,
}

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolsError {
    /// Over [`MAX_FILE_BYTES`].
    #[error("file exceeds 1MB limit for symbol extraction")]
    TooLarge,
}

/// The language of `path` by extension (any case).
pub fn language(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "go" => "go",
        "py" => "python",
        "js" | "mjs" | "cjs" => "javascript",
        "ts" | "tsx" => "typescript",
        "rs" => "rust",
        "java" => "java",
        "c" | "h" => "c",
        "cpp" | "cc" | "hpp" => "cpp",
        "rb" => "ruby",
        _ => "unknown",
    }
}

type Rules = Vec<(&'static str, Regex)>;

fn rules(list: &[(&'static str, &str)]) -> Rules {
    list.iter()
        .map(|(kind, pattern)| {
            #[allow(clippy::expect_used)]
            let re = Regex::new(pattern).expect("literal regex compiles");
            (*kind, re)
        })
        .collect()
}

const RUST_VIS: &str = r"^\s*(?:pub(?:\([^)]*\))?\s+)?";

static GO: LazyLock<Rules> = LazyLock::new(|| {
    rules(&[
        ("package", r"^package\s+(\w+)"),
        ("import", r#"^import\s+(?:[\w.]+\s+)?"([^"]+)""#),
        ("import", r#"^\s+(?:[\w.]+\s+)?"([^"]+)"\s*$"#),
        ("function", r"^func\s+(?:\([^)]*\)\s*)?(\w+)"),
        ("type", r"^type\s+(\w+)"),
        ("const", r"^const\s+(\w+)"),
        ("var", r"^var\s+(\w+)"),
    ])
});
static PYTHON: LazyLock<Rules> = LazyLock::new(|| {
    rules(&[
        ("import", r"^(?:from\s+(\S+)\s+import\b|import\s+([\w.]+))"),
        ("class", r"^\s*class\s+(\w+)"),
        ("function", r"^\s*(?:async\s+)?def\s+(\w+)"),
    ])
});
const JS_RULES: &[(&str, &str)] = &[
    ("import", r#"^import\s+(?:.*?\s+from\s+)?['"]([^'"]+)['"]"#),
    (
        "function",
        r"^(?:export\s+)?(?:default\s+)?(?:async\s+)?function\*?\s+(\w+)",
    ),
    (
        "class",
        r"^(?:export\s+)?(?:default\s+)?(?:abstract\s+)?class\s+(\w+)",
    ),
    ("const", r"^(?:export\s+)?(?:const|let|var)\s+(\w+)"),
];
static JAVASCRIPT: LazyLock<Rules> = LazyLock::new(|| rules(JS_RULES));
static TYPESCRIPT: LazyLock<Rules> = LazyLock::new(|| {
    let mut list = JS_RULES.to_vec();
    list.push(("interface", r"^(?:export\s+)?interface\s+(\w+)"));
    list.push(("type", r"^(?:export\s+)?type\s+(\w+)"));
    rules(&list)
});
static RUST: LazyLock<Rules> = LazyLock::new(|| {
    let p = |rest: &str| format!("{RUST_VIS}{rest}");
    let owned = [
        ("use", p(r"use\s+([^;]+)")),
        (
            "function",
            p(r#"(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+"[^"]*"\s+)?fn\s+(\w+)"#),
        ),
        ("struct", p(r"struct\s+(\w+)")),
        ("enum", p(r"enum\s+(\w+)")),
        ("trait", p(r"(?:unsafe\s+)?trait\s+(\w+)")),
        (
            "impl",
            r"^\s*(?:unsafe\s+)?impl(?:<[^{]*?>)?\s+([^{]+?)\s*(?:\{.*)?$".to_owned(),
        ),
    ];
    let list: Vec<(&'static str, &str)> = owned.iter().map(|(k, p)| (*k, p.as_str())).collect();
    rules(&list)
});
static JAVA: LazyLock<Rules> = LazyLock::new(|| {
    rules(&[
        ("import", r"^import\s+(?:static\s+)?([\w.*]+)\s*;"),
        (
            "class",
            r"^\s*(?:(?:public|protected|private|abstract|final|static|sealed)\s+)*(?:class|record|enum)\s+(\w+)",
        ),
        (
            "interface",
            r"^\s*(?:(?:public|protected|private|abstract|static|sealed)\s+)*@?interface\s+(\w+)",
        ),
        (
            "method",
            r"^\s+(?:(?:public|protected|private|static|final|abstract|synchronized|native|default)\s+)+(?:<[^>]+>\s+)?[\w<>\[\],.? ]+\s+(\w+)\s*\(",
        ),
    ])
});
static C_LIKE: LazyLock<Rules> = LazyLock::new(|| {
    rules(&[
        (
            "class",
            r"^\s*(?:class|struct|enum|union)\s+(\w+)\s*(?:[:{]|$)",
        ),
        (
            "function",
            r"^(?:(?:static|inline|extern|const|unsigned|signed)\s+)*[A-Za-z_][\w:<>]*(?:\s*\*+\s*|\s+)\**(\w+)\s*\([^;]*$",
        ),
    ])
});
static GENERIC: LazyLock<Rules> = LazyLock::new(|| {
    rules(&[
        (
            "function",
            r"^\s*(?:func|def|function|fn|pub fn|async def)\s+(\w+)",
        ),
        (
            "class",
            r"^\s*(?:class|struct|type|interface|enum|trait|module)\s+(\w+)",
        ),
    ])
});

const C_KEYWORDS: &[&str] = &["if", "while", "for", "switch", "return", "sizeof", "else"];

/// Extracts the symbols of `text`, the content of `path`.
pub fn extract(path: &str, text: &str) -> Result<SymbolsOutput, SymbolsError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(SymbolsError::TooLarge);
    }
    let lang = language(path);
    let rules: &Rules = match lang {
        "go" => &GO,
        "python" => &PYTHON,
        "javascript" => &JAVASCRIPT,
        "typescript" => &TYPESCRIPT,
        "rust" => &RUST,
        "java" => &JAVA,
        "c" | "cpp" => &C_LIKE,
        _ => &GENERIC,
    };
    let mut symbols = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let found = rules.iter().find_map(|(kind, re)| {
            let c = re.captures(line)?;
            let name = c.iter().skip(1).flatten().next()?.as_str().trim();
            if (lang == "c" || lang == "cpp") && C_KEYWORDS.contains(&name) {
                return None;
            }
            Some((*kind, name.to_owned()))
        });
        if let Some((kind, name)) = found {
            symbols.push(Symbol {
                kind: kind.to_owned(),
                name,
                line: idx + 1,
                signature: signature(line),
            });
        }
    }
    let count = symbols.len();
    Ok(SymbolsOutput {
        path: path.to_owned(),
        language: lang.to_owned(),
        symbols: (!symbols.is_empty()).then_some(symbols),
        count,
    })
}

fn signature(line: &str) -> String {
    let t = line.trim();
    if t.len() <= MAX_SIGNATURE_BYTES {
        return t.to_owned();
    }
    let mut end = MAX_SIGNATURE_BYTES;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &t[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(path: &str, text: &str) -> Vec<(String, String, usize)> {
        extract(path, text)
            .unwrap()
            .symbols
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.kind, s.name, s.line))
            .collect()
    }

    fn k(kind: &str, name: &str, line: usize) -> (String, String, usize) {
        (kind.to_owned(), name.to_owned(), line)
    }

    #[test]
    fn languages_come_from_the_extension_in_any_case() {
        for (p, l) in [
            ("a.GO", "go"),
            ("x.mjs", "javascript"),
            ("y.tsx", "typescript"),
            ("z.hpp", "cpp"),
            ("h.h", "c"),
            ("Makefile", "unknown"),
        ] {
            assert_eq!(language(p), l, "{p}");
        }
    }

    #[test]
    fn go_symbols() {
        let src = "package calc\n\nimport (\n\t\"fmt\"\n\tstr \"strings\"\n)\n\nimport \"os\"\n\ntype Calc struct{}\ntype ID string\n\nconst Pi = 3.14\nvar debug = false\n\nfunc (c *Calc) Add(a, b int) int { return a + b }\nfunc Map[T any](xs []T) []T { return xs }\n";
        assert_eq!(
            kinds("calc.go", src),
            [
                k("package", "calc", 1),
                k("import", "fmt", 4),
                k("import", "strings", 5),
                k("import", "os", 8),
                k("type", "Calc", 10),
                k("type", "ID", 11),
                k("const", "Pi", 13),
                k("var", "debug", 14),
                k("function", "Add", 16),
                k("function", "Map", 17)
            ]
        );
    }

    #[test]
    fn python_symbols_include_methods() {
        let src = "import os\nfrom pathlib import Path\n\nclass Calc:\n    def add(self, a, b):\n        return a + b\n\nasync def main():\n    pass\n";
        assert_eq!(
            kinds("calc.py", src),
            [
                k("import", "os", 1),
                k("import", "pathlib", 2),
                k("class", "Calc", 4),
                k("function", "add", 5),
                k("function", "main", 8)
            ]
        );
    }

    #[test]
    fn javascript_and_typescript_symbols() {
        let src = "import { x } from './x.js';\nexport default function main() {}\nexport class Calc {}\nconst one = 1;\nexport interface Shape {}\nexport type Id = string;\n";
        assert_eq!(
            kinds("a.js", src),
            [
                k("import", "./x.js", 1),
                k("function", "main", 2),
                k("class", "Calc", 3),
                k("const", "one", 4)
            ]
        );
        assert_eq!(kinds("a.ts", src).len(), 6);
        assert_eq!(kinds("a.ts", src)[5], k("type", "Id", 6));
    }

    #[test]
    fn rust_symbols_include_methods_and_impls() {
        let src = "use std::fmt;\npub(crate) struct Calc;\nenum Op { Add }\npub trait Eval {}\nimpl fmt::Display for Calc {\n    pub async fn add(&self) {}\n}\nimpl<T: Eval> Wrapper<T> {\n}\n";
        assert_eq!(
            kinds("lib.rs", src),
            [
                k("use", "std::fmt", 1),
                k("struct", "Calc", 2),
                k("enum", "Op", 3),
                k("trait", "Eval", 4),
                k("impl", "fmt::Display for Calc", 5),
                k("function", "add", 6),
                k("impl", "Wrapper<T>", 8)
            ]
        );
    }

    #[test]
    fn java_methods_need_a_modifier_so_calls_are_not_methods() {
        let src = "import java.util.List;\npublic class Calc {\n    public int add(int a, int b) {\n        return sum(a, b);\n    }\n    private static <T> List<T> wrap(T t) { return null; }\n}\ninterface Shape {}\n";
        assert_eq!(
            kinds("Calc.java", src),
            [
                k("import", "java.util.List", 1),
                k("class", "Calc", 2),
                k("method", "add", 3),
                k("method", "wrap", 6),
                k("interface", "Shape", 8)
            ]
        );
    }

    #[test]
    fn c_functions_and_structs_are_found_but_not_control_flow() {
        let src = "#include <stdio.h>\nstruct point {\n  int x;\n};\nstatic int add(int a, int b)\n{\n  if (a) {\n    return add(a - 1, b);\n  }\n}\nint main(void) {\n  printf(\"x\");\n}\nint decl(int);\n";
        assert_eq!(
            kinds("m.c", src),
            [
                k("class", "point", 2),
                k("function", "add", 5),
                k("function", "main", 11)
            ]
        );
    }

    #[test]
    fn other_languages_use_the_generic_rules() {
        assert_eq!(
            kinds("a.rb", "class Calc\n  def add(a, b)\n  end\nend\n"),
            [k("class", "Calc", 1), k("function", "add", 2)]
        );
    }

    #[test]
    fn no_symbols_serialise_as_null_and_long_signatures_are_cut() {
        let out = extract("notes.txt", "hello\n").unwrap();
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            serde_json::json!({"path": "notes.txt", "language": "unknown", "symbols": null, "count": 0})
        );
        let long = format!("fn {}() {{}}\n", "é".repeat(100));
        let sig = &extract("a.rs", &long).unwrap().symbols.unwrap()[0].signature;
        assert!(
            sig.ends_with("...") && sig.len() <= MAX_SIGNATURE_BYTES + 3,
            "{sig}"
        );
    }

    #[test]
    fn files_over_one_megabyte_are_refused() {
        let big = "x".repeat(MAX_FILE_BYTES + 1);
        assert_eq!(extract("a.go", &big), Err(SymbolsError::TooLarge));
    }
}
