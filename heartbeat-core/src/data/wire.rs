//! The wire form of [`HeartbeatData`]: one list of the known fields ([`Field`]), one
//! serializer and one reading path (serde, whether from JSON text or a
//! [`serde_json::Value`]), with the field checks of SPEC §3.1.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{
    DataError, HeartbeatData, Id, JsonDataError, MAX_DEVICE_LEN, MAX_FAMILIES, MAX_FAMILY_LEN,
    MAX_ID_LEN, Provenance, RejectStrategy, Seconds,
};
use crate::{Timestamp, json};

/// Defines [`Field`] from one table of variants and wire names, in byte order of the
/// names: the one place the names are written.
macro_rules! fields {
    ($($variant:ident => $name:literal,)*) => {
        /// A field [`HeartbeatData`] knows. The variants are in byte order of their names:
        /// the order in which the serializer writes them (and `serde_json::Map` keeps keys).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Field {
            $($variant,)*
        }

        impl Field {
            /// Every known field, in the order of their names.
            pub(crate) const ALL: [Field; FIELD_COUNT] = [$(Field::$variant,)*];

            /// The field's name on the wire.
            pub(crate) const fn name(self) -> &'static str {
                match self {
                    $(Field::$variant => $name,)*
                }
            }

            /// The field named `name`, if it is a known one (a `match`: the compiler
            /// dispatches on the length first).
            fn from_name(name: &str) -> Option<Field> {
                match name {
                    $($name => Some(Field::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

fields! {
    AssetId => "asset_id",
    AssetLimit => "asset_limit",
    CheckingThreshold => "checking_threshold",
    CycleLowerTolerance => "cycle_lower_tolerance",
    CycleUpperTolerance => "cycle_upper_tolerance",
    Device => "device",
    DeviceFamily => "device_family",
    Enforce => "enforce",
    FamilyLimits => "family_limits",
    HeartbeatCycle => "heartbeat_cycle",
    Provenance => "provenance",
    RejectStrategy => "reject_strategy",
    SessionId => "session_id",
    SessionLimit => "session_limit",
    SessionsEdge => "sessions_edge",
    StartedAt => "started_at",
    Timestamp => "timestamp",
    UserId => "user_id",
}

/// How many fields are known.
pub(crate) const FIELD_COUNT: usize = 18;

impl Field {
    /// The names of every known field, in order.
    pub(crate) const NAMES: [&'static str; FIELD_COUNT] = {
        let mut names = [""; FIELD_COUNT];
        let mut i = 0;
        while i < FIELD_COUNT {
            names[i] = Field::ALL[i].name();
            i += 1;
        }
        names
    };
}

/// A known field's value, serialized without building a JSON tree first.
enum Known<'a> {
    Id(&'a Id),
    Str(&'a str),
    Seconds(Seconds),
    Time(Timestamp),
    Count(u32),
    Flag(bool),
    Limits(&'a BTreeMap<String, u32>),
}

impl Serialize for Known<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Known::Id(id) => id.serialize(serializer),
            Known::Str(text) => serializer.serialize_str(text),
            Known::Seconds(seconds) => seconds.to_json().serialize(serializer),
            Known::Time(at) => at.serialize(serializer),
            Known::Count(n) => serializer.serialize_u32(*n),
            Known::Flag(flag) => serializer.serialize_bool(*flag),
            Known::Limits(limits) => limits.serialize(serializer),
        }
    }
}

impl HeartbeatData {
    /// The names of the fields this crate reads; any other field is kept in
    /// [`extra`](Self::extra).
    pub const FIELDS: [&'static str; 18] = Field::NAMES;

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
}

impl HeartbeatData {
    /// The value of a known field, `None` when the data has none.
    fn known(&self, field: Field) -> Option<Known<'_>> {
        match field {
            Field::AssetId => Some(Known::Id(&self.asset_id)),
            Field::AssetLimit => self.asset_limit.map(Known::Count),
            Field::CheckingThreshold => self.checking_threshold.map(Known::Count),
            Field::CycleLowerTolerance => Some(Known::Seconds(self.cycle_lower_tolerance)),
            Field::CycleUpperTolerance => Some(Known::Seconds(self.cycle_upper_tolerance)),
            Field::Device => self.device.as_deref().map(Known::Str),
            Field::DeviceFamily => self.device_family.as_deref().map(Known::Str),
            Field::Enforce => self.enforce.map(Known::Flag),
            Field::FamilyLimits => self.family_limits.as_ref().map(Known::Limits),
            Field::HeartbeatCycle => Some(Known::Seconds(self.heartbeat_cycle)),
            Field::Provenance => self.provenance.wire_name().map(Known::Str),
            Field::RejectStrategy => self.reject_strategy.map(|s| Known::Str(s.as_str())),
            Field::SessionId => self.session_id.as_deref().map(Known::Str),
            Field::SessionLimit => self.session_limit.map(Known::Count),
            Field::SessionsEdge => self.sessions_edge.map(Known::Count),
            Field::StartedAt => self.started_at.map(Known::Time),
            Field::Timestamp => self.timestamp.map(Known::Time),
            Field::UserId => Some(Known::Id(&self.user_id)),
        }
    }
}

/// One entry of the data's JSON object.
enum Entry<'a> {
    Known(Field, Known<'a>),
    Extra(&'a str, &'a Value),
}

impl HeartbeatData {
    /// Calls `f` with each entry of the JSON object in the order they are written: keys in
    /// sorted order, the known fields and the unknown ones
    /// ([`extra`](HeartbeatData::extra)) but where a known field of the same name has a
    /// value (the known one wins). The one place that order is decided.
    fn for_each_entry<E>(&self, mut f: impl FnMut(Entry<'_>) -> Result<(), E>) -> Result<(), E> {
        let mut extra = self.extra.iter().peekable();
        for field in Field::ALL {
            let name = field.name();
            while let Some((key, value)) = extra.next_if(|(key, _)| key.as_str() < name) {
                f(Entry::Extra(key, value))?;
            }
            let shadowed = extra.next_if(|(key, _)| key.as_str() == name);
            match (self.known(field), shadowed) {
                (Some(known), _) => f(Entry::Known(field, known))?,
                (None, Some((key, value))) => f(Entry::Extra(key, value))?,
                (None, None) => {}
            }
        }
        extra.try_for_each(|(key, value)| f(Entry::Extra(key, value)))
    }

    /// The data as JSON text: the bytes `serde_json::to_vec` writes, written directly
    /// (sealing a token builds no map and runs no generic escaper over text that needs
    /// none).
    ///
    /// ```
    /// use heartbeat_core::HeartbeatData;
    /// let data = HeartbeatData::builder(13, 14).cycle(30.0).build().unwrap();
    /// assert_eq!(data.to_json_vec(), serde_json::to_vec(&data).unwrap());
    /// ```
    pub fn to_json_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(384);
        out.push(b'{');
        let mut first = true;
        let written: Result<(), std::convert::Infallible> = self.for_each_entry(|entry| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            match entry {
                Entry::Known(field, value) => {
                    out.push(b'"');
                    out.extend_from_slice(field.name().as_bytes());
                    out.extend_from_slice(b"\":");
                    value.write_json(&mut out);
                }
                Entry::Extra(key, value) => {
                    json::write_str(&mut out, key);
                    out.push(b':');
                    write_value(&mut out, value);
                }
            }
            Ok(())
        });
        let Ok(()) = written;
        out.push(b'}');
        out
    }
}

impl Known<'_> {
    /// Appends the value as JSON, the bytes its `Serialize` gives.
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Known::Id(Id::Int(n)) => json::write_int(out, *n),
            Known::Id(Id::Str(text)) => json::write_str(out, text),
            Known::Str(text) => json::write_str(out, text),
            Known::Seconds(seconds) => write_value(out, &seconds.to_json()),
            Known::Time(at) => {
                out.push(b'"');
                out.extend_from_slice(&at.iso_bytes());
                out.push(b'"');
            }
            Known::Count(n) => json::write_int(out, *n),
            Known::Flag(flag) => out.extend_from_slice(if *flag { b"true" } else { b"false" }),
            Known::Limits(limits) => {
                out.push(b'{');
                for (index, (family, limit)) in limits.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    json::write_str(out, family);
                    out.push(b':');
                    json::write_int(out, *limit);
                }
                out.push(b'}');
            }
        }
    }
}

/// Appends any JSON value: integers and strings directly, the rest through serde_json.
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Number(n) if let Some(i) = n.as_i64() => json::write_int(out, i),
        Value::String(text) => json::write_str(out, text),
        // Writing into a `Vec` cannot fail, and a `Value` always serializes.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

impl Serialize for HeartbeatData {
    /// A JSON object with keys in sorted order (see [`HeartbeatData::to_json_vec`], which
    /// writes the same bytes directly).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        self.for_each_entry(|entry| match entry {
            Entry::Known(field, known) => map.serialize_entry(field.name(), &known),
            Entry::Extra(key, value) => map.serialize_entry(key, value),
        })?;
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

/// One JSON object split into the values of the known fields (by [`Field`]) and every
/// other field: what every way of reading heartbeat data goes through.
pub(crate) struct RawData<'de> {
    known: [Option<RawValue<'de>>; FIELD_COUNT],
    extra: Map<String, Value>,
}

impl RawData<'_> {
    /// Checks every known field; an unknown `reject_strategy` value goes back to `extra`,
    /// to be carried on as it came.
    pub(crate) fn into_data(self) -> Result<HeartbeatData, DataError> {
        let RawData {
            mut known,
            mut extra,
        } = self;
        let fields = Fields(&known);
        let reject_strategy = fields.reject_strategy();
        let data = HeartbeatData {
            user_id: fields.id(Field::UserId)?,
            asset_id: fields.id(Field::AssetId)?,
            session_id: fields.session_id()?,
            heartbeat_cycle: fields.cycle()?,
            cycle_lower_tolerance: fields.optional_seconds(Field::CycleLowerTolerance)?,
            cycle_upper_tolerance: fields.seconds(Field::CycleUpperTolerance)?,
            reject_strategy,
            timestamp: fields.lenient_timestamp(Field::Timestamp),
            started_at: fields.timestamp(Field::StartedAt)?,
            session_limit: fields.count(Field::SessionLimit)?,
            checking_threshold: fields.count(Field::CheckingThreshold)?,
            sessions_edge: fields.count(Field::SessionsEdge)?,
            device: fields.label(Field::Device, MAX_DEVICE_LEN)?,
            device_family: fields.label(Field::DeviceFamily, MAX_FAMILY_LEN)?,
            family_limits: fields.family_limits()?,
            asset_limit: fields.count(Field::AssetLimit)?,
            enforce: fields.flag(Field::Enforce)?,
            provenance: fields.provenance()?,
            extra: Map::new(),
        };
        if reject_strategy.is_none()
            && let Some(value) = known[Field::RejectStrategy as usize].take()
        {
            extra.insert(Field::RejectStrategy.name().to_owned(), value.into_value());
        }
        Ok(HeartbeatData { extra, ..data })
    }
}

/// A known field's value as read: text borrowed from the JSON where it has no escapes
/// (copied once, when a field keeps it), any other value as a [`Value`].
enum RawValue<'de> {
    Text(Cow<'de, str>),
    Other(Value),
}

impl RawValue<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            RawValue::Text(text) => Some(text),
            RawValue::Other(value) => value.as_str(),
        }
    }

    /// As a [`Value`], for the checks written over values and for `extra`.
    fn into_value(self) -> Value {
        match self {
            RawValue::Text(text) => Value::String(text.into_owned()),
            RawValue::Other(value) => value,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            RawValue::Text(text) => Value::String(text.to_string()),
            RawValue::Other(value) => value.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for RawValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        use serde::de::{MapAccess, SeqAccess};

        /// Reads as `Value` does, but text is borrowed where it can be.
        struct ValueVisitor;
        impl<'de> serde::de::Visitor<'de> for ValueVisitor {
            type Value = RawValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<RawValue<'de>, E> {
                Ok(RawValue::Text(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<RawValue<'de>, E> {
                Ok(RawValue::Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<RawValue<'de>, E> {
                Ok(RawValue::Text(Cow::Owned(text)))
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawValue<'de>, E> {
                Ok(RawValue::Other(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<RawValue<'de>, E> {
                Ok(RawValue::Other(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<RawValue<'de>, E> {
                Ok(RawValue::Other(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<RawValue<'de>, E> {
                // As `Value` reads it: a number that JSON cannot hold is `null`.
                Ok(RawValue::Other(Value::from(n)))
            }
            fn visit_unit<E>(self) -> Result<RawValue<'de>, E> {
                Ok(RawValue::Other(Value::Null))
            }
            fn visit_none<E>(self) -> Result<RawValue<'de>, E> {
                Ok(RawValue::Other(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue<'de>, D::Error> {
                RawValue::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawValue<'de>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(RawValue::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawValue<'de>, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(RawValue::Other)
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// A field name: a known one (matched without copying) or any other.
enum FieldName {
    Known(Field),
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
                Ok(Field::from_name(name)
                    .map_or_else(|| FieldName::Other(name.to_owned()), FieldName::Known))
            }
        }
        deserializer.deserialize_identifier(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for RawData<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> serde::de::Visitor<'de> for RawVisitor {
            type Value = RawData<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawData<'de>, A::Error> {
                let mut raw = RawData {
                    known: Default::default(),
                    extra: Map::new(),
                };
                // A repeated name keeps its last value, as `serde_json::Map` does.
                while let Some(name) = map.next_key::<FieldName>()? {
                    match name {
                        FieldName::Known(field) => {
                            raw.known[field as usize] = Some(map.next_value()?);
                        }
                        FieldName::Other(name) => {
                            raw.extra.insert(name, map.next_value()?);
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
struct Fields<'a, 'de>(&'a [Option<RawValue<'de>>; FIELD_COUNT]);

impl Fields<'_, '_> {
    fn get(&self, field: Field) -> Option<&RawValue<'_>> {
        self.0[field as usize]
            .as_ref()
            .filter(|value| !matches!(value, RawValue::Other(Value::Null)))
    }

    fn required(&self, field: Field) -> Result<&RawValue<'_>, DataError> {
        self.get(field).ok_or(DataError::Missing {
            field: field.name(),
        })
    }

    fn id(&self, field: Field) -> Result<Id, DataError> {
        match self.required(field)? {
            RawValue::Text(text) => Id::from_text(text),
            RawValue::Other(value) => Id::from_json(value),
        }
        .map_err(invalid(field))
    }

    fn session_id(&self) -> Result<Option<String>, DataError> {
        self.get(Field::SessionId)
            .map(|value| session_id(value.as_str()))
            .transpose()
    }

    fn seconds(&self, field: Field) -> Result<Seconds, DataError> {
        seconds(field, raw_number(self.required(field)?))
    }

    fn optional_seconds(&self, field: Field) -> Result<Seconds, DataError> {
        match self.get(field) {
            None => Ok(Seconds::ZERO),
            Some(_) => self.seconds(field),
        }
    }

    fn cycle(&self) -> Result<Seconds, DataError> {
        cycle(self.seconds(Field::HeartbeatCycle)?)
    }

    /// An optional count: absent or `null` is `None` (no limit, as in the Node server).
    fn count(&self, field: Field) -> Result<Option<u32>, DataError> {
        self.get(field)
            .map(|value| whole(field, raw_number(value)))
            .transpose()
    }

    /// A yes/no field: `true` or `false`, as JSON or as a string (backends in other
    /// languages send `"false"`).
    fn flag(&self, field: Field) -> Result<Option<bool>, DataError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        match (value, value.as_str()) {
            (RawValue::Other(Value::Bool(flag)), _) => Ok(Some(*flag)),
            (_, Some("true")) => Ok(Some(true)),
            (_, Some("false")) => Ok(Some(false)),
            _ => Err(DataError::Invalid {
                field: field.name(),
                expected: "true or false",
            }),
        }
    }

    fn label(&self, field: Field, max_chars: usize) -> Result<Option<String>, DataError> {
        self.get(field)
            .map(|value| label(field, value.as_str(), max_chars))
            .transpose()
    }

    fn family_limits(&self) -> Result<Option<BTreeMap<String, u32>>, DataError> {
        match self.get(Field::FamilyLimits) {
            Some(RawValue::Other(value)) => check_family_limits(Some(value)),
            other => check_family_limits(other.map(RawValue::to_value).as_ref()),
        }
    }

    /// The token's `timestamp`, `None` when absent or unreadable: the Node server never
    /// refuses a token over it (SPEC §3.5).
    fn lenient_timestamp(&self, field: Field) -> Option<Timestamp> {
        self.get(field)
            .and_then(RawValue::as_str)
            .and_then(|text| text.parse().ok())
    }

    fn timestamp(&self, field: Field) -> Result<Option<Timestamp>, DataError> {
        let invalid = DataError::Invalid {
            field: field.name(),
            expected: "an ISO 8601 date-time like 2018-06-05T16:16:14.418Z",
        };
        match self.get(field).map(RawValue::as_str) {
            None => Ok(None),
            Some(Some(text)) => text.parse().map(Some).map_err(|_| invalid),
            Some(None) => Err(invalid),
        }
    }

    /// `provenance`: absent (an authenticated token's data) or `"legacy"`.
    fn provenance(&self) -> Result<Provenance, DataError> {
        match self.get(Field::Provenance).map(RawValue::as_str) {
            None => Ok(Provenance::Authenticated),
            Some(text) if text == Provenance::Legacy.wire_name() => Ok(Provenance::Legacy),
            Some(_) => Err(DataError::Invalid {
                field: Field::Provenance.name(),
                expected: "absent, or \"legacy\" (the server sets it)",
            }),
        }
    }

    fn reject_strategy(&self) -> Option<RejectStrategy> {
        self.get(Field::RejectStrategy)
            .and_then(RawValue::as_str)
            .and_then(RejectStrategy::from_wire)
    }
}

/// A known field's value as a number: a JSON number or a numeric string.
fn raw_number(value: &RawValue<'_>) -> Option<f64> {
    match value {
        RawValue::Text(text) => number_text(text),
        RawValue::Other(value) => number(value),
    }
}

/// A whole number from 0 to `u32::MAX`, as a number or a numeric string.
fn count(field: Field, value: &Value) -> Result<u32, DataError> {
    whole(field, number(value))
}

/// `n` as a count of `field`: a whole number from 0 to `u32::MAX`.
fn whole(field: Field, n: Option<f64>) -> Result<u32, DataError> {
    match n {
        Some(n) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) => Ok(n as u32),
        _ => Err(DataError::Invalid {
            field: field.name(),
            expected: "a whole number from 0 to 4294967295 (a number or a numeric string)",
        }),
    }
}

/// An optional label (`device`, `device_family`): a non-empty string of at most
/// `max_chars` characters.
pub(crate) fn check_label(
    field: Field,
    value: Option<&Value>,
    max_chars: usize,
) -> Result<Option<String>, DataError> {
    value
        .map(|value| label(field, value.as_str(), max_chars))
        .transpose()
}

/// True when `name` is a field this crate reads.
pub(super) fn is_known_field(name: &str) -> bool {
    Field::from_name(name).is_some()
}

/// A label's text (`None`: the value is not a string): non-empty, at most `max_chars`
/// characters.
pub(super) fn label(
    field: Field,
    text: Option<&str>,
    max_chars: usize,
) -> Result<String, DataError> {
    match text {
        Some(text) if is_label(text, max_chars) => Ok(text.to_owned()),
        _ => Err(DataError::Invalid {
            field: field.name(),
            expected: if max_chars == MAX_DEVICE_LEN {
                "a non-empty string of at most 64 characters"
            } else {
                "a non-empty string of at most 32 characters"
            },
        }),
    }
}

/// A `session_id` (`None`: the value is not a string): non-empty, at most
/// [`MAX_ID_LEN`] bytes.
pub(super) fn session_id(text: Option<&str>) -> Result<String, DataError> {
    match text {
        Some(text) if !text.is_empty() && text.len() <= MAX_ID_LEN => Ok(text.to_owned()),
        _ => Err(DataError::Invalid {
            field: Field::SessionId.name(),
            expected: "a non-empty string of at most 256 bytes",
        }),
    }
}

/// A length of time of `field` (`None`: not a number).
pub(super) fn seconds(field: Field, n: Option<f64>) -> Result<Seconds, DataError> {
    n.and_then(Seconds::new).ok_or(DataError::Invalid {
        field: field.name(),
        expected: "a non-negative number of seconds (a number or a numeric string)",
    })
}

/// `heartbeat_cycle`: more than zero seconds.
pub(super) fn cycle(cycle: Seconds) -> Result<Seconds, DataError> {
    if cycle.get() > 0.0 {
        Ok(cycle)
    } else {
        Err(DataError::Invalid {
            field: Field::HeartbeatCycle.name(),
            expected: "greater than zero",
        })
    }
}

/// The error of `field` when its value is not what `expected` says.
pub(super) fn invalid(field: Field) -> impl FnOnce(&'static str) -> DataError {
    move |expected| DataError::Invalid {
        field: field.name(),
        expected,
    }
}

/// `family_limits`: an object of at most [`MAX_FAMILIES`] device families (each a valid
/// `device_family`), each to a count.
pub(crate) fn check_family_limits(
    value: Option<&Value>,
) -> Result<Option<BTreeMap<String, u32>>, DataError> {
    let field = Field::FamilyLimits;
    let invalid = DataError::Invalid {
        field: field.name(),
        expected: "an object of at most 32 device families (non-empty names of at most 32 \
                   characters), each to a whole number from 0 to 4294967295",
    };
    match value {
        None => Ok(None),
        Some(Value::Object(limits)) if limits.len() <= MAX_FAMILIES => limits
            .iter()
            .map(|(family, limit)| match count(field, limit) {
                Ok(limit) if is_label(family, MAX_FAMILY_LEN) => Ok((family.clone(), limit)),
                _ => Err(invalid.clone()),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(invalid),
    }
}

/// A label is non-empty and at most `max_chars` characters long.
fn is_label(text: &str, max_chars: usize) -> bool {
    !text.is_empty() && text.chars().count() <= max_chars
}

/// A JSON number or a numeric string, as JavaScript's unary `+` reads it (trimmed, no hex).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(text) => number_text(text),
        _ => None,
    }
}

/// A numeric string as JavaScript's unary `+` reads it (trimmed, no hex).
fn number_text(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.len() > 64 {
        return None;
    }
    trimmed.parse::<f64>().ok().filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_listed_in_the_order_of_their_names() {
        assert!(Field::NAMES.windows(2).all(|pair| pair[0] < pair[1]));
        for (index, field) in Field::ALL.into_iter().enumerate() {
            assert_eq!(field as usize, index);
            assert_eq!(Field::from_name(field.name()), Some(field));
        }
    }
}
