//! One owner's events as a stream that loses nothing across a resume or a lag: the rule
//! behind both SSE streams of the server.
//!
//! Subscribe first, then replay what the client missed (after its `Last-Event-ID`), then
//! live events, skipping any already sent; after a lag (a slow subscriber, a lost bus
//! connection) replay again from the last id sent.

use std::collections::VecDeque;

use futures_core::Stream;
use futures_util::StreamExt;

use super::model::Owner;
use super::service::{Jobs, JobsError};
use super::store::{EventBus, EventId, EventStream, JobEvent, JobStore};
use crate::Clock;
use crate::live::BusError;

struct Resume<B> {
    bus: B,
    owner: Owner,
    live: EventStream,
    pending: VecDeque<JobEvent>,
    last: Option<EventId>,
    failed: bool,
}

impl<S: JobStore, B: EventBus + Clone, C: Clock> Jobs<S, B, C> {
    /// The events of `owner` after `after` (from now on when `None`), then live ones as
    /// they happen: every event once, in id order.
    ///
    /// A fresh subscriber (`after` is `None`) gets what happens from now on. A subscriber
    /// that resumes gets the kept events after its id first; one whose id is ahead of
    /// every kept event (the bus does not know it) gets every kept event, then the live
    /// ones: it is never left silent. When the live subscription lags, the missed events
    /// are replayed from the bus's history. A bus failure is yielded once as an error, and
    /// then the stream ends.
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use heartbeat_core::jobs::{Jobs, Owner};
    /// use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let jobs = Jobs::new(MemoryJobStore::new(), MemoryEventBus::new());
    /// let alice = Owner::new("alice")?;
    /// let mut events = Box::pin(jobs.events(alice.clone(), None).await?);
    /// let job = jobs.create(&alice).await?;
    /// assert_eq!(events.next().await.unwrap()?.job.id, job.id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn events(
        &self,
        owner: Owner,
        after: Option<EventId>,
    ) -> Result<impl Stream<Item = Result<JobEvent, JobsError>> + Send + 'static, JobsError> {
        let bus = self.bus().clone();
        // Taken before subscribing, so that nothing published meanwhile is skipped.
        let newest = bus.replay(&owner, None).await?.last().map(|event| event.id);
        let baseline = match after {
            // A fresh subscriber: what happens from now on.
            None => newest,
            // A resume the bus can serve: what came after the client's id.
            Some(after) if newest.is_some_and(|newest| after <= newest) => Some(after),
            // An id ahead of every kept event (another deployment's, or from before the
            // store lost its data): never left silent, the client gets every kept event
            // and then the live ones (SPEC §4).
            Some(_) => None,
        };
        let live = bus.subscribe(&owner).await?;
        let pending = VecDeque::from(self.retained_events(bus.replay(&owner, baseline).await?));
        let state = Resume {
            bus,
            owner,
            live,
            pending,
            last: baseline,
            failed: false,
        };
        Ok(futures_util::stream::unfold(state, next_event))
    }
}

async fn next_event<B: EventBus>(
    mut state: Resume<B>,
) -> Option<(Result<JobEvent, JobsError>, Resume<B>)> {
    if state.failed {
        return None;
    }
    loop {
        if let Some(event) = state.pending.pop_front() {
            state.last = Some(event.id);
            return Some((Ok(event), state));
        }
        match state.live.next().await? {
            Ok(event) if state.last.is_some_and(|last| event.id <= last) => {}
            Ok(event) => {
                state.last = Some(event.id);
                return Some((Ok(event), state));
            }
            Err(BusError::Lagged { .. }) => {
                // Boxed: this runs only after a lag, and a store's replay future can take
                // kilobytes (Redis: ≈ 5 KiB) that every idle stream would otherwise carry in
                // its state.
                let missed = Box::pin(state.bus.replay(&state.owner, state.last)).await;
                match missed {
                    Ok(missed) => state.pending.extend(missed),
                    Err(error) => {
                        state.failed = true;
                        return Some((Err(error.into()), state));
                    }
                }
            }
            Err(error) => {
                state.failed = true;
                return Some((Err(error.into()), state));
            }
        }
    }
}
