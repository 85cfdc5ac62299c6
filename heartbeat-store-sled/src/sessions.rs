//! [`SessionStore`] on sled: one record per user (the session set, and the progress of
//! the assets played lately: [`RecentProgress`]), progress of other assets under its own
//! key per (user, asset), and one history per user, each with its expiry time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use heartbeat_core::live::LiveStream;
use heartbeat_core::sessions::SessionWrite;
use heartbeat_core::sessions::analytics::{FinishedEntry, Index, IndexKey, IndexWrite};
use heartbeat_core::sessions::notice::SessionNotice;
use heartbeat_core::sessions::{AnalyticsStore, Loaded, NoticeBus, Retention, SessionMap};
use heartbeat_core::store::kit::{Kept, decode, prepend_history, unix_millis_now as now_millis};
use heartbeat_core::store::{Commit, StoreHealth};
use heartbeat_core::{
    Id, PlayRecord, ProgressRecord, SessionStore, StoreError, Timestamp, UserSessions,
};
use serde::Deserialize;

use crate::future_entries::{FutureEntries, SETTLE_PER_COMMIT, after_time};
use crate::recent_progress::{Left, RecentProgress};
use crate::record::{self, UserRecord};
use crate::{SledStore, encode, keys, sled_error};

/// Why a commit was refused: the database is of an earlier layout, opened to read.
#[derive(Debug, thiserror::Error)]
#[error("opened without SledConfig::migrate")]
struct EarlierLayout;

#[derive(Deserialize)]
struct ExpiresAt {
    expires_at: i64,
}

/// What a user's sessions were loaded at, for [`SessionStore::commit`] on a
/// [`SledStore`]: the commits of the user's key stripe so far in this process (the
/// database belongs to one process, so a commit that finds the count unchanged knows the
/// record is as loaded) and the record's progress part, which the commit rewrites.
#[derive(Debug, Clone)]
pub struct SessionsVersion {
    commits: u64,
    progress: RecentProgress,
}

impl SledStore {
    fn read_kept<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        key: &[u8],
        now: i64,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .read_stored(what, key)?
            .and_then(|kept: Kept<T>| kept.into_live(now)))
    }

    /// A user's record, live or not.
    fn read_record(&self, key: &[u8]) -> Result<Option<Kept<UserRecord>>, StoreError> {
        let Some(bytes) = self.inner.tree.get(key).map_err(sled_error)? else {
            return Ok(None);
        };
        record::decode(&bytes).map(Some)
    }

    /// A stored value with its expiry, live or not.
    fn read_stored<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        key: &[u8],
    ) -> Result<Option<Kept<T>>, StoreError> {
        let Some(bytes) = self.inner.tree.get(key).map_err(sled_error)? else {
            return Ok(None);
        };
        decode(what, &bytes).map(Some)
    }

    fn apply_commit(
        &self,
        user: &Id,
        version: &SessionsVersion,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<Commit, StoreError> {
        if self.inner.earlier_layout {
            return Err(StoreError::backend(
                "the sled database is of layout 1, opened to read: start the server on it \
                 to move it to layout 2 (docs/operations.md, \"sled: layout 2\")",
                EarlierLayout,
            ));
        }
        let key = keys::sessions(user);
        let now = now_millis();
        let _user = self.stripe(&key);
        let commits = self.session_commits(&key);
        if commits.load(Ordering::Acquire) != version.commits {
            return Ok(Commit::Conflict);
        }
        let (writes, held) = self.commit_writes(user, key, version, write, limits, now)?;
        let applied = writes.apply(&self.inner.tree);
        // Counted even if it failed: a load from before cannot tell what it left.
        commits.fetch_add(1, Ordering::Release);
        applied?;
        self.inner.future.apply(&held.removed, held.added);
        Ok(Commit::Applied)
    }

    /// The finished index's moves and the refusal: what goes to the tree into `writes`
    /// (first: the user's record comes last), and what moves among the entries held in
    /// memory ([`FutureEntries`]), which the commit applies once its writes are in. Under
    /// the user's lock, which [`settle_due_entries`](Self::settle_due_entries) takes too.
    fn index_changes<'w>(
        &self,
        writes: &mut Writes,
        write: &'w IndexWrite,
        now: i64,
    ) -> HeldMoves<'w> {
        let later = after_time(now);
        let mut held = HeldMoves::default();
        for step in &write.finished {
            if let Some(from) = &step.from {
                if self.inner.future.holds(from) {
                    held.removed.push(from);
                } else {
                    writes.remove(keys::index(Index::Finished, from));
                }
            }
            if step.to >= later {
                held.added.push(step.to.clone());
            } else {
                writes.insert(keys::index(Index::Finished, &step.to), Vec::new());
            }
        }
        if let Some(refusal) = &write.refusal {
            writes.insert(keys::index(Index::Refusals, refusal), Vec::new());
        }
        held
    }

    /// Moves into the tree (at most [`SETTLE_PER_COMMIT`]) held entries whose time has
    /// passed, each under its user's lock, so that no commit of the user moves it
    /// meanwhile. Written before they are let go: a read in between sees one twice (reads
    /// merge the two without repeats), never none.
    pub(crate) fn settle_due_entries(&self, now: i64) -> Result<(), StoreError> {
        let future = &self.inner.future;
        let Some((_settling, due)) = future.due(now, SETTLE_PER_COMMIT) else {
            return Ok(());
        };
        for key in due {
            let Some(entry) = FinishedEntry::from_key(&key) else {
                future.remove(&key);
                continue;
            };
            let _user = self.stripe(&keys::sessions(&Id::Str(entry.user)));
            if future.holds(&key) {
                self.inner
                    .tree
                    .insert(keys::index(Index::Finished, &key), Vec::new())
                    .map_err(sled_error)?;
                future.remove(&key);
            }
        }
        Ok(())
    }

    /// Everything one commit writes, the user's record last: a crash in between (before
    /// the write was acknowledged) loses no progress or history; and its moves among the
    /// finished-index entries held in memory.
    fn commit_writes<'w>(
        &self,
        user: &Id,
        key: Vec<u8>,
        version: &SessionsVersion,
        write: &'w SessionWrite,
        limits: &Retention,
        now: i64,
    ) -> Result<(Writes, HeldMoves<'w>), StoreError> {
        let mut writes = Writes::default();
        let retention = limits.retention_millis();
        let mut progress = version.progress.clone();
        let left = match &write.progress {
            Some((asset, record)) => progress.record(
                asset.to_string(),
                Kept::for_millis(record.clone(), now, retention),
                now,
            ),
            None => progress.drop_expired(now),
        };
        Self::follow(&mut writes, &left, |asset| keys::progress(user, asset))?;
        if !write.ended.is_empty() {
            let key = keys::history(user);
            let mut history: VecDeque<PlayRecord> = self
                .read_kept("a user's history", &key, now)?
                .unwrap_or_default();
            prepend_history(&mut history, &write.ended, limits.history_cap);
            let stored = Kept::for_millis(history, now, retention);
            writes.insert(key, encode(&stored)?);
        }
        let held = self.index_changes(&mut writes, &write.index, now);
        if write.sessions.sessions.is_empty() && progress.is_empty() {
            writes.remove(key);
        } else {
            let expires_at = now
                .saturating_add(write.keep_millis.max(0))
                .max(progress.last_expiry().unwrap_or(i64::MIN));
            writes.insert(
                key,
                record::encode(expires_at, &write.sessions.sessions, &progress)?,
            );
        }
        Ok((writes, held))
    }

    /// Makes the own keys of the assets that `left` a user's record follow: the moved ones
    /// written, the expired ones removed.
    fn follow(
        writes: &mut Writes,
        left: &Left,
        key_of: impl Fn(&str) -> Vec<u8>,
    ) -> Result<(), StoreError> {
        for (asset, kept) in &left.moved {
            writes.insert(key_of(asset), encode(kept)?);
        }
        for asset in &left.expired {
            writes.remove(key_of(asset));
        }
        Ok(())
    }

    /// Removes a user's record that expired (`value`, read a moment ago) and the own
    /// progress keys of the assets it held, which are older than its entries and expired
    /// with them; `false` when the record was rewritten meanwhile.
    fn remove_expired_user(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let _user = self.stripe(key);
        let tree = &self.inner.tree;
        if tree.get(key).map_err(sled_error)?.as_deref() != Some(value) {
            return Ok(false);
        }
        let progress = record::decode(value)
            .map(|record| record.value.progress)
            .unwrap_or_default();
        // The own keys first: while the record is there, it decides.
        let mut writes = Writes::default();
        for asset in progress.assets() {
            writes.remove(keys::progress_beside(key, asset));
        }
        writes.remove(key.to_vec());
        let removed = writes.apply(tree);
        self.session_commits(key).fetch_add(1, Ordering::Release);
        removed.map(|()| true)
    }
}

/// A commit's moves among the finished-index entries held in memory.
#[derive(Default)]
struct HeldMoves<'w> {
    removed: Vec<&'w IndexKey>,
    added: Vec<IndexKey>,
}

/// Single-key writes, applied one by one in order under the user's stripe lock. Not a
/// sled batch: sled applies batches under a process-wide lock that also waits for the
/// flushes in progress, which halved the heartbeats per second (docs/performance.md).
#[derive(Default)]
struct Writes(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Writes {
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.push((key, Some(value)));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.0.push((key, None));
    }

    fn apply(self, tree: &sled::Tree) -> Result<(), StoreError> {
        for (key, value) in self.0 {
            match value {
                Some(value) => tree.insert(key, value).map(drop),
                None => tree.remove(key).map(drop),
            }
            .map_err(sled_error)?;
        }
        Ok(())
    }
}

/// The finished-index entries of the sessions in the users' records that are not in the
/// tree, read once when the store opens (see [`FutureEntries`]): those that end later
/// than now are held, and those whose time has passed are written to the tree, or also
/// held when `write` is off (a store opened to read writes nothing). Expired records are
/// left out: their sessions' entries are older than the retention.
pub(crate) fn future_entries(tree: &sled::Tree, write: bool) -> Result<FutureEntries, sled::Error> {
    let now = now_millis();
    let later = after_time(now);
    let mut held = std::collections::BTreeSet::new();
    for record in tree.scan_prefix(keys::SESSIONS_PREFIX) {
        let (key, value) = record?;
        let Some(user) = keys::user_of_sessions(&key) else {
            continue;
        };
        // A record that cannot be read is reported when its user is loaded.
        let Ok(kept) = record::decode(&value) else {
            continue;
        };
        if kept.expires_at <= now {
            continue;
        }
        for (session_id, record) in &kept.value.sessions {
            let entry = FinishedEntry::key_of(&user, session_id, record);
            let stored = keys::index(Index::Finished, &entry);
            if tree.contains_key(&stored)? {
                continue;
            }
            if entry >= later || !write {
                held.insert(entry);
            } else {
                tree.insert(stored, Vec::new())?;
            }
        }
    }
    Ok(FutureEntries::new(held))
}

/// Drops the analytics index entries before `keep_from` (the oldest keys come first, so
/// this reads only what it removes).
pub(crate) fn drop_index_before(store: &SledStore, keep_from: Timestamp) -> Result<(), StoreError> {
    let tree = &store.inner.tree;
    let floor = IndexKey::floor(keep_from);
    for index in [Index::Finished, Index::Refusals] {
        let start = vec![keys::index_prefix(index)];
        for key in tree.range(start..keys::index(index, &floor)).keys() {
            tree.remove(key.map_err(sled_error)?).map_err(sled_error)?;
        }
    }
    Ok(())
}

/// Removes `key` if `value` has expired; a value rewritten meanwhile is left alone.
fn remove_if_expired(
    store: &SledStore,
    key: &[u8],
    value: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let expires_at = if key.starts_with(keys::SESSIONS_PREFIX) {
        record::expires_at(value)
    } else {
        serde_json::from_slice::<ExpiresAt>(value)
            .ok()
            .map(|kept| kept.expires_at)
    };
    let expired = expires_at.is_some_and(|at| at <= now);
    if !expired {
        return Ok(false);
    }
    if key.starts_with(keys::SESSIONS_PREFIX) {
        return store.remove_expired_user(key, value);
    }
    Ok(store
        .inner
        .tree
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
            removed += usize::from(remove_if_expired(store, &key, &value, now)?);
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
            removed += usize::from(remove_if_expired(store, &key, &value, now)?);
        }
    }
    *cursor = next;
    Ok(removed)
}

impl SessionStore for SledStore {
    type Version = SessionsVersion;

    async fn load(&self, user: &Id) -> Result<Loaded<SessionsVersion>, StoreError> {
        let key = keys::sessions(user);
        // Read before the record: a commit in between is then seen as a conflict.
        let commits = self.session_commits(&key).load(Ordering::Acquire);
        let stored = self.read_record(&key)?;
        let (sessions, progress) = match stored {
            Some(kept) if kept.expires_at > now_millis() => {
                (kept.value.sessions, kept.value.progress)
            }
            // Expired: no sessions, and progress that expired with it (the commit drops it).
            Some(kept) => (SessionMap::new(), kept.value.progress),
            None => (SessionMap::new(), RecentProgress::default()),
        };
        Ok(Loaded {
            sessions: Arc::new(UserSessions {
                sessions,
                unreadable: Vec::new(),
            }),
            version: SessionsVersion { commits, progress },
        })
    }

    async fn commit(
        &self,
        user: &Id,
        version: &SessionsVersion,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<Commit, StoreError> {
        let commit = self.apply_commit(user, version, write, limits)?;
        if commit == Commit::Applied {
            // Outside the user's lock (it takes other users'). One that fails stays held
            // and is tried again at the next commit; a failing disk fails the flush below.
            let _ = self.settle_due_entries(now_millis());
            self.counted_commit(write.index.keep_from);
            self.durable().await?;
        }
        Ok(commit)
    }

    async fn progress(&self, user: &Id, asset: &Id) -> Result<Option<ProgressRecord>, StoreError> {
        let (asset, now) = (asset.to_string(), now_millis());
        let record = self.read_record(&keys::sessions(user))?;
        // The record decides while it holds the asset, also once expired (recent_progress).
        if let Some(found) = record.and_then(|kept| kept.value.progress.lookup(&asset, now)) {
            return Ok(found);
        }
        self.read_kept("a progress entry", &keys::progress(user, &asset), now)
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
        // Held entries first: one settled meanwhile is then found in the tree too (it is
        // written there before it is let go), never in neither.
        let held = match index {
            Index::Finished => self.inner.future.range(after, before, limit),
            Index::Refusals => Vec::new(),
        };
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
        if !held.is_empty() {
            found.extend(held);
            found.sort_unstable();
            found.dedup();
            found.truncate(limit);
        }
        Ok(found)
    }

    /// The session gauges count the active sessions every second: they are the held
    /// entries (a count in the tree costs a sled iterator step, about 2.5k instructions,
    /// per entry), and in the tree only what a database of layout 1 held there until its
    /// sessions' next heartbeat.
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
        if index == Index::Finished {
            count += self.inner.future.count_from(from);
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

    fn progress_write(asset: &str, progress: f64) -> SessionWrite {
        SessionWrite {
            progress: Some((
                Id::Str(asset.into()),
                ProgressRecord {
                    progress,
                    updated_at: heartbeat_core::Timestamp::from_unix_millis(now_millis()).unwrap(),
                    session_id: "s".into(),
                },
            )),
            keep_millis: 60_000,
            ..SessionWrite::default()
        }
    }

    async fn commit(store: &SledStore, user: &Id, write: &SessionWrite) {
        let loaded = store.load(user).await.unwrap();
        let limits = Retention::default();
        let commit = store
            .commit(user, &loaded.version, write, &limits)
            .await
            .unwrap();
        assert_eq!(commit, Commit::Applied);
    }

    async fn progress_of(store: &SledStore, user: &Id, asset: &str) -> Option<f64> {
        let asset = Id::Str(asset.into());
        store
            .progress(user, &asset)
            .await
            .unwrap()
            .map(|found| found.progress)
    }

    /// True when the tree holds `key`.
    fn holds(store: &SledStore, key: Vec<u8>) -> bool {
        store.inner.tree.get(key).unwrap().is_some()
    }

    /// A user's record holding `asset`'s progress, expired.
    fn put_expired_record(store: &SledStore, user: &Id, asset: &str) {
        let mut progress = RecentProgress::default();
        let kept = Kept::for_millis(progress_write(asset, 1.0).progress.unwrap().1, 0, 1);
        progress.record(asset.into(), kept, 0);
        let stored = record::encode(1, &SessionMap::new(), &progress).unwrap();
        store
            .inner
            .tree
            .insert(keys::sessions(user), stored)
            .unwrap();
    }

    type Service = heartbeat_core::Heartbeats<SledStore, heartbeat_core::ManualClock>;

    fn service(store: &SledStore, clock: &heartbeat_core::ManualClock) -> Service {
        let codec = heartbeat_core::TokenCodec::new("sled future entries key").unwrap();
        heartbeat_core::Heartbeats::new(codec, store.clone()).with_clock(clock.clone())
    }

    /// Starts a playback of `user` at the clock's time (30 s cycles, 10 s tolerance);
    /// returns its token.
    async fn start(heartbeats: &Service, user: i64) -> String {
        use heartbeat_core::Clock;
        let data = heartbeat_core::HeartbeatData::from_json(serde_json::json!({
            "user_id": user, "asset_id": 14, "heartbeat_cycle": 30, "cycle_upper_tolerance": 10,
            "timestamp": heartbeats.clock().now().to_string(), "session_limit": 2,
        }))
        .unwrap();
        let token = heartbeats.codec().seal(&data).unwrap();
        accepted(heartbeats.heartbeat(&token, None).await.unwrap())
    }

    fn accepted(outcome: heartbeat_core::HeartbeatOutcome) -> String {
        match outcome {
            heartbeat_core::HeartbeatOutcome::Accepted { token, .. } => token,
            other => panic!("expected accepted, got {other:?}"),
        }
    }

    /// Every entry of the finished index, the tree's and the held ones.
    async fn finished(store: &SledStore) -> Vec<IndexKey> {
        let end = after_time(now_millis() + 86_400_000);
        store
            .index_range(Index::Finished, &IndexKey::start(), &end, 100)
            .await
            .unwrap()
    }

    /// Sleeps until the system clock, which the store reads for what is held, is past
    /// `entry`'s time.
    async fn sleep_past(entry: &IndexKey) {
        let ends = entry.time().unwrap().unix_millis();
        let wait = u64::try_from(ends - now_millis() + 5).unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    }

    fn in_tree(store: &SledStore, entry: &IndexKey) -> bool {
        holds(store, keys::index(Index::Finished, entry))
    }

    #[tokio::test]
    async fn an_active_sessions_entry_is_held_until_it_ends_and_rebuilt_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        // Two seconds behind the system clock, which the store reads: a stop's end is past.
        let clock =
            heartbeat_core::ManualClock::new(heartbeat_core::Timestamp::now().add_millis(-2_000));
        let heartbeats = service(&store, &clock);
        let token = start(&heartbeats, 1).await;
        let [started] = finished(&store).await.try_into().unwrap();
        assert!(!in_tree(&store, &started), "held while it has not ended");
        // A heartbeat moves it, in memory only.
        clock.advance(std::time::Duration::from_secs(1));
        let token = accepted(heartbeats.heartbeat(&token, None).await.unwrap());
        let [moved] = finished(&store).await.try_into().unwrap();
        assert!(moved > started && !in_tree(&store, &moved));
        // A stop ends it now: into the tree.
        assert!(heartbeats.stop(&token, None).await.unwrap());
        let [stopped] = finished(&store).await.try_into().unwrap();
        assert!(in_tree(&store, &stopped) && store.inner.future.all().is_empty());
        start(&heartbeats, 2).await;
        let before = finished(&store).await;
        assert_eq!(before.len(), 2);
        // A crash loses what memory held; opening rebuilds it from the records.
        drop(heartbeats);
        drop(store);
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        assert_eq!(
            finished(&store).await,
            before,
            "the same entries, at the same keys"
        );
        assert!(!in_tree(&store, &before[1]), "held again: it has not ended");
    }

    #[tokio::test]
    async fn held_entries_move_into_the_tree_once_their_time_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        // Started 39.7 s ago on 30 s cycles with 10 s tolerance: it ends in about 0.3 s.
        let started_at = heartbeat_core::Timestamp::now().add_millis(-39_700);
        let clock = heartbeat_core::ManualClock::new(started_at);
        let heartbeats = service(&store, &clock);
        start(&heartbeats, 1).await;
        let [entry] = finished(&store).await.try_into().unwrap();
        let ends = entry.time().unwrap().unix_millis();
        assert!(
            ends > now_millis() && !in_tree(&store, &entry),
            "held: {entry:?}"
        );
        // Another user's commit after that time settles it.
        sleep_past(&entry).await;
        start(&heartbeats, 2).await;
        assert!(in_tree(&store, &entry) && !store.inner.future.holds(&entry));
        assert!(
            finished(&store).await.contains(&entry),
            "read once, from the tree"
        );
    }

    #[tokio::test]
    // The settling guard is held on purpose, to keep the commit from settling.
    #[allow(clippy::await_holding_lock)]
    async fn a_play_resumed_after_it_ended_keeps_its_entry_through_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        // Started 39.7 s ago on 30 s cycles with 10 s tolerance: it ends in about 0.3 s.
        let clock =
            heartbeat_core::ManualClock::new(heartbeat_core::Timestamp::now().add_millis(-39_700));
        let heartbeats = service(&store, &clock);
        let token = start(&heartbeats, 1).await;
        let [ended] = finished(&store).await.try_into().unwrap();
        sleep_past(&ended).await;
        // Nothing settles it meanwhile (another commit is settling); its latest token
        // resumes the playback: the play that ended keeps its entry, in the tree now.
        let (_settling, due) = store.inner.future.due(now_millis(), 0).unwrap();
        assert!(due.is_empty() && store.inner.future.holds(&ended));
        clock.advance(std::time::Duration::from_secs(41));
        accepted(heartbeats.heartbeat(&token, None).await.unwrap());
        let both = finished(&store).await;
        assert_eq!(
            both.len(),
            2,
            "the ended play and the resumed one: {both:?}"
        );
        assert!(
            in_tree(&store, &ended),
            "the ended play's entry is in the tree"
        );
        // A crash: the resumed play's entry is rebuilt from the record, the ended one's
        // was written.
        drop((_settling, heartbeats));
        drop(store);
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        assert_eq!(finished(&store).await, both);
    }

    #[tokio::test]
    async fn a_heartbeat_keeps_its_progress_in_the_users_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        let user = Id::Int(13);
        commit(&store, &user, &progress_write("14", 42.0)).await;
        assert!(!holds(&store, keys::progress(&user, "14")));
        assert_eq!(progress_of(&store, &user, "14").await, Some(42.0));
        // A stale load is refused: the stripe's commits moved on.
        let stale = store.load(&user).await.unwrap();
        commit(&store, &user, &progress_write("14", 43.0)).await;
        let limits = Retention::default();
        let write = progress_write("14", 1.0);
        let refused = store.commit(&user, &stale.version, &write, &limits).await;
        assert_eq!(refused.unwrap(), Commit::Conflict);
        assert_eq!(progress_of(&store, &user, "14").await, Some(43.0));
    }

    #[tokio::test]
    async fn an_expired_entry_takes_the_older_own_key_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        let user = Id::Int(13);
        // An older value under the asset's own key, kept longer (a longer retention then).
        put(&store, keys::progress(&user, "a"), now_millis() + 60_000);
        put_expired_record(&store, &user, "a");
        assert_eq!(
            progress_of(&store, &user, "a").await,
            None,
            "the record decides"
        );
        commit(&store, &user, &progress_write("b", 2.0)).await;
        assert!(!holds(&store, keys::progress(&user, "a")));
        assert_eq!(progress_of(&store, &user, "a").await, None);
        assert_eq!(progress_of(&store, &user, "b").await, Some(2.0));
        // The sweep does the same for a record nobody writes again.
        let other = Id::Int(14);
        put(&store, keys::progress(&other, "a"), now_millis() + 60_000);
        put_expired_record(&store, &other, "a");
        assert_eq!(store.sweep().unwrap(), 1);
        assert!(!holds(&store, keys::progress(&other, "a")));
        assert!(!holds(&store, keys::sessions(&other)));
    }

    #[test]
    fn sweeps_remove_only_expired_entries_a_slice_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledConfig::new(dir.path())).unwrap();
        let now = now_millis();
        for user in 0..10 {
            let user = Id::Int(user);
            put(&store, keys::sessions(&user), now - 1);
            put(&store, keys::progress(&user, "1"), now - 1);
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
        assert!(holds(&store, keys::META_FORMAT.to_vec()));
        put(&store, keys::sessions(&Id::Int(99)), now - 1);
        assert_eq!(
            store.sweep().unwrap(),
            1,
            "the full sweep finds the rest at once"
        );
    }
}
