//! Every endpoint with malformed input: a clear error (JSON, or text on the HeyGen routes),
//! and nothing changed.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN_KEY, Kind, backend_token, start};
use reqwest::Method;
use serde_json::{Value, json};

async fn send(
    server: &common::TestServer,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    let mut request = server
        .http
        .request(method, format!("{}{path}", server.url))
        .body(body.to_vec());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, response.text().await.unwrap())
}

fn error_of(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {body}"))
        .to_owned()
}

#[tokio::test]
async fn heartbeat_bodies_that_are_wrong_get_json_errors() {
    let (server, _backing) = start(Kind::Memory).await;
    let json = Some("application/json");
    let valid = backend_token(7, 1, "LEAST_RECENT");
    let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (json, b"{not json".to_vec(), 400, "not valid JSON"),
        (json, b" ".to_vec(), 400, "not valid JSON"),
        (json, b"[1,2]".to_vec(), 400, "must be a JSON object"),
        (json, b"\"token\"".to_vec(), 400, "must be a JSON object"),
        // As the Node server: no token is a 406 (the player stops), not a 400; an empty
        // body is no fields (Express reads it as `{}`).
        (json, b"{}".to_vec(), 406, "Heartbeat token is not valid."),
        (json, b"".to_vec(), 406, "Heartbeat token is not valid."),
        (
            json,
            br#"{"heartbeat_token": 42}"#.to_vec(),
            406,
            "Heartbeat token is not valid.",
        ),
        (
            json,
            format!(r#"{{"heartbeat_token": "{valid}", "progress": "twelve"}}"#).into_bytes(),
            400,
            "progress",
        ),
        (
            json,
            format!(r#"{{"heartbeat_token": "{valid}", "progress": true}}"#).into_bytes(),
            400,
            "progress",
        ),
        (
            json,
            format!(r#"{{"heartbeat_token": "{valid}", "progress": -1}}"#).into_bytes(),
            400,
            "progress",
        ),
        (
            json,
            format!(r#"{{"heartbeat_token": "{valid}", "progress": 1e400}}"#).into_bytes(),
            400,
            "not valid JSON",
        ),
        (
            Some("text/plain"),
            format!(r#"{{"heartbeat_token": "{valid}"}}"#).into_bytes(),
            415,
            "application/json",
        ),
        (
            None,
            format!(r#"{{"heartbeat_token": "{valid}"}}"#).into_bytes(),
            415,
            "application/json",
        ),
        (json, vec![b' '; 17 * 1024], 413, "too large"),
    ];
    for path in ["/heartbeat", "/", "/heartbeat/stop"] {
        for (content_type, body, status, message) in &cases {
            let (got, kind, text) = send(&server, Method::POST, path, *content_type, body).await;
            assert_eq!(
                got,
                *status,
                "{path} {:.60}: {text}",
                String::from_utf8_lossy(body)
            );
            assert!(kind.starts_with("application/json"), "{path}: {kind}");
            assert!(error_of(&text).contains(message), "{path}: {text}");
        }
    }
    let (_, sessions) = server.admin(Method::GET, "/admin/users/7/sessions").await;
    assert_eq!(sessions["sessions"], json!([]), "nothing was stored");
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let (server, _backing) = start(Kind::Memory).await;
    let (status, _, text) = send(&server, Method::GET, "/nope", None, b"").await;
    assert_eq!((status, error_of(&text).as_str()), (404, "No such route."));
    let (status, _, text) = send(&server, Method::GET, "/heartbeat", None, b"").await;
    assert_eq!(status, 405);
    assert!(error_of(&text).contains("method"));
    let (status, _, text) = send(&server, Method::DELETE, "/create", None, b"").await;
    assert_eq!(status, 405, "{text}");
    let (status, text) = server.get_text("/healthcheck").await;
    assert_eq!((status, text.as_str()), (200, "OK"));
    let (status, _) = server.get_text("/readyz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn admin_routes_need_the_key_and_are_off_without_one() {
    let (server, _backing) = start(Kind::Memory).await;
    for (auth, status) in [
        (None, 401),
        (Some("Bearer wrong-key-wrong-key-wrong"), 401),
        (Some("Basic abc"), 401),
    ] {
        let mut request = server
            .http
            .get(format!("{}/admin/users/1/sessions", server.url));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    let (status, body) = server
        .admin(
            Method::GET,
            &format!("/admin/users/{}/sessions", "u".repeat(300)),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .admin(Method::GET, "/admin/users/1/history?limit=lots")
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.admin(Method::GET, "/admin/users/1/progress/2").await;
    assert_eq!(status, 404, "{body}");
    let response = server
        .http
        .post(format!("{}/admin/tokens", server.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "user_id": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(error_of(&response.text().await.unwrap()).contains("Invalid heartbeat data"));
    server.stop().await;

    let settings = heartbeat_http::Settings {
        admin_key: None,
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let response = server
        .http
        .get(format!("{}/admin/users/1/sessions", server.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "the admin API is off without ADMIN_KEY"
    );
    server.stop().await;
}

#[tokio::test]
async fn job_routes_refuse_bad_ids_owners_and_bodies() {
    let (server, _backing) = start(Kind::Memory).await;
    let (status, text) = server.get_text("/status/1?uuid=alice").await;
    assert_eq!((status, text.as_str()), (404, "error"));
    for id in ["abc", "-1", "0", "18446744073709551616", "1.5"] {
        let (status, text) = server.get_text(&format!("/status/{id}?uuid=alice")).await;
        assert_eq!((status, text.as_str()), (404, "error"), "{id}");
    }
    let long = "x".repeat(129);
    for query in ["", "?uuid=", &format!("?uuid={long}"), "?uuid=%01"] {
        let response = server
            .http
            .post(format!("{}/create{query}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert!(!response.text().await.unwrap().is_empty());
        let response = server
            .http
            .get(format!("{}/v1/jobs{query}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert!(error_of(&response.text().await.unwrap()).contains("uuid") || query.len() > 10);
    }
    let (status, body) = server.admin(Method::GET, "/v1/jobs/abc?uuid=alice").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .admin(Method::GET, "/v1/jobs?uuid=alice&limit=0")
        .await;
    assert_eq!(status, 400, "{body}");
    // Nothing above created a job.
    let (status, body) = server.admin(Method::GET, "/v1/jobs?uuid=alice").await;
    assert_eq!((status, body["jobs"].clone()), (200, json!([])));

    let created: Value = server
        .http
        .post(format!("{}/v1/jobs?uuid=alice", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    let patch = |body: &'static str, key: &'static str| {
        server
            .http
            .patch(format!("{}/v1/jobs/{id}", server.url))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        patch(r#"{"state":"running"}"#, "wrong-key-wrong-key-wrong")
            .await
            .unwrap()
            .status(),
        401
    );
    for (body, status) in [
        (r#"{"state":"flying"}"#, 400),
        (r#"{"progress":101}"#, 400),
        (
            r#"{"state":"running","error":"only failed jobs have one"}"#,
            400,
        ),
        (r#"{"progress":"half"}"#, 400),
        (r#"{"colour":"red"}"#, 400),
        ("not json", 400),
    ] {
        let response = patch(body, ADMIN_KEY).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert!(!error_of(&response.text().await.unwrap()).is_empty());
    }
    let job: Value = server
        .http
        .get(format!("{}/v1/jobs/{id}?uuid=alice", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (job["state"].as_str(), job["progress"].as_u64()),
        (Some("pending"), Some(0)),
        "unchanged"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_that_never_finishes_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let settings = heartbeat_http::Settings {
        request_timeout: std::time::Duration::from_millis(300),
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // A body announced at 100 bytes of which only a few ever come.
    let head = "POST /heartbeat HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"heartbeat";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0_u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers instead of waiting for ever")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.stop().await;
}

/// One 400 text for a query that cannot be read, on every route family.
#[tokio::test]
async fn a_bad_query_gets_one_text_everywhere() {
    let (server, _backing) = start(Kind::Memory).await;
    for path in [
        "/v1/jobs?uuid=alice&limit=many",
        "/heartbeat/events?heartbeat_token=a&heartbeat_token=b",
        "/status/1?uuid=a&uuid=b",
    ] {
        let (status, _, body) = send(&server, Method::GET, path, None, b"").await;
        assert_eq!(status, 400, "{path}: {body}");
        let text = if body.starts_with('{') {
            error_of(&body)
        } else {
            body
        };
        assert!(text.starts_with("Invalid query: "), "{path}: {text}");
    }
    let response = server
        .http
        .get(format!("{}/admin/users/1/history?limit=many", server.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(error_of(&body).starts_with("Invalid query: "), "{body}");
    server.stop().await;
}
