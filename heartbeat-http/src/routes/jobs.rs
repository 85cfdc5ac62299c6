//! The jobs JSON API under `/v1` (SPEC §4): jobs, worker updates, `GET /v1/events`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use heartbeat_core::Timestamp;
use heartbeat_core::jobs::{Job, JobEvent, JobUpdate, Owner};
use serde_json::json;

use crate::error::ApiError;
use crate::extract::auth::{OwnerQuery, Worker, concealed, prove_owner, proven_owner};
use crate::extract::body::{LimitedBody, json_body};
use crate::extract::query::job_id;
use crate::sse;
use crate::state::{App, CreateRefused};
use crate::streams::ClientAddress;

/// Most jobs one list returns.
pub(crate) const MAX_LIST: usize = 1000;

fn job_event(event: &JobEvent) -> Option<Event> {
    Event::default()
        .id(event.id.0.to_string())
        .event("job")
        .json_data(&event.job)
        .ok()
}

pub(super) async fn event_stream(
    app: &App,
    address: ClientAddress,
    headers: &HeaderMap,
    (owner, query): (Owner, OwnerQuery),
    to_event: fn(&JobEvent) -> Option<Event>,
) -> Result<Response, ApiError> {
    let after = sse::last_event_id(headers, query.last_event_id.as_deref())?;
    let stream = match app.open_stream(address.0, &format!("owner:{}", owner.as_str())) {
        Ok(stream) => stream,
        Err(full) => return Ok(full.into_response()),
    };
    let metrics = app.metrics().clone();
    let events = app
        .jobs()
        .events(owner, after)
        .await?
        .inspect(move |event| {
            if let Ok(event) = event {
                let lag = Timestamp::now().millis_since(event.job.updated_at).max(0);
                metrics.event_delivered(std::time::Duration::from_millis(lag.unsigned_abs()));
            }
        });
    Ok(sse::response(stream, events, to_event).into_response())
}

/// `GET /v1/events?uuid=<owner>`: SSE, `event: job` with the job as JSON at every change.
pub(crate) async fn events(
    State(app): State<App>,
    address: ClientAddress,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let owner = proven_owner(&app, &headers, query)?;
    event_stream(&app, address, &headers, owner, job_event).await
}

/// `POST /v1/jobs?uuid=<owner>`: 201 with the job; 401 without a proof of the owner
/// when one is required (before any allowance is used), 429 past a creation rate.
pub(crate) async fn create(
    State(app): State<App>,
    address: ClientAddress,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Job>), Response> {
    let (owner, _, proof) = prove_owner(&app, &headers, query)
        .map_err(|refused| ApiError::from(refused).into_response())?;
    let address = proof.counts_by_address().then_some(address.0);
    match app.create_job(&owner, address).await {
        Ok(job) => Ok((StatusCode::CREATED, Json(job))),
        Err(CreateRefused::Limited(limited)) => Err(limited.json()),
        Err(CreateRefused::Jobs(error)) => Err(ApiError::from(error).into_response()),
    }
}

/// `GET /v1/jobs?uuid=<owner>&limit=N`: the owner's jobs, newest first.
pub(crate) async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (owner, query) = proven_owner(&app, &headers, query)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIST}."
        )));
    }
    let jobs = app.jobs().list(&owner, limit).await?;
    Ok(Json(json!({ "jobs": jobs })))
}

/// `GET /v1/jobs/{id}?uuid=<owner>`: the job; 404 unknown, 403 another owner's (404 with
/// `OWNER_AUTH=required`).
pub(crate) async fn get(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<Json<Job>, ApiError> {
    let (owner, _) = proven_owner(&app, &headers, query)?;
    let job = app
        .jobs()
        .get(job_id(&id)?, &owner)
        .await
        .map_err(|error| ApiError::from(concealed(&app, error)))?;
    Ok(Json(job))
}

/// `PATCH /v1/jobs/{id}` (admin or worker key): a worker's update — `state`, `progress`, `error`.
/// States only move forward; a finished job never changes (409).
pub(crate) async fn update(
    _: Worker,
    State(app): State<App>,
    Path(id): Path<String>,
    LimitedBody {
        headers,
        bytes: body,
    }: LimitedBody,
) -> Result<Json<Job>, ApiError> {
    let id = job_id(&id)?;
    let update: JobUpdate = serde_json::from_value(json_body(&headers, &body)?)
        .map_err(|error| ApiError::bad_request(format!("Invalid job update: {error}.")))?;
    let job = app.jobs().update(id, &update).await?;
    Ok(Json(job))
}
