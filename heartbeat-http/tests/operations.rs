//! What an operator sees: log lines (JSON, access log, the startup line, one line per
//! failure), `--version`, metrics present from the start, bare boolean flags, readiness
//! while failing open, and a clear, redacted Redis connection error.
#![allow(clippy::unwrap_used)]

mod common;
mod process;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, SHARED_KEY, TestServer, codec, redis_store, serve, settings};
use heartbeat_http::{Settings, server};
use heartbeat_store_redis::testkit::RedisServer;
use process::{BINARY, OutputWithin, command, free_port, terminate, wait_for_exit};
use serde_json::Value;

/// The binary on sled in `dir` with `env` and `args`, its standard error in a file.
struct Running {
    child: Child,
    server: TestServer,
    log: std::path::PathBuf,
}

impl Running {
    // The child moves into `Running`; `stop` waits for it.
    #[allow(clippy::zombie_processes)]
    async fn start(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Running {
        let port = free_port();
        let log = dir.join("stderr.log");
        let child = command(dir)
            .envs([
                ("PORT", port.to_string().as_str()),
                ("HOST", "127.0.0.1"),
                ("SLED_PATH", "state/db"),
                ("ADMIN_KEY", ADMIN_KEY),
            ])
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = TestServer::at(format!("http://127.0.0.1:{port}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = server.http.get(format!("{}/healthz", server.url)).send();
            if health.await.is_ok() {
                return Running { child, server, log };
            }
            assert!(Instant::now() < deadline, "the server did not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (SIGTERM) and returns what it logged.
    async fn stop(mut self) -> String {
        terminate(&self.child);
        wait_for_exit(&mut self.child).await;
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_startup_line_and_one_access_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(
        dir.path(),
        &[("SHARED_KEY", SHARED_KEY), ("LOG_FORMAT", "json")],
        // A bare boolean flag.
        &["--access-log"],
    )
    .await;
    let (status, _) = running.server.get_text("/readyz").await;
    assert_eq!(status, 200);
    let answer = running
        .server
        .http
        .post(format!("{}/heartbeat", running.server.url))
        .header("x-request-id", "req-42")
        .json(&serde_json::json!({ "heartbeat_token": "forged" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 406);
    let log = running.stop().await;
    assert!(!log.contains('\u{1b}'), "no colour codes in a file: {log}");
    assert!(
        !log.contains(ADMIN_KEY) && !log.contains(SHARED_KEY),
        "no secrets: {log}"
    );
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let starting = lines
        .iter()
        .find(|line| line["fields"]["message"] == "starting")
        .unwrap_or_else(|| panic!("no startup line in {log}"));
    let store = starting["fields"]["store"].as_str().unwrap();
    assert!(store.starts_with("sled at state/db"), "{store}");
    assert!(
        starting["fields"]["version"]
            .as_str()
            .unwrap()
            .contains("commit")
    );
    let access = lines
        .iter()
        .find(|line| line["span"]["request_id"] == "req-42")
        .unwrap_or_else(|| panic!("no access line for req-42 in {log}"));
    assert_eq!(access["fields"]["status"], 406);
    assert_eq!(access["span"]["uri"], "/heartbeat");
    assert!(access["fields"]["latency"].is_string());
    assert_eq!(access["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_warn_once_about_a_short_shared_key_and_log_no_requests_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(dir.path(), &[("SHARED_KEY", "short")], &[]).await;
    let (status, metrics) = running.server.get_text("/metrics").await;
    assert_eq!(status, 200);
    let log = running.stop().await;
    assert_eq!(
        log.matches("SHARED_KEY is shorter than 16 bytes").count(),
        1,
        "{log}"
    );
    assert!(log.contains("starting"), "{log}");
    assert!(!log.contains("finished processing request"), "{log}");
    // Every counter an alert may compare with 0 is there from the start.
    for line in [
        "heartbeat_store_errors_total{route=\"/heartbeat\"} 0",
        "heartbeat_heartbeat_decisions_total{outcome=\"store_unavailable\"} 0",
        "heartbeat_refusals_total{reason=\"over_limit\"} 0",
    ] {
        assert!(
            metrics.lines().any(|have| have == line),
            "{line} in\n{metrics}"
        );
    }
    let build = format!(
        "heartbeat_build_info{{version=\"{}\",commit=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&build), "{metrics}");
}

#[test]
fn version_names_the_commit() {
    let output = Command::new(BINARY)
        .arg("--version")
        .output_within_20s()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.starts_with(&format!(
            "heartbeat-server {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[test]
fn an_unreachable_redis_is_one_clear_line_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://app:s3cret-pass@127.0.0.1:{}", free_port());
    let output = command(dir.path())
        .envs([
            ("STORAGE", "redis"),
            ("REDIS_URL", url.as_str()),
            ("SHARED_KEY", SHARED_KEY),
        ])
        .output_within_20s()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("redis://app:***@127.0.0.1"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(
        !stderr.contains("s3cret") && !stderr.contains("Os {"),
        "{stderr}"
    );
}

/// With `FAIL_OPEN`, an instance whose store is down keeps answering heartbeats, so it
/// stays ready; without it, it is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_fail_open_while_the_store_is_down() {
    let redis = RedisServer::start();
    let mut instances = Vec::new();
    for fail_open in [true, false] {
        let store = redis_store(&redis.url()).await;
        let settings = Settings {
            fail_open,
            ..settings()
        };
        let app = server::app(codec(), store.clone(), store.clone(), store, settings);
        instances.push(serve(app).await);
    }
    for instance in &instances {
        assert_eq!(
            instance.get_text("/readyz").await,
            (200, "ready".to_owned())
        );
    }
    drop(redis);
    let (status, text) = instances[0].get_text("/readyz").await;
    assert_eq!(status, 200, "{text}");
    // Fixed text: the public probe never shows the store's error (addresses, names).
    assert_eq!(text, "ready (failing open: the store is unreachable)");
    let (status, _) = instances[1].get_text("/readyz").await;
    assert_eq!(status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_addr_serves_the_admin_api_and_metrics_apart_from_the_public_port() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let running = Running::start(
        dir.path(),
        &[
            ("SHARED_KEY", SHARED_KEY),
            ("ADMIN_ADDR", admin_addr.as_str()),
        ],
        &[],
    )
    .await;
    let public = &running.server;
    let operator = TestServer::at(format!("http://{admin_addr}"));
    assert_eq!(public.get_text("/metrics").await.0, 404);
    assert_eq!(
        public
            .admin(reqwest::Method::GET, "/admin/users/1/sessions")
            .await
            .0,
        404
    );
    assert_eq!(
        public.admin(reqwest::Method::GET, "/admin/history").await.0,
        404
    );
    assert_eq!(public.get_text("/readyz").await.0, 200);
    assert_eq!(operator.get_text("/metrics").await.0, 200);
    let (status, sessions) = operator
        .admin(reqwest::Method::GET, "/admin/users/1/sessions")
        .await;
    assert_eq!(
        (status, &sessions["sessions"]),
        (200, &serde_json::json!([]))
    );
    let heartbeat = operator
        .post_json("/heartbeat", &serde_json::json!({ "heartbeat_token": "x" }))
        .await;
    assert_eq!(heartbeat.status(), 404, "players use the public port only");
    let log = running.stop().await;
    assert!(log.contains("admin API and metrics listening"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_key_may_update_jobs_and_nothing_else() {
    const WORKER_KEY: &str = "worker-key-0123456789";
    let settings = Settings {
        worker_key: Some(WORKER_KEY.to_owned()),
        ..settings()
    };
    let (server, _backing) = common::start_with(common::Kind::Memory, settings).await;
    let created: Value = server
        .http
        .post(format!("{}/v1/jobs?uuid=w", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = format!("{}/v1/jobs/{}", server.url, created["id"]);
    let patch = |key: &'static str, state: &'static str| {
        server
            .http
            .patch(&job)
            .bearer_auth(key)
            .json(&serde_json::json!({ "state": state }))
            .send()
    };
    assert_eq!(
        patch("not-the-worker-key-000", "running")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(patch(WORKER_KEY, "running").await.unwrap().status(), 200);
    assert_eq!(patch(ADMIN_KEY, "completed").await.unwrap().status(), 200);
    let denied = server
        .http
        .get(format!("{}/admin/users/1/sessions", server.url))
        .bearer_auth(WORKER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401, "the worker key opens no admin route");
}

#[test]
fn a_key_equal_to_another_key_or_too_short_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = "another-key-of-32-characters-000";
    for (envs, expected) in [
        (
            vec![("ADMIN_KEY", ADMIN_KEY), ("WORKER_KEY", ADMIN_KEY)],
            "WORKER_KEY is the same as ADMIN_KEY",
        ),
        (
            vec![("WORKER_KEY", "short")],
            "WORKER_KEY must be at least 16 characters",
        ),
        (
            vec![("ADMIN_KEY", SHARED_KEY)],
            "ADMIN_KEY is the same as SHARED_KEY",
        ),
        (
            vec![("ADMIN_KEY", ADMIN_KEY), ("OWNER_KEY", ADMIN_KEY)],
            "OWNER_KEY is the same as ADMIN_KEY",
        ),
        (
            vec![("WORKER_KEY", other), ("ISSUER_KEY", other)],
            "ISSUER_KEY is the same as WORKER_KEY",
        ),
        (
            vec![("SHARED_KEY_PREVIOUS", other), ("OWNER_KEY", other)],
            "OWNER_KEY is the same as SHARED_KEY_PREVIOUS",
        ),
        (
            vec![("SHARED_KEY_PREVIOUS", SHARED_KEY)],
            "SHARED_KEY_PREVIOUS is the same as SHARED_KEY",
        ),
    ] {
        let output = command(dir.path())
            .env("SHARED_KEY", SHARED_KEY)
            .envs(envs)
            .output_within_20s()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{expected}: {stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// A request from an origin `CORS_ORIGINS` does not list is logged once per origin (a
/// browser reports it only as a network error): what a wrong setting looks like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_cors_origin_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(
        dir.path(),
        &[
            ("SHARED_KEY", SHARED_KEY),
            ("CORS_ORIGINS", "https://app.example"),
        ],
        &[],
    )
    .await;
    for origin in [
        "https://evil.example",
        "https://evil.example",
        "https://app.example",
        "http://localhost:5173",
    ] {
        let response = running
            .server
            .http
            .get(format!("{}/healthz", running.server.url))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let log = running.stop().await;
    let refused: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("CORS refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{log}");
    assert!(refused[0].contains("https://evil.example"), "{log}");
    assert!(refused[1].contains("http://localhost:5173"), "{log}");
}

/// `TOKEN_FORMAT` takes every format the core reads (one parser): `b1` tokens are what
/// `issue-token` mints under it, in any case.
#[test]
fn token_format_b1_issues_b1_tokens() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["b1", "B1", "backend"] {
        let output = command(dir.path())
            .envs([("SHARED_KEY", SHARED_KEY), ("TOKEN_FORMAT", value)])
            .args(["issue-token", "--user", "1", "--asset", "2"])
            .output_within_20s()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{value}");
        assert!(String::from_utf8(output.stdout).unwrap().starts_with("b1."));
    }
}

#[test]
fn an_invalid_value_names_the_variable_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (env, value, expected) in [
        (
            "PORT",
            "abc",
            "invalid value 'abc' for PORT (--port): invalid digit",
        ),
        (
            "STORAGE",
            "pg",
            "invalid value 'pg' for STORAGE (--storage): expected one of memory, sled, redis",
        ),
        (
            "FAIL_OPEN",
            "perhaps",
            "invalid value 'perhaps' for FAIL_OPEN (--fail-open)",
        ),
        (
            "TOKEN_FORMAT",
            "v9",
            "invalid value 'v9' for TOKEN_FORMAT (--token-format): unknown token format `v9`: \
             expected `v2`, `v3`, `b1` or `legacy`",
        ),
        (
            "GONE_GRACE_SECS",
            "0",
            "invalid value '0' for GONE_GRACE_SECS (--gone-grace-secs)",
        ),
        (
            "ENFORCE_LIMITS",
            "sometimes",
            "invalid value 'sometimes' for ENFORCE_LIMITS (--enforce-limits)",
        ),
    ] {
        let output = command(dir.path())
            .envs([("SHARED_KEY", SHARED_KEY), (env, value)])
            .output_within_20s()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{env}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(expected), "{env}: {stderr}");
    }
}

/// compose.yaml's settings for the server pass `check-config` (with the Redis it names
/// replaced by a throwaway one), and the proxy's fixed address is the one they trust.
#[test]
fn the_compose_settings_pass_check_config() {
    let compose = include_str!("../../compose.yaml");
    let block = compose.split("  environment:\n").nth(1).unwrap();
    let mut env: Vec<(String, String)> = block
        .lines()
        .take_while(|line| line.starts_with("    "))
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once(": ").unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect();
    let redis = RedisServer::start();
    for (name, value) in &mut env {
        match name.as_str() {
            // The values an operator gives `docker compose up`.
            "SHARED_KEY" => *value = SHARED_KEY.to_owned(),
            "ADMIN_KEY" => *value = ADMIN_KEY.to_owned(),
            "REDIS_URL" => {
                assert_eq!(value, "redis://redis:6379");
                *value = redis.url();
            }
            _ => assert!(!value.contains("${"), "{name}: {value}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .envs(
            env.iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .arg("check-config")
        .output_within_20s()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let proxy = compose
        .split("ipv4_address: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap();
    let trusted = &env
        .iter()
        .find(|(name, _)| name == "TRUSTED_PROXIES")
        .unwrap()
        .1;
    assert_eq!(trusted, proxy, "the proxy's address is the trusted one");
    assert!(
        stdout.contains(&format!("trusted_proxies: {proxy}")),
        "{stdout}"
    );
}

#[test]
fn check_config_opens_the_store_and_prints_the_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .envs([
            ("SHARED_KEY", SHARED_KEY),
            ("ADMIN_KEY", ADMIN_KEY),
            ("SLED_PATH", "state/db"),
        ])
        .arg("check-config")
        .output_within_20s()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("store: sled at state/db"), "{stdout}");
    assert!(stdout.contains("admin_key: set"), "{stdout}");
    assert!(
        stdout.contains("cors_origins: unset (no CORS headers)\n"),
        "{stdout}"
    );
    // A database that does not exist yet is not created by checking it.
    assert!(
        stdout.ends_with(
            "ok: the configuration is valid; SLED_PATH state/db holds no database yet: the \
             server creates it when it starts\n"
        ),
        "{stdout}"
    );
    assert!(!dir.path().join("state").exists());
    assert!(
        !stdout.contains(SHARED_KEY) && !stdout.contains(ADMIN_KEY),
        "{stdout}"
    );
    // Nor in an empty directory.
    std::fs::create_dir_all(dir.path().join("state/db")).unwrap();
    let output = command(dir.path())
        .envs([("SHARED_KEY", SHARED_KEY), ("SLED_PATH", "state/db")])
        .arg("check-config")
        .output_within_20s()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("SLED_PATH state/db holds no database yet"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/db"))
            .unwrap()
            .count(),
        0
    );
    // An existing one is opened and asked; a short SHARED_KEY is allowed (Node-era
    // backends may have one) with a warning, CORS origins print as they are set.
    let config = heartbeat_store_sled::SledConfig::new(dir.path().join("state/db"));
    drop(heartbeat_store_sled::SledStore::open(config).unwrap());
    let output = command(dir.path())
        .envs([
            ("SHARED_KEY", "x"),
            ("SLED_PATH", "state/db"),
            ("CORS_ORIGINS", "https://a.example,http://localhost:5173"),
        ])
        .arg("check-config")
        .output_within_20s()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.ends_with("ok: the configuration is valid and the store answers\n"));
    assert!(
        stdout.contains("cors_origins: https://a.example,http://localhost:5173\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: SHARED_KEY is shorter than 16 characters"),
        "{stderr}"
    );
    // A path under a file cannot be created: a clear error, exit code 2.
    std::fs::write(dir.path().join("file"), "").unwrap();
    let output = command(dir.path())
        .envs([("SHARED_KEY", SHARED_KEY), ("SLED_PATH", "file/db")])
        .arg("check-config")
        .output_within_20s()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("SLED_PATH file/db does not exist and cannot be created"),
        "{stderr}"
    );

    let url = format!("redis://:hidden-pass@127.0.0.1:{}", free_port());
    let output = command(dir.path())
        .envs([
            ("SHARED_KEY", SHARED_KEY),
            ("STORAGE", "redis"),
            ("REDIS_URL", url.as_str()),
        ])
        .arg("check-config")
        .output_within_20s()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("cannot reach Redis") && !stderr.contains("hidden-pass"),
        "{stderr}"
    );
}

/// `check-config` and `export-history` only read: a sled database of an earlier layout
/// stays one (the build before can still open it, for a rollback); the server moves it.
#[test]
fn reading_commands_leave_an_earlier_sled_layout_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../heartbeat-store-sled/tests/fixtures/layout-1");
    let db = dir.path().join("db");
    std::fs::create_dir(&db).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), db.join(entry.file_name())).unwrap();
        }
    }
    let sled = [("SHARED_KEY", SHARED_KEY), ("SLED_PATH", "db")];
    let output = command(dir.path())
        .envs(sled)
        .arg("check-config")
        .output_within_20s()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let output = command(dir.path())
        .envs(sled)
        .args(["export-history", "--since", "2000-01-01T00:00:00Z"])
        .output_within_20s()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains(r#""ended_by":"stopped""#),
        "user 21's session: {stdout}"
    );

    // Where there is no database, they create none.
    let output = command(dir.path())
        .envs([("SHARED_KEY", SHARED_KEY), ("SLED_PATH", "none")])
        .args(["export-history", "--since", "2000-01-01T00:00:00Z"])
        .output_within_20s()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("no heartbeat sled database at none yet"),
        "{stderr}"
    );
    assert!(!dir.path().join("none").exists());

    // Still layout 1: a store that does not migrate refuses to commit to it.
    let mut config = heartbeat_store_sled::SledConfig::new(&db);
    config.migrate = false;
    let store = heartbeat_store_sled::SledStore::open(config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let refused = runtime.block_on(async {
        use heartbeat_core::SessionStore;
        let user = heartbeat_core::Id::Int(13);
        let loaded = store.load(&user).await.unwrap();
        let write = heartbeat_core::sessions::SessionWrite::default();
        let limits = heartbeat_core::sessions::Retention::default();
        store.commit(&user, &loaded.version, &write, &limits).await
    });
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("of layout 1, opened to read"), "{error}");
}
