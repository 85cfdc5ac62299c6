//! Replays the fuzz seed corpora (`fuzz/seeds/*`) through the fuzz entry points, so the
//! normal test run exercises them on the stable toolchain.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        run(&std::fs::read(&path).expect("corpus file"));
        count += 1;
    }
    assert!(count >= 5, "only {count} seeds in {}", dir.display());
}

#[test]
fn open_token_seeds() {
    replay("open_token", heartbeat_core::internal::fuzz_open_token);
}

#[test]
fn heartbeat_json_seeds() {
    replay(
        "heartbeat_json",
        heartbeat_core::internal::fuzz_heartbeat_json,
    );
}

#[test]
fn compact_payload_seeds() {
    replay(
        "compact_payload",
        heartbeat_core::internal::fuzz_compact_payload,
    );
}
