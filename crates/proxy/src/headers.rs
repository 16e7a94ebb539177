//! Header hygiene between client and upstream: hop-by-hop headers removed, keys replaced or
//! dropped, `Retry-After` read.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Retry-After` in delta-seconds (an HTTP date is ignored: the exponential backoff applies).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = value.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the names listed in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a lookup per name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The headers sent upstream: the client's minus hop-by-hop, `host` (set from the upstream
/// URI), `content-length` (recomputed), `expect` (the body is already read) and
/// `accept-encoding` (identity keeps `usage` readable). Keys: the arm's credential when it has
/// one, else the caller's own only when the arm passes it through; otherwise none at all.
pub(crate) fn upstream_headers(
    client: &HeaderMap,
    authorization: Option<HeaderValue>,
    pass_caller_authorization: bool,
) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_ENCODING);
    // The proxy already read the whole body; the upstream gets it at once.
    headers.remove(header::EXPECT);
    match authorization {
        Some(value) => {
            for name in &CALLER_KEY_HEADERS {
                headers.remove(name);
            }
            headers.insert(header::AUTHORIZATION, value);
        }
        None if !pass_caller_authorization => {
            for name in &CALLER_KEY_HEADERS {
                headers.remove(name);
            }
        }
        None => {}
    }
    headers
}

/// Where callers put their own API keys (OpenAI, Azure OpenAI, Anthropic style).
const CALLER_KEY_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-api-key"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Hop-by-hop headers and the ones named in Connection are removed; host, length and
    /// encoding are dropped; authorization is replaced only when a credential is given.
    #[test]
    fn upstream_header_rules() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("host", "proxy:8080"),
            ("content-length", "10"),
            ("accept-encoding", "gzip"),
            ("authorization", "Bearer caller"),
            ("x-api-key", "caller"),
            ("x-session-id", "s-1"),
            ("openai-organization", "org"),
        ] {
            client.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let names_of = |headers: &HeaderMap| {
            let mut names: Vec<String> = headers.keys().map(|n| n.as_str().to_owned()).collect();
            names.sort();
            names
        };
        let passed = upstream_headers(&client, None, true);
        assert_eq!(
            names_of(&passed),
            ["authorization", "openai-organization", "x-api-key", "x-session-id"]
        );
        assert_eq!(passed["authorization"], "Bearer caller");
        // Not asked to pass the caller's key: no key at all.
        let stripped = upstream_headers(&client, None, false);
        assert_eq!(names_of(&stripped), ["openai-organization", "x-session-id"]);
        let injected =
            upstream_headers(&client, Some(HeaderValue::from_static("Bearer arm")), false);
        assert_eq!(injected["authorization"], "Bearer arm");
        assert_eq!(injected.get_all("authorization").iter().count(), 1);
        assert!(injected.get("x-api-key").is_none());
    }

    /// Retry-After is read as seconds; dates and garbage are ignored.
    #[test]
    fn retry_after_values() {
        let table = [
            ("2", Some(Duration::from_secs(2))),
            ("0.5", Some(Duration::from_millis(500))),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
            ("-1", None),
        ];
        for (value, expected) in table {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(value));
            assert_eq!(retry_after(&headers), expected, "{value}");
        }
    }
}
