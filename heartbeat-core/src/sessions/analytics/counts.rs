//! Store-wide session counts for gauges.

use super::export::FEED_PAGE;
use super::{FinishedEntry, Index};
use crate::Clock;
use crate::sessions::{EndReason, Heartbeats, SessionStore};
use crate::store::StoreError;

/// How often [`Heartbeats::watch_sessions`] reports (on a store whose index reads are
/// [`Cheap`](super::IndexReads::Cheap)).
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`Heartbeats::watch_sessions`] saw since its last report, store-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// How the sessions that finished since the last report ended.
    pub ended: Vec<EndReason>,
    /// Active sessions of all users now.
    pub active: u64,
}

impl<S: SessionStore, C: Clock> Heartbeats<S, C> {
    /// Reports, every [`WATCH_INTERVAL`] until the future is dropped, how the sessions of
    /// all users that finished since the last report ended and how many are active: the
    /// figures behind the server's store-wide session metrics. Every instance sharing a
    /// store sees the same sessions. A failed round goes to `on_error` and the next one
    /// catches up.
    pub async fn watch_sessions(
        &self,
        mut report: impl FnMut(SessionCounts) + Send,
        mut on_error: impl FnMut(StoreError) + Send,
    ) {
        let mut after = self.settled_before(None);
        let mut tick = tokio::time::interval(self.store().index_reads().interval(WATCH_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let round = async {
                let before = self.settled_before(None);
                let mut ended = Vec::new();
                loop {
                    let keys = self
                        .store()
                        .index_range(Index::Finished, &after, &before, FEED_PAGE)
                        .await?;
                    let full = keys.len() == FEED_PAGE;
                    ended.extend(
                        keys.iter()
                            .filter_map(FinishedEntry::from_key)
                            .map(|e| e.ended_by),
                    );
                    if let Some(last) = keys.last() {
                        after = last.clone();
                    }
                    if !full {
                        break;
                    }
                }
                let active = self.active_session_count().await?;
                Ok::<_, StoreError>(SessionCounts { ended, active })
            };
            match round.await {
                Ok(counts) => report(counts),
                Err(error) => on_error(error),
            }
        }
    }
}
