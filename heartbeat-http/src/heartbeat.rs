//! `POST /heartbeat` (and `POST /`) and `POST /heartbeat/stop`: read the body, hand the
//! token to the core, translate the outcome into the Node server's status codes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use heartbeat_core::{HeartbeatError, HeartbeatOutcome};
use serde_json::{Value, json};

use crate::app::App;
use crate::error::ApiError;
use crate::metrics::{Decision, Metrics, StoreFailed};

/// The fixed body of a 412, as the Node server answers it.
pub const OVER_LIMIT_MESSAGE: &str = "You have exceeded the maximum allowed number of devices.";
/// The fixed body of a 406, whatever was wrong with the token.
pub const INVALID_TOKEN_MESSAGE: &str = "Heartbeat token is not valid.";

/// A heartbeat request body: `{"heartbeat_token": "...", "progress": 42}`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatRequest {
    /// The token.
    pub token: String,
    /// The position reported, if any.
    pub progress: Option<f64>,
}

/// Reads a JSON body (`Content-Type: application/json`) of at most the body limit.
pub fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is too large.",
            )
        } else {
            ApiError::bad_request(format!("The request body could not be read: {rejection}"))
        }
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json.",
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("The body is not valid JSON: {error}")))
}

impl HeartbeatRequest {
    /// Reads and checks a heartbeat body.
    ///
    /// # Errors
    ///
    /// 400, 413 or 415 saying what is wrong.
    pub fn from_body(
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Self, ApiError> {
        let Value::Object(mut body) = json_body(headers, body)? else {
            return Err(ApiError::bad_request("The body must be a JSON object."));
        };
        let token = match body.remove("heartbeat_token") {
            Some(Value::String(token)) => token,
            None | Some(Value::Null) => {
                return Err(ApiError::bad_request("heartbeat_token is missing."));
            }
            Some(_) => return Err(ApiError::bad_request("heartbeat_token must be a string.")),
        };
        let progress = match body.remove("progress") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) => number.as_f64(),
            Some(_) => return Err(progress_error()),
        };
        Ok(Self { token, progress })
    }
}

fn progress_error() -> ApiError {
    ApiError::bad_request("progress must be a non-negative number.")
}

/// The answer to a failed heartbeat or stop, and how it is counted.
fn failure(error: HeartbeatError) -> (Decision, ApiError) {
    match error {
        HeartbeatError::InvalidToken(invalid) => {
            tracing::debug!(reason = ?invalid.reason(), "token refused");
            (
                Decision::InvalidToken,
                ApiError::new(StatusCode::NOT_ACCEPTABLE, INVALID_TOKEN_MESSAGE),
            )
        }
        HeartbeatError::InvalidProgress => (Decision::BadRequest, progress_error()),
        HeartbeatError::Store(error) => (Decision::StoreUnavailable, ApiError::unavailable(&error)),
        other => {
            tracing::error!(error = %other, "cannot answer a heartbeat");
            (
                Decision::Failed,
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The token could not be sealed.",
                ),
            )
        }
    }
}

/// Counts the decision and answers `error`.
fn counted(metrics: &Metrics, decision: Decision, error: ApiError) -> Response {
    metrics.decision(decision);
    error.into_response()
}

/// `POST /heartbeat`.
pub async fn heartbeat(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let metrics = app.metrics();
    let request = match HeartbeatRequest::from_body(&headers, body) {
        Ok(request) => request,
        Err(error) => return counted(metrics, Decision::BadRequest, error),
    };
    match app
        .heartbeats()
        .heartbeat(&request.token, request.progress)
        .await
    {
        Ok(HeartbeatOutcome::Accepted { token, .. }) => {
            metrics.decision(Decision::Accepted);
            Json(json!({ "heartbeat_token": token })).into_response()
        }
        Ok(HeartbeatOutcome::Rejected(reason)) => {
            tracing::debug!(?reason, "over the limit");
            counted(
                metrics,
                Decision::Rejected,
                ApiError::new(StatusCode::PRECONDITION_FAILED, OVER_LIMIT_MESSAGE),
            )
        }
        Ok(HeartbeatOutcome::FailedOpen { token, cause }) => {
            tracing::warn!(error = %cause, "store unavailable: failing open");
            metrics.decision(Decision::StoreUnavailable);
            let mut response = Json(json!({ "heartbeat_token": token })).into_response();
            response.extensions_mut().insert(StoreFailed);
            response
        }
        Ok(other) => {
            tracing::error!(outcome = ?other, "a heartbeat outcome this server does not know");
            let error = ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The heartbeat could not be answered.",
            );
            counted(metrics, Decision::Failed, error)
        }
        Err(error) => {
            let (decision, error) = failure(error);
            counted(metrics, decision, error)
        }
    }
}

/// `POST /heartbeat/stop`: ends the token's session now. Answers 200 `{}`.
pub async fn stop(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let metrics = app.metrics();
    let request = match HeartbeatRequest::from_body(&headers, body) {
        Ok(request) => request,
        Err(error) => return counted(metrics, Decision::BadRequest, error),
    };
    match app
        .heartbeats()
        .stop(&request.token, request.progress)
        .await
    {
        Ok(_) => {
            metrics.decision(Decision::Stopped);
            Json(json!({})).into_response()
        }
        Err(error) => {
            let (decision, error) = failure(error);
            counted(metrics, decision, error)
        }
    }
}
