//! Human-written durations (`30s`, `5m`, `2h`, `1h30m`, `800ms`): the one grammar of the workspace,
//! in the spec, in every binary's flags and in the mock upstream's JSON, so a value that works in
//! one place works in all. A typed value that (de)serialises as that string and carries a schema
//! `pattern`, so the API server rejects malformed strings before the controller ever sees them.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The accepted form, quoted in every parse error and in the schema description.
pub const DURATION_FORM: &str = "one or more <whole number><unit> parts with unit ms, s, m or h, e.g. 30s, 5m, 2h, 1h30m, 800ms";

/// The schema `pattern`; CEL's `duration()` accepts every string it matches.
pub const DURATION_PATTERN: &str = "^([0-9]{1,9}(ms|s|m|h))+$";

/// Longest duration string the schema accepts (keeps CEL cost estimates small).
pub const DURATION_MAX_LENGTH: u32 = 32;

/// A non-negative duration written as `1h30m`-style text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(StdDuration);

/// A duration string that does not have the accepted form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("duration {value:?} is not valid ({problem}): write {DURATION_FORM}")]
pub struct DurationError {
    /// The text as given.
    pub value: String,
    /// What is wrong with it, e.g. `unknown unit "d"`.
    pub problem: String,
}

impl Duration {
    /// Wraps a standard duration.
    pub const fn new(duration: StdDuration) -> Self {
        Duration(duration)
    }

    /// A whole number of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(StdDuration::from_secs(secs))
    }

    /// A whole number of milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration(StdDuration::from_millis(millis))
    }

    /// The standard-library duration.
    pub const fn as_std(self) -> StdDuration {
        self.0
    }

    /// True for `0s` (and `0ms`, `0h`, ...).
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<StdDuration> for Duration {
    fn from(d: StdDuration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for StdDuration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |problem: String| DurationError { value: text.to_owned(), problem };
        if text.is_empty() {
            return Err(fail("it is empty".to_owned()));
        }
        if text.len() > DURATION_MAX_LENGTH as usize {
            return Err(fail(format!("it is longer than {DURATION_MAX_LENGTH} characters")));
        }
        let mut total = StdDuration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail(format!("expected a whole number at {rest:?}")));
            }
            if digits > 9 {
                return Err(fail(format!("number {:?} has more than 9 digits", &rest[..digits])));
            }
            let (number, after) = rest.split_at(digits);
            let number: u64 =
                number.parse().map_err(|_| fail(format!("{number:?} is not a number")))?;
            let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, after) = after.split_at(unit_len);
            let part = match unit {
                "ms" => StdDuration::from_millis(number),
                "s" => StdDuration::from_secs(number),
                "m" => StdDuration::from_secs(number * 60),
                "h" => StdDuration::from_secs(number * 3600),
                "" => return Err(fail(format!("number {number} has no unit"))),
                other => return Err(fail(format!("unknown unit {other:?}"))),
            };
            total = total.checked_add(part).ok_or_else(|| fail("it is too long".to_owned()))?;
            rest = after;
        }
        Ok(Duration(total))
    }
}

/// Parses a flag or a config value in the duration grammar, for `clap`'s `value_parser`.
pub fn parse_duration(text: &str) -> Result<StdDuration, DurationError> {
    text.parse::<Duration>().map(Duration::as_std)
}

impl fmt::Display for Duration {
    /// Canonical form: hours, minutes, seconds, milliseconds, zero parts left out (`0s` for zero).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        let (h, rem) = (total_ms / 3_600_000, total_ms % 3_600_000);
        let (m, rem) = (rem / 60_000, rem % 60_000);
        let (s, ms) = (rem / 1000, rem % 1000);
        for (value, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads a string; anything else (a bare number) is refused with the accepted form.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a duration string: {DURATION_FORM}")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted strings parse to the expected length and print back in canonical form.
    #[test]
    fn parses_accepted_forms() {
        let table = [
            ("30s", 30_000, "30s"),
            ("5m", 300_000, "5m"),
            ("2h", 7_200_000, "2h"),
            ("1h30m", 5_400_000, "1h30m"),
            ("800ms", 800, "800ms"),
            ("90m", 5_400_000, "1h30m"),
            ("1m30s500ms", 90_500, "1m30s500ms"),
            ("0s", 0, "0s"),
            ("1500ms", 1500, "1s500ms"),
            ("999999999h", 999_999_999 * 3_600_000, "999999999h"),
        ];
        for (text, millis, canonical) in table {
            let d: Duration = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(d.as_std().as_millis(), millis, "{text}");
            assert_eq!(d.to_string(), canonical, "{text}");
            assert_eq!(canonical.parse::<Duration>().unwrap(), d, "{text}");
        }
    }

    /// Rejected strings name the bad value, the problem and the accepted form.
    #[test]
    fn rejects_malformed_strings() {
        let table = [
            ("", "it is empty"),
            ("5", "number 5 has no unit"),
            ("1d", "unknown unit \"d\""),
            ("5 m", "number 5 has no unit"),
            ("m", "expected a whole number at \"m\""),
            ("-5s", "expected a whole number"),
            ("1.5h", "number 1 has no unit"),
            ("5M", "unknown unit \"M\""),
            ("1h30", "number 30 has no unit"),
            ("1234567890s", "more than 9 digits"),
            ("PT5M", "expected a whole number"),
            ("1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h", "longer than 32 characters"),
        ];
        for (text, problem) in table {
            let err = text.parse::<Duration>().expect_err(text).to_string();
            assert!(err.contains(&format!("{text:?}")), "{text}: {err}");
            assert!(err.contains(problem), "{text}: {err} lacks {problem}");
            assert!(err.contains("e.g. 30s, 5m, 2h, 1h30m, 800ms"), "{text}: {err}");
        }
    }

    /// Flags parse in the same grammar, and clap's message carries the fix.
    #[test]
    fn parse_duration_for_flags() {
        assert_eq!(parse_duration("1m30s"), Ok(StdDuration::from_secs(90)));
        let err = parse_duration("1.5s").unwrap_err().to_string();
        assert!(err.contains("\"1.5s\"") && err.contains("e.g. 30s"), "{err}");
    }

    /// serde reads and writes the string form, and reports bad strings through serde's error.
    #[test]
    fn serde_uses_the_string_form() {
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(d, Duration::from_secs(5400));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        let err = serde_json::from_str::<Duration>("\"soon\"").unwrap_err().to_string();
        assert!(err.contains("\"soon\""), "{err}");
        let err = serde_json::from_str::<Duration>("30").unwrap_err().to_string();
        assert!(err.contains("e.g. 30s"), "{err}");
    }

    /// Every string the pattern accepts parses, and every string it rejects fails to parse.
    #[test]
    fn pattern_agrees_with_parser() {
        // A hand-written matcher for DURATION_PATTERN keeps this test free of a regex dependency.
        fn matches_pattern(s: &str) -> bool {
            let mut rest = s;
            if rest.is_empty() {
                return false;
            }
            while !rest.is_empty() {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                if !(1..=9).contains(&digits) {
                    return false;
                }
                rest = &rest[digits..];
                rest = if let Some(r) = rest.strip_prefix("ms") {
                    r
                } else if let Some(r) =
                    rest.strip_prefix('s').or(rest.strip_prefix('m')).or(rest.strip_prefix('h'))
                {
                    r
                } else {
                    return false;
                };
            }
            true
        }
        for text in ["30s", "1h30m", "800ms", "0s", "1d", "5", "", "1.5h", "5ms5", "10m10ms"] {
            assert_eq!(matches_pattern(text), text.parse::<Duration>().is_ok(), "{text}");
        }
        assert_eq!(DURATION_PATTERN, "^([0-9]{1,9}(ms|s|m|h))+$");
    }
}
