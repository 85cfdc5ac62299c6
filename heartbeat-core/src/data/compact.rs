//! The compact form of [`HeartbeatData`]: what a `v3.` token carries inside its AEAD, for
//! tokens only servers read (SPEC §3.3, `docs/spec.md` "The v3 server token").
//!
//! It is the [postcard](https://docs.rs/postcard) encoding (varints, length-prefixed
//! text, `Option` as a 0/1 byte) of [`Compact`], field by field in the order declared
//! below. Reading it checks every field by the same rules as JSON (`wire.rs`), so a
//! compact payload can hold nothing a JSON one could not.
//!
//! ```
//! use heartbeat_core::HeartbeatData;
//!
//! let data = HeartbeatData::builder(13, "movie/14").cycle(30.0).session_limit(2).build()?;
//! let compact = data.to_compact_vec();
//! assert!(compact.len() < data.to_json_vec().len() / 2);
//! assert_eq!(HeartbeatData::from_compact_slice(&compact)?, data);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::wire::{self, Field, check_family_limits};
use super::{
    DataError, HeartbeatData, Id, IdRef, MAX_DEVICE_LEN, MAX_FAMILY_LEN, Provenance, RejectStrategy,
};
use crate::Timestamp;

/// The compact payload, field by field; postcard writes the fields in this order.
#[derive(Serialize, Deserialize)]
struct Compact<'a> {
    #[serde(borrow)]
    user_id: IdRef<'a>,
    #[serde(borrow)]
    asset_id: IdRef<'a>,
    session_id: Option<&'a str>,
    heartbeat_cycle: f64,
    cycle_lower_tolerance: f64,
    cycle_upper_tolerance: f64,
    /// The strategy's wire name (`LEAST_RECENT`, `MOST_RECENT`).
    reject_strategy: Option<&'a str>,
    /// Milliseconds since 1970-01-01T00:00:00Z.
    timestamp: Option<i64>,
    /// Milliseconds since 1970-01-01T00:00:00Z.
    started_at: Option<i64>,
    session_limit: Option<u32>,
    checking_threshold: Option<u32>,
    sessions_edge: Option<u32>,
    device: Option<&'a str>,
    device_family: Option<&'a str>,
    #[serde(borrow)]
    family_limits: Option<Vec<(&'a str, u32)>>,
    asset_limit: Option<u32>,
    enforce: Option<bool>,
    /// True when a legacy token began the session ([`Provenance::Legacy`]).
    legacy: bool,
    /// The fields this crate does not know, as JSON object text; empty when there are
    /// none (the usual case: nothing to parse).
    extra: &'a str,
}

/// Reads a payload's id: text must be an id's (non-empty, at most [`MAX_ID_LEN`] bytes).
///
/// [`MAX_ID_LEN`]: super::MAX_ID_LEN
fn read_id(id: IdRef<'_>, field: Field) -> Result<Id, DataError> {
    match id {
        IdRef::Int(n) => Ok(Id::Int(n)),
        IdRef::Str(text) => Id::from_text(text).map_err(wire::invalid(field)),
    }
}

/// Why bytes are not a compact payload ([`HeartbeatData::from_compact_slice`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompactDataError {
    /// Not the layout of a compact payload (truncated, trailing bytes, a bad length or
    /// tag, text that is not UTF-8, an unknown `reject_strategy`, `extra` that is not a JSON
    /// object or that holds a known field's name: nothing JSON data would read so).
    #[error("not a compact heartbeat payload")]
    Malformed,
    /// A field breaks the rules of heartbeat data.
    #[error(transparent)]
    Data(DataError),
}

impl From<DataError> for CompactDataError {
    fn from(error: DataError) -> Self {
        CompactDataError::Data(error)
    }
}

impl HeartbeatData {
    /// The data in the compact form `v3.` tokens carry (see the module docs): the same
    /// fields as [`to_json_vec`](Self::to_json_vec), in about a third of the bytes, and
    /// read back exactly by [`from_compact_slice`](Self::from_compact_slice).
    pub fn to_compact_vec(&self) -> Vec<u8> {
        let family_limits = self.family_limits.as_ref().map(|limits| {
            limits
                .iter()
                .map(|(family, limit)| (family.as_str(), *limit))
                .collect()
        });
        let extra = if self.extra.is_empty() {
            String::new()
        } else {
            // A map of JSON values always serializes.
            serde_json::to_string(&self.extra).unwrap_or_default()
        };
        let compact = Compact {
            user_id: IdRef::from(&self.user_id),
            asset_id: IdRef::from(&self.asset_id),
            session_id: self.session_id.as_deref(),
            heartbeat_cycle: self.heartbeat_cycle.get(),
            cycle_lower_tolerance: self.cycle_lower_tolerance.get(),
            cycle_upper_tolerance: self.cycle_upper_tolerance.get(),
            reject_strategy: self.reject_strategy.map(RejectStrategy::as_str),
            timestamp: self.timestamp.map(Timestamp::unix_millis),
            started_at: self.started_at.map(Timestamp::unix_millis),
            session_limit: self.session_limit,
            checking_threshold: self.checking_threshold,
            sessions_edge: self.sessions_edge,
            device: self.device.as_deref(),
            device_family: self.device_family.as_deref(),
            family_limits,
            asset_limit: self.asset_limit,
            enforce: self.enforce,
            legacy: self.provenance == Provenance::Legacy,
            extra: &extra,
        };
        // Sized once: the fixed fields take at most 10 bytes each, texts their length and
        // a length prefix of at most 3 bytes.
        let text = |text: Option<&str>| text.map_or(0, |text| text.len() + 3);
        let id = |id: IdRef<'_>| match id {
            IdRef::Int(_) => 10,
            IdRef::Str(text) => text.len() + 4,
        };
        let families = compact.family_limits.as_ref().map_or(0, |limits| {
            limits
                .iter()
                .map(|(family, _)| family.len() + 8)
                .sum::<usize>()
                + 3
        });
        let capacity = 160
            + id(compact.user_id)
            + id(compact.asset_id)
            + text(compact.session_id)
            + text(compact.device)
            + text(compact.device_family)
            + families
            + extra.len();
        // Every field of `Compact` serializes into a growing `Vec`: this cannot fail.
        postcard::to_extend(&compact, Vec::with_capacity(capacity)).unwrap_or_default()
    }

    /// Reads the compact form ([`to_compact_vec`](Self::to_compact_vec)), checking every
    /// field by the rules JSON data are read by.
    pub fn from_compact_slice(bytes: &[u8]) -> Result<Self, CompactDataError> {
        let (compact, rest) = postcard::take_from_bytes::<Compact<'_>>(bytes)
            .map_err(|_| CompactDataError::Malformed)?;
        if !rest.is_empty() {
            return Err(CompactDataError::Malformed);
        }
        let timestamp = |field: Field, millis: Option<i64>| {
            millis
                .map(|millis| {
                    Timestamp::from_unix_millis(millis).map_err(|_| DataError::Invalid {
                        field: field.name(),
                        expected: "an instant in the years 0000-9999",
                    })
                })
                .transpose()
        };
        let label = |field: Field, text: Option<&str>, max_chars: usize| {
            text.map(|text| wire::label(field, Some(text), max_chars))
                .transpose()
        };
        let family_limits = match compact.family_limits {
            None => None,
            // Rare, and read by the one JSON rule.
            Some(limits) => check_family_limits(Some(&Value::Object(
                limits
                    .into_iter()
                    .map(|(family, limit)| (family.to_owned(), Value::from(limit)))
                    .collect(),
            )))?,
        };
        let extra: Map<String, Value> = match compact.extra {
            "" => Map::new(),
            text => serde_json::from_str(text).map_err(|_| CompactDataError::Malformed)?,
        };
        // What JSON reading leaves among the unknown fields, and nothing else: a known
        // field's name only as an unknown `reject_strategy` value.
        let unknown_strategy = |name: &str, value: &Value| {
            name == Field::RejectStrategy.name()
                && compact.reject_strategy.is_none()
                && value.as_str().and_then(RejectStrategy::from_wire).is_none()
        };
        if extra
            .iter()
            .any(|(name, value)| wire::is_known_field(name) && !unknown_strategy(name, value))
        {
            return Err(CompactDataError::Malformed);
        }
        Ok(HeartbeatData {
            user_id: read_id(compact.user_id, Field::UserId)?,
            asset_id: read_id(compact.asset_id, Field::AssetId)?,
            session_id: compact
                .session_id
                .map(|text| wire::session_id(Some(text)))
                .transpose()?,
            heartbeat_cycle: wire::cycle(wire::seconds(
                Field::HeartbeatCycle,
                Some(compact.heartbeat_cycle),
            )?)?,
            cycle_lower_tolerance: wire::seconds(
                Field::CycleLowerTolerance,
                Some(compact.cycle_lower_tolerance),
            )?,
            cycle_upper_tolerance: wire::seconds(
                Field::CycleUpperTolerance,
                Some(compact.cycle_upper_tolerance),
            )?,
            reject_strategy: compact
                .reject_strategy
                .map(|name| RejectStrategy::from_wire(name).ok_or(CompactDataError::Malformed))
                .transpose()?,
            timestamp: timestamp(Field::Timestamp, compact.timestamp)?,
            started_at: timestamp(Field::StartedAt, compact.started_at)?,
            session_limit: compact.session_limit,
            checking_threshold: compact.checking_threshold,
            sessions_edge: compact.sessions_edge,
            device: label(Field::Device, compact.device, MAX_DEVICE_LEN)?,
            device_family: label(Field::DeviceFamily, compact.device_family, MAX_FAMILY_LEN)?,
            family_limits,
            asset_limit: compact.asset_limit,
            enforce: compact.enforce,
            provenance: if compact.legacy {
                Provenance::Legacy
            } else {
                Provenance::Authenticated
            },
            extra,
        })
    }
}
