//! Points in time, written exactly like JavaScript's `Date.prototype.toISOString()`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::parsing::Parsed;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

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
        // The form this crate writes (and every re-issued token carries) is read directly;
        // any other goes through the lenient parser.
        if let Some(millis) = canonical_millis(text.as_bytes()) {
            return Self::from_unix_millis(millis);
        }
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

/// The Julian day of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// The digits of `bytes` as a number, if they are all ASCII digits.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |number, byte| {
        byte.is_ascii_digit()
            .then(|| number * 10 + i64::from(byte - b'0'))
    })
}

/// Unix milliseconds of text in exactly the form this crate writes,
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, with a valid date and time; `None` for anything else.
fn canonical_millis(text: &[u8]) -> Option<i64> {
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        n0,
        n1,
        b':',
        s0,
        s1,
        b'.',
        f0,
        f1,
        f2,
        b'Z',
    ] = *text
    else {
        return None;
    };
    let year = digits(&[y0, y1, y2, y3])?;
    let month = digits(&[m0, m1])?;
    let day = digits(&[d0, d1])?;
    let (hour, minute, second) = (digits(&[h0, h1])?, digits(&[n0, n1])?, digits(&[s0, s1])?);
    let fraction = digits(&[f0, f1, f2])?;
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1000 + fraction)
}

impl Timestamp {
    /// The instant as `toISOString()` writes it: always 24 ASCII bytes (years 0000 to
    /// 9999), written without the formatting machinery.
    pub fn iso_bytes(self) -> [u8; 24] {
        let days = self.0.div_euclid(86_400_000);
        let millis_of_day = self.0.rem_euclid(86_400_000);
        // The range check of every constructor keeps the day in the `time` crate's range.
        let date = i32::try_from(days + UNIX_EPOCH_JULIAN_DAY)
            .ok()
            .and_then(|julian| Date::from_julian_day(julian).ok())
            .unwrap_or(Date::MIN);
        let (year, month, day) = date.to_calendar_date();
        let fields = [
            (i64::from(year), 4, 0),
            (i64::from(u8::from(month)), 2, 5),
            (i64::from(day), 2, 8),
            (millis_of_day / 3_600_000, 2, 11),
            (millis_of_day / 60_000 % 60, 2, 14),
            (millis_of_day / 1000 % 60, 2, 17),
            (millis_of_day % 1000, 3, 20),
        ];
        let mut out = *b"0000-00-00T00:00:00.000Z";
        for (value, width, at) in fields {
            // Every field is in 0..10^width: the range check of every constructor keeps
            // the year in 0000-9999.
            write_padded_digits(&mut out[at..at + width], u64::try_from(value).unwrap_or(0));
        }
        out
    }
}

/// Writes the last `out.len()` decimal digits of `value` into `out`, zero-padded on the
/// left: fixed-width numbers without the formatting machinery.
pub(crate) fn write_padded_digits(out: &mut [u8], value: u64) {
    // itoa writes two digits a step (a 15-digit index time cost 25 instructions a digit
    // one at a time).
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(value).as_bytes();
    let kept = digits.len().min(out.len());
    let (padding, tail) = out.split_at_mut(out.len() - kept);
    padding.fill(b'0');
    tail.copy_from_slice(&digits[digits.len() - kept..]);
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.iso_bytes();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.iso_bytes();
        let text = std::str::from_utf8(&bytes).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
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
    use time::format_description::FormatItem;

    /// `2018-06-05T16:16:14.418Z`, as the `time` crate writes it: the reference.
    const ISO_MILLIS: &[FormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

    #[test]
    fn padded_digits_are_the_last_digits_of_the_value() {
        for value in [
            0,
            7,
            10,
            99,
            418,
            1_767_225_601_000,
            253_402_300_799_999,
            u64::MAX,
        ] {
            for width in [0, 1, 2, 3, 4, 15, 20, 24] {
                let mut out = vec![b'x'; width];
                write_padded_digits(&mut out, value);
                let full = format!("{value:0width$}");
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    full[full.len() - width..],
                    "{value} in {width}"
                );
            }
        }
    }

    fn to_offset_date_time(t: Timestamp) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000).unwrap()
    }

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

    /// The direct writer and reader agree with the `time` crate's formatting and lenient
    /// parsing at the ends of the range, around leap days and century years, and at
    /// instants spread over the whole range.
    #[test]
    fn the_direct_writer_and_reader_agree_with_the_time_crate() {
        let mut instants = vec![
            MIN_MILLIS,
            MAX_MILLIS,
            -1,
            0,
            1,
            951_782_400_000,
            4_107_542_399_999,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            // xorshift: deterministic, spread over the range.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = u64::try_from(MAX_MILLIS - MIN_MILLIS).unwrap();
            instants.push(MIN_MILLIS + i64::try_from(x % span).unwrap());
        }
        for millis in instants {
            let t = Timestamp::from_unix_millis(millis).unwrap();
            let mut buf = [0u8; 32];
            let mut out = &mut buf[..];
            let len = to_offset_date_time(t)
                .format_into(&mut out, ISO_MILLIS)
                .unwrap();
            let expected = std::str::from_utf8(&buf[..len]).unwrap();
            assert_eq!(t.to_string(), expected, "{millis}");
            assert_eq!(
                canonical_millis(expected.as_bytes()),
                Some(millis),
                "{expected}"
            );
        }
        for not_canonical in [
            "2018-02-29T00:00:00.000Z",
            "2000-02-30T00:00:00.000Z",
            "1900-02-29T00:00:00.000Z",
            "2018-00-01T00:00:00.000Z",
            "2018-06-05T24:00:00.000Z",
            "2018-06-05T16:60:14.418Z",
            "2018-06-05T16:16:60.418Z",
            "2018-06-05T16:16:14.41xZ",
            "2018-06-05T16:16:14.418z",
        ] {
            assert_eq!(
                canonical_millis(not_canonical.as_bytes()),
                None,
                "{not_canonical}"
            );
        }
        assert_eq!(
            canonical_millis(b"2000-02-29T23:59:59.999Z"),
            Some(951_868_799_999)
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
