//! The storage contract: what a store must do, and nothing it may decide.
//!
//! Stores only store. Every rule (expiry, the limit, session identity, job transitions)
//! lives in this crate; a store loads a user's state with a version and applies a
//! [`SessionWrite`] only if the version is unchanged (compare-and-set). The
//! [`Heartbeats`](crate::Heartbeats) service runs the bounded retry loop around it.

use std::error::Error as StdError;
use std::future::Future;

use crate::Id;
use crate::analytics::{Index, IndexKey};
use crate::decision::SessionWrite;
use crate::jobs::LiveStream;
use crate::notice::SessionNotice;
use crate::session::{PlayRecord, ProgressRecord, UserSessions};

/// A boxed error from a store's client library, kept as the source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store operation failed. Every store maps its own errors into this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached now (connection refused, timed out, closed). Worth a
    /// retry later: the server answers 503 with `Retry-After`.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What happened, for logs.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },
    /// Concurrent writers kept changing the same state: the compare-and-set lost every
    /// one of its bounded attempts.
    #[error("contention on `{key}` did not clear after {attempts} attempts")]
    Contention {
        /// What was contended (a user id or job id).
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Stored data could not be read or written in the expected shape.
    #[error("stored data is corrupt: {message}")]
    Corrupt {
        /// What is wrong, for logs.
        message: String,
        /// The decoding error.
        #[source]
        source: Option<BoxError>,
    },
    /// Any other failure of the backing store.
    #[error("store failed: {message}")]
    Backend {
        /// What happened, for logs.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// An [`Unavailable`](Self::Unavailable) error with its source.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`Corrupt`](Self::Corrupt) error with its source.
    pub fn corrupt(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Corrupt {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`Backend`](Self::Backend) error with its source.
    pub fn backend(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// True when the failure is transient and a retry later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Contention { .. }
        )
    }
}

/// Whether a compare-and-set applied its write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Commit {
    /// The state was unchanged and the write is stored.
    Applied,
    /// Someone changed the state since it was loaded; nothing was written.
    Conflict,
}

/// A user's sessions with the version they were loaded at.
#[derive(Debug, Clone)]
pub struct Loaded<V> {
    /// The sessions as stored.
    pub sessions: UserSessions,
    /// Opaque version to pass back to [`SessionStore::commit`].
    pub version: V,
}

impl<V> Loaded<V> {
    /// Nothing stored for the user, at `version`.
    pub fn empty(version: V) -> Self {
        Self {
            sessions: UserSessions::default(),
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
/// - An applied write's [`SessionWrite::index`] changes are applied in the same step:
///   the finished index's moves (drop `from`, add `to`) and the refusal. Entries of either
///   index below `keep_from` are dropped by this write or a later one (a periodic sweep).
/// - [`Commit::Applied`] means durable to the degree the store documents.
///
/// The conformance suite in `heartbeat_core::testkit` (feature `testkit`) checks all of it.
pub trait SessionStore: Send + Sync + 'static {
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
    fn progress(
        &self,
        user: &Id,
        asset: &Id,
    ) -> impl Future<Output = Result<Option<ProgressRecord>, StoreError>> + Send;

    /// The user's play history, newest first, at most `limit` entries.
    fn history(
        &self,
        user: &Id,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PlayRecord>, StoreError>> + Send;

    /// Up to `limit` entries of an analytics index strictly between `after` and `before`,
    /// in key order (SPEC §3.9; [`crate::analytics`]).
    fn index_range(
        &self,
        index: Index,
        after: &IndexKey,
        before: &IndexKey,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<IndexKey>, StoreError>> + Send;

    /// How many entries of an analytics index are at or after `from`.
    fn index_count(
        &self,
        index: Index,
        from: &IndexKey,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Hands a notice to the streams watching its session, on every instance that shares
    /// the store (SPEC §3.7). Delivery is best effort: a watcher that misses it (it was
    /// reconnecting) re-reads the session's state.
    fn notify(&self, notice: &SessionNotice)
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Live notices for `session_id` of `user` from now on; [`BusError::Lagged`] when some
    /// may have been missed.
    ///
    /// [`BusError::Lagged`]: crate::jobs::BusError::Lagged
    fn watch(&self, user: &Id, session_id: &str) -> LiveStream<SessionNotice>;

    /// Checks the store can be reached (for readiness probes).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes every applied write durable now (on shutdown).
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How long and how much a store keeps besides active sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Play history entries kept per user (newest first).
    pub history_cap: usize,
    /// How long progress and history are kept after their last write, in seconds.
    pub retention_secs: u64,
}

impl Retention {
    /// How long progress and history are kept after their last write, in milliseconds.
    pub fn retention_millis(&self) -> i64 {
        i64::try_from(self.retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

impl Default for Retention {
    /// 100 history entries per user, kept 30 days.
    fn default() -> Self {
        Self {
            history_cap: 100,
            retention_secs: 30 * 86_400,
        }
    }
}
