//! The HeyGen mock's routes (SPEC §4): plain text answers and `status_<id>` SSE events,
//! as the TypeScript client expects them.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use heartbeat_core::jobs::{JobEvent, JobId, JobState};
use serde_json::json;

use super::jobs::event_stream;
use crate::error::{ApiError, TextError};
use crate::extract::auth::{OwnerQuery, concealed, prove_owner, proven_owner};
use crate::state::{App, CreateRefused};
use crate::streams::ClientAddress;

/// The HeyGen status text of a state: the mock knows `pending` and `completed`; a running
/// job is still `pending` to it, a failed one says `failed`.
pub(crate) fn heygen_state(state: JobState) -> &'static str {
    match state {
        JobState::Pending | JobState::Running => "pending",
        JobState::Completed => "completed",
        JobState::Failed => "failed",
    }
}

/// `POST /create?uuid=<owner>`: 201 with the new job's id as text. 401 `unauthorized`
/// without the owner's token when `OWNER_AUTH=required` (checked before any allowance is
/// used); 429 `too many jobs: retry later` past a creation rate (per owner, per client
/// address, in total).
pub(crate) async fn create(
    State(app): State<App>,
    address: ClientAddress,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<(StatusCode, String), Response> {
    let (owner, _, proof) = prove_owner(&app, &headers, query)
        .map_err(|refused| TextError::from(refused).into_response())?;
    let address = proof.counts_by_address().then_some(address.0);
    match app.create_job(&owner, address).await {
        Ok(job) => Ok((StatusCode::CREATED, job.id.to_string())),
        Err(CreateRefused::Limited(limited)) => Err(limited.text()),
        Err(CreateRefused::Jobs(error)) => Err(TextError::from(error).into_response()),
    }
}

/// `GET /status/{id}?uuid=<owner>`: `pending` / `completed` (text); 404 `error` for an
/// unknown id (also one that is not a job id at all), 401 `unauthorized` for another
/// owner's job, or without the owner's token when `OWNER_AUTH=required`.
pub(crate) async fn status(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<&'static str, TextError> {
    let (owner, _, _) = prove_owner(&app, &headers, query)?;
    let id: JobId = id
        .parse()
        .map_err(|_| TextError::new(StatusCode::NOT_FOUND, "error"))?;
    let job = app
        .jobs()
        .get(id, &owner)
        .await
        .map_err(|error| TextError::from(concealed(&app, error)))?;
    Ok(heygen_state(job.state))
}

fn heygen_event(event: &JobEvent) -> Option<Event> {
    let job = &event.job;
    job.state.is_final().then(|| {
        Event::default()
            .id(event.id.0.to_string())
            .event(format!("status_{}", job.id))
            .data(json!({ "id": job.id.0, "message": heygen_state(job.state) }).to_string())
    })
}

/// `GET /status?uuid=<owner>`: SSE, `event: status_<id>` with
/// `data: {"id":<id>,"message":"completed"}` for each of the owner's finished jobs. 401
/// without the owner's token when `OWNER_AUTH=required` (before a stream place is taken).
pub(crate) async fn events(
    State(app): State<App>,
    address: ClientAddress,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let owner = proven_owner(&app, &headers, query)?;
    event_stream(&app, address, &headers, owner, heygen_event).await
}
