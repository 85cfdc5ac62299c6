//! # heartbeat-store-sled
//!
//! Embedded, persistent storage for heartbeat on [`sled`]: the server's default store.
//! One [`SledStore`] implements all three storage traits of `heartbeat-core`
//! ([`SessionStore`](heartbeat_core::SessionStore), [`JobStore`](heartbeat_core::jobs::JobStore),
//! [`EventBus`](heartbeat_core::jobs::EventBus)) over one database directory.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use heartbeat_core::{Heartbeats, TokenCodec};
//! use heartbeat_store_sled::{SledConfig, SledStore};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SledStore::open(SledConfig::new(dir.path().join("heartbeat.sled"))).unwrap();
//! let heartbeats = Heartbeats::new(TokenCodec::new("shared key").unwrap(), store.clone());
//! # let _ = heartbeats;
//! # });
//! ```
//!
//! # Durability
//!
//! With [`SledConfig::sync_writes`] on (the default), every write is flushed to disk
//! (`fsync`) before the call that made it returns: a heartbeat answered 200, a job created
//! or updated, an event published all survive `kill -9` and power loss. Concurrent writers
//! share flushes (group commit), so the cost is one flush per batch of writes, not per
//! write. With `sync_writes` off, sled flushes every [`SledConfig::flush_every_ms`]
//! milliseconds and a crash loses at most that window.
//!
//! # Concurrency
//!
//! The database belongs to one process (a lock file refuses a second one). Within it, a
//! commit takes a lock striped by user (or job, or owner), never one lock for everyone,
//! and compares the version. A user's sessions are versioned by the commits of their
//! stripe in this process (a counter, so the compare reads nothing from the tree; a
//! commit of another user of the stripe in between costs a retry, never a wrong write).
//! A heartbeat is two tree operations: the load's get and the user's record, which holds
//! the sessions and the progress of the assets played lately, in binary (postcard). The finished index's
//! entries of sessions that have not ended yet are held in memory, since every heartbeat
//! moves its session's entry: they go to the tree once their time has passed, and opening
//! the store rebuilds them from the users' records. The keys a commit writes are written
//! one by one, the record last, so a crash in the middle of an unacknowledged write never
//! loses progress or history. sled's multi-key batches are not used: sled applies them
//! under a process-wide lock that also waits for flushes in progress, which halved the
//! heartbeats per second.
//!
//! # Retention
//!
//! A user's sessions are kept until their longest possible life has passed; progress and
//! history (and a user's record while it holds progress) until [`Retention::retention_secs`](heartbeat_core::sessions::Retention) after their
//! last write. Expired entries read as absent and are removed by a sweep every 4096 commits
//! that looks at the next 8192 keys (so its cost does not grow with the database), or all
//! at once by [`SledStore::sweep`]. Jobs are kept; each owner keeps the newest
//! [`SledConfig::event_history`] events for replay, across restarts.
#![deny(missing_docs)]

mod bus;
mod future_entries;
mod group_commit;
mod jobs;
mod keys;
mod open;
mod recent_progress;
mod record;
mod sessions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use heartbeat_core::StoreError;
use heartbeat_core::live::Fanout;
use heartbeat_core::sessions::notice::SessionNotice;
use heartbeat_core::store::kit::{self, SweepCadence};

use crate::group_commit::GroupCommit;

pub use open::OpenError;
pub use sessions::SessionsVersion;

pub use heartbeat_core::jobs::DEFAULT_EVENT_HISTORY;

/// Where and how to open the database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SledConfig {
    /// The database directory (created if missing). Server setting `SLED_PATH`.
    pub path: PathBuf,
    /// Flush every write before acknowledging it (default `true`). See the crate docs.
    pub sync_writes: bool,
    /// How often sled flushes on its own, in milliseconds (default 500).
    pub flush_every_ms: u64,
    /// sled's page cache, in bytes (default 64 MiB).
    pub cache_capacity_bytes: u64,
    /// Events kept per owner for replay (default [`DEFAULT_EVENT_HISTORY`]).
    pub event_history: usize,
    /// How long a finished job and its events are kept after it finished (server setting
    /// `JOB_RETENTION`, default 7 days).
    pub job_retention: std::time::Duration,
    /// Move a database of an earlier layout to this build's when it opens (default
    /// `true`; docs/operations.md, "sled: layout 2"). A process that only reads (the
    /// server's `check-config` and `export-history`) sets it `false`: an earlier layout is
    /// then read as it is and stays one that earlier builds open, and committing sessions
    /// to it is refused.
    pub migrate: bool,
}

impl SledConfig {
    /// Defaults for a database at `path`.
    ///
    /// ```
    /// let config = heartbeat_store_sled::SledConfig::new("data/heartbeat.sled");
    /// assert!(config.sync_writes);
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            sync_writes: true,
            flush_every_ms: 500,
            cache_capacity_bytes: 64 * 1024 * 1024,
            event_history: DEFAULT_EVENT_HISTORY,
            job_retention: heartbeat_core::jobs::DEFAULT_JOB_RETENTION,
            migrate: true,
        }
    }
}

/// Keys one periodic sweep looks at (it goes on from there the next time).
const SWEEP_BUDGET: usize = 8192;
/// Independent locks (and session commit counters) that keys are spread over.
const STRIPES: usize = 1024;

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
    sync_writes: bool,
    event_history: usize,
    /// Serialises a compare with its write, per key stripe.
    stripes: Vec<Mutex<()>>,
    /// Session commits so far, per key stripe: the version a user's sessions load at.
    session_commits: Vec<std::sync::atomic::AtomicU64>,
    /// Serialises an owner's event publication with its delivery, per key stripe.
    publish_stripes: Vec<tokio::sync::Mutex<()>>,
    flushes: GroupCommit,
    live: Fanout<heartbeat_core::jobs::JobEvent>,
    /// Session notices to this process's watchers (SPEC §3.7): sled is one process.
    notices: Fanout<SessionNotice>,
    /// The last job event id handed out by this process.
    last_event_id: std::sync::atomic::AtomicU64,
    sweeps: SweepCadence,
    job_retention: std::time::Duration,
    job_sweeps: SweepCadence,
    /// Where the periodic sweep goes on from.
    sweep_cursor: Mutex<Vec<u8>>,
    /// The finished index's entries that end later than now, held in memory (see the
    /// module).
    future: future_entries::FutureEntries,
    /// The database is of an earlier layout, opened without [`SledConfig::migrate`]:
    /// sessions are not committed to it.
    earlier_layout: bool,
    /// Held for the life of the store: refuses a second process.
    _lock: std::fs::File,
}

/// Sessions, progress, history, jobs and job events in one sled database. Clones share it.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.inner.path)
            .field("sync_writes", &self.inner.sync_writes)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the database of `config`.
    ///
    /// # Errors
    ///
    /// [`OpenError`] names the path and says what to do: another process holds it, the
    /// path is not a heartbeat database, or the disk refused.
    pub fn open(config: SledConfig) -> Result<Self, OpenError> {
        let opened = open::open(&config)?;
        let damaged = |source| OpenError::Damaged {
            path: config.path.clone(),
            source,
        };
        let future =
            sessions::future_entries(&opened.tree, !opened.earlier_layout && config.migrate)
                .map_err(damaged)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db: opened.db,
                tree: opened.tree,
                path: config.path,
                sync_writes: config.sync_writes,
                event_history: config.event_history.max(1),
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                session_commits: (0..STRIPES)
                    .map(|_| std::sync::atomic::AtomicU64::new(0))
                    .collect(),
                publish_stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                flushes: GroupCommit::default(),
                live: Fanout::new(),
                notices: Fanout::new(),
                last_event_id: std::sync::atomic::AtomicU64::new(0),
                sweeps: SweepCadence::default(),
                job_retention: config.job_retention,
                job_sweeps: SweepCadence::default(),
                sweep_cursor: Mutex::new(Vec::new()),
                future,
                earlier_layout: opened.earlier_layout,
                _lock: opened.lock,
            }),
        })
    }

    /// True when `path` holds something to open; `false` for a missing path or an empty
    /// directory, where [`open`](Self::open) creates a database (and, with
    /// [`SledConfig::migrate`] off, refuses with [`OpenError::NoDatabase`]).
    pub fn holds_database(path: &Path) -> bool {
        open::holds_database(path)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Removes every expired session set, progress entry and history now.
    ///
    /// # Errors
    ///
    /// When sled fails to read or write.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        sessions::sweep(self)
    }

    fn stripe(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        // The guarded value is `()`: a panic elsewhere cannot leave it half-written.
        self.inner.stripes[stripe_of(key)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The session commits so far of `key`'s stripe (see [`SessionsVersion`]).
    fn session_commits(&self, key: &[u8]) -> &std::sync::atomic::AtomicU64 {
        &self.inner.session_commits[stripe_of(key)]
    }

    /// Flushes (shared with concurrent writers) if writes are synchronous.
    async fn durable(&self) -> Result<(), StoreError> {
        if self.inner.sync_writes {
            let db = &self.inner.db;
            self.inner
                .flushes
                .flush(|| async { db.flush_async().await.map(drop).map_err(sled_error) })
                .await
        } else {
            Ok(())
        }
    }

    /// Counts a commit; every so many, sweeps expired entries and the analytics index
    /// entries below `keep_from` in the background.
    fn counted_commit(&self, keep_from: Option<heartbeat_core::Timestamp>) {
        if self.inner.sweeps.sweep_now() {
            let store = self.clone();
            tokio::task::spawn_blocking(move || {
                // A failed sweep is retried at the next round; reads ignore expired data.
                let _ = sessions::sweep_some(&store, SWEEP_BUDGET);
                if let Some(keep_from) = keep_from {
                    let _ = sessions::drop_index_before(&store, keep_from);
                }
            });
        }
    }

    /// A fresh version: unique and increasing, also across restarts.
    fn next_version(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.generate_id().map_err(sled_error)? + 1)
    }
}

fn stripe_of(key: &[u8]) -> usize {
    // FNV-1a: cheap and spreads short keys well.
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % STRIPES as u64) as usize
}

fn sled_error(error: sled::Error) -> StoreError {
    match error {
        sled::Error::Io(io) => StoreError::unavailable("sled I/O failed", io),
        sled::Error::Corruption { .. } => StoreError::corrupt("sled found corrupt data", error),
        other => StoreError::backend("sled failed", other),
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    kit::encode(value).map(String::into_bytes)
}
