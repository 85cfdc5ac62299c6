//! Pushed notices to players (SPEC §3.7): "your session was ended, and why".
//!
//! The decision rules say who is told ([`decision::displaced`](crate::sessions::rules::displaced),
//! [`decision::take_over`](crate::sessions::rules::take_over), evictions); a [`SessionStore`]
//! carries the notice to the streams watching that session on every instance that shares
//! it ([`NoticeBus::notify`], [`NoticeBus::watch`]), through a
//! [`Fanout`](crate::live::Fanout) per process.
//!
//! [`SessionStore`]: crate::SessionStore
//! [`NoticeBus::notify`]: crate::sessions::NoticeBus::notify
//! [`NoticeBus::watch`]: crate::sessions::NoticeBus::watch

use serde::{Deserialize, Serialize};

use crate::Id;
use crate::live::Routed;

/// Why a watched session ended, as `event: ended` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoticeReason {
    /// An administrator evicted it.
    Evicted,
    /// Another device of the user took it over.
    TakenOver,
    /// A newer device took the last slot under the limits (`LEAST_RECENT`), or a session
    /// ranked before it became counted.
    Displaced,
    /// Its player stopped it (`POST /heartbeat/stop`, or another device with its token):
    /// its streams close at once, without an event.
    Stopped,
}

impl NoticeReason {
    /// The name on the wire: `evicted`, `taken_over`, `displaced`, `stopped` (never sent
    /// to a player: the stream closes).
    pub fn code(self) -> &'static str {
        match self {
            NoticeReason::Evicted => "evicted",
            NoticeReason::TakenOver => "taken_over",
            NoticeReason::Displaced => "displaced",
            NoticeReason::Stopped => "stopped",
        }
    }
}

/// The session that caused the end, when one did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedBy {
    /// Its id.
    pub session_id: String,
    /// Its device's label, when its token named one.
    pub device: Option<String>,
}

/// `event: ended`: the data a watched session's stream sends before it closes.
///
/// ```
/// use heartbeat_core::sessions::notice::{EndedBy, NoticeReason, SessionEnded};
///
/// let ended = SessionEnded {
///     session_id: "tablet-session".into(),
///     reason: NoticeReason::TakenOver,
///     by: Some(EndedBy { session_id: "phone-session".into(), device: Some("Phone".into()) }),
/// };
/// assert_eq!(
///     serde_json::to_string(&ended).unwrap(),
///     r#"{"session_id":"tablet-session","reason":"taken_over","by":{"session_id":"phone-session","device":"Phone"}}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnded {
    /// The session that ended.
    pub session_id: String,
    /// Why.
    pub reason: NoticeReason,
    /// Who ended it; `null` for an eviction (and for a displacement seen only later).
    pub by: Option<EndedBy>,
}

/// A [`SessionEnded`] on its way to the streams of one user's session: what stores carry
/// between instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionNotice {
    /// The session's user.
    pub user_id: Id,
    /// The notice.
    pub ended: SessionEnded,
}

impl Routed for SessionNotice {
    type Key = (Id, String);
    /// A session ends once: a watcher needs one slot (and re-reads the session if it ever
    /// lags). Every watched session has its own channel, so this is memory per stream.
    const BUFFER: usize = 2;
    fn route(&self) -> (Id, String) {
        (self.user_id.clone(), self.ended.session_id.clone())
    }
}

impl crate::live::Fanout<SessionNotice> {
    /// The live notices of one session ([`NoticeBus::watch`] of a store whose process
    /// sees every write, or the receiving end of one that carries notices between
    /// instances).
    ///
    /// [`NoticeBus::watch`]: crate::sessions::NoticeBus::watch
    pub fn watch(&self, user: &Id, session_id: &str) -> crate::live::LiveStream<SessionNotice> {
        self.subscribe(&(user.clone(), session_id.to_owned()))
    }
}
