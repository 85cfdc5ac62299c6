//! A database written by the last build of layout 1 (`tests/fixtures/layout-1`, made by
//! `tests/fixtures/make-layout-1.sh` with that build's server) opens with this build:
//! everything it stored reads as it stored it, new progress goes to layout 2's place,
//! and the marker says layout 2, so that layout-1 builds refuse it from then on.

#![allow(clippy::unwrap_used)]

mod files;

use std::path::Path;

use heartbeat_core::sessions::{Retention, SessionWrite};
use heartbeat_core::store::Commit;
use heartbeat_core::{EndReason, Id, ProgressRecord, SessionStore, Timestamp, UserSessions};
use heartbeat_store_sled::{SledConfig, SledStore};

/// A copy of the fixture, which tests must not change.
fn layout_1_copy() -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layout-1");
    let dir = tempfile::tempdir().unwrap();
    // git keeps no empty directory: sled makes its `blobs/` again.
    files::copy_tree(&fixture, dir.path());
    dir
}

async fn progress(store: &SledStore, user: Id, asset: Id) -> Option<f64> {
    let found = store.progress(&user, &asset).await.unwrap();
    found.map(|record| record.progress)
}

/// The store's tree, opened with sled itself once the store let go of the directory.
fn raw_tree(path: &Path) -> (sled::Db, sled::Tree) {
    let started = std::time::Instant::now();
    let db = loop {
        match sled::open(path) {
            Ok(db) => break db,
            // sled's flusher thread lets its lock go a moment after the store is dropped.
            Err(_) if started.elapsed() < std::time::Duration::from_secs(5) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("cannot reopen {}: {error}", path.display()),
        }
    };
    let tree = db.open_tree("heartbeat").unwrap();
    (db, tree)
}

fn marker(path: &Path) -> Vec<u8> {
    raw_tree(path).1.get("M:format").unwrap().unwrap().to_vec()
}

#[tokio::test]
async fn a_layout_1_database_reads_as_written_and_moves_to_layout_2() {
    let dir = layout_1_copy();
    let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
    let expired = "the fixture was written with RETENTION_DAYS=3650 in 2026-12: remake it";

    // User 13 plays asset 14 and last reported 43.
    let thirteen = store.load(&Id::Int(13)).await.unwrap();
    let (session_id, record) = thirteen.sessions.sessions.iter().next().expect(expired);
    assert_eq!(thirteen.sessions.sessions.len(), 1);
    assert_eq!(record.asset_id, Some(Id::Int(14)));
    assert_eq!(record.hit_counter, 2);
    assert_eq!(progress(&store, Id::Int(13), Id::Int(14)).await, Some(43.0));
    // User 21 stopped at 11: the history has it, and so does the progress.
    let history = store.history(&Id::Int(21), 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].ended_by, Some(EndReason::Stopped));
    assert_eq!(history[0].progress, Some(11.0));
    assert_eq!(progress(&store, Id::Int(21), Id::Int(7)).await, Some(11.0));
    // alice plays "film" and reported nothing; "13" as text is user 13.
    let alice = store.load(&Id::Str("alice".into())).await.unwrap();
    let film = alice.sessions.sessions.values().next().unwrap();
    assert_eq!(film.asset_id, Some(Id::Str("film".into())));
    assert_eq!(
        progress(&store, Id::Str("alice".into()), Id::Str("film".into())).await,
        None
    );
    assert_eq!(
        progress(&store, Id::Str("13".into()), Id::Str("14".into())).await,
        Some(43.0)
    );

    // A new report of the same asset wins over layout 1's own key.
    let write = SessionWrite {
        progress: Some((
            Id::Int(14),
            ProgressRecord {
                progress: 50.0,
                updated_at: Timestamp::now(),
                session_id: session_id.clone(),
            },
        )),
        sessions: UserSessions::clone(&thirteen.sessions),
        keep_millis: 60_000,
        ..SessionWrite::default()
    };
    let limits = Retention::default();
    let commit = store.commit(&Id::Int(13), &thirteen.version, &write, &limits);
    assert_eq!(commit.await.unwrap(), Commit::Applied);
    assert_eq!(progress(&store, Id::Int(13), Id::Int(14)).await, Some(50.0));
    drop(store);

    assert_eq!(marker(dir.path()), b"heartbeat-sled/2");
    let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
    assert_eq!(progress(&store, Id::Int(13), Id::Int(14)).await, Some(50.0));
    assert_eq!(progress(&store, Id::Int(21), Id::Int(7)).await, Some(11.0));
    let thirteen = store.load(&Id::Int(13)).await.unwrap();
    assert!(thirteen.sessions.sessions.contains_key(session_id));
}

#[test]
fn a_database_of_a_later_layout_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(SledConfig::new(dir.path())).unwrap());
    {
        let (db, tree) = raw_tree(dir.path());
        tree.insert("M:format", "heartbeat-sled/3").unwrap();
        db.flush().unwrap();
    }
    let error = SledStore::open(SledConfig::new(dir.path())).unwrap_err();
    assert!(
        error.to_string().ends_with(
            "was written by a newer heartbeat build (format `heartbeat-sled/3`): run that \
             build or a later one, or restore a backup taken before it"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn without_migrate_a_layout_1_database_is_read_as_it_is_and_left_so() {
    let dir = layout_1_copy();
    let mut config = SledConfig::new(dir.path());
    config.migrate = false;
    let store = SledStore::open(config).unwrap();
    assert_eq!(progress(&store, Id::Int(13), Id::Int(14)).await, Some(43.0));
    let thirteen = store.load(&Id::Int(13)).await.unwrap();
    let write = SessionWrite {
        sessions: UserSessions::clone(&thirteen.sessions),
        keep_millis: 60_000,
        ..SessionWrite::default()
    };
    let limits = Retention::default();
    let refused = store.commit(&Id::Int(13), &thirteen.version, &write, &limits);
    let error = refused.await.unwrap_err().to_string();
    assert!(error.contains("start the server on it"), "{error}");
    drop(store);
    assert_eq!(marker(dir.path()), b"heartbeat-sled/1");
    // A store that migrates moves it then.
    drop(SledStore::open(SledConfig::new(dir.path())).unwrap());
    assert_eq!(marker(dir.path()), b"heartbeat-sled/2");
}

#[test]
fn opened_to_read_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    for path in [dir.path().join("missing"), dir.path().to_path_buf()] {
        let mut config = SledConfig::new(&path);
        config.migrate = false;
        let error = SledStore::open(config).unwrap_err();
        assert!(
            error.to_string().contains("no heartbeat sled database"),
            "{error}"
        );
        assert!(!SledStore::holds_database(&path));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
