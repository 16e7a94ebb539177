//! Request paths before they reach an upstream: normalised (empty and `.` segments dropped),
//! escapes refused (`..`, percent-encoded dots or slashes), and pass-through limited to the
//! OpenAI surface plus `--passthrough-path` prefixes.
//!
//! The path is appended to an upstream's base path with the arm's key attached, so a client
//! must not be able to climb out of `/v1` (`/v1/../admin`, `/v1/%2e%2e/admin`) or reach paths
//! the upstream serves beside its API.

use http::Method;

/// `/v1/` paths passed through to the stable arm: the OpenAI API besides the model-routed
/// paths and `/v1/models`. A prefix matches itself and anything below it.
pub const OPENAI_PASSTHROUGH_PATHS: [&str; 12] = [
    "/v1/files",
    "/v1/uploads",
    "/v1/batches",
    "/v1/audio",
    "/v1/images",
    "/v1/moderations",
    "/v1/fine_tuning",
    "/v1/vector_stores",
    "/v1/assistants",
    "/v1/threads",
    "/v1/containers",
    "/v1/conversations",
];

/// Methods the OpenAI API uses; pass-through refuses others (405).
pub const PASSTHROUGH_METHODS: [Method; 3] = [Method::GET, Method::POST, Method::DELETE];

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escape;

/// `path` with empty and `.` segments dropped; `..` (plain or encoded) and encoded `/` or `\`
/// are an [`Escape`]. A trailing slash is kept.
pub fn normalise(path: &str) -> Result<String, Escape> {
    // One allocation, the result: segments are checked in place (most paths are already normal).
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/') {
        if segment.contains('\\')
            || contains_ignore_case(segment, "%2f")
            || contains_ignore_case(segment, "%5c")
        {
            return Err(Escape);
        }
        match dots(segment) {
            Some(0 | 1) => {}
            Some(2) => return Err(Escape),
            _ => {
                out.push('/');
                out.push_str(segment);
            }
        }
    }
    if path.ends_with('/') || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// How many dots `segment` is when it is only dots, each `.` or `%2e` (any case): an empty
/// segment is 0, `.` 1, `..` 2; `None` for any other segment.
fn dots(segment: &str) -> Option<usize> {
    let mut rest = segment.as_bytes();
    let mut count = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return None,
        };
        count += 1;
    }
    Some(count)
}

/// True when `needle` (ASCII) occurs in `haystack`, in any case, without a lowered copy.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// True when `path` (normalised) may be passed through: it is `prefix` or below it, for a
/// prefix of the OpenAI surface or of `extra`.
pub fn passthrough_allowed(path: &str, extra: &[String]) -> bool {
    let below = |prefix: &str| {
        let prefix = prefix.trim_end_matches('/');
        path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    OPENAI_PASSTHROUGH_PATHS.iter().any(|p| below(p)) || extra.iter().any(|p| below(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dot segments, encoded or not, never survive; empty and `.` segments collapse.
    #[test]
    fn normalises_and_refuses_escapes() {
        let table = [
            ("/v1/chat/completions", Ok("/v1/chat/completions")),
            ("/v1//files/./abc", Ok("/v1/files/abc")),
            ("/v1/files/", Ok("/v1/files/")),
            ("/v1/%2E/files", Ok("/v1/files")),
            ("/v1/../admin", Err(Escape)),
            ("/v1/files/..", Err(Escape)),
            ("/v1/%2e%2e/admin", Err(Escape)),
            ("/v1/.%2E/admin", Err(Escape)),
            ("/v1/files%2F..%2Fadmin", Err(Escape)),
            ("/v1/files%5c..", Err(Escape)),
            ("/v1/file..name", Ok("/v1/file..name")),
        ];
        for (path, expected) in table {
            assert_eq!(normalise(path).as_deref(), expected.as_deref(), "{path}");
        }
    }

    /// Only the OpenAI surface and the configured prefixes pass, at segment boundaries.
    #[test]
    fn passthrough_allow_list() {
        let extra = vec!["/v1/rerank/".to_owned()];
        let table = [
            ("/v1/files", true),
            ("/v1/files/file-1/content", true),
            ("/v1/batches", true),
            ("/v1/audio/transcriptions", true),
            ("/v1/rerank", true),
            ("/v1/filesystem", false),
            ("/v1/admin", false),
            ("/v1/rerankers", false),
            ("/v1/", false),
        ];
        for (path, allowed) in table {
            assert_eq!(passthrough_allowed(path, &extra), allowed, "{path}");
        }
    }
}
