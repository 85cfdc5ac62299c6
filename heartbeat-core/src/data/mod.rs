//! `heartbeat_data`: what a heartbeat token carries (SPEC §3.1).
//!
//! - [`Id`] (`id.rs`): user and asset ids;
//! - [`Seconds`] and [`RejectStrategy`] (`seconds.rs`);
//! - the compact form `v3.` tokens carry (`compact.rs`);
//! - the wire form (`wire.rs`): the known field names, the one serializer and the one
//!   reading path;
//! - here: [`HeartbeatData`], its errors and [`HeartbeatDataBuilder`] for backends.

mod builder;
mod compact;
mod id;
mod seconds;
mod wire;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use builder::HeartbeatDataBuilder;
pub use compact::CompactDataError;
pub use id::{Id, IdRef, MAX_ID_LEN};
pub use seconds::{RejectStrategy, Seconds};

use crate::Timestamp;

/// The longest `device` label, in characters (SPEC §3.1).
pub const MAX_DEVICE_LEN: usize = 64;
/// The longest `device_family`, in characters (SPEC §3.1).
pub const MAX_FAMILY_LEN: usize = 32;
/// The most device families one `family_limits` may name.
pub const MAX_FAMILIES: usize = 32;

/// A `heartbeat_data` field that is missing or has the wrong type or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The JSON is not an object.
    #[error("heartbeat data must be a JSON object")]
    NotAnObject,
    /// A required field is absent (or `null`).
    #[error("`{field}` is missing")]
    Missing {
        /// The field's name.
        field: &'static str,
    },
    /// A field has the wrong type or an impossible value.
    #[error("`{field}` must be {expected}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What the field must be.
        expected: &'static str,
    },
}

/// What a heartbeat token carries (SPEC §3.1).
///
/// Numeric fields also accept numeric strings (`"3"`), ids keep their JSON type, and fields
/// this crate does not know are kept in [`extra`](Self::extra) and written back when the token
/// is re-issued.
///
/// ```
/// use heartbeat_core::{HeartbeatData, Id, RejectStrategy};
///
/// let data: HeartbeatData = serde_json::from_str(r#"{
///     "user_id": 13, "asset_id": "movie/14", "heartbeat_cycle": "3",
///     "cycle_upper_tolerance": 0.8, "timestamp": "2018-06-05T16:16:14.418Z",
///     "session_limit": 1, "checking_threshold": 3, "sessions_edge": 10,
///     "tenant": "acme"
/// }"#)?;
/// assert_eq!(data.user_id, Id::Int(13));
/// assert_eq!(data.heartbeat_cycle.get(), 3.0);
/// assert_eq!(data.strategy(), RejectStrategy::LeastRecent);
/// assert_eq!(data.extra["tenant"], "acme");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatData {
    /// The user.
    pub user_id: Id,
    /// What is being played.
    pub asset_id: Id,
    /// The session, set by the server; absent in tokens made by the backend.
    pub session_id: Option<String>,
    /// Period between heartbeats. Greater than zero.
    pub heartbeat_cycle: Seconds,
    /// How much earlier than the cycle a heartbeat may arrive.
    pub cycle_lower_tolerance: Seconds,
    /// How much later than the cycle a heartbeat may arrive.
    pub cycle_upper_tolerance: Seconds,
    /// Which sessions lose when over the limit; `None` when absent or unknown (then
    /// [`RejectStrategy::LeastRecent`] applies and an unknown value is kept in `extra`).
    pub reject_strategy: Option<RejectStrategy>,
    /// When the token was issued; `None` when absent or unreadable, which the Node server
    /// accepts (it never reads a backend token's timestamp; a session token without one
    /// starts a new session, as a replayed token does).
    pub timestamp: Option<Timestamp>,
    /// When the session started; set by the server.
    pub started_at: Option<Timestamp>,
    /// Allowed parallel counted sessions; `None` (absent or `null`): no limit, as the
    /// Node server behaves.
    pub session_limit: Option<u32>,
    /// Heartbeats a session must have before it is counted; `None` counts as 0.
    pub checking_threshold: Option<u32>,
    /// Most active sessions kept per user (anti-spam); `None`: no edge.
    pub sessions_edge: Option<u32>,
    /// A label the backend gives the device ("Living-room TV"), shown to the user's other
    /// devices when one is refused (SPEC §3.7); at most [`MAX_DEVICE_LEN`] characters.
    pub device: Option<String>,
    /// The device's class for [`family_limits`](Self::family_limits) (`"tv"`,
    /// `"mobile"`…); at most [`MAX_FAMILY_LEN`] characters.
    pub device_family: Option<String>,
    /// Counted sessions allowed per device family (SPEC §3.8); a family not in the map is
    /// limited by `session_limit` alone.
    pub family_limits: Option<BTreeMap<String, u32>>,
    /// Counted sessions allowed on the same `asset_id` (SPEC §3.8); `None`: no such limit.
    pub asset_limit: Option<u32>,
    /// Whether the limits are enforced (SPEC §3.8 "Watch before you enforce"): `false`
    /// makes them report-only, so a heartbeat they would refuse is accepted and reported
    /// instead; `None` (absent): the server's setting
    /// ([`PlaybackPolicy::enforce_limits`](crate::sessions::rules::PlaybackPolicy::enforce_limits)).
    pub enforce: Option<bool>,
    /// Whether the session these data belong to was begun with an authenticated token
    /// (SPEC §3.3). [`TokenCodec::open`](crate::TokenCodec::open) sets it to
    /// [`Provenance::Legacy`] for every legacy token; a sealed token carries it inside
    /// (`"provenance": "legacy"`), so a session begun with a forgeable token stays
    /// unauthenticated through every token the server answers it with.
    pub provenance: Provenance,
    /// Fields this crate does not know, carried into the re-issued token.
    pub extra: Map<String, Value>,
}

impl HeartbeatData {
    /// The reject strategy in force: the token's, or [`RejectStrategy::LeastRecent`].
    pub fn strategy(&self) -> RejectStrategy {
        self.reject_strategy.unwrap_or_default()
    }

    /// True for a token made by the backend (no `session_id` yet).
    pub fn is_from_backend(&self) -> bool {
        self.session_id.is_none()
    }

    /// Heartbeats a session must have before it is counted (absent: 0).
    pub fn threshold(&self) -> u32 {
        self.checking_threshold.unwrap_or(0)
    }

    /// The longest a session of this token can stay active without a heartbeat:
    /// `heartbeat_cycle + cycle_upper_tolerance`, in milliseconds.
    pub fn session_life_millis(&self) -> i64 {
        self.heartbeat_cycle.as_millis() + self.cycle_upper_tolerance.as_millis()
    }
}

/// Where a session's tokens come from (SPEC §3.3 "Provenance").
///
/// Only a token the backend minted in an authenticated format (`v2.`, `b1.`) begins an
/// [`Authenticated`](Self::Authenticated) session. A legacy (CryptoJS) token can be forged
/// by flipping bits, so a session it begins is [`Legacy`](Self::Legacy) for its whole
/// life, whatever format the server answers it in: such a session is never shown the
/// user's other devices, cannot take one over and cannot follow its notice stream.
///
/// ```
/// use heartbeat_core::{HeartbeatData, Provenance, TokenCodec, TokenFormat};
///
/// let data = HeartbeatData::builder(13, 14).build()?;
/// let codec = TokenCodec::new("shared key")?;
/// let legacy = codec.clone().issuing(TokenFormat::Legacy).seal(&data)?;
/// let opened = codec.open(&legacy)?;
/// assert_eq!(opened.provenance, Provenance::Legacy);
/// // Re-sealed as v2 by the server, it stays unauthenticated.
/// assert_eq!(codec.open(&codec.seal(&opened)?)?.provenance, Provenance::Legacy);
/// assert_eq!(codec.open(&codec.seal(&data)?)?.provenance, Provenance::Authenticated);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Provenance {
    /// Begun with a token the backend minted in an authenticated format.
    #[default]
    Authenticated,
    /// Begun with a legacy token, which anyone can forge.
    Legacy,
}

impl Provenance {
    /// True for [`Provenance::Authenticated`].
    pub fn is_authenticated(self) -> bool {
        self == Provenance::Authenticated
    }

    /// The value of the `provenance` field written into sealed tokens (none when
    /// authenticated: the field is absent).
    pub(crate) fn wire_name(self) -> Option<&'static str> {
        match self {
            Provenance::Authenticated => None,
            Provenance::Legacy => Some("legacy"),
        }
    }
}

/// Why JSON text is not heartbeat data ([`HeartbeatData::from_json_slice`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonDataError {
    /// Not UTF-8 JSON, or JSON followed by more than whitespace.
    #[error("not UTF-8 JSON")]
    NotJson,
    /// JSON, but not an object.
    #[error("heartbeat data must be a JSON object")]
    NotAnObject,
    /// An object that is not valid heartbeat data.
    #[error(transparent)]
    Data(DataError),
}
