//! `heartbeat_data`: what a heartbeat token carries (SPEC §3.1).
//!
//! - [`Id`] (`id.rs`): user and asset ids;
//! - [`Seconds`] and [`RejectStrategy`] (`seconds.rs`);
//! - the wire form (`wire.rs`): the known field names, the one serializer and the one
//!   reading path;
//! - here: [`HeartbeatData`], its errors and [`HeartbeatDataBuilder`] for backends.

mod id;
mod seconds;
mod wire;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use id::{Id, MAX_ID_LEN};
pub use seconds::{RejectStrategy, Seconds};
use wire::{Field, RawData};

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
    /// The names of the fields this crate reads; any other field is kept in
    /// [`extra`](Self::extra).
    pub const FIELDS: [&'static str; 18] = Field::NAMES;

    /// The reject strategy in force: the token's, or [`RejectStrategy::LeastRecent`].
    pub fn strategy(&self) -> RejectStrategy {
        self.reject_strategy.unwrap_or_default()
    }

    /// True for a token made by the backend (no `session_id` yet).
    pub fn is_from_backend(&self) -> bool {
        self.session_id.is_none()
    }

    /// Reads heartbeat data from a JSON object, saying which field is wrong when it fails.
    pub fn from_json_object(object: Map<String, Value>) -> Result<Self, DataError> {
        // The same reading path as JSON text: serde over the object.
        RawData::deserialize(Value::Object(object))
            .map_err(|_| DataError::NotAnObject)?
            .into_data()
    }

    /// Reads heartbeat data straight from JSON text, as a token's plaintext holds it:
    /// the same rules as [`from_json_object`](Self::from_json_object) without building the
    /// whole object first (known field names are matched, not copied).
    ///
    /// ```
    /// use heartbeat_core::{HeartbeatData, JsonDataError};
    ///
    /// let json = br#"{"user_id": 13, "asset_id": 14, "heartbeat_cycle": 3,
    ///     "cycle_upper_tolerance": 1, "timestamp": "2018-06-05T16:16:14.418Z",
    ///     "session_limit": 1, "checking_threshold": 3, "sessions_edge": 10}"#;
    /// assert_eq!(HeartbeatData::from_json_slice(json)?.session_limit, Some(1));
    /// assert_eq!(HeartbeatData::from_json_slice(b"[1]"), Err(JsonDataError::NotAnObject));
    /// assert_eq!(HeartbeatData::from_json_slice(b"{"), Err(JsonDataError::NotJson));
    /// # Ok::<(), JsonDataError>(())
    /// ```
    pub fn from_json_slice(json: &[u8]) -> Result<Self, JsonDataError> {
        match serde_json::from_slice::<RawData<'_>>(json) {
            Ok(raw) => raw.into_data().map_err(JsonDataError::Data),
            // A type error stops at the first byte: is the rest JSON at all?
            Err(error)
                if error.classify() == serde_json::error::Category::Data
                    && serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok() =>
            {
                Err(JsonDataError::NotAnObject)
            }
            Err(_) => Err(JsonDataError::NotJson),
        }
    }

    /// Reads heartbeat data from any JSON value; only an object can succeed.
    pub fn from_json(value: Value) -> Result<Self, DataError> {
        match value {
            Value::Object(object) => Self::from_json_object(object),
            _ => Err(DataError::NotAnObject),
        }
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

/// Builds the heartbeat data of a new playback, as a backend issues it (no `session_id`).
///
/// Every setter takes the value as the wire has it; [`build`](Self::build) checks them all
/// with the same rules as reading a token.
///
/// ```
/// use heartbeat_core::{HeartbeatData, RejectStrategy, TokenCodec};
///
/// let data = HeartbeatData::builder(13, "movie-14")
///     .cycle(30.0)
///     .upper_tolerance(10.0)
///     .session_limit(2)
///     .checking_threshold(1)
///     .strategy(RejectStrategy::MostRecent)
///     .extra("tenant", "acme")
///     .build()?;
/// assert!(data.is_from_backend());
/// assert_eq!(data.sessions_edge, Some(12));
/// let token = TokenCodec::new("shared key")?.seal(&data)?;
/// # let _ = token;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct HeartbeatDataBuilder {
    user_id: Id,
    asset_id: Id,
    cycle: f64,
    lower_tolerance: f64,
    upper_tolerance: f64,
    strategy: Option<RejectStrategy>,
    timestamp: Option<Timestamp>,
    session_limit: u32,
    checking_threshold: u32,
    sessions_edge: Option<u32>,
    device: Option<String>,
    device_family: Option<String>,
    family_limits: Option<BTreeMap<String, u32>>,
    asset_limit: Option<u32>,
    enforce: Option<bool>,
    extra: Map<String, Value>,
}

impl HeartbeatData {
    /// A builder for `user` playing `asset`, with the defaults of
    /// [`HeartbeatDataBuilder`]: a 30 s cycle, 10 s upper and 0 s lower tolerance, the
    /// default strategy, one session, counted from the first heartbeat, at most
    /// `session_limit + 10` sessions kept, issued now.
    pub fn builder(user: impl Into<Id>, asset: impl Into<Id>) -> HeartbeatDataBuilder {
        HeartbeatDataBuilder {
            user_id: user.into(),
            asset_id: asset.into(),
            cycle: 30.0,
            lower_tolerance: 0.0,
            upper_tolerance: 10.0,
            strategy: None,
            timestamp: None,
            session_limit: 1,
            checking_threshold: 1,
            sessions_edge: None,
            device: None,
            device_family: None,
            family_limits: None,
            asset_limit: None,
            enforce: None,
            extra: Map::new(),
        }
    }
}

impl HeartbeatDataBuilder {
    /// `heartbeat_cycle`: seconds between heartbeats (greater than zero).
    pub fn cycle(mut self, seconds: f64) -> Self {
        self.cycle = seconds;
        self
    }

    /// `cycle_lower_tolerance`: seconds a heartbeat may come early.
    pub fn lower_tolerance(mut self, seconds: f64) -> Self {
        self.lower_tolerance = seconds;
        self
    }

    /// `cycle_upper_tolerance`: seconds a heartbeat may come late.
    pub fn upper_tolerance(mut self, seconds: f64) -> Self {
        self.upper_tolerance = seconds;
        self
    }

    /// `reject_strategy`: which sessions lose over the limit.
    pub fn strategy(mut self, strategy: RejectStrategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// `timestamp`: when the token is issued (default: now).
    pub fn timestamp(mut self, at: Timestamp) -> Self {
        self.timestamp = Some(at);
        self
    }

    /// `session_limit`: counted sessions the user may play at once.
    pub fn session_limit(mut self, limit: u32) -> Self {
        self.session_limit = limit;
        self
    }

    /// `checking_threshold`: heartbeats a session needs before it counts.
    pub fn checking_threshold(mut self, threshold: u32) -> Self {
        self.checking_threshold = threshold;
        self
    }

    /// `sessions_edge`: most active sessions kept per user (default: the limit + 10).
    pub fn sessions_edge(mut self, edge: u32) -> Self {
        self.sessions_edge = Some(edge);
        self
    }

    /// `device`: the label the user's other devices see ("Living-room TV").
    pub fn device(mut self, label: impl Into<String>) -> Self {
        self.device = Some(label.into());
        self
    }

    /// `device_family`: the device's class for family limits (`"tv"`, `"mobile"`…).
    pub fn device_family(mut self, family: impl Into<String>) -> Self {
        self.device_family = Some(family.into());
        self
    }

    /// `family_limits`: counted sessions allowed per device family.
    pub fn family_limit(mut self, family: impl Into<String>, limit: u32) -> Self {
        self.family_limits
            .get_or_insert_with(BTreeMap::new)
            .insert(family.into(), limit);
        self
    }

    /// `asset_limit`: counted sessions allowed on the same asset.
    pub fn asset_limit(mut self, limit: u32) -> Self {
        self.asset_limit = Some(limit);
        self
    }

    /// `enforce`: `false` makes the limits report-only (SPEC §3.8); unset, the server's
    /// setting applies.
    pub fn enforce(mut self, enforce: bool) -> Self {
        self.enforce = Some(enforce);
        self
    }

    /// A field of the backend's own, carried into every re-issued token.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// The data.
    ///
    /// # Errors
    ///
    /// [`DataError::Invalid`] naming the first field whose value is not allowed (a cycle
    /// that is not above zero, a negative or infinite tolerance, a string id that is
    /// empty or longer than [`MAX_ID_LEN`] bytes).
    pub fn build(self) -> Result<HeartbeatData, DataError> {
        let seconds = |field: Field, value: f64| {
            Seconds::new(value).ok_or(DataError::Invalid {
                field: field.name(),
                expected: "a non-negative number of seconds",
            })
        };
        let heartbeat_cycle = seconds(Field::HeartbeatCycle, self.cycle)?;
        if heartbeat_cycle.get() <= 0.0 {
            return Err(DataError::Invalid {
                field: Field::HeartbeatCycle.name(),
                expected: "greater than zero",
            });
        }
        for (field, id) in [
            (Field::UserId, &self.user_id),
            (Field::AssetId, &self.asset_id),
        ] {
            Id::from_json(&id.to_json()).map_err(|expected| DataError::Invalid {
                field: field.name(),
                expected,
            })?;
        }
        for (field, label, max_chars) in [
            (Field::Device, &self.device, MAX_DEVICE_LEN),
            (Field::DeviceFamily, &self.device_family, MAX_FAMILY_LEN),
        ] {
            let value = label.clone().map(Value::String);
            wire::check_label(field, value.as_ref(), max_chars)?;
        }
        let family_limits = self.family_limits.map(|limits| {
            limits
                .into_iter()
                .map(|(family, limit)| (family, Value::from(limit)))
                .collect::<Map<_, _>>()
        });
        let family_limits = wire::check_family_limits(family_limits.map(Value::Object).as_ref())?;
        let mut extra = self.extra;
        for name in HeartbeatData::FIELDS {
            extra.remove(name);
        }
        Ok(HeartbeatData {
            user_id: self.user_id,
            asset_id: self.asset_id,
            session_id: None,
            heartbeat_cycle,
            cycle_lower_tolerance: seconds(Field::CycleLowerTolerance, self.lower_tolerance)?,
            cycle_upper_tolerance: seconds(Field::CycleUpperTolerance, self.upper_tolerance)?,
            reject_strategy: self.strategy,
            timestamp: Some(self.timestamp.unwrap_or_else(Timestamp::now)),
            started_at: None,
            session_limit: Some(self.session_limit),
            checking_threshold: Some(self.checking_threshold),
            sessions_edge: Some(
                self.sessions_edge
                    .unwrap_or_else(|| self.session_limit.saturating_add(10)),
            ),
            device: self.device,
            device_family: self.device_family,
            family_limits,
            asset_limit: self.asset_limit,
            enforce: self.enforce,
            provenance: Provenance::Authenticated,
            extra,
        })
    }
}
