//! The key layout that lets one script commit a heartbeat on a Redis Cluster: progress,
//! history and the analytics index entry live in the slot of the user's session key (the
//! Node server's name, unchanged), and what builds before the slot tag wrote under the
//! old names is still read, on one server and on a cluster (a rolling upgrade loses
//! nothing). Job events are kept in their owner's slot likewise.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use heartbeat_core::jobs::{
    EventBus, EventId, EventStream, JobEvent, JobId, JobStore, JobUpdate, Jobs, Owner,
};
use heartbeat_core::sessions::NoticeBus;
use heartbeat_core::sessions::notice::{NoticeReason, SessionEnded, SessionNotice};
use heartbeat_core::{Heartbeats, Id, ManualClock, Timestamp, TokenCodec};

use heartbeat_store_redis::testkit::{RedisCluster, RedisServer, earlier, plain_client};

mod support;

use support::{
    NS, at, calls, exported, history_ids, on_each_node, play_and_stop, start_cluster, store,
};

/// The next event of `stream`, within 10 s.
async fn next_event(stream: &mut EventStream) -> JobEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("an event, not a lag")
}

/// Says the Redis at `url` may hold keys of earlier builds (layout version 1), as a Redis
/// they ran on does: this build then reads their names too, until `migrate-redis`.
async fn as_an_earlier_builds_redis(url: &str) {
    earlier::mark_layout_1(&plain_client(url).await, NS).await;
}

/// What a build before the slot tag wrote for a session of `user` that ended at `ended`.
async fn write_as_an_earlier_build(
    redis: &fred::clients::Client,
    user: &Id,
    session_id: &str,
    asset: i64,
    progress: f64,
    ended: Timestamp,
) {
    earlier::write_session(redis, NS, user, session_id, asset, progress, ended).await;
}

/// Sessions an earlier build recorded and sessions this build records, side by side as
/// in a rolling upgrade (the earlier build still writing after this one started), all
/// come back: progress (the newer of the two names), history and the export.
async fn a_rolling_upgrade_loses_nothing(url: &str) {
    as_an_earlier_builds_redis(url).await;
    let (redis, store) = (plain_client(url).await, store(url).await);
    let clock = ManualClock::new(at(0));
    let codec = TokenCodec::new("layout key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), store.clone()).with_clock(clock.clone());
    // Braces in a user id move the session key's hash tag: the tag follows it.
    for user in [Id::Int(7), Id::Str("fan{42}".into())] {
        write_as_an_earlier_build(&redis, &user, "before-1", 100, 40.0, at(0)).await;
        write_as_an_earlier_build(&redis, &user, "before-2", 200, 10.0, at(1)).await;
    }
    clock.advance(Duration::from_secs(10));
    let user = Id::Int(7);
    let after = play_and_stop(&heartbeats, &clock, &codec, &user, 100, 55.0).await;
    // An instance of the earlier build, still running, records a later position.
    write_as_an_earlier_build(&redis, &user, "before-3", 200, 25.0, at(30)).await;

    let progress = |asset: i64| {
        let heartbeats = &heartbeats;
        let user = &user;
        async move {
            heartbeats
                .progress(user, &Id::Int(asset))
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(
        progress(100).await.progress,
        55.0,
        "this build's, the newer"
    );
    assert_eq!(
        progress(200).await.progress,
        25.0,
        "the earlier build's, the newer"
    );
    let history = history_ids(&heartbeats, &user).await;
    assert_eq!(
        history,
        ["before-3", after.as_str(), "before-2", "before-1"]
    );
    let fan_history = heartbeats.history(&"fan{42}".into(), 10).await.unwrap();
    assert_eq!(fan_history.len(), 2, "{fan_history:?}");

    clock.advance(Duration::from_secs(60));
    let exported = exported(&heartbeats, 2).await;
    let (seven, fan) = ("7".to_owned(), "fan{42}".to_owned());
    let expected = [
        (&seven, "before-1"),
        (&fan, "before-1"),
        (&seven, "before-2"),
        (&fan, "before-2"),
        (&seven, after.as_str()),
        (&seven, "before-3"),
    ];
    let mut sorted_export = exported.clone();
    sorted_export.sort();
    let mut sorted_expected: Vec<(String, String)> = expected
        .iter()
        .map(|(user, session)| ((*user).clone(), (*session).to_owned()))
        .collect();
    sorted_expected.sort();
    assert_eq!(sorted_export, sorted_expected, "each once: {exported:?}");
    let order: Vec<&str> = exported.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        [&order[..2], &order[4..]].concat(),
        ["before-1", "before-1", after.as_str(), "before-3"],
        "in the order they ended: {exported:?}"
    );
}

/// Job events an earlier build kept under the `{hb_events}` tag are replayed with this
/// build's, in id order, for as long as they are kept.
async fn events_of_an_earlier_build_are_replayed_in_order(url: &str) {
    as_an_earlier_builds_redis(url).await;
    let (redis, store) = (plain_client(url).await, store(url).await);
    let jobs = Jobs::new(store.clone(), store.clone());
    let owner = Owner::new("studio{7}").unwrap();
    let job = jobs.create(&owner).await.unwrap();
    let first = EventBus::replay(&store, &owner, None).await.unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    // An instance of the earlier build publishes the next change.
    let earlier = EventId(first[0].id.0 + 1);
    let mut changed = job.clone();
    changed.progress = 40;
    earlier::write_event(&redis, NS, earlier.0, &changed).await;
    jobs.update(
        job.id,
        &JobUpdate {
            progress: Some(70),
            ..JobUpdate::default()
        },
    )
    .await
    .unwrap();
    let progress = |events: Vec<JobEvent>| -> Vec<(EventId, u8)> {
        events
            .into_iter()
            .map(|event| (event.id, event.job.progress))
            .collect()
    };
    let all = progress(EventBus::replay(&store, &owner, None).await.unwrap());
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[0], (first[0].id, 0));
    assert_eq!(all[1], (earlier, 40));
    assert!(all[2].0 > earlier && all[2].1 == 70, "{all:?}");
    let resumed = progress(
        EventBus::replay(&store, &owner, Some(first[0].id))
            .await
            .unwrap(),
    );
    assert_eq!(resumed, all[1..], "resumed after the first");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_on_one_server_loses_nothing() {
    let server = RedisServer::start();
    a_rolling_upgrade_loses_nothing(&server.url()).await;
    events_of_an_earlier_build_are_replayed_in_order(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_on_a_cluster_loses_nothing() {
    let cluster = start_cluster().await;
    a_rolling_upgrade_loses_nothing(&cluster.url()).await;
    events_of_an_earlier_build_are_replayed_in_order(&cluster.url()).await;
    drop(cluster);
}

/// What `redis-cli <args>` prints on each node of the cluster (it must succeed).
#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_a_heartbeat_is_one_script_and_the_export_merges_every_master() {
    let cluster = start_cluster().await;
    let store = store(&cluster.url()).await;
    let clock = ManualClock::new(at(0));
    let codec = TokenCodec::new("layout key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), store.clone()).with_clock(clock.clone());
    on_each_node(&cluster.ports(), &["config", "resetstat"]);
    let users = 30;
    let mut ended = Vec::new();
    for user in 0..users {
        let user = Id::Str(format!("viewer-{user}"));
        let session = play_and_stop(&heartbeats, &clock, &codec, &user, 1, 5.0).await;
        ended.push((user.to_string(), session));
    }
    // Each heartbeat and each stop: one script (progress, history and the index entry
    // written by scripts of their own would each count here too).
    let scripts = calls(&cluster.ports(), "evalsha");
    assert_eq!(scripts.iter().sum::<u64>(), 2 * users, "{scripts:?}");
    assert_eq!(
        scripts.iter().filter(|calls| **calls > 0).count(),
        3,
        "every master commits for its users: {scripts:?}"
    );
    clock.advance(Duration::from_secs(60));
    let exported = exported(&heartbeats, 4).await;
    assert_eq!(
        exported, ended,
        "every session once, in the order they ended"
    );
    drop(cluster);
}

/// A job an earlier build stored (`hb_job:<id>`, indexed under `hb_jobs:owner:<owner>`
/// and `hb_jobs:due`) is read, listed after this build's, updated and completed by this
/// build; this build's ids name their owner's slot.
async fn jobs_of_an_earlier_build_are_served(url: &str) {
    as_an_earlier_builds_redis(url).await;
    let (redis, store) = (plain_client(url).await, store(url).await);
    let owner = Owner::new("label{3}").unwrap();
    let earlier = JobId(41);
    let due_at = at(0);
    let job = heartbeat_core::jobs::NewJob {
        owner: owner.clone(),
        created_at: at(-10),
        complete_at: Some(due_at),
    }
    .into_job(earlier);
    earlier::write_job(&redis, NS, &job).await;

    let clock = ManualClock::new(at(1));
    let jobs = Jobs::new(store.clone(), store.clone()).with_clock(clock.clone());
    let ours = jobs.create(&owner).await.unwrap();
    assert!(ours.id.0 >= 1 << 34, "{}", ours.id);
    let again = jobs.create(&owner).await.unwrap();
    assert!(again.id > ours.id, "ids of one owner increase");
    let listed: Vec<JobId> = JobStore::list_by_owner(&store, &owner, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(listed, [again.id, ours.id, earlier], "newest first");
    let due: Vec<JobId> = JobStore::due(&store, at(1), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(job, _)| job.id)
        .collect();
    assert_eq!(due, [earlier]);
    // The completion loop's step: the earlier build's job completes and leaves the index.
    jobs.update(
        earlier,
        &JobUpdate {
            state: Some(heartbeat_core::jobs::JobState::Completed),
            ..JobUpdate::default()
        },
    )
    .await
    .unwrap();
    assert!(JobStore::due(&store, at(1), 10).await.unwrap().is_empty());
    let (stored, _) = JobStore::get(&store, earlier).await.unwrap().unwrap();
    assert_eq!(stored.state, heartbeat_core::jobs::JobState::Completed);
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_of_an_earlier_build_are_served_on_one_server_and_a_cluster() {
    let server = RedisServer::start();
    jobs_of_an_earlier_build_are_served(&server.url()).await;
    let cluster = start_cluster().await;
    jobs_of_an_earlier_build_are_served(&cluster.url()).await;
    drop(cluster);
}

/// Shard channels with a subscriber, over every master (`PUBSUB SHARDCHANNELS`).
fn shard_channels(cluster: &RedisCluster) -> Vec<String> {
    let mut channels: Vec<String> = on_each_node(&cluster.ports(), &["pubsub", "shardchannels"])
        .iter()
        .flat_map(|out| {
            out.lines()
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
        })
        .collect();
    channels.sort();
    channels.dedup();
    channels
}

/// Waits (at most 30 s) until no shard channel has a subscriber: an instance leaves
/// those nobody watches every few seconds.
async fn until_no_shard_channels(cluster: &RedisCluster) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !shard_channels(cluster).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "still listening: {:?}",
            shard_channels(cluster)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// On a cluster an instance listens only on the sharded channels of the owners its
/// streams watch, and leaves them when nobody watches; events still cross instances.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_an_instance_hears_only_the_owners_it_watches() {
    let cluster = start_cluster().await;
    let (watching, publishing) = (store(&cluster.url()).await, store(&cluster.url()).await);
    assert!(shard_channels(&cluster).is_empty());
    let owner = Owner::new("watched").unwrap();
    let mut stream = EventBus::subscribe(&watching, &owner).await.unwrap();
    let channels = shard_channels(&cluster);
    assert_eq!(channels.len(), 1, "{channels:?}");
    assert!(channels[0].starts_with(&format!("{NS}hb_job_events:{{")));

    let jobs = Jobs::new(publishing.clone(), publishing.clone());
    let job = jobs.create(&owner).await.unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(event.job.id, job.id);

    drop(stream);
    until_no_shard_channels(&cluster).await;
    drop(cluster);
}

/// On a cluster a session notice travels on the sharded channel of the user's slot
/// (`SPUBLISH`), which an instance listens on only while one of its streams watches a
/// session of a user there; the watch is listening once it returns, so a notice sent
/// right after reaches it.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_notices_travel_on_the_users_shard_channel() {
    let cluster = start_cluster().await;
    let (watching, publishing) = (store(&cluster.url()).await, store(&cluster.url()).await);
    assert!(shard_channels(&cluster).is_empty());
    let user = Id::Int(77);
    let mut stream = NoticeBus::watch(&watching, &user, "s1").await.unwrap();
    let channels = shard_channels(&cluster);
    assert_eq!(channels.len(), 1, "{channels:?}");
    assert!(
        channels[0].starts_with(&format!("{NS}hb_session_notices:{{")),
        "{channels:?}"
    );
    let spublished = calls(&cluster.ports(), "spublish").iter().sum::<u64>();
    let published = calls(&cluster.ports(), "publish").iter().sum::<u64>();
    let notice = SessionNotice {
        user_id: user.clone(),
        ended: SessionEnded {
            session_id: "s1".into(),
            reason: NoticeReason::Evicted,
            by: None,
        },
    };
    NoticeBus::notify(&publishing, &notice).await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the notice within 10 s")
        .expect("the stream goes on")
        .expect("a notice, not a lag");
    assert_eq!(received, notice);
    assert_eq!(
        calls(&cluster.ports(), "spublish").iter().sum::<u64>(),
        spublished + 1
    );
    assert_eq!(
        calls(&cluster.ports(), "publish").iter().sum::<u64>(),
        published,
        "nothing on the classic channel"
    );

    drop(stream);
    until_no_shard_channels(&cluster).await;
    drop(cluster);
}

/// A resharding moves the slot of a watched owner to another master: Redis drops the
/// sharded subscription there, and the stream still gets the owner's next event — live,
/// or by a replay it is told to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_keeps_its_owners_events_when_their_slot_moves() {
    let cluster = start_cluster().await;
    let (watching, publishing) = (store(&cluster.url()).await, store(&cluster.url()).await);
    let owner = Owner::new("moving").unwrap();
    let mut stream = EventBus::subscribe(&watching, &owner).await.unwrap();
    let jobs = Jobs::new(publishing.clone(), publishing.clone());
    let before = jobs.create(&owner).await.unwrap();
    let first = next_event(&mut stream).await;
    assert_eq!(first.job.id, before.id);

    let name = owner.to_string();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.move_slot_of(&name);
        cluster
    })
    .await
    .unwrap();
    // The first command on the moved slot is answered MOVED: the store follows it (the
    // command did not run), so the caller sees no error.
    let after = jobs
        .create(&owner)
        .await
        .expect("a moved slot costs no error");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(event))) if event.job.id == after.id => break,
            Ok(Some(Ok(_))) => {}
            // Told to replay: the event is in the owner's history.
            Ok(Some(Err(_))) => {
                let replayed = EventBus::replay(&watching, &owner, Some(first.id))
                    .await
                    .unwrap();
                if replayed.iter().any(|event| event.job.id == after.id) {
                    break;
                }
            }
            Ok(None) => panic!("the stream ended"),
            Err(_) => panic!("no event and no replay within 30 s of the move"),
        }
    }
    drop(cluster);
}
