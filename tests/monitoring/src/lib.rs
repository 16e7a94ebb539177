//! Support for the tests of `deploy/monitoring`: where its files are, where the Prometheus and
//! Alertmanager tools are (installed by `make deps`), running them with a time limit, and the
//! PromQL plumbing the dashboard test needs (Grafana variables, a blocking query client).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Version of the Prometheus Go module whose `promtool` `make deps` builds (Prometheus 3.x).
/// Debian's promtool is built without Kubernetes service discovery, so it cannot check a
/// scrape config that uses `kubernetes_sd_configs`. Keep in sync with the Makefile (a test
/// checks it).
pub const UPSTREAM_PROMTOOL_VERSION: &str = "v0.316.0";

/// Longest any tool run may take: they answer in well under a second when healthy.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// What can go wrong while running a tool or querying Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool is not installed where `make deps` puts it.
    #[error("{tool} is missing at {path}: run `make deps` ({installs}), or set {env} to the binary", path = path.display())]
    MissingTool {
        /// The tool's name.
        tool: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// What `make deps` does to install it.
        installs: &'static str,
        /// The variable that overrides the path.
        env: &'static str,
    },
    /// The tool could not be started or its output read.
    #[error("running {program}: {source}", program = program.display())]
    Io {
        /// The program.
        program: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The tool ran longer than [`TOOL_TIMEOUT`] and was killed.
    #[error("{program} {args} did not finish within {TOOL_TIMEOUT:?} and was killed", program = program.display())]
    Timeout {
        /// The program.
        program: PathBuf,
        /// Its arguments, space-separated.
        args: String,
    },
    /// An HTTP request to Prometheus failed.
    #[error("GET {path} on {addr}: {detail}")]
    Http {
        /// The server.
        addr: SocketAddr,
        /// The request path.
        path: String,
        /// What went wrong.
        detail: String,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The workspace root (this crate is `tests/monitoring`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `deploy/monitoring`, the files under test.
pub fn monitoring_dir() -> PathBuf {
    workspace_root().join("deploy/monitoring")
}

/// The command-line tools the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Debian's promtool (package `prometheus`), the same release as the Prometheus the tests run.
    DebianPromtool,
    /// Upstream promtool 3.x built by `make deps` with every service discovery, Kubernetes included.
    UpstreamPromtool,
    /// Debian's amtool (package `prometheus-alertmanager`).
    Amtool,
}

impl Tool {
    /// Where the tool is: its environment variable, else where `make deps` installs it.
    pub fn path(self) -> PathBuf {
        match std::env::var_os(self.env()) {
            Some(path) => PathBuf::from(path),
            None => match self {
                Tool::DebianPromtool => PathBuf::from("/usr/bin/promtool"),
                Tool::Amtool => PathBuf::from("/usr/bin/amtool"),
                Tool::UpstreamPromtool => upstream_promtool_default(),
            },
        }
    }

    /// The variable that overrides [`Self::path`].
    pub fn env(self) -> &'static str {
        match self {
            Tool::DebianPromtool => "MODELROLLOUT_PROMTOOL",
            Tool::UpstreamPromtool => "MODELROLLOUT_UPSTREAM_PROMTOOL",
            Tool::Amtool => "MODELROLLOUT_AMTOOL",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tool::DebianPromtool | Tool::UpstreamPromtool => "promtool",
            Tool::Amtool => "amtool",
        }
    }

    fn installs(self) -> &'static str {
        match self {
            Tool::DebianPromtool => "it installs Debian's prometheus package",
            Tool::UpstreamPromtool => {
                "it builds promtool with Kubernetes discovery from the Prometheus Go module"
            }
            Tool::Amtool => "it installs Debian's prometheus-alertmanager package",
        }
    }

    /// Runs the tool with `args` in `dir`, killed after [`TOOL_TIMEOUT`].
    pub fn run(self, dir: &Path, args: &[&str]) -> Result<ToolOutput> {
        let program = self.path();
        if !is_executable(&program) {
            return Err(Error::MissingTool {
                tool: self.name(),
                path: program,
                installs: self.installs(),
                env: self.env(),
            });
        }
        run_bounded(&program, dir, args)
    }
}

/// `~/.cache/modelrollout/promtool-<version>/promtool`, where `make deps` installs it.
fn upstream_promtool_default() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    home.join(".cache/modelrollout")
        .join(format!("promtool-{UPSTREAM_PROMTOOL_VERSION}"))
        .join("promtool")
}

/// What a tool printed and how it ended.
#[derive(Debug)]
pub struct ToolOutput {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output and standard error, one after the other.
    pub text: String,
}

impl ToolOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Runs `program` and collects its output; kills it after [`TOOL_TIMEOUT`].
fn run_bounded(program: &Path, dir: &Path, args: &[&str]) -> Result<ToolOutput> {
    let io = |source| Error::Io { program: program.to_path_buf(), source };
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    // Read both pipes while waiting, so a chatty tool never blocks on a full pipe.
    let readers: Vec<_> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    })
    .collect();
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout { program: program.to_path_buf(), args: args.join(" ") });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = readers.into_iter().map(|r| r.join().unwrap_or_default()).collect();
    Ok(ToolOutput { status, text })
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// === PromQL and Grafana ===

/// Replaces the Grafana variables the dashboard uses with concrete values: `$namespace`,
/// `$rollout`, and `$__rate_interval` (which Grafana sets to at least four scrape intervals).
pub fn substitute(expr: &str, namespace: &str, rollout: &str, rate_interval: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$namespace", namespace)
        .replace("$rollout", rollout)
}

/// Grafana's `label_values(selector, label)` as the PromQL query that lists the same values,
/// `count by (label) (selector)`; `None` for anything else.
pub fn label_values_query(definition: &str) -> Option<String> {
    let inner = definition.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    let label = label.trim();
    let valid = !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| format!("count by ({label}) ({})", selector.trim()))
}

/// The metric names of this project (`gray_release_*`, `modelrollout_*`) an expression uses,
/// with a histogram's `_bucket`/`_count`/`_sum` suffix kept, in order of appearance.
pub fn project_metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        if is_word(bytes[start]) && (start == 0 || !is_word(bytes[start - 1])) {
            let end = (start..bytes.len()).find(|&i| !is_word(bytes[i])).unwrap_or(bytes.len());
            let word = &expr[start..end];
            let ours = word.starts_with("gray_release_") || word.starts_with("modelrollout_");
            // A label value in quotes is not a metric name.
            let quoted = start > 0 && bytes[start - 1] == b'"';
            if ours && !quoted && !names.iter().any(|n| n == word) {
                names.push(word.to_owned());
            }
            start = end;
        } else {
            start += 1;
        }
    }
    names
}

/// The result of one instant query.
#[derive(Debug)]
pub struct QueryResult {
    /// `vector`, `scalar`, `matrix` or `string`.
    pub result_type: String,
    /// Each series' labels and value (one entry for a scalar).
    pub series: Vec<(serde_json::Value, String)>,
}

/// Runs an instant query at the current time; an error names Prometheus' own message (e.g. a
/// parse error with its position).
pub fn instant_query(prometheus: SocketAddr, query: &str) -> Result<QueryResult> {
    let path = format!("/api/v1/query?query={}", percent_encode(query));
    let (status, body) = http_get(prometheus, &path)?;
    let http_error = |detail: String| Error::Http { addr: prometheus, path: path.clone(), detail };
    let answer: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| http_error(format!("status {status}, body is not JSON ({e}): {body}")))?;
    if answer["status"] != "success" {
        return Err(http_error(format!(
            "status {status}: {} {}",
            answer["errorType"].as_str().unwrap_or(""),
            answer["error"].as_str().unwrap_or(&body)
        )));
    }
    let data = &answer["data"];
    let result_type = data["resultType"].as_str().unwrap_or_default().to_owned();
    let series = match data["result"].as_array() {
        Some(items) => items
            .iter()
            .map(|item| {
                let value = item["value"][1].as_str().unwrap_or_default().to_owned();
                (item["metric"].clone(), value)
            })
            .collect(),
        // A scalar or string result: [time, "value"].
        None => vec![(serde_json::Value::Null, data["result"][1].to_string())],
    };
    Ok(QueryResult { result_type, series })
}

/// Every metric name Prometheus has stored.
pub fn metric_names(prometheus: SocketAddr) -> Result<Vec<String>> {
    let path = "/api/v1/label/__name__/values";
    let (_, body) = http_get(prometheus, path)?;
    let answer: serde_json::Value = serde_json::from_str(&body).map_err(|e| Error::Http {
        addr: prometheus,
        path: path.to_owned(),
        detail: format!("not JSON ({e}): {body}"),
    })?;
    Ok(answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect())
}

/// `GET path` as HTTP/1.0 (the server closes the connection and never chunks).
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(10);
    let fail = |detail: String| Error::Http { addr, path: path.to_owned(), detail };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| fail(e.to_string()))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| fail("malformed HTTP response".to_owned()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail(format!("no status line in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a query parameter.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Grafana variable the dashboard uses is replaced; nothing else changes.
    #[test]
    fn substitutes_grafana_variables() {
        let expr =
            r#"sum(rate(x{rollout_namespace="$namespace", rollout="$rollout"}[$__rate_interval]))"#;
        assert_eq!(
            substitute(expr, "shop", "bot", "1m"),
            r#"sum(rate(x{rollout_namespace="shop", rollout="bot"}[1m]))"#
        );
    }

    /// `label_values` becomes a `count by`; other definitions are not understood.
    #[test]
    fn label_values_becomes_count_by() {
        assert_eq!(
            label_values_query(r#"label_values(m{a="$x", b="y"}, rollout)"#).as_deref(),
            Some(r#"count by (rollout) (m{a="$x", b="y"})"#)
        );
        assert_eq!(label_values_query("label_values(m, bad label)"), None);
        assert_eq!(label_values_query("query_result(up)"), None);
    }

    /// Only our metric names are found, once each, not label values that look like them.
    #[test]
    fn finds_project_metric_names() {
        let expr = r#"sum(rate(gray_release_requests_total{a="gray_release_x"}[1m])) / sum(rate(gray_release_requests_total[1m])) and on (i) modelrollout_phase == 1 or up"#;
        assert_eq!(
            project_metric_names(expr),
            ["gray_release_requests_total", "modelrollout_phase"]
        );
    }

    /// Reserved characters are escaped, unreserved ones kept.
    #[test]
    fn percent_encodes_queries() {
        assert_eq!(percent_encode(r#"a{b="c d"}[1m]"#), "a%7Bb%3D%22c%20d%22%7D%5B1m%5D");
        assert_eq!(percent_encode("x_y-z.~"), "x_y-z.~");
    }

    /// The promtool version here is the one the Makefile installs.
    #[test]
    fn makefile_installs_this_promtool_version() {
        let makefile =
            std::fs::read_to_string(workspace_root().join("Makefile")).expect("Makefile");
        assert!(
            makefile.contains(UPSTREAM_PROMTOOL_VERSION),
            "the Makefile does not install promtool {UPSTREAM_PROMTOOL_VERSION}: update one of them"
        );
    }

    /// A missing tool is an error that says to run `make deps`.
    #[test]
    fn missing_tool_says_make_deps() {
        let err = Error::MissingTool {
            tool: "amtool",
            path: PathBuf::from("/nowhere/amtool"),
            installs: Tool::Amtool.installs(),
            env: Tool::Amtool.env(),
        };
        let text = err.to_string();
        assert!(text.contains("run `make deps`") && text.contains("/nowhere/amtool"), "{text}");
    }
}
