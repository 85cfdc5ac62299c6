//! `GET /healthz`, `/healthcheck`, `/readyz`, and the answers to unknown routes and methods.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use heartbeat_core::SessionStore;
use heartbeat_core::store::StoreHealth;

use crate::error::ApiError;
use crate::state::App;

pub(crate) async fn healthz() -> &'static str {
    "OK"
}

/// `GET /readyz`: 200 `ready` when the store answers, 503 when it does not, unless the
/// server fails open (`FAIL_OPEN`): then it is 200 `ready (failing open: the store is
/// unreachable)`, because it keeps answering heartbeats and a load balancer must not drain
/// it (every instance shares the store, so draining one would only move the same answers
/// elsewhere).
///
/// On a Redis Cluster every master is asked. While some answer and one fails over, the
/// answer is 200 `ready (degraded: 2 of 3 store nodes answer; ...)`: every instance sees the
/// same cluster, so draining them would turn the outage of one shard's users into everyone's.
/// Only when no master answers is it 503.
pub(crate) async fn readyz(State(app): State<App>) -> Result<String, ApiError> {
    match app.heartbeats().store().ping().await {
        Ok(StoreHealth::Up) => Ok("ready".to_owned()),
        Ok(health) => {
            tracing::warn!(%health, "part of the store does not answer: ready, its users get 503");
            Ok(format!(
                "ready ({health}; requests for the users whose data is on the others get 503 \
                 until they recover)"
            ))
        }
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
