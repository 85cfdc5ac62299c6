//! [`JobStore`] on Redis: one string per job (compared and set by a script), a sorted set
//! of each owner's jobs and one of the jobs the simulator has still to complete.

use fred::prelude::{KeysInterface, SortedSetsInterface};
use fred::types::Expiration;
use heartbeat_core::jobs::{Job, JobId, JobStore, NewJob, Owner};
use heartbeat_core::store::Commit;
use heartbeat_core::{StoreError, Timestamp};

use heartbeat_core::store::kit::encode;

use crate::{RedisStore, decode, store_error};

impl RedisStore {
    fn job_ttl(&self) -> String {
        self.inner.job_retention_millis.to_string()
    }

    async fn index_add(&self, key: String, score: i64, member: u64) -> Result<(), StoreError> {
        let args = vec![self.job_ttl(), score.to_string(), member.to_string()];
        self.eval(
            "job index write",
            &self.inner.scripts.index_add,
            vec![key],
            args,
        )
        .await
    }

    /// The jobs still stored among `ids`, each with its version, in the order of `ids`.
    async fn jobs_by_id(&self, ids: Vec<u64>) -> Result<Vec<(Job, String)>, StoreError> {
        let mut jobs = Vec::with_capacity(ids.len());
        let reads = ids.into_iter().map(|id| JobStore::get(self, JobId(id)));
        for job in futures_util::future::join_all(reads).await {
            jobs.extend(job?);
        }
        Ok(jobs)
    }
}

fn limit_stop(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX) - 1
}

impl JobStore for RedisStore {
    /// The job's JSON as loaded: the compare-and-set checks it is unchanged.
    type Version = String;

    async fn create(&self, job: NewJob) -> Result<Job, StoreError> {
        let keys = &self.inner.keys;
        let id: u64 = self
            .eval(
                "job id",
                &self.inner.scripts.next_id,
                vec![keys.job_counter()],
                vec![self.job_ttl()],
            )
            .await?;
        let job = job.into_job(JobId(id));
        let _: () = self
            .client()
            .set(
                keys.job(job.id),
                encode(&job)?,
                Some(Expiration::PX(self.inner.job_retention_millis)),
                None,
                false,
            )
            .await
            .map_err(|error| store_error("job write", error))?;
        let score = i64::try_from(id).unwrap_or(i64::MAX);
        self.index_add(keys.owner_jobs(&job.owner), score, id)
            .await?;
        if let Some(complete_at) = job.complete_at {
            self.index_add(keys.due_jobs(), complete_at.unix_millis(), id)
                .await?;
        }
        Ok(job)
    }

    async fn get(&self, id: JobId) -> Result<Option<(Job, String)>, StoreError> {
        let json: Option<String> = self
            .client()
            .get(self.inner.keys.job(id))
            .await
            .map_err(|error| store_error("job read", error))?;
        json.map(|json| Ok((decode("a job", &json)?, json)))
            .transpose()
    }

    async fn compare_and_set(&self, version: &String, job: &Job) -> Result<Commit, StoreError> {
        let args = vec![version.clone(), encode(job)?, self.job_ttl()];
        let applied: i64 = self
            .eval(
                "job update",
                &self.inner.scripts.compare_and_set,
                vec![self.inner.keys.job(job.id)],
                args,
            )
            .await?;
        if applied != 1 {
            return Ok(Commit::Conflict);
        }
        if job.due_entry_to_drop().is_some() {
            let _: i64 = self
                .client()
                .zrem(self.inner.keys.due_jobs(), job.id.0.to_string())
                .await
                .map_err(|error| store_error("job index write", error))?;
        }
        Ok(Commit::Applied)
    }

    async fn list_by_owner(&self, owner: &Owner, limit: usize) -> Result<Vec<Job>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<u64> = self
            .client()
            .zrange(
                self.inner.keys.owner_jobs(owner),
                0,
                limit_stop(limit),
                None,
                true,
                None,
                false,
            )
            .await
            .map_err(|error| store_error("job index read", error))?;
        let jobs = self.jobs_by_id(ids).await?;
        Ok(jobs.into_iter().map(|(job, _)| job).collect())
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<(Job, String)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let count = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids: Vec<u64> = self
            .client()
            .zrangebyscore(
                self.inner.keys.due_jobs(),
                "-inf",
                now.unix_millis(),
                false,
                Some((0, count)),
            )
            .await
            .map_err(|error| store_error("job index read", error))?;
        self.jobs_by_id(ids).await
    }
}
