//! One owner's job events as an SSE stream that loses nothing: subscribe first, replay what
//! the client missed (after its `Last-Event-ID`), then live events, skipping any already
//! sent; after a lag (a slow client, a lost bus connection) replay again from the last id
//! sent. The stream ends when the server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use heartbeat_core::jobs::{BusError, EventBus, EventId, EventStream, JobEvent, JobStore, Owner};
use heartbeat_core::{Clock, SessionStore};

use crate::app::App;
use crate::error::ApiError;
use crate::metrics::SseGuard;

/// The reconnection delay suggested to clients (`retry:`).
pub const RETRY: Duration = Duration::from_secs(2);

/// Reads `Last-Event-ID` (header, or the `last_event_id` query value for clients that
/// cannot set headers).
pub fn last_event_id(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<EventId>, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("invalid"));
    match header
        .or(query)
        .map(str::trim)
        .filter(|text| !text.is_empty())
    {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(|id| Some(EventId(id)))
            .map_err(|_| ApiError::bad_request("Last-Event-ID must be a whole number.")),
    }
}

struct Resume<S, J, B, C> {
    app: App<S, J, B, C>,
    owner: Owner,
    live: EventStream,
    pending: VecDeque<JobEvent>,
    last: Option<EventId>,
    _open: SseGuard,
}

/// The owner's events from `after` on (from now on when `None`), as they happen.
pub async fn owner_events<S, J, B, C>(
    app: &App<S, J, B, C>,
    owner: Owner,
    after: Option<EventId>,
) -> Result<impl Stream<Item = JobEvent> + Send + 'static, BusError>
where
    S: SessionStore,
    J: JobStore,
    B: EventBus,
    C: Clock,
{
    let bus = app.jobs().bus();
    // A fresh client gets what happens from now on: the newest kept id is the baseline,
    // taken before subscribing so that nothing published meanwhile is skipped.
    let baseline = match after {
        Some(after) => Some(after),
        None => bus.replay(&owner, None).await?.last().map(|event| event.id),
    };
    let live = bus.subscribe(&owner).await?;
    let pending = match baseline {
        Some(after) => VecDeque::from(bus.replay(&owner, Some(after)).await?),
        None => VecDeque::from(bus.replay(&owner, None).await?),
    };
    let last = baseline;
    let state = Resume {
        app: app.clone(),
        owner,
        live,
        pending,
        last,
        _open: app.metrics().sse_connection(),
    };
    let events = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                state.last = Some(event.id);
                return Some((event, state));
            }
            match state.live.next().await? {
                Ok(event) if state.last.is_some_and(|last| event.id <= last) => {}
                Ok(event) => {
                    state.last = Some(event.id);
                    return Some((event, state));
                }
                Err(BusError::Lagged { .. }) => {
                    // Boxed: this runs only after a lag, and a store's replay future can
                    // take kilobytes (Redis: ≈ 5 KiB) that every idle stream would
                    // otherwise carry in its state.
                    let bus = state.app.jobs().bus();
                    let missed = Box::pin(bus.replay(&state.owner, state.last)).await;
                    match missed {
                        Ok(missed) => state.pending.extend(missed),
                        Err(error) => {
                            tracing::warn!(%error, "replay failed: ending the stream");
                            return None;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "event bus failed: ending the stream");
                    return None;
                }
            }
        }
    });
    Ok(events.take_until(app.shutdown().clone().cancelled_owned()))
}

/// An SSE response: a first event with `retry:`, then `events` mapped by `to_event`
/// (events it maps to `None` are not sent), with keep-alive comments.
pub fn response<S, J, B, C, E>(
    app: &App<S, J, B, C>,
    events: E,
    to_event: fn(&JobEvent) -> Option<Event>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static>
where
    S: SessionStore,
    J: JobStore,
    B: EventBus,
    C: Clock,
    E: Stream<Item = JobEvent> + Send + 'static,
{
    let hello = Event::default().retry(RETRY).comment("connected");
    let stream = futures_util::stream::once(async move { hello })
        .chain(events.filter_map(move |event| async move { to_event(&event) }))
        .map(Ok);
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(app.settings().sse_keepalive)
            .text("keep-alive"),
    )
}
