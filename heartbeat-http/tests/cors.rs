//! Browsers on other origins (SPEC §4): `CORS_ORIGINS` answers preflights and puts the
//! CORS headers on answers and on both SSE streams; unset, there are none. Over real HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Kind, start_with};
use heartbeat_http::Settings;
use reqwest::Method;

const APP: &str = "https://app.example.com";

fn settings_with(cors: Option<&str>) -> Settings {
    Settings {
        cors: cors.map(|origins| origins.parse().unwrap()),
        ..common::settings()
    }
}

async fn preflight(
    server: &common::TestServer,
    path: &str,
    method: &str,
    headers: &str,
    origin: &str,
) -> reqwest::Response {
    server
        .http
        .request(Method::OPTIONS, format!("{}{path}", server.url))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn allowed_origins_get_preflights_and_headers_on_every_answer() {
    let (server, _backing) = start_with(
        Kind::Memory,
        settings_with(Some("https://app.example.com, http://localhost:5173")),
    )
    .await;
    for (path, method, headers) in [
        ("/create?uuid=a", "POST", "content-type"),
        ("/v1/jobs?uuid=a", "POST", "authorization"),
        ("/v1/jobs/1", "PATCH", "authorization,content-type"),
        ("/heartbeat", "POST", "content-type"),
        ("/heartbeat/stop", "POST", "content-type"),
        ("/status?uuid=a", "GET", "last-event-id"),
        ("/v1/events?uuid=a", "GET", "last-event-id,authorization"),
    ] {
        let response = preflight(&server, path, method, headers, APP).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some(APP),
            "{path}"
        );
        let methods = header(&response, "access-control-allow-methods").unwrap();
        assert!(methods.contains(method), "{path}: {methods}");
        let allowed = header(&response, "access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        for wanted in headers.split(',') {
            assert!(
                allowed.contains(wanted),
                "{path}: {wanted} not in {allowed}"
            );
        }
    }

    let created = server
        .http
        .post(format!("{}/create?uuid=browser", server.url))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "access-control-allow-origin"), Some(APP));
    let exposed = header(&created, "access-control-expose-headers").unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    for path in ["/status?uuid=browser", "/v1/events?uuid=browser"] {
        let stream = server
            .http
            .get(format!("{}{path}", server.url))
            .header("origin", "http://localhost:5173")
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        assert_eq!(header(&stream, "content-type"), Some("text/event-stream"));
        assert_eq!(
            header(&stream, "access-control-allow-origin"),
            Some("http://localhost:5173"),
            "{path}"
        );
    }

    let other = preflight(
        &server,
        "/create?uuid=a",
        "POST",
        "content-type",
        "https://evil.example",
    )
    .await;
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    let other = server
        .http
        .post(format!("{}/create?uuid=x", server.url))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    server.stop().await;
}

#[tokio::test]
async fn any_origin_with_a_star() {
    let (server, _backing) = start_with(Kind::Memory, settings_with(Some("*"))).await;
    let response = preflight(
        &server,
        "/create?uuid=a",
        "POST",
        "content-type",
        "https://x.test",
    )
    .await;
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    // The preflights CORS answers itself are counted like every other request.
    preflight(
        &server,
        "/heartbeat",
        "POST",
        "content-type",
        "https://x.test",
    )
    .await;
    preflight(
        &server,
        "/nowhere",
        "POST",
        "content-type",
        "https://x.test",
    )
    .await;
    let (_, metrics) = server.get_text("/metrics").await;
    for expected in [
        r#"heartbeat_http_requests_total{route="/create",method="OPTIONS",status="200"} 1"#,
        r#"heartbeat_http_requests_total{route="/heartbeat",method="OPTIONS",status="200"} 1"#,
        r#"heartbeat_http_requests_total{route="unmatched",method="OPTIONS",status="200"} 1"#,
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn without_cors_origins_there_are_no_cors_headers() {
    let (server, _backing) = start_with(Kind::Memory, settings_with(None)).await;
    let created = server
        .http
        .post(format!("{}/create?uuid=browser", server.url))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "access-control-allow-origin"), None);
    let response = preflight(&server, "/create?uuid=a", "POST", "content-type", APP).await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    server.stop().await;
}

#[test]
fn cors_origins_are_checked() {
    use heartbeat_http::CorsOrigins;
    assert_eq!("*".parse::<CorsOrigins>(), Ok(CorsOrigins::Any));
    assert_eq!(
        " https://a.test , http://localhost:5173 ".parse::<CorsOrigins>(),
        Ok(CorsOrigins::List(vec![
            "https://a.test".into(),
            "http://localhost:5173".into()
        ]))
    );
    for bad in [
        "",
        ",",
        "a.test",
        "ftp://a.test",
        "https://a.test/path",
        "https://a.test/",
    ] {
        assert!(bad.parse::<CorsOrigins>().is_err(), "{bad}");
    }
}
