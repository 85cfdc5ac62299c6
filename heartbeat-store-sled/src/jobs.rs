//! [`JobStore`] on sled: jobs by id with a version, an index by owner and an index of the
//! jobs the simulator has still to complete, written job first,
//! so an index entry never points at a missing job.

use heartbeat_core::jobs::{Job, JobId, JobStore, NewJob, Owner};
use heartbeat_core::store::Commit;
use heartbeat_core::{StoreError, Timestamp};
use serde::{Deserialize, Serialize};

use heartbeat_core::store::kit::decode;

use crate::{SledStore, encode, keys, sled_error};

#[derive(Serialize, Deserialize)]
struct VersionedJob<J> {
    version: u64,
    job: J,
}

impl SledStore {
    /// Drops the jobs that finished longer than the job retention before `now`, with their
    /// index entries and events; returns how many jobs.
    ///
    /// # Errors
    ///
    /// When sled fails to read or write.
    pub fn sweep_jobs(&self, now: Timestamp) -> Result<usize, StoreError> {
        let tree = &self.inner.tree;
        let retention = self.inner.job_retention;
        let mut gone = std::collections::HashSet::new();
        for entry in tree.scan_prefix(keys::JOB_PREFIX) {
            let (key, value) = entry.map_err(sled_error)?;
            let stored: VersionedJob<Job> = decode("a job", &value)?;
            if stored.job.is_past_retention(now, retention) {
                tree.remove(&key).map_err(sled_error)?;
                tree.remove(keys::owner_job(&stored.job.owner, stored.job.id))
                    .map_err(sled_error)?;
                gone.insert(stored.job.id);
            }
        }
        let mut events = Vec::new();
        for entry in tree.scan_prefix(keys::EVENT_PREFIX) {
            let (key, value) = entry.map_err(sled_error)?;
            let event: heartbeat_core::jobs::JobEvent = decode("a job event", &value)?;
            events.push((key, event));
        }
        gone.extend(heartbeat_core::jobs::jobs_past_retention(
            events.iter().map(|(_, event)| event),
            now,
            retention,
        ));
        for (key, event) in events {
            if gone.contains(&event.job.id) {
                tree.remove(key).map_err(sled_error)?;
            }
        }
        Ok(gone.len())
    }

    fn read_job(&self, id: JobId) -> Result<Option<VersionedJob<Job>>, StoreError> {
        self.inner
            .tree
            .get(keys::job(id))
            .map_err(sled_error)?
            .map(|bytes| decode("a job", &bytes))
            .transpose()
    }

    fn next_job_id(&self) -> Result<JobId, StoreError> {
        let next = self
            .inner
            .tree
            .update_and_fetch(keys::META_JOB_ID, |last| {
                let last = last
                    .and_then(|bytes| bytes.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                Some(last.saturating_add(1).to_be_bytes().to_vec())
            })
            .map_err(sled_error)?;
        next.and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map(|bytes| JobId(u64::from_be_bytes(bytes)))
            .ok_or_else(|| StoreError::Corrupt {
                message: "the job id counter is not an 8-byte number".to_owned(),
                source: None,
            })
    }

    fn jobs_by_id(&self, ids: impl Iterator<Item = u64>) -> Result<Vec<(Job, u64)>, StoreError> {
        let mut jobs = Vec::new();
        for id in ids {
            if let Some(stored) = self.read_job(JobId(id))? {
                jobs.push((stored.job, stored.version));
            }
        }
        Ok(jobs)
    }

    fn apply_job(&self, version: u64, job: &Job) -> Result<Commit, StoreError> {
        let key = keys::job(job.id);
        let _job = self.stripe(&key);
        match self.read_job(job.id)? {
            Some(stored) if stored.version == version => {}
            _ => return Ok(Commit::Conflict),
        }
        let stored = VersionedJob {
            version: self.next_version()?,
            job,
        };
        self.inner
            .tree
            .insert(key, encode(&stored)?)
            .map_err(sled_error)?;
        if let Some(complete_at) = job.due_entry_to_drop() {
            self.inner
                .tree
                .remove(keys::due(complete_at, job.id))
                .map_err(sled_error)?;
        }
        Ok(Commit::Applied)
    }
}

impl JobStore for SledStore {
    type Version = u64;

    async fn create(&self, job: NewJob) -> Result<Job, StoreError> {
        if self.inner.job_sweeps.sweep_now() {
            let store = self.clone();
            tokio::task::spawn_blocking(move || {
                // A failed sweep is retried at the next round; reads skip old jobs anyway.
                let _ = store.sweep_jobs(Timestamp::now());
            });
        }
        let job = job.into_job(self.next_job_id()?);
        let stored = VersionedJob {
            version: self.next_version()?,
            job: &job,
        };
        // The job first, then its indexes: an index never points at a missing job.
        let tree = &self.inner.tree;
        tree.insert(keys::job(job.id), encode(&stored)?)
            .map_err(sled_error)?;
        tree.insert(keys::owner_job(&job.owner, job.id), &[])
            .map_err(sled_error)?;
        if let Some(complete_at) = job.complete_at {
            tree.insert(keys::due(complete_at, job.id), &[])
                .map_err(sled_error)?;
        }
        self.durable().await?;
        Ok(job)
    }

    async fn get(&self, id: JobId) -> Result<Option<(Job, u64)>, StoreError> {
        Ok(self
            .read_job(id)?
            .map(|stored| (stored.job, stored.version)))
    }

    async fn compare_and_set(&self, version: &u64, job: &Job) -> Result<Commit, StoreError> {
        let commit = self.apply_job(*version, job)?;
        if commit == Commit::Applied {
            self.durable().await?;
        }
        Ok(commit)
    }

    async fn list_by_owner(&self, owner: &Owner, limit: usize) -> Result<Vec<Job>, StoreError> {
        let mut ids = Vec::new();
        for key in self
            .inner
            .tree
            .scan_prefix(keys::owner_jobs(owner))
            .keys()
            .rev()
        {
            if ids.len() == limit {
                break;
            }
            ids.extend(keys::trailing_u64(&key.map_err(sled_error)?));
        }
        let jobs = self.jobs_by_id(ids.into_iter())?;
        Ok(jobs.into_iter().map(|(job, _)| job).collect())
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<(Job, u64)>, StoreError> {
        let mut ids = Vec::new();
        for key in self
            .inner
            .tree
            .range(keys::DUE_PREFIX.to_vec()..keys::due_end(now))
            .keys()
        {
            if ids.len() == limit {
                break;
            }
            ids.extend(keys::trailing_u64(&key.map_err(sled_error)?));
        }
        self.jobs_by_id(ids.into_iter())
    }
}
