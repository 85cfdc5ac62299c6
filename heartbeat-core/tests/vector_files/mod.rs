//! What the tests over vector files (`tests/vectors/*.json`) share: reading a field, and
//! checking that the script a file names as its maker ships with the repository.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::Value;

/// The text of `name` in `vector`.
pub fn text<'a>(vector: &'a Value, name: &str) -> &'a str {
    vector[name].as_str().unwrap()
}

/// `made_by` ("…, path/to/script") names the script that made the vectors: it must be in
/// the repository, so that anyone can make them again.
pub fn assert_maker_ships(vectors: &Value) {
    let made_by = text(vectors, "made_by");
    let script = made_by.rsplit(", ").next().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(
        root.join(script).is_file(),
        "{script} (made_by) is not in the repository"
    );
}
