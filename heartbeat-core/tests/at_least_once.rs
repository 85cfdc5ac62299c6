//! At least once (SPEC §4): a job change that was stored reaches its owner's streams even
//! when publishing it fails at first, and creating a job never fails once it is stored.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use heartbeat_core::jobs::{JobState, JobUpdate, Jobs, Owner};
use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore};
use heartbeat_core::testkit::FlakyBus;

const WAIT: Duration = Duration::from_secs(10);

fn completed() -> JobUpdate {
    JobUpdate {
        state: Some(JobState::Completed),
        ..JobUpdate::default()
    }
}

#[tokio::test]
async fn a_change_the_bus_refused_goes_out_before_the_next_one() {
    let jobs = Jobs::new(
        MemoryJobStore::new(),
        // The first publication and its immediate retry are refused.
        FlakyBus::new(MemoryEventBus::new(), 2),
    );
    let alice = Owner::new("alice").unwrap();
    let mut events = Box::pin(jobs.events(alice.clone(), None).await.unwrap());
    let job = jobs.create(&alice).await.expect("stored, so created");
    assert_eq!(jobs.unpublished(), 1);
    jobs.update(job.id, &completed()).await.unwrap();
    assert_eq!(jobs.unpublished(), 0);
    for state in [JobState::Pending, JobState::Completed] {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((event.job.id, event.job.state), (job.id, state));
    }
}

#[tokio::test]
async fn the_background_work_publishes_what_the_bus_refused() {
    let jobs = Jobs::new(
        MemoryJobStore::new(),
        FlakyBus::new(MemoryEventBus::new(), 4),
    );
    let alice = Owner::new("alice").unwrap();
    let mut events = Box::pin(jobs.events(alice.clone(), None).await.unwrap());
    let job = jobs.create(&alice).await.unwrap();
    jobs.update(job.id, &completed()).await.unwrap();
    assert_eq!(jobs.unpublished(), 2, "both changes wait, in order");
    let background = jobs.clone();
    let running = tokio::spawn(async move { background.run_background(|_| {}).await });
    for state in [JobState::Pending, JobState::Completed] {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((event.job.id, event.job.state), (job.id, state));
    }
    running.abort();
    assert_eq!(jobs.unpublished(), 0);
}

/// The memory stores drop finished jobs and their events once the retention has passed
/// (they would otherwise grow with every page load of the HeyGen client, which makes a
/// fresh owner each time); unfinished jobs stay.
#[tokio::test]
async fn the_memory_stores_forget_finished_jobs_after_the_retention() {
    use heartbeat_core::Timestamp;
    use heartbeat_core::jobs::{EventBus, JobStore};
    let retention = Duration::from_secs(86_400);
    let store = MemoryJobStore::with_retention(retention);
    let bus = MemoryEventBus::with_limits(256, retention);
    let jobs = Jobs::new(store.clone(), bus.clone());
    let alice = Owner::new("alice").unwrap();
    let finished = jobs.create(&alice).await.unwrap();
    jobs.update(finished.id, &completed()).await.unwrap();
    let unfinished = jobs.create(&Owner::new("bob").unwrap()).await.unwrap();
    let later = Timestamp::now() + Duration::from_secs(2 * 86_400);
    assert_eq!(store.sweep(later), 1);
    assert!(store.get(finished.id).await.unwrap().is_none());
    assert!(store.get(unfinished.id).await.unwrap().is_some());
    assert_eq!(
        bus.sweep(later),
        1,
        "alice's events are gone, bob's are kept"
    );
    assert!(bus.replay(&alice, None).await.unwrap().is_empty());
    assert!(store.list_by_owner(&alice, 10).await.unwrap().is_empty());
}
