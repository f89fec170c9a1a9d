//! Lexical normalisation of workspace-relative paths and the `allowed_paths` check (rule 4).
//!
//! Every path a tool receives is relative to the workspace root. [`normalize`] cleans it the way
//! Go's `path.Clean` would (`a//b/./c/` → `a/b/c`, `a/../b` → `b`, `""` → `.`) and refuses what
//! can never name something inside the workspace: absolute paths, `..` that climbs above the
//! root, NUL bytes, and paths or components longer than the kernel accepts. It is purely
//! lexical: symlinks are the runner's business (it refuses any that lead out), so this module
//! never touches the filesystem.
//!
//! Over-long paths are `policy_denied`, like the other refusals here, because the runner
//! classifies them the same way and one request should not get two different codes depending
//! on which layer noticed first.
//!
//! [`is_protected`] names the one protected path: `.git`, at any depth. Repository metadata
//! decides which commands git runs (hooks, filters, `core.fsmonitor`, ...), so file tools never
//! write inside it; the git tools own it (see `docs/adr/0007-git-hardening.md`). Reading it stays allowed.

use crate::error_code::ErrorCode;

use super::Denial;

/// Longest path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest path component accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a path was refused by [`normalize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathDenial {
    /// The path contains a NUL byte (it would be cut short by the kernel).
    #[error("path contains a NUL byte")]
    NulByte,
    /// The path starts with `/`.
    #[error("absolute paths are not allowed")]
    Absolute,
    /// A `..` component climbs above the workspace root.
    #[error("path escapes workspace")]
    Escapes,
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("path is longer than 4096 bytes")]
    TooLong,
    /// A component is longer than [`MAX_COMPONENT_BYTES`].
    #[error("a path component is longer than 255 bytes")]
    ComponentTooLong,
}

impl PathDenial {
    /// The API error code of this refusal: always `policy_denied` (see the module docs).
    pub fn code(self) -> ErrorCode {
        ErrorCode::PolicyDenied
    }
}

impl From<PathDenial> for Denial {
    fn from(denial: PathDenial) -> Self {
        Denial::new(denial.code(), denial.to_string())
    }
}

/// Normalises a workspace-relative path: `.` for the root, otherwise `/`-separated components
/// without empty, `.` or `..` parts. `..` is resolved lexically and refused when it would leave
/// the workspace; a name that merely starts with `..` (`..cache`) is an ordinary name.
pub fn normalize(raw: &str) -> Result<String, PathDenial> {
    // Length first: everything after it is linear in a bounded input.
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathDenial::TooLong);
    }
    if raw.as_bytes().contains(&0) {
        return Err(PathDenial::NulByte);
    }
    if raw.starts_with('/') {
        return Err(PathDenial::Absolute);
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathDenial::Escapes);
                }
            }
            name if name.len() > MAX_COMPONENT_BYTES => return Err(PathDenial::ComponentTooLong),
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        Ok(".".to_owned())
    } else {
        Ok(parts.join("/"))
    }
}

/// Whether the normalised `path` is inside one of `allowed_paths`: an entry `.` allows
/// everything, otherwise `path` must equal the entry or lie under `entry/` (so `src` admits
/// `src/x` but not `src2/x`). Entries are normalised here too, so the decision does not depend
/// on the caller having stored them clean (`./src/` is `src`); an entry that does not normalise
/// (absolute, escaping) allows nothing. An empty list means `["."]`, as in the original
/// service.
pub fn is_allowed(path: &str, allowed_paths: &[String]) -> bool {
    if allowed_paths.is_empty() {
        return true;
    }
    allowed_paths.iter().any(|entry| match normalize(entry) {
        Ok(entry) if entry == "." => true,
        Ok(entry) => {
            path == entry
                || (path.starts_with(entry.as_str())
                    && path.as_bytes().get(entry.len()) == Some(&b'/'))
        }
        Err(_) => false,
    })
}

/// The protected directory name: nothing named this is ever written by a file tool.
pub const PROTECTED_DIR: &str = ".git";

/// The reason given when a write names a protected path.
pub const PROTECTED_MESSAGE: &str =
    "path is inside .git, a protected path: file tools never write there (the git tools own it)";

/// Whether the normalised `path` is a `.git` entry or lies inside one, at any depth: the
/// workspace root's repository, and a nested one (a submodule's `.git` file, a vendored
/// clone), which git would use as soon as a command runs in that directory.
///
/// The match is on whole components and ignores ASCII case, as git's own `verify_path` does
/// for the names it checks out: on a case-insensitive filesystem `.GIT` is `.git`, and no
/// tool has a reason to write either. It is lexical; the runner checks the resolved directory
/// too, so a symlink to `.git` does not get around it.
pub fn is_protected(path: &str) -> bool {
    path.split('/')
        .any(|part| part.eq_ignore_ascii_case(PROTECTED_DIR))
}

/// Normalises `raw` and checks it against `allowed_paths`: the rule-4 decision for one value.
/// Returns the normalised path.
pub fn check(raw: &str, allowed_paths: &[String]) -> Result<String, Denial> {
    let path = normalize(raw)?;
    if !is_allowed(&path, allowed_paths) {
        return Err(Denial::new(
            ErrorCode::PolicyDenied,
            "path outside allowed_paths",
        ));
    }
    Ok(path)
}

/// [`check`] for a path that will be written: also refuses the protected path.
pub fn check_writable(raw: &str, allowed_paths: &[String]) -> Result<String, Denial> {
    let path = check(raw, allowed_paths)?;
    if is_protected(&path) {
        return Err(Denial::new(ErrorCode::PolicyDenied, PROTECTED_MESSAGE));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn paths_are_cleaned_lexically() {
        for (raw, want) in [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a", "a"),
            ("a//b/./c/", "a/b/c"),
            ("a/../b", "b"),
            ("a/b/..", "a"),
            ("a/..", "."),
            ("..cache", "..cache"),
            ("a/..b/c..", "a/..b/c.."),
            ("...", "..."),
            ("données/日本語.txt", "données/日本語.txt"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw:?}");
        }
    }

    #[test]
    fn escapes_absolute_paths_and_nul_bytes_are_refused() {
        for (raw, want) in [
            ("..", PathDenial::Escapes),
            ("../x", PathDenial::Escapes),
            ("../../etc/passwd", PathDenial::Escapes),
            ("a/../../b", PathDenial::Escapes),
            ("a/./../..", PathDenial::Escapes),
            ("/etc/passwd", PathDenial::Absolute),
            ("/", PathDenial::Absolute),
            ("//x", PathDenial::Absolute),
            ("a\0b", PathDenial::NulByte),
        ] {
            assert_eq!(normalize(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn over_long_paths_and_components_are_refused() {
        let long = "a/".repeat(MAX_PATH_BYTES / 2 + 1);
        assert_eq!(normalize(&long), Err(PathDenial::TooLong));
        let name = "x".repeat(MAX_COMPONENT_BYTES + 1);
        assert_eq!(normalize(&name), Err(PathDenial::ComponentTooLong));
        let fits = "x".repeat(MAX_COMPONENT_BYTES);
        assert_eq!(normalize(&fits), Ok(fits.clone()));
        assert_eq!(PathDenial::TooLong.code(), ErrorCode::PolicyDenied);
    }

    #[test]
    fn allowed_paths_match_whole_components() {
        let src = allow(&["src"]);
        assert!(is_allowed("src", &src));
        assert!(is_allowed("src/x", &src));
        assert!(!is_allowed("src2/x", &src));
        assert!(!is_allowed("srcx", &src));
        assert!(!is_allowed(".", &src));
        assert!(is_allowed("anything", &allow(&["."])));
        assert!(is_allowed("anything", &[]));
        assert!(is_allowed("docs/a.md", &allow(&["src", "docs"])));
    }

    #[test]
    fn allowed_entries_are_normalised_before_matching() {
        assert!(is_allowed("src/x", &allow(&["./src/"])));
        // `src/..` is the root, spelled oddly.
        assert!(is_allowed("etc", &allow(&["src/.."])));
        // An entry that escapes allows nothing rather than everything.
        assert!(!is_allowed("x", &allow(&["../x"])));
        assert!(!is_allowed("etc/passwd", &allow(&["/etc"])));
    }

    #[test]
    fn check_combines_normalisation_and_the_allowlist() {
        let src = allow(&["src"]);
        assert_eq!(check("src/a/../b", &src).as_deref(), Ok("src/b"));
        let outside = check("src/../lib", &src).unwrap_err();
        assert_eq!(outside.code, ErrorCode::PolicyDenied);
        assert_eq!(outside.message, "path outside allowed_paths");
        let escape = check("../x", &src).unwrap_err();
        assert_eq!(escape.message, "path escapes workspace");
    }

    #[test]
    fn git_metadata_is_protected_at_any_depth_and_in_any_case() {
        for path in [
            ".git",
            ".git/config",
            ".git/hooks/pre-commit",
            "vendor/lib/.git",
            "vendor/lib/.git/config",
            ".GIT/config",
            "sub/.Git",
        ] {
            assert!(is_protected(path), "{path}");
        }
        for path in [
            ".",
            ".gitignore",
            ".gitattributes",
            ".gitmodules",
            "src/.github/x",
            "git/config",
            "a.git/config",
            ".git.bak/config",
        ] {
            assert!(!is_protected(path), "{path}");
        }
    }

    #[test]
    fn writable_paths_are_checked_after_normalisation() {
        let all = allow(&["."]);
        for raw in [
            ".git/config",
            "./.git//config",
            "src/../.git/hooks/x",
            ".git",
        ] {
            let denial = check_writable(raw, &all).unwrap_err();
            assert_eq!(denial.code, ErrorCode::PolicyDenied, "{raw}");
            assert_eq!(denial.message, PROTECTED_MESSAGE, "{raw}");
        }
        assert_eq!(
            check_writable(".gitattributes", &all).as_deref(),
            Ok(".gitattributes")
        );
        // Reads of .git stay allowed.
        assert_eq!(check(".git/config", &all).as_deref(), Ok(".git/config"));
        // allowed_paths speaks first, as for any other path.
        let src = allow(&["src"]);
        assert_eq!(
            check_writable(".git/config", &src).unwrap_err().message,
            "path outside allowed_paths"
        );
    }
}
