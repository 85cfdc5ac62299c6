//! [`SessionStore`] on sled: one value per user's session set, per (user, asset) progress
//! and per user history, each with its expiry time.

use std::collections::{BTreeMap, VecDeque};

use heartbeat_core::live::LiveStream;
use heartbeat_core::sessions::SessionWrite;
use heartbeat_core::sessions::analytics::{Index, IndexKey, IndexWrite};
use heartbeat_core::sessions::notice::SessionNotice;
use heartbeat_core::sessions::{AnalyticsStore, Loaded, NoticeBus, Retention};
use heartbeat_core::store::kit::{Kept, decode, prepend_history, unix_millis_now as now_millis};
use heartbeat_core::store::{Commit, StoreHealth};
use heartbeat_core::{
    Id, PlayRecord, ProgressRecord, SessionRecord, SessionStore, StoreError, UserSessions,
};
use serde::{Deserialize, Serialize};

use crate::{SledStore, encode, keys, sled_error};

#[derive(Serialize, Deserialize)]
struct VersionedSessions<S> {
    version: u64,
    sessions: S,
}

#[derive(Deserialize)]
struct ExpiresAt {
    expires_at: i64,
}

/// The version of a stored session set, read without building its sessions.
#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

impl SledStore {
    fn read_kept<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        key: &[u8],
        now: i64,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.inner.tree.get(key).map_err(sled_error)? else {
            return Ok(None);
        };
        let kept: Kept<T> = decode(what, &bytes)?;
        Ok(kept.into_live(now))
    }

    fn read_sessions(
        &self,
        key: &[u8],
        now: i64,
    ) -> Result<Option<VersionedSessions<BTreeMap<String, SessionRecord>>>, StoreError> {
        self.read_kept("a user's sessions", key, now)
    }

    fn apply_commit(
        &self,
        user: &Id,
        version: u64,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<Commit, StoreError> {
        let key = keys::sessions(user);
        let now = now_millis();
        let _user = self.stripe(&key);
        let current = self
            .read_kept::<VersionOnly>("a user's sessions", &key, now)?
            .map_or(0, |stored| stored.version);
        if current != version {
            return Ok(Commit::Conflict);
        }
        // Single-key writes only: sled batches take a process-wide lock. The user's stripe
        // lock makes the sequence atomic for other writers; progress and history go first,
        // so a crash in between (before the write was acknowledged) loses no history.
        let tree = &self.inner.tree;
        let retention = limits.retention_millis();
        if let Some((asset, progress)) = &write.progress {
            let stored = Kept::for_millis(progress, now, retention);
            tree.insert(keys::progress(user, asset), encode(&stored)?)
                .map_err(sled_error)?;
        }
        if !write.ended.is_empty() {
            let key = keys::history(user);
            let mut history: VecDeque<PlayRecord> = self
                .read_kept("a user's history", &key, now)?
                .unwrap_or_default();
            prepend_history(&mut history, &write.ended, limits.history_cap);
            let stored = Kept::for_millis(history, now, retention);
            tree.insert(key, encode(&stored)?).map_err(sled_error)?;
        }
        self.apply_index(&write.index)?;
        if write.sessions.sessions.is_empty() {
            tree.remove(key).map_err(sled_error)?;
        } else {
            let sessions = VersionedSessions {
                version: self.next_version()?,
                sessions: &write.sessions.sessions,
            };
            let stored = Kept::for_millis(sessions, now, write.keep_millis);
            tree.insert(key, encode(&stored)?).map_err(sled_error)?;
        }
        Ok(Commit::Applied)
    }
}

impl SledStore {
    /// Moves the finished index's entries and adds the refusal. What is past the retention
    /// is dropped by the periodic sweep ([`drop_index_before`]).
    fn apply_index(&self, write: &IndexWrite) -> Result<(), StoreError> {
        let tree = &self.inner.tree;
        for step in &write.finished {
            if let Some(from) = &step.from {
                tree.remove(keys::index(Index::Finished, from))
                    .map_err(sled_error)?;
            }
            tree.insert(keys::index(Index::Finished, &step.to), &[])
                .map_err(sled_error)?;
        }
        if let Some(refusal) = &write.refusal {
            tree.insert(keys::index(Index::Refusals, refusal), &[])
                .map_err(sled_error)?;
        }
        Ok(())
    }
}

/// Drops the analytics index entries below `keep_from` (the oldest keys come first, so
/// this reads only what it removes).
pub(crate) fn drop_index_before(store: &SledStore, keep_from: &IndexKey) -> Result<(), StoreError> {
    let tree = &store.inner.tree;
    for index in [Index::Finished, Index::Refusals] {
        let start = vec![keys::index_prefix(index)];
        for key in tree.range(start..keys::index(index, keep_from)).keys() {
            tree.remove(key.map_err(sled_error)?).map_err(sled_error)?;
        }
    }
    Ok(())
}

/// Removes `key` if `value` has expired; a value rewritten meanwhile is left alone.
fn remove_if_expired(
    tree: &sled::Tree,
    key: &[u8],
    value: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let expired =
        serde_json::from_slice::<ExpiresAt>(value).is_ok_and(|kept| kept.expires_at <= now);
    Ok(expired
        && tree
            .compare_and_swap(key, Some(value), None::<&[u8]>)
            .map_err(sled_error)?
            .is_ok())
}

/// The key prefixes whose values carry an expiry time.
const EXPIRING: [&[u8]; 3] = [
    keys::SESSIONS_PREFIX,
    keys::PROGRESS_PREFIX,
    keys::HISTORY_PREFIX,
];

fn expires(key: &[u8]) -> bool {
    EXPIRING.iter().any(|prefix| key.starts_with(prefix))
}

/// Removes every expired entry.
pub(crate) fn sweep(store: &SledStore) -> Result<usize, StoreError> {
    let now = now_millis();
    let tree = &store.inner.tree;
    let mut removed = 0;
    for prefix in EXPIRING {
        for entry in tree.scan_prefix(prefix) {
            let (key, value) = entry.map_err(sled_error)?;
            removed += usize::from(remove_if_expired(tree, &key, &value, now)?);
        }
    }
    Ok(removed)
}

/// Looks at the next `budget` keys after the last round's, removing the expired ones, and
/// wraps around at the end: the periodic sweep's cost does not grow with the database.
pub(crate) fn sweep_some(store: &SledStore, budget: usize) -> Result<usize, StoreError> {
    let now = now_millis();
    let tree = &store.inner.tree;
    let mut cursor = store
        .inner
        .sweep_cursor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut removed = 0;
    let mut next = Vec::new();
    for (seen, entry) in tree.range(cursor.as_slice()..).enumerate() {
        let (key, value) = entry.map_err(sled_error)?;
        if seen == budget {
            next = key.to_vec();
            break;
        }
        if expires(&key) {
            removed += usize::from(remove_if_expired(tree, &key, &value, now)?);
        }
    }
    *cursor = next;
    Ok(removed)
}

impl SessionStore for SledStore {
    type Version = u64;

    async fn load(&self, user: &Id) -> Result<Loaded<u64>, StoreError> {
        let stored = self.read_sessions(&keys::sessions(user), now_millis())?;
        Ok(match stored {
            Some(stored) => Loaded {
                sessions: UserSessions {
                    sessions: stored.sessions,
                    unreadable: Vec::new(),
                },
                version: stored.version,
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
        let commit = self.apply_commit(user, *version, write, limits)?;
        if commit == Commit::Applied {
            self.counted_commit(&write.index.keep_from);
            self.durable().await?;
        }
        Ok(commit)
    }

    async fn progress(&self, user: &Id, asset: &Id) -> Result<Option<ProgressRecord>, StoreError> {
        self.read_kept(
            "a progress entry",
            &keys::progress(user, asset),
            now_millis(),
        )
    }

    async fn history(&self, user: &Id, limit: usize) -> Result<Vec<PlayRecord>, StoreError> {
        let history: Option<Vec<PlayRecord>> =
            self.read_kept("a user's history", &keys::history(user), now_millis())?;
        let mut history = history.unwrap_or_default();
        history.truncate(limit);
        Ok(history)
    }

    async fn ping(&self) -> Result<StoreHealth, StoreError> {
        self.inner.tree.get(keys::META_FORMAT).map_err(sled_error)?;
        Ok(StoreHealth::Up)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush_async().await.map_err(sled_error)?;
        Ok(())
    }
}

impl AnalyticsStore for SledStore {
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
        let (start, end) = (keys::index(index, after), keys::index(index, before));
        let mut found = Vec::new();
        for key in self.inner.tree.range(start.clone()..end).keys() {
            let key = key.map_err(sled_error)?;
            if found.len() == limit {
                break;
            }
            if key == start {
                continue;
            }
            let text = String::from_utf8(key[1..].to_vec())
                .map_err(|error| StoreError::corrupt("an analytics index key", error))?;
            found.extend(IndexKey::from_stored(text));
        }
        Ok(found)
    }

    async fn index_count(&self, index: Index, from: &IndexKey) -> Result<u64, StoreError> {
        let end = [keys::index_prefix(index) + 1];
        let mut count = 0_u64;
        for key in self
            .inner
            .tree
            .range(keys::index(index, from)..end.to_vec())
            .keys()
        {
            key.map_err(sled_error)?;
            count += 1;
        }
        Ok(count)
    }
}

impl NoticeBus for SledStore {
    async fn notify(&self, notice: &SessionNotice) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::SledConfig;

    fn put(store: &SledStore, key: Vec<u8>, expires_at: i64) {
        let value = encode(&Kept {
            expires_at,
            value: 1,
        })
        .unwrap();
        store.inner.tree.insert(key, value).unwrap();
    }

    #[test]
    fn sweeps_remove_only_expired_entries_a_slice_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        let now = now_millis();
        for user in 0..10 {
            let user = Id::Int(user);
            put(&store, keys::sessions(&user), now - 1);
            put(&store, keys::progress(&user, &Id::Int(1)), now - 1);
            put(&store, keys::history(&user), now + 60_000);
        }
        let total = store.inner.tree.len();
        // Each round looks at 4 keys; enough rounds go all the way round.
        let mut removed = 0;
        for _ in 0..(total / 4 + 2) {
            removed += sweep_some(&store, 4).unwrap();
        }
        assert_eq!(
            removed, 20,
            "10 session sets and 10 progress entries expired"
        );
        assert_eq!(store.inner.tree.len(), total - 20);
        assert!(store.inner.tree.get(keys::META_FORMAT).unwrap().is_some());
        put(&store, keys::sessions(&Id::Int(99)), now - 1);
        assert_eq!(
            store.sweep().unwrap(),
            1,
            "the full sweep finds the rest at once"
        );
    }
}
