use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::Timestamp;
use crate::jobs::{DEFAULT_EVENT_HISTORY, EventBus, EventId, EventStream, Job, JobEvent, Owner};
use crate::live::{BusError, Fanout};

#[derive(Debug)]
struct Inner {
    last_id: AtomicU64,
    history: DashMap<Owner, VecDeque<JobEvent>>,
    history_len: usize,
    live: Fanout<JobEvent>,
    retention: std::time::Duration,
    sweeps: crate::store::kit::SweepCadence,
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
        Self::with_limits(history, crate::jobs::DEFAULT_JOB_RETENTION)
    }

    /// A bus keeping `history` events per owner, and the events of a finished job for
    /// `retention` after it finished (an owner with nothing left is forgotten).
    pub fn with_limits(history: usize, retention: std::time::Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                last_id: AtomicU64::new(0),
                history: DashMap::new(),
                history_len: history,
                live: Fanout::new(),
                retention,
                sweeps: crate::store::kit::SweepCadence::default(),
            }),
        }
    }

    /// Drops the events of jobs that finished longer than the retention before `now`,
    /// and owners with no event left; returns how many owners are kept.
    pub fn sweep(&self, now: Timestamp) -> usize {
        let retention = self.inner.retention;
        self.inner.history.retain(|_, events| {
            let gone = crate::jobs::jobs_past_retention(events.iter(), now, retention);
            events.retain(|event| !gone.contains(&event.job.id));
            !events.is_empty()
        });
        self.inner.history.len()
    }
}

impl EventBus for MemoryEventBus {
    async fn publish(&self, job: &Job) -> Result<JobEvent, BusError> {
        if self.inner.sweeps.sweep_now() {
            self.sweep(Timestamp::now());
        }
        let mut history = self.inner.history.entry(job.owner.clone()).or_default();
        // Ids are drawn and delivered under the owner's lock, so one owner's events are in
        // id order everywhere.
        let mut id = 0;
        let _ = self
            .inner
            .last_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                id = EventId::after(last);
                Some(id)
            });
        let event = JobEvent {
            id: EventId(id),
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
