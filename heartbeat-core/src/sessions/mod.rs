//! The session side (SPEC §3): limit how many streams a user plays at once, remember
//! where they stopped, keep their play history.
//!
//! - [`Heartbeats`] (`service.rs`, `watch.rs`): codec + rules + store, the use cases;
//! - [`rules`]: the decision rules as pure functions of (now, token, stored sessions);
//! - [`SessionWrite`] (`write.rs`): the one change a use case makes, built by the rules
//!   and completed for the store in one place;
//! - records (`record.rs`): what is stored: sessions, progress, history;
//! - [`SessionStore`] and its capabilities (`store.rs`): what a store must do;
//! - [`notice`]: "your session ended" notices (SPEC §3.7);
//! - [`analytics`]: the indexes the export and the live feed read (SPEC §3.9), pure; the
//!   reads through `Heartbeats` are in `feed.rs`.

pub mod analytics;
mod feed;
pub mod notice;
mod reason;
mod record;
pub mod rules;
mod service;
mod store;
mod watch;
mod write;

pub use notice::{EndedBy, NoticeReason, SessionEnded, SessionNotice};
pub use reason::RejectReason;
pub use record::{
    AnsweredToken, EndReason, PlayRecord, ProgressRecord, Retention, SessionMap, SessionRecord,
    UNKNOWN_SESSION_LIFE_MILLIS, UserSessions, WouldRefuse,
};
pub use rules::{Accepted, Decision, NewSessionCause, PlayingSession, Refused, Verdict};
pub use service::{
    ActiveSession, DEFAULT_GONE_GRACE, DEFAULT_MAX_ATTEMPTS, HeartbeatConfig, HeartbeatError,
    HeartbeatOutcome, Heartbeats,
};
pub use store::{AnalyticsStore, Loaded, NoticeBus, SessionStore};
pub use watch::{NoticeStream, StreamRelease};
pub use write::{SessionWrite, finished_moves};
