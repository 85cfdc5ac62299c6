//! Owner tokens (SPEC §4, optional): with `OWNER_KEY`, the `/v1` routes take
//! `owner.<base64url HMAC-SHA256(OWNER_KEY, owner)>` as a bearer token or `?owner_token=`,
//! and with `OWNER_AUTH=required` every job route, the HeyGen ones included, refuses a
//! plain `uuid`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Kind, start_with};
use heartbeat_core::jobs::{Owner, OwnerKey};
use heartbeat_http::Settings;
use heartbeat_http::config::OwnerTokens;

const KEY: &str = "owner token signing key";

fn settings(required: bool) -> Settings {
    Settings {
        owner_tokens: Some(OwnerTokens {
            key: OwnerKey::new(KEY),
            required,
        }),
        ..common::settings()
    }
}

fn now() -> i64 {
    heartbeat_core::Timestamp::now().unix_millis() / 1000
}

fn token(owner: &str) -> String {
    OwnerKey::new(KEY).token(&Owner::new(owner).unwrap(), now() + 3600)
}

async fn status(
    server: &common::TestServer,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let mut request = server.http.request(method, format!("{}{path}", server.url));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = if response
        .headers()
        .get("content-type")
        .is_some_and(|kind| kind.to_str().unwrap().starts_with("text/event-stream"))
    {
        String::new()
    } else {
        response.text().await.unwrap()
    };
    (status, body)
}

#[tokio::test]
async fn tokens_are_checked_when_given_and_forgeries_learn_nothing() {
    use reqwest::Method;
    let (server, _backing) = start_with(Kind::Memory, settings(false)).await;
    let alice = token("alice");
    let (created, _) = status(&server, Method::POST, "/v1/jobs?uuid=alice", Some(&alice)).await;
    assert_eq!(created, 201);
    assert_eq!(
        status(&server, Method::POST, "/v1/jobs?uuid=alice", None)
            .await
            .0,
        201,
        "optional"
    );
    let forged = format!("owner.{}", "A".repeat(43));
    let expired = OwnerKey::new(KEY).token(&Owner::new("alice").unwrap(), now() - 1);
    let key = OwnerKey::new(KEY);
    let (_, tag) = key
        .token(&Owner::new("alice").unwrap(), now() + 3600)
        .rsplit_once('.')
        .map(|(head, tag)| (head.to_owned(), tag.to_owned()))
        .unwrap();
    let without_expiry = format!("owner.{tag}");
    let extended = format!("owner.{}.{tag}", now() + 999_999);
    for bad in [
        forged.as_str(),
        &expired,
        &without_expiry,
        &extended,
        &token("bob"),
        "owner.",
        "alice",
        &alice[..20],
    ] {
        for path in [
            "/v1/jobs?uuid=alice",
            "/v1/jobs/1?uuid=alice",
            "/v1/events?uuid=alice",
        ] {
            let (code, body) = status(&server, Method::GET, path, Some(bad)).await;
            assert_eq!(code, 401, "{path} with {bad}");
            assert!(
                !body.contains("alice"),
                "nothing about the owner leaks: {body}"
            );
        }
    }
    let (code, _) = status(
        &server,
        Method::GET,
        &format!("/v1/events?uuid=alice&owner_token={alice}"),
        None,
    )
    .await;
    assert_eq!(
        code, 200,
        "EventSource cannot set headers: the query works too"
    );
    server.stop().await;
}

#[tokio::test]
async fn required_mode_refuses_a_plain_uuid_on_every_job_route() {
    use reqwest::Method;
    let (server, _backing) = start_with(Kind::Memory, settings(true)).await;
    for (method, path) in [
        (Method::POST, "/v1/jobs?uuid=carol"),
        (Method::GET, "/v1/jobs?uuid=carol"),
        (Method::GET, "/v1/jobs/1?uuid=carol"),
        (Method::GET, "/v1/events?uuid=carol"),
    ] {
        assert_eq!(status(&server, method, path, None).await.0, 401, "{path}");
    }
    let carol = token("carol");
    assert_eq!(
        status(&server, Method::POST, "/v1/jobs?uuid=carol", Some(&carol))
            .await
            .0,
        201
    );
    assert_eq!(
        status(&server, Method::GET, "/v1/jobs?uuid=carol", Some(&carol))
            .await
            .0,
        200
    );
    // The HeyGen routes too: the unchanged TypeScript client appends `&owner_token=`.
    for (method, path) in [
        (Method::POST, "/create?uuid=carol"),
        (Method::GET, "/status/1?uuid=carol"),
        (Method::GET, "/status?uuid=carol"),
    ] {
        assert_eq!(status(&server, method, path, None).await.0, 401, "{path}");
    }
    assert_eq!(
        status(&server, Method::GET, "/status?uuid=carol", Some(&carol))
            .await
            .0,
        200
    );
    // Another owner's job is an unknown one on both route families: a 401 or 403 would
    // confirm that it exists.
    let create = format!("/create?uuid=carol&owner_token={carol}");
    let (code, created) = status(&server, Method::POST, &create, None).await;
    assert_eq!(code, 201);
    let id = created.trim();
    for (path, bearer) in [
        (format!("/status/{id}?uuid=mallory"), Some(token("mallory"))),
        (
            format!("/v1/jobs/{id}?uuid=mallory"),
            Some(token("mallory")),
        ),
    ] {
        let (code, _) = status(&server, Method::GET, &path, bearer.as_deref()).await;
        let (unknown, _) = status(
            &server,
            Method::GET,
            &path.replace(id, "999999"),
            bearer.as_deref(),
        )
        .await;
        assert_eq!((code, unknown), (404, 404), "{path}");
    }
    server.stop().await;
}

#[test]
fn required_without_a_key_is_a_configuration_error() {
    use clap::Parser;
    let cli = heartbeat_http::Cli::try_parse_from(["heartbeat-server", "--owner-auth", "required"])
        .unwrap();
    if std::env::var_os("OWNER_KEY").is_none() {
        let error = cli.server.settings().unwrap_err();
        assert_eq!(error.setting, "OWNER_AUTH");
    }
}
