//! `POST /heartbeat` (and `POST /`) and `POST /heartbeat/stop`: read the body, hand the
//! token to the core, translate the outcome into the Node server's status codes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use heartbeat_core::jobs::{EventBus, JobStore};
use heartbeat_core::{Clock, HeartbeatError, HeartbeatOutcome, SessionStore};
use serde_json::{Value, json};

use crate::app::App;
use crate::error::ApiError;
use crate::metrics::Decision;

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

/// Counts the decision (and a store failure on `route`, when it was one).
fn count<S, J, B, C>(app: &App<S, J, B, C>, route: &str, decision: Decision)
where
    S: SessionStore,
    J: JobStore,
    B: EventBus,
    C: Clock,
{
    app.metrics().decision(decision);
    if decision == Decision::StoreUnavailable {
        app.metrics().store_error(route);
    }
}

fn counted<S, J, B, C>(
    app: &App<S, J, B, C>,
    route: &str,
    decision: Decision,
    error: ApiError,
) -> Response
where
    S: SessionStore,
    J: JobStore,
    B: EventBus,
    C: Clock,
{
    count(app, route, decision);
    error.into_response()
}

/// `POST /heartbeat`.
pub async fn heartbeat<S: SessionStore, J: JobStore, B: EventBus, C: Clock>(
    State(app): State<App<S, J, B, C>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = match HeartbeatRequest::from_body(&headers, body) {
        Ok(request) => request,
        Err(error) => return counted(&app, "/heartbeat", Decision::BadRequest, error),
    };
    let heartbeats = app.heartbeats();
    let data = match heartbeats.codec().open(&request.token) {
        Ok(data) => data,
        Err(invalid) => {
            let (decision, error) = failure(invalid.into());
            return counted(&app, "/heartbeat", decision, error);
        }
    };
    match heartbeats.heartbeat_data(&data, request.progress).await {
        Ok(HeartbeatOutcome::Accepted { token, .. }) => {
            count(&app, "/heartbeat", Decision::Accepted);
            Json(json!({ "heartbeat_token": token })).into_response()
        }
        Ok(HeartbeatOutcome::Rejected(reason)) => {
            tracing::debug!(?reason, user = %data.user_id, "over the limit");
            counted(
                &app,
                "/heartbeat",
                Decision::Rejected,
                ApiError::new(StatusCode::PRECONDITION_FAILED, OVER_LIMIT_MESSAGE),
            )
        }
        Err(HeartbeatError::Store(error)) if app.settings().fail_open => {
            tracing::warn!(%error, "store unavailable: failing open");
            count(&app, "/heartbeat", Decision::StoreUnavailable);
            match heartbeats.rotate_unchecked(&data) {
                Ok(token) => Json(json!({ "heartbeat_token": token })).into_response(),
                Err(error) => failure(error.into()).1.into_response(),
            }
        }
        Err(error) => {
            let (decision, error) = failure(error);
            counted(&app, "/heartbeat", decision, error)
        }
    }
}

/// `POST /heartbeat/stop`: ends the token's session now. Answers 200 `{}`.
pub async fn stop<S: SessionStore, J: JobStore, B: EventBus, C: Clock>(
    State(app): State<App<S, J, B, C>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = match HeartbeatRequest::from_body(&headers, body) {
        Ok(request) => request,
        Err(error) => return counted(&app, "/heartbeat/stop", Decision::BadRequest, error),
    };
    match app
        .heartbeats()
        .stop(&request.token, request.progress)
        .await
    {
        Ok(_) => {
            count(&app, "/heartbeat/stop", Decision::Stopped);
            Json(json!({})).into_response()
        }
        Err(error) => {
            let (decision, error) = failure(error);
            counted(&app, "/heartbeat/stop", decision, error)
        }
    }
}
