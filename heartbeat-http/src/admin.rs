//! The admin API (`Authorization: Bearer <ADMIN_KEY>`): issue tokens, list, evict, read
//! progress and history. Without `ADMIN_KEY` every admin route answers 404.

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use heartbeat_core::{HeartbeatData, Id, MAX_ID_LEN, ProgressRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::body::{LimitedBody, json_body};
use crate::error::ApiError;

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

/// Proof that the request carries the admin key: an extractor that answers 404 when the
/// admin API is off and 401 when the key is missing or wrong, before anything else runs.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<App> for Admin {
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Denied> {
        authorize(app.settings().admin_key.as_deref(), &parts.headers).map(|()| Admin)
    }
}

/// `POST /admin/tokens`: the body is the heartbeat data; answers 201 with the token.
pub async fn issue_token(
    _: Admin,
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
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("Invalid query: {}.", rejection.body_text()))
    })?;
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
