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
    /// Called when the client goes away: the stream is dropped before it ended by itself
    /// (not at the server's shutdown, its lifetime or the end of its events).
    pub on_client_gone: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for StreamContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamContext")
            .field("permit", &self.permit)
            .field("max_lifetime", &self.max_lifetime)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// Holds [`StreamContext::on_client_gone`] while a stream is open, and calls it when the
/// stream is dropped unfinished.
struct ClientGone {
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hook: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for ClientGone {
    fn drop(&mut self) {
        if !self.finished.load(std::sync::atomic::Ordering::Acquire)
            && let Some(hook) = self.hook.take()
        {
            hook();
        }
    }
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
        on_client_gone,
    } = context;
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gone = ClientGone {
        finished: std::sync::Arc::clone(&finished),
        hook: on_client_gone,
    };
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
    // Polled once the events end (shutdown, lifetime, source done): the stream finished by
    // itself, so dropping it afterwards is not its client going away.
    let ended = futures_util::stream::poll_fn(move |_| {
        finished.store(true, std::sync::atomic::Ordering::Release);
        std::task::Poll::Ready(None)
    });
    let stream = futures_util::stream::once(async move { hello })
        .chain(events)
        .chain(ended)
        .map(move |event| {
            // The stream owns the guards: the connection counts until it is dropped.
            let _open = (&open, &permit, &gone);
            Ok(event)
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::response::IntoResponse;

    use super::*;
    use crate::metrics::Metrics;
    use crate::streams::{StreamCaps, StreamSlots};

    /// A stream context whose `on_client_gone` raises the returned flag.
    fn stream_context(max_lifetime: Duration) -> (StreamContext, Arc<AtomicBool>) {
        let gone = Arc::new(AtomicBool::new(false));
        let raised = Arc::clone(&gone);
        let slots = StreamSlots::new(StreamCaps::default());
        let context = StreamContext {
            permit: slots
                .acquire("127.0.0.1".parse().unwrap(), "owner")
                .unwrap(),
            open: Metrics::new().sse_connection(),
            shutdown: CancellationToken::new(),
            max_lifetime,
            keep_alive: Duration::from_secs(60),
            on_client_gone: Some(Box::new(move || raised.store(true, Ordering::SeqCst))),
        };
        (context, gone)
    }

    fn event(text: &&'static str) -> Option<Event> {
        Some(Event::default().data(*text))
    }

    /// Reads `frames` frames of the response body, or all of them (`None`), then drops it.
    async fn read(
        events: impl Stream<Item = Result<&'static str, Infallible>> + Send + 'static,
        context: StreamContext,
        frames: Option<usize>,
    ) {
        let body = response(context, events, event).into_response().into_body();
        let mut data = body.into_data_stream();
        let mut read = 0;
        while frames.is_none_or(|frames| read < frames) {
            match data.next().await {
                Some(chunk) => drop(chunk.unwrap()),
                None => break,
            }
            read += 1;
        }
    }

    /// `on_client_gone` runs when the body is dropped before the stream ended, and not
    /// when it ended by itself: its events done (a session's `ended` notice), or its
    /// lifetime over.
    #[tokio::test]
    async fn the_client_going_away_is_told_apart_from_the_stream_ending() {
        let (context, gone) = stream_context(Duration::from_secs(60));
        read(
            futures_util::stream::iter([Ok("a"), Ok("b")]),
            context,
            None,
        )
        .await;
        assert!(!gone.load(Ordering::SeqCst), "the events ended");

        let (context, gone) = stream_context(Duration::from_millis(50));
        let endless = futures_util::stream::iter([Ok("a")]).chain(futures_util::stream::pending());
        read(endless, context, None).await;
        assert!(!gone.load(Ordering::SeqCst), "its lifetime ended it");

        let (context, gone) = stream_context(Duration::from_secs(60));
        let endless = futures_util::stream::iter([Ok("a")]).chain(futures_util::stream::pending());
        read(endless, context, Some(2)).await;
        assert!(
            gone.load(Ordering::SeqCst),
            "dropped while open: its client went away"
        );
    }
}
