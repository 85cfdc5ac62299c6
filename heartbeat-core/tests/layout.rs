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

/// The modules a file declares (`mod x;`, `pub mod x;`): its children, which it may name
/// by a relative path (`x::Item`).
fn children(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// The identifiers in the paths that follow `crate::`, `super::` or one of the file's child
/// modules (`wire::`), including `use` groups. Re-exports (`pub use`) are not uses: a
/// `mod.rs` that re-exports its children's items does not depend on them.
fn named(code: &str) -> BTreeSet<String> {
    let code: String = code
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            !(line.starts_with("pub use ") || line.starts_with("pub(crate) use "))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let prefixes: Vec<String> = ["crate".to_owned(), "super".to_owned()]
        .into_iter()
        .chain(children(&code))
        .map(|module| format!("{module}::"))
        .collect();
    let mut names = BTreeSet::new();
    for prefix in &prefixes {
        for (at, _) in code.match_indices(prefix.as_str()) {
            // `wire::` inside `super::wire::` or `crate::data::wire::` is read from its start.
            let whole = at == 0
                || !code[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            if !whole {
                continue;
            }
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
    let cycles = module_cycles(&graph);
    assert!(
        cycles.is_empty(),
        "these modules depend on each other: {cycles:?}; a module's files may use each \
         other, but sibling modules form layers"
    );
}

/// The cycles between sibling modules: a file's import of a file in another subtree is an
/// import of the sibling that holds it, under their closest common module (`sessions/`
/// holds `analytics/` and `service.rs`; `src/` holds `store/`, `sessions/`, `jobs/`). A
/// module's `mod.rs` is a sibling of its children.
fn module_cycles(files: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<String> {
    // Per parent module: its children's graph, and a file import behind each edge.
    let mut siblings: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut because: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for (from, deps) in files {
        for to in deps {
            let (a, b): (Vec<&str>, Vec<&str>) =
                (from.split('/').collect(), to.split('/').collect());
            let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            // The child of the common module each file is in (a file, or a directory).
            let (Some(a_child), Some(b_child)) = (a.get(common), b.get(common)) else {
                continue;
            };
            let parent = a[..common].join("/");
            because
                .entry((parent.clone(), (*a_child).to_owned(), (*b_child).to_owned()))
                .or_insert_with(|| format!("{from} -> {to}"));
            siblings
                .entry(parent)
                .or_default()
                .entry((*a_child).to_owned())
                .or_default()
                .insert((*b_child).to_owned());
        }
    }
    let mut cycles = Vec::new();
    for (parent, graph) in &siblings {
        for start in graph.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&String> = graph[start].iter().collect();
            while let Some(child) = stack.pop() {
                if seen.insert(child) {
                    stack.extend(graph.get(child).into_iter().flatten());
                }
            }
            if seen.contains(start) {
                let out: Vec<&String> = graph[start]
                    .iter()
                    .filter(|next| {
                        *next == start || {
                            // Edges that lead back to `start`.
                            let mut seen = BTreeSet::new();
                            let mut stack = vec![*next];
                            while let Some(child) = stack.pop() {
                                if seen.insert(child) {
                                    stack.extend(graph.get(child).into_iter().flatten());
                                }
                            }
                            seen.contains(start)
                        }
                    })
                    .collect();
                let imports: Vec<&String> = out
                    .iter()
                    .filter_map(|next| {
                        because.get(&(parent.clone(), start.clone(), (*next).clone()))
                    })
                    .collect();
                cycles.push(format!("{parent}/{start} (through {imports:?})"));
            }
        }
    }
    cycles
}
