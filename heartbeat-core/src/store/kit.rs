//! Plumbing the stores share, written once: values kept until a time, how often to sweep,
//! the JSON form of stored values, and the capped play history.
//!
//! Stores only store: none of this decides anything about sessions or jobs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// A stored value with the Unix millisecond after which it reads as absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept<T> {
    /// Unix milliseconds; the value is absent from this instant on.
    pub expires_at: i64,
    /// The value.
    pub value: T,
}

impl<T> Kept<T> {
    /// `value`, kept for `millis` milliseconds after `now` (Unix milliseconds).
    pub fn for_millis(value: T, now: i64, millis: i64) -> Self {
        Self {
            expires_at: now.saturating_add(millis.max(0)),
            value,
        }
    }

    /// The value if it is still kept at `now`.
    pub fn live(&self, now: i64) -> Option<&T> {
        (self.expires_at > now).then_some(&self.value)
    }

    /// The value if it is still kept at `now`.
    pub fn into_live(self, now: i64) -> Option<T> {
        (self.expires_at > now).then_some(self.value)
    }
}

/// Milliseconds since the Unix epoch by the system clock: when stores reclaim space.
pub fn unix_millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Says when a store should sweep its expired entries: once every [`SWEEP_EVERY`]
/// commits, so that the cost is spread and bounded.
#[derive(Debug, Default)]
pub struct SweepCadence {
    commits: AtomicU64,
}

/// Commits between two sweeps.
pub const SWEEP_EVERY: u64 = 4096;

impl SweepCadence {
    /// Counts a commit; true when this one should sweep.
    pub fn sweep_now(&self) -> bool {
        self.commits.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1
    }
}

/// Writes a stored value as JSON.
///
/// # Errors
///
/// [`StoreError::Backend`] when the value cannot be written (a map with non-string keys).
pub fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::backend("cannot encode a value", error))
}

/// Reads a stored JSON value; `what` names it in the error.
///
/// # Errors
///
/// [`StoreError::Corrupt`] when the bytes are not that value.
pub fn decode<T: DeserializeOwned>(what: &str, json: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(json)
        .map_err(|error| StoreError::corrupt(format!("{what}: {error}"), error))
}

/// Puts `ended` sessions (oldest first) at the head of a newest-first `history` and keeps
/// its newest `cap` entries (the records are
/// [`PlayRecord`](crate::sessions::PlayRecord)s).
pub fn prepend_history<T: Clone>(history: &mut VecDeque<T>, ended: &[T], cap: usize) {
    for entry in ended {
        history.push_front(entry.clone());
    }
    history.truncate(cap);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_values_read_as_absent_from_their_expiry_on() {
        let kept = Kept::for_millis("v", 1_000, 500);
        assert_eq!(kept.live(1_499), Some(&"v"));
        assert_eq!(kept.live(1_500), None);
        assert_eq!(Kept::for_millis("v", i64::MAX - 1, 10).expires_at, i64::MAX);
    }

    #[test]
    fn the_sweep_comes_once_every_sweep_every_commits() {
        let cadence = SweepCadence::default();
        let sweeps = (0..SWEEP_EVERY * 3).filter(|_| cadence.sweep_now()).count();
        assert_eq!(sweeps, 3);
    }
}
