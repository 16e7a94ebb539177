//! A byte-wise walk over a JSON object's top-level members that finds one member's value
//! without building the others: strings are skipped eight bytes at a time to their closing quote,
//! nested values by bracket matching. It does not validate what it skips (numbers, literals,
//! UTF-8); whenever the shape is not the plain one it can vouch for (not an object, a truncated
//! or unbalanced body, an escaped key, a duplicate, trailing bytes, a key named in `unsure_keys`)
//! it answers [`Skimmed::Unsure`] and the caller parses the body in full instead.

/// What a skim found for the wanted key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skimmed<'a> {
    /// The key occurs once at the top level; this is its value's JSON text.
    Found(&'a [u8]),
    /// The body is a plain object without the key.
    Absent,
    /// The skim cannot vouch for the answer: parse the body in full.
    Unsure,
}

/// Deepest nesting the skim follows (one bit per level); deeper bodies are parsed in full.
const MAX_DEPTH: u32 = 64;
/// Every byte of a word set to 1, and to 0x80.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` equal to `byte` set (bytes above a match may be flagged
/// too; the lowest flag is exact).
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let diff = word ^ (ONES * u64::from(byte));
    diff.wrapping_sub(ONES) & !diff & HIGHS
}

/// The value of top-level member `wanted` of the JSON object `body`. A member named in
/// `unsure_keys` makes the answer [`Skimmed::Unsure`] (the caller's full parse reads it).
pub(crate) fn top_level_member<'a>(
    body: &'a [u8],
    wanted: &[u8],
    unsure_keys: &[&[u8]],
) -> Skimmed<'a> {
    skim(body, wanted, unsure_keys).unwrap_or(Skimmed::Unsure)
}

fn skim<'a>(body: &'a [u8], wanted: &[u8], unsure_keys: &[&[u8]]) -> Option<Skimmed<'a>> {
    let mut cursor = Cursor { bytes: body, at: 0 };
    cursor.skip_whitespace();
    cursor.expect(b'{')?;
    cursor.skip_whitespace();
    let mut found = None;
    if cursor.peek() == Some(b'}') {
        cursor.at += 1;
    } else {
        loop {
            cursor.skip_whitespace();
            let (key, escaped) = cursor.string()?;
            // An escaped key may spell the wanted one: only a full parse knows.
            if escaped || unsure_keys.contains(&key) {
                return None;
            }
            cursor.skip_whitespace();
            cursor.expect(b':')?;
            cursor.skip_whitespace();
            let value = cursor.value()?;
            if key == wanted {
                if found.is_some() {
                    return None;
                }
                found = Some(value);
            }
            cursor.skip_whitespace();
            match cursor.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    cursor.skip_whitespace();
    if cursor.at != body.len() {
        return None;
    }
    Some(found.map_or(Skimmed::Absent, Skimmed::Found))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// A string starting at the cursor: its raw content and whether it holds an escape.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            let offset = self.string_stop()?;
            self.at += offset;
            if self.bytes[self.at] == b'"' {
                let content = &self.bytes[start..self.at];
                self.at += 1;
                return Some((content, escaped));
            }
            // A backslash: the byte after it is never the closing quote.
            escaped = true;
            self.at += 2;
        }
    }

    /// Where the next quote or backslash is, from the cursor: eight bytes at a time (a
    /// per-string SIMD search costs more to set up than most keys and short values take).
    fn string_stop(&self) -> Option<usize> {
        let rest = self.bytes.get(self.at..)?;
        let mut chunks = rest.chunks_exact(8);
        let mut offset = 0;
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            let stops = bytes_equal(word, b'"') | bytes_equal(word, b'\\');
            if stops != 0 {
                // The lowest flagged byte is always a true match (false flags sit above one).
                return Some(offset + (stops.trailing_zeros() / 8) as usize);
            }
            offset += 8;
        }
        let tail = chunks.remainder().iter().position(|&b| b == b'"' || b == b'\\')?;
        Some(offset + tail)
    }

    /// Skips one value starting at the cursor and returns its text.
    fn value(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => self.nested()?,
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                while let Some(byte) = self.peek() {
                    if matches!(byte, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                        break;
                    }
                    self.at += 1;
                }
            }
            _ => return None,
        }
        Some(&self.bytes[start..self.at])
    }

    /// Skips an object or array, checking that every bracket closes the one it should.
    fn nested(&mut self) -> Option<()> {
        // Bit n set: level n is an object; clear: an array.
        let mut kinds: u64 = 0;
        let mut depth: u32 = 0;
        loop {
            match self.peek()? {
                b'"' => {
                    self.string()?;
                    continue;
                }
                open @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    if open == b'{' {
                        kinds |= 1 << depth;
                    } else {
                        kinds &= !(1 << depth);
                    }
                    depth += 1;
                }
                close @ (b'}' | b']') => {
                    depth = depth.checked_sub(1)?;
                    let is_object = kinds & (1 << depth) != 0;
                    if is_object != (close == b'}') {
                        return None;
                    }
                    if depth == 0 {
                        self.at += 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wanted member is found at the top level only, whatever comes before it (nested
    /// objects, arrays, strings holding the key or brackets, escaped quotes).
    #[test]
    fn finds_top_level_member() {
        let table: [(&str, Skimmed<'_>); 9] = [
            (r#"{"usage":{"a":1}}"#, Skimmed::Found(br#"{"a":1}"#)),
            (r#" { "x" : 1 , "usage" : null } "#, Skimmed::Found(b"null")),
            (r#"{"usage":42}"#, Skimmed::Found(b"42")),
            (r#"{"usage":"s"}"#, Skimmed::Found(br#""s""#)),
            (r#"{"a":{"usage":{"b":2}},"b":[{"usage":1}]}"#, Skimmed::Absent),
            (r#"{"a":"\"usage\":{","usage":[1,{"c":"]}"}]}"#, Skimmed::Found(br#"[1,{"c":"]}"}]"#)),
            (r#"{"a":"x\\","usage":true}"#, Skimmed::Found(b"true")),
            (r#"{}"#, Skimmed::Absent),
            ("{\n\t\"n\": -1.5e3,\r\n\"usage\":false}\n", Skimmed::Found(b"false")),
        ];
        for (body, expected) in table {
            assert_eq!(top_level_member(body.as_bytes(), b"usage", &[]), expected, "{body}");
        }
    }

    /// Whatever the skim cannot vouch for is left to the full parse.
    #[test]
    fn unsure_shapes() {
        let table: [&[u8]; 14] = [
            b"",
            b"[1,2]",
            br#"{"usage":{"a":1}"#,
            br#"{"usage":{"a":1}}}"#,
            br#"{"usage":{"a":1}} x"#,
            br#"{"usage":[1}}"#,
            br#"{"usage":{"a":1]}"#,
            br#"{"us\u0061ge":{"a":1}}"#,
            br#"{"usage":1,"usage":2}"#,
            br#"{"response":{"usage":{}}}"#,
            br#"{"usage":1 "x":2}"#,
            br#"{"usage":}"#,
            br#"{"a":"unterminated}"#,
            br#"{"a":1,}"#,
        ];
        for body in table {
            assert_eq!(
                top_level_member(body, b"usage", &[b"response"]),
                Skimmed::Unsure,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// Strings of every length around the word size are searched to their end, escapes included.
    #[test]
    fn long_strings() {
        for length in [0, 1, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100] {
            let text = "x".repeat(length);
            let body = format!(r#"{{"a":"{text}\"{text}\\","b":["{text}"],"usage":1}}"#);
            let found = top_level_member(body.as_bytes(), b"usage", &[]);
            assert_eq!(found, Skimmed::Found(b"1"), "{body}");
        }
    }

    /// The first quote or backslash of a word is found wherever it sits, whatever follows it.
    #[test]
    fn word_search() {
        for at in 0..8 {
            for stop in [b'"', b'\\'] {
                for after in [b'x', b'"', b'\\', 0x80, 0x00] {
                    let mut bytes = vec![b'a'; 16];
                    bytes[at] = stop;
                    bytes[at + 1..].fill(after);
                    let cursor = Cursor { bytes: &bytes, at: 0 };
                    assert_eq!(cursor.string_stop(), Some(at), "{bytes:?}");
                }
            }
        }
    }

    /// Nesting deeper than the skim follows is left to the full parse; up to it is walked.
    #[test]
    fn depth_limit() {
        let deep = |levels: usize| {
            format!("{{\"a\":{}{},\"usage\":1}}", "[".repeat(levels), "]".repeat(levels))
        };
        assert_eq!(top_level_member(deep(64).as_bytes(), b"usage", &[]), Skimmed::Found(b"1"));
        assert_eq!(top_level_member(deep(65).as_bytes(), b"usage", &[]), Skimmed::Unsure);
    }
}
