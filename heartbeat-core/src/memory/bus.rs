use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::Timestamp;
use crate::jobs::{
    BusError, DEFAULT_EVENT_HISTORY, EventBus, EventId, EventStream, Fanout, Job, JobEvent, Owner,
};

#[derive(Debug)]
struct Inner {
    last_id: AtomicU64,
    history: DashMap<Owner, VecDeque<JobEvent>>,
    history_len: usize,
    live: Fanout,
}

/// Job events in memory: a bounded history per owner and live delivery through a
/// [`Fanout`]. Clones share the same bus.
#[derive(Debug, Clone)]
pub struct MemoryEventBus {
    inner: Arc<Inner>,
}

impl Default for MemoryEventBus {
    fn default() -> Self {
        Self::with_history(DEFAULT_EVENT_HISTORY)
    }
}

impl MemoryEventBus {
    /// A bus keeping [`DEFAULT_EVENT_HISTORY`] events per owner.
    pub fn new() -> Self {
        Self::default()
    }

    /// A bus keeping `history` events per owner for replay.
    pub fn with_history(history: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                last_id: AtomicU64::new(0),
                history: DashMap::new(),
                history_len: history,
                live: Fanout::new(),
            }),
        }
    }
}

impl EventBus for MemoryEventBus {
    async fn publish(&self, job: &Job) -> Result<JobEvent, BusError> {
        let mut history = self.inner.history.entry(job.owner.clone()).or_default();
        // Ids are drawn and delivered under the owner's lock, so one owner's events are in
        // id order everywhere.
        let now = Timestamp::now();
        let last = self
            .inner
            .last_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(EventId::after(last, now))
            })
            .unwrap_or_else(|last| last);
        let event = JobEvent {
            id: EventId(EventId::after(last, now)),
            job: job.clone(),
        };
        history.push_back(event.clone());
        while history.len() > self.inner.history_len {
            history.pop_front();
        }
        self.inner.live.deliver(event.clone());
        Ok(event)
    }

    async fn subscribe(&self, owner: &Owner) -> Result<EventStream, BusError> {
        Ok(self.inner.live.subscribe(owner))
    }

    async fn replay(
        &self,
        owner: &Owner,
        after: Option<EventId>,
    ) -> Result<Vec<JobEvent>, BusError> {
        let Some(history) = self.inner.history.get(owner) else {
            return Ok(Vec::new());
        };
        Ok(history
            .iter()
            .filter(|event| after.is_none_or(|after| event.id > after))
            .cloned()
            .collect())
    }
}
