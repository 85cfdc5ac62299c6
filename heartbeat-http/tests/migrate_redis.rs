//! `heartbeat-server migrate-redis` from outside: the release binary serving a Redis an
//! earlier build wrote, the migration run in pieces and to its end beside it, the same
//! answers throughout; clear errors for the wrong store and for a newer layout.
#![allow(clippy::unwrap_used)]

mod common;
mod process;

use std::process::Output;

use common::{ADMIN_KEY, SHARED_KEY, TestServer};
use heartbeat_core::{Id, Timestamp};
use heartbeat_store_redis::testkit::{RedisServer, earlier, plain_client};
use process::{BINARY, OutputWithin, ServerProcess};
use reqwest::Method;

const NS: &str = "mig:";

/// `redis-cli` on the server at `port`: its answer.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output_within_20s()
        .unwrap();
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn migrate(url: &str, args: &[&str]) -> Output {
    std::process::Command::new(BINARY)
        .env_clear()
        .envs([
            ("STORAGE", "redis"),
            ("REDIS_URL", url),
            ("REDIS_NAMESPACE", NS),
            ("SHARED_KEY", SHARED_KEY),
        ])
        .arg("migrate-redis")
        .args(args)
        .output_within_20s()
        .unwrap()
}

/// What a client of the server sees of user 7: progress of assets 100 and 200, history.
async fn seen(server: &TestServer) -> (serde_json::Value, serde_json::Value, Vec<String>) {
    let (_, progress_100) = server
        .admin(Method::GET, "/admin/users/7/progress/100")
        .await;
    let (_, progress_200) = server
        .admin(Method::GET, "/admin/users/7/progress/200")
        .await;
    let (status, history) = server.admin(Method::GET, "/admin/users/7/history").await;
    assert_eq!(status, 200, "{history}");
    let sessions = history
        .as_array()
        .or_else(|| history["history"].as_array())
        .unwrap_or_else(|| panic!("a history: {history}"))
        .iter()
        .map(|record| record["session_id"].as_str().unwrap().to_owned())
        .collect();
    (progress_100, progress_200, sessions)
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_redis_moves_an_earlier_builds_keys_while_the_server_answers_the_same() {
    let redis = RedisServer::start();
    let url = redis.url();
    let client = plain_client(&url).await;
    // A minute ago: within the retention the server keeps.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let t0 = Timestamp::from_unix_millis(i64::try_from(now.as_millis()).unwrap() - 60_000).unwrap();
    let user = Id::Int(7);
    for (n, asset) in [100, 200].into_iter().enumerate() {
        let ended = t0.add_millis(n as i64 * 1000);
        earlier::write_session(
            &client,
            NS,
            &user,
            &format!("before-{n}"),
            asset,
            40.0,
            ended,
        )
        .await;
    }
    // Other users' earlier keys besides: `SCAN` hands out whole buckets, so with only
    // user 7's two keys a "one key" piece could move both.
    for other in 1000..1040 {
        earlier::write_session(&client, NS, &Id::Int(other), "other", 100, 1.0, t0).await;
    }
    let earlier_keys = 2 + 2 * 40;
    earlier::mark_layout_1(&client, NS).await;
    let process = ServerProcess::start(
        None,
        &[
            ("STORAGE", "redis"),
            ("REDIS_URL", &url),
            ("REDIS_NAMESPACE", NS),
            ("SHARED_KEY", SHARED_KEY),
            ("ADMIN_KEY", ADMIN_KEY),
        ],
    );
    let server = TestServer::at(format!("http://127.0.0.1:{}", process.port));
    let before = seen(&server).await;
    assert_eq!(before.0["progress"], 40.0, "{before:?}");
    assert_eq!(before.2, ["before-1", "before-0"]);

    let piece = migrate(&url, &["--max-keys", "1", "--scan-count", "1"]);
    let stdout = String::from_utf8_lossy(&piece.stdout);
    assert_eq!(piece.status.code(), Some(0), "{stdout} {piece:?}");
    let moved = |stdout: &str, prefix: &str| -> u64 {
        let rest = stdout
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{stdout}"));
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    let first = moved(&stdout, "stopped after ");
    assert!(first >= 1 && first < earlier_keys, "{stdout}");
    assert_eq!(seen(&server).await, before, "half migrated");

    let rest = migrate(&url, &[]);
    let stdout = String::from_utf8_lossy(&rest.stdout);
    assert_eq!(rest.status.code(), Some(0), "{stdout} {rest:?}");
    assert_eq!(first + moved(&stdout, "ok: "), earlier_keys, "{stdout}");
    assert!(stdout.contains("layout is version 2"), "{stdout}");
    assert_eq!(seen(&server).await, before, "migrated");
    for earlier_name in ["hb_progress:7", "hb_history:7"] {
        let exists = redis_cli(redis.port(), &["exists", &format!("{NS}{earlier_name}")]);
        assert_eq!(exists, "0", "{earlier_name}");
    }
    let again = migrate(&url, &[]);
    assert!(
        String::from_utf8_lossy(&again.stdout).starts_with("ok: 0 keys moved"),
        "{again:?}"
    );
    drop(process);

    // A newer build's layout: this build neither serves it nor migrates it.
    redis_cli(
        redis.port(),
        &["set", &format!("{NS}hb_layout:version"), "3"],
    );
    let refused = migrate(&url, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("upgrade this instance"), "{stderr}");
}

#[test]
fn migrate_redis_on_another_store_says_what_it_needs() {
    let output = std::process::Command::new(BINARY)
        .env_clear()
        .envs([("STORAGE", "sled"), ("SHARED_KEY", SHARED_KEY)])
        .args(["migrate-redis"])
        .output_within_20s()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("set STORAGE=redis and REDIS_URL"),
        "{stderr}"
    );
    let output = std::process::Command::new(BINARY)
        .env_clear()
        .args(["migrate-redis", "--scan-count", "0"])
        .output_within_20s()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}
