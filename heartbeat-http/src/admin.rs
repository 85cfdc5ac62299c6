//! The admin API (`Authorization: Bearer <ADMIN_KEY>`): issue tokens, list, evict, read
//! progress and history. Without `ADMIN_KEY` every admin route answers 404.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use heartbeat_core::jobs::{EventBus, JobStore};
use heartbeat_core::{HeartbeatData, Id, MAX_ID_LEN, SessionStore};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::error::ApiError;
use crate::heartbeat::json_body;

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

/// Checks the bearer key: [`Denied::Off`] when the admin API is off,
/// [`Denied::Unauthorized`] when the key is missing or wrong (compared in constant time).
pub fn authorize(admin_key: Option<&str>, headers: &HeaderMap) -> Result<(), Denied> {
    let Some(expected) = admin_key else {
        return Err(Denied::Off);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(Denied::Unauthorized)
    }
}

/// Reads a user, asset or session id from a path segment: a whole number is a number id,
/// anything else a string id (they are the same user, as in the Node server's keys).
pub fn path_id(what: &str, text: &str) -> Result<Id, ApiError> {
    if text.is_empty() || text.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to {MAX_ID_LEN} bytes long."
        )));
    }
    Ok(text
        .parse::<i64>()
        .map_or_else(|_| Id::Str(text.to_owned()), Id::Int))
}

fn guard<S, J, B>(app: &App<S, J, B>, headers: &HeaderMap) -> Result<(), Denied>
where
    S: SessionStore,
    J: JobStore,
    B: EventBus,
{
    authorize(app.settings().admin_key.as_deref(), headers)
}

fn store_failure<S, J, B>(
    app: &App<S, J, B>,
    route: &str,
    error: &heartbeat_core::StoreError,
) -> Response
where
    S: SessionStore,
    J: JobStore,
    B: EventBus,
{
    app.metrics().store_error(route);
    ApiError::unavailable(error).into_response()
}

/// `POST /admin/tokens`: the body is the heartbeat data; answers 201 with the token.
pub async fn issue_token<S: SessionStore, J: JobStore, B: EventBus>(
    State(app): State<App<S, J, B>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(denied) = guard(&app, &headers) {
        return denied.into_response();
    }
    let data = match json_body(&headers, body).and_then(|value| {
        HeartbeatData::from_json(value)
            .map_err(|error| ApiError::bad_request(format!("Invalid heartbeat data: {error}.")))
    }) {
        Ok(data) => data,
        Err(error) => return error.into_response(),
    };
    match app.heartbeats().issue(&data) {
        Ok(token) => (
            StatusCode::CREATED,
            Json(json!({ "heartbeat_token": token })),
        )
            .into_response(),
        Err(error) => {
            ApiError::bad_request(format!("The token cannot be sealed: {error}.")).into_response()
        }
    }
}

/// `GET /admin/users/{user}/sessions`: the user's active sessions (devices), oldest first.
pub async fn sessions<S: SessionStore, J: JobStore, B: EventBus>(
    State(app): State<App<S, J, B>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Response {
    if let Err(denied) = guard(&app, &headers) {
        return denied.into_response();
    }
    let user = match path_id("user", &user) {
        Ok(user) => user,
        Err(error) => return error.into_response(),
    };
    match app.heartbeats().active_sessions(&user).await {
        Ok(sessions) => {
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
            Json(json!({ "user_id": user.to_json(), "sessions": sessions })).into_response()
        }
        Err(error) => store_failure(&app, "/admin/users/{user}/sessions", &error),
    }
}

/// `DELETE /admin/users/{user}/sessions/{session}`: evicts one session.
pub async fn evict<S: SessionStore, J: JobStore, B: EventBus>(
    State(app): State<App<S, J, B>>,
    headers: HeaderMap,
    Path((user, session)): Path<(String, String)>,
) -> Response {
    if let Err(denied) = guard(&app, &headers) {
        return denied.into_response();
    }
    let user =
        match path_id("user", &user).and_then(|user| path_id("session", &session).map(|_| user)) {
            Ok(user) => user,
            Err(error) => return error.into_response(),
        };
    match app.heartbeats().evict(&user, &session).await {
        Ok(true) => Json(json!({ "evicted": session })).into_response(),
        Ok(false) => {
            ApiError::not_found("The user has no active session with this id.").into_response()
        }
        Err(error) => store_failure(&app, "/admin/users/{user}/sessions/{session}", &error),
    }
}

/// `GET /admin/users/{user}/progress/{asset}`: where the user stopped in the asset.
pub async fn progress<S: SessionStore, J: JobStore, B: EventBus>(
    State(app): State<App<S, J, B>>,
    headers: HeaderMap,
    Path((user, asset)): Path<(String, String)>,
) -> Response {
    if let Err(denied) = guard(&app, &headers) {
        return denied.into_response();
    }
    let (user, asset) =
        match path_id("user", &user).and_then(|user| Ok((user, path_id("asset", &asset)?))) {
            Ok(ids) => ids,
            Err(error) => return error.into_response(),
        };
    match app.heartbeats().progress(&user, &asset).await {
        Ok(Some(progress)) => Json(progress).into_response(),
        Ok(None) => {
            ApiError::not_found("No progress is recorded for this user and asset.").into_response()
        }
        Err(error) => store_failure(&app, "/admin/users/{user}/progress/{asset}", &error),
    }
}

/// Query of the history route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Most entries to return (default and maximum: the history cap).
    pub limit: Option<usize>,
}

/// `GET /admin/users/{user}/history?limit=N`: the user's play history, newest first.
pub async fn history<S: SessionStore, J: JobStore, B: EventBus>(
    State(app): State<App<S, J, B>>,
    headers: HeaderMap,
    Path(user): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(denied) = guard(&app, &headers) {
        return denied.into_response();
    }
    let user = match path_id("user", &user) {
        Ok(user) => user,
        Err(error) => return error.into_response(),
    };
    let limit = match query {
        Ok(Query(query)) => query.limit.unwrap_or(app.settings().retention.history_cap),
        Err(rejection) => {
            return ApiError::bad_request(format!("Invalid query: {}.", rejection.body_text()))
                .into_response();
        }
    };
    match app.heartbeats().history(&user, limit).await {
        Ok(history) => {
            Json(json!({ "user_id": user.to_json(), "history": history })).into_response()
        }
        Err(error) => store_failure(&app, "/admin/users/{user}/history", &error),
    }
}
