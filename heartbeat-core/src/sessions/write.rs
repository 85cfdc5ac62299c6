//! The change one heartbeat (or stop, takeover, eviction) makes to a user's stored state.

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
        self.index.keep_from = Some(now.add_millis(-retention.retention_millis()));
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
/// (`before`): an entry per play (SPEC §3.9).
///
/// - A play the write ends takes its session's entry, if that session was playing, to
///   the place of its end, and is written there even when it is there already (a store
///   that holds playing sessions' entries apart, as sled does, keeps it now); a play
///   that ended before keeps its entry where it is.
/// - A session the write leaves (or makes) active gets an entry at its expiry: the
///   session's entry, moved, when it was playing and the write ends no play of it;
///   otherwise a new one, so that a play resumed after it ended (or started again under
///   the same id) is the next entry, not the previous one moved.
/// - Only the last of a session's upserts counts (the one that stays); an entry already
///   in its place is not moved.
pub fn finished_moves(user: &Id, before: &UserSessions, write: &SessionWrite) -> Vec<IndexMove> {
    let (ended, upserts) = (&write.ended, &write.upserts);
    let ends = ended.iter().enumerate().filter_map(|(at, entry)| {
        let id = entry.session_id.as_str();
        let finished = FinishedEntry::of_history(user, entry)?;
        let first = !ended[..at].iter().any(|earlier| earlier.session_id == id);
        Some((id, finished.key(), finished.ended_by, true, first))
    });
    let last_upserts = upserts
        .iter()
        .enumerate()
        .filter(|(at, (id, _))| !upserts[at + 1..].iter().any(|(later, _)| later == id));
    let upserted = last_upserts.map(|(_, (id, record))| {
        let first = !ended.iter().any(|entry| entry.session_id == *id);
        let end = FinishedEntry::end_of(record);
        (
            id.as_str(),
            FinishedEntry::key_ending(user, id, end),
            end.1,
            false,
            first,
        )
    });
    let mut moves: Vec<IndexMove> = Vec::new();
    for (id, to, to_by, ends_a_play, first) in ends.chain(upserted) {
        let loaded = before.sessions.get(id).map(|record| {
            let key = FinishedEntry::key_near(user, id, record, (&to, to_by));
            (key, record.is_active())
        });
        // A playing session's entry moves once, with the first of its ends; a play that
        // ended before keeps its entry, and the session's next play gets one of its own.
        let (from, loaded) = match loaded {
            Some((key, true)) if first => (Some(key), None),
            other => (None, other.map(|(key, _)| key)),
        };
        // An ended play's entry is written where it stays even when it is there already
        // (a store that held it apart, as sled does a playing session's, keeps it now).
        let in_place = match &from {
            Some(from) => *from == to && !ends_a_play,
            None => loaded.as_ref() == Some(&to) || moves.iter().any(|m| m.to == to),
        };
        if !in_place {
            moves.push(IndexMove { from, to });
        }
    }
    moves
}
