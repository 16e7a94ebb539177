//! The fenced code blocks of a Markdown page, with their section and their markers.

use crate::expect::Expected;

/// How a block is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `sh`, `bash`, `shell`: sourced into the section's shell session.
    Shell,
    /// `console`: the `$ ` lines are commands, the others their output.
    Console,
    /// `python`: run by the project's Python (the one with the `openai` client).
    Python,
}

/// A runnable (or deliberately skipped) block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The heading the block sits under (blocks of one section share a shell session).
    pub section: String,
    /// 1-based line of the opening fence.
    pub line: usize,
    pub language: Language,
    /// The commands (for a console block, without prompts and output).
    pub code: String,
    /// Why the block is not run, from `skip="..."`.
    pub skip: Option<String>,
    /// Rerun until the output matches (`retry`).
    pub retry: bool,
    /// What the page says it prints.
    pub expected: Vec<Expected>,
}

impl Block {
    /// The first command line without its comment, to name the block in messages.
    pub fn first_line(&self) -> &str {
        let line = self.code.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        line.split_once(" #").map_or(line, |(command, _)| command).trim()
    }
}

/// A marker the runner does not understand, or an output block with nothing to belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for MarkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The runnable blocks of `text`, in page order.
pub fn blocks(text: &str) -> Result<Vec<Block>, MarkerError> {
    let mut blocks: Vec<Block> = vec![];
    let mut section = String::new();
    // Whether the last fenced block was a runnable one that a `text output` block may follow.
    let mut last_was_runnable = false;
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        if let Some(title) = heading(line) {
            section = title;
            last_was_runnable = false;
            continue;
        }
        let Some(fence) = Fence::open(line) else { continue };
        let mut body = vec![];
        for (_, inner) in lines.by_ref() {
            if fence.closes(inner) {
                break;
            }
            body.push(fence.dedent(inner));
        }
        let line = index + 1;
        let info = Info::parse(&fence.info).map_err(|message| MarkerError { line, message })?;
        let language = match info.language.as_str() {
            "sh" | "bash" | "shell" => Language::Shell,
            "console" => Language::Console,
            "python" | "py" => Language::Python,
            _ if info.has("output") => {
                info.only(&["output"]).map_err(|message| MarkerError { line, message })?;
                let Some(owner) = blocks.last_mut().filter(|_| last_was_runnable) else {
                    return Err(MarkerError {
                        line,
                        message: "an `output` block must follow the runnable block whose output \
                                  it shows, in the same section"
                            .into(),
                    });
                };
                owner.expected.push(Expected::Whole(body));
                last_was_runnable = false;
                continue;
            }
            _ => {
                last_was_runnable = false;
                continue;
            }
        };
        info.only(&["skip", "retry"]).map_err(|message| MarkerError { line, message })?;
        let skip = match info.get("skip") {
            Some(Some(reason)) if !reason.trim().is_empty() => Some(reason.to_owned()),
            Some(_) => {
                return Err(MarkerError {
                    line,
                    message: "`skip` needs a reason the test can print: skip=\"why\"".into(),
                });
            }
            None => None,
        };
        let (code, mut expected) = match language {
            Language::Console => console(&body),
            _ => (body.join("\n") + "\n", vec![]),
        };
        let printed = printed_patterns(&code);
        if !printed.is_empty() {
            expected.insert(0, Expected::Lines(printed));
        }
        last_was_runnable = skip.is_none();
        blocks.push(Block {
            section: section.clone(),
            line,
            language,
            code,
            skip,
            retry: info.has("retry"),
            expected,
        });
    }
    Ok(blocks)
}

/// An ATX heading's text (`## Run it` → `Run it`).
fn heading(line: &str) -> Option<String> {
    let trimmed = strip_indent(line)?;
    let level = trimmed.chars().take_while(|&c| c == '#').count();
    let rest = &trimmed[level..];
    if !(1..=6).contains(&level) || !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some(rest.trim().trim_end_matches('#').trim().to_owned())
}

/// `line` without up to three spaces of indentation, or `None` when it is indented more (an
/// indented code block, never run).
fn strip_indent(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    (indent <= 3).then(|| &line[indent..])
}

/// An open code fence.
#[derive(Debug)]
struct Fence {
    marker: char,
    length: usize,
    indent: usize,
    info: String,
}

impl Fence {
    fn open(line: &str) -> Option<Fence> {
        let trimmed = strip_indent(line)?;
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
        let length = trimmed.chars().take_while(|&c| c == marker).count();
        let info = trimmed[length..].trim();
        if length < 3 || (marker == '`' && info.contains('`')) {
            return None;
        }
        let indent = line.len() - trimmed.len();
        Some(Fence { marker, length, indent, info: info.to_owned() })
    }

    fn closes(&self, line: &str) -> bool {
        strip_indent(line).is_some_and(|trimmed| {
            let length = trimmed.chars().take_while(|&c| c == self.marker).count();
            length >= self.length && trimmed[length..].trim().is_empty()
        })
    }

    /// A content line without the fence's own indentation.
    fn dedent(&self, line: &str) -> String {
        let spaces = line.len() - line.trim_start_matches(' ').len();
        line[spaces.min(self.indent)..].to_owned()
    }
}

/// A fence's info string: the language, then `key`, `key=value` or `key="a value"`.
#[derive(Debug)]
struct Info {
    language: String,
    attributes: Vec<(String, Option<String>)>,
}

impl Info {
    fn parse(info: &str) -> Result<Info, String> {
        let info = info.trim();
        let (language, mut rest) = info.split_once(char::is_whitespace).unwrap_or((info, ""));
        let mut attributes = vec![];
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            let key_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
            let key = rest[..key_end].to_owned();
            rest = &rest[key_end..];
            let value = match rest.strip_prefix('=') {
                None => None,
                Some(after) => {
                    if let Some(quoted) = after.strip_prefix('"') {
                        let end = quoted.find('"').ok_or_else(|| {
                            format!("unterminated quote in the fence info {info:?}")
                        })?;
                        rest = &quoted[end + 1..];
                        Some(quoted[..end].to_owned())
                    } else {
                        let end = after.find(char::is_whitespace).unwrap_or(after.len());
                        rest = &after[end..];
                        Some(after[..end].to_owned())
                    }
                }
            };
            attributes.push((key, value));
        }
        Ok(Info { language: language.to_owned(), attributes })
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn get(&self, key: &str) -> Option<Option<&str>> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_deref())
    }

    /// Refuses markers other than `known`, so a typo cannot silently turn a check off.
    fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.attributes.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((key, _)) => Err(format!(
                "unknown marker `{key}` in the fence info `{} ...`: the README test knows {}",
                self.language,
                known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            )),
            None => Ok(()),
        }
    }
}

/// A console block's commands (`$ ` lines and their `\` continuations) and its output lines.
fn console(body: &[String]) -> (String, Vec<Expected>) {
    let mut code = String::new();
    let mut output = vec![];
    let mut continued = false;
    for line in body {
        if continued {
            code.push_str(line);
            code.push('\n');
            continued = line.trim_end().ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ").or((line == "$").then_some("")) {
            code.push_str(command);
            code.push('\n');
            continued = command.trim_end().ends_with('\\');
        } else {
            output.push(line.clone());
        }
    }
    let expected = if output.is_empty() { vec![] } else { vec![Expected::Whole(output)] };
    (code, expected)
}

/// The `# prints: TEXT` comments of a block.
fn printed_patterns(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| line.split_once("# prints:").map(|(_, text)| text.trim().to_owned()))
        .collect()
}

/// Whether a shell block leaves a command running in the background (a line ending in `&`).
pub fn starts_background_job(code: &str) -> bool {
    code.lines().any(|line| {
        let command = line.split_once(" #").map_or(line, |(command, _)| command).trim_end();
        command.ends_with('&') && !command.ends_with("&&")
    })
}

/// Every `make TARGET` a block names.
pub fn make_targets(code: &str) -> Vec<String> {
    let mut targets = vec![];
    for line in code.lines() {
        let command = line.split_once('#').map_or(line, |(command, _)| command);
        let words: Vec<&str> = command.split_whitespace().collect();
        for pair in words.windows(2) {
            let target = pair[1];
            if pair[0] == "make"
                && !target.is_empty()
                && target.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                targets.push(target.to_owned());
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# Title

```sh
make test          # everything
```

## Run it

Start it:

```sh
cargo run -q -p mock -- --listen 127.0.0.1:9001 &
make cluster-up    # prints: export KUBECONFIG=...
```

```yaml
not: run
```

```sh skip="needs a real cloud cluster"
helm install x
```

````console
$ curl -s http://127.0.0.1:9001/v1/models \
    -H 'a: b'
{"object":"list",...}
$ echo done
done
````

```python retry
print("hi")
```

It prints:

```text output
hi
```
"#;

    /// Blocks come with their section, line, language, markers and expected output.
    #[test]
    fn blocks_with_their_markers() {
        let blocks = blocks(PAGE).unwrap();
        let summary: Vec<_> = blocks
            .iter()
            .map(|b| (b.section.as_str(), b.line, b.language, b.skip.as_deref(), b.retry))
            .collect();
        assert_eq!(
            summary,
            [
                ("Title", 3, Language::Shell, None, false),
                ("Run it", 11, Language::Shell, None, false),
                ("Run it", 20, Language::Shell, Some("needs a real cloud cluster"), false),
                ("Run it", 24, Language::Console, None, false),
                ("Run it", 32, Language::Python, None, true),
            ]
        );
        assert_eq!(blocks[1].expected, [Expected::Lines(vec!["export KUBECONFIG=...".into()])]);
        assert_eq!(
            blocks[3].code,
            "curl -s http://127.0.0.1:9001/v1/models \\\n    -H 'a: b'\necho done\n"
        );
        assert_eq!(
            blocks[3].expected,
            [Expected::Whole(vec![r#"{"object":"list",...}"#.into(), "done".into()])]
        );
        assert_eq!(blocks[4].expected, [Expected::Whole(vec!["hi".into()])]);
        assert_eq!(blocks[3].first_line(), "curl -s http://127.0.0.1:9001/v1/models \\");
    }

    /// Typos and orphans in markers are errors, not silently unchecked blocks.
    #[test]
    fn marker_mistakes_are_refused() {
        for (page, message) in [
            ("```sh skipp=\"x\"\nls\n```\n", "unknown marker `skipp`"),
            ("```sh skip\nls\n```\n", "`skip` needs a reason"),
            ("```sh skip=\"\"\nls\n```\n", "`skip` needs a reason"),
            ("```sh skip=\"open\nls\n```\n", "unterminated quote"),
            ("```text output\nhi\n```\n", "must follow the runnable block"),
            ("```sh skip=\"x\"\nls\n```\n```text output\nhi\n```\n", "must follow"),
            ("```sh\nls\n```\n## Other\n```text output\nhi\n```\n", "must follow"),
        ] {
            let error = blocks(page).unwrap_err();
            assert!(error.message.contains(message), "{page:?}: {error}");
        }
    }

    /// Only a line that ends in a lone `&` starts a background job.
    #[test]
    fn background_jobs() {
        assert!(starts_background_job("a\nproxy --x &\n"));
        assert!(starts_background_job("proxy & # API on 8080\n"));
        assert!(!starts_background_job("sed x > y \\\n  && mv y z\n"));
        assert!(!starts_background_job("echo '&&'\n"));
    }

    /// `make` targets are found after `make`, comments ignored.
    #[test]
    fn make_targets_named() {
        assert_eq!(
            make_targets("make test   # runs make bench too\nmake cluster-up && make crds\n"),
            ["test", "cluster-up", "crds"]
        );
    }
}
