//! [`EventBus`] on sled: each owner's newest events kept under increasing ids (they survive
//! restarts), live delivery to this process's subscribers through a [`Fanout`].
//!
//! [`Fanout`]: heartbeat_core::live::Fanout

use std::sync::atomic::Ordering;

use heartbeat_core::jobs::{EventBus, EventId, EventStream, Job, JobEvent, Owner};
use heartbeat_core::live::BusError;

use heartbeat_core::store::kit::decode;

use crate::{SledStore, encode, keys, sled_error, stripe_of};

impl EventBus for SledStore {
    async fn publish(&self, job: &Job) -> Result<JobEvent, BusError> {
        let prefix = keys::owner_events(&job.owner);
        // One owner's events are stored and delivered in id order.
        let _owner = self.inner.publish_stripes[stripe_of(&prefix)].lock().await;
        // Ids never go back: they carry the time (EventId::floor_now), so a restart goes on
        // above every id handed out before.
        let mut next = 0;
        let _ =
            self.inner
                .last_event_id
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                    next = EventId::after(last);
                    Some(next)
                });
        let id = EventId(next);
        let event = JobEvent {
            id,
            job: job.clone(),
        };
        let tree = &self.inner.tree;
        tree.insert(keys::event(&job.owner, id), encode(&event)?)
            .map_err(sled_error)?;
        let kept: Vec<_> = tree
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(sled_error)?;
        let excess = kept.len().saturating_sub(self.inner.event_history);
        for old in kept.into_iter().take(excess) {
            tree.remove(old).map_err(sled_error)?;
        }
        self.durable().await?;
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
        let start = keys::event(
            owner,
            EventId(after.map_or(0, |after| after.0.saturating_add(1))),
        );
        let end = keys::event(owner, EventId(u64::MAX));
        let mut events = Vec::new();
        for entry in self.inner.tree.range(start..=end) {
            let (_, value) = entry.map_err(sled_error)?;
            events.push(decode("a job event", &value)?);
        }
        Ok(events)
    }
}
