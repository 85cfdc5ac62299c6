//! Request bodies: read up to `BODY_LIMIT`, as JSON or (heartbeat routes) as an HTML form,
//! the two forms the Node server's Express parses (SPEC §3.5).
//!
//! A body over the limit is read on and thrown away, up to [`DRAIN_LIMIT`], before the 413
//! is sent: clients that send the whole body before they read the answer (Node's `fetch`,
//! browsers) then see the 413 instead of a connection reset, as Express answers them.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::App;

/// How much of a body over the limit is read and discarded before the 413; a larger one
/// is cut off (the connection closes).
pub const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

/// A request body of at most the server's `BODY_LIMIT`, read whole.
#[derive(Debug, Clone)]
pub struct LimitedBody(pub Bytes);

impl FromRequest<App> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &App) -> Result<Self, ApiError> {
        read_limited(request, app.settings().body_limit).await
    }
}

async fn read_limited(request: Request, limit: usize) -> Result<LimitedBody, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is too large: at most {limit} bytes are accepted."),
        )
    };
    let mut chunks = request.into_body().into_data_stream();
    let mut body = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::bad_request(format!("The request body could not be read: {error}"))
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            body.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            return Err(too_large());
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(LimitedBody(Bytes::from(body)))
}

/// The media type of the body, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
}

fn is_json(mime: &str) -> bool {
    mime == "application/json" || mime.ends_with("+json")
}

/// Reads a JSON body (`Content-Type: application/json`).
///
/// # Errors
///
/// 415 for another content type, 400 for text that is not JSON.
pub fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if !media_type(headers).is_some_and(|mime| is_json(&mime)) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json.",
        ));
    }
    parse_json(body)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("The body is not valid JSON: {error}")))
}

/// Reads a JSON or an HTML form body (`application/x-www-form-urlencoded`) into an
/// object's fields. A form field given more than once becomes an array of its values, as
/// Express (`querystring`) makes it.
///
/// # Errors
///
/// 415 for another content type, 400 for a JSON body that is not an object.
pub fn json_or_form_fields(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, Value>, ApiError> {
    match media_type(headers).as_deref() {
        Some("application/x-www-form-urlencoded") => Ok(form_fields(body)),
        Some(mime) if is_json(mime) => match parse_json(body)? {
            Value::Object(fields) => Ok(fields),
            _ => Err(ApiError::bad_request("The body must be a JSON object.")),
        },
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json or application/x-www-form-urlencoded.",
        )),
    }
}

/// A form's fields; one given more than once becomes an array of its values.
fn form_fields(body: &[u8]) -> Map<String, Value> {
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        match fields.get_mut(name.as_ref()) {
            None => {
                fields.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    fields
}
