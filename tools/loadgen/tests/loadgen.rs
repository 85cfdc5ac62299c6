//! The load generator runs clean against real servers: every mode against one instance
//! in this process, and heartbeats and job streams spread over two instances sharing a
//! real Redis.

#![allow(clippy::unwrap_used)]

use std::process::Command;

/// A closed-loop heartbeat run of one second with four in flight (players and URL to add).
const BRIEF_HEARTBEATS: &[&str] = &[
    "heartbeat",
    "--key",
    LOADGEN_KEY,
    "--concurrency",
    "4",
    "--duration",
    "1",
];

/// Runs the `loadgen` binary with `args`, failing the test (with its output) when it fails.
fn loadgen(args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.args(args);
    stdout_of(command, &format!("loadgen {args:?}"))
}

/// What `command` printed; fails the test with its output when it cannot run or fails.
fn stdout_of(mut command: Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what} cannot run: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The shared key of the servers the load generator runs against.
const LOADGEN_KEY: &str = "loadgen test key";

/// What those servers run with: jobs complete by themselves half a second after creation.
fn loadgen_settings() -> heartbeat_http::Settings {
    heartbeat_http::Settings {
        job_time: Some(std::time::Duration::from_millis(500)),
        ..heartbeat_http::Settings::default()
    }
}

/// Runs the load generator briefly against a server in this process and checks that it
/// reports clean runs in every mode.
#[test]
fn loadgen_reports_clean_runs_in_every_mode() {
    use heartbeat_core::TokenCodec;
    use heartbeat_examples::LocalServer;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(LocalServer::start(
            TokenCodec::new(LOADGEN_KEY).unwrap(),
            loadgen_settings(),
        ))
        .unwrap();
    let url = server.url().to_owned();
    let runs: [&[&str]; 6] = [
        &[BRIEF_HEARTBEATS, &["--players", "50"]].concat(),
        // Players starting with CryptoJS tokens, as a Node-era backend mints them.
        &[
            BRIEF_HEARTBEATS,
            &["--players", "50", "--token-format", "legacy"],
        ]
        .concat(),
        &[
            "heartbeat",
            "--key",
            LOADGEN_KEY,
            "--rate",
            "100",
            "--duration",
            "1",
            "--players",
            "50",
        ],
        &[
            "status",
            "--concurrency",
            "4",
            "--duration",
            "1",
            "--jobs",
            "10",
        ],
        &["jobs", "--connections", "20", "--timeout", "30"],
        &["notices", "--key", LOADGEN_KEY, "--connections", "20"],
    ];
    for args in runs {
        let args = [args, &["--url", url.as_str()]].concat();
        let stdout = loadgen(&args);
        if args[0] == "notices" {
            assert!(stdout.contains("20 notice streams held"), "{stdout}");
            assert!(stdout.contains("(20 told, 0 missing, 0 extra)"), "{stdout}");
        } else if args[0] == "jobs" {
            assert!(stdout.contains("20 SSE connections held"), "{stdout}");
            assert!(
                stdout.contains("(20 delivered, 0 missing, 0 duplicates, 0 foreign"),
                "{stdout}"
            );
        } else {
            assert!(
                stdout.contains("connection errors 0, wrong answers 0"),
                "{stdout}"
            );
        }
    }
    runtime.block_on(server.stop()).unwrap();
}

/// The load generator spreads its requests over two instances sharing one real Redis: a
/// session continues across them, and each job's completion crosses from the instance it
/// was created on to the one holding its stream.
#[test]
fn loadgen_drives_two_instances_on_one_redis() {
    use heartbeat_core::TokenCodec;
    use heartbeat_examples::LocalServer;
    use heartbeat_http::server;
    use heartbeat_store_redis::testkit::RedisServer;
    use heartbeat_store_redis::{RedisConfig, RedisStore};

    let redis = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let instances: Vec<LocalServer> = (0..2)
        .map(|_| {
            runtime.block_on(async {
                let store = RedisStore::connect(RedisConfig::new(redis.url()))
                    .await
                    .unwrap();
                let app = server::app(
                    TokenCodec::new(LOADGEN_KEY).unwrap(),
                    store.clone(),
                    store.clone(),
                    store,
                    loadgen_settings(),
                );
                LocalServer::serve(app).await.unwrap()
            })
        })
        .collect();
    let fleet = instances
        .iter()
        .map(LocalServer::url)
        .collect::<Vec<_>>()
        .join(",");
    let heartbeats = loadgen(&[BRIEF_HEARTBEATS, &["--players", "20", "--url", &fleet]].concat());
    assert!(heartbeats.contains("2 instance(s)"), "{heartbeats}");
    assert!(
        heartbeats.contains("connection errors 0, wrong answers 0"),
        "{heartbeats}"
    );
    let jobs = loadgen(&[
        "jobs",
        "--connections",
        "20",
        "--timeout",
        "30",
        "--sources",
        "127.0.0.1",
        "--url",
        &fleet,
    ]);
    assert!(
        jobs.contains("(20 delivered, 0 missing, 0 duplicates, 0 foreign"),
        "{jobs}"
    );
    for instance in instances {
        runtime.block_on(instance.stop()).unwrap();
    }
}

/// `scripts/cost` (instructions per request under callgrind) runs against the server and
/// the load generator this test build made, and prints a positive figure per row. No
/// bound on the figures: they are for comparing builds (docs/performance.md).
#[test]
fn the_cost_script_prints_instructions_per_request() {
    let loadgen = std::path::Path::new(env!("CARGO_BIN_EXE_loadgen"));
    let server = loadgen.with_file_name("heartbeat-server");
    assert!(
        server.exists(),
        "{} is missing: run the workspace's tests (scripts/test), which build it",
        server.display()
    );
    let stdout = run_script(
        "cost",
        &[
            "--server",
            server.to_str().unwrap(),
            "--loadgen",
            loadgen.to_str().unwrap(),
            "--rate",
            "20",
            "healthz",
            "memory",
        ],
    );
    for row in ["healthz", "memory"] {
        let figure: u64 = stdout
            .lines()
            .find_map(|line| line.strip_prefix(row))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|figure| figure.parse().ok())
            .unwrap_or_else(|| panic!("no {row} row in:\n{stdout}"));
        assert!(figure > 0, "{row}: {figure}\n{stdout}");
    }
}

/// `scripts/fleet` runs two instances behind a real Sentinel group (a master, a replica,
/// three sentinels) with the binaries of this test build, drives them with the load
/// generator, and reports the CPU of the Redis processes the sentinels name.
#[test]
fn the_fleet_script_runs_behind_sentinel() {
    let loadgen = std::path::Path::new(env!("CARGO_BIN_EXE_loadgen"));
    let bin = loadgen.parent().unwrap();
    assert!(
        bin.join("heartbeat-server").exists(),
        "{} is missing: run the workspace's tests (scripts/test), which build it",
        bin.join("heartbeat-server").display()
    );
    let group = heartbeat_store_redis::testkit::RedisSentinel::start();
    let url = group.url();
    let stdout = run_script(
        "fleet",
        &[
            "--redis",
            "sentinel",
            "--redis-url",
            &url,
            "--bin",
            bin.to_str().unwrap(),
            "--instances",
            "2",
            // A free port for each instance: other tests of this binary run meanwhile.
            "--base-port",
            "0",
            "--",
            "heartbeat",
            "--concurrency",
            "4",
            "--players",
            "50",
            "--duration",
            "1",
        ],
    );
    for expected in [
        "fleet: 2 instance(s) on sentinel Redis",
        "connection errors 0, wrong answers 0",
        "fleet: Redis (sentinel) used",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
    // The master and the replica the sentinels name, besides the three sentinels.
    let ports = stdout
        .lines()
        .find_map(|line| line.strip_prefix("fleet: Redis CPU counted on ports "))
        .unwrap_or_else(|| panic!("no ports line in:\n{stdout}"));
    assert_eq!(ports.split_whitespace().count(), 5, "{stdout}");
}

/// Runs `scripts/<name>` with `args` and returns what it printed; panics with its output
/// when it fails (`scripts/test` installs what the scripts need: valgrind, redis-server).
fn run_script(name: &str, args: &[&str]) -> String {
    let mut command = Command::new("bash");
    command
        .arg(format!(
            "{}/../../scripts/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args);
    stdout_of(command, &format!("scripts/{name}"))
}
