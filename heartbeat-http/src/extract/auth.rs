//! Who may do what: the admin, worker and issuer keys (bearer keys compared in constant
//! time) and the owner of a request (its owner token, or a backend's key). The one place a request's
//! credentials are read.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use heartbeat_core::jobs::{JobsError, Owner};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::App;

/// The token of an `Authorization: Bearer <token>` header, trimmed; `None` without one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

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
    let given = Sha256::digest(bearer(headers).unwrap_or("").as_bytes());
    let matched = set.fold(subtle::Choice::from(0), |matched, expected| {
        matched | given.ct_eq(&Sha256::digest(expected.as_bytes()))
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(Denied::Unauthorized)
    }
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

pub(crate) fn owner_of(
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

/// How a request proved that it may act for its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proof {
    /// The admin or the worker key: a backend acting for many owners.
    Key,
    /// The owner's own token.
    Token,
    /// Nothing: a plain `uuid` (accepted unless `OWNER_AUTH=required`).
    Nothing,
}

impl Proof {
    /// Whether the request counts against its client address's allowances: a backend
    /// that proved who it is (a key, an owner token) serves many users from one address
    /// and is not throttled as one client.
    pub(crate) fn counts_by_address(self) -> bool {
        self == Proof::Nothing
    }
}

/// Why a request's owner was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnerRefused {
    /// The query is unreadable or has no valid `uuid` (400).
    BadRequest(String),
    /// The owner token is missing (`OWNER_AUTH=required`), wrong or expired (401). It
    /// says nothing of the owner.
    Unauthorized,
}

impl From<OwnerRefused> for ApiError {
    fn from(refused: OwnerRefused) -> Self {
        match refused {
            OwnerRefused::BadRequest(reason) => ApiError::bad_request(reason),
            OwnerRefused::Unauthorized => ApiError::unauthorized_owner(),
        }
    }
}

/// The HeyGen routes' plain text: the reason (400), or `unauthorized` (401).
impl From<OwnerRefused> for crate::error::TextError {
    fn from(refused: OwnerRefused) -> Self {
        match refused {
            OwnerRefused::BadRequest(reason) => Self::new(StatusCode::BAD_REQUEST, reason),
            OwnerRefused::Unauthorized => Self::new(StatusCode::UNAUTHORIZED, "unauthorized"),
        }
    }
}

/// The owner of a request (`/v1` and HeyGen routes alike): its `uuid`, and how the request
/// proved it may act for it. The admin or worker key as the bearer acts for any owner;
/// with `OWNER_KEY` set, an owner token (`Authorization: Bearer owner.…` or
/// `?owner_token=`) is checked when given, and required when `OWNER_AUTH=required`.
pub(crate) fn prove_owner(
    app: &App,
    headers: &HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<(Owner, OwnerQuery, Proof), OwnerRefused> {
    let (owner, query) = owner_of(query).map_err(OwnerRefused::BadRequest)?;
    let settings = app.settings();
    if bearer(headers).is_some()
        && authorize(
            &[
                settings.admin_key.as_deref(),
                settings.worker_key.as_deref(),
            ],
            headers,
        )
        .is_ok()
    {
        return Ok((owner, query, Proof::Key));
    }
    let Some(tokens) = &settings.owner_tokens else {
        return Ok((owner, query, Proof::Nothing));
    };
    let proof = match bearer(headers).or(query.owner_token.as_deref()) {
        Some(token) => {
            let now = heartbeat_core::Timestamp::now().unix_millis() / 1000;
            tokens
                .key
                .verify(&owner, token.trim(), now)
                .then_some(Proof::Token)
        }
        None => (!tokens.required).then_some(Proof::Nothing),
    };
    proof
        .map(|proof| (owner, query, proof))
        .ok_or(OwnerRefused::Unauthorized)
}

/// The owner of a `/v1` request, as [`prove_owner`] accepts it, answered as JSON when
/// refused.
pub(crate) fn proven_owner(
    app: &App,
    headers: &HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<(Owner, OwnerQuery), ApiError> {
    let (owner, query, _) = prove_owner(app, headers, query)?;
    Ok((owner, query))
}

/// With `OWNER_AUTH=required`, another owner's job is answered as an unknown one (404,
/// on the `/v1` and the HeyGen routes alike): a 401 or 403 would confirm it exists.
pub(crate) fn concealed(app: &App, error: JobsError) -> JobsError {
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
