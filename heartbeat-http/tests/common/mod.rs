//! A real server on 127.0.0.1 (an ephemeral port) over each store, and a real HTTP client.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore, MemorySessionStore};
use heartbeat_core::{HeartbeatData, TokenCodec};
use heartbeat_http::{Settings, server};
use heartbeat_store_redis::testkit::RedisServer;
use heartbeat_store_redis::{RedisConfig, RedisStore};
use heartbeat_store_sled::{SledConfig, SledStore};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SHARED_KEY: &str = "integration shared key";
pub const ADMIN_KEY: &str = "integration-admin-key-0123456789";

/// Which store a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Sled,
    Redis,
}

/// What keeps a store's backing alive for the length of a test.
pub enum Backing {
    None,
    Dir(tempfile::TempDir),
    Redis(RedisServer),
}

pub fn codec() -> TokenCodec {
    TokenCodec::new(SHARED_KEY).unwrap()
}

pub fn settings() -> Settings {
    Settings {
        admin_key: Some(ADMIN_KEY.to_owned()),
        job_time: Some(Duration::from_millis(300)),
        sse_keepalive: Duration::from_secs(1),
        ..Settings::default()
    }
}

/// A running server.
pub struct TestServer {
    pub url: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A client of a server running elsewhere (another process).
    pub fn at(url: String) -> Self {
        Self {
            url,
            http: reqwest::Client::new(),
            stop: None,
            task: None,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("graceful shutdown finishes")
                .unwrap();
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn heartbeat(&self, token: &str) -> (u16, Value) {
        let response = self
            .post_json("/heartbeat", &json!({ "heartbeat_token": token }))
            .await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `app` on a fresh loopback port.
pub async fn serve(app: heartbeat_http::App) -> TestServer {
    serve_on(app, 0).await
}

/// Serves `router` (built from `app`) on a fresh loopback port.
pub async fn serve_router(app: heartbeat_http::App, router: axum::Router) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve_router(app, router, listener, async move {
        let _ = stopped.await;
    }));
    TestServer {
        url,
        http: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
    }
}

/// Serves `app` on loopback `port` (0: a fresh one).
pub async fn serve_on(app: heartbeat_http::App, port: u16) -> TestServer {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(app, listener, async move {
        let _ = stopped.await;
    }));
    TestServer {
        url,
        http: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
    }
}

/// A client of the Redis (server, cluster or Sentinel group) at `url`.
pub async fn redis_store(url: &str) -> RedisStore {
    let mut config = RedisConfig::new(url);
    config.namespace = "http-test:".into();
    config.command_timeout = Duration::from_millis(300);
    RedisStore::connect(config).await.unwrap()
}

/// A server over a fresh store of `kind`, with `settings`.
pub async fn start_with(kind: Kind, settings: Settings) -> (TestServer, Backing) {
    start_on_clock(kind, settings, heartbeat_core::SystemClock).await
}

/// As [`start_with`], reading time from `clock` (a test moves a `ManualClock`).
pub async fn start_on_clock<C: heartbeat_core::Clock + Clone>(
    kind: Kind,
    settings: Settings,
    clock: C,
) -> (TestServer, Backing) {
    match kind {
        Kind::Memory => {
            let app = server::app_with_clock(
                codec(),
                MemorySessionStore::new(),
                MemoryJobStore::new(),
                MemoryEventBus::new(),
                settings,
                clock,
            );
            (serve(app).await, Backing::None)
        }
        Kind::Sled => {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(SledConfig::new(dir.path().join("db"))).unwrap();
            (
                serve_one_store(store, settings, clock, codec()).await,
                Backing::Dir(dir),
            )
        }
        Kind::Redis => {
            let redis = RedisServer::start();
            let store = redis_store(&redis.url()).await;
            (
                serve_one_store(store, settings, clock, codec()).await,
                Backing::Redis(redis),
            )
        }
    }
}

/// A server over a new client of the Redis at `url` on `clock`: one more instance of a
/// deployment sharing that Redis.
pub async fn redis_instance<C: heartbeat_core::Clock + Clone>(
    url: &str,
    settings: Settings,
    clock: C,
) -> TestServer {
    serve_one_store(redis_store(url).await, settings, clock, codec()).await
}

/// An instance on the Redis at `url` that issues tokens in `format` (`TOKEN_FORMAT`).
pub async fn redis_instance_issuing<C: heartbeat_core::Clock + Clone>(
    url: &str,
    clock: C,
    format: heartbeat_core::TokenFormat,
) -> TestServer {
    serve_one_store(
        redis_store(url).await,
        settings(),
        clock,
        codec().issuing(format),
    )
    .await
}

/// Serves a store that keeps sessions, jobs and events alike (sled, Redis).
async fn serve_one_store<T, C>(
    store: T,
    settings: Settings,
    clock: C,
    codec: TokenCodec,
) -> TestServer
where
    T: heartbeat_core::SessionStore
        + heartbeat_core::jobs::JobStore
        + heartbeat_core::jobs::EventBus
        + Clone,
    C: heartbeat_core::Clock + Clone,
{
    let app = server::app_with_clock(codec, store.clone(), store.clone(), store, settings, clock);
    serve(app).await
}

pub async fn start(kind: Kind) -> (TestServer, Backing) {
    start_with(kind, settings()).await
}

/// A backend token for a new playback of `user`.
pub fn backend_token(user: i64, limit: u32, strategy: &str) -> String {
    seal(json!({
        "user_id": user, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
        "reject_strategy": strategy, "timestamp": heartbeat_core::Timestamp::now().to_string(),
        "session_limit": limit, "checking_threshold": 1, "sessions_edge": 50,
    }))
}

/// Generates one test per store from `async fn name(kind: Kind)`.
#[macro_export]
macro_rules! for_each_store {
    ($($test:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::Kind::Memory).await;
                }
            )+
        }
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::Kind::Sled).await;
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::Kind::Redis).await;
                }
            )+
        }
    };
}

/// An open SSE stream read with `eventsource-stream`.
pub struct Sse {
    events: std::pin::Pin<Box<dyn futures_util::Stream<Item = eventsource_stream::Event> + Send>>,
}

/// How long a test waits for an event that must come.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

impl Sse {
    /// Opens `path` with an optional `Last-Event-ID`.
    pub async fn open(server: &TestServer, path: &str, last_event_id: Option<&str>) -> Sse {
        let request = server.http.get(format!("{}{path}", server.url));
        Self::request(request, path, last_event_id).await
    }

    /// Opens an admin stream (`Authorization: Bearer ADMIN_KEY`).
    pub async fn open_admin(server: &TestServer, path: &str, last_event_id: Option<&str>) -> Sse {
        let request = server
            .http
            .get(format!("{}{path}", server.url))
            .bearer_auth(ADMIN_KEY);
        Self::request(request, path, last_event_id).await
    }

    /// Opens a stream with a request built by the test (headers of its own).
    pub async fn from_request(request: reqwest::RequestBuilder) -> Sse {
        Self::request(request, "the stream", None).await
    }

    async fn request(
        mut request: reqwest::RequestBuilder,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Sse {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let events = response
            .bytes_stream()
            .eventsource()
            .take_while(|event| std::future::ready(event.is_ok()))
            // The greeting carries only `retry:`; keep-alives are comments.
            .filter_map(|event| {
                std::future::ready(event.ok().filter(|event| !event.data.is_empty()))
            });
        Sse {
            events: Box::pin(events),
        }
    }

    /// The next event; panics if none comes within [`EVENT_WAIT`].
    pub async fn next(&mut self) -> eventsource_stream::Event {
        use futures_util::StreamExt;
        tokio::time::timeout(EVENT_WAIT, self.events.next())
            .await
            .expect("an event within the wait")
            .expect("the stream is open")
    }

    /// `None` when no event comes within `wait`; the event otherwise.
    pub async fn next_within(&mut self, wait: Duration) -> Option<eventsource_stream::Event> {
        use futures_util::StreamExt;
        tokio::time::timeout(wait, self.events.next())
            .await
            .ok()
            .flatten()
    }

    /// True when the server ended the stream within [`EVENT_WAIT`].
    pub async fn ends(&mut self) -> bool {
        use futures_util::StreamExt;
        matches!(
            tokio::time::timeout(EVENT_WAIT, self.events.next()).await,
            Ok(None)
        )
    }
}

/// A token sealed with the tests' shared key over heartbeat data given as JSON.
pub fn seal(data: Value) -> String {
    codec()
        .seal(&HeartbeatData::from_json(data).unwrap())
        .unwrap()
}
