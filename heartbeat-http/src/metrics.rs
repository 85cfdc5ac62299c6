//! Prometheus metrics: requests by route and status, latency, heartbeat decisions,
//! refusals by reason, sessions started, store-wide finished and active sessions, open SSE
//! connections and store errors, served as text at `GET /metrics`.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use heartbeat_core::EndReason;
use heartbeat_core::sessions::RejectReason;
use heartbeat_core::sessions::analytics::SessionCounts;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Cow<'static, str>,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Cow<'static, str>,
}

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

/// One route's handles in the per-route families, taken once: a request is counted
/// without building labels or hashing them (the families' own lookups, two per request,
/// cost about 1k instructions).
struct RouteMetrics {
    labels: RouteLabels,
    latency: OnceLock<Histogram>,
    store_errors: OnceLock<Counter>,
    /// `http_requests` by method and status, as they come: a closed set (nine methods
    /// and `other`, the statuses the handlers answer).
    requests: RwLock<Vec<(&'static str, u16, Counter)>>,
}

impl RouteMetrics {
    fn new(route: Cow<'static, str>) -> Self {
        Self {
            labels: RouteLabels { route },
            latency: OnceLock::new(),
            store_errors: OnceLock::new(),
            requests: RwLock::default(),
        }
    }

    fn latency(&self, inner: &Inner) -> &Histogram {
        self.latency
            .get_or_init(|| inner.latency.get_or_create(&self.labels).clone())
    }

    fn store_errors(&self, inner: &Inner) -> &Counter {
        self.store_errors
            .get_or_init(|| inner.store_errors.get_or_create(&self.labels).clone())
    }

    fn requests(&self, inner: &Inner, method: &'static str, status: u16) -> Counter {
        found_or_added(
            &self.requests,
            |counters| {
                counters
                    .iter()
                    .find(|(m, s, _)| *m == method && *s == status)
                    .map(|(_, _, counter)| counter.clone())
                    .ok_or(())
            },
            |counters, ()| {
                let counter = inner
                    .requests
                    .get_or_create(&RequestLabels {
                        route: self.labels.route.clone(),
                        method,
                        status,
                    })
                    .clone();
                counters.push((method, status, counter.clone()));
                counter
            },
        )
    }
}

/// What `find` finds in `list` under its read lock; when it finds nothing, what `add`
/// adds under its write lock (given where `find` then says it belongs), unless another
/// thread added it in between. The lists hold plain handles: a panic elsewhere cannot
/// leave one half-written.
fn found_or_added<T, R, At>(
    list: &RwLock<Vec<T>>,
    find: impl Fn(&[T]) -> Result<R, At>,
    add: impl FnOnce(&mut Vec<T>, At) -> R,
) -> R {
    if let Ok(found) = find(&list.read().unwrap_or_else(PoisonError::into_inner)) {
        return found;
    }
    let mut list = list.write().unwrap_or_else(PoisonError::into_inner);
    match find(&list) {
        Ok(found) => found,
        Err(at) => add(&mut list, at),
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndedLabels {
    ended_by: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabels {
    cap: &'static str,
}

/// Why a job creation was refused, counted from the start (at 0): the rate limits and a
/// full store.
const CREATION_LIMITS: [&str; 4] = ["owner", "address", "total", "store_full"];

/// The connection caps, counted from the start (at 0).
const CONNECTION_CAPS: [&str; 2] = ["total", "address"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// Every heartbeat outcome, counted from the start (at 0).
const DECISIONS: [Decision; 7] = [
    Decision::Accepted,
    Decision::Rejected,
    Decision::InvalidToken,
    Decision::BadRequest,
    Decision::StoreUnavailable,
    Decision::Stopped,
    Decision::Failed,
];

/// The refusal reasons counted from the start (at 0), so that alert rules see them.
const REFUSAL_REASONS: [&str; RejectReason::CODES.len()] = RejectReason::CODES;

/// What a heartbeat request came to, as counted in `heartbeat_heartbeat_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 200.
    Accepted,
    /// 412.
    Rejected,
    /// 406.
    InvalidToken,
    /// 400, 413, 415.
    BadRequest,
    /// 503, or 200 without the store when failing open.
    StoreUnavailable,
    /// `/heartbeat/stop` answered 200.
    Stopped,
    /// 500: the answer could not be made (a token that cannot be sealed).
    Failed,
}

impl Decision {
    /// Its place in [`DECISIONS`].
    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            Decision::Accepted => "accepted",
            Decision::Rejected => "rejected",
            Decision::InvalidToken => "invalid_token",
            Decision::BadRequest => "bad_request",
            Decision::StoreUnavailable => "store_unavailable",
            Decision::Stopped => "stopped",
            Decision::Failed => "failed",
        }
    }
}

/// The server's metrics. Clones share them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// `heartbeat_decisions` by [`Decision`], in the order of [`DECISIONS`].
    decisions: [Counter; DECISIONS.len()],
    sse_connections: Gauge,
    store_errors: Family<RouteLabels, Counter>,
    /// Every route's handles by path, sorted; routes a router did not declare
    /// ([`Metrics::count_routes`]) are added as they are first met.
    routes: RwLock<Vec<(Cow<'static, str>, Arc<RouteMetrics>)>>,
    unmatched: Arc<RouteMetrics>,
    refusals: Family<ReasonLabels, Counter>,
    would_refuse: Family<ReasonLabels, Counter>,
    sessions_started: Counter,
    sessions_ended: Family<EndedLabels, Counter>,
    active_sessions: Gauge,
    event_delivery: Histogram,
    creations_refused: Family<LimitLabels, Counter>,
    connections_open: Gauge,
    connections_refused: Family<CapLabels, Counter>,
    connections_closed_idle: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Shows every route of a router in the store-error count from the start (at 0), so
    /// that a rate over it exists before the first failure. The router records its
    /// routes as it adds them ([`App::router_for`](crate::state::App::router_for)).
    pub fn count_routes(&self, routes: &[&'static str]) {
        for route in routes {
            self.route(route, || Cow::Borrowed(route))
                .store_errors(&self.inner);
        }
    }

    /// The handles of the route at `path`, added with the label `label()` the first time.
    fn route(&self, path: &str, label: impl FnOnce() -> Cow<'static, str>) -> Arc<RouteMetrics> {
        found_or_added(
            &self.inner.routes,
            |routes| {
                routes
                    .binary_search_by(|(route, _)| (**route).cmp(path))
                    .map(|at| routes[at].1.clone())
            },
            |routes, at| {
                let label = label();
                let metrics = Arc::new(RouteMetrics::new(label.clone()));
                routes.insert(at, (label, metrics.clone()));
                metrics
            },
        )
    }

    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("heartbeat");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 50 µs to ~1.6 s.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer, by route",
            latency.clone(),
        );
        let decisions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "heartbeat_decisions",
            "Heartbeat requests by outcome",
            decisions.clone(),
        );
        // Every decision's counter, taken once: counting one is an increment.
        let decision_counters = DECISIONS.map(|decision| {
            decisions
                .get_or_create(&OutcomeLabels {
                    outcome: decision.label(),
                })
                .clone()
        });
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The running build: version and git commit (always 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: crate::config::GIT_COMMIT,
            })
            .set(1);
        let sse_connections = Gauge::default();
        registry.register(
            "sse_connections",
            "Open Server-Sent Events streams",
            sse_connections.clone(),
        );
        let store_errors = Family::<RouteLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Requests that failed because the store failed, by route",
            store_errors.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refusals",
            "Heartbeats this instance refused (412), by reason",
            refusals.clone(),
        );
        for reason in REFUSAL_REASONS {
            drop(refusals.get_or_create(&ReasonLabels { reason }));
        }
        let would_refuse = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "would_refuse",
            "Heartbeats this instance accepted that report-only limits would have refused \
             (SPEC §3.8: enforce false), by reason",
            would_refuse.clone(),
        );
        for reason in RejectReason::LIMIT_CODES {
            drop(would_refuse.get_or_create(&ReasonLabels { reason }));
        }
        let sessions_started = Counter::default();
        registry.register(
            "sessions_started",
            "Sessions this instance started",
            sessions_started.clone(),
        );
        let sessions_ended = Family::<EndedLabels, Counter>::default();
        registry.register(
            "store_sessions_ended",
            "Sessions of all instances sharing the store that finished since this instance \
             started, by how they ended (every instance counts the same sessions: aggregate \
             with max, not sum)",
            sessions_ended.clone(),
        );
        for reason in EndReason::ALL {
            drop(sessions_ended.get_or_create(&EndedLabels {
                ended_by: reason.code(),
            }));
        }
        let active_sessions = Gauge::default();
        registry.register(
            "store_active_sessions",
            "Active sessions of all users in the store (every instance reports the same)",
            active_sessions.clone(),
        );
        // 1 ms to 33 s.
        let event_delivery = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "event_delivery_seconds",
            "Time from a job's change to its event reaching an open stream (SSE); events \
             replayed after a reconnect count from their change too",
            event_delivery.clone(),
        );
        let creations_refused = Family::<LimitLabels, Counter>::default();
        registry.register(
            "job_creations_refused",
            "Job creations refused (429 past a rate limit: owner, address, total; 503 when \
             the store is full: store_full)",
            creations_refused.clone(),
        );
        for limit in CREATION_LIMITS {
            drop(creations_refused.get_or_create(&LimitLabels { limit }));
        }
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Open client connections",
            connections_open.clone(),
        );
        let connections_refused = Family::<CapLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because a cap was reached (total, address)",
            connections_refused.clone(),
        );
        for cap in CONNECTION_CAPS {
            drop(connections_refused.get_or_create(&CapLabels { cap }));
        }
        let connections_closed_idle = Counter::default();
        registry.register(
            "connections_closed_idle",
            "Idle connections closed to make room under the total connection cap",
            connections_closed_idle.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                latency,
                decisions: decision_counters,
                sse_connections,
                store_errors,
                routes: RwLock::default(),
                unmatched: Arc::new(RouteMetrics::new(Cow::Borrowed(UNMATCHED))),
                refusals,
                would_refuse,
                sessions_started,
                sessions_ended,
                active_sessions,
                event_delivery,
                creations_refused,
                connections_open,
                connections_refused,
                connections_closed_idle,
            }),
        }
    }

    /// Counts a heartbeat decision.
    pub fn decision(&self, decision: Decision) {
        self.inner.decisions[decision.index()].inc();
    }

    /// Counts a refused heartbeat under its `reason` (SPEC §3.7).
    pub fn refusal(&self, reason: &'static str) {
        self.inner
            .refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a heartbeat accepted that report-only limits would have refused for
    /// `reason` (SPEC §3.8).
    pub fn would_refuse(&self, reason: &'static str) {
        self.inner
            .would_refuse
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Observes a job event reaching an open stream `lag` after the change it tells of.
    pub fn event_delivered(&self, lag: std::time::Duration) {
        self.inner.event_delivery.observe(lag.as_secs_f64());
    }

    /// Counts a job creation refused by `limit`: `owner`, `address`, `total` (429) or
    /// `store_full` (503).
    pub fn creation_refused(&self, limit: &'static str) {
        self.inner
            .creations_refused
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection(&self) -> GaugeGuard {
        self.inner.connections_open.inc();
        GaugeGuard {
            gauge: self.inner.connections_open.clone(),
        }
    }

    /// Counts a connection closed at once under `cap` (`total` or `address`).
    pub fn connection_refused(&self, cap: &'static str) {
        self.inner
            .connections_refused
            .get_or_create(&CapLabels { cap })
            .inc();
    }

    /// Counts an idle connection closed to make room.
    pub fn connection_closed_idle(&self) {
        self.inner.connections_closed_idle.inc();
    }

    /// Counts a session this instance started.
    pub fn session_started(&self) {
        self.inner.sessions_started.inc();
    }

    /// Takes a store-wide report of finished and active sessions.
    pub fn session_counts(&self, counts: &SessionCounts) {
        for reason in &counts.ended {
            self.inner
                .sessions_ended
                .get_or_create(&EndedLabels {
                    ended_by: reason.code(),
                })
                .inc();
        }
        self.inner
            .active_sessions
            .set(i64::try_from(counts.active).unwrap_or(i64::MAX));
    }

    /// Counts an SSE stream as open until the guard is dropped.
    pub fn sse_connection(&self) -> GaugeGuard {
        self.inner.sse_connections.inc();
        GaugeGuard {
            gauge: self.inner.sse_connections.clone(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }
}

/// Marks a response whose request met a store failure (a 503, or a heartbeat answered 200
/// while failing open): [`TrackLayer`] counts it in `heartbeat_store_errors_total` under the
/// matched route. [`ApiError`](crate::ApiError) and [`TextError`](crate::TextError) add it
/// to every 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFailed;

/// Keeps an SSE stream (`heartbeat_sse_connections`) or a connection
/// (`heartbeat_connections_open`) counted while it lives.
#[derive(Debug)]
pub struct GaugeGuard {
    gauge: Gauge,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Middleware: counts every request by matched route, method and status, its latency, and
/// the store failures its response is marked with ([`StoreFailed`]).
///
/// A plain tower layer (no boxed future per request, unlike `axum::middleware::from_fn`);
/// it must sit inside the router (`Router::layer`) to see the matched route.
#[derive(Debug, Clone)]
pub struct TrackLayer {
    metrics: Metrics,
}

impl TrackLayer {
    /// Counts into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`TrackLayer`].
#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = match request.extensions().get::<MatchedPath>() {
            Some(path) => self
                .metrics
                .route(path.as_str(), || Cow::Owned(path.as_str().to_owned())),
            None => self.metrics.inner.unmatched.clone(),
        };
        let method = method_label(request.method());
        TrackFuture {
            inner: self.inner.call(request),
            labels: Some((route, method)),
            metrics: self.metrics.clone(),
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Track`].
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        labels: Option<(Arc<RouteMetrics>, &'static str)>,
        metrics: Metrics,
        started: Instant,
    }
}

impl<F, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some((route, method))) = (&result, this.labels.take()) {
            let inner = &this.metrics.inner;
            if response.extensions().get::<StoreFailed>().is_some() {
                route.store_errors(inner).inc();
            }
            route
                .latency(inner)
                .observe(this.started.elapsed().as_secs_f64());
            route
                .requests(inner, method, response.status().as_u16())
                .inc();
        }
        Poll::Ready(result)
    }
}

/// The method as a label: one of the nine standard methods, or `other`. A closed set: a
/// client inventing methods (`curl -X ZZQABCDEFG`) cannot add label values.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    STANDARD
        .iter()
        .find(|name| **name == method.as_str())
        .map_or("other", |name| name)
}

/// `GET /metrics`.
pub async fn render(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_is_counted_in_its_own_place() {
        for (at, decision) in DECISIONS.into_iter().enumerate() {
            assert_eq!(decision.index(), at, "{decision:?}");
        }
    }

    #[test]
    fn standard_methods_are_labelled_as_they_are_and_others_as_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let purge = Method::from_bytes(b"PURGE").unwrap_or(Method::GET);
        assert_eq!(method_label(&purge), "other");
    }
}
