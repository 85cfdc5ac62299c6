//! Job changes that were stored but could not be published yet (the bus failed: a Redis
//! timeout, a lost connection). They are published again, in order, before any later
//! change and on every tick of [`Jobs::run_background`](super::Jobs::run_background), until
//! the bus takes them: a stored change always reaches its owner's streams (SPEC §4, at
//! least once).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use super::model::Job;
use super::store::EventBus;
use crate::live::BusError;

/// Changes waiting to be published, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    waiting: Mutex<VecDeque<Job>>,
    /// One flush at a time, so that waiting changes go out in order.
    flushing: tokio::sync::Mutex<()>,
}

impl Outbox {
    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        // Plain data: a panic elsewhere cannot leave the queue half-written.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes waiting now.
    pub(crate) fn len(&self) -> usize {
        self.waiting().len()
    }

    /// Publishes `job`'s change, after any that wait; a change the bus refuses waits for
    /// the next try (the outbox keeps it: nothing for the caller to do).
    pub(crate) async fn publish<B: EventBus>(&self, bus: &B, job: &Job) {
        if self.len() == 0 && bus.publish(job).await.is_ok() {
            return;
        }
        self.waiting().push_back(job.clone());
        let _ = self.flush(bus).await;
    }

    /// Publishes the waiting changes in order; stops at the first the bus refuses.
    pub(crate) async fn flush<B: EventBus>(&self, bus: &B) -> Result<(), BusError> {
        let _one_at_a_time = self.flushing.lock().await;
        loop {
            let Some(job) = self.waiting().front().cloned() else {
                return Ok(());
            };
            bus.publish(&job).await?;
            self.waiting().pop_front();
        }
    }
}
