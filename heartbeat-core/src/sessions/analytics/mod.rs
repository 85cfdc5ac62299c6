//! Play history for analysts (SPEC §3.9): the two ordered indexes that the bulk export
//! and the live feed read, and the pure rules that keep them.
//!
//! - The **finished index** holds one entry per session, keyed by when the session ends:
//!   its `expires_at` while it is active (the instant it ends as `expired` if no heartbeat
//!   comes), its `ended_at` once it is stopped or evicted. Every write that changes a
//!   session moves its entry in the same atomic step as the history, so the entries at or
//!   before `now` are exactly the finished sessions, in the order they finished, with no
//!   sweeper and no later visit of the user; the ones after `now` are the active sessions.
//! - The **refusal index** holds one entry per refused heartbeat, and per heartbeat a
//!   report-only limit would have refused (SPEC §3.8; marked `enforced: false`).
//!
//! Entries are [`IndexKey`]s: strings that sort by time first, so that every store keeps
//! them in one ordered structure (a Redis sorted set read by lexical range, a sled key
//! range, a `BTreeSet`) and pages through them without a scan.

mod counts;
mod export;
mod index;

pub use counts::{SessionCounts, WATCH_INTERVAL};
pub use export::{Export, ExportItem, ExportPage, FEED_POLL, FeedEvent, FinishedSession};
pub use index::{
    FinishedEntry, Index, IndexKey, IndexMove, IndexReads, IndexWrite, InvalidCursor, RefusalEntry,
    RefusalRecord, SETTLE_MILLIS, user_id,
};
