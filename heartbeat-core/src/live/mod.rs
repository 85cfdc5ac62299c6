//! Live delivery (shared by the jobs and the sessions side) to the subscribers of this process, per key: job events per owner, and
//! session notices per session (SPEC §3.7).
//!
//! Every [`EventBus`](crate::jobs::EventBus) keeps its history its own way (memory, sled, Redis)
//! but hands live events to local subscribers the same way: through a [`Fanout`].

use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::store::StoreError;

/// Something a [`Fanout`] delivers: it names the key of the subscribers it is for.
pub trait Routed: Clone + Send + Sync + 'static {
    /// What subscribers subscribe to.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    /// Items buffered per key for a slow subscriber before it lags.
    const BUFFER: usize = LIVE_BUFFER;
    /// The key of the subscribers this is for.
    fn route(&self) -> Self::Key;
}

/// What [`Fanout::subscribe`] returns: live items, or [`BusError::Lagged`] when some were
/// missed.
pub type LiveStream<T> = Pin<Box<dyn Stream<Item = Result<T, BusError>> + Send>>;

/// Events buffered per owner for a slow subscriber before it lags (and replays from the
/// bus's history). Small: every owner with a live subscriber has a channel of this size,
/// and an owner rarely has more than a few events in flight at once.
pub const LIVE_BUFFER: usize = 16;

/// Drop channels nobody listens to after this many subscriptions.
const PRUNE_EVERY: u64 = 1024;

#[derive(Debug, Clone)]
enum Delivery<T> {
    Event(Arc<T>),
    /// Events may have been missed (a bus connection was lost and came back).
    Gap,
}

/// One broadcast channel per key (per owner for job events) with live subscribers; none
/// for other keys.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use futures_util::StreamExt;
/// use heartbeat_core::Timestamp;
/// use heartbeat_core::jobs::{EventId, JobEvent, JobId, NewJob, Owner};
/// use heartbeat_core::live::Fanout;
///
/// let fanout = Fanout::new();
/// let owner = Owner::new("alice").unwrap();
/// let mut live = fanout.subscribe(&owner);
/// let job = NewJob { owner, created_at: Timestamp::now(), complete_at: None }.into_job(JobId(1));
/// fanout.deliver(JobEvent { id: EventId(1), job });
/// assert_eq!(live.next().await.unwrap().unwrap().id, EventId(1));
/// # });
/// ```
#[derive(Debug)]
pub struct Fanout<T: Routed> {
    owners: DashMap<T::Key, broadcast::Sender<Delivery<T>>>,
    subscriptions: AtomicU64,
}

impl<T: Routed> Default for Fanout<T> {
    fn default() -> Self {
        Self {
            owners: DashMap::new(),
            subscriptions: AtomicU64::new(0),
        }
    }
}

impl<T: Routed> Fanout<T> {
    /// No subscribers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live items for `owner` (the key) delivered from now on. The stream yields
    /// [`BusError::Lagged`] when items were dropped for it (it was too slow, or
    /// [`signal_gap`](Self::signal_gap) was called): replay or re-read to catch up.
    pub fn subscribe(&self, owner: &T::Key) -> LiveStream<T> {
        if self.subscriptions.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        let receiver = self
            .owners
            .entry(owner.clone())
            .or_insert_with(|| broadcast::channel(T::BUFFER).0)
            .subscribe();
        Box::pin(
            BroadcastStream::new(receiver).map(|delivery| match delivery {
                Ok(Delivery::Event(event)) => Ok(T::clone(&event)),
                Ok(Delivery::Gap) => Err(BusError::Lagged { skipped: 0 }),
                Err(BroadcastStreamRecvError::Lagged(skipped)) => Err(BusError::Lagged { skipped }),
            }),
        )
    }

    /// Hands `event` to the live subscribers of its key (its job's owner), if any.
    pub fn deliver(&self, event: T) {
        let owner = event.route();
        let Some(sender) = self.owners.get(&owner).map(|entry| entry.value().clone()) else {
            return;
        };
        if sender.send(Delivery::Event(Arc::new(event))).is_err() {
            // Nobody listens any more: forget the channel unless someone just subscribed.
            self.owners
                .remove_if(&owner, |_, sender| sender.receiver_count() == 0);
        }
    }

    /// Tells every subscriber that events may have been missed, so it replays.
    pub fn signal_gap(&self) {
        for entry in self.owners.iter() {
            let _ = entry.value().send(Delivery::Gap);
        }
    }

    /// The keys (owners) with at least one live subscriber now.
    pub fn watched(&self) -> Vec<T::Key> {
        self.owners
            .iter()
            .filter(|entry| entry.value().receiver_count() > 0)
            .map(|entry| entry.key().clone())
            .collect()
    }

    /// Forgets the channels of owners nobody listens to any more.
    pub fn prune(&self) {
        self.owners.retain(|_, sender| sender.receiver_count() > 0);
    }
}

/// Why an event could not be published or received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The subscriber was too slow and `skipped` events were dropped for it.
    #[error("subscriber lagged behind and missed {skipped} events; replay to catch up")]
    Lagged {
        /// How many were dropped.
        skipped: u64,
    },
    /// The bus's backing store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
