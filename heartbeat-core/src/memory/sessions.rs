use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::next_version;
use crate::Id;
use crate::decision::SessionWrite;
use crate::session::{PlayRecord, ProgressRecord, UserSessions};
use crate::store::{Commit, Loaded, Retention, SessionStore, StoreError};

/// Sweep expired entries after this many commits.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    expires: Instant,
}

impl<T> Expiring<T> {
    fn live(&self, now: Instant) -> Option<&T> {
        (self.expires > now).then_some(&self.value)
    }
}

#[derive(Debug, Default)]
struct Inner {
    users: DashMap<String, Expiring<(UserSessions, u64)>>,
    progress: DashMap<(String, String), Expiring<ProgressRecord>>,
    history: DashMap<String, Expiring<VecDeque<PlayRecord>>>,
    commits: AtomicU64,
}

/// Sessions, progress and history in memory.
///
/// Each user is one map entry, keyed by the id's text (as in the Node server's Redis keys);
/// a commit locks only that entry's shard for the time of a
/// version comparison and a few inserts. Entries are dropped when their keep time (the
/// longest session life, or the history retention) has passed, in a sweep every 4096
/// commits. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemorySessionStore {
    inner: Arc<Inner>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of users with stored sessions (expired ones included until swept).
    pub fn user_count(&self) -> usize {
        self.inner.users.len()
    }

    /// Drops every entry whose keep time has passed.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.inner.users.retain(|_, entry| entry.expires > now);
        self.inner.progress.retain(|_, entry| entry.expires > now);
        self.inner.history.retain(|_, entry| entry.expires > now);
    }
}

fn after_millis(millis: i64) -> Instant {
    Instant::now() + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

impl SessionStore for MemorySessionStore {
    type Version = u64;

    async fn load(&self, user: &Id) -> Result<Loaded<u64>, StoreError> {
        let now = Instant::now();
        Ok(
            match self
                .inner
                .users
                .get(&user.to_string())
                .as_deref()
                .and_then(|entry| entry.live(now))
            {
                Some((sessions, version)) => Loaded {
                    sessions: sessions.clone(),
                    version: *version,
                },
                None => Loaded::empty(0),
            },
        )
    }

    async fn commit(
        &self,
        user: &Id,
        version: &u64,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<Commit, StoreError> {
        let now = Instant::now();
        {
            let mut entry = self
                .inner
                .users
                .entry(user.to_string())
                .or_insert_with(|| Expiring {
                    value: (UserSessions::default(), 0),
                    expires: now,
                });
            let current = entry.live(now).map_or(0, |(_, version)| *version);
            if current != *version {
                return Ok(Commit::Conflict);
            }
            *entry = Expiring {
                value: (write.sessions.clone(), next_version()),
                expires: after_millis(write.keep_millis),
            };
        }
        let retention = Duration::from_secs(limits.retention_secs);
        if let Some((asset, progress)) = &write.progress {
            let value = Expiring {
                value: progress.clone(),
                expires: now + retention,
            };
            self.inner
                .progress
                .insert((user.to_string(), asset.to_string()), value);
        }
        if !write.ended.is_empty() {
            let mut history = self
                .inner
                .history
                .entry(user.to_string())
                .or_insert_with(|| Expiring {
                    value: VecDeque::new(),
                    expires: now,
                });
            if history.expires <= now {
                history.value.clear();
            }
            for ended in &write.ended {
                history.value.push_front(ended.clone());
            }
            history.value.truncate(limits.history_cap);
            history.expires = now + retention;
        }
        if self.inner.commits.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        Ok(Commit::Applied)
    }

    async fn progress(&self, user: &Id, asset: &Id) -> Result<Option<ProgressRecord>, StoreError> {
        let key = (user.to_string(), asset.to_string());
        Ok(self
            .inner
            .progress
            .get(&key)
            .as_deref()
            .and_then(|entry| entry.live(Instant::now()))
            .cloned())
    }

    async fn history(&self, user: &Id, limit: usize) -> Result<Vec<PlayRecord>, StoreError> {
        let now = Instant::now();
        Ok(self
            .inner
            .history
            .get(&user.to_string())
            .as_deref()
            .and_then(|entry| entry.live(now))
            .map(|history| history.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
