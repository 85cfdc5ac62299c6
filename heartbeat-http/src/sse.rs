//! Server-Sent Events framing: `retry:`, keep-alive comments, the `Last-Event-ID` header,
//! and ending streams on shutdown. What a stream carries, and that it loses nothing across
//! a resume or a lag, is the core's rule ([`Jobs::events`](heartbeat_core::jobs::Jobs::events)).

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use heartbeat_core::jobs::EventId;

use crate::error::ApiError;
use crate::metrics::GaugeGuard;
use crate::streams::StreamPermit;
use tokio_util::sync::CancellationToken;

/// The reconnection delay suggested to clients (`retry:`).
pub const RETRY: Duration = Duration::from_secs(2);

/// The `Last-Event-ID` text (header, or the `last_event_id` query value for clients that
/// cannot set headers); `None` when absent or blank.
pub fn last_event_id_text<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let header = headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("invalid"));
    header
        .or(query)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// Reads a jobs stream's `Last-Event-ID` (a whole number).
pub fn last_event_id(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<EventId>, ApiError> {
    match last_event_id_text(headers, query) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(|id| Some(EventId(id)))
            .map_err(|_| ApiError::bad_request("Last-Event-ID must be a whole number.")),
    }
}

/// What an event stream needs of the server, and holds while it is open: its place
/// under the stream caps, its count in `heartbeat_sse_connections`, when to end and how
/// often to keep the connection alive. [`App::open_stream`](crate::App::open_stream)
/// makes one.
#[derive(Debug)]
pub struct StreamContext {
    /// Its place under the stream caps (`STREAMS_*`).
    pub permit: StreamPermit,
    /// Counts it as open in the metrics.
    pub open: GaugeGuard,
    /// Ends it when the server shuts down.
    pub shutdown: CancellationToken,
    /// Ends it after this long (`STREAM_MAX_LIFETIME_SECS`); the client reconnects.
    pub max_lifetime: Duration,
    /// How often a keep-alive comment is sent (`SSE_KEEPALIVE_SECS`).
    pub keep_alive: Duration,
}

/// An SSE response: a first event with `retry:`, then `events` mapped by `to_event`
/// (events it maps to `None` are not sent), with keep-alive comments. The stream holds
/// `context` while it is open; it ends when the server shuts down, the event source fails
/// or it has lived its maximum lifetime (the client reconnects with `Last-Event-ID`).
pub fn response<E, T, Failure>(
    context: StreamContext,
    events: E,
    to_event: fn(&T) -> Option<Event>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static>
where
    E: Stream<Item = Result<T, Failure>> + Send + 'static,
    T: Send + 'static,
    Failure: std::fmt::Display + Send + 'static,
{
    let StreamContext {
        permit,
        open,
        shutdown,
        max_lifetime,
        keep_alive,
    } = context;
    let hello = Event::default().retry(RETRY).comment("connected");
    let shutdown = shutdown.cancelled_owned();
    let lifetime = tokio::time::sleep(max_lifetime);
    let events = events
        .take_until(async move {
            tokio::select! {
                () = shutdown => {}
                () = lifetime => {}
            }
        })
        .filter_map(move |event| async move {
            match event {
                Ok(event) => to_event(&event),
                Err(error) => {
                    tracing::warn!(%error, "event source failed: ending the stream");
                    None
                }
            }
        });
    let stream = futures_util::stream::once(async move { hello })
        .chain(events)
        .map(move |event| {
            // The stream owns the guards: the connection counts until it is dropped.
            let _open = (&open, &permit);
            Ok(event)
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
}
