use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
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
    /// Most jobs kept at once.
    max_jobs: usize,
    /// Jobs kept now (reserved before a job is inserted, so the cap is never passed).
    stored: AtomicUsize,
    /// When a full store last swept (unix milliseconds): at most once a second, so a
    /// flood against a full store does not sweep on every creation.
    last_full_sweep: AtomicI64,
}

/// Jobs a [`MemoryJobStore`] keeps at most unless told otherwise
/// ([`with_limits`](MemoryJobStore::with_limits); `MEMORY_MAX_JOBS`).
pub const DEFAULT_MAX_JOBS: usize = 1_000_000;

/// Jobs in memory. Ids start at 1 and increase; nothing is kept across restarts. Finished
/// jobs are dropped [`DEFAULT_JOB_RETENTION`] (or [`with_retention`](Self::with_retention))
/// after they finished, in a sweep every few thousand new jobs. At most
/// [`DEFAULT_MAX_JOBS`] jobs are kept (or the cap of [`with_limits`](Self::with_limits)):
/// a creation past it sweeps first, and is refused with [`StoreError::Full`] when nothing
/// could be dropped. Clones share the same data.
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
        Self::with_limits(retention, DEFAULT_MAX_JOBS)
    }

    /// An empty store that keeps finished jobs `retention` after they finished and at
    /// most `max_jobs` jobs at once (at least 1).
    pub fn with_limits(retention: Duration, max_jobs: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                next_id: AtomicU64::new(0),
                jobs: DashMap::new(),
                by_owner: DashMap::new(),
                due: Mutex::new(BTreeSet::new()),
                retention,
                sweeps: SweepCadence::default(),
                max_jobs: max_jobs.max(1),
                stored: AtomicUsize::new(0),
                last_full_sweep: AtomicI64::new(i64::MIN),
            }),
        }
    }

    /// Drops the jobs that finished longer than the retention before `now`; returns how
    /// many.
    pub fn sweep(&self, now: Timestamp) -> usize {
        let retention = self.inner.retention;
        let mut removed = 0;
        self.inner.jobs.retain(|_, (job, _)| {
            let gone = job.is_past_retention(now, retention);
            removed += usize::from(gone);
            !gone
        });
        self.inner.stored.fetch_sub(removed, Ordering::Relaxed);
        let jobs = &self.inner.jobs;
        self.inner.by_owner.retain(|_, ids| {
            ids.retain(|id| jobs.contains_key(id));
            !ids.is_empty()
        });
        removed
    }

    /// Jobs kept now.
    pub fn len(&self) -> usize {
        self.inner.stored.load(Ordering::Relaxed)
    }

    /// Whether no job is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves a place for one more job: sweeps first when the store is full (at most
    /// once a second), and refuses when still full.
    fn reserve(&self) -> Result<(), StoreError> {
        let max = self.inner.max_jobs;
        let take = || {
            self.inner
                .stored
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |stored| {
                    (stored < max).then_some(stored + 1)
                })
                .is_ok()
        };
        if take() {
            return Ok(());
        }
        let now = Timestamp::now();
        let last = self.inner.last_full_sweep.load(Ordering::Relaxed);
        if now.unix_millis().saturating_sub(last) >= 1000
            && self
                .inner
                .last_full_sweep
                .compare_exchange(last, now.unix_millis(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now);
            if take() {
                return Ok(());
            }
        }
        Err(StoreError::Full {
            message: format!(
                "the memory store keeps at most {max} jobs (MEMORY_MAX_JOBS), and none has \
                 finished longer than the retention ago"
            ),
        })
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
        self.reserve()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobState;

    fn new_job(owner: &str, at: Timestamp) -> NewJob {
        NewJob {
            owner: Owner::new(owner).unwrap_or_else(|_| unreachable!()),
            created_at: at,
            complete_at: None,
        }
    }

    #[tokio::test]
    async fn a_full_store_drops_finished_jobs_first_and_then_refuses() {
        let store = MemoryJobStore::with_limits(Duration::from_secs(60), 2);
        let long_ago = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 3_600_000)
            .unwrap_or_else(|_| unreachable!());
        let created = store.create(new_job("a", long_ago)).await;
        let first = created.unwrap_or_else(|error| panic!("{error}"));
        assert!(store.create(new_job("b", long_ago)).await.is_ok());
        // The first job finished an hour ago: past the retention, its place is free.
        let stored = store.get(first.id).await.ok().flatten();
        let (_, version) = stored.unwrap_or_else(|| unreachable!());
        let finished = Job {
            state: JobState::Completed,
            ..first
        };
        let committed = store.compare_and_set(&version, &finished).await;
        assert!(matches!(committed, Ok(Commit::Applied)));
        assert!(store.create(new_job("c", Timestamp::now())).await.is_ok());
        assert_eq!(store.len(), 2);
        assert!(store.get(finished.id).await.ok().flatten().is_none());
        // Nothing else can go: refused, and nothing is stored.
        let refused = store.create(new_job("d", Timestamp::now())).await;
        assert!(
            matches!(&refused, Err(StoreError::Full { message }) if message.contains("MEMORY_MAX_JOBS")),
            "{refused:?}"
        );
        let owner = Owner::new("d").unwrap_or_else(|_| unreachable!());
        let listed = store
            .list_by_owner(&owner, 9)
            .await
            .ok()
            .map(|jobs| jobs.len());
        assert_eq!((store.len(), listed), (2, Some(0)));
    }
}
