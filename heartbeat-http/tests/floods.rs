//! No client exhausts the server (SPEC §4): job creations limited per client address and
//! in total (backends that prove who they are skip the address limit), the client address
//! read from a trusted proxy only, connections capped in total (idle ones closed first)
//! and per address while `/healthz` keeps answering, and `OWNER_AUTH=required` holding on
//! the HeyGen routes before any allowance or stream place is used. A real server on
//! 127.0.0.1, a real HTTP client.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{ADMIN_KEY, Kind, TestServer};
use heartbeat_core::jobs::{Owner, OwnerKey};
use heartbeat_http::Settings;
use heartbeat_http::config::OwnerTokens;
use heartbeat_http::connections::ConnectionCaps;
use heartbeat_http::rate::{JobRates, Rate};
use serde_json::Value;
use tokio::io::AsyncReadExt;

const OWNER_KEY: &str = "floods owner token key";

const OFF: Rate = Rate {
    per_second: 0,
    burst: 0,
};

/// A client whose connections come from `127.0.0.<last>`.
fn from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, last]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn token(owner: &str) -> String {
    let expires = heartbeat_core::Timestamp::now().unix_millis() / 1000 + 3600;
    OwnerKey::new(OWNER_KEY).token(&Owner::new(owner).unwrap(), expires)
}

fn owner_tokens(required: bool) -> Option<OwnerTokens> {
    Some(OwnerTokens {
        key: OwnerKey::new(OWNER_KEY),
        required,
    })
}

/// Creates jobs for fresh owners with `request` until one is refused (at most `most`
/// attempts): how many were created, and the refusal.
async fn create_until_refused(
    most: usize,
    mut request: impl FnMut(usize) -> reqwest::RequestBuilder,
) -> (usize, reqwest::Response) {
    for n in 0..most {
        let response = request(n).send().await.unwrap();
        if response.status() != 201 {
            return (n, response);
        }
    }
    panic!("{most} creations in a row were all accepted");
}

/// The owner `uuid`'s jobs, as `/v1/jobs` lists them.
async fn jobs_of(server: &TestServer, uuid: &str) -> usize {
    let (status, listed) = server
        .admin(reqwest::Method::GET, &format!("/v1/jobs?uuid={uuid}"))
        .await;
    assert_eq!(status, 200, "{listed}");
    listed["jobs"].as_array().unwrap().len()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Fresh owner names from one address are refused past the address's burst (429,
/// `Retry-After`, nothing stored), on both create routes; another address, and backends
/// with a key or an owner token, are not that client; the total refuses everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_creation_is_limited_per_address_and_in_total() {
    let settings = Settings {
        job_rates: JobRates {
            per_owner: OFF,
            per_address: Rate {
                per_second: 1,
                burst: 5,
            },
            total: Rate {
                per_second: 1,
                burst: 20,
            },
        },
        owner_tokens: owner_tokens(false),
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let (one, two) = (from(1), from(2));
    let (created, refused) = create_until_refused(10, |n| {
        one.post(format!("{}/create?uuid=fresh-{n}", server.url))
    })
    .await;
    assert!((5..10).contains(&created), "{created}");
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) >= 1);
    assert_eq!(refused.text().await.unwrap(), "too many jobs: retry later");
    assert_eq!(jobs_of(&server, &format!("fresh-{created}")).await, 0);
    let refused = one
        .post(format!("{}/v1/jobs?uuid=fresh-v1", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("client address"),
        "{body}"
    );
    assert_eq!(jobs_of(&server, "fresh-v1").await, 0);

    // Another client, and backends from the flooded address that prove who they are.
    let other = two
        .post(format!("{}/create?uuid=other", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201);
    let with_key = one
        .post(format!("{}/v1/jobs?uuid=backend-user", server.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(with_key.status(), 201);
    let with_token = one
        .post(format!(
            "{}/create?uuid=alice&owner_token={}",
            server.url,
            token("alice")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 201);

    // The total holds for backends too.
    let (_, refused) = create_until_refused(40, |n| {
        one.post(format!("{}/v1/jobs?uuid=backend-{n}", server.url))
            .bearer_auth(ADMIN_KEY)
    })
    .await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("The server"),
        "{body}"
    );
    let metrics = server.get_text("/metrics").await.1;
    for limit in ["address", "total"] {
        let line = format!("heartbeat_job_creations_refused_total{{limit=\"{limit}\"}} 0");
        assert!(!metrics.contains(&line), "{limit} refusals are counted");
    }
    server.stop().await;
}

/// Behind a trusted proxy each forwarded client has its own allowance, while forwarding
/// headers from any other peer are ignored (a client cannot choose its address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_limit_sees_forwarded_clients_of_a_trusted_proxy_only() {
    let settings = Settings {
        job_rates: JobRates {
            per_owner: OFF,
            per_address: Rate {
                per_second: 1,
                burst: 3,
            },
            total: OFF,
        },
        trusted_proxies: "127.0.0.1".parse().unwrap(),
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let (proxy, stranger) = (from(1), from(2));
    // Two clients behind the proxy; the first also forges an entry, which the proxy's own
    // (right-most) one outweighs.
    let (created, refused) = create_until_refused(8, |n| {
        proxy
            .post(format!("{}/create?uuid=a-{n}", server.url))
            .header("x-forwarded-for", format!("6.6.6.{n}, 198.51.100.1"))
    })
    .await;
    assert!((3..8).contains(&created), "{created}");
    assert_eq!(refused.status(), 429);
    let (created, _) = create_until_refused(8, |n| {
        proxy
            .post(format!("{}/create?uuid=b-{n}", server.url))
            .header("forwarded", "for=\"[2001:db8::7]:4711\";proto=http")
    })
    .await;
    assert!(
        (3..8).contains(&created),
        "a second forwarded client: {created}"
    );
    // A peer that is not a trusted proxy is itself, whatever it forwards.
    let (created, refused) = create_until_refused(8, |n| {
        stranger
            .post(format!("{}/create?uuid=c-{n}", server.url))
            .header("x-forwarded-for", format!("203.0.113.{n}"))
            .header("forwarded", format!("for=203.0.114.{n}"))
    })
    .await;
    assert!(
        (3..8).contains(&created),
        "forged headers were believed: {created}"
    );
    assert_eq!(refused.status(), 429);
    server.stop().await;
}

/// With `OWNER_AUTH=required` the HeyGen routes need the owner's token too (query or
/// bearer); calls without it are refused before they use the owner's allowance or
/// stream places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heygen_routes_need_the_owner_token_before_any_allowance_is_used() {
    let mut settings = Settings {
        job_rates: JobRates {
            per_owner: Rate {
                per_second: 1,
                burst: 2,
            },
            per_address: OFF,
            total: OFF,
        },
        owner_tokens: owner_tokens(true),
        ..common::settings()
    };
    settings.stream_caps.per_owner = 1;
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let carol = token("carol");
    for _ in 0..5 {
        let (code, body) = post_text(&server, "/create?uuid=carol", None).await;
        assert_eq!((code, body.as_str()), (401, "unauthorized"));
        let wrong = token("mallory");
        let (code, _) = post_text(&server, "/create?uuid=carol", Some(&wrong)).await;
        assert_eq!(code, 401);
        assert_eq!(server.get_text("/status?uuid=carol").await.0, 401);
    }
    // Carol's allowance (2) and stream place (1) are all hers.
    let (code, id) = post_text(
        &server,
        &format!("/create?uuid=carol&owner_token={carol}"),
        None,
    )
    .await;
    assert_eq!(code, 201);
    let (code, _) = post_text(&server, "/create?uuid=carol", Some(&carol)).await;
    assert_eq!(code, 201);
    assert_eq!(
        server.get_text(&format!("/status/{id}?uuid=carol")).await.0,
        401
    );
    let (code, state) = server
        .get_text(&format!("/status/{id}?uuid=carol&owner_token={carol}"))
        .await;
    assert_eq!((code, state.as_str()), (200, "pending"));
    let stream = server
        .http
        .get(format!("{}/status?uuid=carol", server.url))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    server.stop().await;
}

async fn post_text(server: &TestServer, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut request = server.http.post(format!("{}{path}", server.url));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Opens `count` TCP connections from `127.0.0.<last>` that send nothing.
async fn idle_sockets(server: &TestServer, last: u8, count: usize) -> Vec<tokio::net::TcpStream> {
    let address: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
            .unwrap();
        sockets.push(socket.connect(address).await.unwrap());
    }
    sockets
}

/// Whether the server closes `socket` (end of stream) within 10 s.
async fn closed_by_server(socket: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), socket.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Idle connections past the total cap are closed oldest first, so `/healthz`, `/readyz`
/// and heartbeats keep answering; past the per-address cap a new connection from that
/// address is closed at once, and other addresses are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_idle_ones_make_room() {
    let settings = Settings {
        connection_caps: ConnectionCaps {
            total: 20,
            per_address: 0,
        },
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let mut flood = idle_sockets(&server, 1, 60).await;
    let health = from(2);
    for path in ["/healthz", "/readyz"] {
        let answer = health.get(format!("{}{path}", server.url)).send().await;
        assert_eq!(answer.unwrap().status(), 200, "{path}");
    }
    let token = common::backend_token(7, 1, "LEAST_RECENT");
    let beat = health
        .post(format!("{}/heartbeat", server.url))
        .json(&serde_json::json!({ "heartbeat_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), 200);
    // The oldest idle sockets were closed to make room.
    assert!(closed_by_server(&mut flood[0]).await);
    let metrics = from(3)
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("heartbeat_connections_closed_idle_total 0\n"),
        "closed idle connections are counted"
    );
    drop(flood);
    server.stop().await;

    let settings = Settings {
        connection_caps: ConnectionCaps {
            total: 0,
            per_address: 10,
        },
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let held = idle_sockets(&server, 1, 10).await;
    let mut extra = idle_sockets(&server, 1, 1).await;
    assert!(closed_by_server(&mut extra[0]).await, "the 11th connection");
    let answer = from(2).get(format!("{}/healthz", server.url)).send().await;
    assert_eq!(answer.unwrap().status(), 200);
    drop(held);
    server.stop().await;
}
