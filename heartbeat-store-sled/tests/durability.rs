//! Acknowledged writes survive `kill -9`; ids and event history survive restarts; a
//! database that cannot be used is refused with an error that names it.
#![allow(clippy::unwrap_used)]

mod files;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use files::copy_tree;
use heartbeat_core::jobs::{EventBus, EventId, JobId, JobStore, NewJob, Owner};
use heartbeat_core::sessions::AnalyticsStore;
use heartbeat_core::sessions::analytics::{FinishedEntry, Index, IndexKey};
use heartbeat_core::{
    HeartbeatData, HeartbeatOutcome, Heartbeats, Id, SessionStore, Timestamp, TokenCodec,
};
use heartbeat_store_sled::{OpenError, SledConfig, SledStore};
use serde_json::json;

const CHILD_ENV: &str = "HEARTBEAT_SLED_CHILD_PATH";
const WRITERS: i64 = 8;

fn open(path: &std::path::Path) -> SledStore {
    SledStore::open(SledConfig::new(path)).unwrap()
}

fn backend_token(codec: &TokenCodec, user: i64) -> String {
    let data = HeartbeatData::from_json(json!({
        "user_id": user, "asset_id": 7, "heartbeat_cycle": 3600, "cycle_lower_tolerance": 0,
        "cycle_upper_tolerance": 3600, "timestamp": Timestamp::now().to_string(),
        "session_limit": 1000, "checking_threshold": 1000, "sessions_edge": 1000,
    }))
    .unwrap();
    codec.seal(&data).unwrap()
}

/// Runs only as the child of `acknowledged_writes_survive_kill_9`: writes until killed and
/// prints one line per acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of acknowledged_writes_survive_kill_9"]
async fn child_writer() {
    let path = std::env::var(CHILD_ENV).expect("run by acknowledged_writes_survive_kill_9");
    let store = open(path.as_ref());
    let heartbeats = Heartbeats::new(TokenCodec::new("durability key").unwrap(), store.clone());
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let heartbeats = heartbeats.clone();
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let owner = Owner::new(format!("owner-{writer}")).unwrap();
            for round in 0_i64.. {
                let user = writer * 1_000_000 + round;
                let token = backend_token(heartbeats.codec(), user);
                match heartbeats
                    .heartbeat(&token, Some(round as f64))
                    .await
                    .unwrap()
                {
                    HeartbeatOutcome::Accepted { accepted, .. } => {
                        println!("ack session {user} {}", accepted.session_id);
                    }
                    other => panic!("not accepted: {other:?}"),
                }
                let job = store
                    .create(NewJob {
                        owner: owner.clone(),
                        created_at: Timestamp::now(),
                        complete_at: None,
                    })
                    .await
                    .unwrap();
                println!("ack job {}", job.id);
                let event = store.publish(&job).await.unwrap();
                println!("ack event {} {}", owner, event.id.0);
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked = Vec::new();
    while acked.len() < 600 && Instant::now() < deadline {
        match lines.next() {
            Some(line) => acked.push(line.unwrap()),
            None => panic!("the writer exited early; {} lines", acked.len()),
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    // Whatever the child printed before it died was acknowledged too.
    acked.extend(lines.map_while(Result::ok));

    let store = open(&path);
    // The finished index's entries of the sessions (held in memory while they have not
    // ended, and lost with the process) are rebuilt from the records at open.
    let indexed: std::collections::BTreeSet<(String, String)> = store
        .index_range(
            Index::Finished,
            &IndexKey::start(),
            &IndexKey::floor(Timestamp::now().add_millis(86_400_000)),
            100_000,
        )
        .await
        .unwrap()
        .iter()
        .map(|key| {
            let entry = FinishedEntry::from_key(key).unwrap();
            (entry.user, entry.session_id)
        })
        .collect();
    let (mut sessions, mut jobs, mut events) = (0, 0, 0);
    for line in acked.iter().filter(|line| line.starts_with("ack ")) {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["ack", "session", user, session] => {
                let user: i64 = user.parse().unwrap();
                let loaded = store.load(&Id::Int(user)).await.unwrap();
                assert!(
                    loaded.sessions.sessions.contains_key(*session),
                    "lost {line}"
                );
                assert!(
                    indexed.contains(&(user.to_string(), session.to_string())),
                    "lost the finished-index entry of {line}"
                );
                // The heartbeat reported its round as progress (it rides in the record).
                let progress = store.progress(&Id::Int(user), &Id::Int(7)).await.unwrap();
                assert_eq!(
                    progress.map(|found| found.progress),
                    Some((user % 1_000_000) as f64),
                    "lost the progress of {line}"
                );
                sessions += 1;
            }
            ["ack", "job", id] => {
                let id: JobId = id.parse().unwrap();
                assert!(
                    JobStore::get(&store, id).await.unwrap().is_some(),
                    "lost {line}"
                );
                jobs += 1;
            }
            ["ack", "event", owner, id] => {
                let id = EventId(id.parse().unwrap());
                let replayed = store
                    .replay(&Owner::new(*owner).unwrap(), None)
                    .await
                    .unwrap();
                assert!(replayed.iter().any(|event| event.id == id), "lost {line}");
                events += 1;
            }
            _ => {}
        }
    }
    assert!(
        sessions >= 100 && jobs >= 100 && events >= 100,
        "{sessions}/{jobs}/{events}"
    );
}

#[tokio::test]
async fn ids_and_event_history_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Owner::new("restart").unwrap();
    let new_job = || NewJob {
        owner: owner.clone(),
        created_at: Timestamp::now(),
        complete_at: None,
    };
    let (first, event) = {
        let store = open(dir.path());
        let first = store.create(new_job()).await.unwrap();
        let event = store.publish(&first).await.unwrap();
        (first, event)
    };
    let store = open(dir.path());
    let second = store.create(new_job()).await.unwrap();
    assert!(second.id > first.id);
    let replayed = store.replay(&owner, None).await.unwrap();
    assert_eq!(replayed, vec![event.clone()]);
    let later = store.publish(&second).await.unwrap();
    assert!(later.id > event.id);
}

#[test]
fn event_history_is_bounded_per_owner() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SledConfig::new(dir.path());
        config.event_history = 3;
        let store = SledStore::open(config).unwrap();
        let owner = Owner::new("bounded").unwrap();
        let job = store
            .create(NewJob {
                owner: owner.clone(),
                created_at: Timestamp::now(),
                complete_at: None,
            })
            .await
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(store.publish(&job).await.unwrap().id);
        }
        let kept: Vec<EventId> = store
            .replay(&owner, None)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(kept, ids[2..]);
    });
}

#[test]
fn a_database_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let error = SledStore::open(SledConfig::new(dir.path())).unwrap_err();
    assert!(matches!(error, OpenError::InUse { .. }), "{error:?}");
    assert!(
        error.to_string().contains("in use by another process"),
        "{error}"
    );
}

#[test]
fn a_file_or_a_foreign_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a database").unwrap();
    let error = SledStore::open(SledConfig::new(&file)).unwrap_err();
    assert!(matches!(error, OpenError::NotADatabase { .. }), "{error:?}");
    assert!(error.to_string().contains("is a file"), "{error}");

    let busy = dir.path().join("home");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let error = SledStore::open(SledConfig::new(&busy)).unwrap_err();
    assert!(error.to_string().contains("holds other files"), "{error}");
    assert_eq!(
        std::fs::read_dir(&busy).unwrap().count(),
        1,
        "nothing was written there"
    );
}

#[test]
fn another_programs_sled_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let foreign = sled::open(dir.path()).unwrap();
        foreign
            .open_tree("theirs")
            .unwrap()
            .insert("k", "v")
            .unwrap();
        foreign.flush().unwrap();
    }
    let error = SledStore::open(SledConfig::new(dir.path())).unwrap_err();
    assert!(error.to_string().contains("another program"), "{error}");
}

#[test]
fn a_damaged_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let conf = dir.path().join("conf");
    std::fs::write(&conf, b"\xff\xfe garbage that is no sled configuration").unwrap();
    let error = SledStore::open(SledConfig::new(dir.path())).unwrap_err();
    assert!(matches!(error, OpenError::Damaged { .. }), "{error:?}");
    assert!(
        error.to_string().contains("restore it from a backup"),
        "{error}"
    );
}

/// Copies a directory tree (the offline backup of docs/operations.md: `cp -a`).
/// The offline backup procedure: a copy of a closed database opens, and holds the
/// sessions, history and the analytics index the original held.
#[tokio::test]
async fn a_copy_of_a_closed_database_opens_with_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (original, backup) = (dir.path().join("db"), dir.path().join("backup"));
    let codec = TokenCodec::new("backup test key").unwrap();
    let session = {
        let heartbeats = Heartbeats::new(codec.clone(), open(&original));
        let outcome = heartbeats
            .heartbeat(&backend_token(&codec, 77), Some(12.0))
            .await
            .unwrap();
        let HeartbeatOutcome::Accepted { accepted, .. } = outcome else {
            panic!("refused: {outcome:?}");
        };
        heartbeats.store().flush().await.unwrap();
        accepted.session_id
    };
    copy_tree(&original, &backup);
    let heartbeats = Heartbeats::new(codec, open(&backup));
    let sessions = heartbeats.active_sessions(&Id::Int(77)).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].session_id, session);
    assert_eq!(heartbeats.active_session_count().await.unwrap(), 1);
    let history = heartbeats.history(&Id::Int(77), 10).await.unwrap();
    assert_eq!(history[0].progress, Some(12.0));
}
