//! The progress of the assets a user played lately, kept in the user's record beside the
//! session set (layout 2), so that a heartbeat that reports progress writes one key.
//!
//! An asset's progress is in the record or under its own key, and the record wins: an
//! asset enters the record at its first report and leaves it only to its own key (when
//! [`RECENT_ASSETS`] newer assets push it out) or with its key removed (when it expires),
//! so an older value under its own key can never read again.

use std::collections::BTreeMap;

use heartbeat_core::ProgressRecord;
use heartbeat_core::store::kit::Kept;
use serde::{Deserialize, Serialize};

/// How many assets' progress a user's record holds; the least recently reported one
/// beyond it moves to its own key.
pub(crate) const RECENT_ASSETS: usize = 8;

/// Progress by asset (the asset id's text, as its own key names it), each with its expiry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct RecentProgress(BTreeMap<String, Kept<ProgressRecord>>);

/// What a change did to the assets that left the record: their own keys must follow.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Left {
    /// Pushed out while live: written to their own keys.
    pub(crate) moved: Vec<(String, Kept<ProgressRecord>)>,
    /// Expired: their own keys (older, perhaps kept longer under an earlier retention)
    /// are removed.
    pub(crate) expired: Vec<String>,
}

impl RecentProgress {
    /// `Some` when the record decides `asset`'s progress: its value while live, `None`
    /// once expired. `None` when the asset's own key decides.
    pub(crate) fn lookup(&self, asset: &str, now: i64) -> Option<Option<ProgressRecord>> {
        self.0.get(asset).map(|kept| kept.live(now).cloned())
    }

    /// Records `progress` for `asset`, dropping what expired by `now` and pushing out the
    /// least recently reported assets beyond [`RECENT_ASSETS`].
    pub(crate) fn record(
        &mut self,
        asset: String,
        progress: Kept<ProgressRecord>,
        now: i64,
    ) -> Left {
        let mut left = self.drop_expired(now);
        self.0.insert(asset, progress);
        while self.0.len() > RECENT_ASSETS {
            let oldest = self
                .0
                .iter()
                .min_by_key(|(_, kept)| kept.value.updated_at)
                .map(|(asset, _)| asset.clone());
            let Some(oldest) = oldest else { break };
            if let Some(kept) = self.0.remove(&oldest) {
                left.moved.push((oldest, kept));
            }
        }
        left
    }

    /// Drops what expired by `now`.
    pub(crate) fn drop_expired(&mut self, now: i64) -> Left {
        let expired: Vec<String> = self
            .0
            .iter()
            .filter(|(_, kept)| kept.live(now).is_none())
            .map(|(asset, _)| asset.clone())
            .collect();
        for asset in &expired {
            self.0.remove(asset);
        }
        Left {
            moved: Vec::new(),
            expired,
        }
    }

    /// When the last entry expires; `None` when there is none.
    pub(crate) fn last_expiry(&self) -> Option<i64> {
        self.0.values().map(|kept| kept.expires_at).max()
    }

    /// The entries held, live or not, by asset.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, &Kept<ProgressRecord>)> {
        self.0.iter().map(|(asset, kept)| (asset.as_str(), kept))
    }

    /// The assets held, live or not.
    pub(crate) fn assets(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// True when it holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Kept<ProgressRecord>)> for RecentProgress {
    fn from_iter<I: IntoIterator<Item = (String, Kept<ProgressRecord>)>>(entries: I) -> Self {
        RecentProgress(entries.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use heartbeat_core::Timestamp;

    use super::*;

    fn at(millis: i64, expires_at: i64) -> Kept<ProgressRecord> {
        Kept {
            expires_at,
            value: ProgressRecord {
                progress: millis as f64,
                updated_at: Timestamp::from_unix_millis(millis).unwrap(),
                session_id: "s".into(),
            },
        }
    }

    #[test]
    fn the_least_recently_reported_asset_moves_out_beyond_the_cap() {
        let mut recent = RecentProgress::default();
        for n in 0..RECENT_ASSETS as i64 {
            // Reported in the order 7, 6, ..., 0: asset "7" is the oldest.
            let asset = (RECENT_ASSETS as i64 - 1 - n).to_string();
            assert_eq!(recent.record(asset, at(n, 1_000), 0), Left::default());
        }
        let left = recent.record("new".into(), at(100, 1_000), 0);
        assert_eq!(left.moved, vec![("7".to_owned(), at(0, 1_000))]);
        assert!(left.expired.is_empty());
        assert_eq!(recent.lookup("7", 0), None, "its own key decides now");
        assert_eq!(recent.lookup("new", 0), Some(Some(at(100, 1_000).value)));
    }

    #[test]
    fn an_expired_entry_decides_absence_until_it_is_dropped_with_its_key() {
        let mut recent = RecentProgress::default();
        recent.record("a".into(), at(1, 10), 0);
        assert_eq!(
            recent.lookup("a", 10),
            Some(None),
            "expired: absent, not the key's"
        );
        let left = recent.record("b".into(), at(20, 100), 20);
        assert_eq!(left.expired, vec!["a".to_owned()]);
        assert_eq!(recent.lookup("a", 20), None);
        assert_eq!(recent.last_expiry(), Some(100));
        assert_eq!(recent.assets().collect::<Vec<_>>(), ["b"]);
    }
}
