//! The crate's layout holds: no file of `heartbeat-core` depends, through its imports, on a
//! file that depends back on it (the session side, the jobs side and the shared `store` and
//! `live` modules form layers; docs/architecture.md draws them).
//!
//! A file depends on another when it names (after `crate::` or `super::`) an item the
//! other defines at its top level. The test kit and `lib.rs` (which re-export everything)
//! and `#[cfg(test)]` sections are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The file's text without its tests and line comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Names of the items a file defines at its top level (`pub …` at column 0).
fn defined(code: &str) -> BTreeSet<String> {
    let kinds = [
        "struct ",
        "enum ",
        "trait ",
        "type ",
        "fn ",
        "async fn ",
        "const ",
    ];
    code.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("pub")?;
            let rest = rest
                .strip_prefix("(crate) ")
                .or_else(|| rest.strip_prefix("(super) "))
                .or_else(|| rest.strip_prefix(' '))?;
            let rest = kinds.iter().find_map(|kind| rest.strip_prefix(kind))?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// The identifiers in the paths that follow `crate::` or `super::`, including `use` groups.
fn named(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["crate::", "super::"] {
        for (at, _) in code.match_indices(prefix) {
            let rest = &code[at + prefix.len()..];
            let mut depth = 0usize;
            let mut word = String::new();
            for c in rest.chars() {
                if c.is_alphanumeric() || c == '_' {
                    word.push(c);
                    continue;
                }
                if !word.is_empty() {
                    names.insert(std::mem::take(&mut word));
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth > 0 => depth -= 1,
                    ':' | ',' | ' ' | '\n' => {}
                    _ if depth > 0 => {}
                    _ => break,
                }
                if depth == 0 && (c == ',' || c == ' ' || c == '\n') {
                    break;
                }
            }
        }
    }
    names
}

#[test]
fn no_file_of_the_core_depends_on_a_file_that_depends_back_on_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let files: BTreeMap<String, String> = paths
        .iter()
        .map(|path| {
            let name = path.strip_prefix(&src).unwrap().display().to_string();
            (name, code(&std::fs::read_to_string(path).unwrap()))
        })
        .filter(|(name, _)| name != "lib.rs" && !name.starts_with("testkit"))
        .collect();
    let mut definers: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (file, code) in &files {
        for name in defined(code) {
            definers.entry(name).or_default().insert(file);
        }
    }
    let graph: BTreeMap<&str, BTreeSet<&str>> = files
        .iter()
        .map(|(file, code)| {
            let deps = named(code)
                .iter()
                .filter_map(|name| definers.get(name))
                .flatten()
                .copied()
                .filter(|dep| dep != file)
                .collect();
            (file.as_str(), deps)
        })
        .collect();
    // A file on a cycle reaches itself.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = graph[start].iter().copied().collect();
        while let Some(file) = stack.pop() {
            if seen.insert(file) {
                stack.extend(graph.get(file).into_iter().flatten().copied());
            }
        }
        if seen.contains(start) {
            cycles.push(*start);
        }
    }
    assert!(
        cycles.is_empty(),
        "these files are on an import cycle: {cycles:?}; move the shared item to a module \
         both import"
    );
    // The check sees the layers: the rules use the records, never the other way.
    assert!(graph["sessions/rules/decide.rs"].contains("sessions/record.rs"));
    assert!(!graph["sessions/record.rs"].contains("sessions/rules/decide.rs"));
}
