//! [`HeartbeatDataBuilder`]: the heartbeat data of a new playback, checked with the wire's
//! rules.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::wire::{self, Field};
use super::{
    DataError, HeartbeatData, Id, MAX_DEVICE_LEN, MAX_FAMILY_LEN, Provenance, RejectStrategy,
    Seconds,
};
use crate::Timestamp;

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
    /// empty or longer than [`MAX_ID_LEN`](super::MAX_ID_LEN) bytes).
    pub fn build(self) -> Result<HeartbeatData, DataError> {
        let seconds = |field: Field, value: f64| {
            Seconds::new(value).ok_or(DataError::Invalid {
                field: field.name(),
                expected: "a non-negative number of seconds",
            })
        };
        let heartbeat_cycle = wire::cycle(seconds(Field::HeartbeatCycle, self.cycle)?)?;
        for (field, id) in [
            (Field::UserId, &self.user_id),
            (Field::AssetId, &self.asset_id),
        ] {
            Id::from_json(&id.to_json()).map_err(wire::invalid(field))?;
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
