//! sled drops finished jobs and their events once `job_retention` has passed since they
//! finished (SPEC §4: bounded retention on every store); unfinished jobs stay.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use heartbeat_core::Timestamp;
use heartbeat_core::jobs::{EventBus, JobState, JobStore, JobUpdate, Jobs, Owner};
use heartbeat_store_sled::{SledConfig, SledStore};

#[tokio::test]
async fn finished_jobs_and_their_events_are_swept_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SledConfig::new(dir.path().join("db"));
    config.job_retention = Duration::from_secs(86_400);
    let store = SledStore::open(config).unwrap();
    let jobs = Jobs::new(store.clone(), store.clone());
    let alice = Owner::new("alice").unwrap();
    let finished = jobs.create(&alice).await.unwrap();
    let done = JobUpdate {
        state: Some(JobState::Completed),
        ..JobUpdate::default()
    };
    jobs.update(finished.id, &done).await.unwrap();
    let unfinished = jobs.create(&alice).await.unwrap();

    assert_eq!(
        store.sweep_jobs(Timestamp::now()).unwrap(),
        0,
        "nothing is old yet"
    );
    let later = Timestamp::now() + Duration::from_secs(2 * 86_400);
    assert_eq!(store.sweep_jobs(later).unwrap(), 1);
    assert!(store.get(finished.id).await.unwrap().is_none());
    assert!(store.get(unfinished.id).await.unwrap().is_some());
    let listed: Vec<_> = store
        .list_by_owner(&alice, 10)
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(listed, [unfinished.id]);
    let kept: Vec<_> = store
        .replay(&alice, None)
        .await
        .unwrap()
        .iter()
        .map(|event| event.job.id)
        .collect();
    assert_eq!(
        kept,
        [unfinished.id],
        "the finished job's events went with it"
    );
}
