//! What a page says a block prints, and whether the real output agrees.

/// The wildcard: within a line any text, as a whole line any number of lines.
pub const WILDCARD: &str = "...";

/// One statement about a block's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// `# prints: TEXT` comments: each pattern is found within a line of the output, in this
    /// order.
    Lines(Vec<String>),
    /// A `text output` block or a console block's output lines: the whole output, line by line.
    Whole(Vec<String>),
}

impl Expected {
    /// Whether `output` satisfies this expectation.
    pub fn is_met_by(&self, output: &str) -> bool {
        let actual = normalized_lines(output);
        match self {
            Expected::Lines(patterns) => {
                let mut rest = actual.iter();
                patterns.iter().all(|pattern| {
                    let anywhere = format!("{WILDCARD}{pattern}{WILDCARD}");
                    rest.any(|line| line_matches(&anywhere, line))
                })
            }
            Expected::Whole(expected) => {
                let expected: Vec<&str> = expected.iter().map(|l| l.trim_end()).collect();
                let actual: Vec<&str> = actual.iter().map(String::as_str).collect();
                lines_match(&expected, &actual)
            }
        }
    }

    /// The expected text, for a failure message.
    pub fn describe(&self) -> String {
        match self {
            Expected::Lines(patterns) => patterns
                .iter()
                .map(|p| format!("a line matching: {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
            Expected::Whole(lines) => lines.join("\n"),
        }
    }
}

/// Output lines without trailing blanks or `\r` (HTTP headers end in CRLF), and without the
/// trailing empty lines a terminal would not show either.
fn normalized_lines(output: &str) -> Vec<String> {
    let mut lines: Vec<String> = output.lines().map(|l| l.trim_end().to_owned()).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Whether `line` matches `pattern`, where `...` in the pattern stands for any text.
pub fn line_matches(pattern: &str, line: &str) -> bool {
    let pattern = pattern.trim_end();
    let line = line.trim_end();
    let pieces: Vec<&str> = pattern.split(WILDCARD).collect();
    if pieces.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !line.starts_with(first) || !line.ends_with(last) || line.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Whether `actual` matches `expected` line for line, a `...` line standing for any number of
/// lines.
fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&WILDCARD, rest)) => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((pattern, rest)) => actual
            .split_first()
            .is_some_and(|(line, tail)| line_matches(pattern, line) && lines_match(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Expected {
        Expected::Whole(text.lines().map(str::to_owned).collect())
    }

    /// `...` inside a line stands for any text, including none.
    #[test]
    fn wildcard_within_a_line() {
        for (pattern, line, matches) in [
            (
                "export KUBECONFIG=.../.cache/cluster/kubeconfig",
                "export KUBECONFIG=/tmp/x/.cache/cluster/kubeconfig",
                true,
            ),
            (
                "export KUBECONFIG=.../.cache/cluster/kubeconfig",
                "export KUBECONFIG=/tmp/x/kubeconfig",
                false,
            ),
            ("a...b...c", "abc", true),
            ("a...b...c", "a-c-b", false),
            ("ab...ba", "aba", false),
            ("plain", "plain  ", true),
            ("plain", "plainer", false),
        ] {
            assert_eq!(line_matches(pattern, line), matches, "{pattern:?} against {line:?}");
        }
    }

    /// A whole-output block must account for every line; `...` lines absorb any number of them.
    #[test]
    fn whole_output_matches_line_for_line() {
        let output =
            "HTTP/1.1 200 OK\r\ndate: Sun\r\nx-modelrollout-track: stable\r\n\r\n{\"id\":1}\n\n";
        assert!(
            whole("HTTP/1.1 200 OK\n...\nx-modelrollout-track: stable\n\n{...}").is_met_by(output)
        );
        assert!(whole("HTTP/1.1 200 OK\n...\n{\"id\":1}").is_met_by(output));
        assert!(!whole("HTTP/1.1 200 OK\nx-modelrollout-track: stable\n...").is_met_by(output));
        assert!(
            !whole("HTTP/1.1 200 OK\n...\nx-modelrollout-track: canary\n...").is_met_by(output)
        );
        assert!(!whole("HTTP/1.1 200 OK").is_met_by(output));
    }

    /// `# prints:` patterns are found within lines, in order, with any lines between them.
    #[test]
    fn printed_lines_in_order() {
        let output = "compiling\nexport KUBECONFIG=/x/kubeconfig\nnamespace/ai created\n";
        let expect = |p: &[&str]| Expected::Lines(p.iter().map(|s| s.to_string()).collect());
        assert!(expect(&["export KUBECONFIG=...", "namespace/ai created"]).is_met_by(output));
        assert!(!expect(&["namespace/ai created", "export KUBECONFIG=..."]).is_met_by(output));
        assert!(!expect(&["namespace/ml created"]).is_met_by(output));
        assert!(expect(&["KUBECONFIG=/x", "ai created"]).is_met_by(output));
    }
}
