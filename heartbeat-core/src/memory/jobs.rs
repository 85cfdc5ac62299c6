use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;

use super::next_version;
use crate::Timestamp;
use crate::jobs::{DEFAULT_JOB_RETENTION, Job, JobId, JobStore, NewJob, Owner};
use crate::store::kit::SweepCadence;
use crate::store::{Commit, StoreError};

#[derive(Debug)]
struct Inner {
    next_id: AtomicU64,
    jobs: DashMap<JobId, (Job, u64)>,
    by_owner: DashMap<Owner, Vec<JobId>>,
    /// `(complete_at, id)` of jobs the simulator has still to complete.
    due: Mutex<BTreeSet<(Timestamp, JobId)>>,
    retention: Duration,
    sweeps: SweepCadence,
}

/// Jobs in memory. Ids start at 1 and increase; nothing is kept across restarts. Finished
/// jobs are dropped [`DEFAULT_JOB_RETENTION`] (or [`with_retention`](Self::with_retention))
/// after they finished, in a sweep every few thousand new jobs. Clones share the same
/// data.
#[derive(Debug, Clone)]
pub struct MemoryJobStore {
    inner: Arc<Inner>,
}

impl Default for MemoryJobStore {
    fn default() -> Self {
        Self::with_retention(DEFAULT_JOB_RETENTION)
    }
}

impl MemoryJobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps finished jobs `retention` after they finished.
    pub fn with_retention(retention: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                next_id: AtomicU64::new(0),
                jobs: DashMap::new(),
                by_owner: DashMap::new(),
                due: Mutex::new(BTreeSet::new()),
                retention,
                sweeps: SweepCadence::default(),
            }),
        }
    }

    /// Drops the jobs that finished longer than the retention before `now`; returns how
    /// many.
    pub fn sweep(&self, now: Timestamp) -> usize {
        let retention = self.inner.retention;
        let before = self.inner.jobs.len();
        self.inner
            .jobs
            .retain(|_, (job, _)| !job.is_past_retention(now, retention));
        let jobs = &self.inner.jobs;
        self.inner.by_owner.retain(|_, ids| {
            ids.retain(|id| jobs.contains_key(id));
            !ids.is_empty()
        });
        before - self.inner.jobs.len()
    }

    fn due_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<(Timestamp, JobId)>> {
        // The set holds plain values; a panic elsewhere cannot leave it half-written.
        self.inner
            .due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl JobStore for MemoryJobStore {
    type Version = u64;

    async fn create(&self, job: NewJob) -> Result<Job, StoreError> {
        if self.inner.sweeps.sweep_now() {
            self.sweep(Timestamp::now());
        }
        let id = JobId(self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let job = job.into_job(id);
        if let Some(complete_at) = job.complete_at {
            self.due_set().insert((complete_at, id));
        }
        self.inner
            .by_owner
            .entry(job.owner.clone())
            .or_default()
            .push(id);
        self.inner.jobs.insert(id, (job.clone(), next_version()));
        Ok(job)
    }

    async fn get(&self, id: JobId) -> Result<Option<(Job, u64)>, StoreError> {
        Ok(self.inner.jobs.get(&id).map(|entry| entry.value().clone()))
    }

    async fn compare_and_set(&self, version: &u64, job: &Job) -> Result<Commit, StoreError> {
        let Some(mut entry) = self.inner.jobs.get_mut(&job.id) else {
            return Ok(Commit::Conflict);
        };
        if entry.1 != *version {
            return Ok(Commit::Conflict);
        }
        *entry = (job.clone(), next_version());
        drop(entry);
        if let Some(complete_at) = job.due_entry_to_drop() {
            self.due_set().remove(&(complete_at, job.id));
        }
        Ok(Commit::Applied)
    }

    async fn list_by_owner(&self, owner: &Owner, limit: usize) -> Result<Vec<Job>, StoreError> {
        let ids: Vec<JobId> = match self.inner.by_owner.get(owner) {
            Some(ids) => ids.iter().rev().take(limit).copied().collect(),
            None => return Ok(Vec::new()),
        };
        Ok(ids
            .into_iter()
            .filter_map(|id| self.inner.jobs.get(&id).map(|entry| entry.0.clone()))
            .collect())
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<(Job, u64)>, StoreError> {
        let ids: Vec<JobId> = self
            .due_set()
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| *id)
            .collect();
        Ok(ids
            .into_iter()
            .filter_map(|id| self.inner.jobs.get(&id).map(|entry| entry.value().clone()))
            .collect())
    }
}
