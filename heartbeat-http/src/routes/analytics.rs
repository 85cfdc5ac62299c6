//! `GET /admin/history` (the bulk export) and `GET /admin/history/events` (the live feed)
//! (SPEC §3.9).

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use heartbeat_core::sessions::analytics::{Export, FeedEvent, IndexKey};
use serde::Deserialize;

use crate::error::ApiError;
use crate::export::{ExportQuery, export_lines};
use crate::extract::auth::Admin;
use crate::extract::query::read_query;
use crate::sse;
use crate::state::App;

/// `GET /admin/history?since=&until=&limit=&cursor=`: finished sessions of all users as
/// NDJSON, in the order they ended, streamed a page at a time; the last line is
/// `{"cursor": "…", "complete": true|false}` (continue with `cursor=`), or `{"error": "…"}`
/// when the store failed midway (continue from the cursor of the last complete export).
pub(crate) async fn export(
    _: Admin,
    State(app): State<App>,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    ndjson(&app, Export::Sessions, query)
}

/// `GET /admin/refusals?since=&until=&limit=&cursor=`: refused heartbeats of all users,
/// and those report-only limits would have refused (`"enforced": false`, SPEC §3.8), as
/// NDJSON in the order they were decided; pages like `GET /admin/history`.
pub(crate) async fn refusals(
    _: Admin,
    State(app): State<App>,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    ndjson(&app, Export::Refusals, query)
}

/// The NDJSON answer of an export.
fn ndjson(
    app: &App,
    what: Export,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let query = read_query(query)?;
    let lines = export_lines(app, what, &query)?.map(Ok::<_, Infallible>);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Query of `GET /admin/history/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// `Last-Event-ID` for clients that cannot set headers.
    pub last_event_id: Option<String>,
}

/// `GET /admin/history/events`: SSE of sessions as they finish (`event: session`, the
/// export's record) and of refused heartbeats (`event: refusal`), on every instance
/// sharing the store; resumes after `Last-Event-ID`.
pub(crate) async fn events(
    _: Admin,
    State(app): State<App>,
    address: crate::streams::ClientAddress,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let query = read_query(query)?;
    let last = sse::last_event_id_text(&headers, query.last_event_id.as_deref());
    let stream = match app.open_stream(address.0, "analytics feed") {
        Ok(stream) => stream,
        Err(full) => return Ok(full.into_response()),
    };
    let after = app.heartbeats().feed_start(last);
    let events = app.heartbeats().feed_stream(after);
    Ok(sse::response(stream, events, feed_event).into_response())
}

/// The SSE event of one feed item.
fn feed_event((key, event): &(IndexKey, FeedEvent)) -> Option<Event> {
    let event = match event {
        FeedEvent::Finished(session) => Event::default().event("session").json_data(session),
        FeedEvent::Refused(refusal) => Event::default()
            .event("refusal")
            .json_data(refusal.clone().record()),
    };
    Some(event.ok()?.id(key.cursor()))
}
