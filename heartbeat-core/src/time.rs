//! Points in time, written exactly like JavaScript's `Date.prototype.toISOString()`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::FormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `2018-06-05T16:16:14.418Z`: the only form this crate writes.
const ISO_MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The earliest instant this crate accepts: `0000-01-01T00:00:00.000Z`.
const MIN_MILLIS: i64 = -62_167_219_200_000;
/// The latest instant this crate accepts: `9999-12-31T23:59:59.999Z`.
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// A UTC instant with millisecond precision, as JavaScript's `Date` holds it.
///
/// It prints and serializes as `toISOString()` does (`2018-06-05T16:16:14.418Z`) and parses
/// any RFC 3339 date-time (any offset, any number of fraction digits, cut to milliseconds).
/// Years outside 0000–9999 are refused, so every value prints in the four-digit form.
///
/// ```
/// use heartbeat_core::Timestamp;
///
/// let t: Timestamp = "2018-06-05T18:16:14.418+02:00".parse()?;
/// assert_eq!(t.to_string(), "2018-06-05T16:16:14.418Z");
/// assert_eq!(t.unix_millis(), 1_528_215_374_418);
/// # Ok::<(), heartbeat_core::TimestampError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A timestamp that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// The text is not an RFC 3339 date-time such as `2018-06-05T16:16:14.418Z`.
    #[error("not an ISO 8601 date-time like 2018-06-05T16:16:14.418Z")]
    Syntax,
    /// The instant is outside the years 0000–9999.
    #[error("date-time outside the years 0000-9999")]
    OutOfRange,
}

impl Timestamp {
    /// The instant `millis` milliseconds after 1970-01-01T00:00:00Z, if it lies in the
    /// years 0000–9999.
    pub fn from_unix_millis(millis: i64) -> Result<Self, TimestampError> {
        if (MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
            Ok(Self(millis))
        } else {
            Err(TimestampError::OutOfRange)
        }
    }

    /// Milliseconds since 1970-01-01T00:00:00Z (negative before).
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// The current time of the system clock.
    pub fn now() -> Self {
        let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(MAX_MILLIS),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(-MIN_MILLIS),
        };
        Self(millis.clamp(MIN_MILLIS, MAX_MILLIS))
    }

    /// This instant moved `millis` milliseconds later (earlier if negative), saturating at
    /// the ends of the accepted range.
    pub fn add_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis).clamp(MIN_MILLIS, MAX_MILLIS))
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0 - earlier.0
    }

    fn to_offset_date_time(self) -> OffsetDateTime {
        // The range check in every constructor keeps this conversion in bounds.
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// Moves the instant later, saturating at the end of the accepted range.
impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, duration: Duration) -> Timestamp {
        self.add_millis(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TimestampError::Syntax)?;
        let utc = parsed.to_offset(UtcOffset::UTC);
        let millis = utc.unix_timestamp_nanos().div_euclid(1_000_000);
        let millis = i64::try_from(millis).map_err(|_| TimestampError::OutOfRange)?;
        Self::from_unix_millis(millis)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always 24 bytes (years 0000 to 9999): formatted on the stack, not into a String.
        let mut buf = [0u8; 32];
        let mut out = &mut buf[..];
        let len = self
            .to_offset_date_time()
            .format_into(&mut out, ISO_MILLIS)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_to_iso_string() {
        let t = Timestamp::from_unix_millis(1_528_215_374_418).unwrap();
        assert_eq!(t.to_string(), "2018-06-05T16:16:14.418Z");
        assert_eq!(
            Timestamp::from_unix_millis(0).unwrap().to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).unwrap().to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let t: Timestamp = "2018-06-05T16:16:14Z".parse().unwrap();
        assert_eq!(t.to_string(), "2018-06-05T16:16:14.000Z");
        let t: Timestamp = "2018-06-05T16:16:14.4189999Z".parse().unwrap();
        assert_eq!(t.to_string(), "2018-06-05T16:16:14.418Z");
        let t: Timestamp = "1969-12-31T23:59:59.9999Z".parse().unwrap();
        assert_eq!(t.unix_millis(), -1);
    }

    #[test]
    fn refuses_bad_text_and_range() {
        assert_eq!(
            "yesterday".parse::<Timestamp>(),
            Err(TimestampError::Syntax)
        );
        assert_eq!("".parse::<Timestamp>(), Err(TimestampError::Syntax));
        assert_eq!(
            Timestamp::from_unix_millis(MAX_MILLIS + 1),
            Err(TimestampError::OutOfRange)
        );
        assert_eq!(
            Timestamp::from_unix_millis(MIN_MILLIS - 1),
            Err(TimestampError::OutOfRange)
        );
        let max = Timestamp::from_unix_millis(MAX_MILLIS).unwrap();
        assert_eq!(max.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(max.add_millis(5), max);
    }
}
