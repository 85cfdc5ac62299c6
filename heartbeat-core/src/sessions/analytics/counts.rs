//! Store-wide session counts for gauges.

use crate::sessions::EndReason;

/// How often [`Heartbeats::watch_sessions`](crate::Heartbeats::watch_sessions) reports (on a store whose index reads are
/// [`Cheap`](super::IndexReads::Cheap)).
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`Heartbeats::watch_sessions`](crate::Heartbeats::watch_sessions) saw since its last report, store-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// How the sessions that finished since the last report ended.
    pub ended: Vec<EndReason>,
    /// Active sessions of all users now.
    pub active: u64,
}
