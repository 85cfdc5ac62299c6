//! Jobs over HTTP: the HeyGen mock's routes (plain text answers, `status_<id>` SSE events)
//! and the JSON API under `/v1` (jobs, worker updates, `GET /v1/events`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use heartbeat_core::jobs::{Job, JobEvent, JobId, JobState, JobUpdate, JobsError, Owner};
use serde::Deserialize;
use serde_json::json;

use crate::admin::Worker;
use crate::app::App;
use crate::body::{LimitedBody, json_body};
use crate::error::{ApiError, TextError};
use crate::rate::RateLimited;
use crate::sse;
use crate::streams::ClientAddress;

/// Most jobs one list returns.
pub const MAX_LIST: usize = 1000;

/// `?uuid=<owner>` (and, for lists and streams, more).
#[derive(Debug, Default, Deserialize)]
pub struct OwnerQuery {
    /// The owner.
    pub uuid: Option<String>,
    /// Most jobs to list.
    pub limit: Option<usize>,
    /// `Last-Event-ID` for clients that cannot set headers.
    pub last_event_id: Option<String>,
    /// An owner token, for clients that cannot set `Authorization` (`EventSource`).
    pub owner_token: Option<String>,
}

fn owner_of(
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<(Owner, OwnerQuery), String> {
    let Query(query) = query.map_err(|rejection| crate::error::query_error(&rejection))?;
    let uuid = query
        .uuid
        .as_deref()
        .ok_or_else(|| "the uuid query parameter (the job owner) is required".to_owned())?;
    let owner = Owner::new(uuid).map_err(|error| error.to_string())?;
    Ok((owner, query))
}

/// The owner of a `/v1` request: its `uuid`, proven by an owner token when `OWNER_KEY`
/// is set and a token is given (`Authorization: Bearer owner.…` or `?owner_token=`), and
/// required to be when `OWNER_AUTH=required`. A refusal says nothing of the owner.
fn proven_owner(
    app: &App,
    headers: &HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<(Owner, OwnerQuery), ApiError> {
    let (owner, query) = owner_of(query).map_err(ApiError::bad_request)?;
    let Some(tokens) = &app.settings().owner_tokens else {
        return Ok((owner, query));
    };
    let proven = match crate::body::bearer(headers).or(query.owner_token.as_deref()) {
        Some(token) => {
            let now = heartbeat_core::Timestamp::now().unix_millis() / 1000;
            tokens.key.verify(&owner, token.trim(), now)
        }
        None => !tokens.required,
    };
    if proven {
        Ok((owner, query))
    } else {
        Err(ApiError::unauthorized_owner())
    }
}

/// The HeyGen status text of a state: the mock knows `pending` and `completed`; a running
/// job is still `pending` to it, a failed one says `failed`.
pub fn heygen_state(state: JobState) -> &'static str {
    match state {
        JobState::Pending | JobState::Running => "pending",
        JobState::Completed => "completed",
        JobState::Failed => "failed",
    }
}

/// With `OWNER_AUTH=required`, another owner's job is answered as an unknown one (404,
/// on the `/v1` and the HeyGen routes alike): a 401 or 403 would confirm it exists.
fn concealed(app: &App, error: JobsError) -> JobsError {
    match error {
        JobsError::Forbidden(id)
            if app
                .settings()
                .owner_tokens
                .as_ref()
                .is_some_and(|tokens| tokens.required) =>
        {
            JobsError::NotFound(id)
        }
        other => other,
    }
}

/// Logs a store or event bus failure (the 503 answer counts it).
fn outage(error: &JobsError) {
    tracing::warn!(%error, "storage unavailable");
}

fn text_failure(error: JobsError) -> TextError {
    match error {
        JobsError::NotFound(_) => TextError::new(StatusCode::NOT_FOUND, "error"),
        JobsError::Forbidden(_) => TextError::new(StatusCode::UNAUTHORIZED, "unauthorized"),
        JobsError::Rule(rule) => TextError::new(StatusCode::BAD_REQUEST, rule.to_string()),
        error @ (JobsError::Store(_) | JobsError::Bus(_)) => {
            outage(&error);
            TextError::new(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
        other => TextError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn json_failure(error: JobsError) -> ApiError {
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
        error @ (JobsError::Store(_) | JobsError::Bus(_)) => {
            outage(&error);
            ApiError::outage()
        }
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// `POST /create?uuid=<owner>`: 201 with the new job's id as text.
/// 429 `too many jobs: retry later` past the owner's rate (`JOBS_PER_OWNER_PER_SEC`).
pub async fn heygen_create(
    State(app): State<App>,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<(StatusCode, String), Response> {
    let (owner, _) = owner_of(query)
        .map_err(|reason| TextError::new(StatusCode::BAD_REQUEST, reason).into_response())?;
    app.job_creations()
        .check(&owner)
        .map_err(RateLimited::text)?;
    let job = app
        .jobs()
        .create(&owner)
        .await
        .map_err(|error| text_failure(error).into_response())?;
    Ok((StatusCode::CREATED, job.id.to_string()))
}

/// `GET /status/{id}?uuid=<owner>`: `pending` / `completed` (text); 404 `error` for an
/// unknown id (also one that is not a job id at all), 401 `unauthorized` for another
/// owner's job.
pub async fn heygen_status(
    State(app): State<App>,
    Path(id): Path<String>,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<&'static str, TextError> {
    let (owner, _) =
        owner_of(query).map_err(|reason| TextError::new(StatusCode::BAD_REQUEST, reason))?;
    let id: JobId = id
        .parse()
        .map_err(|_| TextError::new(StatusCode::NOT_FOUND, "error"))?;
    let job = app
        .jobs()
        .get(id, &owner)
        .await
        .map_err(|error| text_failure(concealed(&app, error)))?;
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

fn job_event(event: &JobEvent) -> Option<Event> {
    Event::default()
        .id(event.id.0.to_string())
        .event("job")
        .json_data(&event.job)
        .ok()
}

async fn event_stream(
    app: &App,
    address: ClientAddress,
    headers: &HeaderMap,
    (owner, query): (Owner, OwnerQuery),
    to_event: fn(&JobEvent) -> Option<Event>,
) -> Result<Response, ApiError> {
    let after = sse::last_event_id(headers, query.last_event_id.as_deref())?;
    let permit = match app
        .streams()
        .acquire(address.0, &format!("owner:{}", owner.as_str()))
    {
        Ok(permit) => permit,
        Err(full) => return Ok(full.into_response()),
    };
    let events = app
        .jobs()
        .events(owner, after)
        .await
        .map_err(json_failure)?;
    Ok(sse::response(app, permit, events, to_event).into_response())
}

/// `GET /status?uuid=<owner>`: SSE, `event: status_<id>` with
/// `data: {"id":<id>,"message":"completed"}` for each of the owner's finished jobs.
pub async fn heygen_events(
    State(app): State<App>,
    address: ClientAddress,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let owner = owner_of(query).map_err(ApiError::bad_request)?;
    event_stream(&app, address, &headers, owner, heygen_event).await
}

/// `GET /v1/events?uuid=<owner>`: SSE, `event: job` with the job as JSON at every change.
pub async fn events(
    State(app): State<App>,
    address: ClientAddress,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let owner = proven_owner(&app, &headers, query)?;
    event_stream(&app, address, &headers, owner, job_event).await
}

/// `POST /v1/jobs?uuid=<owner>`: 201 with the job.
pub async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Job>), Response> {
    let (owner, _) = proven_owner(&app, &headers, query).map_err(IntoResponse::into_response)?;
    app.job_creations()
        .check(&owner)
        .map_err(RateLimited::json)?;
    let job = app
        .jobs()
        .create(&owner)
        .await
        .map_err(|error| json_failure(error).into_response())?;
    Ok((StatusCode::CREATED, Json(job)))
}

/// `GET /v1/jobs?uuid=<owner>&limit=N`: the owner's jobs, newest first.
pub async fn list(
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
    let jobs = app.jobs().list(&owner, limit).await.map_err(json_failure)?;
    Ok(Json(json!({ "jobs": jobs })))
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|error: heartbeat_core::jobs::JobError| ApiError::bad_request(format!("{error}.")))
}

/// `GET /v1/jobs/{id}?uuid=<owner>`: the job; 404 unknown, 403 another owner's (404 with
/// `OWNER_AUTH=required`).
pub async fn get(
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
        .map_err(|error| json_failure(concealed(&app, error)))?;
    Ok(Json(job))
}

/// `PATCH /v1/jobs/{id}` (admin or worker key): a worker's update — `state`, `progress`, `error`.
/// States only move forward; a finished job never changes (409).
pub async fn update(
    _: Worker,
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Job>, ApiError> {
    let id = job_id(&id)?;
    let update: JobUpdate = serde_json::from_value(json_body(&headers, &body)?)
        .map_err(|error| ApiError::bad_request(format!("Invalid job update: {error}.")))?;
    let job = app.jobs().update(id, &update).await.map_err(json_failure)?;
    Ok(Json(job))
}
