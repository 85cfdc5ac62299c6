//! The bulk history export as NDJSON lines (SPEC §3.9): what `GET /admin/history` streams
//! and `heartbeat-server export-history` prints.

use axum::body::Bytes;
use futures_util::StreamExt;
use heartbeat_core::Timestamp;
use heartbeat_core::sessions::analytics::{Export, ExportItem, IndexKey};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::state::App;

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
pub(crate) fn ndjson_line(value: &impl serde::Serialize) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The NDJSON lines of the export `query` asks for (SPEC §3.9), for `GET /admin/history`,
/// `GET /admin/refusals` and `heartbeat-server export-history`: one finished session (or
/// refusal, as `what` says) per line, then `{"cursor": "…", "complete": true|false}`, or
/// `{"error": "…"}` if the store fails midway. An invalid query is a 400 error naming what
/// is wrong.
pub fn export_lines(
    app: &App,
    what: Export,
    query: &ExportQuery,
) -> Result<impl futures_util::Stream<Item = Bytes> + Send + 'static, ApiError> {
    let (after, until, limit) = export_range(query)?;
    Ok(app
        .heartbeats()
        .export(what, after, until, limit)
        .map(|item| match item {
            Ok(ExportItem::Session(session)) => ndjson_line(&session),
            Ok(ExportItem::Refusal(refusal)) => ndjson_line(&refusal),
            Ok(ExportItem::End { next, complete }) => {
                ndjson_line(&json!({ "cursor": next.cursor(), "complete": complete }))
            }
            Err(error) => {
                tracing::warn!(%error, "the history export failed midway");
                ndjson_line(&json!({ "error": format!("The store failed midway: {error}.") }))
            }
        }))
}
