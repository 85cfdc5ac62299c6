//! Every example runs to completion and says what it is meant to show.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn run_example(name: &str) -> String {
    run_example_with(name, &[])
}

/// Runs example `name` with `args`, failing the test (with its output) when it fails.
fn run_example_with(name: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "-p",
            "heartbeat-examples",
            "--example",
            name,
            "--",
        ])
        .args(args)
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "example {name} {args:?} failed:\n{stdout}\n{}",
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
    assert!(out.contains("ended by stopped after 2 heartbeats"), "{out}");
    // The refused TV has not ended: it is in the history as active.
    assert!(out.contains("still active after 1 heartbeats"), "{out}");
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

#[test]
fn family_plan_refuses_with_reasons_and_the_takeover_is_pushed() {
    let out = run_example("family_plan");
    assert!(
        out.contains(
            "bedroom TV refused (412): FamilyLimit, limit Some(1); playing: Tablet, Living-room TV"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "phone refused (412): OverLimit, limit Some(2); playing: Tablet, Living-room TV"
        ),
        "{out}"
    );
    assert!(
        out.contains("tablet told at once: TakenOver by Phone"),
        "{out}"
    );
    assert!(
        out.contains("phone plays: heartbeat 1 after the takeover accepted"),
        "{out}"
    );
}

/// `throwaway_redis` prints a URL that answers, and its Redis goes away with it.
#[test]
fn throwaway_redis_lives_as_long_as_its_stdin() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "-p",
            "heartbeat-examples",
            "--example",
            "throwaway_redis",
            "--",
            "server",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cargo runs");
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let address = url
        .trim()
        .strip_prefix("redis://")
        .unwrap_or_else(|| panic!("a redis:// URL, not {url:?}"))
        .to_owned();
    let ping = || {
        let mut stream = std::net::TcpStream::connect(&address).ok()?;
        stream.write_all(b"PING\r\n").ok()?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply).ok()?;
        Some(reply)
    };
    assert_eq!(ping(), Some(*b"+PONG\r\n"));
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(ping(), None, "the Redis ended with its keeper");
}
