//! The web player client (`clients/web/`) against this server's binary: its Node test
//! suite (`node --test`) plays, is refused, takes over, stops, retries and gives up against
//! a real server on loopback, checks the bundle's size and what `npm pack` ships, and runs
//! two tabs of one user in headless Chromium on another origin (`CORS_ORIGINS`).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

mod process;
use process::{ServerProcess, free_port};

const SHARED_KEY: &str = "web client test shared key";

/// Every refusal code the server can send is in the web client's `RefusalReason` (a
/// code the client does not list would reach players untyped), and nothing else is.
#[test]
fn the_web_client_lists_every_refusal_code() {
    let module = include_str!("../../clients/web/src/heartbeat.js");
    let block = module
        .split("export const RefusalReason = Object.freeze({")
        .nth(1)
        .and_then(|rest| rest.split("});").next())
        .expect("heartbeat.js exports RefusalReason");
    let mut listed: Vec<&str> = block
        .lines()
        .filter_map(|line| line.split('"').nth(1))
        .collect();
    listed.sort_unstable();
    let mut codes = heartbeat_core::sessions::RejectReason::CODES.to_vec();
    codes.sort_unstable();
    assert_eq!(listed, codes);
}

#[test]
fn the_web_client_suite_passes_against_the_server() {
    let web = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../clients/web"));
    assert!(
        web.join("node_modules/esbuild").exists(),
        "clients/web has no node_modules: run `npm ci --prefix clients/web` (scripts/test does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Chromium (Debian: apt-get install chromium; scripts/test \
         does) or set CHROMIUM to its path"
    );
    let page_port = free_port();
    let server = ServerProcess::start(
        None,
        &[
            ("SHARED_KEY", SHARED_KEY),
            ("STORAGE", "memory"),
            ("CORS_ORIGINS", &format!("http://127.0.0.1:{page_port}")),
            // browser.test.mjs's GRACE_MS: a crashed tab's session ends 2 s after its
            // notice stream closed.
            ("GONE_GRACE_SECS", "2"),
        ],
    );
    let port = server.port;
    // One file at a time: the timing tests (one-second cycles) do not share the two cores
    // with Chromium.
    for file in [
        "test/client.test.mjs",
        "test/package.test.mjs",
        "test/browser.test.mjs",
    ] {
        // A failed check can leave a player's timers running: `--test-force-exit` ends the
        // file once its tests are done, and `--test-timeout` fails a test that hangs, so
        // a failure is reported instead of hanging the suite.
        let output = Command::new("node")
            .args(["--test", "--test-force-exit", "--test-timeout=120000", file])
            .current_dir(web)
            .env("HEARTBEAT_URL", format!("http://127.0.0.1:{port}"))
            .env("SHARED_KEY", SHARED_KEY)
            .env("PAGE_PORT", page_port.to_string())
            .env("CHROMIUM", &chromium)
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run node ({error}): install Node 20 or newer (scripts/test does)")
            });
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "node --test {file} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("# fail 0"), "{file}: {stdout}");
    }
}
