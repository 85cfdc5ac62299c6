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

#[test]
fn backend_issue_token_seals_both_formats() {
    let out = run_example("backend_issue_token");
    assert!(
        out.contains("v2 token (authenticated, the default): v2."),
        "{out}"
    );
    assert!(
        out.contains("both open to user 13 playing movie-14"),
        "{out}"
    );
    assert!(out.contains("a tampered token is refused"), "{out}");
}

#[test]
fn players_shows_the_412_under_both_strategies() {
    let out = run_example("players");
    assert!(out.contains("== MOST_RECENT"), "{out}");
    assert!(out.contains("device 3: refused (412)"), "{out}");
    assert!(out.contains("device 1: refused (412)"), "{out}");
    assert!(
        out.contains("ok: MOST_RECENT refused the newest device, LEAST_RECENT the oldest"),
        "{out}"
    );
}

#[test]
fn jobs_integration_completes_every_job_across_the_switch() {
    let out = run_example("jobs_integration");
    assert!(out.contains("(SSE)"), "some jobs complete over SSE: {out}");
    assert!(out.contains("switching every listener to polling"), "{out}");
    assert!(out.contains("(polled)"), "some complete by polling: {out}");
    assert!(
        out.contains("all 5 jobs completed, across the switch from SSE to polling"),
        "{out}"
    );
}
