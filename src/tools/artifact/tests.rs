//! The family's pure helpers: clamps, content types, default names, pattern selection. The
//! tools themselves run end to end through the HTTP server and the sandbox in
//! `tests/it/artifact_tools.rs`.

use super::list::{compile, select};
use super::upload::{base_name, check_content_type};
use super::{MAX_BYTES, MIN_BYTES, clamp_bytes};
use crate::error_code::ErrorCode;
use crate::runner::protocol::{Entry, EntryType};

fn entry(path: &str, entry_type: EntryType) -> Entry {
    Entry {
        path: path.to_owned(),
        entry_type,
        size_bytes: path.len() as u64,
        mode: 0o644,
        modified_at: "2026-01-01T00:00:00Z".to_owned(),
    }
}

fn paths(listed: &[super::list::Listed]) -> Vec<&str> {
    listed.iter().map(|l| l.path.as_str()).collect()
}

#[test]
fn max_bytes_is_clamped_to_one_kibibyte_through_ten_mebibytes() {
    assert_eq!(clamp_bytes(1), MIN_BYTES);
    assert_eq!(clamp_bytes(1023), 1024);
    assert_eq!(clamp_bytes(5000), 5000);
    assert_eq!(clamp_bytes(u64::MAX), MAX_BYTES);
    assert_eq!(MAX_BYTES, 10 * 1024 * 1024);
}

#[test]
fn content_types_must_be_header_safe_mime_types() {
    for ok in [
        "text/plain",
        "application/json; charset=utf-8",
        "image/svg+xml",
    ] {
        assert!(check_content_type(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "text",
        "/plain",
        "text/",
        "text/plain\r\nSet-Cookie: x=1",
        "text/pl\u{e9}in",
        &format!("text/{}", "x".repeat(300)),
    ] {
        let e = check_content_type(bad).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad:?}");
    }
}

#[test]
fn the_default_name_is_the_base_name() {
    assert_eq!(base_name("dist/app.tar.gz"), "app.tar.gz");
    assert_eq!(base_name("README.md"), "README.md");
}

#[test]
fn patterns_match_the_relative_path_or_the_base_name_and_stars_stop_at_slashes() {
    let entries = || {
        vec![
            entry("dist", EntryType::Dir),
            entry("dist/a.txt", EntryType::File),
            entry("dist/link.txt", EntryType::Symlink),
            entry("dist/sub", EntryType::Dir),
            entry("dist/sub/b.txt", EntryType::File),
            entry("dist/sub/c.log", EntryType::File),
        ]
    };
    // Base name: files at any depth.
    let glob = compile("*.txt").unwrap();
    let (files, left_out) = select(entries(), "dist", Some(&glob), 10);
    assert_eq!(paths(&files), ["dist/a.txt", "dist/sub/b.txt"]);
    assert!(!left_out);
    // Relative to the listed directory, `*` not crossing `/`.
    let glob = compile("sub/*").unwrap();
    let (files, _) = select(entries(), "dist", Some(&glob), 10);
    assert_eq!(paths(&files), ["dist/sub/b.txt", "dist/sub/c.log"]);
    let glob = compile("*/b.txt").unwrap();
    let (files, _) = select(entries(), ".", Some(&glob), 10);
    assert!(files.is_empty(), "`*` crossed a `/`: {files:?}");
    // No pattern: regular files only (no directories, no symlinks).
    let (files, _) = select(entries(), "dist", None, 10);
    assert_eq!(
        paths(&files),
        ["dist/a.txt", "dist/sub/b.txt", "dist/sub/c.log"]
    );
    // The cap: left_out only when a matching file was left out.
    let (files, left_out) = select(entries(), "dist", None, 3);
    assert_eq!(files.len(), 3);
    assert!(!left_out);
    let (files, left_out) = select(entries(), "dist", None, 2);
    assert_eq!(files.len(), 2);
    assert!(left_out);
}

#[test]
fn a_malformed_pattern_is_an_invalid_argument() {
    let e = compile("[abc").unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}
