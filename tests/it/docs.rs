//! The documentation a new user reads: every file it links to or cites exists in the
//! repository, and it speaks of the service, not of the issue that built it.

use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<PathBuf> {
    let root = repository();
    let mut docs = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("docs/ is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                docs.push(path);
            }
        }
    }
    docs
}

/// The targets of inline markdown links `[text](target)` that are not URLs or anchors.
fn local_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("").trim();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            links.push(target.to_owned());
        }
    }
    links
}

#[test]
fn every_local_link_in_the_docs_points_at_a_file_in_the_repository() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("doc is UTF-8");
        let dir = doc.parent().unwrap_or(Path::new("."));
        for link in local_links(&text) {
            if !dir.join(&link).exists() {
                broken.push(format!("{}: {link}", doc.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

#[test]
fn the_docs_cite_no_design_file_outside_the_repository_and_no_issue() {
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("doc is UTF-8");
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", doc.display(), n + 1);
            assert!(
                !line.contains("`API.md`") && !line.contains("REFERENCE.md"),
                "{at} cites a file that is not in the repository: {line}"
            );
            assert!(
                !line.to_ascii_lowercase().contains("this issue"),
                "{at} speaks of the issue, not the service: {line}"
            );
        }
    }
}

#[test]
fn the_readme_commands_work_from_a_checkout() {
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README");
    // A new user has no `workspace` on PATH: the commands go through cargo.
    assert!(readme.contains("cargo run -- serve"), "run command");
    assert!(readme.contains("cargo test --workspace"), "test command");
    // The settings' help, as a new user types it.
    assert!(
        readme.contains("`cargo run -- serve\n--help`")
            || readme.contains("`cargo run -- serve --help`"),
        "serve --help through cargo"
    );
}

/// `docs/tool-catalog.md` is what `workspace catalog-docs` writes from the registered tools.
/// Regenerate it on purpose with `cargo run -- catalog-docs` (or `UPDATE_GOLDEN=1` here).
#[test]
fn the_tool_catalog_document_is_what_catalog_docs_writes() {
    let path = repository().join(workspace::tools::catalog_docs::PATH);
    let want = workspace::tools::catalog_docs::render(&workspace::tools::Catalog::builtin());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &want).expect("write the tool catalog document");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == want,
        "{} is stale: run `cargo run -- catalog-docs` and commit the result",
        path.display()
    );
}

/// The command itself writes that document (to a path of the caller's choice).
#[test]
fn the_catalog_docs_command_writes_the_document() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("catalog.md");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_workspace"))
        .args(["catalog-docs", "--output"])
        .arg(&out)
        .status()
        .expect("run workspace catalog-docs");
    assert!(status.success(), "workspace catalog-docs: {status}");
    let written = std::fs::read_to_string(&out).expect("the command wrote the document");
    assert_eq!(
        written,
        workspace::tools::catalog_docs::render(&workspace::tools::Catalog::builtin())
    );
}
