//! Error answers: JSON `{"error": "..."}` everywhere, plain text on the HeyGen routes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use heartbeat_core::StoreError;
use heartbeat_core::jobs::JobsError;

use crate::metrics::StoreFailed;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// An error answered as JSON `{"error": message}`, plus `details` when there are some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// What went wrong, for the client.
    pub message: String,
    /// More fields of the body (e.g. `reason` and `field`), after `error`.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            details: serde_json::Map::new(),
        }
    }

    /// The same error with one more field in its body.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 for a query string that cannot be read: the one text every route gives.
    pub fn bad_query(rejection: &axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request(query_error(rejection))
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 503 with `Retry-After`, logging the store's error. Counted as a store failure of
    /// the route.
    pub fn unavailable(error: &StoreError) -> Self {
        tracing::warn!(%error, "store unavailable");
        Self::outage()
    }

    /// 401 for a `/v1` request whose owner token is missing or wrong (it says nothing of
    /// the owner).
    pub fn unauthorized_owner() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Missing or wrong owner token (Authorization: Bearer owner.…, or ?owner_token=).",
        )
    }

    /// 503 with `Retry-After`, the cause already logged. Counted as a store failure of the
    /// route.
    pub fn outage() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Storage is unavailable; retry shortly.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::with_capacity(1 + self.details.len());
        body.insert("error".to_owned(), self.message.into());
        body.extend(self.details);
        let mut response = (self.status, axum::Json(body)).into_response();
        mark_outage(&mut response);
        response
    }
}

/// A store that cannot be reached: 503 with `Retry-After`, the error logged.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::unavailable(&error)
    }
}

/// What is wrong with a query string, as every route says it (JSON and text answers).
pub fn query_error(rejection: &axum::extract::rejection::QueryRejection) -> String {
    format!("Invalid query: {}.", rejection.body_text())
}

/// A 503 tells the client when to retry and is counted as a store failure.
fn mark_outage(response: &mut Response) {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        response.extensions_mut().insert(StoreFailed);
    }
}

/// An error answered as plain text, as the HeyGen mock answers (`error`, `unauthorized`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// The status code.
    pub status: StatusCode,
    /// The body.
    pub body: String,
}

impl TextError {
    /// An error with `status` and text `body`.
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
}

impl IntoResponse for TextError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        mark_outage(&mut response);
        response
    }
}

/// Logs a store or event bus failure (the 503 answer counts it).
fn outage(error: &JobsError) {
    tracing::warn!(%error, "storage unavailable");
}

/// A jobs failure as the HeyGen mock answers it (plain text).
impl From<JobsError> for TextError {
    fn from(error: JobsError) -> Self {
        match error {
            JobsError::NotFound(_) => TextError::new(StatusCode::NOT_FOUND, "error"),
            JobsError::Forbidden(_) => TextError::new(StatusCode::UNAUTHORIZED, "unauthorized"),
            JobsError::Rule(rule) => TextError::new(StatusCode::BAD_REQUEST, rule.to_string()),
            JobsError::Store(error @ StoreError::Full { .. }) => {
                tracing::warn!(%error, "job creation refused");
                TextError::new(StatusCode::SERVICE_UNAVAILABLE, "storage full: retry later")
            }
            error @ (JobsError::Store(_) | JobsError::Bus(_)) => {
                outage(&error);
                TextError::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
            }
            other => TextError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

/// A jobs failure as the `/v1` API answers it: 404, 403, 409, 400 or 503 (the store is
/// unavailable, or full).
impl From<JobsError> for ApiError {
    fn from(error: JobsError) -> Self {
        match error {
            JobsError::NotFound(id) => ApiError::not_found(format!("Job {id} does not exist.")),
            JobsError::Forbidden(id) => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("Job {id} belongs to another owner."),
            ),
            JobsError::Rule(rule) if rule.is_conflict() => {
                ApiError::new(StatusCode::CONFLICT, format!("{rule}."))
            }
            JobsError::Rule(rule) => ApiError::bad_request(format!("{rule}.")),
            JobsError::Store(error @ StoreError::Full { .. }) => {
                tracing::warn!(%error, "job creation refused");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server keeps as many jobs as it may; retry later.",
                )
            }
            error @ (JobsError::Store(_) | JobsError::Bus(_)) => {
                outage(&error);
                ApiError::outage()
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}
