//! Path segments and query strings: one reading, one 400 text.

use axum::extract::Query;
use heartbeat_core::jobs::JobId;
use heartbeat_core::{Id, MAX_ID_LEN};

use crate::error::ApiError;

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

/// A route's query, or a 400 saying what is wrong with it.
pub(crate) fn read_query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::bad_query(&rejection))
}

pub(crate) fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|error: heartbeat_core::jobs::JobError| ApiError::bad_request(format!("{error}.")))
}
