//! `POST /heartbeat` (and `POST /`), `POST /heartbeat/stop`, `POST /heartbeat/takeover` and
//! `GET /heartbeat/events`: read the request, hand the token to the core, translate the
//! outcome into the Node server's status codes (SPEC §3, §3.7).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use heartbeat_core::sessions::RejectReason;
use heartbeat_core::sessions::StreamRelease;
use heartbeat_core::sessions::notice::SessionEnded;
use heartbeat_core::sessions::rules::SessionError;
use heartbeat_core::token::MAX_TOKEN_LEN;
use heartbeat_core::{DataError, HeartbeatError, HeartbeatOutcome, MAX_ID_LEN, SealError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::auth::bearer;
use crate::extract::body::{LimitedBody, json_or_form_fields};
use crate::metrics::{Decision, Metrics, StoreFailed};
use crate::sse;
use crate::state::App;
use crate::streams::ClientAddress;

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
    /// The `session_id` field as sent. Only `POST /heartbeat/takeover` reads it
    /// ([`session_to_take_over`](Self::session_to_take_over)); the other routes ignore it,
    /// as the Node server ignores every field it does not read.
    pub session_id: Option<Value>,
}

impl HeartbeatRequest {
    /// Reads and checks a heartbeat body.
    ///
    /// # Errors
    ///
    /// 400 or 415 saying what is wrong.
    pub fn from_body(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let [token, progress, session_id] =
            json_or_form_fields(headers, body, ["heartbeat_token", "progress", "session_id"])?;
        let token = match token {
            Some(Value::String(token)) => Some(token),
            _ => None,
        };
        let progress = match progress {
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
        Ok(Self {
            token,
            progress,
            session_id,
        })
    }

    /// The session `POST /heartbeat/takeover` ends.
    ///
    /// # Errors
    ///
    /// 400 when `session_id` is missing or not a session id.
    pub fn session_to_take_over(&self) -> Result<&str, ApiError> {
        match &self.session_id {
            None | Some(Value::Null) => Err(ApiError::bad_request(
                "session_id is missing: name the session to take over (one of the `sessions` of \
                 the 412 answer).",
            )),
            Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_LEN => Ok(id),
            Some(_) => Err(ApiError::bad_request(
                "session_id must be a session id (a non-empty string of at most 256 bytes).",
            )),
        }
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
            let (decision, error) = invalid_token();
            // An authentic token may be told which field is wrong; any other refusal
            // stays the one uniform 406 (SPEC §3.3).
            let error = match invalid.field_error() {
                Some(DataError::Missing { field }) => {
                    error.with("reason", "missing_field").with("field", *field)
                }
                Some(DataError::Invalid { field, expected }) => error
                    .with("reason", "invalid_field")
                    .with("field", *field)
                    .with("expected", *expected),
                _ => error,
            };
            (decision, error)
        }
        HeartbeatError::InvalidProgress => (Decision::BadRequest, progress_error()),
        HeartbeatError::Session(error @ (SessionError::NotActive | SessionError::Spent)) => {
            (Decision::BadRequest, ApiError::not_found(error.to_string()))
        }
        HeartbeatError::Session(error) => (
            Decision::BadRequest,
            ApiError::bad_request(error.to_string()),
        ),
        HeartbeatError::Store(error) => (Decision::StoreUnavailable, ApiError::unavailable(&error)),
        // Valid data that this server's format cannot carry within the token length (a
        // `b1.` or `v3.` token near the limit grows when sealed as `v2.`): the player stops
        // as for any token it cannot use, and nothing was stored.
        HeartbeatError::Seal(SealError::TooLarge { len }) => {
            tracing::debug!(len, "answer too large to seal");
            let (decision, error) = invalid_token();
            let error = error
                .with("reason", "too_large")
                .with("limit", MAX_TOKEN_LEN);
            (decision, error)
        }
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

/// Reads the body; a missing token is the Node server's 406. Returns the token and the
/// rest of the request. A body that could not be read (413, 400) is counted as a bad
/// request, as one that is not JSON is.
fn read_request(
    body: Result<LimitedBody, ApiError>,
) -> Result<(String, HeartbeatRequest), (Decision, ApiError)> {
    let bad_request = |error| (Decision::BadRequest, error);
    let body = body.map_err(bad_request)?;
    let mut request =
        HeartbeatRequest::from_body(&body.headers, &body.bytes).map_err(bad_request)?;
    match request.token.take() {
        Some(token) => Ok((token, request)),
        None => Err(invalid_token()),
    }
}

/// The 406 of a token that cannot be used, whatever was wrong with it.
fn invalid_token() -> (Decision, ApiError) {
    (
        Decision::InvalidToken,
        ApiError::new(StatusCode::NOT_ACCEPTABLE, INVALID_TOKEN_MESSAGE),
    )
}

/// `POST /heartbeat`.
pub(crate) async fn heartbeat(
    State(app): State<App>,
    body: Result<LimitedBody, ApiError>,
) -> Response {
    let metrics = app.metrics();
    let (token, request) = match read_request(body) {
        Ok(request) => request,
        Err((decision, error)) => return counted(metrics, decision, error),
    };
    let outcome = app.heartbeats().heartbeat(&token, request.progress).await;
    answer(metrics, outcome)
}

/// `POST /heartbeat/takeover`: "watch here instead" (SPEC §3.7). Ends `session_id` and
/// admits the token's session; answers like `POST /heartbeat`, 404 when that session is
/// not active, 406 for a legacy token.
pub(crate) async fn takeover(
    State(app): State<App>,
    body: Result<LimitedBody, ApiError>,
) -> Response {
    let metrics = app.metrics();
    let (token, request) = match read_request(body) {
        Ok(request) => request,
        Err((decision, error)) => return counted(metrics, decision, error),
    };
    let session_id = match request.session_to_take_over() {
        Ok(session_id) => session_id,
        Err(error) => return counted(metrics, Decision::BadRequest, error),
    };
    let outcome = app
        .heartbeats()
        .take_over(&token, session_id, request.progress)
        .await;
    answer(metrics, outcome)
}

/// `200 {"heartbeat_token":"<token>"}`, the body written directly: the tokens this server
/// seals (`v2.` base64url, or base64) hold no character JSON escapes, so no generic
/// serializer has to look at them (`json::write_str` escapes what would need it). Under
/// report-only limits (SPEC §3.8) a heartbeat they would have refused is answered with
/// `"would_refuse": {"reason", "limit"}` too.
fn token_answer(token: &str, would_refuse: Option<&RejectReason>) -> Response {
    const HEAD: &[u8] = br#"{"heartbeat_token":"#;
    let mut body = Vec::with_capacity(HEAD.len() + token.len() + 3);
    body.extend_from_slice(HEAD);
    heartbeat_core::json::write_str(&mut body, token);
    if let Some(reason) = would_refuse {
        body.extend_from_slice(br#","would_refuse":"#);
        // A struct of a string and a number always serializes.
        body.extend(serde_json::to_vec(&reason.told()).unwrap_or_default());
    }
    body.push(b'}');
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The answer to a heartbeat or a takeover, counted.
fn answer(metrics: &Metrics, outcome: Result<HeartbeatOutcome, HeartbeatError>) -> Response {
    match outcome {
        Ok(HeartbeatOutcome::Accepted { token, accepted }) => {
            metrics.decision(Decision::Accepted);
            if accepted.new_session.is_some() {
                metrics.session_started();
            }
            if let Some(reason) = &accepted.would_refuse {
                tracing::debug!(?reason, "would refuse (report-only)");
                metrics.would_refuse(reason.code());
            }
            token_answer(&token, accepted.would_refuse.as_ref())
        }
        Ok(HeartbeatOutcome::Rejected(refused)) => {
            let reason = refused.reason;
            tracing::debug!(?reason, "refused");
            metrics.decision(Decision::Rejected);
            metrics.refusal(reason.code());
            let mut body = json!({
                "error": OVER_LIMIT_MESSAGE,
                "reason": reason.code(),
                "limit": reason.limit(),
            });
            if let Some(playing) = refused.playing {
                body["sessions"] = json!(playing);
            }
            (StatusCode::PRECONDITION_FAILED, Json(body)).into_response()
        }
        Ok(HeartbeatOutcome::FailedOpen { token, cause }) => {
            tracing::warn!(error = %cause, "store unavailable: failing open");
            metrics.decision(Decision::StoreUnavailable);
            let mut response = token_answer(&token, None);
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

/// The query of `GET /heartbeat/events`.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// The session's token (or `Authorization: Bearer <token>`).
    pub heartbeat_token: Option<String>,
}

/// `GET /heartbeat/events?heartbeat_token=…`: the pushed notice of one session (SPEC
/// §3.7). An SSE stream that sends `event: ended` when the session is evicted, taken over
/// or displaced, then closes; it closes without an event when the session stops being
/// active otherwise. 404 when the token's session is not active, 406 for a legacy or
/// invalid token.
pub(crate) async fn events(
    State(app): State<App>,
    address: ClientAddress,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let metrics = app.metrics();
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            let error = ApiError::bad_query(&rejection);
            return counted(metrics, Decision::BadRequest, error);
        }
    };
    let Some(token) = query.heartbeat_token.as_deref().or(bearer(&headers)) else {
        let (decision, error) = invalid_token();
        return counted(metrics, decision, error);
    };
    // A user's notice streams count as one owner's; the cap is checked before any work.
    let owner = app
        .heartbeats()
        .codec()
        .open(token)
        .map(|data| format!("user:{}", data.user_id))
        .unwrap_or_default();
    let mut stream = match app.open_stream(address.0, &owner) {
        Ok(stream) => stream,
        Err(full) => return full.into_response(),
    };
    match app.heartbeats().watch(token).await {
        Ok(mut notices) => {
            // The client going away may let the session go (SPEC §3.8); the stream ending by
            // itself (the session's end, its lifetime, the server's shutdown) does not.
            if let Some(release) = notices.take_release() {
                let app = app.clone();
                stream.on_client_gone = Some(Box::new(move || release_session(app, release)));
            }
            let notices = notices.map(Ok::<_, std::convert::Infallible>);
            sse::response(stream, notices, ended_event).into_response()
        }
        Err(error) => {
            let (decision, error) = failure(error);
            counted(metrics, decision, error)
        }
    }
}

/// Tells the core that a notice stream's client went away
/// ([`Heartbeats::stream_closed`](heartbeat_core::Heartbeats::stream_closed)), unless the
/// server is shutting down (its clients reconnect, to another instance or to this one
/// restarted).
fn release_session(app: App, release: StreamRelease) {
    if app.shutdown().is_cancelled() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        if let Err(error) = app.heartbeats().stream_closed(release).await {
            tracing::warn!(%error, "a closed notice stream could not be recorded");
        }
    });
}

fn ended_event(ended: &SessionEnded) -> Option<Event> {
    Event::default().event("ended").json_data(ended).ok()
}

/// `POST /heartbeat/stop`: ends the token's session now. Answers 200 `{}`.
pub(crate) async fn stop(State(app): State<App>, body: Result<LimitedBody, ApiError>) -> Response {
    let metrics = app.metrics();
    let (token, request) = match read_request(body) {
        Ok(request) => request,
        Err((decision, error)) => return counted(metrics, decision, error),
    };
    match app.heartbeats().stop(&token, request.progress).await {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The directly written body is the one serde_json writes, for both token forms, and
    /// a token with a character JSON escapes still comes out valid.
    #[tokio::test]
    async fn the_token_answer_is_the_json_serde_writes() {
        for token in ["v2.AbC-_x09", "U2FsdGVkX1+/abc=", "odd\"token\\"] {
            let response = token_answer(token, None);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            let expected = serde_json::to_vec(&json!({ "heartbeat_token": token })).unwrap();
            assert_eq!(body.as_ref(), expected.as_slice(), "{token}");
        }
    }
}
