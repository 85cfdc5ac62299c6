//! Conformance checks for [`JobStore`] and
//! [`EventBus`] through the [`Jobs`] service.

use std::time::Duration;

use futures_util::StreamExt;

use super::{EVENT_WAIT, Fixture};
use crate::jobs::{
    EventBus, EventId, EventStream, JobError, JobEvent, JobId, JobState, JobStore, JobUpdate, Jobs,
    JobsConfig, JobsError, Owner,
};
use crate::live::LIVE_BUFFER;
use crate::store::Commit;
use crate::testkit::sessions::start;
use crate::{Clock, ManualClock};

fn owner(name: &str) -> Owner {
    Owner::new(name).unwrap()
}

async fn service<F: Fixture>(
    fixture: &F,
    clock: &ManualClock,
    job_time: Option<Duration>,
) -> Jobs<F::Jobs, F::Bus, ManualClock> {
    Jobs::new(fixture.jobs().await, fixture.bus().await)
        .with_clock(clock.clone())
        .with_config(JobsConfig {
            job_time,
            ..JobsConfig::default()
        })
}

fn to(state: JobState) -> JobUpdate {
    JobUpdate {
        state: Some(state),
        ..JobUpdate::default()
    }
}

async fn next_event(stream: &mut EventStream) -> JobEvent {
    match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected an event within {EVENT_WAIT:?}, got {other:?}"),
    }
}

async fn no_event(stream: &mut EventStream) {
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("expected no event, got {event:?}");
    }
}

/// Ids start above zero and increase; an unknown id is absent.
pub async fn ids_increase_and_unknown_ids_are_absent<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let mut last = 0;
    for _ in 0..5 {
        let job = jobs.create(&owner("alice")).await.unwrap();
        assert!(job.id.0 > last, "{} after {last}", job.id);
        assert_eq!(
            (job.state, job.progress, job.created_at),
            (JobState::Pending, 0, start())
        );
        last = job.id.0;
    }
    assert!(
        jobs.store()
            .get(JobId(last + 1000))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        jobs.get(JobId(last + 1000), &owner("alice")).await,
        Err(JobsError::NotFound(_))
    ));
}

/// Pending → running → completed; nothing moves back and a finished job never changes.
pub async fn states_only_move_forward<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let job = jobs.create(&owner("alice")).await.unwrap();
    let running = jobs
        .update(
            job.id,
            &JobUpdate {
                state: Some(JobState::Running),
                progress: Some(40),
                error: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((running.state, running.progress), (JobState::Running, 40));
    let lower = JobUpdate {
        progress: Some(10),
        ..JobUpdate::default()
    };
    assert!(matches!(
        jobs.update(job.id, &lower).await,
        Err(JobsError::Rule(JobError::ProgressBackwards { .. }))
    ));
    assert!(matches!(
        jobs.update(job.id, &to(JobState::Pending)).await,
        Err(JobsError::Rule(JobError::Backwards { .. }))
    ));
    let done = jobs.update(job.id, &to(JobState::Completed)).await.unwrap();
    assert_eq!((done.state, done.progress), (JobState::Completed, 100));
    // Repeating the same update is harmless; any other change is refused.
    assert_eq!(
        jobs.update(job.id, &to(JobState::Completed)).await.unwrap(),
        done
    );
    let fail = JobUpdate {
        state: Some(JobState::Failed),
        error: Some("late".into()),
        ..JobUpdate::default()
    };
    assert!(jobs.update(job.id, &fail).await.is_err());
    assert_eq!(jobs.get(job.id, &owner("alice")).await.unwrap(), done);

    let other = jobs.create(&owner("alice")).await.unwrap();
    let failed = jobs.update(other.id, &fail).await.unwrap();
    assert_eq!(
        (failed.state, failed.error.as_deref()),
        (JobState::Failed, Some("late"))
    );
    assert!(
        jobs.update(other.id, &to(JobState::Completed))
            .await
            .is_err()
    );
}

/// A job replaced since it was read is not overwritten.
pub async fn stale_versions_conflict<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let store = fixture.jobs().await;
    let job = jobs.create(&owner("alice")).await.unwrap();
    let (loaded, stale) = store.get(job.id).await.unwrap().unwrap();
    let running = loaded
        .apply(&to(JobState::Running), start())
        .unwrap()
        .unwrap();
    jobs.update(job.id, &to(JobState::Completed)).await.unwrap();
    assert_eq!(
        store.compare_and_set(&stale, &running).await.unwrap(),
        Commit::Conflict
    );
    assert_eq!(
        store.get(job.id).await.unwrap().unwrap().0.state,
        JobState::Completed
    );
}

/// Lists and reads are per owner; another owner's job is forbidden.
pub async fn owners_see_only_their_jobs<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let a1 = jobs.create(&owner("alice")).await.unwrap();
    let b1 = jobs.create(&owner("bob")).await.unwrap();
    let a2 = jobs.create(&owner("alice")).await.unwrap();
    let listed: Vec<JobId> = jobs
        .list(&owner("alice"), 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, [a2.id, a1.id]);
    assert_eq!(jobs.list(&owner("alice"), 1).await.unwrap().len(), 1);
    assert!(jobs.list(&owner("carol"), 10).await.unwrap().is_empty());
    assert!(matches!(
        jobs.get(b1.id, &owner("alice")).await,
        Err(JobsError::Forbidden(_))
    ));
    assert_eq!(jobs.get(b1.id, &owner("bob")).await.unwrap().id, b1.id);
}

/// With a job time, jobs complete when due, once, even with two instances racing.
pub async fn due_jobs_complete_once<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let first = service(fixture, &clock, Some(Duration::from_secs(2))).await;
    let second = service(fixture, &clock, Some(Duration::from_secs(2))).await;
    let alice = owner("alice");
    let mut events = first.subscribe(&alice).await.unwrap();
    let early = first.create(&alice).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let late = first.create(&alice).await.unwrap();
    let worker_done = first.create(&alice).await.unwrap();
    first
        .update(worker_done.id, &to(JobState::Failed))
        .await
        .unwrap();
    for _ in 0..4 {
        next_event(&mut events).await; // three created, one failed
    }
    assert_eq!(first.complete_due(100).await.unwrap(), 0);

    clock.advance(Duration::from_secs(1));
    let (a, b) = tokio::join!(first.complete_due(100), second.complete_due(100));
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    let event = next_event(&mut events).await;
    assert_eq!(
        (event.job.id, event.job.state),
        (early.id, JobState::Completed)
    );
    no_event(&mut events).await;
    assert_eq!(
        first.get(late.id, &alice).await.unwrap().state,
        JobState::Pending
    );

    clock.advance(Duration::from_secs(5));
    assert_eq!(second.complete_due(100).await.unwrap(), 1);
    assert_eq!(
        first.get(late.id, &alice).await.unwrap().state,
        JobState::Completed
    );
    assert_eq!(
        first.get(worker_done.id, &alice).await.unwrap().state,
        JobState::Failed
    );
    assert_eq!(first.complete_due(100).await.unwrap(), 0);
}

/// `due` hands out each job with its current version: a compare-and-set with it applies,
/// and one made stale by a change in between conflicts.
pub async fn due_jobs_carry_their_versions<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, Some(Duration::from_secs(2))).await;
    let store = fixture.jobs().await;
    let alice = owner("alice");
    let first = jobs.create(&alice).await.unwrap();
    let second = jobs.create(&alice).await.unwrap();
    clock.advance(Duration::from_secs(2));
    let due = store.due(clock.now(), 10).await.unwrap();
    let ids: Vec<JobId> = due.iter().map(|(job, _)| job.id).collect();
    assert_eq!(ids, [first.id, second.id]);
    jobs.update(second.id, &to(JobState::Running))
        .await
        .unwrap();
    let mut commits = Vec::new();
    for (job, version) in &due {
        let completed = job.apply(&to(JobState::Completed), clock.now());
        let completed = completed.unwrap().unwrap();
        commits.push(store.compare_and_set(version, &completed).await.unwrap());
    }
    assert_eq!(commits, [Commit::Applied, Commit::Conflict]);
    assert_eq!(
        jobs.get(second.id, &alice).await.unwrap().state,
        JobState::Running
    );
}

/// Every change reaches its owner's subscribers, in order, and never another owner's.
pub async fn events_reach_their_owner_only<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let mut alice = jobs.subscribe(&owner("alice")).await.unwrap();
    let mut bob = jobs.subscribe(&owner("bob")).await.unwrap();
    let job = jobs.create(&owner("alice")).await.unwrap();
    jobs.update(job.id, &to(JobState::Running)).await.unwrap();
    jobs.update(job.id, &to(JobState::Completed)).await.unwrap();
    let created = next_event(&mut alice).await;
    let running = next_event(&mut alice).await;
    let completed = next_event(&mut alice).await;
    assert_eq!(
        [created.job.state, running.job.state, completed.job.state],
        [JobState::Pending, JobState::Running, JobState::Completed]
    );
    assert!(created.id < running.id && running.id < completed.id);
    assert!(completed.job.owner == owner("alice"));
    no_event(&mut bob).await;
}

/// Replay returns the owner's events after an id, oldest first.
pub async fn replay_returns_events_after_an_id<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let alice = owner("alice");
    let first = jobs.create(&alice).await.unwrap();
    jobs.create(&owner("bob")).await.unwrap();
    let second = jobs.create(&alice).await.unwrap();
    jobs.update(first.id, &to(JobState::Completed))
        .await
        .unwrap();

    let all = jobs.replay(&alice, None).await.unwrap();
    let seen: Vec<(JobId, JobState)> = all.iter().map(|e| (e.job.id, e.job.state)).collect();
    assert_eq!(
        seen,
        [
            (first.id, JobState::Pending),
            (second.id, JobState::Pending),
            (first.id, JobState::Completed)
        ]
    );
    assert!(all.windows(2).all(|pair| pair[0].id < pair[1].id));
    let after_first = jobs.replay(&alice, Some(all[0].id)).await.unwrap();
    assert_eq!(after_first, all[1..]);
    assert!(
        jobs.replay(&alice, Some(all[2].id))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(jobs.replay(&owner("carol"), None).await.unwrap().is_empty());
}

/// An event published through one client reaches a subscriber of another client (another
/// server instance) on the same storage.
pub async fn events_cross_clients<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let publisher = service(fixture, &clock, None).await;
    let listener_bus = fixture.bus().await;
    let alice = owner("alice");
    let mut stream = listener_bus.subscribe(&alice).await.unwrap();
    let job = publisher.create(&alice).await.unwrap();
    publisher
        .update(job.id, &to(JobState::Completed))
        .await
        .unwrap();
    assert_eq!(next_event(&mut stream).await.job.state, JobState::Pending);
    let completed = next_event(&mut stream).await;
    assert_eq!(
        (completed.job.id, completed.job.state),
        (job.id, JobState::Completed)
    );
    let replayed = listener_bus.replay(&alice, None).await.unwrap();
    assert_eq!(replayed.last(), Some(&completed));
}

/// Takes the next item of an owner's event stream ([`Jobs::events`]), which must come.
async fn next_resumed<T>(
    stream: &mut (impl futures_core::Stream<Item = Result<T, JobsError>> + Unpin),
) -> T
where
    T: std::fmt::Debug,
{
    match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
        Ok(Some(Ok(item))) => item,
        other => panic!("expected an event within {EVENT_WAIT:?}, got {other:?}"),
    }
}

/// An owner's event stream: a fresh one carries only what happens after it opens; one that
/// resumes after an id carries the kept events after it, then live ones; each event once,
/// in order, even when it was published between the subscription and the replay.
pub async fn event_streams_resume_without_loss<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let alice = owner("alice");
    let first = jobs.create(&alice).await.unwrap();
    let created_first = jobs.replay(&alice, None).await.unwrap()[0].clone();
    let mut fresh = Box::pin(jobs.events(alice.clone(), None).await.unwrap());

    let second = jobs.create(&alice).await.unwrap();
    jobs.update(first.id, &to(JobState::Completed))
        .await
        .unwrap();
    let mut resumed = Box::pin(
        jobs.events(alice.clone(), Some(created_first.id))
            .await
            .unwrap(),
    );
    jobs.update(second.id, &to(JobState::Completed))
        .await
        .unwrap();

    let expected = [
        (second.id, JobState::Pending),
        (first.id, JobState::Completed),
        (second.id, JobState::Completed),
    ];
    for stream in [&mut fresh, &mut resumed] {
        let mut seen = Vec::new();
        for _ in 0..expected.len() {
            let event = next_resumed(stream).await;
            seen.push((event.id, (event.job.id, event.job.state)));
        }
        assert!(
            seen.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "{seen:?}"
        );
        let jobs_seen: Vec<_> = seen.into_iter().map(|(_, job)| job).collect();
        assert_eq!(jobs_seen, expected);
        if let Ok(extra) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            panic!("expected no more events, got {extra:?}");
        }
    }
}

/// A stream that falls behind (more events than the live buffer while nobody reads it)
/// replays what it missed from the bus's history: every event once, in order.
pub async fn a_lagging_event_stream_replays_what_it_missed<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let alice = owner("alice");
    let mut stream = Box::pin(jobs.events(alice.clone(), None).await.unwrap());
    let mut created = Vec::new();
    for _ in 0..LIVE_BUFFER * 3 {
        created.push(jobs.create(&alice).await.unwrap().id);
    }
    let mut last = None;
    for id in created {
        let event = next_resumed(&mut stream).await;
        assert_eq!(event.job.id, id);
        assert!(last.is_none_or(|last| event.id > last));
        last = Some(event.id);
    }
}

/// The completion loop ([`Jobs::run_background`], the `JOB_TIME` simulator) completes a
/// job once its time has come by the service's clock, and announces it.
pub async fn the_completion_loop_completes_due_jobs<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, Some(Duration::from_secs(2))).await;
    let alice = owner("alice");
    let mut stream = Box::pin(jobs.events(alice.clone(), None).await.unwrap());
    let job = jobs.create(&alice).await.unwrap();
    assert_eq!(next_resumed(&mut stream).await.job.state, JobState::Pending);
    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = errors.clone();
    let looping = jobs.clone();
    let running = tokio::spawn(async move {
        looping
            .run_background(move |_| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await;
    });
    assert_eq!(
        jobs.get(job.id, &alice).await.unwrap().state,
        JobState::Pending
    );
    clock.advance(Duration::from_secs(2));
    let completed = next_resumed(&mut stream).await;
    running.abort();
    assert_eq!(
        (completed.job.id, completed.job.state),
        (job.id, JobState::Completed)
    );
    assert_eq!(errors.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// The `JOB_TIME` simulator completes only jobs no worker touched: a job a worker set to
/// running, or gave progress, is left to that worker, even once it is due.
pub async fn the_simulator_never_overrides_a_worker<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, Some(Duration::from_secs(2))).await;
    let alice = owner("alice");
    let untouched = jobs.create(&alice).await.unwrap();
    let running = jobs.create(&alice).await.unwrap();
    let progressed = jobs.create(&alice).await.unwrap();
    jobs.update(running.id, &to(JobState::Running))
        .await
        .unwrap();
    let half = JobUpdate {
        progress: Some(50),
        ..JobUpdate::default()
    };
    jobs.update(progressed.id, &half).await.unwrap();
    clock.advance(Duration::from_secs(3));
    assert_eq!(jobs.complete_due(100).await.unwrap(), 1);
    let state = |job: JobId| {
        let jobs = jobs.clone();
        let alice = alice.clone();
        async move { jobs.get(job, &alice).await.unwrap() }
    };
    assert_eq!(state(untouched.id).await.state, JobState::Completed);
    assert_eq!(state(running.id).await.state, JobState::Running);
    let left = state(progressed.id).await;
    assert_eq!((left.state, left.progress), (JobState::Pending, 50));
    clock.advance(Duration::from_secs(60));
    assert_eq!(jobs.complete_due(100).await.unwrap(), 0);
    assert_eq!(state(running.id).await.state, JobState::Running);
}

/// A client that resumes with an id the bus does not know (ahead of every kept event:
/// from another deployment, or from before the store lost its data) is not left silent:
/// it gets every kept event of its owner, then the live ones (SPEC §4).
pub async fn a_resume_from_an_unknown_id_is_never_silent<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let alice = owner("alice");
    let first = jobs.create(&alice).await.unwrap();
    let kept = jobs.replay(&alice, None).await.unwrap();
    let unknown = EventId(
        kept.last()
            .unwrap()
            .id
            .0
            .saturating_mul(1000)
            .max(u64::MAX / 4),
    );
    let mut stream = Box::pin(jobs.events(alice.clone(), Some(unknown)).await.unwrap());
    let replayed = next_resumed(&mut stream).await;
    assert_eq!(
        (replayed.job.id, replayed.job.state),
        (first.id, JobState::Pending)
    );
    jobs.update(first.id, &to(JobState::Completed))
        .await
        .unwrap();
    let live = next_resumed(&mut stream).await;
    assert_eq!(
        (live.job.id, live.job.state),
        (first.id, JobState::Completed)
    );
    // An owner with nothing kept at all: live events still arrive.
    let bob = owner("bob");
    let mut stream = Box::pin(jobs.events(bob.clone(), Some(unknown)).await.unwrap());
    let job = jobs.create(&bob).await.unwrap();
    assert_eq!(next_resumed(&mut stream).await.job.id, job.id);
}

/// Event ids carry the time: they are never below the floor of when they were published,
/// so a bus that lost its counter goes on above every id it gave before (SPEC §4).
pub async fn event_ids_are_above_the_time_floor<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = service(fixture, &clock, None).await;
    let before = EventId::floor_now();
    let job = jobs.create(&owner("alice")).await.unwrap();
    let event = jobs.replay(&owner("alice"), None).await.unwrap();
    assert_eq!(event.last().unwrap().job.id, job.id);
    assert!(
        event.last().unwrap().id.0 >= before,
        "{event:?} below {before}"
    );
}

/// Finished jobs and their events are gone once the retention (`JOB_RETENTION`) has
/// passed since they finished, by the service's clock; unfinished jobs are kept.
pub async fn finished_jobs_are_kept_for_the_retention<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let jobs = Jobs::new(fixture.jobs().await, fixture.bus().await)
        .with_clock(clock.clone())
        .with_config(JobsConfig {
            retention: Duration::from_secs(86_400),
            ..JobsConfig::default()
        });
    let alice = owner("alice");
    let finished = jobs.create(&alice).await.unwrap();
    jobs.update(finished.id, &to(JobState::Completed))
        .await
        .unwrap();
    let unfinished = jobs.create(&alice).await.unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(jobs.list(&alice, 10).await.unwrap().len(), 2);
    assert_eq!(jobs.replay(&alice, None).await.unwrap().len(), 3);

    clock.advance(Duration::from_secs(86_400));
    assert!(matches!(
        jobs.get(finished.id, &alice).await,
        Err(JobsError::NotFound(_))
    ));
    let listed: Vec<JobId> = jobs
        .list(&alice, 10)
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(listed, [unfinished.id]);
    let replayed: Vec<JobId> = jobs
        .replay(&alice, None)
        .await
        .unwrap()
        .iter()
        .map(|event| event.job.id)
        .collect();
    assert_eq!(
        replayed,
        [unfinished.id],
        "the finished job's events are gone too"
    );
    assert_eq!(
        jobs.get(unfinished.id, &alice).await.unwrap().state,
        JobState::Pending
    );
}
