//! `heartbeat_data`: what a heartbeat token carries (SPEC §3.1).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::Timestamp;

/// Longest user id, asset id or session id accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// A user or asset id: a JSON integer or a JSON string, kept in its original type when the
/// token is re-issued.
///
/// ```
/// use heartbeat_core::Id;
///
/// let id: Id = serde_json::from_str("13")?;
/// assert_eq!(id, Id::Int(13));
/// assert_eq!(serde_json::to_string(&Id::from("movie/42"))?, r#""movie/42""#);
/// assert_eq!(Id::Int(13).to_string(), "13");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    /// A JSON integer.
    Int(i64),
    /// A JSON string (1 to [`MAX_ID_LEN`] bytes).
    Str(String),
}

impl Id {
    /// Reads an id from a JSON value: an integer, or a non-empty string of at most
    /// [`MAX_ID_LEN`] bytes.
    pub fn from_json(value: &Value) -> Result<Self, &'static str> {
        const EXPECTED: &str = "an integer or a non-empty string of at most 256 bytes";
        match value {
            Value::Number(n) => n.as_i64().map(Id::Int).ok_or(EXPECTED),
            Value::String(s) if !s.is_empty() && s.len() <= MAX_ID_LEN => Ok(Id::Str(s.clone())),
            _ => Err(EXPECTED),
        }
    }

    /// The id as a JSON value of its original type.
    pub fn to_json(&self) -> Value {
        match self {
            Id::Int(n) => Value::from(*n),
            Id::Str(s) => Value::from(s.as_str()),
        }
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id::Int(n)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::Str(s.to_owned())
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::Str(s)
    }
}

/// As JavaScript's template strings print it: `13`, `movie/42`. Used in storage keys.
impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(n) => write!(f, "{n}"),
            Id::Str(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(n) => write!(f, "{n}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Int(n) => serializer.serialize_i64(*n),
            Id::Str(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Id::from_json(&value).map_err(serde::de::Error::custom)
    }
}

/// Which sessions lose when a user is over the limit (SPEC §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RejectStrategy {
    /// Refuse the least recently started sessions: the newest streams keep playing and the
    /// oldest device is refused at its next heartbeat. The default.
    #[default]
    LeastRecent,
    /// Refuse the most recently started sessions: the oldest streams keep playing.
    MostRecent,
}

impl RejectStrategy {
    /// The wire name: `LEAST_RECENT` or `MOST_RECENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectStrategy::LeastRecent => "LEAST_RECENT",
            RejectStrategy::MostRecent => "MOST_RECENT",
        }
    }

    /// Reads a wire name; anything else is `None`.
    pub fn from_wire(name: &str) -> Option<Self> {
        match name {
            "LEAST_RECENT" => Some(RejectStrategy::LeastRecent),
            "MOST_RECENT" => Some(RejectStrategy::MostRecent),
            _ => None,
        }
    }
}

/// A length of time in seconds with a fraction, as tokens carry `heartbeat_cycle` and the
/// tolerances. Always finite and non-negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Seconds(f64);

impl Seconds {
    /// Zero seconds.
    pub const ZERO: Seconds = Seconds(0.0);

    /// `seconds`, if it is finite, non-negative and below ten years.
    pub fn new(seconds: f64) -> Option<Self> {
        const TEN_YEARS: f64 = 10.0 * 366.0 * 86_400.0;
        (seconds.is_finite() && (0.0..TEN_YEARS).contains(&seconds)).then_some(Seconds(seconds))
    }

    /// The value in seconds.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Whole milliseconds, rounded to nearest, as JavaScript's `seconds * 1000` compares.
    pub fn as_millis(self) -> i64 {
        // In range by construction: at most ten years of milliseconds.
        (self.0 * 1000.0).round() as i64
    }

    /// As a [`Duration`].
    pub fn as_duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }

    fn to_json(self) -> Value {
        // Whole numbers are written as integers, as JavaScript prints them.
        if self.0.fract() == 0.0 {
            Value::from(self.0 as i64)
        } else {
            Number::from_f64(self.0).map_or(Value::Null, Value::Number)
        }
    }
}

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
    /// When the token was issued.
    pub timestamp: Timestamp,
    /// When the session started; set by the server.
    pub started_at: Option<Timestamp>,
    /// Allowed parallel counted sessions.
    pub session_limit: u32,
    /// Heartbeats a session must have before it is counted.
    pub checking_threshold: u32,
    /// Most active sessions kept per user (anti-spam).
    pub sessions_edge: u32,
    /// Fields this crate does not know, carried into the re-issued token.
    pub extra: Map<String, Value>,
}

const KNOWN_FIELDS: [&str; 12] = [
    "user_id",
    "asset_id",
    "session_id",
    "heartbeat_cycle",
    "cycle_lower_tolerance",
    "cycle_upper_tolerance",
    "reject_strategy",
    "timestamp",
    "started_at",
    "session_limit",
    "checking_threshold",
    "sessions_edge",
];

impl HeartbeatData {
    /// The names of the fields this crate reads; any other field is kept in
    /// [`extra`](Self::extra).
    pub const FIELDS: [&'static str; 12] = KNOWN_FIELDS;

    /// The reject strategy in force: the token's, or [`RejectStrategy::LeastRecent`].
    pub fn strategy(&self) -> RejectStrategy {
        self.reject_strategy.unwrap_or_default()
    }

    /// True for a token made by the backend (no `session_id` yet).
    pub fn is_from_backend(&self) -> bool {
        self.session_id.is_none()
    }

    /// Reads heartbeat data from a JSON object, saying which field is wrong when it fails.
    pub fn from_json_object(mut object: Map<String, Value>) -> Result<Self, DataError> {
        let known = KNOWN_FIELDS.map(|field| object.remove(field));
        RawData {
            known,
            extra: object,
        }
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
    /// assert_eq!(HeartbeatData::from_json_slice(json)?.session_limit, 1);
    /// assert_eq!(HeartbeatData::from_json_slice(b"[1]"), Err(JsonDataError::NotAnObject));
    /// assert_eq!(HeartbeatData::from_json_slice(b"{"), Err(JsonDataError::NotJson));
    /// # Ok::<(), JsonDataError>(())
    /// ```
    pub fn from_json_slice(json: &[u8]) -> Result<Self, JsonDataError> {
        match serde_json::from_slice::<RawData>(json) {
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

    /// The data as a JSON object, unknown fields included.
    pub fn to_json_object(&self) -> Map<String, Value> {
        let mut object = self.extra.clone();
        object.insert("user_id".into(), self.user_id.to_json());
        object.insert("asset_id".into(), self.asset_id.to_json());
        if let Some(session_id) = &self.session_id {
            object.insert("session_id".into(), Value::from(session_id.as_str()));
        }
        object.insert("heartbeat_cycle".into(), self.heartbeat_cycle.to_json());
        object.insert(
            "cycle_lower_tolerance".into(),
            self.cycle_lower_tolerance.to_json(),
        );
        object.insert(
            "cycle_upper_tolerance".into(),
            self.cycle_upper_tolerance.to_json(),
        );
        if let Some(strategy) = self.reject_strategy {
            object.insert("reject_strategy".into(), Value::from(strategy.as_str()));
        }
        object.insert("timestamp".into(), Value::from(self.timestamp.to_string()));
        if let Some(started_at) = self.started_at {
            object.insert("started_at".into(), Value::from(started_at.to_string()));
        }
        object.insert("session_limit".into(), Value::from(self.session_limit));
        object.insert(
            "checking_threshold".into(),
            Value::from(self.checking_threshold),
        );
        object.insert("sessions_edge".into(), Value::from(self.sessions_edge));
        object
    }

    /// The longest a session of this token can stay active without a heartbeat:
    /// `heartbeat_cycle + cycle_upper_tolerance`, in milliseconds.
    pub fn session_life_millis(&self) -> i64 {
        self.heartbeat_cycle.as_millis() + self.cycle_upper_tolerance.as_millis()
    }
}

/// A known field's value, serialized without building a JSON tree first.
enum Known<'a> {
    Id(&'a Id),
    Str(&'a str),
    Seconds(Seconds),
    Time(Timestamp),
    Count(u32),
}

impl Serialize for Known<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Known::Id(Id::Int(n)) => serializer.serialize_i64(*n),
            Known::Id(Id::Str(text)) => serializer.serialize_str(text),
            Known::Str(text) => serializer.serialize_str(text),
            Known::Seconds(seconds) => seconds.to_json().serialize(serializer),
            Known::Time(at) => serializer.collect_str(at),
            Known::Count(n) => serializer.serialize_u32(*n),
        }
    }
}

impl Serialize for HeartbeatData {
    /// The same JSON as [`to_json_object`](Self::to_json_object) (keys in sorted order,
    /// known fields over unknown ones of the same name), written directly: sealing a token
    /// builds no intermediate map.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // In byte order of the keys, as a `serde_json::Map` keeps them.
        let known: [(&str, Option<Known<'_>>); 12] = [
            ("asset_id", Some(Known::Id(&self.asset_id))),
            (
                "checking_threshold",
                Some(Known::Count(self.checking_threshold)),
            ),
            (
                "cycle_lower_tolerance",
                Some(Known::Seconds(self.cycle_lower_tolerance)),
            ),
            (
                "cycle_upper_tolerance",
                Some(Known::Seconds(self.cycle_upper_tolerance)),
            ),
            (
                "heartbeat_cycle",
                Some(Known::Seconds(self.heartbeat_cycle)),
            ),
            (
                "reject_strategy",
                self.reject_strategy.map(|s| Known::Str(s.as_str())),
            ),
            ("session_id", self.session_id.as_deref().map(Known::Str)),
            ("session_limit", Some(Known::Count(self.session_limit))),
            ("sessions_edge", Some(Known::Count(self.sessions_edge))),
            ("started_at", self.started_at.map(Known::Time)),
            ("timestamp", Some(Known::Time(self.timestamp))),
            ("user_id", Some(Known::Id(&self.user_id))),
        ];
        let mut map = serializer.serialize_map(None)?;
        let mut extra = self.extra.iter().peekable();
        for (key, value) in &known {
            while let Some((extra_key, extra_value)) =
                extra.next_if(|(extra_key, _)| extra_key.as_str() < *key)
            {
                map.serialize_entry(extra_key, extra_value)?;
            }
            match value {
                Some(value) => {
                    // A known field wins over an unknown one of the same name.
                    extra.next_if(|(extra_key, _)| extra_key.as_str() == *key);
                    map.serialize_entry(key, value)?;
                }
                None => {
                    if let Some((extra_key, extra_value)) =
                        extra.next_if(|(extra_key, _)| extra_key.as_str() == *key)
                    {
                        map.serialize_entry(extra_key, extra_value)?;
                    }
                }
            }
        }
        for (extra_key, extra_value) in extra {
            map.serialize_entry(extra_key, extra_value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for HeartbeatData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawData::deserialize(deserializer)?
            .into_data()
            .map_err(serde::de::Error::custom)
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

/// One JSON object split into the values of the known fields (by their index in
/// [`KNOWN_FIELDS`]) and every other field.
struct RawData {
    known: [Option<Value>; KNOWN_FIELDS.len()],
    extra: Map<String, Value>,
}

impl RawData {
    /// Checks every known field; an unknown `reject_strategy` value goes back to `extra`,
    /// to be carried on as it came.
    fn into_data(self) -> Result<HeartbeatData, DataError> {
        let RawData {
            mut known,
            mut extra,
        } = self;
        let fields = Fields(&known);
        let reject_strategy = fields.reject_strategy();
        let data = HeartbeatData {
            user_id: fields.id("user_id")?,
            asset_id: fields.id("asset_id")?,
            session_id: fields.session_id()?,
            heartbeat_cycle: fields.cycle()?,
            cycle_lower_tolerance: fields.optional_seconds("cycle_lower_tolerance")?,
            cycle_upper_tolerance: fields.seconds("cycle_upper_tolerance")?,
            reject_strategy,
            timestamp: fields
                .timestamp("timestamp")?
                .ok_or(DataError::Missing { field: "timestamp" })?,
            started_at: fields.timestamp("started_at")?,
            session_limit: fields.count("session_limit")?,
            checking_threshold: fields.count("checking_threshold")?,
            sessions_edge: fields.count("sessions_edge")?,
            extra: Map::new(),
        };
        if reject_strategy.is_none()
            && let Some(value) = known[field_index("reject_strategy")].take()
        {
            extra.insert("reject_strategy".to_owned(), value);
        }
        Ok(HeartbeatData { extra, ..data })
    }
}

/// Where a known field's value sits in [`RawData::known`].
fn field_index(field: &'static str) -> usize {
    KNOWN_FIELDS
        .iter()
        .position(|known| *known == field)
        .unwrap_or_else(|| unreachable!("`{field}` is not in KNOWN_FIELDS"))
}

/// A field name: one of [`KNOWN_FIELDS`] (matched without copying) or any other.
enum FieldName {
    Known(usize),
    Other(String),
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl serde::de::Visitor<'_> for NameVisitor {
            type Value = FieldName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<FieldName, E> {
                Ok(match KNOWN_FIELDS.iter().position(|known| *known == name) {
                    Some(index) => FieldName::Known(index),
                    None => FieldName::Other(name.to_owned()),
                })
            }
        }
        deserializer.deserialize_identifier(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for RawData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> serde::de::Visitor<'de> for RawVisitor {
            type Value = RawData;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawData, A::Error> {
                let mut raw = RawData {
                    known: Default::default(),
                    extra: Map::new(),
                };
                // A repeated name keeps its last value, as `serde_json::Map` does.
                while let Some(name) = map.next_key::<FieldName>()? {
                    let value: Value = map.next_value()?;
                    match name {
                        FieldName::Known(index) => raw.known[index] = Some(value),
                        FieldName::Other(name) => {
                            raw.extra.insert(name, value);
                        }
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(RawVisitor)
    }
}

/// Field readers over the known fields' values; `null` counts as absent, as in
/// JavaScript's checks.
struct Fields<'a>(&'a [Option<Value>; KNOWN_FIELDS.len()]);

impl Fields<'_> {
    fn get(&self, field: &'static str) -> Option<&Value> {
        self.0[field_index(field)]
            .as_ref()
            .filter(|value| !value.is_null())
    }

    fn required(&self, field: &'static str) -> Result<&Value, DataError> {
        self.get(field).ok_or(DataError::Missing { field })
    }

    fn id(&self, field: &'static str) -> Result<Id, DataError> {
        Id::from_json(self.required(field)?)
            .map_err(|expected| DataError::Invalid { field, expected })
    }

    fn session_id(&self) -> Result<Option<String>, DataError> {
        match self.get("session_id") {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => Ok(Some(s.clone())),
            Some(_) => Err(DataError::Invalid {
                field: "session_id",
                expected: "a non-empty string of at most 256 bytes",
            }),
        }
    }

    fn seconds(&self, field: &'static str) -> Result<Seconds, DataError> {
        let invalid = DataError::Invalid {
            field,
            expected: "a non-negative number of seconds (a number or a numeric string)",
        };
        number(self.required(field)?)
            .and_then(Seconds::new)
            .ok_or(invalid)
    }

    fn optional_seconds(&self, field: &'static str) -> Result<Seconds, DataError> {
        match self.get(field) {
            None => Ok(Seconds::ZERO),
            Some(_) => self.seconds(field),
        }
    }

    fn cycle(&self) -> Result<Seconds, DataError> {
        let cycle = self.seconds("heartbeat_cycle")?;
        if cycle.get() > 0.0 {
            Ok(cycle)
        } else {
            Err(DataError::Invalid {
                field: "heartbeat_cycle",
                expected: "greater than zero",
            })
        }
    }

    fn count(&self, field: &'static str) -> Result<u32, DataError> {
        let invalid = DataError::Invalid {
            field,
            expected: "a whole number from 0 to 4294967295 (a number or a numeric string)",
        };
        let n = number(self.required(field)?).ok_or(invalid.clone())?;
        if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) {
            Ok(n as u32)
        } else {
            Err(invalid)
        }
    }

    fn timestamp(&self, field: &'static str) -> Result<Option<Timestamp>, DataError> {
        let invalid = DataError::Invalid {
            field,
            expected: "an ISO 8601 date-time like 2018-06-05T16:16:14.418Z",
        };
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => text.parse().map(Some).map_err(|_| invalid),
            Some(_) => Err(invalid),
        }
    }

    fn reject_strategy(&self) -> Option<RejectStrategy> {
        self.get("reject_strategy")
            .and_then(Value::as_str)
            .and_then(RejectStrategy::from_wire)
    }
}

/// A JSON number or a numeric string, as JavaScript's unary `+` reads it (trimmed, no hex).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let trimmed = s.trim();
            if trimmed.is_empty() || trimmed.len() > 64 {
                return None;
            }
            trimmed.parse::<f64>().ok().filter(|n| n.is_finite())
        }
        _ => None,
    }
}
