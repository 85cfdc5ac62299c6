//! [`Jobs`]: job store + event bus + the forward-only rule.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::model::{Job, JobError, JobId, JobState, JobUpdate, NewJob, Owner};
use super::outbox::Outbox;
use super::store::{EventBus, EventId, EventStream, JobEvent, JobStore, jobs_past_retention};
use crate::live::BusError;
use crate::store::{Commit, StoreError};
use crate::{Clock, SystemClock};

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobsError {
    /// No job has this id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job belongs to another owner.
    #[error("job {0} belongs to another owner")]
    Forbidden(JobId),
    /// The request breaks a job rule.
    #[error(transparent)]
    Rule(#[from] JobError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Due jobs completed at once by [`Jobs::complete_due`].
const COMPLETE_IN_PARALLEL: usize = 128;

/// How often [`Jobs::run_background`] looks for due jobs: a job completes at most this
/// long after its due time (plus the time to complete the ones due before it).
pub const COMPLETION_TICK: Duration = Duration::from_millis(10);

/// Most jobs [`Jobs::run_background`] completes per tick.
const COMPLETION_BATCH: usize = 1000;

/// Settings of [`Jobs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobsConfig {
    /// When set, every new job completes by itself this long after creation (`JOB_TIME`,
    /// the HeyGen mock's behaviour), unless a worker touched it first
    /// ([`Job::is_untouched`]).
    pub job_time: Option<Duration>,
    /// Compare-and-set attempts per update before [`StoreError::Contention`].
    pub max_attempts: u32,
    /// How long a finished job and its events are kept after it finished
    /// (`JOB_RETENTION`, 7 days): older ones read as gone on every store.
    pub retention: Duration,
}

/// Finished jobs and their events are kept this long by default (`JOB_RETENTION`).
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(7 * 86_400);

impl Default for JobsConfig {
    /// Jobs complete only when a worker says so (no simulator).
    fn default() -> Self {
        Self {
            job_time: None,
            max_attempts: 32,
            retention: DEFAULT_JOB_RETENTION,
        }
    }
}

/// The jobs service.
///
/// ```
/// use heartbeat_core::jobs::{JobState, JobUpdate, Jobs, JobsConfig, Owner};
/// use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let jobs = Jobs::new(MemoryJobStore::new(), MemoryEventBus::new())
///     .with_config(JobsConfig { job_time: None, ..JobsConfig::default() });
/// let alice = Owner::new("alice")?;
/// let job = jobs.create(&alice).await?;
/// let done = JobUpdate { state: Some(JobState::Completed), ..JobUpdate::default() };
/// assert_eq!(jobs.update(job.id, &done).await?.state, JobState::Completed);
/// assert!(jobs.get(job.id, &Owner::new("mallory")?).await.is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Jobs<S, B, C = SystemClock> {
    store: S,
    bus: B,
    clock: C,
    config: JobsConfig,
    outbox: Arc<Outbox>,
}

impl<S: JobStore, B: EventBus> Jobs<S, B> {
    /// A service on the system clock with the default settings.
    pub fn new(store: S, bus: B) -> Self {
        Self {
            store,
            bus,
            clock: SystemClock,
            config: JobsConfig::default(),
            outbox: Arc::default(),
        }
    }
}

impl<S: JobStore, B: EventBus, C: Clock> Jobs<S, B, C> {
    /// The same service reading time from `clock`.
    pub fn with_clock<C2: Clock>(self, clock: C2) -> Jobs<S, B, C2> {
        Jobs {
            store: self.store,
            bus: self.bus,
            clock,
            config: self.config,
            outbox: self.outbox,
        }
    }

    /// The same service with other settings.
    pub fn with_config(mut self, config: JobsConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings.
    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The event bus.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// Stored job changes the bus has not taken yet (they are published again, in order,
    /// before any later change and by [`run_background`](Self::run_background)).
    pub fn unpublished(&self) -> usize {
        self.outbox.len()
    }

    /// Creates a pending job for `owner` and publishes it. Once the job is stored, this
    /// succeeds: a publication the bus refuses waits in the outbox and goes out later.
    pub async fn create(&self, owner: &Owner) -> Result<Job, JobsError> {
        let now = self.clock.now();
        let complete_at = self.config.job_time.map(|after| now + after);
        let job = self
            .store
            .create(NewJob {
                owner: owner.clone(),
                created_at: now,
                complete_at,
            })
            .await?;
        self.outbox.publish(&self.bus, &job).await;
        Ok(job)
    }

    /// True while the job is kept (not finished longer than the retention ago).
    fn retained(&self, job: &Job) -> bool {
        !job.is_past_retention(self.clock.now(), self.config.retention)
    }

    /// The events whose jobs are still kept.
    pub(super) fn retained_events(&self, mut events: Vec<JobEvent>) -> Vec<JobEvent> {
        let gone = jobs_past_retention(&events, self.clock.now(), self.config.retention);
        events.retain(|event| !gone.contains(&event.job.id));
        events
    }

    /// The job, if `owner` owns it.
    pub async fn get(&self, id: JobId, owner: &Owner) -> Result<Job, JobsError> {
        let (job, _) = self
            .store
            .get(id)
            .await?
            .filter(|(job, _)| self.retained(job))
            .ok_or(JobsError::NotFound(id))?;
        if &job.owner != owner {
            return Err(JobsError::Forbidden(id));
        }
        Ok(job)
    }

    /// An owner's jobs, newest first.
    pub async fn list(&self, owner: &Owner, limit: usize) -> Result<Vec<Job>, JobsError> {
        let mut jobs = self.store.list_by_owner(owner, limit).await?;
        jobs.retain(|job| self.retained(job));
        Ok(jobs)
    }

    /// Applies a worker's update (forward only) and publishes the change (later, through
    /// the outbox, if the bus refuses it now). An update that changes nothing succeeds and
    /// publishes nothing.
    pub async fn update(&self, id: JobId, update: &JobUpdate) -> Result<Job, JobsError> {
        Ok(self.apply(id, None, update, |_| true).await?.0)
    }

    /// Applies `update` if `applies` holds for the job as loaded (checked in the same
    /// compare-and-set); the flag says whether this call changed the job (`false` when it
    /// already was as asked, e.g. completed by another instance meanwhile, or `applies`
    /// refused it). `loaded` is the job as just read, if the caller has it: the first
    /// attempt then starts from it instead of reading it again.
    async fn apply(
        &self,
        id: JobId,
        mut loaded: Option<(Job, S::Version)>,
        update: &JobUpdate,
        applies: impl Fn(&Job) -> bool,
    ) -> Result<(Job, bool), JobsError> {
        for _ in 0..self.config.max_attempts {
            let (job, version) = match loaded.take() {
                Some(loaded) => loaded,
                None => self.store.get(id).await?.ok_or(JobsError::NotFound(id))?,
            };
            if !applies(&job) {
                return Ok((job, false));
            }
            let Some(next) = job.apply(update, self.clock.now())? else {
                return Ok((job, false));
            };
            match self.store.compare_and_set(&version, &next).await? {
                Commit::Applied => {
                    // Stored: the change is the answer even if the bus refuses it now
                    // (the outbox publishes it later).
                    self.outbox.publish(&self.bus, &next).await;
                    return Ok((next, true));
                }
                Commit::Conflict => continue,
            }
        }
        Err(StoreError::Contention {
            key: format!("job {id}"),
            attempts: self.config.max_attempts,
        }
        .into())
    }

    /// Completes every job whose `complete_at` has come and that no worker has touched
    /// (the `JOB_TIME` simulator); returns how many this call completed. Safe to run on
    /// every instance at once: each job completes, and is published, once.
    pub async fn complete_due(&self, limit: usize) -> Result<usize, JobsError> {
        let done = JobUpdate {
            state: Some(JobState::Completed),
            ..JobUpdate::default()
        };
        let mut due = self.store.due(self.clock.now(), limit).await?;
        // Finished, or taken over by a worker: no longer the simulator's.
        due.retain(|(job, _)| job.is_untouched());
        // A sliding window of completions: with a networked store the round trips
        // overlap, and one slow job does not hold up the ones behind it.
        let mut waiting = due.into_iter();
        let complete = |(job, version): (Job, S::Version)| {
            self.apply(job.id, Some((job, version)), &done, Job::is_untouched)
        };
        let mut in_flight: FuturesUnordered<_> = waiting
            .by_ref()
            .take(COMPLETE_IN_PARALLEL)
            .map(complete)
            .collect();
        let mut completed = 0;
        while let Some(result) = in_flight.next().await {
            match result {
                Ok((_, changed)) => completed += usize::from(changed),
                // Finished by a worker or another instance in the meantime.
                Err(JobsError::Rule(_)) => {}
                Err(other) => return Err(other),
            }
            in_flight.extend(waiting.next().map(complete));
        }
        Ok(completed)
    }

    /// The service's background work, every [`COMPLETION_TICK`] until the future is
    /// dropped: publishes the changes the bus refused before (the outbox), and, with
    /// [`JobsConfig::job_time`], completes due jobs (the `JOB_TIME` simulator). A failed
    /// round is handed to `on_error` and the next tick tries again. Safe to run on every
    /// instance sharing a store at once.
    pub async fn run_background(&self, mut on_error: impl FnMut(JobsError) + Send) {
        let mut tick = tokio::time::interval(COMPLETION_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = self.outbox.flush(&self.bus).await {
                on_error(error.into());
            }
            if self.config.job_time.is_some()
                && let Err(error) = self.complete_due(COMPLETION_BATCH).await
            {
                on_error(error);
            }
        }
    }

    /// Live events of `owner`.
    pub async fn subscribe(&self, owner: &Owner) -> Result<EventStream, JobsError> {
        Ok(self.bus.subscribe(owner).await?)
    }

    /// Kept events of `owner` after `after`, oldest first.
    pub async fn replay(
        &self,
        owner: &Owner,
        after: Option<EventId>,
    ) -> Result<Vec<JobEvent>, JobsError> {
        Ok(self.retained_events(self.bus.replay(owner, after).await?))
    }
}
