//! The admin API (`Authorization: Bearer <ADMIN_KEY>`): issue tokens, list, evict, read
//! progress and history. Without `ADMIN_KEY` every admin route answers 404.

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::response::sse::Event;
use futures_util::StreamExt;
use heartbeat_core::sessions::analytics::{self, ExportItem, FeedEvent, IndexKey};
use heartbeat_core::{HeartbeatData, Id, MAX_ID_LEN, ProgressRecord, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::body::{LimitedBody, json_body};
use crate::error::ApiError;
use crate::sse;

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `ADMIN_KEY` is set: the admin API does not exist (404).
    Off,
    /// The bearer key is missing or wrong (401).
    Unauthorized,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Off => ApiError::not_found("No such route.").into_response(),
            Denied::Unauthorized => {
                let mut response =
                    ApiError::new(StatusCode::UNAUTHORIZED, "Missing or wrong admin key.")
                        .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        }
    }
}

/// Checks the bearer key against any of `keys` (the ones set): [`Denied::Off`] when none
/// is set (the routes do not exist), [`Denied::Unauthorized`] when the key is missing or
/// matches none. Keys are compared as SHA-256 digests in constant time, so neither the
/// time nor the answer tells anything of a key's content or length.
pub fn authorize(keys: &[Option<&str>], headers: &HeaderMap) -> Result<(), Denied> {
    use sha2::{Digest, Sha256};
    let mut set = keys.iter().flatten().peekable();
    if set.peek().is_none() {
        return Err(Denied::Off);
    }
    let given = Sha256::digest(crate::body::bearer(headers).unwrap_or("").as_bytes());
    let matched = set.fold(subtle::Choice::from(0), |matched, expected| {
        matched | given.ct_eq(&Sha256::digest(expected.as_bytes()))
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(Denied::Unauthorized)
    }
}

/// Reads a user, asset or session id from a path segment: a whole number written as a
/// number is written (`13`) is a number id, anything else a string id (`013`, `+13`,
/// `user-7`). Either way it addresses the keys a token with that id uses: the Node
/// server keys users by the id's text, so `13` and `"13"` are one user, `"013"` another.
pub fn path_id(what: &str, text: &str) -> Result<Id, ApiError> {
    if text.is_empty() || text.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to {MAX_ID_LEN} bytes long."
        )));
    }
    Ok(match text.parse::<i64>() {
        Ok(number) if number.to_string() == text => Id::Int(number),
        _ => Id::Str(text.to_owned()),
    })
}

/// Proof that the request carries the admin key: an extractor that answers 404 when the
/// admin API is off and 401 when the key is missing or wrong, before anything else runs.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<App> for Admin {
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Denied> {
        authorize(&[app.settings().admin_key.as_deref()], &parts.headers).map(|()| Admin)
    }
}

/// A proof that the request carries the admin key or one role's own key (`$key` of the
/// settings): an extractor answering 404 when neither is set, 401 when the key is
/// missing or wrong.
macro_rules! role_key {
    ($(#[$doc:meta])* $role:ident, $key:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $role;

        impl FromRequestParts<App> for $role {
            type Rejection = Denied;

            async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Denied> {
                let settings = app.settings();
                let keys = [settings.admin_key.as_deref(), settings.$key.as_deref()];
                authorize(&keys, &parts.headers).map(|()| $role)
            }
        }
    };
}

role_key!(
    /// Proof that the request may update jobs: the admin key or the worker key
    /// (`WORKER_KEY`).
    Worker,
    worker_key
);

role_key!(
    /// Proof that the request may mint heartbeat tokens (`POST /admin/tokens`): the admin
    /// key or the issuer key (`ISSUER_KEY`), which may do nothing else.
    Issuer,
    issuer_key
);

/// `POST /admin/tokens` (admin or issuer key): the body is the heartbeat data of a new
/// playback; answers 201 with an authenticated token (SPEC §3.4).
pub async fn issue_token(
    _: Issuer,
    State(app): State<App>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let data = HeartbeatData::from_json(json_body(&headers, &body)?)
        .map_err(|error| ApiError::bad_request(format!("Invalid heartbeat data: {error}.")))?;
    let token = app
        .heartbeats()
        .issue(&data)
        .map_err(|error| ApiError::bad_request(format!("The token cannot be sealed: {error}.")))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "heartbeat_token": token })),
    )
        .into_response())
}

/// `GET /admin/users/{user}/sessions`: the user's active sessions (devices), oldest first.
pub async fn sessions(
    _: Admin,
    State(app): State<App>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user", &user)?;
    let sessions = app
        .heartbeats()
        .active_sessions(&user)
        .await
        .map_err(|error| ApiError::unavailable(&error))?;
    let sessions: Vec<Value> = sessions
        .into_iter()
        .map(|session| {
            let mut record = serde_json::to_value(&session.record).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut record {
                fields.insert("session_id".into(), Value::String(session.session_id));
            }
            record
        })
        .collect();
    Ok(Json(
        json!({ "user_id": user.to_json(), "sessions": sessions }),
    ))
}

/// `DELETE /admin/users/{user}/sessions/{session}`: evicts one session.
pub async fn evict(
    _: Admin,
    State(app): State<App>,
    Path((user, session)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user", &user)?;
    path_id("session", &session)?;
    let evicted = app
        .heartbeats()
        .evict(&user, &session)
        .await
        .map_err(|error| ApiError::unavailable(&error))?;
    if evicted {
        Ok(Json(json!({ "evicted": session })))
    } else {
        Err(ApiError::not_found(
            "The user has no active session with this id.",
        ))
    }
}

/// `GET /admin/users/{user}/progress/{asset}`: where the user stopped in the asset.
pub async fn progress(
    _: Admin,
    State(app): State<App>,
    Path((user, asset)): Path<(String, String)>,
) -> Result<Json<ProgressRecord>, ApiError> {
    let (user, asset) = (path_id("user", &user)?, path_id("asset", &asset)?);
    app.heartbeats()
        .progress(&user, &asset)
        .await
        .map_err(|error| ApiError::unavailable(&error))?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("No progress is recorded for this user and asset."))
}

/// A route's query, or a 400 saying what is wrong with it.
fn read_query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::bad_query(&rejection))
}

/// Query of the history route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Most entries to return (default and maximum: the history cap).
    pub limit: Option<usize>,
}

/// `GET /admin/users/{user}/history?limit=N`: the user's play history, newest first.
pub async fn history(
    _: Admin,
    State(app): State<App>,
    Path(user): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user", &user)?;
    let query = read_query(query)?;
    let limit = query.limit.unwrap_or(app.settings().retention.history_cap);
    let history = app
        .heartbeats()
        .history(&user, limit)
        .await
        .map_err(|error| ApiError::unavailable(&error))?;
    Ok(Json(
        json!({ "user_id": user.to_json(), "history": history }),
    ))
}

/// Most sessions one `GET /admin/history` returns when it names no `limit`.
pub const EXPORT_DEFAULT_LIMIT: usize = 100_000;

/// Most sessions one `GET /admin/history` may ask for.
pub const EXPORT_MAX_LIMIT: usize = 10_000_000;

/// Query of `GET /admin/history`, and the options of `heartbeat-server export-history`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Sessions that ended at or after this time (ISO 8601).
    pub since: Option<String>,
    /// Sessions that ended before this time (ISO 8601).
    pub until: Option<String>,
    /// Most sessions to return.
    pub limit: Option<usize>,
    /// Continue after the last page (the `cursor` its last line gave).
    pub cursor: Option<String>,
}

/// Reads an optional ISO 8601 query time.
fn query_time(name: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|text| {
        text.parse().map_err(|error| {
            ApiError::bad_request(format!(
                "{name} must be an ISO 8601 time such as 2026-11-30T00:00:00Z: {error}."
            ))
        })
    })
    .transpose()
}

/// The export a query asks for: where it starts, where it ends, how many at most.
fn export_range(query: &ExportQuery) -> Result<(IndexKey, Option<Timestamp>, usize), ApiError> {
    let since = query_time("since", query.since.as_deref())?;
    let until = query_time("until", query.until.as_deref())?;
    if let (Some(since), Some(until)) = (since, until)
        && until < since
    {
        return Err(ApiError::bad_request("until must not be before since."));
    }
    let limit = query.limit.unwrap_or(EXPORT_DEFAULT_LIMIT);
    if !(1..=EXPORT_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {EXPORT_MAX_LIMIT}."
        )));
    }
    let mut after = since.map_or_else(IndexKey::start, IndexKey::floor);
    if let Some(cursor) = &query.cursor {
        let cursor = IndexKey::from_cursor(cursor)
            .map_err(|error| ApiError::bad_request(format!("Invalid cursor: {error}.")))?;
        // Clients often repeat `since` with each page's cursor: the later one wins.
        after = after.max(cursor);
    }
    Ok((after, until, limit))
}

/// One NDJSON line.
fn ndjson_line(value: &impl serde::Serialize) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// `GET /admin/history?since=&until=&limit=&cursor=`: finished sessions of all users as
/// NDJSON, in the order they ended, streamed a page at a time; the last line is
/// `{"cursor": "…", "complete": true|false}` (continue with `cursor=`), or `{"error": "…"}`
/// when the store failed midway (continue from the cursor of the last complete export).
pub async fn export_history(
    _: Admin,
    State(app): State<App>,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let query = read_query(query)?;
    let lines = export_lines(&app, &query)?.map(Ok::<_, Infallible>);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// The NDJSON lines of the export `query` asks for (SPEC §3.9), for `GET /admin/history`
/// and `heartbeat-server export-history`: one finished session per line, then
/// `{"cursor": "…", "complete": true|false}`, or `{"error": "…"}` if the store fails
/// midway. An invalid query is a 400 error naming what is wrong.
pub fn export_lines(
    app: &App,
    query: &ExportQuery,
) -> Result<impl futures_util::Stream<Item = Bytes> + Send + 'static, ApiError> {
    let (after, until, limit) = export_range(query)?;
    Ok(app
        .heartbeats()
        .export(after, until, limit)
        .map(|item| match item {
            Ok(ExportItem::Session(session)) => ndjson_line(&session),
            Ok(ExportItem::End { next, complete }) => {
                ndjson_line(&json!({ "cursor": next.cursor(), "complete": complete }))
            }
            Err(error) => {
                tracing::warn!(%error, "the history export failed midway");
                ndjson_line(&json!({ "error": format!("The store failed midway: {error}.") }))
            }
        }))
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
pub async fn history_events(
    _: Admin,
    State(app): State<App>,
    address: crate::streams::ClientAddress,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let query = read_query(query)?;
    let last = sse::last_event_id_text(&headers, query.last_event_id.as_deref());
    let permit = match app.streams().acquire(address.0, "analytics feed") {
        Ok(permit) => permit,
        Err(full) => return Ok(full.into_response()),
    };
    let after = app.heartbeats().feed_start(last);
    let events = app.heartbeats().feed_stream(after);
    Ok(sse::response(&app, permit, events, feed_event).into_response())
}

/// The SSE event of one feed item.
fn feed_event((key, event): &(IndexKey, FeedEvent)) -> Option<Event> {
    let event = match event {
        FeedEvent::Finished(session) => Event::default().event("session").json_data(session),
        FeedEvent::Refused(refusal) => Event::default().event("refusal").json_data(json!({
            "user_id": analytics::user_id(&refusal.user_id).to_json(),
            "reason": refusal.reason,
            "limit": refusal.limit,
            "at": refusal.at,
        })),
    };
    Some(event.ok()?.id(key.cursor()))
}
