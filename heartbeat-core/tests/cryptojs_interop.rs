//! Legacy tokens sealed by this crate open with the real `crypto-js@3` (SPEC §7), run by
//! Node.js through `tools/cryptojs/open.js`.
//!
//! Needs `node` and `npm` on the PATH; installs `crypto-js` into `tools/cryptojs` with
//! `npm ci` the first time (from the committed lock file).

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use heartbeat_core::{HeartbeatData, TokenCodec, TokenFormat};
use serde_json::{Value, json};

fn tool_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/cryptojs")
}

fn ensure_cryptojs_installed() {
    // One `npm ci` at a time: the tests of this file run in parallel.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tool_dir();
    if dir.join("node_modules/crypto-js/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run npm ({e}): install Node.js and npm (Debian: apt-get install nodejs npm)"
            )
        });
    assert!(status.success(), "`npm ci` in {} failed", dir.display());
}

/// Opens each `(passphrase, token)` with crypto-js; returns what it decrypted.
fn open_with_cryptojs(tokens: &[(String, String)]) -> Vec<Value> {
    ensure_cryptojs_installed();
    let mut child = Command::new("node")
        .arg("open.js")
        .current_dir(tool_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run node ({e}): install Node.js (Debian: apt-get install nodejs)")
        });
    let mut input = String::new();
    for (passphrase, token) in tokens {
        input.push_str(&json!({"passphrase": passphrase, "token": token}).to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn legacy_tokens_sealed_here_open_with_cryptojs() {
    let passphrases = ["topsecret", "tøpsecret🔑", "k"];
    let mut cases = Vec::new();
    for (i, passphrase) in passphrases.iter().enumerate() {
        let codec = TokenCodec::new(passphrase)
            .unwrap()
            .issuing(TokenFormat::Legacy);
        let data = HeartbeatData::from_json(json!({
            "user_id": if i % 2 == 0 { json!(13 + i) } else { json!(format!("user-äöü-🎬-{i}")) },
            "asset_id": "movie/42", "session_id": "2b0b5b4e-7f4a-4c1e-9d43-5c8a0f6d2e11",
            "heartbeat_cycle": 3, "cycle_lower_tolerance": 0.3, "cycle_upper_tolerance": 0.8,
            "reject_strategy": "MOST_RECENT", "timestamp": "2026-11-22T10:00:30.123Z",
            "started_at": "2026-11-22T10:00:00.000Z", "session_limit": 2,
            "checking_threshold": 3, "sessions_edge": 10, "note": "x".repeat(i * 40),
        }))
        .unwrap();
        for _ in 0..3 {
            cases.push((
                passphrase.to_string(),
                codec.seal(&data).unwrap(),
                data.clone(),
            ));
        }
    }
    let tokens: Vec<(String, String)> = cases
        .iter()
        .map(|(p, t, _)| (p.clone(), t.clone()))
        .collect();
    let opened = open_with_cryptojs(&tokens);
    assert_eq!(opened.len(), cases.len());
    for ((_, token, data), value) in cases.iter().zip(opened) {
        assert!(
            value.get("error").is_none(),
            "crypto-js refused {token}: {value}"
        );
        assert_eq!(HeartbeatData::from_json(value).unwrap(), *data);
    }
}

#[test]
fn cryptojs_cannot_open_with_the_wrong_passphrase() {
    let codec = TokenCodec::new("right")
        .unwrap()
        .issuing(TokenFormat::Legacy);
    let token = codec.seal_bytes(br#"{"user_id":1}"#).unwrap();
    let opened = open_with_cryptojs(&[("wrong".into(), token.clone()), ("right".into(), token)]);
    assert!(opened[0].get("error").is_some(), "{}", opened[0]);
    assert_eq!(opened[1], json!({"user_id": 1}));
}
