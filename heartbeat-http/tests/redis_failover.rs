//! A Redis master killed with `kill -9` while two server instances serve heartbeats and
//! job completions: on a Redis Cluster (three masters, three replicas) and behind
//! Sentinel (one master, one replica, three sentinels).
//!
//! What must hold throughout: every answer is 200, 412 or 503 with `Retry-After`, none
//! takes longer than [`HANG`]; no round of heartbeats lets more sessions of the user go
//! on than its limit; the instances recover by themselves within [`RECOVERY`]; and a job
//! stream that resumes with `Last-Event-ID` receives every acknowledged job's completion,
//! with event ids that never go back. On the cluster, users whose keys live on the
//! masters that stayed up see no error at all, the dead master's users are answered again
//! within the failover's own time plus 1 s, and every acknowledged progress is kept.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, redis_instance, settings};
use futures_util::StreamExt;
use heartbeat_core::{Clock, ManualClock};
use heartbeat_store_redis::testkit::{CLUSTER_NODE_TIMEOUT_MS, RedisCluster, RedisSentinel};
use serde_json::{Value, json};

/// The longest any answer may take. The test instances give up on a Redis command after
/// 300 ms (`REDIS_TIMEOUT_MS`); a heartbeat makes at most a handful of commands and
/// retries a contended commit a bounded number of times, so 5 s means "hung", not "slow".
const HANG: Duration = Duration::from_secs(5);

/// How long after the kill heartbeats must be answered 200 again. The cluster marks the
/// master failed after `cluster-node-timeout` (2 s) and its replica wins the election
/// within about a second more; Sentinel calls the master down after 1 s and promotes in
/// about as long; the client then finds the new master within its reconnection backoff
/// (at most 2 s). That is about 5 s; 30 s leaves room for a loaded 2-core CI machine.
const RECOVERY: Duration = Duration::from_secs(30);

/// Devices of the one user, and how many of its sessions may play at once.
const DEVICES: usize = 8;
const LIMIT: usize = 3;

const OWNER: &str = "failover-owner";

/// The namespace of the test instances' keys (see `common::redis_store`).
const NAMESPACE: &str = "http-test:";

/// The two outages run one after the other: together they would share two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_failover_touches_only_its_own_shard() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, user, master) = cluster_and_user_on_one_master().await;
    let url = cluster.url();
    cluster_outage(cluster, &url, user, master).await;
}

/// `REDIS_URL` naming one node of the cluster, whose master is then killed: the instances
/// find the cluster again through the nodes they learnt of, instead of asking the dead
/// seed forever (SPEC §6: whichever node dies, the one `REDIS_URL` names included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_recovers_when_the_only_seed_of_its_url_dies() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, user, master) = cluster_and_user_on_one_master().await;
    let url = format!("redis-cluster://127.0.0.1:{master}");
    cluster_outage(cluster, &url, user, master).await;
}

/// Kills `master` under load from two instances on `url`, with bystanders on every
/// master, and checks the failover stayed on its own shard.
async fn cluster_outage(cluster: RedisCluster, url: &str, user: i64, master: u16) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,heartbeat_store_redis=debug")
        .with_test_writer()
        .try_init();
    let bystanders = tokio::task::block_in_place(|| bystanders_on_every_master(&cluster, user));
    let cluster = Arc::new(Mutex::new(cluster));
    let failover = Arc::new(Mutex::new(None));
    let report = outage_under_load(url, user, bystanders, {
        let (cluster, failover) = (Arc::clone(&cluster), Arc::clone(&failover));
        move || {
            cluster.lock().unwrap().kill(master);
            // The failover's own time: until a live master serves every slot again.
            std::thread::spawn(move || {
                let healthy = cluster.lock().unwrap().wait_until_healthy();
                *failover.lock().unwrap() = Some(healthy);
            });
        }
    })
    .await;
    report.check();
    let failover = loop {
        if let Some(failover) = *failover.lock().unwrap() {
            break failover.expect("the cluster served every slot again within a minute");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "cluster (node timeout {CLUSTER_NODE_TIMEOUT_MS} ms), master {master} killed: failover {failover:?}; {report:?}"
    );
    for (port, statuses) in &report.per_master {
        if *port != master {
            assert_eq!(
                statuses.unavailable, 0,
                "users on master {port}, which stayed up, saw errors: {report:?}"
            );
            assert!(statuses.ok > 0, "{report:?}");
        }
    }
    // `/readyz` stays 200 while two masters answer: "degraded", then whole again.
    assert_eq!(report.readiness, BTreeSet::from([200]), "{report:?}");
    assert!(report.degraded_seen, "{report:?}");
    assert!(
        report
            .per_master
            .get(&master)
            .is_some_and(|dead| dead.unavailable > 0),
        "the dead master's users saw the outage: {report:?}"
    );
    assert!(
        report.recovered_after <= failover + Duration::from_secs(1),
        "the dead master's users were answered again {:?} after the kill, the failover took {failover:?}",
        report.recovered_after
    );
}

/// Two slots move to another master while two instances serve: the user's sessions and
/// the job owner's jobs and events. No client sees an error (a command sent to the old
/// master is redirected, `MOVED` or `ASK`: it did not run there), and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharding_under_load_costs_no_error() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,heartbeat_store_redis=debug")
        .with_test_writer()
        .try_init();
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, user, _) = cluster_and_user_on_one_master().await;
    let url = cluster.url();
    let bystanders = tokio::task::block_in_place(|| bystanders_on_every_master(&cluster, user));
    let cluster = Arc::new(cluster);
    let report = outage_under_load(&url, user, bystanders, {
        let cluster = Arc::clone(&cluster);
        move || {
            let session_key = format!("{NAMESPACE}hb_sessions:{user}:active_sessions");
            let from = cluster.master_of(&session_key);
            let to = cluster.move_slot_of(&session_key);
            eprintln!("the user's slot moved from master {from} to {to}");
            let to = cluster.move_slot_of(OWNER);
            eprintln!("the job owner's slot moved to master {to}");
        }
    })
    .await;
    eprintln!("resharding: {report:?}");
    assert_eq!(report.heartbeats.unavailable, 0, "{report:?}");
    assert_eq!(report.creations.unavailable, 0, "{report:?}");
    assert!(
        report
            .per_master
            .values()
            .all(|statuses| statuses.unavailable == 0 && statuses.ok > 0),
        "{report:?}"
    );
    assert_eq!(report.readiness, BTreeSet::from([200]), "{report:?}");
    assert!(report.completed >= report.creations.ok, "{report:?}");
}

/// Two users (not `user`) on each master of `cluster`.
fn bystanders_on_every_master(cluster: &RedisCluster, user: i64) -> Vec<(u16, i64)> {
    let mut found: BTreeMap<u16, Vec<i64>> = BTreeMap::new();
    for candidate in (user + 1..).take(1000) {
        let port = cluster.master_of(&format!(
            "{NAMESPACE}hb_sessions:{candidate}:active_sessions"
        ));
        let users = found.entry(port).or_default();
        if users.len() < 2 {
            users.push(candidate);
        }
        if found.len() == 3 && found.values().all(|users| users.len() == 2) {
            break;
        }
    }
    assert_eq!(found.len(), 3, "users on every master: {found:?}");
    found
        .into_iter()
        .flat_map(|(port, users)| users.into_iter().map(move |user| (port, user)))
        .collect()
}

/// A fresh 3+3 cluster, a user whose sessions live on the master that holds the job
/// events, and that master's port: killing it hits every path under test.
async fn cluster_and_user_on_one_master() -> (RedisCluster, i64, u16) {
    tokio::task::spawn_blocking(|| {
        let cluster = RedisCluster::start();
        let master = cluster.master_of(&format!("{NAMESPACE}{{hb_events}}:last_id"));
        let user = (1..)
            .find(|user| {
                cluster.master_of(&format!("{NAMESPACE}hb_sessions:{user}:active_sessions"))
                    == master
            })
            .unwrap();
        (cluster, user, master)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_recovers_without_breaking_a_rule() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let group = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap();
    let url = group.url();
    let group = Arc::new(Mutex::new(group));
    let report = outage_under_load(&url, 41, Vec::new(), {
        let group = Arc::clone(&group);
        move || group.lock().unwrap().kill_master()
    })
    .await;
    report.check();
    let promoted = tokio::task::spawn_blocking(move || group.lock().unwrap().wait_for_promotion())
        .await
        .unwrap();
    eprintln!("sentinel: {report:?}; replica promoted after {promoted:?}");
    assert!(promoted.is_some(), "the sentinels promoted the replica");
}

/// What a run saw.
#[derive(Debug)]
struct Report {
    /// From the kill to the first round of heartbeats answered without a 503.
    recovered_after: Duration,
    /// Heartbeat answers by status.
    heartbeats: Statuses,
    /// The longest a heartbeat took to be answered (at most [`HANG`]).
    slowest_heartbeat: Duration,
    /// Job creations by status.
    creations: Statuses,
    /// Jobs whose completion the stream received.
    completed: usize,
    /// Times the stream was opened again with `Last-Event-ID`.
    resumes: usize,
    /// What `/readyz` answered during the outage.
    readiness: BTreeSet<u16>,
    /// Whether `/readyz` said part of the store did not answer (a cluster master down).
    degraded_seen: bool,
    /// The bystanders' heartbeat answers, by the port of the master their keys live on.
    per_master: BTreeMap<u16, Statuses>,
}

impl Report {
    /// The run tested what it was meant to: the outage was seen (503s), then passed; the
    /// stream resumed and received every acknowledged job.
    fn check(&self) {
        assert!(
            self.heartbeats.unavailable > 0 && self.heartbeats.ok > 0,
            "the outage was seen by heartbeats: {self:?}"
        );
        assert!(self.recovered_after < RECOVERY, "{self:?}");
        assert!(self.slowest_heartbeat < HANG, "{self:?}");
        assert!(self.creations.ok > 0, "jobs were created: {self:?}");
        assert!(self.completed >= self.creations.ok, "{self:?}");
        assert!(self.resumes > 0, "the stream resumed: {self:?}");
        assert!(
            self.readiness
                .iter()
                .all(|status| [200, 503].contains(status)),
            "{self:?}"
        );
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Statuses {
    ok: usize,
    refused: usize,
    unavailable: usize,
}

impl Statuses {
    /// Counts an answer; panics on any status but `success` (200 for a heartbeat, 201
    /// for a new job), 412 and 503 with `Retry-After`.
    fn count(&mut self, what: &str, success: u16, response: &reqwest::Response) {
        match response.status().as_u16() {
            status if status == success => self.ok += 1,
            412 => self.refused += 1,
            503 => {
                assert!(
                    response.headers().contains_key("retry-after"),
                    "{what}: a 503 without Retry-After"
                );
                self.unavailable += 1;
            }
            status => panic!("{what}: answered {status}, not {success}, 412 or 503"),
        }
    }
}

/// Sends a request, panicking if no answer comes within [`HANG`].
async fn answer(what: &str, request: reqwest::RequestBuilder) -> reqwest::Response {
    tokio::time::timeout(HANG, request.send())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {HANG:?}"))
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// Two instances on `url`; heartbeats of `user`'s devices and jobs of [`OWNER`] flow
/// through both while `kill` takes the master down.
async fn outage_under_load(
    url: &str,
    user: i64,
    bystanders: Vec<(u16, i64)>,
    kill: impl FnOnce() + Send + 'static,
) -> Report {
    let clock = ManualClock::new(heartbeat_core::Timestamp::now());
    let instances = Arc::new([
        redis_instance(url, settings(), clock.clone()).await,
        redis_instance(url, settings(), clock.clone()).await,
    ]);
    let running = Arc::new(AtomicBool::new(true));
    let created = Arc::new(Mutex::new(BTreeSet::new()));
    let creations = tokio::spawn(create_jobs(
        Arc::clone(&instances),
        Arc::clone(&created),
        Arc::clone(&running),
    ));
    let followed = Arc::new(Mutex::new(Followed::default()));
    let move_stream = Arc::new(tokio::sync::Notify::new());
    let stream = tokio::spawn(follow_jobs(
        [instances[1].url.clone(), instances[0].url.clone()],
        Arc::clone(&followed),
        Arc::clone(&move_stream),
    ));

    for instance in instances.iter() {
        assert_eq!(
            instance.get_text("/readyz").await,
            (200, "ready".to_owned())
        );
    }
    // Load flows for a while, then the master dies.
    let mut devices = Devices::new(user, clock, bystanders);
    devices.play_for(Duration::from_secs(2), &instances).await;
    // The disruption runs while the devices play (a resharding takes a while).
    let disruption = tokio::task::spawn_blocking(kill);
    let killed = Instant::now();
    // As a browser whose connection dropped, the stream resumes on the other instance.
    move_stream.notify_one();
    let mut readiness = BTreeSet::new();
    let mut degraded_seen = false;
    let recovered_after = loop {
        let ready = answer(
            "/readyz",
            instances[0]
                .http
                .get(format!("{}/readyz", instances[0].url)),
        )
        .await;
        readiness.insert(ready.status().as_u16());
        degraded_seen |= ready.text().await.unwrap().contains("degraded");
        devices.round(&instances).await;
        if devices.round_had_no_outage {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < RECOVERY,
            "heartbeats still answer 503 {RECOVERY:?} after the kill: {:?}",
            devices.heartbeats
        );
    };
    // Heartbeats keep working after the failover.
    let unavailable = devices.heartbeats.unavailable;
    devices.play_for(Duration::from_secs(3), &instances).await;
    disruption.await.unwrap();
    devices.play_for(Duration::from_secs(1), &instances).await;
    assert_eq!(
        devices.heartbeats.unavailable, unavailable,
        "no 503 once the failover is over"
    );
    for instance in instances.iter() {
        // A degraded answer reads the cluster's routing again: the next one is whole.
        let deadline = Instant::now() + RECOVERY;
        loop {
            let (status, text) = instance.get_text("/readyz").await;
            assert_eq!(status, 200, "ready again: {text}");
            if text == "ready" {
                break;
            }
            assert!(Instant::now() < deadline, "still not whole: {text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    running.store(false, Ordering::Relaxed);
    let creations = creations.await.unwrap();
    let created = created.lock().unwrap().clone();
    // Every acknowledged job completes, and the stream announces it.
    // The devices play on meanwhile: their rounds move the instances' clock, on which
    // the simulated jobs complete.
    let all_seen = tokio::time::timeout(RECOVERY, async {
        while !created.is_subset(&followed.lock().unwrap().completed) {
            devices
                .play_for(Duration::from_millis(100), &instances)
                .await;
        }
    })
    .await;
    stream.abort();
    // An assertion that failed in the follower (ids going back) fails the test.
    if let Err(error) = stream.await
        && error.is_panic()
    {
        std::panic::resume_unwind(error.into_panic());
    }
    let followed = followed.lock().unwrap().clone();
    if all_seen.is_err() {
        for job in created.difference(&followed.completed) {
            let status = instances[0]
                .get_text(&format!("/status/{job}?uuid={OWNER}"))
                .await;
            eprintln!("job {job} missed by the stream: {status:?}");
        }
    }
    assert!(
        all_seen.is_ok(),
        "the stream missed completions of acknowledged jobs: {:?}",
        created.difference(&followed.completed).collect::<Vec<_>>()
    );
    devices.check_progress(&instances[0]).await;
    let Ok(instances) = Arc::try_unwrap(instances) else {
        panic!("the job creator still holds the instances");
    };
    for instance in instances {
        instance.stop().await;
    }
    Report {
        recovered_after,
        heartbeats: devices.heartbeats,
        slowest_heartbeat: devices.slowest,
        creations,
        completed: followed.completed.len(),
        resumes: followed.resumes,
        readiness,
        degraded_seen,
        per_master: devices.per_master(),
    }
}

/// A user with one device whose keys live on a given master, playing beside the user
/// under test.
struct Bystander {
    master: u16,
    user: i64,
    token: Option<String>,
    /// The progress of the last heartbeat answered 200.
    acknowledged: Option<u64>,
    statuses: Statuses,
}

/// The devices of one user, each playing through the instances in turn.
struct Devices {
    user: i64,
    clock: ManualClock,
    /// The token each device continues with; `None` starts a new playback.
    tokens: Vec<Option<String>>,
    rounds: usize,
    heartbeats: Statuses,
    round_had_no_outage: bool,
    /// The longest a heartbeat took to be answered.
    slowest: Duration,
    bystanders: Vec<Bystander>,
}

impl Devices {
    fn new(user: i64, clock: ManualClock, bystanders: Vec<(u16, i64)>) -> Self {
        Self {
            user,
            clock,
            tokens: vec![None; DEVICES],
            rounds: 0,
            heartbeats: Statuses::default(),
            round_had_no_outage: false,
            slowest: Duration::ZERO,
            bystanders: bystanders
                .into_iter()
                .map(|(master, user)| Bystander {
                    master,
                    user,
                    token: None,
                    acknowledged: None,
                    statuses: Statuses::default(),
                })
                .collect(),
        }
    }

    fn per_master(&self) -> BTreeMap<u16, Statuses> {
        let mut per_master: BTreeMap<u16, Statuses> = BTreeMap::new();
        for bystander in &self.bystanders {
            let total = per_master.entry(bystander.master).or_default();
            total.ok += bystander.statuses.ok;
            total.refused += bystander.statuses.refused;
            total.unavailable += bystander.statuses.unavailable;
        }
        per_master
    }

    /// Every bystander's progress is the last one a heartbeat was answered 200 with.
    async fn check_progress(&self, server: &TestServer) {
        for bystander in &self.bystanders {
            let (status, progress) = server
                .admin(
                    reqwest::Method::GET,
                    &format!("/admin/users/{}/progress/1", bystander.user),
                )
                .await;
            assert_eq!(
                (status, progress["progress"].as_f64()),
                (200, bystander.acknowledged.map(|progress| progress as f64)),
                "user {} (master {}): the last acknowledged progress is kept",
                bystander.user,
                bystander.master
            );
        }
    }

    /// Each bystander beats once, through the instances in turn, with the round as its
    /// progress; one that is not answered 200 starts a new playback next round.
    async fn bystanders_round(&mut self, instances: &[TestServer; 2]) {
        let rounds = self.rounds;
        let progress = u64::try_from(rounds).unwrap();
        let requests = self
            .bystanders
            .iter()
            .enumerate()
            .map(|(index, bystander)| {
                let token = bystander
                    .token
                    .clone()
                    .unwrap_or_else(|| self.token_of(bystander.user));
                let server = &instances[(index + rounds) % 2];
                async move {
                    let sent = Instant::now();
                    let response = answer(
                        "a bystander's heartbeat",
                        server
                            .http
                            .post(format!("{}/heartbeat", server.url))
                            .json(&json!({ "heartbeat_token": token, "progress": progress })),
                    )
                    .await;
                    (response, sent.elapsed())
                }
            });
        let answers = futures_util::future::join_all(requests).await;
        for (bystander, (response, took)) in self.bystanders.iter_mut().zip(answers) {
            self.slowest = self.slowest.max(took);
            bystander
                .statuses
                .count("a bystander's heartbeat", 200, &response);
            bystander.token = None;
            if response.status() == 200 {
                let body: Value = response.json().await.unwrap();
                bystander.token = Some(body["heartbeat_token"].as_str().unwrap().into());
                bystander.acknowledged = Some(progress);
            } else {
                self.round_had_no_outage = false;
            }
        }
    }

    /// Plays rounds, one every 50 ms, for `duration`.
    async fn play_for(&mut self, duration: Duration, instances: &[TestServer; 2]) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            self.round(instances).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One cycle later, every device beats at once, alternating instances. A refused or
    /// unanswered device starts a new playback in the next round.
    async fn round(&mut self, instances: &[TestServer; 2]) {
        self.clock.advance(Duration::from_secs(30));
        self.rounds += 1;
        let requests = self.tokens.iter().enumerate().map(|(device, token)| {
            let continuing = token.is_some();
            let token = token.clone().unwrap_or_else(|| self.backend_token());
            let server = &instances[(device + self.rounds) % 2];
            async move {
                let sent = Instant::now();
                let response = answer(
                    "a heartbeat",
                    server
                        .http
                        .post(format!("{}/heartbeat", server.url))
                        .json(&json!({ "heartbeat_token": token })),
                )
                .await;
                (continuing, response, sent.elapsed())
            }
        });
        let answers = futures_util::future::join_all(requests).await;
        let mut continued = 0;
        self.round_had_no_outage = true;
        self.bystanders_round(instances).await;
        for (device, (continuing, response, took)) in answers.into_iter().enumerate() {
            self.slowest = self.slowest.max(took);
            self.heartbeats.count("a heartbeat", 200, &response);
            self.tokens[device] = None;
            match response.status().as_u16() {
                200 => {
                    let body: Value = response.json().await.unwrap();
                    self.tokens[device] = Some(body["heartbeat_token"].as_str().unwrap().into());
                    continued += usize::from(continuing);
                }
                503 => self.round_had_no_outage = false,
                _ => {}
            }
        }
        assert!(
            continued <= LIMIT,
            "round {}: {continued} sessions went on, over the limit of {LIMIT}",
            self.rounds
        );
    }

    fn backend_token(&self) -> String {
        self.token_of(self.user)
    }

    fn token_of(&self, user: i64) -> String {
        common::seal(json!({
            "user_id": user, "asset_id": 1, "heartbeat_cycle": 30,
            "cycle_upper_tolerance": 10, "timestamp": self.clock.now().to_string(),
            "session_limit": LIMIT, "checking_threshold": 1, "sessions_edge": 100,
        }))
    }
}

/// Creates a job of [`OWNER`] every 50 ms through each instance in turn, keeping the ids
/// of those acknowledged.
async fn create_jobs(
    instances: Arc<[TestServer; 2]>,
    created: Arc<Mutex<BTreeSet<u64>>>,
    running: Arc<AtomicBool>,
) -> Statuses {
    let mut statuses = Statuses::default();
    let mut turn = 0;
    while running.load(Ordering::Relaxed) {
        let server = &instances[turn % 2];
        turn += 1;
        let response = answer(
            "a job creation",
            server
                .http
                .post(format!("{}/create?uuid={OWNER}", server.url)),
        )
        .await;
        statuses.count("a job creation", 201, &response);
        if response.status() == 201 {
            let id: u64 = response.text().await.unwrap().trim().parse().unwrap();
            created.lock().unwrap().insert(id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    statuses
}

/// What the job stream received.
#[derive(Debug, Default, Clone)]
struct Followed {
    completed: BTreeSet<u64>,
    resumes: usize,
}

/// Follows [`OWNER`]'s job stream on the first of `servers` as the TypeScript client
/// does: when the stream ends or cannot be opened, it is opened again with the last event
/// id it saw; when `move_to_next` is notified, it resumes on the next server. Event ids
/// must only go up.
async fn follow_jobs(
    servers: [String; 2],
    followed: Arc<Mutex<Followed>>,
    move_to_next: Arc<tokio::sync::Notify>,
) {
    use eventsource_stream::Eventsource;
    let http = reqwest::Client::new();
    let mut last_id: Option<u64> = None;
    let mut turn = 0;
    loop {
        let server = &servers[turn % 2];
        let mut request = http.get(format!("{server}/status?uuid={OWNER}"));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = match tokio::time::timeout(HANG, request.send()).await {
            Ok(Ok(response)) if response.status() == 200 => response,
            Ok(Ok(response)) => {
                assert_eq!(
                    response.status(),
                    503,
                    "a stream opens, or 503 in an outage"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            outcome => panic!("opening the stream: {outcome:?}"),
        };
        if last_id.is_some() {
            followed.lock().unwrap().resumes += 1;
        }
        let mut events = response.bytes_stream().eventsource();
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = move_to_next.notified() => {
                    turn += 1;
                    break;
                }
            };
            let Some(Ok(event)) = event else { break };
            if event.id.is_empty() || !event.event.starts_with("status_") {
                continue;
            }
            let id: u64 = event.id.parse().unwrap();
            assert!(
                last_id.is_none_or(|last| id > last),
                "event id {id} after {last_id:?}: ids went back"
            );
            last_id = Some(id);
            let data: Value = serde_json::from_str(&event.data).unwrap();
            if data["message"] == "completed" {
                let job = data["id"].as_u64().unwrap();
                followed.lock().unwrap().completed.insert(job);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
