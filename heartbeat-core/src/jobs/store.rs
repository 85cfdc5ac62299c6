//! The storage contract for jobs and their events.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::model::{Job, JobId, NewJob, Owner};
use crate::Timestamp;
use crate::live::{BusError, LiveStream, Routed};
use crate::store::{Commit, StoreError};

/// Storage for jobs.
///
/// # Contract
///
/// - [`create`](Self::create) gives every job a new id, greater than every id given before
///   (also across restarts of a persistent store and across instances sharing one).
/// - [`get`](Self::get) returns the job with a version; [`compare_and_set`](Self::compare_and_set)
///   replaces it only if it is still at that version. The rules of what may change live in
///   [`Job::apply`]; the store only compares and swaps.
/// - [`list_by_owner`](Self::list_by_owner) lists one owner's jobs, newest first.
/// - [`due`](Self::due) lists jobs whose `complete_at` has come, earliest first. A job
///   leaves this due index when a version of it is stored that says so
///   ([`Job::due_entry_to_drop`]); [`Jobs`](super::Jobs) skips any touched job that is
///   still listed.
pub trait JobStore: Send + Sync + 'static {
    /// What identifies a loaded job for compare-and-set.
    type Version: Send + Sync + 'static;

    /// Stores a new job under a fresh, increasing id.
    fn create<'a>(
        &'a self,
        job: NewJob,
    ) -> impl Future<Output = Result<Job, StoreError>> + Send + 'a;

    /// A job and its version.
    fn get(
        &self,
        id: JobId,
    ) -> impl Future<Output = Result<Option<(Job, Self::Version)>, StoreError>> + Send;

    /// Replaces a job if it is still at `version`.
    fn compare_and_set(
        &self,
        version: &Self::Version,
        job: &Job,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    /// An owner's jobs, newest first, at most `limit`.
    fn list_by_owner<'a>(
        &'a self,
        owner: &'a Owner,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send + 'a;

    /// Up to `limit` jobs whose `complete_at` is at or before `now`, earliest first, each
    /// with its version, so that completing one needs no second read.
    fn due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Job, Self::Version)>, StoreError>> + Send;
}

/// Events an event bus keeps per owner for replay, unless configured otherwise.
pub const DEFAULT_EVENT_HISTORY: usize = 256;

/// A job event id: increasing in publication order on one bus (shared by all instances
/// of a shared store). SSE sends it as `id:` so clients resume with `Last-Event-ID`.
///
/// Ids never go back (SPEC §4): every id is at least [`EventId::floor_now`] when it is
/// published (the time in microseconds), so a store that loses its counter (the memory
/// store restarting, Redis restarting without persistence, a failover, an expired counter)
/// goes on above every id it gave before, as long as the clock does not go back by more
/// than the time between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub u64);

impl EventId {
    /// The smallest id an event published now gets: microseconds since 1970 by the system
    /// clock (≈ 1.8 × 10¹⁵ in 2026, a safe integer for JavaScript clients until the year
    /// 2255). A counter that starts afresh (a new process, a counter that was lost) goes
    /// on above every id handed out more than a microsecond before.
    pub fn floor_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
            })
    }

    /// The id of an event published now after the one numbered `last`: above both.
    pub fn after(last: u64) -> u64 {
        last.saturating_add(1).max(Self::floor_now())
    }
}

/// A change of a job, as published to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Its place in the bus's order.
    pub id: EventId,
    /// The job as it is after the change.
    pub job: Job,
}

/// The jobs of `events` that finished longer than `retention` before `now`: all their
/// events go (the ones from before they finished too). The one rule for which events are
/// kept, used by the service and by stores that sweep.
pub fn jobs_past_retention<'a>(
    events: impl IntoIterator<Item = &'a JobEvent>,
    now: Timestamp,
    retention: std::time::Duration,
) -> std::collections::HashSet<JobId> {
    events
        .into_iter()
        .filter(|event| event.job.is_past_retention(now, retention))
        .map(|event| event.job.id)
        .collect()
}

/// Live events of one owner. Yields [`BusError::Lagged`] when the subscriber fell behind and
/// events were dropped: replay from the last id seen to catch up.
pub type EventStream = LiveStream<JobEvent>;

/// Publishes job events to their owners, keeps a bounded history for replay.
///
/// # Contract
///
/// - [`publish`](Self::publish) gives the event an id greater than any before and delivers
///   it to every live subscription of the job's owner, and to no other owner.
/// - [`subscribe`](Self::subscribe) delivers every event published after it returns.
/// - [`replay`](Self::replay) returns the owner's kept events with an id greater than
///   `after`, oldest first (at most the bus's history bound per owner).
///
/// Subscribe first, then replay, then skip live events whose id was replayed: that order
/// loses nothing.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes a change of `job`; returns the event with its id.
    fn publish<'a>(
        &'a self,
        job: &'a Job,
    ) -> impl Future<Output = Result<JobEvent, BusError>> + Send + 'a;

    /// Live events of `owner` from now on.
    fn subscribe<'a>(
        &'a self,
        owner: &'a Owner,
    ) -> impl Future<Output = Result<EventStream, BusError>> + Send + 'a;

    /// Kept events of `owner` after `after` (all kept events when `None`), oldest first.
    fn replay<'a>(
        &'a self,
        owner: &'a Owner,
        after: Option<EventId>,
    ) -> impl Future<Output = Result<Vec<JobEvent>, BusError>> + Send + 'a;
}

impl Routed for JobEvent {
    type Key = Owner;
    fn route(&self) -> Owner {
        self.job.owner.clone()
    }
}
