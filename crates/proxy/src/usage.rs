//! Token usage from upstream answers: a complete JSON body, or the `usage` object of an SSE
//! `data:` line (chat, embeddings and Responses API shapes).
//!
//! The top-level `usage` is found by a byte-wise skim (module `skim`) and only its value is
//! parsed; a body the skim cannot vouch for (or one with a `response` member, where the
//! Responses API nests its usage) is parsed in full, with the same answer.

use serde::Deserialize;

use crate::skim::{Skimmed, top_level_member};

#[derive(Deserialize)]
struct UsageFields {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct NestedUsage {
    usage: Option<UsageFields>,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<UsageFields>,
    /// The Responses API puts usage in `response.usage` of its `response.completed` event.
    response: Option<NestedUsage>,
}

impl UsageFields {
    fn tokens(self) -> (u64, u64) {
        (self.prompt_tokens.unwrap_or(0), self.completion_tokens.unwrap_or(0))
    }
}

impl WithUsage {
    fn tokens(self) -> Option<(u64, u64)> {
        let usage = self.usage.or_else(|| self.response.and_then(|r| r.usage))?;
        Some(usage.tokens())
    }
}

/// Usage from a complete JSON body (the same answer as parsing it whole into [`WithUsage`]).
pub(crate) fn usage_of_json(body: &[u8]) -> Option<(u64, u64)> {
    match top_level_member(body, b"usage", &[b"response"]) {
        Skimmed::Found(value) => {
            serde_json::from_slice::<Option<UsageFields>>(value).ok()?.map(UsageFields::tokens)
        }
        Skimmed::Absent => None,
        Skimmed::Unsure => full_parse(body),
    }
}

fn full_parse(body: &[u8]) -> Option<(u64, u64)> {
    serde_json::from_slice::<WithUsage>(body).ok()?.tokens()
}

/// Usage from one SSE line, if it is a `data:` line carrying a non-null `usage` object.
pub(crate) fn usage_of_sse_line(line: &[u8]) -> Option<(u64, u64)> {
    let payload = line.strip_prefix(b"data:")?;
    // Cheap pre-check so chunks with no usage (or "usage":null) are never parsed.
    let at = find_usage_key(payload)? + USAGE_KEY.len();
    let after = payload[at..].iter().position(|b| !matches!(b, b' ' | b':' | b'\t'))?;
    if payload[at + after] != b'{' {
        return None;
    }
    usage_of_json(payload.trim_ascii())
}

/// Where `"usage"` first occurs (a prebuilt SIMD searcher: every SSE line is checked).
fn find_usage_key(haystack: &[u8]) -> Option<usize> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(USAGE_KEY));
    FINDER.find(haystack)
}

const USAGE_KEY: &[u8] = b"\"usage\"";

#[cfg(test)]
mod tests {
    use super::*;

    type UsageCase = (&'static [u8], Option<(u64, u64)>);

    /// Usage is read from chat, embeddings and Responses API shapes; null and absent are None.
    #[test]
    fn usage_from_sse_lines() {
        let table: [UsageCase; 7] = [
            (br#"data: {"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#, Some((12, 34))),
            (br#"data:{"usage": {"prompt_tokens":1}}"#, Some((1, 0))),
            (br#"data: {"id":"x","choices":[{"delta":{"content":"hi"}}],"usage":null}"#, None),
            (br#"data: {"id":"x","choices":[{"delta":{"content":"\"usage\":{"}}]}"#, None),
            (br#"data: {"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5,"output_tokens":6}}}"#, Some((5, 6))),
            (b"data: [DONE]", None),
            (br#"event: {"usage":{"prompt_tokens":1}}"#, None),
        ];
        for (line, expected) in table {
            assert_eq!(usage_of_sse_line(line), expected, "{}", String::from_utf8_lossy(line));
        }
    }

    /// Usage is read from complete JSON bodies.
    #[test]
    fn usage_from_json_bodies() {
        let table: [UsageCase; 15] = [
            (br#"{"object":"chat.completion","usage":{"prompt_tokens":3,"completion_tokens":4}}"#, Some((3, 4))),
            (br#"{"object":"list","data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":8,"total_tokens":8}}"#, Some((8, 0))),
            (br#"{"object":"chat.completion"}"#, None),
            // Nested objects and strings holding "usage" do not count; the top-level one does.
            (br#"{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":9}","usage":{"prompt_tokens":7}}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#, Some((1, 2))),
            (br#"{"choices":[{"message":{"usage":{"prompt_tokens":7}}}]}"#, None),
            (br#"{"id":"x","usage":null}"#, None),
            // The Responses API: top-level usage in a non-streamed answer, response.usage in events.
            (br#"{"object":"response","output":[{"content":[{"text":"hi"}]}],"usage":{"input_tokens":5,"output_tokens":6}}"#, Some((5, 6))),
            (br#"{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5,"output_tokens":6}}}"#, Some((5, 6))),
            (br#"{"usage":null,"response":{"usage":{"input_tokens":2}}}"#, Some((2, 0))),
            // Escaped keys and unusual spacing read like plain ones (the full parse decides).
            (br#"{"us\u0061ge":{"prompt_tokens":4}}"#, Some((4, 0))),
            (b" {\n \"usage\" :\t{ \"completion_tokens\" : 3 } }\n", Some((0, 3))),
            // Malformed answers count nothing, as the full parse does.
            (br#"{"usage":{"prompt_tokens":3}"#, None),
            (br#"{"usage":{"prompt_tokens":3}} trailing"#, None),
            (br#"{"usage":{"prompt_tokens":"3"}}"#, None),
            (br#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#, None),
        ];
        for (body, expected) in table {
            assert_eq!(usage_of_json(body), expected, "{}", String::from_utf8_lossy(body));
            assert_eq!(usage_of_json(body), full_parse(body), "{}", String::from_utf8_lossy(body));
        }
    }
}
