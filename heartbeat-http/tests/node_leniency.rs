//! What the Node.js server accepts is accepted here (SPEC §3.5), each row tried over real
//! HTTP: the request the Node server answered 200 (or 406, or 413) gets the same answer.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Kind, SHARED_KEY, backend_token, codec, start};
use heartbeat_core::TokenCodec;
use heartbeat_core::token::legacy;
use reqwest::Method;
use serde_json::{Value, json};

/// A backend token as a Node-era backend makes it: legacy (crypto-js) format, with the
/// fields as that backend writes them.
fn node_backend_token(fields: Value) -> String {
    let salt = [7u8; 16];
    let iv = [9u8; 16];
    legacy::seal_with(
        SHARED_KEY.as_bytes(),
        &salt,
        &iv,
        fields.to_string().as_bytes(),
    )
}

fn node_fields(user: i64, timestamp: Value) -> Value {
    json!({
        "user_id": user, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "timestamp": timestamp, "session_limit": 2, "checking_threshold": 1, "sessions_edge": 5,
    })
}

struct Row {
    what: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
}

fn json_row(what: &'static str, path: &'static str, body: Value, status: u16) -> Row {
    Row {
        what,
        path,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        status,
    }
}

#[tokio::test]
async fn requests_the_node_server_answers_get_the_same_answer() {
    let (server, _backing) = start(Kind::Memory).await;
    let token = |user: i64| backend_token(user, 2, "LEAST_RECENT");
    let with_timestamp = |user: i64, timestamp: Value| json!({ "heartbeat_token": node_backend_token(node_fields(user, timestamp)) });
    let unpadded = {
        // A token whose base64 ends in `=`, sent without it.
        let mut user = 100;
        loop {
            let token = node_backend_token(node_fields(user, json!("2018-06-05T16:16:14.418Z")));
            if token.ends_with('=') {
                break token.trim_end_matches('=').to_owned();
            }
            user += 1;
        }
    };
    let no_limits_token = node_backend_token(json!({
        "user_id": 30, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "timestamp": "2018-06-05T16:16:14.418Z",
    }));
    let rows = vec![
        json_row(
            "Java LocalDateTime",
            "/heartbeat",
            with_timestamp(1, json!("2018-06-05T16:16:14")),
            200,
        ),
        json_row(
            "PHP DATE_ISO8601",
            "/heartbeat",
            with_timestamp(2, json!("2018-06-05T16:16:14+0000")),
            200,
        ),
        json_row(
            "space between date and time",
            "/heartbeat",
            with_timestamp(3, json!("2018-06-05 16:16:14")),
            200,
        ),
        json_row(
            "no timestamp at all",
            "/heartbeat",
            json!({ "heartbeat_token": node_backend_token(json!({
            "user_id": 4, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        })) }),
            200,
        ),
        json_row(
            "an unreadable timestamp",
            "/heartbeat",
            with_timestamp(5, json!("yesterday")),
            200,
        ),
        json_row(
            "no limits",
            "/heartbeat",
            json!({ "heartbeat_token": no_limits_token }),
            200,
        ),
        json_row(
            "progress as text",
            "/heartbeat",
            json!({ "heartbeat_token": token(6), "progress": "42" }),
            200,
        ),
        json_row(
            "empty progress",
            "/heartbeat",
            json!({ "heartbeat_token": token(7), "progress": "" }),
            200,
        ),
        json_row(
            "trailing slash",
            "/heartbeat/",
            json!({ "heartbeat_token": token(8) }),
            200,
        ),
        json_row(
            "another case",
            "/Heartbeat",
            json!({ "heartbeat_token": token(9) }),
            200,
        ),
        json_row(
            "stop, trailing slash",
            "/heartbeat/stop/",
            json!({ "heartbeat_token": token(10) }),
            200,
        ),
        json_row(
            "stop, another case",
            "/HEARTBEAT/Stop",
            json!({ "heartbeat_token": token(11) }),
            200,
        ),
        json_row(
            "base64 without padding",
            "/heartbeat",
            json!({ "heartbeat_token": unpadded }),
            200,
        ),
        Row {
            what: "a byte order mark before the JSON (Express skips it)",
            path: "/heartbeat",
            content_type: "application/json",
            body: [
                &b"\xEF\xBB\xBF"[..],
                json!({ "heartbeat_token": token(13) })
                    .to_string()
                    .as_bytes(),
            ]
            .concat(),
            status: 200,
        },
        json_row(
            "a session_id field the Node server ignores: empty",
            "/heartbeat",
            json!({ "heartbeat_token": token(14), "session_id": "" }),
            200,
        ),
        json_row(
            "a session_id field the Node server ignores: 257 bytes",
            "/heartbeat",
            json!({ "heartbeat_token": token(15), "session_id": "x".repeat(257) }),
            200,
        ),
        json_row(
            "stop with a session_id field the Node server ignores: a number",
            "/heartbeat/stop",
            json!({ "heartbeat_token": token(16), "session_id": 7 }),
            200,
        ),
        json_row("no token", "/heartbeat", json!({ "progress": 3 }), 406),
        Row {
            what: "an empty JSON body (Express reads it as {})",
            path: "/heartbeat",
            content_type: "application/json",
            body: Vec::new(),
            status: 406,
        },
        json_row(
            "a token that is not a string",
            "/heartbeat",
            json!({ "heartbeat_token": ["a"] }),
            406,
        ),
        Row {
            what: "an HTML form",
            path: "/heartbeat",
            content_type: "application/x-www-form-urlencoded",
            body: format!("heartbeat_token={}&progress=42", url_encode(&token(12))).into_bytes(),
            status: 200,
        },
        Row {
            what: "an HTML form without a token",
            path: "/heartbeat",
            content_type: "application/x-www-form-urlencoded",
            body: b"progress=42".to_vec(),
            status: 406,
        },
    ];
    for row in rows {
        let response = server
            .http
            .request(Method::POST, format!("{}{}", server.url, row.path))
            .header("content-type", row.content_type)
            .body(row.body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, row.status, "{}: {body}", row.what);
        if status == 200 && !row.path.to_ascii_lowercase().contains("stop") {
            // Re-issued tokens always carry the toISOString() form.
            let token = body["heartbeat_token"].as_str().unwrap();
            let data = codec().open(token).unwrap();
            let written = serde_json::to_value(&data).unwrap();
            let timestamp = written["timestamp"].as_str().unwrap();
            assert_eq!(timestamp.len(), 24, "{}: {timestamp}", row.what);
            assert!(timestamp.ends_with('Z'), "{}: {timestamp}", row.what);
        }
    }
    // Progress sent as text and as a form field was recorded as a number.
    for user in [6, 12] {
        let (status, progress) = server
            .admin(Method::GET, &format!("/admin/users/{user}/progress/14"))
            .await;
        assert_eq!(
            (status, &progress["progress"]),
            (200, &json!(42.0)),
            "user {user}"
        );
    }
    // Without limits nothing is limited: more devices of user 30 play on. The same backend
    // token sent again is the same playback (SPEC §3.2): 200, and no new session.
    let no_limits = json!({ "heartbeat_token": no_limits_token });
    let response = server.post_json("/heartbeat", &no_limits).await;
    assert_eq!(response.status(), 200);
    for device in 0..3 {
        // Another playback: the backend issued it at another instant.
        let token = node_backend_token(json!({
            "user_id": 30, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": format!("2018-06-05T16:16:1{device}.418Z"),
        }));
        let response = server
            .post_json("/heartbeat", &json!({ "heartbeat_token": token }))
            .await;
        assert_eq!(response.status(), 200);
    }
    let (_, sessions) = server.admin(Method::GET, "/admin/users/30/sessions").await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 4);
    server.stop().await;
}

fn url_encode(text: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").unwrap();
    url.query_pairs_mut().append_pair("v", text);
    url.query().unwrap()[2..].to_owned()
}

/// A body over the limit is read and answered 413 even by a client that sends the whole
/// body before reading (as Node's `fetch` and browsers do), up to 8 MiB.
#[tokio::test]
async fn a_body_over_the_limit_gets_a_readable_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, _backing) = start(Kind::Memory).await;
    let address = server.url.trim_start_matches("http://").to_owned();
    for size in [17 * 1024, 5 * 1024 * 1024] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /heartbeat HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // Write it all before reading anything: a server that answered early and closed
        // would make this fail with a broken pipe or a reset.
        let chunk = vec![b' '; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            stream.write_all(&chunk[..n]).await.unwrap();
            left -= n;
        }
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{size}: {answer:.80}");
        assert!(answer.contains("too large"), "{size}: {answer}");
    }
    server.stop().await;
}

/// Tokens of another key stay refused whatever their form.
#[tokio::test]
async fn leniency_does_not_accept_forged_tokens() {
    let (server, _backing) = start(Kind::Memory).await;
    let other = TokenCodec::new("another key").unwrap();
    let data = codec().open(&backend_token(40, 1, "LEAST_RECENT")).unwrap();
    let forged = other.seal(&data).unwrap();
    let (status, body) = server.heartbeat(&forged).await;
    assert_eq!(
        (status, body),
        (406, json!({"error": "Heartbeat token is not valid."}))
    );
    server.stop().await;
}
