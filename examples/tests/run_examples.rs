//! Every example runs to completion and says what it is meant to show.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn run_example(name: &str) -> String {
    let output = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "-p",
            "heartbeat-examples",
            "--example",
            name,
        ])
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "example {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn embed_core_refuses_the_older_device_and_keeps_history() {
    let out = run_example("embed_core");
    assert!(
        out.contains("tv refused (412): OverLimit { position: 1, limit: 1 }"),
        "{out}"
    );
    assert!(out.contains("phone keeps playing"), "{out}");
    assert!(
        out.contains("progress of user 13 in movie-14: 31.5 s"),
        "{out}"
    );
    assert!(out.contains("ended by Stopped after 2 heartbeats"), "{out}");
}
