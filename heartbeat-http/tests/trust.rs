//! Trust (SPEC §3.3): a forged legacy token gains none of the powers of an authenticated
//! session on any store; backends mint authenticated `b1.` tokens with Node's and Python's
//! own crypto (the snippets in `clients/backend/`, run here against the server); and
//! `ISSUER_KEY` may mint tokens and nothing else.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ADMIN_KEY, Kind, SHARED_KEY, TestServer, codec};
use heartbeat_core::{Clock, HeartbeatData, ManualClock, Provenance, Timestamp, TokenFormat};
use serde_json::{Value, json};

fn data(user: i64, device: &str, at: Timestamp) -> Value {
    json!({
        "user_id": user, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "reject_strategy": "MOST_RECENT", "timestamp": at.to_string(),
        "session_limit": 1, "checking_threshold": 1, "sessions_edge": 10, "device": device,
    })
}

fn seal(format: TokenFormat, data: &Value) -> String {
    let data = HeartbeatData::from_json(data.clone()).unwrap();
    codec().issuing(format).seal(&data).unwrap()
}

async fn play(server: &TestServer, clock: &ManualClock, token: &str) -> String {
    let (status, body) = server.heartbeat(token).await;
    assert_eq!(status, 200, "{body}");
    clock.advance(Duration::from_millis(10));
    body["heartbeat_token"].as_str().unwrap().to_owned()
}

async fn take_over(server: &TestServer, token: &str, session: &str) -> (u16, Value) {
    let response = server
        .post_json(
            "/heartbeat/takeover",
            &json!({ "heartbeat_token": token, "session_id": session }),
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The laundering reproduction of issue 24, step by step: a legacy token forged into the
/// victim's user is answered 200 with a `v2.` token, and that token still lists nothing,
/// takes nothing over and opens no notice stream; the victim plays on.
async fn a_forged_legacy_token_gains_nothing(kind: Kind) {
    let clock = ManualClock::new(Timestamp::now());
    let (server, _backing) = common::start_on_clock(kind, common::settings(), clock.clone()).await;
    let tv = play(
        &server,
        &clock,
        &seal(
            TokenFormat::Sealed,
            &data(40, "Living-room TV", clock.now()),
        ),
    )
    .await;
    let tv_session = codec().open(&tv).unwrap().session_id.unwrap();
    let forged = seal(TokenFormat::Legacy, &data(40, "Attacker", clock.now()));
    let laundered = play(&server, &clock, &forged).await;
    assert!(
        laundered.starts_with("v2."),
        "answered in v2: {laundered:.10}"
    );
    assert_eq!(
        codec().open(&laundered).unwrap().provenance,
        Provenance::Legacy
    );
    clock.advance(Duration::from_secs(30));

    let (status, body) = server.heartbeat(&laundered).await;
    assert_eq!((status, &body["reason"]), (412, &json!("over_limit")));
    assert_eq!(
        body.get("sessions"),
        None,
        "the victim's devices leak: {body}"
    );
    let (status, _) = take_over(&server, &laundered, &tv_session).await;
    assert_eq!(status, 406, "a laundered token took over");
    let response = server
        .http
        .get(format!(
            "{}/heartbeat/events?heartbeat_token={laundered}",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        406,
        "a laundered token opened the notices"
    );
    let (status, _) = server.heartbeat(&tv).await;
    assert_eq!(status, 200, "the victim plays on");
    server.stop().await;
}

for_each_store!(a_forged_legacy_token_gains_nothing);

/// Runs a minting snippet with `SHARED_KEY`, the JSON on stdin; its token on stdout.
fn mint(program: &str, script: &str, args: &[&str], plaintext: &str) -> String {
    let path = format!("{}/../clients/backend/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(program)
        .arg(&path)
        .args(args)
        .env("SHARED_KEY", SHARED_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run `{program}` ({error}): install Node.js 20 and Python 3 with \
                 `cryptography` (scripts/test does), then run the tests again"
            )
        });
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plaintext.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{program} {script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The snippets reproduce the test vectors byte for byte (with the vectors' nonces).
#[test]
fn the_node_and_python_snippets_reproduce_the_vectors() {
    let vectors: Value = serde_json::from_str(include_str!(
        "../../heartbeat-core/tests/vectors/backend-tokens.json"
    ))
    .unwrap();
    for vector in vectors["tokens"].as_array().unwrap() {
        for (program, script) in [("node", "mint.mjs"), ("python3", "mint.py")] {
            let path = format!("{}/../clients/backend/{script}", env!("CARGO_MANIFEST_DIR"));
            let mut child = Command::new(program)
                .arg(&path)
                .args(["--nonce", vector["nonce_hex"].as_str().unwrap()])
                .env("SHARED_KEY", vector["shared_key"].as_str().unwrap())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(vector["plaintext"].as_str().unwrap().as_bytes())
                .unwrap();
            let output = child.wait_with_output().unwrap();
            assert_eq!(
                String::from_utf8(output.stdout).unwrap().trim(),
                vector["token"].as_str().unwrap(),
                "{program} {script}"
            );
        }
    }
}

/// The `v3.` vectors are what `tools/vectors/v3_tokens.py` makes (Python's `cryptography`
/// and a postcard encoder written from docs/spec.md), byte for byte: the independent
/// implementation is run, not only trusted to have been run once.
#[test]
fn the_v3_vectors_are_what_the_python_script_makes() {
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(format!("{root}/tools/vectors/v3_tokens.py"))
        .output()
        .unwrap_or_else(|error| panic!("python3 (with `cryptography`) is needed: {error}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let made: Value = serde_json::from_slice(&output.stdout).unwrap();
    let committed: Value = serde_json::from_str(include_str!(
        "../../heartbeat-core/tests/vectors/v3-tokens.json"
    ))
    .unwrap();
    assert_eq!(made, committed);
}

/// Tokens minted by Node's `node:crypto` and Python's `cryptography` play, are listed to
/// the user's other device and take over: they begin authenticated sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_minted_in_node_and_python_play_list_and_take_over() {
    let clock = ManualClock::new(Timestamp::now());
    let (server, _backing) =
        common::start_on_clock(Kind::Memory, common::settings(), clock.clone()).await;
    let node = mint(
        "node",
        "mint.mjs",
        &[],
        &data(41, "Node TV", clock.now()).to_string(),
    );
    assert!(node.starts_with("b1."), "{node}");
    let node = play(&server, &clock, &node).await;
    let node_session = codec().open(&node).unwrap().session_id.unwrap();
    let python = mint(
        "python3",
        "mint.py",
        &[],
        &data(41, "Python phone", clock.now()).to_string(),
    );
    let python = play(&server, &clock, &python).await;
    clock.advance(Duration::from_secs(30));

    let (status, body) = server.heartbeat(&python).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["sessions"][0]["device"], json!("Node TV"));
    let (status, body) = take_over(&server, &python, &node_session).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.heartbeat(&node).await;
    assert_eq!((status, &body["reason"]), (412, &json!("taken_over")));
    server.stop().await;
}

/// `ISSUER_KEY` mints tokens (`POST /admin/tokens`) and may do nothing else; a missing
/// field is a 400 that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_key_may_only_mint_tokens() {
    const ISSUER_KEY: &str = "integration-issuer-key-0123456789";
    let settings = heartbeat_http::Settings {
        issuer_key: Some(ISSUER_KEY.to_owned()),
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let post = |key: &'static str, body: Value| {
        server
            .http
            .post(format!("{}/admin/tokens", server.url))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let response = post(ISSUER_KEY, data(42, "TV", Timestamp::now()))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let token = body["heartbeat_token"].as_str().unwrap();
    assert_eq!(server.heartbeat(token).await.0, 200);

    let response = post(
        ISSUER_KEY,
        json!({"user_id": 1, "asset_id": 2, "heartbeat_cycle": 30}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    error_says(&body, "cycle_upper_tolerance");
    for path in ["/admin/users/42/sessions", "/admin/users/42/history"] {
        let response = server
            .http
            .get(format!("{}{path}", server.url))
            .bearer_auth(ISSUER_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let response = post(ADMIN_KEY, data(43, "TV", Timestamp::now()))
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "the admin key mints too");
    let response = post(
        "integration-wrong-key-0123456789",
        data(43, "TV", Timestamp::now()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 401);
    server.stop().await;
}

/// Metric labels come from a closed set (SPEC §4): invented methods are all `other`, so
/// no client can grow `/metrics` by sending them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_add_no_metric_labels() {
    let (server, _backing) = common::start(Kind::Memory).await;
    for n in 0..50 {
        let method = reqwest::Method::from_bytes(format!("ZZQ{n}ABC").as_bytes()).unwrap();
        let response = server
            .http
            .request(method, format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let (status, metrics) = server.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        !metrics.contains("ZZQ"),
        "an invented method became a label"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    server.stop().await;
}

/// One user-id rule: `/admin/users/013/…` addresses the keys a token with user id "013"
/// uses, as the Node server keys them; `/admin/users/13/…` is another user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_address_the_user_ids_tokens_use() {
    let (server, _backing) = common::start(Kind::Memory).await;
    let mut token = data(0, "TV", Timestamp::now());
    token["user_id"] = json!("013");
    let (status, _) = server.heartbeat(&seal(TokenFormat::Sealed, &token)).await;
    assert_eq!(status, 200);
    for (path, expected) in [("013", 1), ("13", 0), ("+13", 0)] {
        let (status, body) = server
            .admin(
                reqwest::Method::GET,
                &format!("/admin/users/{path}/sessions"),
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            body["sessions"].as_array().unwrap().len(),
            expected,
            "{path}"
        );
    }
    server.stop().await;
}

/// Asserts that an `{"error": …}` body says `what`.
fn error_says(body: &Value, what: &str) {
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(what), "{body}");
}

/// A stream refused by the cap whose message contains `cap`.
async fn refused(response: reqwest::Response, cap: &str) {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.unwrap();
    error_says(&body, cap);
}

/// The stream caps (SPEC §4): per owner, per client address and in total, each refused
/// with 503 + `Retry-After` and a message naming the cap, while health, readiness and
/// heartbeats keep answering; a closed stream frees its place, and a stream ends by
/// itself after its lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_and_the_rest_keeps_answering() {
    use common::Sse;
    let settings = heartbeat_http::Settings {
        stream_caps: heartbeat_http::streams::StreamCaps {
            total: 5,
            per_address: 3,
            per_owner: 2,
            max_lifetime: Duration::from_secs(2),
        },
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let (one, two, three) = (from(1), from(2), from(3));
    let open = |client: &reqwest::Client, owner: &str| {
        client
            .get(format!("{}/v1/events?uuid={owner}", server.url))
            .send()
    };

    let alice_1 = Sse::from_request(one.get(format!("{}/v1/events?uuid=alice", server.url))).await;
    let _alice_2 = Sse::from_request(one.get(format!("{}/v1/events?uuid=alice", server.url))).await;
    refused(open(&two, "alice").await.unwrap(), "for this owner").await;
    let _bob = Sse::from_request(one.get(format!("{}/v1/events?uuid=bob", server.url))).await;
    refused(open(&one, "carol").await.unwrap(), "from this address").await;
    let _carol = Sse::from_request(two.get(format!("{}/v1/events?uuid=carol", server.url))).await;
    let _dave = Sse::from_request(two.get(format!("{}/v1/events?uuid=dave", server.url))).await;
    refused(open(&three, "erin").await.unwrap(), "as it allows").await;
    refused(
        three
            .get(format!("{}/status?uuid=erin", server.url))
            .send()
            .await
            .unwrap(),
        "as it allows",
    )
    .await;

    // Everything but new streams answers.
    assert_eq!(server.get_text("/healthz").await.0, 200);
    assert_eq!(server.get_text("/readyz").await.0, 200);
    let token = seal(TokenFormat::Sealed, &data(44, "TV", Timestamp::now()));
    assert_eq!(server.heartbeat(&token).await.0, 200);

    // A closed stream frees its place.
    drop(alice_1);
    let mut erin = None;
    for _ in 0..50 {
        let response = open(&three, "erin").await.unwrap();
        if response.status() == 200 {
            erin = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(erin.is_some(), "the closed stream's place was not freed");

    // Every stream ends by itself after its lifetime (2 s here), and frees its place.
    let erin = erin.unwrap();
    let started = std::time::Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(10), erin.bytes())
        .await
        .expect("the stream outlived its lifetime")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&body).contains("connected"));
    let mut reopened = false;
    for _ in 0..50 {
        if open(&three, "frank").await.unwrap().status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "the ended stream's place was not freed");
    server.stop().await;
}

/// Job creation is rate-limited per owner (SPEC §4): past the burst a new job gets 429
/// with `Retry-After`, as text on the HeyGen route and JSON on `/v1`; other owners are
/// not affected and nothing is stored for a refused creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_creation_is_rate_limited_per_owner() {
    let settings = heartbeat_http::Settings {
        job_rates: heartbeat_http::rate::JobRates {
            per_owner: heartbeat_http::rate::Rate {
                per_second: 1,
                burst: 3,
            },
            ..Default::default()
        },
        ..common::settings()
    };
    let (server, _backing) = common::start_with(Kind::Memory, settings).await;
    let create = |path: &'static str, owner: &'static str| {
        server
            .http
            .post(format!("{}{path}?uuid={owner}", server.url))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(create("/create", "alice").await.unwrap().status(), 201);
    }
    let refused = create("/create", "alice").await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(refused.text().await.unwrap(), "too many jobs: retry later");
    let refused = create("/v1/jobs", "alice").await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    error_says(&body, "faster than allowed");
    assert_eq!(create("/v1/jobs", "bob").await.unwrap().status(), 201);
    let (status, listed) = server.get_text("/v1/jobs?uuid=alice").await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        3,
        "refused jobs were stored"
    );
    server.stop().await;
}
