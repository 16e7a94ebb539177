//! A real Prometheus for tests: Debian's `/usr/bin/prometheus` on a free loopback port.
//!
//! [`TestPrometheus`] scrapes a list of `host:port` targets (their `/metrics`) through a
//! file_sd file, so tests can change the targets while it runs, and can stop and restart it on
//! the same port with the same data to test "Prometheus is down":
//!
//! ```no_run
//! # fn main() -> Result<(), modelrollout_testprometheus::Error> {
//! use std::time::Duration;
//! let prometheus = modelrollout_testprometheus::TestPrometheus::start(
//!     &["127.0.0.1:9464".to_owned()],
//!     Duration::from_secs(1),
//! )?;
//! prometheus.wait_scraped(Duration::from_secs(30))?;
//! println!("query {}/api/v1/query", prometheus.address());
//! # Ok(()) }
//! ```
//!
//! On this 2-core machine Prometheus is ready about 0.1–0.3 s after start; the first scrape of
//! the targets follows about 5 s later (its discovery manager's fixed update throttle).
//!
//! Nothing outlives the process that started it: Prometheus runs under a supervising shell
//! that stops it and removes its data directory as soon as the owner drops the handle, exits,
//! panics, or is killed (even with SIGKILL).

mod config;
mod http;
mod supervisor;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use config::JOB;
pub use supervisor::process_alive;

use supervisor::{Supervisor, log_tail, pid_file, read_pid};

/// Where Debian's package installs Prometheus.
pub const DEFAULT_BINARY: &str = "/usr/bin/prometheus";

/// Environment variable naming another Prometheus binary to use instead of [`DEFAULT_BINARY`].
pub const BINARY_ENV: &str = "MODELROLLOUT_PROMETHEUS";

/// How long Prometheus may take to answer `/-/ready` (a loaded 2-core CI machine is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a stop may take before the process is killed (the supervisor's own limit is 10 s).
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Timeout of each HTTP request to Prometheus.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong while starting, using or stopping a test Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Prometheus binary is not installed.
    #[error(
        "{path} is missing or not executable; run `make deps` (it installs Debian's prometheus package), or set {BINARY_ENV} to a Prometheus binary",
        path = path.display()
    )]
    MissingBinary {
        /// Where it was looked for.
        path: PathBuf,
    },

    /// A file or directory operation failed.
    #[error("{action} {path}: {source}", path = path.display())]
    Io {
        /// What was being done, e.g. "writing".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A path is not UTF-8, so it cannot go into a flag.
    #[error("path {path} is not valid UTF-8; set TMPDIR to a plain path", path = path.display())]
    NonUtf8Path {
        /// The offending path.
        path: PathBuf,
    },

    /// A process could not be started.
    #[error("starting {program}: {source}", program = program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The supervising shell is gone, so Prometheus can no longer be started or stopped.
    #[error("the supervisor of {dir} exited; its log ends with:\n{log}", dir = dir.display())]
    SupervisorGone {
        /// The data directory.
        dir: PathBuf,
        /// The end of the supervisor's log.
        log: String,
    },

    /// Prometheus exited or did not become ready in time.
    #[error("Prometheus on {address} {what}; the end of {log_path}:\n{log}", log_path = log_path.display())]
    NotReady {
        /// Its address.
        address: String,
        /// "exited during startup" or "was not ready after 90 s".
        what: String,
        /// The log file.
        log_path: PathBuf,
        /// The end of the log.
        log: String,
    },

    /// Not every target was scraped successfully in time.
    #[error(
        "Prometheus on {address} had not scraped every target successfully after {after:?}: {detail}"
    )]
    NotScraped {
        /// Its address.
        address: String,
        /// How long we waited.
        after: Duration,
        /// Each target that is not up, and why (Prometheus' last scrape error).
        detail: String,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the action and path to an I/O error.
pub(crate) trait IoContext<T> {
    /// Names what was being done to which path.
    fn context(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io { action, path: path.into(), source })
    }
}

/// The path as `&str`, for flags.
pub(crate) fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::NonUtf8Path { path: path.to_path_buf() })
}

/// A Prometheus process owned by this handle: killed and its data directory removed on drop.
#[derive(Debug)]
pub struct TestPrometheus {
    dir: PathBuf,
    addr: SocketAddr,
    supervisor: Supervisor,
    running: bool,
}

impl TestPrometheus {
    /// Starts Debian's /usr/bin/prometheus (or `$MODELROLLOUT_PROMETHEUS`) on a free loopback
    /// port, scraping `targets` (`host:port` of `/metrics` endpoints) every `scrape_interval`
    /// (1 s in tests), TSDB in a temporary directory; returns once `/-/ready` answers.
    pub fn start(targets: &[String], scrape_interval: Duration) -> Result<Self> {
        let binary = std::env::var_os(BINARY_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
        if !is_executable(&binary) {
            return Err(Error::MissingBinary { path: binary });
        }
        let started = Instant::now();
        // Another process may take the free port before Prometheus binds it: try a new one.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut prometheus = Self::launch(&binary, targets, scrape_interval)?;
            match prometheus.wait_ready() {
                Ok(()) => {
                    // Visible past the test harness's capture: startup time is worth knowing.
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "[testprometheus] Prometheus on {} ready after {:.1} s",
                        prometheus.address(),
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(prometheus);
                }
                Err(Error::NotReady { log, .. })
                    if attempt < 3 && log.contains("address already in use") => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Writes the configuration into a fresh directory and starts the supervised process.
    fn launch(binary: &Path, targets: &[String], scrape_interval: Duration) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testprometheus-")
            .tempdir()
            .context("creating a temporary directory in", std::env::temp_dir())?
            // The supervisor removes it, even when this process is killed.
            .keep();
        let port = free_loopback_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config::prometheus_yml(scrape_interval))
            .context("writing", &config)?;
        write_targets(&dir, targets)?;
        let args = vec![
            format!("--config.file={}", utf8(&config)?),
            format!("--storage.tsdb.path={}", utf8(&dir.join("data"))?),
            format!("--web.listen-address={addr}"),
            "--log.level=info".to_owned(),
        ];
        supervisor::write_launch_script(&dir, binary, &args)?;
        let mut supervisor = Supervisor::spawn(&dir)?;
        supervisor.send("start", &dir)?;
        Ok(Self { dir, addr, supervisor, running: true })
    }

    /// `http://127.0.0.1:PORT`, the base URL of its HTTP API.
    pub fn address(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id of the running Prometheus, `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        read_pid(&pid_file(&self.dir)).filter(|&pid| process_alive(pid))
    }

    /// The directory holding its configuration, logs and TSDB; removed on drop.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the scraped targets. Prometheus reads the file within 1 s, but its discovery
    /// manager passes changes on to scraping at most every 5 s (fixed in Prometheus 2.42), so
    /// a new target is first scraped about 5–6 s later: use [`Self::wait_scraped`].
    pub fn set_targets(&self, targets: &[String]) -> Result<()> {
        write_targets(&self.dir, targets)
    }

    /// Stops the process (SIGTERM, SIGKILL after 10 s) and keeps its data, for tests of
    /// "Prometheus is down". Idempotent.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let pid = read_pid(&pid_file(&self.dir));
        if self.supervisor.send("stop", &self.dir).is_err() {
            return;
        }
        if let Some(pid) = pid {
            let deadline = Instant::now() + STOP_GRACE;
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it again on the same port with the same data; returns once `/-/ready` answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.supervisor.send("start", &self.dir)?;
        self.running = true;
        self.wait_ready()
    }

    /// Blocks until Prometheus has scraped every current target at least once successfully,
    /// or `timeout` passes (then the error names each target that is not up and why).
    pub fn wait_scraped(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let wanted = read_targets(&self.dir)?;
            let detail = match http::get(self.addr, "/api/v1/targets?state=active", REQUEST_TIMEOUT)
            {
                Ok(response) if response.status == 200 => not_up(&wanted, &response.body),
                Ok(response) => Some(format!("/api/v1/targets answered {}", response.status)),
                Err(err) => Some(format!("/api/v1/targets: {err}")),
            };
            let Some(detail) = detail else { return Ok(()) };
            if Instant::now() >= deadline {
                return Err(Error::NotScraped { address: self.address(), after: timeout, detail });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `/-/ready` until it answers 200, failing early when the process exits.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let log_path = self.dir.join("prometheus.log");
        let not_ready = |what: &str| Error::NotReady {
            address: format!("http://{}", self.addr),
            what: what.to_owned(),
            log_path: log_path.clone(),
            log: log_tail(&log_path, 20),
        };
        loop {
            if let Ok(response) = http::get(self.addr, "/-/ready", REQUEST_TIMEOUT)
                && response.status == 200
            {
                return Ok(());
            }
            // The pid file appears once the supervisor started the process; gone = exited.
            if let Some(pid) = read_pid(&pid_file(&self.dir))
                && !process_alive(pid)
            {
                return Err(not_ready("exited during startup"));
            }
            if Instant::now() >= deadline {
                return Err(not_ready(&format!(
                    "was not ready after {} s",
                    READY_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        self.supervisor.shut_down(&self.dir, STOP_GRACE);
    }
}

/// Writes the file_sd list atomically (Prometheus must never read half a file).
fn write_targets(dir: &Path, targets: &[String]) -> Result<()> {
    let path = dir.join(config::TARGETS_FILE);
    let tmp = dir.join("targets.json.tmp");
    std::fs::write(&tmp, config::targets_json(targets)).context("writing", &tmp)?;
    std::fs::rename(&tmp, &path).context("renaming into", &path)
}

/// The targets currently in the file_sd list.
fn read_targets(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(config::TARGETS_FILE);
    let text = std::fs::read_to_string(&path).context("reading", &path)?;
    let groups: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Io {
        action: "parsing",
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(groups
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|group| group["targets"].as_array())
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect())
}

/// `None` when every wanted target is up in the `/api/v1/targets` answer, else what is not.
fn not_up(wanted: &[String], body: &str) -> Option<String> {
    let answer: serde_json::Value = match serde_json::from_str(body) {
        Ok(answer) => answer,
        Err(err) => return Some(format!("/api/v1/targets is not JSON: {err}")),
    };
    let active = answer["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
    let problems: Vec<String> = wanted
        .iter()
        .filter_map(|target| {
            let found = active.iter().find(|t| {
                t["labels"]["instance"].as_str() == Some(target)
                    && t["labels"]["job"].as_str() == Some(JOB)
            });
            match found {
                None => Some(format!("{target}: not discovered yet")),
                Some(t) if t["health"].as_str() == Some("up") => None,
                Some(t) => Some(format!(
                    "{target}: {} ({})",
                    t["health"].as_str().unwrap_or("unknown"),
                    t["lastError"].as_str().filter(|e| !e.is_empty()).unwrap_or("not scraped yet")
                )),
            }
        })
        .collect();
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A free TCP port on 127.0.0.1, found by binding port 0 and letting go.
fn free_loopback_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("binding a free port on", "127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target counts once it is discovered under our job and its health is `up`.
    #[test]
    fn targets_up_only_when_discovered_and_healthy() {
        let body = r#"{"status":"success","data":{"activeTargets":[
            {"labels":{"instance":"127.0.0.1:1","job":"modelrollout-test"},"health":"up","lastError":""},
            {"labels":{"instance":"127.0.0.1:2","job":"modelrollout-test"},"health":"down","lastError":"connection refused"},
            {"labels":{"instance":"127.0.0.1:3","job":"modelrollout-test"},"health":"unknown","lastError":""}]}}"#;
        assert_eq!(not_up(&["127.0.0.1:1".to_owned()], body), None);
        assert_eq!(
            not_up(&["127.0.0.1:2".to_owned()], body).as_deref(),
            Some("127.0.0.1:2: down (connection refused)")
        );
        assert_eq!(
            not_up(&["127.0.0.1:3".to_owned()], body).as_deref(),
            Some("127.0.0.1:3: unknown (not scraped yet)")
        );
        assert_eq!(
            not_up(&["127.0.0.1:4".to_owned()], body).as_deref(),
            Some("127.0.0.1:4: not discovered yet")
        );
        assert_eq!(not_up(&[], body), None);
    }

    /// The binary check rejects a missing path and a non-executable file.
    #[test]
    fn missing_or_plain_files_are_not_executable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").expect("write");
        assert!(!is_executable(&plain));
        assert!(!is_executable(&dir.path().join("missing")));
        assert!(is_executable(Path::new("/bin/sh")));
    }
}
