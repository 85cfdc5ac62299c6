//! Points in time, written exactly like JavaScript's `Date.prototype.toISOString()`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::{BorrowedFormatItem, FormatItem};
use time::macros::format_description;
use time::parsing::Parsed;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// `2018-06-05T16:16:14.418Z`: the only form this crate writes.
const ISO_MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The ISO 8601 forms JavaScript's `Date.parse` reads (SPEC §3.5): a date, optionally a
/// time after `T`, `t` or a space (minutes, optional seconds, optional fraction of any
/// length), optionally an offset: `Z`, `z`, `+02`, `+0200` or `+02:00`. No offset is UTC.
const LENIENT: &[BorrowedFormatItem<'static>] = format_description!(
    version = 2,
    "[year]-[month]-[day][optional [[first [T][t][ ]][hour]:[minute][optional [:[second][optional [.[subsecond digits:1+]]]]]]][optional [[first [Z][z][[offset_hour sign:mandatory][optional [:]][optional [[offset_minute]]]]]]]"
);

/// The earliest instant this crate accepts: `0000-01-01T00:00:00.000Z`.
const MIN_MILLIS: i64 = -62_167_219_200_000;
/// The latest instant this crate accepts: `9999-12-31T23:59:59.999Z`.
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// A UTC instant with millisecond precision, as JavaScript's `Date` holds it.
///
/// It prints and serializes as `toISOString()` does (`2018-06-05T16:16:14.418Z`) and
/// parses what JavaScript's `Date.parse` reads as ISO 8601 (SPEC §3.5): with or without
/// seconds and fraction (cut to milliseconds), `T`, `t` or a space between date and time,
/// `Z`, `+02:00`, `+0200`, `+02` or no offset (read as UTC), so that Java's
/// `LocalDateTime` and PHP's `DATE_ISO8601` read as well as `toISOString()`. Years outside
/// 0000–9999 are refused, so every value prints in the four-digit form.
///
/// ```
/// use heartbeat_core::Timestamp;
///
/// let t: Timestamp = "2018-06-05T18:16:14.418+02:00".parse()?;
/// assert_eq!(t.to_string(), "2018-06-05T16:16:14.418Z");
/// assert_eq!(t.unix_millis(), 1_528_215_374_418);
/// let php: Timestamp = "2018-06-05T16:16:14+0000".parse()?;
/// let java: Timestamp = "2018-06-05T16:16:14".parse()?;
/// assert_eq!(php, java);
/// # Ok::<(), heartbeat_core::TimestampError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A timestamp that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// The text is not an ISO 8601 date-time such as `2018-06-05T16:16:14.418Z`.
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
        let mut parsed = Parsed::new();
        let rest = parsed
            .parse_items(text.as_bytes(), LENIENT)
            .map_err(|_| TimestampError::Syntax)?;
        if !rest.is_empty() {
            return Err(TimestampError::Syntax);
        }
        let instant = lenient_instant(&parsed).ok_or(TimestampError::Syntax)?;
        let millis = instant.unix_timestamp_nanos().div_euclid(1_000_000);
        let millis = i64::try_from(millis).map_err(|_| TimestampError::OutOfRange)?;
        Self::from_unix_millis(millis)
    }
}

/// The instant of a [`LENIENT`] parse: a valid calendar date and time of day, at its
/// offset (UTC when none was given).
fn lenient_instant(parsed: &Parsed) -> Option<OffsetDateTime> {
    let date =
        Date::from_calendar_date(parsed.year()?, parsed.month()?, parsed.day()?.get()).ok()?;
    let time = Time::from_hms_nano(
        parsed.hour_24().unwrap_or(0),
        parsed.minute().unwrap_or(0),
        parsed.second().unwrap_or(0),
        parsed.subsecond().unwrap_or(0),
    )
    .ok()?;
    let offset = match parsed.offset_hour() {
        None => UtcOffset::UTC,
        Some(hours) => {
            UtcOffset::from_hms(hours, parsed.offset_minute_signed().unwrap_or(0), 0).ok()?
        }
    };
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
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
    fn reads_the_forms_backends_write() {
        let millis = |text: &str| text.parse::<Timestamp>().map(Timestamp::unix_millis);
        let utc = 1_528_215_374_000;
        for text in [
            "2018-06-05T16:16:14",         // Java LocalDateTime
            "2018-06-05T16:16:14+0000",    // PHP DATE_ISO8601
            "2018-06-05 16:16:14",         // SQL
            "2018-06-05t16:16:14z",        // either case
            "2018-06-05T18:16:14+02",      // hours only
            "2018-06-05T11:16:14-05:00",   // west of UTC
            "2018-06-05T16:16:14.000000Z", // more fraction digits
        ] {
            assert_eq!(millis(text), Ok(utc), "{text}");
        }
        assert_eq!(millis("2018-06-05T16:16Z"), Ok(utc - 14_000));
        assert_eq!(millis("2018-06-05"), Ok(utc - 58_574_000));
        assert_eq!(millis("2018-06-05T15:46:14-00:30"), Ok(utc));
        for bad in [
            "2018-06-05T16:16:14.418Zjunk",
            "2018-13-05T16:16:14Z",
            "2018-02-30T16:16:14Z",
            "2018-06-05T25:16:14Z",
            "2018-06-05T16",
            "05/06/2018",
            "2018-06-05T16:16:14+",
        ] {
            assert_eq!(millis(bad), Err(TimestampError::Syntax), "{bad}");
        }
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
