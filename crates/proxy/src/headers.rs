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
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The names `Connection` lists (hop-by-hop as well); none, and no allocation, without one.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
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
    let listed = connection_listed(client);
    let drop_caller_key = authorization.is_some() || !pass_caller_authorization;
    // One copy of what is kept, instead of a copy of everything and a hashed removal per name.
    let mut headers = HeaderMap::with_capacity(client.len() + 1);
    for (name, value) in client {
        let dropped = HOP_BY_HOP.contains(name)
            || NOT_FORWARDED.contains(name)
            || (drop_caller_key && CALLER_KEY_HEADERS.contains(name))
            || listed.contains(name);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(value) = authorization {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers
}

/// Never forwarded: `host` is set from the upstream URI, the length is recomputed, identity
/// encoding keeps `usage` readable, and the body is already read (no `expect`).
const NOT_FORWARDED: [HeaderName; 4] =
    [header::HOST, header::CONTENT_LENGTH, header::ACCEPT_ENCODING, header::EXPECT];

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

    /// Without hop-by-hop headers the same rules hold, repeated values and their order kept.
    #[test]
    fn repeated_values_and_keys() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("host", "proxy:8080"),
            ("content-length", "10"),
            ("content-type", "application/json"),
            ("accept-encoding", "gzip"),
            ("expect", "100-continue"),
            ("authorization", "Bearer caller"),
            ("api-key", "caller"),
            ("x-session-id", "s-1"),
            ("x-tag", "a"),
            ("x-tag", "b"),
        ] {
            client.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let pairs = |headers: &HeaderMap| {
            let mut pairs: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            pairs.sort();
            pairs
        };
        let kept = [("content-type", "application/json"), ("x-session-id", "s-1")];
        let arm_key = || Some(HeaderValue::from_static("Bearer arm"));
        let table = [
            (None, true, vec![("api-key", "caller"), ("authorization", "Bearer caller")]),
            (None, false, vec![]),
            (arm_key(), false, vec![("authorization", "Bearer arm")]),
        ];
        for (authorization, pass, keys) in table {
            let headers = upstream_headers(&client, authorization, pass);
            let mut expected: Vec<(String, String)> = kept
                .iter()
                .chain(&keys)
                .chain(&[("x-tag", "a"), ("x-tag", "b")])
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            expected.sort();
            assert_eq!(pairs(&headers), expected, "pass {pass}");
            let tags: Vec<&[u8]> = headers.get_all("x-tag").iter().map(|v| v.as_bytes()).collect();
            assert_eq!(tags, [&b"a"[..], b"b"]);
        }
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
