//! `migrate_layout` (`heartbeat-server migrate-redis`) on a Redis that builds before the
//! slot tag wrote: on one server and on a cluster, interrupted and resumed, with instances
//! serving meanwhile; after it every read consults one key, and a newer layout is refused.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use fred::prelude::KeysInterface;
use heartbeat_core::jobs::{
    EventBus, Job, JobId, JobState, JobStore, JobUpdate, Jobs, NewJob, Owner,
};
use heartbeat_core::{Heartbeats, Id, ManualClock, SessionStore, TokenCodec};
use heartbeat_store_redis::testkit::{RedisServer, earlier, plain_client};
use heartbeat_store_redis::{ConnectError, MigrateOptions, RedisConfig, RedisStore};
use support::on_each_node;
use support::{NS, at, calls, exported, history_ids, play_and_stop, start_cluster, store};

const USERS: [&str; 2] = ["7", "fan{42}"];
const JOB_OWNER: &str = "label{3}";
const EVENT_OWNER: &str = "studio{7}";

fn user(text: &str) -> Id {
    heartbeat_core::sessions::analytics::user_id(text)
}

fn earlier_job(id: u64, owner: &str, due: bool) -> Job {
    NewJob {
        owner: Owner::new(owner).unwrap(),
        created_at: at(-10),
        complete_at: due.then(|| at(0)),
    }
    .into_job(JobId(id))
}

/// What an earlier build left: two sessions of each user (progress, history, the
/// one-key index), jobs 41 (due) and 42 with their indexes, and two events.
async fn an_earlier_builds_redis(url: &str) {
    let redis = plain_client(url).await;
    for text in USERS {
        let user = user(text);
        earlier::write_session(&redis, NS, &user, "before-1", 100, 40.0, at(0)).await;
        earlier::write_session(&redis, NS, &user, "before-2", 200, 10.0, at(1)).await;
    }
    earlier::write_job(&redis, NS, &earlier_job(41, JOB_OWNER, true)).await;
    earlier::write_job(&redis, NS, &earlier_job(42, JOB_OWNER, false)).await;
    let mut event_job = earlier_job(43, EVENT_OWNER, false);
    earlier::write_event(&redis, NS, 1000, &event_job).await;
    event_job.progress = 30;
    earlier::write_event(&redis, NS, 1001, &event_job).await;
    earlier::mark_layout_1(&redis, NS).await;
}

/// The names the earlier build wrote.
fn earlier_names(cluster: bool) -> Vec<String> {
    let mut names: Vec<String> = USERS
        .iter()
        .flat_map(|user| {
            [
                format!("{NS}hb_progress:{user}"),
                format!("{NS}hb_history:{user}"),
            ]
        })
        .chain([
            format!("{NS}hb_job:41"),
            format!("{NS}hb_job:42"),
            format!("{NS}hb_jobs:owner:{JOB_OWNER}"),
            format!("{NS}{{hb_events}}:owner:{EVENT_OWNER}"),
        ])
        .collect();
    if cluster {
        // On one server these two names are today's too.
        names.push(format!("{NS}{{hb_history_index}}:finished"));
        names.push(format!("{NS}hb_jobs:due"));
    }
    names
}

/// Everything a client can read of the data above.
#[derive(Debug, PartialEq)]
struct Observed {
    progress: Vec<Option<(f64, String)>>,
    history: Vec<Vec<String>>,
    export: Vec<(String, String)>,
    jobs: Vec<JobId>,
    due: Vec<JobId>,
    events: Vec<(u64, u8)>,
    job_41: (JobState, u8),
}

async fn observe(store: &RedisStore, clock: &ManualClock) -> Observed {
    let codec = TokenCodec::new("layout key").unwrap();
    let heartbeats = Heartbeats::new(codec, store.clone()).with_clock(clock.clone());
    let mut progress = Vec::new();
    let mut history = Vec::new();
    for text in USERS {
        for asset in [100, 200] {
            let found = heartbeats
                .progress(&user(text), &Id::Int(asset))
                .await
                .unwrap();
            progress.push(found.map(|p| (p.progress, p.session_id)));
        }
        history.push(history_ids(&heartbeats, &user(text)).await);
    }
    let mut export = exported(&heartbeats, 2).await;
    export.sort();
    let owner = Owner::new(JOB_OWNER).unwrap();
    let jobs = JobStore::list_by_owner(store, &owner, 10).await.unwrap();
    let due = JobStore::due(store, at(100), 10).await.unwrap();
    let events = EventBus::replay(store, &Owner::new(EVENT_OWNER).unwrap(), None)
        .await
        .unwrap();
    let (job_41, _) = JobStore::get(store, JobId(41)).await.unwrap().unwrap();
    Observed {
        progress,
        history,
        export,
        jobs: jobs.into_iter().map(|job| job.id).collect(),
        due: due.into_iter().map(|(job, _)| job.id).collect(),
        events: events
            .into_iter()
            .map(|e| (e.id.0, e.job.progress))
            .collect(),
        job_41: (job_41.state, job_41.progress),
    }
}

/// Calls of `command` over every node, summed.
fn total_calls(ports: &[u16], command: &str) -> u64 {
    calls(ports, command).iter().sum()
}

async fn a_migration_moves_every_earlier_key(url: &str, ports: &[u16], cluster: bool) {
    an_earlier_builds_redis(url).await;
    let serving = store(url).await;
    assert!(serving.reads_earlier_layout(), "layout version 1");
    // This build records a session and a job beside the earlier build's.
    let clock = ManualClock::new(at(10));
    let codec = TokenCodec::new("layout key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), serving.clone()).with_clock(clock.clone());
    play_and_stop(&heartbeats, &clock, &codec, &user("7"), 100, 55.0).await;
    let jobs = Jobs::new(serving.clone(), serving.clone()).with_clock(clock.clone());
    let ours = jobs.create(&Owner::new(JOB_OWNER).unwrap()).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let before = observe(&serving, &clock).await;
    assert_eq!(before.progress[0].as_ref().unwrap().0, 55.0, "{before:?}");
    assert_eq!(before.history[0].len(), 3, "{before:?}");
    assert_eq!(before.jobs, [ours.id, JobId(42), JobId(41)]);
    assert_eq!(before.due, [JobId(41)]);
    assert_eq!(before.events, [(1000, 0), (1001, 30)]);

    // A key at a time, as if stopped and started again: nothing is lost in between.
    let migrator = store(url).await;
    let mut options = MigrateOptions::default();
    options.max_keys = Some(1);
    options.scan_count = 2;
    let mut runs = 0;
    loop {
        runs += 1;
        let report = migrator.migrate_layout(&options).await.unwrap();
        assert_eq!(observe(&serving, &clock).await, before, "after run {runs}");
        if report.finished {
            break;
        }
        assert!(serving.reads_earlier_layout());
        assert!(runs < 100, "the migration ends");
    }
    assert!(runs > 3, "resumed {runs} times");

    let redis = plain_client(url).await;
    for name in earlier_names(cluster) {
        let exists: i64 = redis.exists(&name).await.unwrap();
        assert_eq!(exists, 0, "{name} is still there");
    }
    let version: Option<String> = redis.get(format!("{NS}hb_layout:version")).await.unwrap();
    assert_eq!(version.as_deref(), Some("2"));
    let cursors: i64 = redis
        .exists(format!("{NS}hb_layout:migration"))
        .await
        .unwrap();
    assert_eq!(cursors, 0, "the cursors are dropped");
    // Every key keeps a TTL (the longer of the two where both names held one), the
    // version marker aside.
    for (port, keys) in ports
        .iter()
        .zip(on_each_node(ports, &["--scan", "--pattern", "layout:*"]))
    {
        for key in keys
            .lines()
            .filter(|key| !key.ends_with("hb_layout:version"))
        {
            let pttl = on_each_node(&[*port], &["pttl", key]).concat();
            if pttl.starts_with("MOVED") {
                continue; // a replica's copy: its master is asked too
            }
            let pttl: i64 = pttl.trim().parse().unwrap();
            assert!(pttl > 0, "{key}: {pttl}");
        }
    }

    // Every instance now reads one name per call, and reads the same.
    assert!(!migrator.reads_earlier_layout());
    let fresh = store(url).await;
    assert!(!fresh.reads_earlier_layout());
    assert_eq!(observe(&fresh, &clock).await, before);
    let again = fresh
        .migrate_layout(&MigrateOptions::default())
        .await
        .unwrap();
    assert!(again.finished && again.moved == 0, "{again:?}");
    for (command, read) in [("hget", 0), ("lrange", 1), ("zrangebyscore", 2), ("get", 3)] {
        let calls_before = total_calls(ports, command);
        match read {
            0 => drop(fresh.progress(&user("7"), &Id::Int(100)).await.unwrap()),
            1 => drop(fresh.history(&user("7"), 10).await.unwrap()),
            2 => drop(
                EventBus::replay(&fresh, &Owner::new(EVENT_OWNER).unwrap(), None)
                    .await
                    .unwrap(),
            ),
            _ => drop(JobStore::get(&fresh, JobId(41)).await.unwrap()),
        }
        assert_eq!(total_calls(ports, command) - calls_before, 1, "{command}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_on_one_server_moves_every_earlier_key() {
    let server = RedisServer::start();
    a_migration_moves_every_earlier_key(&server.url(), &[server.port()], false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_on_a_cluster_moves_every_earlier_key() {
    let cluster = start_cluster().await;
    a_migration_moves_every_earlier_key(&cluster.url(), &cluster.ports(), true).await;
}

/// Instances of layout version 1 play, update jobs and publish events while the migration
/// runs; afterwards everything acknowledged is there, and the instance that served
/// throughout has switched to one name per read by itself.
async fn instances_serve_while_it_runs(url: &str) {
    const PLAYERS: usize = 40;
    let redis = plain_client(url).await;
    for n in 0..PLAYERS {
        let user = Id::Int(1000 + n as i64);
        earlier::write_session(&redis, NS, &user, "before", 100, 5.0, at(0)).await;
    }
    an_earlier_builds_redis(url).await;
    let mut config = RedisConfig::new(url);
    config.namespace = NS.into();
    config.layout_check_every = Duration::from_millis(100);
    let serving = RedisStore::connect(config).await.unwrap();
    assert!(serving.reads_earlier_layout());

    let clock = ManualClock::new(at(10));
    let codec = TokenCodec::new("layout key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), serving.clone()).with_clock(clock.clone());
    let jobs = Jobs::new(serving.clone(), serving.clone()).with_clock(clock.clone());
    let migrator = store(url).await;
    // A key a run, so that the players below play throughout.
    let migrated = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let migration = tokio::spawn({
        let migrated = std::sync::Arc::clone(&migrated);
        async move {
            let mut options = MigrateOptions::default();
            options.scan_count = 4;
            options.max_keys = Some(1);
            let mut moved = 0;
            loop {
                let report = migrator.migrate_layout(&options).await.unwrap();
                moved += report.moved;
                if report.finished {
                    migrated.store(true, std::sync::atomic::Ordering::SeqCst);
                    return moved;
                }
            }
        }
    });
    let mut played_during = 0;
    let mut sessions = Vec::new();
    for n in 0..PLAYERS {
        let user = Id::Int(1000 + n as i64);
        sessions
            .push(play_and_stop(&heartbeats, &clock, &codec, &user, 100, 60.0 + n as f64).await);
        let progress = u8::try_from(n + 1).unwrap();
        jobs.update(
            JobId(41),
            &JobUpdate {
                progress: Some(progress),
                ..JobUpdate::default()
            },
        )
        .await
        .unwrap();
        played_during += usize::from(!migrated.load(std::sync::atomic::Ordering::SeqCst));
    }
    let moved = migration.await.unwrap();
    assert!(moved >= PLAYERS as u64 * 2, "{moved}");
    assert!(
        played_during > PLAYERS / 4,
        "{played_during} played during the migration"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while serving.reads_earlier_layout() {
        assert!(
            Instant::now() < deadline,
            "the serving instance saw version 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (n, session) in sessions.iter().enumerate() {
        let user = Id::Int(1000 + n as i64);
        let progress = heartbeats
            .progress(&user, &Id::Int(100))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(progress.progress, 60.0 + n as f64, "{user}");
        let history = history_ids(&heartbeats, &user).await;
        assert_eq!(history, [session.as_str(), "before"], "{user}");
    }
    let (job, _) = JobStore::get(&serving, JobId(41)).await.unwrap().unwrap();
    assert_eq!(
        job.progress,
        u8::try_from(PLAYERS).unwrap(),
        "every update kept"
    );
    let events = EventBus::replay(&serving, &Owner::new(JOB_OWNER).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(events.len(), PLAYERS, "one event per update");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_serve_while_the_migration_runs_on_one_server() {
    let server = RedisServer::start();
    instances_serve_while_it_runs(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_serve_while_the_migration_runs_on_a_cluster() {
    let cluster = start_cluster().await;
    instances_serve_while_it_runs(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_with_no_key_starts_migrated_and_one_with_keys_does_not() {
    let server = RedisServer::start();
    assert!(!store(&server.url()).await.reads_earlier_layout());
    let other = RedisServer::start();
    let _: () = plain_client(&other.url())
        .await
        .set("someone-elses", "key", None, None, false)
        .await
        .unwrap();
    assert!(store(&other.url()).await.reads_earlier_layout());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_layout_is_refused_with_what_to_do() {
    let server = RedisServer::start();
    let redis = plain_client(&server.url()).await;
    for (value, says) in [("3", "upgrade this instance"), ("two", "\"two\"")] {
        let _: () = redis
            .set(format!("{NS}hb_layout:version"), value, None, None, false)
            .await
            .unwrap();
        let mut config = RedisConfig::new(server.url());
        config.namespace = NS.into();
        let error = RedisStore::connect(config).await.unwrap_err();
        assert!(matches!(error, ConnectError::Layout { .. }), "{error:?}");
        assert!(error.to_string().contains(says), "{error}");
    }
    let version: String = redis.get(format!("{NS}hb_layout:version")).await.unwrap();
    assert_eq!(version, "two");
}

/// Today's name of `user`'s progress, as a store of this build writes it.
async fn migrator_layout_progress_key(server: &RedisServer, user: &Id) -> String {
    let server_side = store(&server.url()).await;
    let clock = ManualClock::new(at(0));
    let codec = TokenCodec::new("layout key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), server_side).with_clock(clock.clone());
    play_and_stop(&heartbeats, &clock, &codec, user, 999, 1.0).await;
    let pattern = format!("{NS}hb_progress:{{*}}:{user}");
    let keys = on_each_node(&[server.port()], &["--scan", "--pattern", &pattern]).concat();
    keys.lines()
        .next()
        .expect("today's progress key")
        .to_owned()
}

/// An earlier key whose entries do not read is moved as it is (nothing is dropped), and a
/// key named like an earlier build's but of another type is left alone and reported:
/// neither stops the migration.
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_entries_and_foreign_keys_do_not_stop_the_migration() {
    use fred::prelude::{HashesInterface, ListInterface};
    let server = RedisServer::start();
    let url = server.url();
    let redis = plain_client(&url).await;
    let user = Id::Int(9);
    earlier::write_session(&redis, NS, &user, "readable", 100, 12.0, at(0)).await;
    let _: () = redis
        .hset(format!("{NS}hb_progress:9"), ("200", "not json"))
        .await
        .unwrap();
    let _: () = redis
        .rpush(format!("{NS}hb_history:9"), "not json either")
        .await
        .unwrap();
    let _: () = redis
        .set(
            format!("{NS}hb_progress:intruder"),
            "a string",
            None,
            None,
            false,
        )
        .await
        .unwrap();
    // Today's name of user 10's progress holds a string: the earlier hash stays.
    earlier::write_session(&redis, NS, &Id::Int(10), "x", 100, 1.0, at(0)).await;
    let ten = migrator_layout_progress_key(&server, &Id::Int(10)).await;
    let _: () = redis
        .set(&ten, "not a hash", None, None, false)
        .await
        .unwrap();
    earlier::mark_layout_1(&redis, NS).await;
    let migrator = store(&url).await;
    let report = migrator
        .migrate_layout(&MigrateOptions::default())
        .await
        .unwrap();
    assert!(report.finished, "{report:?}");
    let mut skipped = report.skipped.clone();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            format!("{NS}hb_progress:10"),
            format!("{NS}hb_progress:intruder")
        ]
    );
    let foreign: String = redis
        .get(format!("{NS}hb_progress:intruder"))
        .await
        .unwrap();
    assert_eq!(foreign, "a string", "left as it was");
    let progress = migrator
        .progress(&user, &Id::Int(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(progress.progress, 12.0);
    // The unreadable entries came along: reading them fails as it did before.
    assert!(migrator.progress(&user, &Id::Int(200)).await.is_err());
    assert!(migrator.history(&user, 10).await.is_err());
    let earlier_left: i64 = redis
        .exists(vec![
            format!("{NS}hb_progress:9"),
            format!("{NS}hb_history:9"),
        ])
        .await
        .unwrap();
    assert_eq!(earlier_left, 0);
}

/// Two migrations at once, while an instance updates every earlier job: no acknowledged
/// update is undone by a run's late copy, and each key moves once.
#[tokio::test(flavor = "multi_thread")]
async fn two_migrations_at_once_undo_no_update() {
    const JOBS: u64 = 150;
    let server = RedisServer::start();
    let url = server.url();
    let redis = plain_client(&url).await;
    for id in 1..=JOBS {
        earlier::write_job(&redis, NS, &earlier_job(id, JOB_OWNER, false)).await;
    }
    earlier::mark_layout_1(&redis, NS).await;
    let serving = store(&url).await;
    let jobs = Jobs::new(serving.clone(), serving.clone());
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut options = MigrateOptions::default();
                options.scan_count = 5;
                store(&url).await.migrate_layout(&options).await.unwrap()
            })
        })
        .collect();
    for round in 1..=3_u8 {
        for id in 1..=JOBS {
            jobs.update(
                JobId(id),
                &JobUpdate {
                    progress: Some(round * 10),
                    ..JobUpdate::default()
                },
            )
            .await
            .unwrap();
        }
    }
    let mut moved = 0;
    for run in runs {
        let report = run.await.unwrap();
        assert!(report.finished, "{report:?}");
        moved += report.moved;
    }
    assert!(moved <= JOBS + 1, "each key counted once: {moved}");
    for id in 1..=JOBS {
        let (job, _) = JobStore::get(&serving, JobId(id)).await.unwrap().unwrap();
        assert_eq!(job.progress, 30, "job {id}");
    }
}

/// A version written while a migration runs (a newer build's) is not overwritten: the
/// run ends with an error that says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_written_during_the_migration_is_kept() {
    let server = RedisServer::start();
    let url = server.url();
    let redis = plain_client(&url).await;
    for n in 0..300 {
        earlier::write_session(&redis, NS, &Id::Int(n), "before", 100, 5.0, at(0)).await;
    }
    earlier::mark_layout_1(&redis, NS).await;
    let migrator = store(&url).await;
    let mut options = MigrateOptions::default();
    options.max_keys = Some(10);
    options.scan_count = 5;
    assert!(!migrator.migrate_layout(&options).await.unwrap().finished);
    let _: () = redis
        .set(format!("{NS}hb_layout:version"), "3", None, None, false)
        .await
        .unwrap();
    let refused = migrator
        .migrate_layout(&MigrateOptions::default())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("upgrade this instance"),
        "{refused}"
    );
    // Between the start of a run and its end: its last step finds the change.
    let _: () = redis
        .set(format!("{NS}hb_layout:version"), "1", None, None, false)
        .await
        .unwrap();
    let run = tokio::spawn({
        let migrator = migrator.clone();
        async move {
            let mut options = MigrateOptions::default();
            options.scan_count = 1;
            migrator.migrate_layout(&options).await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cursors: i64 = redis
            .exists(format!("{NS}hb_layout:migration"))
            .await
            .unwrap();
        let left: i64 = redis.exists(format!("{NS}hb_progress:299")).await.unwrap();
        if cursors == 1 && left == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the run started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _: () = redis
        .set(format!("{NS}hb_layout:version"), "7", None, None, false)
        .await
        .unwrap();
    let error = run.await.unwrap().unwrap_err();
    assert!(
        error.to_string().contains("changed during the migration"),
        "{error}"
    );
    let version: String = redis.get(format!("{NS}hb_layout:version")).await.unwrap();
    assert_eq!(version, "7");
}

/// A Redis emptied under a running instance (a restart without persistence) keeps no
/// version: instances of earlier builds may still be writing there.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_emptied_while_serving_is_not_taken_for_a_new_one() {
    let server = RedisServer::start();
    let url = server.url();
    let redis = plain_client(&url).await;
    earlier::write_session(&redis, NS, &Id::Int(1), "before", 100, 5.0, at(0)).await;
    earlier::mark_layout_1(&redis, NS).await;
    let mut config = RedisConfig::new(url.clone());
    config.namespace = NS.into();
    config.layout_check_every = Duration::from_millis(20);
    let serving = RedisStore::connect(config).await.unwrap();
    on_each_node(&[server.port()], &["flushall"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let version: Option<String> = redis.get(format!("{NS}hb_layout:version")).await.unwrap();
    assert_eq!(version, None);
    assert!(serving.reads_earlier_layout());
}

/// An owner's job index of many thousands moves in batches, every id kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_sorted_set_moves_in_batches() {
    use fred::prelude::SortedSetsInterface;
    const IDS: u64 = 4_500;
    let server = RedisServer::start();
    let url = server.url();
    let redis = plain_client(&url).await;
    let key = format!("{NS}hb_jobs:owner:{JOB_OWNER}");
    let members: Vec<(f64, String)> = (1..=IDS).map(|id| (id as f64, id.to_string())).collect();
    let _: () = redis
        .zadd(&key, None, None, false, false, members)
        .await
        .unwrap();
    earlier::mark_layout_1(&redis, NS).await;
    let migrator = store(&url).await;
    let report = migrator
        .migrate_layout(&MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(report.moved, 1, "{report:?}");
    let exists: i64 = redis.exists(&key).await.unwrap();
    assert_eq!(exists, 0);
    let pattern = format!("{NS}hb_jobs:{{*}}:owner:*");
    let keys = on_each_node(&[server.port()], &["--scan", "--pattern", &pattern]).concat();
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let count: u64 = redis.zcard(keys[0]).await.unwrap();
    assert_eq!(count, IDS);
}

/// The race an attack found: run B reads the earlier job, stalls before it reads today's
/// copy, and meanwhile run A moves the job and an instance updates it there. B must
/// leave the update alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_run_leaves_an_update_made_after_another_runs_move() {
    let server = RedisServer::start();
    let url = server.url();
    let redis = plain_client(&url).await;
    earlier::write_job(&redis, NS, &earlier_job(41, JOB_OWNER, false)).await;
    earlier::mark_layout_1(&redis, NS).await;
    let serving = store(&url).await;
    let held = std::sync::Arc::new(tokio::sync::Notify::new());
    // B's read of today's copy of the job (`GET …hb_job:{…}:41`) waits 1.5 s.
    let proxy = support::delaying_proxy(
        server.port(),
        &[b"$3\r\nGET\r\n", b"hb_job:{"],
        Duration::from_millis(1500),
        std::sync::Arc::clone(&held),
    )
    .await;
    let mut config = RedisConfig::new(format!("redis://127.0.0.1:{proxy}"));
    config.namespace = NS.into();
    config.command_timeout = Duration::from_secs(5);
    let stalled = RedisStore::connect(config).await.unwrap();
    let run_b = tokio::spawn(async move {
        stalled
            .migrate_layout(&MigrateOptions::default())
            .await
            .unwrap()
    });
    tokio::time::timeout(Duration::from_secs(10), held.notified())
        .await
        .expect("B reached the job");
    let run_a = store(&url)
        .await
        .migrate_layout(&MigrateOptions::default())
        .await
        .unwrap();
    assert!(run_a.finished, "{run_a:?}");
    let jobs = Jobs::new(serving.clone(), serving.clone());
    jobs.update(
        JobId(41),
        &JobUpdate {
            progress: Some(60),
            ..JobUpdate::default()
        },
    )
    .await
    .unwrap();
    let run_b = run_b.await.unwrap();
    assert!(run_b.finished, "{run_b:?}");
    let (job, _) = JobStore::get(&serving, JobId(41)).await.unwrap().unwrap();
    assert_eq!(job.progress, 60, "the acknowledged update stays");
}
