use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::broadcast;

use crate::jobs::{BusError, EventBus, EventId, EventStream, Job, JobEvent, Owner};

/// Events kept per owner for replay, by default.
pub const DEFAULT_HISTORY: usize = 256;
/// Events buffered per owner for a slow live subscriber before it lags.
const LIVE_BUFFER: usize = 1024;

#[derive(Debug)]
struct Channel {
    live: broadcast::Sender<JobEvent>,
    history: VecDeque<JobEvent>,
}

#[derive(Debug)]
struct Inner {
    last_id: AtomicU64,
    owners: DashMap<Owner, Channel>,
    history: usize,
}

/// Job events in memory: a broadcast channel and a bounded history per owner.
/// Clones share the same bus.
#[derive(Debug, Clone)]
pub struct MemoryEventBus {
    inner: Arc<Inner>,
}

impl Default for MemoryEventBus {
    fn default() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }
}

impl MemoryEventBus {
    /// A bus keeping [`DEFAULT_HISTORY`] events per owner.
    pub fn new() -> Self {
        Self::default()
    }

    /// A bus keeping `history` events per owner for replay.
    pub fn with_history(history: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                last_id: AtomicU64::new(0),
                owners: DashMap::new(),
                history,
            }),
        }
    }

    fn channel<'a>(&'a self, owner: &Owner) -> dashmap::mapref::one::RefMut<'a, Owner, Channel> {
        self.inner
            .owners
            .entry(owner.clone())
            .or_insert_with(|| Channel {
                live: broadcast::channel(LIVE_BUFFER).0,
                history: VecDeque::new(),
            })
    }
}

impl EventBus for MemoryEventBus {
    async fn publish(&self, job: &Job) -> Result<JobEvent, BusError> {
        let mut channel = self.channel(&job.owner);
        // Ids are drawn under the owner's lock, so one owner's events are in id order.
        let event = JobEvent {
            id: EventId(self.inner.last_id.fetch_add(1, Ordering::Relaxed) + 1),
            job: job.clone(),
        };
        channel.history.push_back(event.clone());
        while channel.history.len() > self.inner.history {
            channel.history.pop_front();
        }
        // No live subscriber is not an error: the history keeps the event.
        let _ = channel.live.send(event.clone());
        Ok(event)
    }

    async fn subscribe(&self, owner: &Owner) -> Result<EventStream, BusError> {
        let receiver = self.channel(owner).live.subscribe();
        Ok(Box::pin(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move {
                match receiver.recv().await {
                    Ok(event) => Some((Ok(event), receiver)),
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        Some((Err(BusError::Lagged { skipped }), receiver))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        )))
    }

    async fn replay(
        &self,
        owner: &Owner,
        after: Option<EventId>,
    ) -> Result<Vec<JobEvent>, BusError> {
        let Some(channel) = self.inner.owners.get(owner) else {
            return Ok(Vec::new());
        };
        Ok(channel
            .history
            .iter()
            .filter(|event| after.is_none_or(|after| event.id > after))
            .cloned()
            .collect())
    }
}
