//! [`JobStore`] on Redis: one string per job (compared and set by a script) and a sorted
//! set of each owner's jobs, in the owner's hash slot (a job's id names its slot:
//! [`job_slot`](crate::layout::job_slot)), and an index of the jobs the simulator has still
//! to complete (one key on one server, [`DUE_SHARDS`](crate::layout::DUE_SHARDS) on a
//! cluster).

use heartbeat_core::jobs::{Job, JobId, JobStore, NewJob, Owner};
use heartbeat_core::store::Commit;
use heartbeat_core::{StoreError, Timestamp};

use heartbeat_core::store::kit::encode;

use crate::layout::{DueEntry, job_id, job_slot, owner_slot};
use crate::{RedisStore, decode};

/// Ids drawn for one job before giving up when each belongs to a stored job.
const ID_ATTEMPTS: usize = 8;

impl RedisStore {
    /// Stores a new job and indexes it; `false` (nothing written) when a job with its id
    /// is stored already.
    async fn store_new_job(&self, job: &Job, slot: u16) -> Result<bool, StoreError> {
        let keys = &self.inner.layout;
        let due_at = job.complete_at.map(|at| at.unix_millis().to_string());
        let args = vec![
            encode(job)?,
            self.job_ttl(),
            job.id.to_string(),
            due_at.clone().unwrap_or_default(),
        ];
        let mut script_keys = vec![keys.job(job.id), keys.owner_jobs(&job.owner)];
        let due_shard = match keys.due_entry(slot) {
            DueEntry::InJobScript(due) => {
                script_keys.push(due);
                None
            }
            DueEntry::Beside(due) => due_at.map(|at| (due, at)),
        };
        let stored: i64 = self
            .eval(
                "job write",
                &self.inner.scripts.create_job,
                script_keys,
                args,
            )
            .await?;
        if stored != 1 {
            return Ok(false);
        }
        if let Some((shard, at)) = due_shard {
            let args = vec![self.job_ttl(), at, job.id.to_string()];
            let _: i64 = self
                .eval(
                    "job index write",
                    &self.inner.scripts.index_add,
                    vec![shard],
                    args,
                )
                .await?;
        }
        Ok(true)
    }

    fn job_ttl(&self) -> String {
        self.inner.job_retention_millis.to_string()
    }

    /// The jobs still stored among `ids`, each with its version, in the order of `ids`.
    async fn jobs_by_id(&self, ids: Vec<u64>) -> Result<Vec<(Job, StoredJob)>, StoreError> {
        let mut jobs = Vec::with_capacity(ids.len());
        let reads = ids.into_iter().map(|id| JobStore::get(self, JobId(id)));
        for job in futures_util::future::join_all(reads).await {
            jobs.extend(job?);
        }
        Ok(jobs)
    }

    /// The newest `limit` ids of `key` (a sorted set of ids scored by themselves).
    async fn newest_ids(&self, key: String, limit: usize) -> Result<Vec<u64>, StoreError> {
        self.run(
            "job index read",
            &key,
            "ZRANGE",
            vec![
                key.as_str().into(),
                0.into(),
                limit_stop(limit).into(),
                "REV".into(),
            ],
        )
        .await
    }
}

/// A job as loaded, for its compare-and-set: its JSON, and the key it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJob {
    key: String,
    json: String,
}

impl RedisStore {
    /// The job stored in `key`, if any.
    async fn read_job(&self, key: String) -> Result<Option<(Job, StoredJob)>, StoreError> {
        let json: Option<String> = self
            .run("job read", &key, "GET", vec![key.as_str().into()])
            .await?;
        json.map(|json| Ok((decode("a job", &json)?, StoredJob { key, json })))
            .transpose()
    }
}

fn limit_stop(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX) - 1
}

impl JobStore for RedisStore {
    /// The job's JSON as loaded, and where: the compare-and-set checks it is unchanged.
    type Version = StoredJob;

    async fn create(&self, job: NewJob) -> Result<Job, StoreError> {
        let keys = &self.inner.layout;
        let slot = owner_slot(&job.owner);
        for _ in 0..ID_ATTEMPTS {
            // Not below the time in seconds: a counter lost or expired (no job in its
            // slot for the retention) does not hand out the ids of stored jobs again.
            let floor = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            let n: u64 = self
                .eval(
                    "job id",
                    &self.inner.scripts.next_id,
                    vec![keys.job_counter(&job.owner)],
                    vec![self.job_ttl(), floor.to_string()],
                )
                .await?;
            let id = job_id(slot, n).ok_or_else(|| {
                StoreError::backend(
                    format!("Redis job id: the counter of slot {slot} is at {n}, past every id"),
                    "job ids exhausted",
                )
            })?;
            let job = job.clone().into_job(id);
            if self.store_new_job(&job, slot).await? {
                return Ok(job);
            }
        }
        Err(StoreError::backend(
            format!(
                "Redis job id: {ID_ATTEMPTS} ids in a row drawn in slot {slot} belong to \
                 stored jobs; its counter `{}` is behind them: set it past the newest id",
                keys.job_counter(&job.owner)
            ),
            "job ids taken",
        ))
    }

    async fn get(&self, id: JobId) -> Result<Option<(Job, StoredJob)>, StoreError> {
        let layout = &self.inner.layout;
        // Layout version 1: the earlier name first. The migration copies a job and then
        // deletes it there only if unchanged, so whatever is there is the newest.
        if let Some(earlier) = layout.earlier_job(id)
            && let Some(found) = self.read_job(earlier).await?
        {
            return Ok(Some(found));
        }
        self.read_job(layout.job(id)).await
    }

    async fn compare_and_set(&self, version: &StoredJob, job: &Job) -> Result<Commit, StoreError> {
        let layout = &self.inner.layout;
        let args = vec![
            version.json.clone(),
            encode(job)?,
            self.job_ttl(),
            job.id.to_string(),
        ];
        let mut script_keys = vec![version.key.clone()];
        let mut drop_after = Vec::new();
        if job.due_entry_to_drop().is_some() {
            match layout.due_entry(job_slot(job.id)) {
                DueEntry::InJobScript(due) => script_keys.push(due),
                DueEntry::Beside(due) => drop_after.push(due),
            }
            drop_after.extend(layout.earlier_due_entry(job.id));
        }
        let applied: i64 = self
            .eval(
                "job update",
                &self.inner.scripts.compare_and_set,
                script_keys,
                args,
            )
            .await?;
        if applied != 1 {
            return Ok(Commit::Conflict);
        }
        for due in drop_after {
            let _: i64 = self
                .run(
                    "job index write",
                    &due,
                    "ZREM",
                    vec![due.as_str().into(), job.id.0.to_string().into()],
                )
                .await?;
        }
        Ok(Commit::Applied)
    }

    async fn list_by_owner(&self, owner: &Owner, limit: usize) -> Result<Vec<Job>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let layout = &self.inner.layout;
        let mut ids = match layout.earlier_owner_jobs(owner) {
            None => self.newest_ids(layout.owner_jobs(owner), limit).await?,
            Some(earlier) => {
                // Layout version 1: both, newest (highest id) first.
                let (mut ids, earlier) = futures_util::try_join!(
                    self.newest_ids(layout.owner_jobs(owner), limit),
                    self.newest_ids(earlier, limit)
                )?;
                ids.extend(earlier);
                // A job the migration is moving is in both for a moment.
                ids.sort_unstable_by(|a, b| b.cmp(a));
                ids.dedup();
                ids
            }
        };
        ids.truncate(limit);
        let jobs = self.jobs_by_id(ids).await?;
        Ok(jobs.into_iter().map(|(job, _)| job).collect())
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<(Job, StoredJob)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let shards = self.inner.layout.due_keys();
        let count = i64::try_from(limit).unwrap_or(i64::MAX);
        let reads = shards.iter().map(|shard| {
            self.run::<Vec<(String, f64)>>(
                "job index read",
                shard,
                "ZRANGEBYSCORE",
                vec![
                    shard.as_str().into(),
                    "-inf".into(),
                    now.unix_millis().into(),
                    "WITHSCORES".into(),
                    "LIMIT".into(),
                    0.into(),
                    count.into(),
                ],
            )
        });
        let mut due: Vec<(f64, u64)> = Vec::new();
        for read in futures_util::future::join_all(reads).await {
            let read = read?;
            due.extend(
                read.into_iter()
                    .filter_map(|(id, at)| Some((at, id.parse().ok()?))),
            );
        }
        // Each shard's answer is in due order; the first `limit` of all of them are due.
        due.sort_unstable_by(|(a, x), (b, y)| a.total_cmp(b).then(x.cmp(y)));
        // An entry the migration is moving is in two keys for a moment.
        due.dedup();
        due.truncate(limit);
        let ids = due.into_iter().map(|(_, id)| id).collect();
        self.jobs_by_id(ids).await
    }
}
