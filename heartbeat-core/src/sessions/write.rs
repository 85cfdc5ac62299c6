//! The change one heartbeat (or stop, takeover, eviction) makes to a user's stored state.

use std::collections::BTreeSet;

use crate::sessions::analytics::{FinishedEntry, IndexMove, IndexWrite, RefusalEntry};
use crate::sessions::{PlayRecord, ProgressRecord, SessionRecord};
use crate::sessions::{Retention, UserSessions};
use crate::{Id, Timestamp};

/// A change to one user's stored state, applied only if the state is still the one it was
/// decided on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionWrite {
    /// The sessions to insert or replace.
    pub upserts: Vec<(String, SessionRecord)>,
    /// Session ids to delete.
    pub remove: Vec<String>,
    /// The entries to append to the play history, oldest first.
    pub ended: Vec<PlayRecord>,
    /// Progress to record for `(user, asset)`.
    pub progress: Option<(Id, ProgressRecord)>,
    /// The user's whole active set after this write (for stores that replace it whole).
    pub sessions: UserSessions,
    /// How long, in milliseconds from now, stores keep the user's sessions at least: as
    /// the rules build it, until the longest-lived session of `sessions` can stay active;
    /// once [`for_store`](Self::for_store) completed it, that plus the retention.
    pub keep_millis: i64,
    /// The refusal the decision made, or that report-only limits would have made (SPEC
    /// §3.8), for the refusal index; the service drops it when the same session's was
    /// stored lately (SPEC §4).
    pub refusal: Option<RefusalEntry>,
    /// The analytics indexes' changes (SPEC §3.9), applied in the same atomic step:
    /// completed by [`for_store`](Self::for_store).
    pub index: IndexWrite,
}

impl SessionWrite {
    /// The write as a store applies it, completed from the state it was decided on
    /// (`before`) at `now`: the finished-index moves of the sessions it ends, the
    /// indexes' retention floor, and the sessions kept past their expiry for as long as
    /// the history is, so that a session that times out is in the history without a
    /// later visit (SPEC §3.6), and the refusal's index entry. The one place a write is
    /// completed.
    pub fn for_store(
        mut self,
        user: &Id,
        before: &UserSessions,
        now: Timestamp,
        retention: &Retention,
    ) -> Self {
        self.index.finished = finished_moves(user, before, &self);
        self.index.refusal = self.refusal.as_ref().map(RefusalEntry::key);
        self.index.keep_from = crate::sessions::analytics::IndexKey::floor(
            now.add_millis(-retention.retention_millis()),
        );
        self.keep_millis = self
            .keep_millis
            .saturating_add(retention.retention_millis());
        self
    }

    /// True when applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.remove.is_empty()
            && self.progress.is_none()
            && self.refusal.is_none()
    }
}

/// The finished-index moves of `write` on `user`'s sessions as they were loaded
/// (`before`): every session the write inserts, replaces or ends goes to the place of
/// its new end; a session whose place does not change is not moved.
pub fn finished_moves(user: &Id, before: &UserSessions, write: &SessionWrite) -> Vec<IndexMove> {
    let previous = |session_id: &str| {
        before
            .sessions
            .get(session_id)
            .map(|record| FinishedEntry::key_of(user, session_id, record))
    };
    let mut seen = BTreeSet::new();
    let upserted = write
        .upserts
        .iter()
        .map(|(id, record)| (id.as_str(), FinishedEntry::key_of(user, id, record)));
    let ended = write.ended.iter().filter_map(|entry| {
        Some((
            entry.session_id.as_str(),
            FinishedEntry::of_history(user, entry)?.key(),
        ))
    });
    upserted
        .chain(ended)
        .filter(|(id, _)| seen.insert(*id))
        .filter_map(|(id, to)| {
            let from = previous(id);
            (from.as_ref() != Some(&to)).then_some(IndexMove { from, to })
        })
        .collect()
}
