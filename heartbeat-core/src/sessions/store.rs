//! The storage contract: what a store must do, and nothing it may decide.
//!
//! Stores only store. Every rule (expiry, the limit, session identity, job transitions)
//! lives in this crate; a store loads a user's state with a version and applies a
//! [`SessionWrite`] only if the version is unchanged (compare-and-set). The
//! [`Heartbeats`](crate::Heartbeats) service runs the bounded retry loop around it.

use std::future::Future;
use std::sync::Arc;

use crate::Id;
use crate::live::LiveStream;
use crate::sessions::SessionWrite;
use crate::sessions::analytics::{Index, IndexKey, IndexReads};
use crate::sessions::notice::SessionNotice;
use crate::sessions::{PlayRecord, ProgressRecord, Retention, UserSessions};
use crate::store::{Commit, StoreError, StoreHealth};

/// A user's sessions with the version they were loaded at.
#[derive(Debug, Clone)]
pub struct Loaded<V> {
    /// The sessions as stored: shared with the store's own copy where the store keeps the
    /// sessions in memory (a load copies nothing; a commit changes its copy in place once
    /// the loads of that version are dropped).
    pub sessions: Arc<UserSessions>,
    /// Opaque version to pass back to [`SessionStore::commit`].
    pub version: V,
}

impl<V> Loaded<V> {
    /// Nothing stored for the user, at `version`.
    pub fn empty(version: V) -> Self {
        Self {
            sessions: Arc::default(),
            version,
        }
    }
}

/// Storage for heartbeat sessions, progress and play history.
///
/// # Contract
///
/// - [`load`](Self::load) returns the user's sessions and a version.
/// - [`commit`](Self::commit) applies a write only if the user's sessions are still at
///   that version, and returns [`Commit::Conflict`] otherwise, having written nothing. It
///   holds no lock across a network round trip: the caller retries.
/// - An applied write's progress and history entries are stored too, and the user's keys
///   are kept at least [`SessionWrite::keep_millis`]. History keeps the newest `history_cap`
///   entries per user.
/// - An applied write's [`SessionWrite::index`] changes are applied in the same step
///   (and read back through [`AnalyticsStore`]):
///   the finished index's moves (drop `from`, add `to`) and the refusal. Entries of either
///   index before `keep_from` are dropped by this write or a later one (a periodic sweep).
/// - [`Commit::Applied`] means durable to the degree the store documents.
///
/// The conformance suite in `heartbeat_core::testkit` (feature `testkit`) checks all of it.
pub trait SessionStore: NoticeBus + AnalyticsStore {
    /// What identifies the loaded state for compare-and-set.
    type Version: Send + Sync + 'static;

    /// Loads a user's sessions.
    fn load(
        &self,
        user: &Id,
    ) -> impl Future<Output = Result<Loaded<Self::Version>, StoreError>> + Send;

    /// Applies `write` if the user's sessions are still at `version`.
    fn commit(
        &self,
        user: &Id,
        version: &Self::Version,
        write: &SessionWrite,
        limits: &Retention,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    /// The last progress recorded for `(user, asset)`.
    fn progress<'a>(
        &'a self,
        user: &'a Id,
        asset: &'a Id,
    ) -> impl Future<Output = Result<Option<ProgressRecord>, StoreError>> + Send + 'a;

    /// The user's play history, newest first, at most `limit` entries.
    fn history<'a>(
        &'a self,
        user: &'a Id,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PlayRecord>, StoreError>> + Send + 'a;

    /// Checks the store can be reached (for readiness probes): an error when no part of it
    /// answers, [`StoreHealth::Degraded`] when only some of it does.
    fn ping<'a>(&'a self) -> impl Future<Output = Result<StoreHealth, StoreError>> + Send + 'a;

    /// Makes every applied write durable now (on shutdown).
    fn flush<'a>(&'a self) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;
}

/// The analytics indexes as a store keeps them (SPEC §3.9; [`crate::sessions::analytics`]):
/// ordered sets of [`IndexKey`]s, written by [`SessionStore::commit`] and read here.
pub trait AnalyticsStore: Send + Sync + 'static {
    /// Up to `limit` entries of an analytics index strictly between `after` and `before`,
    /// in key order (SPEC §3.9; [`crate::sessions::analytics`]).
    fn index_range<'a>(
        &'a self,
        index: Index,
        after: &'a IndexKey,
        before: &'a IndexKey,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<IndexKey>, StoreError>> + Send + 'a;

    /// How many entries of an analytics index are at or after `from`.
    fn index_count<'a>(
        &'a self,
        index: Index,
        from: &'a IndexKey,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'a;

    /// What a read of an index costs this store, which sets how often the store-wide
    /// readers poll it (the session gauges' watch, an open feed). [`IndexReads::Cheap`]
    /// unless the store says otherwise.
    fn index_reads(&self) -> IndexReads {
        IndexReads::Cheap
    }
}

/// "Your session ended" notices across the instances that share a store (SPEC §3.7): the
/// session side's bus, beside the jobs side's [`EventBus`](crate::jobs::EventBus).
pub trait NoticeBus: Send + Sync + 'static {
    /// Hands a notice to the streams watching its session, on every instance that shares
    /// the store (SPEC §3.7). Delivery is best effort: a watcher that misses it (it was
    /// reconnecting) re-reads the session's state.
    fn notify<'a>(
        &'a self,
        notice: &'a SessionNotice,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;

    /// Live notices for `session_id` of `user` from the moment the returned future
    /// completes (a store whose notices travel between instances is listening by then,
    /// so a caller that reads the session afterwards misses nothing);
    /// [`BusError::Lagged`] when some may have been missed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the store cannot listen for the user's notices
    /// now (a Redis Cluster node that does not answer).
    ///
    /// [`BusError::Lagged`]: crate::live::BusError::Lagged
    fn watch<'a>(
        &'a self,
        user: &'a Id,
        session_id: &'a str,
    ) -> impl Future<Output = Result<LiveStream<SessionNotice>, StoreError>> + Send + 'a;
}
