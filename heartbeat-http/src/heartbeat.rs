//! `POST /heartbeat` (and `POST /`) and `POST /heartbeat/stop`: read the body, hand the
//! token to the core, translate the outcome into the Node server's status codes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use heartbeat_core::{HeartbeatError, HeartbeatOutcome};
use serde_json::{Value, json};

use crate::app::App;
use crate::body::{LimitedBody, json_or_form_fields};
use crate::error::ApiError;
use crate::metrics::{Decision, Metrics, StoreFailed};

/// The fixed body of a 412, as the Node server answers it.
pub const OVER_LIMIT_MESSAGE: &str = "You have exceeded the maximum allowed number of devices.";
/// The fixed body of a 406, whatever was wrong with the token.
pub const INVALID_TOKEN_MESSAGE: &str = "Heartbeat token is not valid.";

/// A heartbeat request body: `{"heartbeat_token": "...", "progress": 42}`, as JSON or as
/// an HTML form (SPEC §3.5).
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatRequest {
    /// The token; `None` when it is missing or not a string, which is a 406 as in the Node
    /// server (the player stops: a retry cannot help).
    pub token: Option<String>,
    /// The position reported, if any.
    pub progress: Option<f64>,
}

impl HeartbeatRequest {
    /// Reads and checks a heartbeat body.
    ///
    /// # Errors
    ///
    /// 400 or 415 saying what is wrong.
    pub fn from_body(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let mut fields = json_or_form_fields(headers, body)?;
        let token = match fields.remove("heartbeat_token") {
            Some(Value::String(token)) => Some(token),
            _ => None,
        };
        let progress = match fields.remove("progress") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) => number.as_f64(),
            // Backends and forms send numbers as text; an empty one is no progress, as
            // in the Node server (`!!""` is false).
            Some(Value::String(text)) if text.trim().is_empty() => None,
            Some(Value::String(text)) => Some(
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|number| number.is_finite())
                    .ok_or_else(progress_error)?,
            ),
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

/// Reads the body; a missing token is the Node server's 406.
fn read_request(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, Option<f64>), (Decision, ApiError)> {
    match HeartbeatRequest::from_body(headers, body) {
        Ok(HeartbeatRequest {
            token: Some(token),
            progress,
        }) => Ok((token, progress)),
        Ok(HeartbeatRequest { token: None, .. }) => Err((
            Decision::InvalidToken,
            ApiError::new(StatusCode::NOT_ACCEPTABLE, INVALID_TOKEN_MESSAGE),
        )),
        Err(error) => Err((Decision::BadRequest, error)),
    }
}

/// `POST /heartbeat`.
pub async fn heartbeat(
    State(app): State<App>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Response {
    let metrics = app.metrics();
    let (token, progress) = match read_request(&headers, &body) {
        Ok(request) => request,
        Err((decision, error)) => return counted(metrics, decision, error),
    };
    match app.heartbeats().heartbeat(&token, progress).await {
        Ok(HeartbeatOutcome::Accepted { token, accepted }) => {
            metrics.decision(Decision::Accepted);
            if accepted.new_session.is_some() {
                metrics.session_started();
            }
            Json(json!({ "heartbeat_token": token })).into_response()
        }
        Ok(HeartbeatOutcome::Rejected(reason)) => {
            tracing::debug!(?reason, "over the limit");
            metrics.decision(Decision::Rejected);
            metrics.refusal(reason.code());
            let body = json!({
                "error": OVER_LIMIT_MESSAGE,
                "reason": reason.code(),
                "limit": reason.limit(),
            });
            (StatusCode::PRECONDITION_FAILED, Json(body)).into_response()
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
    LimitedBody(body): LimitedBody,
) -> Response {
    let metrics = app.metrics();
    let (token, progress) = match read_request(&headers, &body) {
        Ok(request) => request,
        Err((decision, error)) => return counted(metrics, decision, error),
    };
    match app.heartbeats().stop(&token, progress).await {
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
