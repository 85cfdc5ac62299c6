//! [`Seconds`] (the cycle and its tolerances) and [`RejectStrategy`].

use std::time::Duration;

use serde_json::{Number, Value};

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

    pub(crate) fn to_json(self) -> Value {
        // Whole numbers are written as integers, as JavaScript prints them.
        if self.0.fract() == 0.0 {
            Value::from(self.0 as i64)
        } else {
            Number::from_f64(self.0).map_or(Value::Null, Value::Number)
        }
    }
}
