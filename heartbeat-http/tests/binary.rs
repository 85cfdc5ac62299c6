//! The real `heartbeat-server` binary: configuration errors, `--help`, `issue-token`,
//! graceful shutdown on SIGTERM, and jobs that complete across a restart (sled).
#![allow(clippy::unwrap_used)]

mod common;
mod process;

use std::net::TcpListener;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{SHARED_KEY, Sse, TestServer};
use process::{OutputWithin, command, free_port, terminate, wait_for_exit};

fn run(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    command(dir)
        .envs(env.iter().copied())
        .args(args)
        .output_within_20s()
        .unwrap()
}

#[test]
fn help_documents_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), &[], &["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for setting in [
        "PORT",
        "HOST",
        "SHARED_KEY",
        "STORAGE",
        "REDIS_URL",
        "REDIS_NAMESPACE",
        "SLED_PATH",
        "JOB_TIME",
        "ADMIN_KEY",
        "TOKEN_FORMAT",
        "ACCEPT_LEGACY",
        "FAIL_OPEN",
        "LOG",
        "BODY_LIMIT",
        "REQUEST_TIMEOUT_MS",
        "SSE_KEEPALIVE_SECS",
        "HISTORY_CAP",
        "RETENTION_DAYS",
        "REDIS_TIMEOUT_MS",
        "SLED_SYNC_WRITES",
        "REDIS_NODE_PROGRESS",
        "REDIS_POOL_SIZE",
        "PASSWORD",
        "CORS_ORIGINS",
        "OWNER_KEY",
        "OWNER_AUTH",
        "JOB_RETENTION",
        "ISSUER_KEY",
        "STREAMS_MAX",
        "STREAMS_PER_ADDRESS",
        "STREAMS_PER_OWNER",
        "STREAM_MAX_LIFETIME_SECS",
    ] {
        assert!(
            help.contains(&format!("[env: {setting}")),
            "{setting} missing from --help"
        );
    }
    assert!(help.contains("issue-token"));
    assert!(!help.contains(SHARED_KEY));
}

#[test]
fn bad_configuration_exits_2_naming_the_setting_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // The port is taken: a server that bound before checking would fail differently.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let base = [
        ("PORT", port.as_str()),
        ("HOST", "127.0.0.1"),
        ("STORAGE", "memory"),
    ];
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "SHARED_KEY"),
        (&[("SHARED_KEY", "")], "SHARED_KEY"),
        (&[("SHARED_KEY", "k"), ("ADMIN_KEY", "short")], "ADMIN_KEY"),
        (
            &[("SHARED_KEY", "k"), ("TOKEN_FORMAT", "rot13")],
            "TOKEN_FORMAT",
        ),
        (&[("SHARED_KEY", "k"), ("STORAGE", "postgres")], "STORAGE"),
        (&[("SHARED_KEY", "k"), ("PORT", "http")], "PORT"),
        (&[("SHARED_KEY", "k"), ("JOB_TIME", "-5")], "JOB_TIME"),
        (&[("SHARED_KEY", "k"), ("LOG", "[[[")], "LOG"),
        (
            &[("SHARED_KEY", "k"), ("ISSUER_KEY", "short")],
            "ISSUER_KEY",
        ),
        (&[("SHARED_KEY", "k"), ("OWNER_KEY", "short")], "OWNER_KEY"),
        (&[("SHARED_KEY", "k"), ("STREAMS_MAX", "-1")], "STREAMS_MAX"),
        (
            &[("SHARED_KEY", "k"), ("STREAM_MAX_LIFETIME_SECS", "0")],
            "STREAM_MAX_LIFETIME_SECS",
        ),
        (&[("SHARED_KEY", "k"), ("BODY_LIMIT", "1")], "BODY_LIMIT"),
        (
            &[("SHARED_KEY", "k"), ("FAIL_OPEN", "perhaps")],
            "FAIL_OPEN",
        ),
        (
            &[("SHARED_KEY", "k"), ("REDIS_POOL_SIZE", "0")],
            "REDIS_POOL_SIZE",
        ),
        (
            &[("SHARED_KEY", "k"), ("CORS_ORIGINS", "app.example.com")],
            "CORS_ORIGINS",
        ),
        (
            &[
                ("SHARED_KEY", "k"),
                ("STORAGE", "redis"),
                ("REDIS_URL", "http://localhost"),
            ],
            "REDIS_URL",
        ),
    ];
    for (env, setting) in cases {
        let mut all: Vec<(&str, &str)> = base.to_vec();
        all.extend_from_slice(env);
        let output = run(dir.path(), &all, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{setting}: {stderr}");
        assert!(
            stderr.contains(setting)
                || stderr.contains(&format!("--{}", setting.to_lowercase().replace('_', "-"))),
            "{setting}: {stderr}"
        );
    }
    drop(taken);
}

#[test]
fn settings_come_from_a_dot_env_file_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "ADMIN_KEY=short\nSHARED_KEY=from-dot-env\n",
    )
    .unwrap();
    let output = run(dir.path(), &[("STORAGE", "memory")], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ADMIN_KEY"),
        "the .env value was read"
    );
}

#[test]
fn issue_token_prints_a_token_the_server_opens() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        dir.path(),
        &[("SHARED_KEY", SHARED_KEY)],
        &[
            "issue-token",
            "--user",
            "13",
            "--asset",
            "movie-9",
            "--limit",
            "2",
            "--strategy",
            "MOST_RECENT",
            "--device",
            "Living-room TV",
            "--device-family",
            "tv",
            "--family-limit",
            "tv=1",
            "--family-limit",
            "mobile=2",
            "--asset-limit",
            "1",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap();
    let data = common::codec().open(token.trim()).unwrap();
    assert_eq!(data.user_id, heartbeat_core::Id::Int(13));
    assert_eq!(data.asset_id, heartbeat_core::Id::Str("movie-9".into()));
    assert_eq!(data.session_limit, Some(2));
    assert!(data.session_id.is_none(), "a backend token");
    assert_eq!(data.device.as_deref(), Some("Living-room TV"));
    assert_eq!(data.device_family.as_deref(), Some("tv"));
    let families = data.family_limits.unwrap();
    assert_eq!((families["tv"], families["mobile"]), (1, 2));
    assert_eq!(data.asset_limit, Some(1));
    // Bad policy values are refused with what is wrong, before anything is printed.
    for (args, expected) in [
        (&["--family-limit", "tv"][..], "FAMILY=N"),
        (&["--family-limit", "tv=many"][..], "whole number"),
        (&["--device", &"x".repeat(65)][..], "64 characters"),
        (&["--family-limit", "=1"][..], "family_limits"),
    ] {
        let mut all = vec!["issue-token", "--user", "1", "--asset", "2"];
        all.extend_from_slice(args);
        let output = run(dir.path(), &[("SHARED_KEY", SHARED_KEY)], &all);
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = run(
        dir.path(),
        &[("SHARED_KEY", SHARED_KEY), ("TOKEN_FORMAT", "legacy")],
        &["issue-token", "--user", "1", "--asset", "2"],
    );
    assert!(
        !String::from_utf8(output.stdout).unwrap().starts_with("v2."),
        "legacy on request"
    );
    let output = run(
        dir.path(),
        &[],
        &["issue-token", "--user", "1", "--asset", "2"],
    );
    assert_eq!(output.status.code(), Some(2));
}

struct Running {
    child: Child,
    server: TestServer,
}

/// Starts the binary on the sled store in `dir` and waits until it answers.
// The child moves into `Running`, whose `Drop` kills and waits for it.
#[allow(clippy::zombie_processes)]
async fn start_binary(dir: &std::path::Path, job_time: &str) -> Running {
    let port = free_port();
    let child = command(dir)
        .envs([
            ("SHARED_KEY", SHARED_KEY),
            ("PORT", &port.to_string()),
            ("HOST", "127.0.0.1"),
            ("SLED_PATH", "state/heartbeat.sled"),
            ("JOB_TIME", job_time),
            ("LOG", "warn"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let server = TestServer::at(format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if server
            .http
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .is_ok()
        {
            return Running { child, server };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("heartbeat-server did not answer on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_streams_and_jobs_complete_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_binary(dir.path(), "1500").await;
    let mut stream = Sse::open(&first.server, "/status?uuid=heidi", None).await;
    let response = first
        .server
        .http
        .post(format!("{}/create?uuid=heidi", first.server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id: u64 = response.text().await.unwrap().parse().unwrap();

    terminate(&first.child);
    assert!(stream.ends().await, "SIGTERM ends the event stream cleanly");
    let status = wait_for_exit(&mut first.child).await;
    assert!(status.success(), "graceful exit, got {status}");

    // The job is due 1.5 s after creation; the new process completes it.
    let mut second = start_binary(dir.path(), "1500").await;
    let mut stream = Sse::open(&second.server, "/status?uuid=heidi", Some("0")).await;
    let event = stream.next().await;
    assert_eq!(event.event, format!("status_{id}"));
    assert_eq!(
        second
            .server
            .get_text(&format!("/status/{id}?uuid=heidi"))
            .await,
        (200, "completed".to_owned())
    );
    terminate(&second.child);
    assert!(wait_for_exit(&mut second.child).await.success());
}

/// The HeyGen mock's self-completing jobs are opt-in: without `JOB_TIME` jobs complete
/// only when a worker says so (a real deployment's worker is never overridden).
#[test]
fn the_job_simulator_is_off_unless_job_time_is_set() {
    use clap::Parser;
    use heartbeat_http::Cli;
    let parse = |args: &[&str]| {
        Cli::try_parse_from(args)
            .unwrap()
            .server
            .settings()
            .unwrap()
            .job_time
    };
    if std::env::var_os("JOB_TIME").is_none() {
        assert_eq!(parse(&["heartbeat-server"]), None);
    }
    assert_eq!(
        parse(&["heartbeat-server", "--job-time", "2000"]),
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(parse(&["heartbeat-server", "--job-time", "0"]), None);
}

/// Flags read like their variables (`JOB_RETENTION` is `--job-retention`, the Node
/// server's `PASSWORD` is `--password`); the older flag names still work.
#[test]
fn flags_read_like_their_variables_and_old_names_still_work() {
    use clap::Parser;
    use heartbeat_http::Cli;
    for flag in ["--job-retention", "--job-retention-days"] {
        let cli = Cli::try_parse_from(["heartbeat-server", flag, "3"]).unwrap();
        assert_eq!(
            cli.server.settings().unwrap().job_retention,
            std::time::Duration::from_secs(3 * 86_400),
            "{flag}"
        );
    }
    for flag in ["--password", "--redis-password"] {
        let cli = Cli::try_parse_from(["heartbeat-server", flag, "secret"]).unwrap();
        assert_eq!(
            cli.server.redis_password.as_deref(),
            Some("secret"),
            "{flag}"
        );
    }
}

#[test]
fn issue_owner_token_prints_a_token_the_server_accepts() {
    use heartbeat_core::jobs::{Owner, OwnerKey};
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        dir.path(),
        &[("OWNER_KEY", "cli owner signing key")],
        &["issue-owner-token", "--owner", "alice"],
    );
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let key = OwnerKey::new("cli owner signing key");
    let now = heartbeat_core::Timestamp::now().unix_millis() / 1000;
    assert!(key.verify(&Owner::new("alice").unwrap(), token.trim(), now));
    assert!(
        !key.verify(&Owner::new("alice").unwrap(), token.trim(), now + 86_401),
        "the default lifetime is a day"
    );
    let output = run(dir.path(), &[], &["issue-owner-token", "--owner", "alice"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("OWNER_KEY"));
    // A key shorter than 16 bytes is refused, as WORKER_KEY's is.
    let output = run(
        dir.path(),
        &[("OWNER_KEY", "short key")],
        &["issue-owner-token", "--owner", "alice"],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 16"));
}
