//! The router: every route, on which listener, and its middleware; nothing else.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::CorsOrigins;
use crate::metrics;
use crate::request_id::{RequestIdLayer, X_REQUEST_ID};
use crate::routes::{admin, analytics, health, heartbeat, heygen, jobs};
use crate::state::App;

/// A router being built, with the path of every route added to it.
#[derive(Default)]
struct Routes {
    router: Router<App>,
    paths: Vec<&'static str>,
}

impl Routes {
    /// Adds the route and records its path.
    fn add(&mut self, path: &'static str, handlers: axum::routing::MethodRouter<App>) -> &mut Self {
        self.router = std::mem::take(&mut self.router).route(path, handlers);
        self.paths.push(path);
        self
    }
}

/// Which routes a listener serves ([`App::router_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Every route (one listener).
    All,
    /// Players, jobs and health: the public port when `ADMIN_ADDR` is set.
    Public,
    /// `/admin/*`, `/metrics` and health: the `ADMIN_ADDR` listener.
    Admin,
}

impl App {
    /// The router serving every route of SPEC §3, §4 and §6.
    pub fn router(&self) -> Router {
        self.router_for(Surface::All)
    }

    /// The router of one listener: every route, the public ones (players, jobs, health),
    /// or the operator's (`/admin/*`, `/metrics`, health) for `ADMIN_ADDR`. Routes of the
    /// other surface answer 404.
    pub fn router_for(&self, surface: Surface) -> Router {
        let metrics = self.metrics().clone();
        let request_timeout = self.settings().request_timeout;
        let (public, operator) = (surface != Surface::Admin, surface != Surface::Public);
        // Every route is added through `routes.add`, which also records its path: the
        // metrics count store errors for exactly these routes (at 0 from the start).
        let mut routes = Routes::default();
        routes
            .add("/healthz", get(health::healthz))
            .add("/healthcheck", get(health::healthz))
            .add("/readyz", get(health::readyz));
        if public {
            routes
                .add("/", post(heartbeat::heartbeat))
                .add("/heartbeat", post(heartbeat::heartbeat))
                .add("/heartbeat/stop", post(heartbeat::stop))
                .add("/heartbeat/takeover", post(heartbeat::takeover))
                .add("/create", post(heygen::create))
                .add("/status/{id}", get(heygen::status))
                .add("/v1/jobs", post(jobs::create).get(jobs::list))
                .add("/v1/jobs/{id}", get(jobs::get).patch(jobs::update));
        }
        if operator {
            routes
                .add("/admin/tokens", post(admin::issue_token))
                .add("/admin/users/{user}/sessions", get(admin::sessions))
                .add(
                    "/admin/users/{user}/sessions/{session}",
                    delete(admin::evict),
                )
                .add("/admin/users/{user}/progress/{asset}", get(admin::progress))
                .add("/admin/users/{user}/history", get(admin::history));
        }
        if public {
            routes
                .add("/heartbeat/events", get(heartbeat::events))
                .add("/status", get(heygen::events))
                .add("/v1/events", get(jobs::events));
        }
        if operator {
            routes
                .add("/admin/history", get(analytics::export))
                .add("/admin/refusals", get(analytics::refusals))
                .add("/admin/history/events", get(analytics::events));
        }
        metrics.count_routes(&routes.paths);
        let routes = routes
            .router
            .method_not_allowed_fallback(health::method_not_allowed)
            .fallback(health::not_found)
            .with_state(self.clone());
        // Every `Router::layer` call wraps each route in one more boxed service (a clone
        // of the box and a boxed future per request), so the whole stack goes in with one
        // call. Outermost first.
        let middleware = ServiceBuilder::new()
            .layer(RequestIdLayer)
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
                        let id = request
                            .headers()
                            .get(&X_REQUEST_ID)
                            .and_then(|id| id.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
                    })
                    // The access log: one line per answer, at info with ACCESS_LOG.
                    .on_response(
                        DefaultOnResponse::new()
                            .level(if self.settings().access_log {
                                Level::INFO
                            } else {
                                Level::DEBUG
                            })
                            .latency_unit(LatencyUnit::Micros),
                    )
                    // A failure is logged once, where it happens (the handler knows why).
                    .on_failure(()),
            )
            // Before CORS: the preflights CORS answers itself are counted too.
            .layer(metrics::TrackLayer::new(metrics.clone()))
            .option_layer(self.settings().cors.as_ref().map(cors_layer))
            // A request must be answered within REQUEST_TIMEOUT (408): its answer's head,
            // so that a stream (SSE, an export) lives as long as its client stays.
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                request_timeout,
            ));
        // BODY_LIMIT is enforced where bodies are read, `extract::body::LimitedBody`, the
        // only reader of request bodies: axum's `DefaultBodyLimit` layer, which sets the
        // limit of axum's own body extractors, cost an extension per request for nothing.
        let metrics_route = Router::new().route("/metrics", get(metrics::render));
        let metrics_route = if operator {
            metrics_route
        } else {
            Router::new()
        };
        metrics_route
            .with_state(metrics)
            .merge(routes)
            .layer(middleware)
    }
}

/// CORS for browsers on the allowed origins (SPEC §4): preflights answered for every
/// route, `Last-Event-ID` and `Authorization` allowed, answers (SSE streams included)
/// carrying the headers.
fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(origins) => {
            let allowed: Vec<HeaderValue> = origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect();
            let refused = RefusedOrigins::default();
            AllowOrigin::predicate(move |origin, _| {
                let allowed = allowed.contains(origin);
                if !allowed {
                    refused.note(origin);
                }
                allowed
            })
        }
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("last-event-id"),
            X_REQUEST_ID,
        ])
        .expose_headers([X_REQUEST_ID, header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(3600))
}

/// The origins CORS refused, each logged once: a browser shows a refused origin only as a
/// network error, so the server's log is where a wrong `CORS_ORIGINS` shows. Bounded:
/// past [`RefusedOrigins::MAX`] distinct origins (forged `Origin` headers) no more are
/// logged.
#[derive(Debug, Clone, Default)]
struct RefusedOrigins(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl RefusedOrigins {
    const MAX: usize = 100;

    fn note(&self, origin: &axum::http::HeaderValue) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() < Self::MAX && seen.insert(origin.clone()) {
            tracing::warn!(
                %origin,
                "CORS refused a request from an origin CORS_ORIGINS does not list (browsers \
                 report it as a network error); add it to CORS_ORIGINS if it is yours \
                 (logged once per origin)"
            );
        }
    }
}

/// The fixed paths of the Node server and the HeyGen mock, which Express matches in any
/// case.
const CASE_INSENSITIVE_PATHS: [&str; 5] = [
    "/heartbeat",
    "/heartbeat/stop",
    "/healthcheck",
    "/create",
    "/status",
];

/// Matches paths as Express does for the routes the Node server and the HeyGen mock had
/// (SPEC §3.5): a trailing slash is ignored (`/heartbeat/`), and their fixed paths match in
/// any case (`/Heartbeat`). Ids in other paths keep their case. The server applies it
/// before routing; an application serving [`App::router`] itself can too.
///
/// ```
/// use axum::http::Request;
/// use heartbeat_http::router::normalize_path;
///
/// let request = normalize_path(Request::post("/Heartbeat/Stop/?x=1").body(()).unwrap());
/// assert_eq!(request.uri(), "/heartbeat/stop?x=1");
/// let request = normalize_path(Request::get("/admin/users/Ann/history/").body(()).unwrap());
/// assert_eq!(request.uri(), "/admin/users/Ann/history");
/// ```
pub fn normalize_path<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let path = request.uri().path();
    // The common case, checked without allocating: nothing to change.
    if (path == "/" || !path.ends_with('/')) && !path.bytes().any(|b| b.is_ascii_uppercase()) {
        return request;
    }
    let trimmed = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    let lower = trimmed.to_ascii_lowercase();
    let canonical = match CASE_INSENSITIVE_PATHS.iter().find(|known| **known == lower) {
        Some(known) => *known,
        None => trimmed,
    };
    if canonical == path {
        return request;
    }
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{canonical}?{query}"),
        None => canonical.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(path_and_query) = path_and_query.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}
