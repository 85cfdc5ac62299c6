use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;

use super::next_version;
use crate::live::{Fanout, LiveStream};
use crate::sessions::SessionWrite;
use crate::sessions::analytics::{Index, IndexKey, IndexWrite};
use crate::sessions::notice::SessionNotice;
use crate::sessions::{AnalyticsStore, NoticeBus};
use crate::sessions::{Loaded, Retention, SessionStore};
use crate::sessions::{PlayRecord, ProgressRecord, UserSessions};
use crate::store::kit::{Kept, SweepCadence, prepend_history, unix_millis_now};
use crate::store::{Commit, StoreError, StoreHealth};
use crate::{Id, Timestamp};

#[derive(Debug, Default)]
struct Inner {
    users: DashMap<String, Kept<(Arc<UserSessions>, u64)>>,
    progress: DashMap<(String, String), Kept<ProgressRecord>>,
    history: DashMap<String, Kept<VecDeque<PlayRecord>>>,
    sweeps: SweepCadence,
    finished: Mutex<BTreeSet<IndexKey>>,
    refusals: Mutex<BTreeSet<IndexKey>>,
    notices: Fanout<SessionNotice>,
}

impl Inner {
    fn index(&self, index: Index) -> MutexGuard<'_, BTreeSet<IndexKey>> {
        let set = match index {
            Index::Finished => &self.finished,
            Index::Refusals => &self.refusals,
        };
        // The sets hold plain values; a panic elsewhere cannot leave one half-written.
        set.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply_index(&self, write: &IndexWrite) {
        let mut finished = self.index(Index::Finished);
        for step in &write.finished {
            if let Some(from) = &step.from {
                finished.remove(from);
            }
            finished.insert(step.to.clone());
        }
        drop_before(&mut finished, write.keep_from);
        drop(finished);
        if let Some(refusal) = &write.refusal {
            let mut refusals = self.index(Index::Refusals);
            refusals.insert(refusal.clone());
            drop_before(&mut refusals, write.keep_from);
        }
    }
}

/// Drops the entries before `keep_from` (the oldest come first: nothing is read past
/// them).
fn drop_before(index: &mut BTreeSet<IndexKey>, keep_from: Option<Timestamp>) {
    let Some(keep_from) = keep_from else {
        return;
    };
    while index
        .first()
        .is_some_and(|first| first.is_before(keep_from))
    {
        index.pop_first();
    }
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
        let now = unix_millis_now();
        self.inner
            .users
            .retain(|_, entry| entry.live(now).is_some());
        self.inner
            .progress
            .retain(|_, entry| entry.live(now).is_some());
        self.inner
            .history
            .retain(|_, entry| entry.live(now).is_some());
    }
}

impl SessionStore for MemorySessionStore {
    type Version = u64;

    async fn load(&self, user: &Id) -> Result<Loaded<u64>, StoreError> {
        let now = unix_millis_now();
        let entry = user.with_text(|user| self.inner.users.get(user));
        Ok(match entry.as_deref().and_then(|entry| entry.live(now)) {
            Some((sessions, version)) => Loaded {
                sessions: sessions.clone(),
                version: *version,
            },
            None => Loaded::empty(0),
        })
    }

    async fn commit(
        &self,
        user: &Id,
        version: &u64,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<Commit, StoreError> {
        let now = unix_millis_now();
        {
            // The user's entry, looked up by the id's text without allocating a key.
            let found = user.with_text(|text| self.inner.users.get_mut(text));
            let mut entry = match found {
                Some(entry) => entry,
                None => self
                    .inner
                    .users
                    .entry(user.to_string())
                    .or_insert_with(|| Kept::for_millis((Arc::default(), 0), now, 0)),
            };
            let current = entry.live(now).map(|(_, version)| *version);
            if current.unwrap_or(0) != *version {
                return Ok(Commit::Conflict);
            }
            // The write's changes applied to the sessions it was decided on, as Redis
            // applies them: what stays is not copied again, nor is the set unless a load
            // of it is still held.
            let (sessions, stored_version) = &mut entry.value;
            if current.is_none() {
                *sessions = Arc::default();
            }
            let sessions = Arc::make_mut(sessions);
            for id in &write.remove {
                sessions.sessions.remove(id);
            }
            for (id, record) in &write.upserts {
                match sessions.sessions.get_mut(id) {
                    Some(stored) => stored.clone_from(record),
                    None => {
                        sessions.sessions.insert(id.clone(), record.clone());
                    }
                }
            }
            debug_assert_eq!(
                sessions.sessions, write.sessions.sessions,
                "a write's upserts and removals make the set it was decided to leave"
            );
            *stored_version = next_version();
            entry.expires_at = now.saturating_add(write.keep_millis.max(0));
            // Under the user's lock, so that two commits move the user's entries in the
            // order they applied.
            self.inner.apply_index(&write.index);
        }
        let retention = limits.retention_millis();
        if let Some((asset, progress)) = &write.progress {
            let key = (
                user.with_text(str::to_owned),
                asset.with_text(str::to_owned),
            );
            self.inner
                .progress
                .insert(key, Kept::for_millis(progress.clone(), now, retention));
        }
        if !write.ended.is_empty() {
            let mut history = self
                .inner
                .history
                .entry(user.to_string())
                .or_insert_with(|| Kept::for_millis(VecDeque::new(), now, 0));
            if history.live(now).is_none() {
                history.value.clear();
            }
            prepend_history(&mut history.value, &write.ended, limits.history_cap);
            history.expires_at = now.saturating_add(retention);
        }
        if self.inner.sweeps.sweep_now() {
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
            .and_then(|entry| entry.live(unix_millis_now()))
            .cloned())
    }

    async fn history(&self, user: &Id, limit: usize) -> Result<Vec<PlayRecord>, StoreError> {
        let now = unix_millis_now();
        let history = user.with_text(|user| self.inner.history.get(user));
        Ok(history
            .as_deref()
            .and_then(|entry| entry.live(now))
            .map(|history| history.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn ping(&self) -> Result<StoreHealth, StoreError> {
        Ok(StoreHealth::Up)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl AnalyticsStore for MemorySessionStore {
    async fn index_range(
        &self,
        index: Index,
        after: &IndexKey,
        before: &IndexKey,
        limit: usize,
    ) -> Result<Vec<IndexKey>, StoreError> {
        if after >= before {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .index(index)
            .range((Bound::Excluded(after), Bound::Excluded(before)))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn index_count(&self, index: Index, from: &IndexKey) -> Result<u64, StoreError> {
        let count = self.inner.index(index).range(from..).count();
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }
}

impl NoticeBus for MemorySessionStore {
    async fn notify(&self, notice: &SessionNotice) -> Result<(), StoreError> {
        // One process holds the whole store: its streams are every stream.
        self.inner.notices.deliver(notice.clone());
        Ok(())
    }

    async fn watch(
        &self,
        user: &Id,
        session_id: &str,
    ) -> Result<LiveStream<SessionNotice>, StoreError> {
        Ok(self.inner.notices.watch(user, session_id))
    }
}
