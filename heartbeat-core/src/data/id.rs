//! [`Id`]: user and asset ids, kept in their JSON type.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

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
        match value {
            Value::Number(n) => n.as_i64().map(Id::Int).ok_or(Self::EXPECTED),
            Value::String(s) => Self::from_text(s),
            _ => Err(Self::EXPECTED),
        }
    }

    /// What an id must be, as an error says it.
    const EXPECTED: &'static str = "an integer or a non-empty string of at most 256 bytes";

    /// Reads an id given as a JSON string: non-empty, at most [`MAX_ID_LEN`] bytes.
    pub(crate) fn from_text(text: &str) -> Result<Self, &'static str> {
        if !text.is_empty() && text.len() <= MAX_ID_LEN {
            Ok(Id::Str(text.to_owned()))
        } else {
            Err(Self::EXPECTED)
        }
    }

    /// Calls `f` with the id's text, as [`Display`](fmt::Display) writes it (storage keys
    /// name users by it), without allocating it.
    ///
    /// ```
    /// use heartbeat_core::Id;
    ///
    /// assert_eq!(Id::Int(13).with_text(str::len), 2);
    /// assert!(Id::Str("13".into()).with_text(|text| text == "13"));
    /// ```
    pub fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Id::Int(n) => f(itoa::Buffer::new().format(*n)),
            Id::Str(text) => f(text),
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

/// An [`Id`] borrowed, as the binary forms write it (the `v3.` token's payload, sled's
/// records): postcard's variant 0 for an integer, 1 for text.
///
/// ```
/// use heartbeat_core::{Id, IdRef};
///
/// let id = Id::from("movie/42");
/// let bytes = postcard::to_allocvec(&IdRef::from(&id))?;
/// assert_eq!(bytes, b"\x01\x08movie/42");
/// assert_eq!(Id::from(postcard::from_bytes::<IdRef>(&bytes)?), id);
/// # Ok::<(), postcard::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdRef<'a> {
    /// A JSON integer.
    Int(i64),
    /// A JSON string, as stored (its length is not checked here).
    Str(&'a str),
}

impl<'a> From<&'a Id> for IdRef<'a> {
    fn from(id: &'a Id) -> Self {
        match id {
            Id::Int(n) => IdRef::Int(*n),
            Id::Str(text) => IdRef::Str(text),
        }
    }
}

impl From<IdRef<'_>> for Id {
    fn from(id: IdRef<'_>) -> Self {
        match id {
            IdRef::Int(n) => Id::Int(n),
            IdRef::Str(text) => Id::Str(text.to_owned()),
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
