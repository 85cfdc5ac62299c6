//! README and `docs/` read from a clone: every relative link leads to a file that exists,
//! and no document points outside the repository.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The Markdown documents in `dir` (not its images).
fn markdown_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect()
}

/// The targets of `[text](target)` links in `markdown`.
fn links(markdown: &str) -> Vec<String> {
    markdown
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_owned()))
        .collect()
}

/// GitHub's anchors of the headings of `markdown`: lowercase, punctuation dropped, spaces
/// as hyphens.
fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| {
            line.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = root();
    let mut documents = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    documents.extend(markdown_in(&root.join("docs")));
    let mut checked = 0;
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        assert!(
            !text.contains("../shared") && !text.contains("example.invalid"),
            "{} points outside the repository",
            document.display()
        );
        for link in links(&text) {
            if link.starts_with("http") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                document.clone()
            } else {
                document.parent().unwrap().join(path)
            };
            assert!(
                target.exists(),
                "{} links to {link}, which does not exist",
                document.display()
            );
            if !anchor.is_empty() && target.extension().is_some_and(|e| e == "md") {
                let headings = anchors(&std::fs::read_to_string(&target).unwrap());
                assert!(
                    headings.iter().any(|heading| heading == anchor),
                    "{} links to {link}, whose heading does not exist: {headings:?}",
                    document.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} links found: is the link reader broken?"
    );
}

/// Source files the docs name in backticks (`heartbeat-core/src/...`) exist: a module that
/// moves takes its documentation along.
#[test]
fn every_source_file_the_docs_name_exists() {
    let root = root();
    let mut documents = vec![root.join("README.md")];
    documents.extend(markdown_in(&root.join("docs")));
    let mut checked = 0;
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        for quoted in text.split('`').skip(1).step_by(2) {
            let Some(path) = quoted.split_whitespace().next() else {
                continue;
            };
            if !(path.starts_with("heartbeat-") && path.contains("/src/")) {
                continue;
            }
            // `a/{b,c}.rs` names a/b.rs and a/c.rs.
            let files: Vec<String> = match path.split_once('{') {
                Some((head, rest)) => {
                    let (alternatives, tail) = rest.split_once('}').unwrap();
                    alternatives
                        .split(',')
                        .map(|one| format!("{head}{one}{tail}"))
                        .collect()
                }
                None => vec![path.trim_end_matches(['.', ',', ':']).to_owned()],
            };
            for file in files {
                assert!(
                    root.join(&file).exists(),
                    "{} names {file}, which does not exist",
                    document.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} source paths found: is the reader broken?"
    );
}

/// docs/performance.md holds the current figures and how to measure them; every earlier
/// round lives in docs/performance-history.md, so the page a reader opens stays short.
#[test]
fn the_performance_page_holds_the_current_figures_only() {
    let page = std::fs::read_to_string(root().join("docs/performance.md")).unwrap();
    assert!(
        page.len() < 12 * 1024,
        "docs/performance.md is {} bytes: move rounds to docs/performance-history.md",
        page.len()
    );
    assert!(page.contains("## Current figures"));
}

/// Each measured figure lives in one place, docs/performance.md (or the doc of the round
/// that measured it): README links there and states none, so the two cannot disagree.
#[test]
fn readme_states_no_measured_figure() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let units = [
        "k/s",
        "µs",
        "KiB",
        "MiB per",
        "instructions",
        "heartbeats/s (",
    ];
    for (number, line) in readme.lines().enumerate() {
        for unit in units {
            for (at, _) in line.match_indices(unit) {
                let before = line[..at].trim_end();
                assert!(
                    !before.ends_with(|c: char| c.is_ascii_digit()),
                    "README line {} states a measured figure ({unit}): move it to \
                     docs/performance.md and link there\n{line}",
                    number + 1
                );
            }
        }
    }
}

/// Every setting `heartbeat-server --help` lists (by its environment variable) has a row
/// in docs/configuration.md, and every row is a setting the server has: the two cannot
/// drift apart.
#[test]
fn the_configuration_doc_lists_exactly_the_settings_of_the_help() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_heartbeat-server"))
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let mut in_help: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !(c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
                .next()
                .unwrap()
        })
        .collect();
    in_help.sort_unstable();
    in_help.dedup();
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut in_doc: Vec<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|line| line.split(" |").next())
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    in_doc.sort_unstable();
    in_doc.dedup();
    assert!(
        in_help.len() > 40,
        "the help's settings were not read: {in_help:?}"
    );
    assert_eq!(
        in_help, in_doc,
        "--help (left) and docs/configuration.md (right) differ"
    );
}
