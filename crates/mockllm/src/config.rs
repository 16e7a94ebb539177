//! The knobs of the mock upstream (`MockConfig`); durations on the command line and in the
//! `/control/config` JSON use the workspace's one grammar (`150ms`, `2s`, `1m30s`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// How the mock upstream behaves. `Default` is a fast, healthy, non-flaky upstream.
///
/// Durations are written as `"150ms"`, `"2s"`, `"1m30s"` in JSON. A PUT of a partial object leaves the missing fields at their defaults.
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
    /// What `GET /v1/models` lists; `None` lists `model` (or `mockllm`). For a preflight that
    /// does not find its model.
    pub listed_models: Option<Vec<String>>,
    /// When set, every API request must carry `Authorization: Bearer <apiKey>` or is answered
    /// 401 `invalid_api_key`. Write-only: never shown by `GET /control/config`.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
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
            listed_models: None,
            api_key: None,
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

/// A duration in JSON: a string in the workspace's duration grammar (`150ms`, `2s`, `1m30s`).
mod duration_serde {
    use super::*;
    use modelrollout_api::Duration as Text;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        Text::from(*duration).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Text::deserialize(deserializer).map(Text::as_std)
    }
}
mod optional_duration_serde {
    use super::*;
    use modelrollout_api::Duration as Text;

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        duration.map(Text::from).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Text>::deserialize(deserializer)?.map(Text::as_std))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A partial document fills the rest with defaults.
    #[test]
    fn config_partial_json_uses_defaults() {
        let config: MockConfig =
            serde_json::from_str(r#"{"errorRate": 0.5, "interChunkDelay": "20ms"}"#).unwrap();
        assert_eq!(
            config,
            MockConfig {
                error_rate: 0.5,
                inter_chunk_delay: Duration::from_millis(20),
                ..MockConfig::default()
            }
        );
    }

    /// Durations use the workspace's one grammar: a bare number or another unit is refused with
    /// the accepted form.
    #[test]
    fn config_duration_grammar() {
        let config: MockConfig = serde_json::from_str(r#"{"latency": "1s500ms"}"#).unwrap();
        assert_eq!(config.latency, Duration::from_millis(1500));
        for bad in [r#"{"latency": 20}"#, r#"{"latency": "500us"}"#, r#"{"latency": "1.5s"}"#] {
            let error = serde_json::from_str::<MockConfig>(bad).unwrap_err().to_string();
            assert!(error.contains("e.g. 30s"), "{bad}: {error}");
        }
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
