//! `GET /healthz`, `/healthcheck`, `/readyz`, and the answers to unknown routes and methods.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use heartbeat_core::SessionStore;

use crate::error::ApiError;
use crate::state::App;

pub(crate) async fn healthz() -> &'static str {
    "OK"
}

/// `GET /readyz`: 200 `ready` when the store answers, 503 when it does not, unless the
/// server fails open (`FAIL_OPEN`): then it is 200 `ready (failing open: the store is
/// unreachable)`, because it
/// keeps answering heartbeats and a load balancer must not drain it (every instance
/// shares the store, so draining one would only move the same answers elsewhere).
pub(crate) async fn readyz(State(app): State<App>) -> Result<String, ApiError> {
    match app.heartbeats().store().ping().await {
        Ok(()) => Ok("ready".to_owned()),
        Err(error) if app.settings().fail_open => {
            tracing::warn!(%error, "the store is unreachable: ready, failing open");
            // Fixed text: the store's error (addresses, names) goes to the log only.
            Ok("ready (failing open: the store is unreachable)".to_owned())
        }
        Err(error) => Err(error.into()),
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("No such route.")
}

pub(crate) async fn method_not_allowed() -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "This route does not take this method.",
    )
}
