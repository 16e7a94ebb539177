//! The routing document: what the controller writes into the proxy's ConfigMap under
//! `data["<rollout>.json"]` and what the proxy reads back (docs/routing-document.md). One versioned,
//! validating parser so both sides agree on what a good document is. It never holds a secret,
//! only the `<secret>/<key>` name of one.

use serde::{Deserialize, Serialize};

use crate::{Endpoint, Phase};

type PathError = serde_path_to_error::Error<serde_json::Error>;

/// The document version this build writes and the only one it reads.
pub const ROUTING_DOCUMENT_VERSION: u32 = 1;

/// Every version this build can parse, for the "unsupported version" error.
pub const SUPPORTED_ROUTING_DOCUMENT_VERSIONS: &[u32] = &[ROUTING_DOCUMENT_VERSION];

/// One rollout's routing entry: `data["<rollout>.json"]` of the proxy's ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingDocument {
    /// Document format version; must equal [`ROUTING_DOCUMENT_VERSION`].
    pub version: u32,
    /// Name of the `ModelRollout` that owns this entry (a DNS-1123 name).
    pub rollout: String,
    /// Namespace of that `ModelRollout`.
    pub namespace: String,
    /// `metadata.generation` of the rollout the document was written from (>= 0).
    pub generation: i64,
    /// `metadata.creationTimestamp` of the rollout, `YYYY-MM-DDTHH:MM:SSZ`. When two documents
    /// claim one alias the older rollout keeps it, so every replica picks the same owner
    /// whatever order it read the documents in (see docs/routing-document.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The alias clients send as the request body `model`.
    pub model: String,
    /// Where stable traffic goes.
    pub stable: RoutingArm,
    /// Where canary traffic goes.
    pub canary: RoutingArm,
    /// Percentage of traffic (0..=100) sent to the canary.
    pub canary_weight: u32,
    /// How requests are pinned to one arm.
    #[serde(default)]
    pub stickiness: Stickiness,
    /// The rollout's phase when the document was written.
    pub phase: Phase,
    /// Extra latency histogram bounds in milliseconds: the rollout's latency and TTFT limits.
    /// The proxy adds them to this route's buckets, so "p95 over the limit" is a count of
    /// requests over a bound (exact), not a guess inside a bucket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_bounds_ms: Vec<u32>,

    /// A request header whose value `canary` or `stable` forces the arm of that request (for
    /// testers); forced requests are counted apart (`gray_release_forced_requests_total`).
    /// Absent: no header forces anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_arm_header: Option<String>,
}

/// One upstream: the model name sent to it, its base URL and the credential to use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingArm {
    /// Model name sent upstream in the request body.
    pub model: String,
    /// OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`.
    pub endpoint: String,
    /// `"<secret>/<key>"`: the proxy reads `<credentials-dir>/<secret>/<key>`. Never the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Forward the caller's own `Authorization` (and `api-key` / `x-api-key`) to this arm. Off
    /// by default: a caller's key for one provider must not reach another provider's endpoint.
    /// Exclusive with `credential`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_caller_authorization: bool,
    /// Allow a key (`credential` or the caller's) on a plain `http://` endpoint outside the
    /// cluster. Off by default: keys travel over TLS unless the host is loopback or in-cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure: bool,
}

/// How a request is pinned to one arm so a user sees one model across a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stickiness {
    /// Header names tried in order (case-insensitive); the first present one is the sticky key.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Top-level JSON field of the request body used when no header is present, e.g. `"user"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_field: Option<String>,
}

/// Why a routing document was refused. `Display` is one line naming the field, the bad value
/// and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoutingDocumentError {
    /// The bytes are not JSON, or not the shape of the version they claim.
    #[error(
        "routing document cannot be read: {detail}; write it in the version {ROUTING_DOCUMENT_VERSION} \
         format of docs/routing-document.md (the controller rewrites its own keys: delete a hand-edited key)"
    )]
    Malformed {
        /// The JSON parser's message, naming the field and position where possible.
        detail: String,
    },
    /// The document declares a version this build does not understand.
    #[error(
        "routing document field version is {found}: this build understands version(s) {supported}; \
         run a proxy and controller of the same release"
    )]
    UnsupportedVersion {
        /// The declared version, as written.
        found: String,
        /// The versions this build reads, comma-separated.
        supported: String,
    },
    /// One field has a value outside its rules.
    #[error("routing document field {field} is {value}: {fix}")]
    InvalidField {
        /// JSON path of the field, e.g. `stable.endpoint` or `stickiness.headers[1]`.
        field: String,
        /// The offending value as written (strings quoted).
        value: String,
        /// What the value must be instead.
        fix: String,
    },
    /// Stable and canary are the same upstream, so a rollout would change nothing.
    #[error(
        "routing document fields stable and canary are identical (model {model:?} at {endpoint:?}): \
         give the canary a different model or endpoint"
    )]
    IdenticalArms {
        /// The shared model name.
        model: String,
        /// The shared endpoint.
        endpoint: String,
    },
}

// === impl RoutingDocument ===

impl RoutingDocument {
    /// Parses and validates; the error says which field is wrong and how to fix it.
    pub fn parse(bytes: &[u8]) -> Result<Self, RoutingDocumentError> {
        // Read the version first so a newer document fails with "unsupported version" rather
        // than with whatever unknown field that version added.
        let raw: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| RoutingDocumentError::Malformed { detail: e.to_string() })?;
        let Some(object) = raw.as_object() else {
            return Err(RoutingDocumentError::Malformed {
                detail: format!("expected a JSON object, found {}", json_kind(&raw)),
            });
        };
        match object.get("version") {
            None => {
                return Err(RoutingDocumentError::Malformed {
                    detail: "missing field `version`".to_owned(),
                });
            }
            Some(v) if v.as_u64() != Some(u64::from(ROUTING_DOCUMENT_VERSION)) => {
                return Err(RoutingDocumentError::UnsupportedVersion {
                    found: v.to_string(),
                    supported: supported_versions(),
                });
            }
            Some(_) => {}
        }
        let document: RoutingDocument =
            serde_path_to_error::deserialize(raw).map_err(|e: PathError| {
                let path = e.path().to_string();
                let detail = if path == "." {
                    e.into_inner().to_string()
                } else {
                    format!("field {path}: {}", e.into_inner())
                };
                RoutingDocumentError::Malformed { detail }
            })?;
        document.validate()?;
        Ok(document)
    }

    /// Checks every rule parse() checks (for documents built in code, e.g. by the controller).
    pub fn validate(&self) -> Result<(), RoutingDocumentError> {
        if self.version != ROUTING_DOCUMENT_VERSION {
            return Err(RoutingDocumentError::UnsupportedVersion {
                found: self.version.to_string(),
                supported: supported_versions(),
            });
        }
        check_dns1123_subdomain("rollout", &self.rollout)?;
        check_dns1123_label("namespace", &self.namespace)?;
        if self.generation < 0 {
            return Err(invalid("generation", self.generation, "must be 0 or more"));
        }
        if let Some(created_at) = &self.created_at
            && !is_utc_second_timestamp(created_at)
        {
            return Err(invalid(
                "createdAt",
                format!("{created_at:?}"),
                "must be a UTC time to the second, YYYY-MM-DDTHH:MM:SSZ (the rollout's \
                 metadata.creationTimestamp)",
            ));
        }
        check_non_empty("model", &self.model)?;
        self.stable.validate("stable")?;
        self.canary.validate("canary")?;
        if self.canary_weight > 100 {
            return Err(invalid("canaryWeight", self.canary_weight, "must be between 0 and 100"));
        }
        self.stickiness.validate()?;
        self.check_latency_bounds()?;
        if let Some(header) = &self.force_arm_header
            && !is_http_header_name(header)
        {
            return Err(invalid(
                "forceArmHeader",
                format!("{header:?}"),
                "must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), e.g. X-Force-Arm",
            ));
        }
        if self.stable.model == self.canary.model
            && same_endpoint(&self.stable.endpoint, &self.canary.endpoint)
        {
            return Err(RoutingDocumentError::IdenticalArms {
                model: self.stable.model.clone(),
                endpoint: self.stable.endpoint.clone(),
            });
        }
        Ok(())
    }

    /// The latency bounds must be few and plausible: each adds a series per arm.
    fn check_latency_bounds(&self) -> Result<(), RoutingDocumentError> {
        let bounds = &self.latency_bounds_ms;
        if bounds.len() > crate::buckets::MAX_EXTRA_BUCKETS {
            return Err(invalid(
                "latencyBoundsMs",
                format!("{bounds:?}"),
                format!("must hold at most {} bounds", crate::buckets::MAX_EXTRA_BUCKETS),
            ));
        }
        if let Some(bad) = bounds.iter().find(|b| !(1..=3_600_000).contains(*b)) {
            return Err(invalid(
                "latencyBoundsMs",
                bad,
                "each bound must be between 1 ms and 1 h (3600000)",
            ));
        }
        Ok(())
    }

    /// The extra bounds in seconds, for the proxy's histograms.
    pub fn latency_bounds_seconds(&self) -> Vec<f64> {
        self.latency_bounds_ms.iter().map(|ms| f64::from(*ms) / 1000.0).collect()
    }

    /// Canonical JSON (what the controller writes): compact, fields in declaration order.
    pub fn to_json(&self) -> String {
        // Serialising structs of strings, integers and a unit enum has no failure path.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The ConfigMap key this document lives under: "<rollout>.json".
    pub fn config_map_key(&self) -> String {
        config_map_key(&self.rollout)
    }
}

/// The ConfigMap key a rollout's routing document lives under: `"<rollout>.json"`.
pub fn config_map_key(rollout: &str) -> String {
    format!("{rollout}.json")
}

// === impl RoutingArm ===

impl RoutingArm {
    fn validate(&self, arm: &str) -> Result<(), RoutingDocumentError> {
        check_non_empty(&format!("{arm}.model"), &self.model)?;
        check_endpoint(&format!("{arm}.endpoint"), &self.endpoint)?;
        if let Some(credential) = &self.credential {
            check_credential(&format!("{arm}.credential"), credential)?;
            if self.pass_caller_authorization {
                return Err(invalid(
                    format!("{arm}.passCallerAuthorization"),
                    true,
                    "cannot be combined with a credential: the arm sends either its own key or \
                     the caller's; remove one of them",
                ));
            }
        }
        let sends_a_key = self.credential.is_some() || self.pass_caller_authorization;
        if sends_a_key && !self.allow_insecure && !key_safe_endpoint(&self.endpoint) {
            return Err(invalid(
                format!("{arm}.endpoint"),
                format!("{:?}", self.endpoint),
                "would carry an API key in plain text to a host outside the cluster: use \
                 https://, a loopback or in-cluster host (a single-label name, *.svc or \
                 *.svc.cluster.local), or set allowInsecure on this arm",
            ));
        }
        Ok(())
    }

    /// The credential split into `(secret, key)`, when present and well-formed.
    pub fn credential_parts(&self) -> Option<(&str, &str)> {
        self.credential.as_deref().and_then(|c| c.split_once('/'))
    }
}

// === impl Stickiness ===

impl Stickiness {
    fn validate(&self) -> Result<(), RoutingDocumentError> {
        for (i, header) in self.headers.iter().enumerate() {
            if !is_http_header_name(header) {
                return Err(invalid(
                    format!("stickiness.headers[{i}]"),
                    format!("{header:?}"),
                    HEADER_NAME_FIX,
                ));
            }
        }
        if let Some(field) = &self.body_field {
            check_non_empty("stickiness.bodyField", field)?;
        }
        Ok(())
    }
}

// === field rules (shared with the CRD's Rust-side validation) ===

fn invalid(
    field: impl Into<String>,
    value: impl ToString,
    fix: impl Into<String>,
) -> RoutingDocumentError {
    RoutingDocumentError::InvalidField {
        field: field.into(),
        value: value.to_string(),
        fix: fix.into(),
    }
}

fn supported_versions() -> String {
    SUPPORTED_ROUTING_DOCUMENT_VERSIONS.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn check_non_empty(field: &str, value: &str) -> Result<(), RoutingDocumentError> {
    if value.trim().is_empty() {
        return Err(invalid(field, format!("{value:?}"), "must not be empty"));
    }
    Ok(())
}

fn check_dns1123_label(field: &str, value: &str) -> Result<(), RoutingDocumentError> {
    if !is_dns1123_label(value) {
        return Err(invalid(
            field,
            format!("{value:?}"),
            "must be a DNS-1123 label: 1-63 lowercase letters, digits or '-', starting and ending \
             with a letter or digit",
        ));
    }
    Ok(())
}

fn check_dns1123_subdomain(field: &str, value: &str) -> Result<(), RoutingDocumentError> {
    if !is_dns1123_subdomain(value) {
        return Err(invalid(
            field,
            format!("{value:?}"),
            "must be a DNS-1123 name: 1-253 lowercase letters, digits, '-' or '.', starting and \
             ending with a letter or digit",
        ));
    }
    Ok(())
}

/// `http(s)://host[:port][/path]` without user info, query or fragment (see [`Endpoint`]).
pub(crate) fn endpoint_problem(endpoint: &str) -> Option<&'static str> {
    Endpoint::parse(endpoint).err()
}

fn check_endpoint(field: &str, endpoint: &str) -> Result<(), RoutingDocumentError> {
    match endpoint_problem(endpoint) {
        // Never echo a URL that carries credentials.
        Some(fix) if fix.contains("credentials") => Err(invalid(field, "\"<redacted>\"", fix)),
        Some(fix) => Err(invalid(field, format!("{endpoint:?}"), fix)),
        None => Ok(()),
    }
}

fn check_credential(field: &str, credential: &str) -> Result<(), RoutingDocumentError> {
    const FIX: &str = "must be \"<secret>/<key>\": a Secret name (DNS-1123) and a key of letters, \
                       digits, '-', '_' or '.', one '/' between them and no '..'";
    let well_formed = credential.split_once('/').is_some_and(|(secret, key)| {
        is_dns1123_subdomain(secret) && is_secret_key(key) && !credential.contains("..")
    });
    if !well_formed {
        return Err(invalid(field, format!("{credential:?}"), FIX));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ`: fixed width, so string order is time order.
fn is_utc_second_timestamp(s: &str) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:ddZ";
    s.len() == SHAPE.len()
        && s.bytes().zip(SHAPE).all(|(b, &shape)| match shape {
            b'd' => b.is_ascii_digit(),
            literal => b == literal,
        })
}

/// True when a key may travel to `endpoint` (see [`Endpoint::key_safe`]); false for an endpoint
/// that does not parse.
pub fn key_safe_endpoint(endpoint: &str) -> bool {
    Endpoint::parse(endpoint).is_ok_and(|endpoint| endpoint.key_safe())
}

/// Two endpoints are the same upstream when they differ only by a trailing slash.
pub(crate) fn same_endpoint(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

pub(crate) fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A Secret data key: `[-._a-zA-Z0-9]+`; `..` is refused by the caller.
pub(crate) fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
}

/// Longest sticky header name accepted (the CRD's `maxLength`).
pub const HEADER_NAME_MAX_LENGTH: usize = 128;

/// What to write instead of a bad header name; the spec and the routing document both say it.
pub(crate) const HEADER_NAME_FIX: &str = "must be an HTTP header name of at most 128 letters, \
     digits and !#$%&'*+-.^_`|~ (no spaces), e.g. X-Session-ID";

/// An RFC 9110 `token` of at most [`HEADER_NAME_MAX_LENGTH`] bytes: the one header-name rule of
/// the spec, the routing document and the proxy (every such name is a valid `http::HeaderName`).
pub fn is_http_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= HEADER_NAME_MAX_LENGTH
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The example of docs/routing-document.md.
    fn complete_example() -> Value {
        json!({"version": 1, "rollout": "chat-assistant", "namespace": "ai", "generation": 3,
         "model": "chat-default",
         "stable": {"model": "gpt-4.1", "endpoint": "https://api.openai.com/v1", "credential": "openai/api-key"},
         "canary": {"model": "claude-sonnet-4.5", "endpoint": "http://relay.ai.svc:8080/v1", "credential": "relay/api-key"},
         "canaryWeight": 25, "stickiness": {"headers": ["X-Session-ID", "X-User-ID"], "bodyField": "user"},
         "phase": "Progressing"})
    }

    fn parse_value(v: &Value) -> Result<RoutingDocument, RoutingDocumentError> {
        RoutingDocument::parse(v.to_string().as_bytes())
    }

    /// Applies `edit` to the design example and returns the result.
    fn edited(edit: impl FnOnce(&mut Value)) -> Value {
        let mut v = complete_example();
        edit(&mut v);
        v
    }

    /// The documented example parses into the expected fields.
    #[test]
    fn parses_complete_example() {
        let doc = parse_value(&complete_example()).unwrap();
        assert_eq!(doc.rollout, "chat-assistant");
        assert_eq!(doc.canary_weight, 25);
        assert_eq!(doc.phase, Phase::Progressing);
        assert_eq!(doc.stable.credential_parts(), Some(("openai", "api-key")));
        assert_eq!(doc.stickiness.body_field.as_deref(), Some("user"));
        assert_eq!(doc.config_map_key(), "chat-assistant.json");
    }

    /// to_json → parse gives back the same document, and to_json is stable across round trips.
    #[test]
    fn round_trips_through_canonical_json() {
        let table = [
            complete_example(),
            // optional fields absent
            edited(|v| {
                v["stable"].as_object_mut().unwrap().remove("credential");
                v.as_object_mut().unwrap().remove("stickiness");
            }),
            // every phase and the weight bounds
            edited(|v| {
                v["canaryWeight"] = json!(0);
                v["phase"] = json!("RolledBack");
            }),
            edited(|v| {
                v["canaryWeight"] = json!(100);
                v["phase"] = json!("Promoted");
            }),
            // same model on different endpoints is a real rollout
            edited(|v| v["canary"]["model"] = json!("gpt-4.1")),
        ];
        for value in table {
            let doc = parse_value(&value).unwrap();
            let json = doc.to_json();
            let again = RoutingDocument::parse(json.as_bytes()).unwrap();
            assert_eq!(again, doc);
            assert_eq!(again.to_json(), json);
        }
    }

    /// Absent optional fields are left out of the canonical JSON rather than written as null.
    #[test]
    fn canonical_json_omits_absent_options() {
        let doc = parse_value(&edited(|v| {
            v["stable"].as_object_mut().unwrap().remove("credential");
            v["stickiness"] = json!({"headers": []});
        }))
        .unwrap();
        let json = doc.to_json();
        assert!(!json.contains("null"), "{json}");
        assert!(json.starts_with(r#"{"version":1,"rollout":"chat-assistant""#), "{json}");
    }

    /// Each broken document is refused with an error naming the field (first substring) and the
    /// value or rule (second substring).
    #[test]
    fn rejects_bad_documents_naming_the_field() {
        let table: Vec<(&str, Value, &str, &str)> = vec![
            ("not json", json!("{"), "cannot be read", "line 1 column 1"),
            ("not an object", json!([1]), "cannot be read", "an array"),
            (
                "no version",
                edited(|v| {
                    v.as_object_mut().unwrap().remove("version");
                }),
                "version",
                "missing",
            ),
            (
                "future version",
                edited(|v| v["version"] = json!(2)),
                "field version is 2",
                "understands version(s) 1",
            ),
            (
                "version as string",
                edited(|v| v["version"] = json!("1")),
                "field version is \"1\"",
                "understands",
            ),
            (
                "unknown field",
                edited(|v| v["weight"] = json!(5)),
                "unknown field `weight`",
                "cannot be read",
            ),
            (
                "unknown arm field",
                edited(|v| v["stable"]["apiKey"] = json!("sk-x")),
                "unknown field `apiKey`",
                "cannot be read",
            ),
            (
                "missing canary",
                edited(|v| {
                    v.as_object_mut().unwrap().remove("canary");
                }),
                "missing field `canary`",
                "cannot be read",
            ),
            (
                "unknown phase",
                edited(|v| v["phase"] = json!("Done")),
                "unknown variant `Done`",
                "cannot be read",
            ),
            (
                "weight above 100",
                edited(|v| v["canaryWeight"] = json!(140)),
                "field canaryWeight is 140",
                "between 0 and 100",
            ),
            (
                "negative weight",
                edited(|v| v["canaryWeight"] = json!(-1)),
                "canaryWeight",
                "cannot be read",
            ),
            (
                "negative generation",
                edited(|v| v["generation"] = json!(-3)),
                "field generation is -3",
                "0 or more",
            ),
            (
                "empty rollout",
                edited(|v| v["rollout"] = json!("")),
                "field rollout is \"\"",
                "DNS-1123",
            ),
            (
                "upper-case rollout",
                edited(|v| v["rollout"] = json!("Chat")),
                "field rollout is \"Chat\"",
                "DNS-1123",
            ),
            (
                "empty namespace",
                edited(|v| v["namespace"] = json!("")),
                "field namespace is \"\"",
                "DNS-1123",
            ),
            (
                "empty alias",
                edited(|v| v["model"] = json!(" ")),
                "field model is \" \"",
                "must not be empty",
            ),
            (
                "empty stable model",
                edited(|v| v["stable"]["model"] = json!("")),
                "field stable.model",
                "must not be empty",
            ),
            (
                "ftp endpoint",
                edited(|v| v["canary"]["endpoint"] = json!("ftp://x/v1")),
                "field canary.endpoint is \"ftp://x/v1\"",
                "http://",
            ),
            (
                "relative endpoint",
                edited(|v| v["stable"]["endpoint"] = json!("/v1")),
                "field stable.endpoint",
                "absolute",
            ),
            (
                "endpoint with password",
                edited(|v| v["stable"]["endpoint"] = json!("https://u:sk-secret@h/v1")),
                "field stable.endpoint is \"<redacted>\"",
                "Secret",
            ),
            (
                "endpoint with query",
                edited(|v| v["stable"]["endpoint"] = json!("https://h/v1?key=1")),
                "field stable.endpoint",
                "?query",
            ),
            (
                "credential without key",
                edited(|v| v["stable"]["credential"] = json!("openai")),
                "field stable.credential is \"openai\"",
                "<secret>/<key>",
            ),
            (
                "credential traversal",
                edited(|v| v["stable"]["credential"] = json!("../etc/passwd")),
                "field stable.credential",
                "no '..'",
            ),
            (
                "credential key traversal",
                edited(|v| v["canary"]["credential"] = json!("relay/..")),
                "field canary.credential",
                "<secret>/<key>",
            ),
            (
                "credential extra slash",
                edited(|v| v["canary"]["credential"] = json!("relay/a/b")),
                "field canary.credential",
                "one '/'",
            ),
            (
                "bad header",
                edited(|v| v["stickiness"]["headers"] = json!(["X-Ok", "X Session"])),
                "field stickiness.headers[1] is \"X Session\"",
                "HTTP header name",
            ),
            (
                "bad force-arm header",
                edited(|v| v["forceArmHeader"] = json!("X Force")),
                "field forceArmHeader is \"X Force\"",
                "HTTP header name",
            ),
            (
                "empty body field",
                edited(|v| v["stickiness"]["bodyField"] = json!("")),
                "field stickiness.bodyField",
                "must not be empty",
            ),
            (
                "credential over plain http to an outside host",
                edited(|v| v["canary"]["endpoint"] = json!("http://relay.example.com/v1")),
                "field canary.endpoint is \"http://relay.example.com/v1\"",
                "allowInsecure",
            ),
            (
                "caller's key over plain http to an outside host",
                edited(|v| {
                    v["stable"] = json!({"model": "m", "endpoint": "http://10.0.0.9/v1",
                                         "passCallerAuthorization": true})
                }),
                "field stable.endpoint",
                "in plain text",
            ),
            (
                "credential and caller pass-through together",
                edited(|v| v["stable"]["passCallerAuthorization"] = json!(true)),
                "field stable.passCallerAuthorization is true",
                "either its own key or the caller's",
            ),
            (
                "creation time with a fraction",
                edited(|v| v["createdAt"] = json!("2026-11-27T10:00:00.5Z")),
                "field createdAt is \"2026-11-27T10:00:00.5Z\"",
                "YYYY-MM-DDTHH:MM:SSZ",
            ),
            (
                "identical arms",
                edited(|v| {
                    v["canary"] =
                        json!({"model": "gpt-4.1", "endpoint": "https://api.openai.com/v1/"})
                }),
                "stable and canary are identical",
                "different model or endpoint",
            ),
        ];
        for (rule, value, field_part, fix_part) in table {
            let bytes =
                if value == json!("{") { b"{".to_vec() } else { value.to_string().into_bytes() };
            let err = RoutingDocument::parse(&bytes).expect_err(rule).to_string();
            assert!(err.contains(field_part), "{rule}: {err:?} lacks {field_part:?}");
            assert!(err.contains(fix_part), "{rule}: {err:?} lacks {fix_part:?}");
            assert!(!err.contains('\n'), "{rule}: error spans lines: {err:?}");
            assert!(!err.contains("sk-secret"), "{rule}: error leaks a secret: {err:?}");
        }
    }

    /// A key may travel over TLS, or over plain HTTP to loopback and in-cluster hosts only;
    /// allowInsecure lifts the rule for one arm.
    #[test]
    fn keys_travel_only_over_safe_endpoints() {
        let table = [
            ("https://api.openai.com/v1", true),
            ("http://127.0.0.1:8080/v1", true),
            ("http://127.9.9.9/v1", true),
            ("http://[::1]:9000", true),
            ("http://localhost:8080", true),
            ("http://relay:8080/v1", true),
            ("http://relay.ai.svc:8080/v1", true),
            ("http://relay.ai.svc.cluster.local/v1", true),
            ("http://relay.example.com/v1", false),
            ("http://10.0.0.9/v1", false),
            ("http://[2001:db8::1]/v1", false),
            ("http://svc.example.com/v1", false),
        ];
        for (endpoint, safe) in table {
            assert_eq!(key_safe_endpoint(endpoint), safe, "{endpoint}");
        }
        let allowed = edited(|v| {
            v["canary"]["endpoint"] = json!("http://relay.example.com/v1");
            v["canary"]["allowInsecure"] = json!(true);
        });
        let doc = parse_value(&allowed).unwrap();
        assert!(doc.canary.allow_insecure);
        assert!(doc.to_json().contains(r#""allowInsecure":true"#));
        // Without a key, plain HTTP anywhere is fine.
        let keyless = edited(|v| {
            v["canary"] = json!({"model": "m", "endpoint": "http://relay.example.com/v1"})
        });
        let doc = parse_value(&keyless).unwrap();
        assert!(!doc.canary.pass_caller_authorization);
        assert!(!doc.to_json().contains("passCallerAuthorization"));
    }

    /// validate() applies the same rules to documents built in code.
    #[test]
    fn validate_checks_documents_built_in_code() {
        let good = parse_value(&complete_example()).unwrap();
        assert_eq!(good.validate(), Ok(()));
        let table: Vec<(&str, RoutingDocument, &str)> = vec![
            ("version", RoutingDocument { version: 7, ..good.clone() }, "field version is 7"),
            (
                "weight",
                RoutingDocument { canary_weight: 101, ..good.clone() },
                "canaryWeight is 101",
            ),
            (
                "rollout",
                RoutingDocument { rollout: String::new(), ..good.clone() },
                "field rollout",
            ),
        ];
        for (rule, doc, expected) in table {
            let err = doc.validate().expect_err(rule).to_string();
            assert!(err.contains(expected), "{rule}: {err}");
        }
    }

    /// The error example of the interface note reads exactly as agreed.
    #[test]
    fn weight_error_reads_as_agreed() {
        let err = parse_value(&edited(|v| v["canaryWeight"] = json!(140))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "routing document field canaryWeight is 140: must be between 0 and 100"
        );
    }
}
