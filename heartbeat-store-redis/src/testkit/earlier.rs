//! Writes keys as builds before the slot tag named them (layout version 1), for tests of
//! the migration and of the reads that still consult those names. Each function writes
//! what such a build wrote, with the TTL it set.

use fred::clients::Client;
use fred::interfaces::{HashesInterface, KeysInterface, ListInterface, SortedSetsInterface};
use heartbeat_core::jobs::{Job, JobId};
use heartbeat_core::sessions::analytics::FinishedEntry;
use heartbeat_core::{Id, PlayRecord, ProgressRecord, Timestamp};

/// The TTL earlier builds' keys get here: a day.
pub const EARLIER_TTL_MILLIS: i64 = 86_400_000;

/// Says the Redis may hold earlier builds' keys (`<namespace>hb_layout:version` = 1), as
/// a Redis they ran on does: instances then read their names too, until the migration.
pub async fn mark_layout_1(redis: &Client, namespace: &str) {
    let _: () = redis
        .set(
            format!("{namespace}hb_layout:version"),
            "1",
            None,
            None,
            false,
        )
        .await
        .expect("the version key is written");
}

/// A finished session of `user` as an earlier build recorded it: its progress in
/// `hb_progress:<user>`, its history entry in `hb_history:<user>`, and its entry in the
/// one-key analytics index `{hb_history_index}:finished` (which one server still uses,
/// and earlier builds used on a cluster too). Returns the history entry.
pub async fn write_session(
    redis: &Client,
    namespace: &str,
    user: &Id,
    session_id: &str,
    asset: i64,
    progress: f64,
    ended: Timestamp,
) -> PlayRecord {
    let record: PlayRecord = serde_json::from_value(serde_json::json!({
        "session_id": session_id, "asset_id": asset,
        "started_at": ended.add_millis(-60_000).to_string(),
        "last_heartbeat": ended.to_string(), "ended_at": ended.to_string(),
        "ended_by": "stopped", "hit_counter": 3, "progress": progress,
    }))
    .expect("a play record");
    let entry = ProgressRecord {
        progress,
        updated_at: ended,
        session_id: session_id.into(),
    };
    let (progress_key, history_key) = (
        format!("{namespace}hb_progress:{user}"),
        format!("{namespace}hb_history:{user}"),
    );
    let _: () = redis
        .hset(&progress_key, (asset.to_string(), json(&entry)))
        .await
        .expect("progress is written");
    let _: () = redis
        .lpush(&history_key, json(&record))
        .await
        .expect("history is written");
    let index_key = format!("{namespace}{{hb_history_index}}:finished");
    let index_entry = FinishedEntry::of_history(user, &record)
        .expect("a finished session has an index entry")
        .key();
    let _: () = redis
        .zadd(
            &index_key,
            None,
            None,
            false,
            false,
            (0.0, index_entry.to_string()),
        )
        .await
        .expect("the index entry is written");
    for key in [progress_key, history_key, index_key] {
        expire(redis, key).await;
    }
    record
}

/// A job with an id below 2^34 as an earlier build stored it: `hb_job:<id>`, listed in
/// `hb_jobs:owner:<owner>` and, if the simulator completes it, in `hb_jobs:due`.
pub async fn write_job(redis: &Client, namespace: &str, job: &Job) {
    assert!(
        job.id < JobId(1 << 34),
        "earlier builds' ids are below 2^34"
    );
    let key = format!("{namespace}hb_job:{}", job.id);
    let _: () = redis
        .set(&key, json(job), None, None, false)
        .await
        .expect("the job is written");
    expire(redis, key).await;
    let mut indexes = vec![(
        format!("{namespace}hb_jobs:owner:{}", job.owner),
        job.id.0 as f64,
    )];
    if let Some(due) = job.complete_at {
        indexes.push((format!("{namespace}hb_jobs:due"), due.unix_millis() as f64));
    }
    for (key, score) in indexes {
        let _: () = redis
            .zadd(&key, None, None, false, false, (score, job.id.to_string()))
            .await
            .expect("the job index is written");
        expire(redis, key).await;
    }
}

/// A job event an earlier build kept: in `{hb_events}:owner:<owner>`, scored by its id.
pub async fn write_event(redis: &Client, namespace: &str, id: u64, job: &Job) {
    let key = format!("{namespace}{{hb_events}}:owner:{}", job.owner);
    let member = format!(r#"{{"id":{id},"job":{}}}"#, json(job));
    let _: () = redis
        .zadd(&key, None, None, false, false, (id as f64, member))
        .await
        .expect("the event is written");
    expire(redis, key).await;
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("serializable")
}

async fn expire(redis: &Client, key: String) {
    let _: () = redis
        .pexpire(key, EARLIER_TTL_MILLIS, None)
        .await
        .expect("the TTL is set");
}
