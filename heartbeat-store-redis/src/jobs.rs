//! [`JobStore`] on Redis: one string per job (compared and set by a script) and a sorted
//! set of each owner's jobs, in the owner's hash slot (a job's id names its slot:
//! [`job_slot`](crate::keys::job_slot)), and an index of the jobs the simulator has still
//! to complete (one key on one server, [`DUE_SHARDS`](crate::keys::DUE_SHARDS) on a
//! cluster).

use heartbeat_core::jobs::{Job, JobId, JobStore, NewJob, Owner};
use heartbeat_core::store::Commit;
use heartbeat_core::{StoreError, Timestamp};

use heartbeat_core::store::kit::encode;

use crate::keys::{DueEntry, IndexLayout, job_id, job_slot, owner_slot};
use crate::{RedisStore, decode};

/// Ids drawn for one job before giving up when each belongs to a stored job.
const ID_ATTEMPTS: usize = 8;

impl RedisStore {
    /// Stores a new job and indexes it; `false` (nothing written) when a job with its id
    /// is stored already.
    async fn store_new_job(&self, job: &Job, slot: u16) -> Result<bool, StoreError> {
        let keys = &self.inner.keys;
        let due_at = job.complete_at.map(|at| at.unix_millis().to_string());
        let args = vec![
            encode(job)?,
            self.job_ttl(),
            job.id.to_string(),
            due_at.clone().unwrap_or_default(),
        ];
        let mut script_keys = vec![keys.job(job.id), keys.owner_jobs(&job.owner)];
        let due_shard = match keys.due_entry(Some(slot)) {
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
    async fn jobs_by_id(&self, ids: Vec<u64>) -> Result<Vec<(Job, String)>, StoreError> {
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

fn limit_stop(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX) - 1
}

impl JobStore for RedisStore {
    /// The job's JSON as loaded: the compare-and-set checks it is unchanged.
    type Version = String;

    async fn create(&self, job: NewJob) -> Result<Job, StoreError> {
        let keys = &self.inner.keys;
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

    async fn get(&self, id: JobId) -> Result<Option<(Job, String)>, StoreError> {
        let key = self.inner.keys.job(id);
        let json: Option<String> = self
            .run("job read", &key, "GET", vec![key.as_str().into()])
            .await?;
        json.map(|json| Ok((decode("a job", &json)?, json)))
            .transpose()
    }

    async fn compare_and_set(&self, version: &String, job: &Job) -> Result<Commit, StoreError> {
        let keys = &self.inner.keys;
        let drop_due = job.due_entry_to_drop().is_some();
        let args = vec![
            version.clone(),
            encode(job)?,
            self.job_ttl(),
            job.id.to_string(),
        ];
        let job_key = keys.job(job.id);
        let (script_keys, drop_after) = if !drop_due {
            (vec![job_key], None)
        } else {
            match keys.due_entry(job_slot(job.id)) {
                DueEntry::InJobScript(due) => (vec![job_key, due], None),
                DueEntry::Beside(due) => (vec![job_key], Some(due)),
            }
        };
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
        if let Some(due) = drop_after {
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
        let keys = &self.inner.keys;
        // Earlier builds' ids are all below this build's: theirs come after, newest first.
        let (mut ids, earlier) = futures_util::try_join!(
            self.newest_ids(keys.owner_jobs(owner), limit),
            self.newest_ids(keys.untagged_owner_jobs(owner), limit)
        )?;
        ids.extend(earlier);
        ids.truncate(limit);
        let jobs = self.jobs_by_id(ids).await?;
        Ok(jobs.into_iter().map(|(job, _)| job).collect())
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<(Job, String)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let shards = match keys.index_layout() {
            IndexLayout::OneKey => vec![keys.one_due_jobs()],
            // The shards, and the one key earlier builds wrote (read until it expires).
            IndexLayout::PerSlot => {
                let mut shards = keys.due_shards();
                shards.push(keys.one_due_jobs());
                shards
            }
        };
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
        due.truncate(limit);
        let ids = due.into_iter().map(|(_, id)| id).collect();
        self.jobs_by_id(ids).await
    }
}
