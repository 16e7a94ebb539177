//! Upstream base URLs (`http(s)://host[:port][/base]`): one parser for the spec, the routing
//! document and the proxy, so what validation accepts is exactly what the proxy calls.

use std::fmt;

/// A parsed upstream base URL, without user info, query or fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    tls: bool,
    host: url::Host<String>,
    port: Option<u16>,
    base_path: String,
}

impl Endpoint {
    /// Parses an endpoint; the error says what to write instead, e.g. "must name a host, ...".
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let Ok(url) = url::Url::parse(text) else {
            return Err(
                "must be an absolute http:// or https:// URL, e.g. https://api.openai.com/v1",
            );
        };
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => {
                return Err(
                    "must use the http:// or https:// scheme, e.g. https://api.openai.com/v1",
                );
            }
        };
        let Some(host) = url.host().map(|host| host.to_owned()) else {
            return Err("must name a host, e.g. https://api.openai.com/v1");
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "must not carry credentials: put them in a Secret and reference it instead",
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must be a base URL without ?query or #fragment");
        }
        Ok(Endpoint {
            tls,
            host,
            // `url` already leaves out a port that is the scheme's default.
            port: url.port(),
            base_path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// True for `https://`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `host[:port]`, the port only when it is not the scheme's default: the URL authority and
    /// the `Host` header a client sends.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_string(),
        }
    }

    /// The base path without a trailing slash (empty for the root), e.g. `/v1`.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// True when a key may travel here: TLS, or plain HTTP that stays on this host or inside the
    /// cluster network (loopback, `localhost`, a single-label name, `*.svc`,
    /// `*.svc.cluster.local`).
    pub fn key_safe(&self) -> bool {
        if self.tls {
            return true;
        }
        match &self.host {
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
            url::Host::Domain(host) => {
                let host = host.trim_end_matches('.');
                host == "localhost"
                    || !host.contains('.')
                    || host.ends_with(".svc")
                    || host.ends_with(".svc.cluster.local")
            }
        }
    }
}

impl fmt::Display for Endpoint {
    /// `scheme://authority/base` without a trailing slash: prefix of every upstream URI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.authority(), self.base_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted endpoints split into their parts, with default ports and trailing slashes gone.
    #[test]
    fn parses_base_urls() {
        let table = [
            ("https://api.openai.com/v1", "https://api.openai.com/v1", "api.openai.com"),
            ("https://api.openai.com/v1/", "https://api.openai.com/v1", "api.openai.com"),
            ("http://relay:80/v1", "http://relay/v1", "relay"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://[::1]:9000/v1", "http://[::1]:9000/v1", "[::1]:9000"),
            ("HTTP://Relay.AI.svc:8080/v1", "http://relay.ai.svc:8080/v1", "relay.ai.svc:8080"),
        ];
        for (text, display, authority) in table {
            let endpoint = Endpoint::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(endpoint.to_string(), display, "{text}");
            assert_eq!(endpoint.authority(), authority, "{text}");
        }
    }

    /// Refused endpoints get the fix, never a guess.
    #[test]
    fn refuses_what_is_not_a_base_url() {
        let table = [
            ("api.openai.com/v1", "absolute http:// or https:// URL"),
            ("ftp://files/v1", "http:// or https:// scheme"),
            ("http://user:pw@relay:9000", "must not carry credentials"),
            ("http://relay/v1?key=1", "without ?query"),
            ("http://relay/v1#x", "without ?query or #fragment"),
        ];
        for (text, fix) in table {
            let error = Endpoint::parse(text).expect_err(text);
            assert!(error.contains(fix), "{text}: {error}");
        }
    }
}
