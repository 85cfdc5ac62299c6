//! The admin API (`Authorization: Bearer <ADMIN_KEY>`): issue tokens, list and evict
//! sessions, read progress and history. Without `ADMIN_KEY` every admin route answers 404.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use heartbeat_core::{HeartbeatData, ProgressRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::extract::auth::{Admin, Issuer};
use crate::extract::body::{LimitedBody, json_body};
use crate::extract::query::{path_id, read_query};
use crate::state::App;

/// `POST /admin/tokens` (admin or issuer key): the body is the heartbeat data of a new
/// playback; answers 201 with an authenticated token (SPEC §3.4).
pub(crate) async fn issue_token(
    _: Issuer,
    State(app): State<App>,
    LimitedBody {
        headers,
        bytes: body,
    }: LimitedBody,
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
pub(crate) async fn sessions(
    _: Admin,
    State(app): State<App>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user", &user)?;
    let sessions = app.heartbeats().active_sessions(&user).await?;
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
pub(crate) async fn evict(
    _: Admin,
    State(app): State<App>,
    Path((user, session)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user", &user)?;
    path_id("session", &session)?;
    let evicted = app.heartbeats().evict(&user, &session).await?;
    if evicted {
        Ok(Json(json!({ "evicted": session })))
    } else {
        Err(ApiError::not_found(
            "The user has no active session with this id.",
        ))
    }
}

/// `GET /admin/users/{user}/progress/{asset}`: where the user stopped in the asset.
pub(crate) async fn progress(
    _: Admin,
    State(app): State<App>,
    Path((user, asset)): Path<(String, String)>,
) -> Result<Json<ProgressRecord>, ApiError> {
    let (user, asset) = (path_id("user", &user)?, path_id("asset", &asset)?);
    app.heartbeats()
        .progress(&user, &asset)
        .await?
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
pub(crate) async fn history(
    _: Admin,
    State(app): State<App>,
    Path(user): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user", &user)?;
    let query = read_query(query)?;
    let limit = query.limit.unwrap_or(app.settings().retention.history_cap);
    let history = app.heartbeats().history(&user, limit).await?;
    Ok(Json(
        json!({ "user_id": user.to_json(), "history": history }),
    ))
}
