//! How many finished-index entries end at or after now: the active sessions of all users,
//! which the session gauges ask for every second.
//!
//! Counting them in the tree reads every active entry, and a sled iterator step costs
//! about 2.5k instructions: with 30-second cycles, that was as much again as the
//! heartbeats themselves. So the store keeps, in memory, how many entries end at each
//! millisecond from a floor on. Commits move entries in it as they move them in the tree,
//! and a count moves the floor up to its own start and forgets what is below, so each
//! count costs what ended since the last one. A commit forgets what ended a minute before
//! it, so the counts hold about the active sessions also where nobody counts. The database belongs to one process, so
//! nothing else moves the entries; opening the store reads the active ones once.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use heartbeat_core::sessions::analytics::{IndexKey, IndexMove};

/// Entries by the millisecond they end, from a floor on.
#[derive(Debug, Default)]
pub(crate) struct ActiveCount(Mutex<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// Entries that end before this millisecond are not held.
    floor: i64,
    by_end: BTreeMap<i64, u64>,
    total: u64,
}

/// The millisecond a key's entry ends at, if it is an entry.
fn end_of(key: &IndexKey) -> Option<i64> {
    key.time().map(|at| at.unix_millis())
}

impl ActiveCount {
    /// Holds the entries `keys` (those that end at or after `floor`).
    pub(crate) fn new(floor: i64, keys: impl IntoIterator<Item = IndexKey>) -> Self {
        let counts = Counts {
            floor,
            ..Counts::default()
        };
        let this = ActiveCount(Mutex::new(counts));
        for key in keys {
            this.add(&key);
        }
        this
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts are a cache of the tree's: a panic elsewhere leaves them usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, key: &IndexKey) {
        let Some(end) = end_of(key) else { return };
        let mut counts = self.counts();
        if end >= counts.floor {
            *counts.by_end.entry(end).or_default() += 1;
            counts.total += 1;
        }
    }

    fn remove(&self, key: &IndexKey) {
        let Some(end) = end_of(key) else { return };
        let mut counts = self.counts();
        if let Some(held) = counts.by_end.get_mut(&end).filter(|held| **held > 0) {
            *held -= 1;
            if *held == 0 {
                counts.by_end.remove(&end);
            }
            counts.total -= 1;
        }
    }

    /// Follows the finished index's moves that a commit wrote at `now` (Unix millis), and
    /// forgets what ended more than [`FORGET_AFTER_MILLIS`] before: the counts stay as
    /// small as the active sessions also where nobody counts.
    pub(crate) fn moved(&self, moves: &[IndexMove], now: i64) {
        for step in moves {
            if let Some(from) = &step.from {
                self.remove(from);
            }
            self.add(&step.to);
        }
        self.counts()
            .raise_floor(now.saturating_sub(FORGET_AFTER_MILLIS));
    }

    /// How many entries are at or after `from`; `None` when that needs the tree (a key
    /// inside a millisecond, or one below the floor).
    pub(crate) fn count_from(&self, from: &IndexKey) -> Option<u64> {
        let at = from.time()?;
        if *from != IndexKey::floor(at) {
            return None;
        }
        let start = at.unix_millis();
        let mut counts = self.counts();
        if start < counts.floor {
            return None;
        }
        counts.raise_floor(start);
        Some(counts.total)
    }
}

/// How long after they end entries are still held for a count that starts in the past.
const FORGET_AFTER_MILLIS: i64 = 60_000;

impl Counts {
    /// Forgets the entries that end before `floor`, if it is higher than today's.
    fn raise_floor(&mut self, floor: i64) {
        if floor <= self.floor {
            return;
        }
        let kept = self.by_end.split_off(&floor);
        let gone: u64 = self.by_end.values().sum();
        self.by_end = kept;
        self.total -= gone;
        self.floor = floor;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use heartbeat_core::Timestamp;

    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(millis).unwrap()
    }

    fn entry(millis: i64, session: &str) -> IndexKey {
        IndexKey::from_stored(format!("{millis:015}:[\"u\",\"{session}\"]")).unwrap()
    }

    #[test]
    fn counts_follow_moves_and_forget_what_ended() {
        let count = ActiveCount::new(1_000, [entry(1_500, "a"), entry(2_000, "b")]);
        assert_eq!(count.count_from(&IndexKey::floor(at(1_000))), Some(2));
        // a moves on, c starts, b ends (its entry moves to when it ended, below the floor).
        let moves = [
            IndexMove {
                from: Some(entry(1_500, "a")),
                to: entry(3_000, "a"),
            },
            IndexMove {
                from: None,
                to: entry(2_500, "c"),
            },
            IndexMove {
                from: Some(entry(2_000, "b")),
                to: entry(900, "b"),
            },
        ];
        count.moved(&moves, 1_000);
        assert_eq!(count.count_from(&IndexKey::floor(at(1_000))), Some(2));
        assert_eq!(
            count.count_from(&IndexKey::floor(at(2_600))),
            Some(1),
            "c ended by then"
        );
        assert_eq!(
            count.count_from(&IndexKey::floor(at(2_000))),
            None,
            "below the floor: the tree"
        );
        assert_eq!(
            count.count_from(&entry(2_700, "x")),
            None,
            "inside a millisecond: the tree"
        );
        // Moving an entry that ended below the floor changes nothing held.
        let late = IndexMove {
            from: Some(entry(2_500, "c")),
            to: entry(2_550, "c"),
        };
        count.moved(&[late], 2_600);
        assert_eq!(count.count_from(&IndexKey::floor(at(2_600))), Some(1));
    }

    #[test]
    fn what_ended_a_minute_ago_is_forgotten_without_a_count() {
        let count = ActiveCount::new(0, []);
        for n in 0..100 {
            let started = IndexMove {
                from: None,
                to: entry(n * 1_000, &n.to_string()),
            };
            count.moved(&[started], n * 1_000);
        }
        // Sessions that end at 0..99 s; at 99 s, those that ended before 39 s are gone.
        assert_eq!(count.counts().by_end.len(), 61);
        assert_eq!(count.count_from(&IndexKey::floor(at(39_000))), Some(61));
        assert_eq!(
            count.count_from(&IndexKey::floor(at(38_000))),
            None,
            "below the floor: the tree"
        );
    }
}
