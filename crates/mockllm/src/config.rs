//! The knobs of the mock upstream (`MockConfig`) and the human duration format (`150ms`, `2s`)
//! they use on the command line and in the `/control/config` JSON.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// How the mock upstream behaves. `Default` is a fast, healthy, non-flaky upstream.
///
/// Durations are written as `"150ms"`, `"2s"`, `"500us"` in JSON; a bare number means
/// milliseconds. A PUT of a partial object leaves the missing fields at their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct MockConfig {
    /// Model name it answers as; `None` echoes the request's `model`.
    pub model: Option<String>,
    /// Fixed delay before the response head is sent (streams and non-streams alike).
    #[serde(with = "duration_serde")]
    pub latency: Duration,
    /// Added to `latency`: uniform random `0..latency_jitter`.
    #[serde(with = "duration_serde")]
    pub latency_jitter: Duration,
    /// Share (0..=1) of API requests answered with `error_status`.
    pub error_rate: f64,
    /// Status of injected errors, e.g. 500, 429, 503; the body is an OpenAI-style JSON error.
    pub error_status: u16,
    /// Sent as `Retry-After` (whole seconds, rounded up) with injected 429 and 503 answers.
    #[serde(with = "optional_duration_serde")]
    pub retry_after: Option<Duration>,
    /// Stream: delay between the response head and the first chunk.
    #[serde(with = "duration_serde")]
    pub time_to_first_token: Duration,
    /// Stream: delay between two chunks.
    #[serde(with = "duration_serde")]
    pub inter_chunk_delay: Duration,
    /// Stream: number of content chunks (the non-streamed answer is the same text in one piece).
    pub chunks: u32,
    /// Prompt tokens reported in `usage`.
    pub prompt_tokens: u32,
    /// Completion tokens reported in `usage`.
    pub completion_tokens: u32,
    /// Share (0..=1) of streams cut half-way: the connection is dropped without `[DONE]`.
    pub abort_rate: f64,
    /// Seed for the random choices (jitter, errors, aborts), for deterministic tests.
    pub seed: Option<u64>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            model: None,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            error_rate: 0.0,
            error_status: 500,
            retry_after: None,
            time_to_first_token: Duration::ZERO,
            inter_chunk_delay: Duration::ZERO,
            chunks: 8,
            prompt_tokens: 10,
            completion_tokens: 20,
            abort_rate: 0.0,
            seed: None,
        }
    }
}

impl MockConfig {
    /// Checks the values a JSON document or a flag can get wrong.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [("errorRate", self.error_rate), ("abortRate", self.abort_rate)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(Error::InvalidConfig(format!(
                    "MockConfig field {field} is {value}: use a share between 0 and 1 (0.05 = 5 %)"
                )));
            }
        }
        if !(400..=599).contains(&self.error_status) {
            return Err(Error::InvalidConfig(format!(
                "MockConfig field errorStatus is {}: use an HTTP error status between 400 and 599",
                self.error_status
            )));
        }
        Ok(())
    }
}

/// Parses `150ms`, `2s`, `1.5s`, `500us`, `250ns`, `1m` or `0` into a `Duration`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let invalid = || {
        Error::InvalidDuration(format!(
            "{text:?} is not a duration: write a number with a unit, e.g. 150ms, 2s, 500us, 1m"
        ))
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let seconds_per_unit = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(invalid()),
    };
    Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| invalid())
}

/// Formats a `Duration` in the largest unit that writes it exactly (`150ms`, `2s`, `1500us`).
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        "0s".to_owned()
    } else if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// A duration in JSON: a string with a unit, or a bare number of milliseconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Text(String),
    Millis(f64),
}

impl DurationRepr {
    fn into_duration<E: serde::de::Error>(self) -> std::result::Result<Duration, E> {
        match self {
            DurationRepr::Text(text) => parse_duration(&text).map_err(E::custom),
            DurationRepr::Millis(millis) => Duration::try_from_secs_f64(millis / 1000.0)
                .map_err(|_| E::custom(format!("{millis} is not a duration in milliseconds"))),
        }
    }
}

mod duration_serde {
    use super::*;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        DurationRepr::deserialize(deserializer)?.into_duration()
    }
}

mod optional_duration_serde {
    use super::*;

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_str(&format_duration(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<DurationRepr>::deserialize(deserializer)?
            .map(DurationRepr::into_duration)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every accepted spelling parses to its value; ambiguous and malformed text is refused.
    #[test]
    fn parse_duration_table() {
        let cases: &[(&str, &str, Option<Duration>)] = &[
            ("milliseconds, the common case", "150ms", Some(Duration::from_millis(150))),
            ("whole seconds", "2s", Some(Duration::from_secs(2))),
            ("fractional seconds", "1.5s", Some(Duration::from_millis(1500))),
            ("microseconds, ascii", "500us", Some(Duration::from_micros(500))),
            ("microseconds, micro sign", "500µs", Some(Duration::from_micros(500))),
            ("nanoseconds", "250ns", Some(Duration::from_nanos(250))),
            ("minutes", "1m", Some(Duration::from_secs(60))),
            ("hours", "1h", Some(Duration::from_secs(3600))),
            ("a bare zero needs no unit", "0", Some(Duration::ZERO)),
            ("any other bare number is ambiguous", "150", None),
            ("unknown unit", "3 fortnights", None),
            ("missing number", "ms", None),
            ("negative", "-1s", None),
        ];
        for (rule, text, expected) in cases {
            assert_eq!(parse_duration(text).ok(), *expected, "{rule}: parse_duration({text:?})");
        }
    }

    /// Formatting uses the largest exact unit and parses back to the same value.
    #[test]
    fn format_duration_table() {
        let cases = [
            ("zero keeps a unit", Duration::ZERO, "0s"),
            ("whole seconds", Duration::from_secs(2), "2s"),
            ("milliseconds", Duration::from_millis(150), "150ms"),
            ("not whole seconds stays in ms", Duration::from_millis(1500), "1500ms"),
            ("microseconds", Duration::from_micros(7), "7us"),
            ("nanoseconds", Duration::from_nanos(3), "3ns"),
        ];
        for (rule, duration, expected) in cases {
            assert_eq!(format_duration(duration), expected, "{rule}");
            assert_eq!(parse_duration(expected).ok(), Some(duration), "{rule}: round trip");
        }
    }

    /// The JSON form round-trips, and durations are human strings in it.
    #[test]
    fn config_json_round_trip() {
        let config = MockConfig {
            model: Some("gpt-4.1".into()),
            latency: Duration::from_millis(150),
            retry_after: Some(Duration::from_secs(2)),
            seed: Some(7),
            ..MockConfig::default()
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["latency"], "150ms");
        assert_eq!(json["retryAfter"], "2s");
        assert_eq!(json["timeToFirstToken"], "0s");
        let back: MockConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }

    /// A partial document fills the rest with defaults; bare numbers are milliseconds.
    #[test]
    fn config_partial_json_uses_defaults() {
        let config: MockConfig =
            serde_json::from_str(r#"{"errorRate": 0.5, "interChunkDelay": 20}"#).unwrap();
        assert_eq!(
            config,
            MockConfig {
                error_rate: 0.5,
                inter_chunk_delay: Duration::from_millis(20),
                ..MockConfig::default()
            }
        );
    }

    /// A misspelt knob is an error rather than silently ignored.
    #[test]
    fn config_unknown_field_is_refused() {
        let error = serde_json::from_str::<MockConfig>(r#"{"errorRatio": 0.5}"#).unwrap_err();
        assert!(error.to_string().contains("errorRatio"), "{error}");
    }

    /// Out-of-range knobs are refused with the JSON name of the field.
    #[test]
    fn validate_table() {
        let cases = [
            ("the defaults are valid", MockConfig::default(), None),
            (
                "error share above 1",
                MockConfig { error_rate: 1.5, ..MockConfig::default() },
                Some("errorRate"),
            ),
            (
                "negative abort share",
                MockConfig { abort_rate: -0.1, ..MockConfig::default() },
                Some("abortRate"),
            ),
            (
                "an error status must be an HTTP error",
                MockConfig { error_status: 200, ..MockConfig::default() },
                Some("errorStatus"),
            ),
        ];
        for (rule, config, expected_field) in cases {
            match (config.validate(), expected_field) {
                (Ok(()), None) => {}
                (Err(error), Some(field)) => {
                    assert!(error.to_string().contains(field), "{rule}: {error}")
                }
                (result, expected) => panic!("{rule}: got {result:?}, expected {expected:?}"),
            }
        }
    }
}
