//! The finished index's entries that end later than now: every active session's, held in
//! memory instead of the tree.
//!
//! A session's entry is keyed by when it ends, and every heartbeat moves that: in the
//! tree, a remove and an insert (with its node splits, since the index grows at its end)
//! on every heartbeat, which were most of a sled heartbeat's tree work. The database
//! belongs to one process, so the entries that have not ended yet can live here:
//! - a commit moves its sessions' entries here, and writes to the tree only an entry that
//!   ends at or before now (a stop, an ending) or removes one that is there;
//! - once an entry's time has passed, a later commit moves it into the tree
//!   ([`SledStore::settle_due_entries`](crate::SledStore)), under its user's lock;
//! - reads of the index see the tree and these together;
//! - a crash loses them, but not what they say: each is a session in a user's record,
//!   which the commit wrote after it and which is the truth. Opening the store rebuilds
//!   them from the records, at the same keys (the export's cursor neither skips nor
//!   repeats one).

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use heartbeat_core::Timestamp;
use heartbeat_core::sessions::analytics::IndexKey;

/// Entries at most settled per commit, so that one commit's latency stays bounded after a
/// pause in which many sessions ended.
pub(crate) const SETTLE_PER_COMMIT: usize = 64;

/// The finished-index entries held in memory (see the module).
#[derive(Debug, Default)]
pub(crate) struct FutureEntries {
    entries: Mutex<BTreeSet<IndexKey>>,
    /// Held while due entries are settled: one settler at a time.
    settling: Mutex<()>,
}

/// The first key after every entry that ends at or before `now` (Unix millis).
pub(crate) fn after_time(now: i64) -> IndexKey {
    let now = Timestamp::from_unix_millis(now).unwrap_or_else(|_| Timestamp::now());
    IndexKey::floor(now.add_millis(1))
}

impl FutureEntries {
    /// Holds `entries`.
    pub(crate) fn new(entries: BTreeSet<IndexKey>) -> Self {
        Self {
            entries: Mutex::new(entries),
            settling: Mutex::new(()),
        }
    }

    fn entries(&self) -> MutexGuard<'_, BTreeSet<IndexKey>> {
        // A set of plain values: a panic elsewhere cannot leave it half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when `key` is held here (not in the tree).
    pub(crate) fn holds(&self, key: &IndexKey) -> bool {
        self.entries().contains(key)
    }

    /// Removes `removed` and adds `added`: a commit's moves, once its writes are in.
    pub(crate) fn apply(&self, removed: &[&IndexKey], added: Vec<IndexKey>) {
        if removed.is_empty() && added.is_empty() {
            return;
        }
        let mut entries = self.entries();
        for key in removed {
            entries.remove(*key);
        }
        entries.extend(added);
    }

    /// Removes `key`; false when it was not held.
    pub(crate) fn remove(&self, key: &IndexKey) -> bool {
        self.entries().remove(key)
    }

    /// Up to `limit` entries between `after` and `before` (both excluded), in order.
    pub(crate) fn range(&self, after: &IndexKey, before: &IndexKey, limit: usize) -> Vec<IndexKey> {
        self.entries()
            .range((Bound::Excluded(after), Bound::Excluded(before)))
            .take(limit)
            .cloned()
            .collect()
    }

    /// How many entries are at or after `from`.
    pub(crate) fn count_from(&self, from: &IndexKey) -> u64 {
        u64::try_from(self.entries().range(from..).count()).unwrap_or(u64::MAX)
    }

    /// Up to `limit` entries that end at or before `now`, oldest first, if no one else is
    /// settling them; with the guard that keeps it so.
    pub(crate) fn due(
        &self,
        now: i64,
        limit: usize,
    ) -> Option<(MutexGuard<'_, ()>, Vec<IndexKey>)> {
        let after = after_time(now);
        {
            let entries = self.entries();
            if entries.first().is_none_or(|first| *first >= after) {
                return None;
            }
        }
        let guard = self.settling.try_lock().ok()?;
        let due = self.entries().range(..after).take(limit).cloned().collect();
        Some((guard, due))
    }

    /// Every entry held, in order.
    #[cfg(test)]
    pub(crate) fn all(&self) -> Vec<IndexKey> {
        self.entries().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartbeat_core::sessions::EndReason;
    use heartbeat_core::sessions::analytics::FinishedEntry;

    fn entry(millis: i64, session: &str) -> IndexKey {
        FinishedEntry {
            ends_at: Timestamp::from_unix_millis(millis).unwrap(),
            user: "u".into(),
            session_id: session.into(),
            ended_by: EndReason::Expired,
        }
        .key()
    }

    #[test]
    fn due_entries_are_those_that_ended_oldest_first_and_one_settler_at_a_time() {
        let entries = FutureEntries::new([entry(30, "c"), entry(10, "a"), entry(20, "b")].into());
        assert!(entries.due(9, 10).is_none(), "nothing has ended at 9");
        let (guard, due) = entries.due(20, 10).unwrap();
        assert_eq!(
            due,
            [entry(10, "a"), entry(20, "b")],
            "what ended at or before 20"
        );
        assert!(
            entries.due(30, 10).is_none(),
            "another settler waits its turn"
        );
        drop(guard);
        let (_guard, due) = entries.due(30, 2).unwrap();
        assert_eq!(due.len(), 2, "at most the limit");
    }

    #[test]
    fn moves_ranges_and_counts() {
        let entries = FutureEntries::default();
        entries.apply(&[], vec![entry(10, "a"), entry(20, "b"), entry(30, "c")]);
        entries.apply(&[&entry(20, "b")], vec![entry(40, "b")]);
        assert!(!entries.holds(&entry(20, "b")) && entries.holds(&entry(40, "b")));
        assert_eq!(
            entries.range(&entry(10, "a"), &after_time(1_000), 10),
            [entry(30, "c"), entry(40, "b")],
            "both ends excluded"
        );
        assert_eq!(
            entries.range(&IndexKey::start(), &entry(40, "b"), 1),
            [entry(10, "a")]
        );
        assert_eq!(
            entries.count_from(&IndexKey::floor(Timestamp::from_unix_millis(30).unwrap())),
            2
        );
        assert!(entries.remove(&entry(10, "a")) && !entries.remove(&entry(10, "a")));
        assert_eq!(entries.all(), [entry(30, "c"), entry(40, "b")]);
    }
}
