//! The supervising shell that runs Prometheus and guarantees its teardown.
//!
//! The same idea as `modelrollout-testcluster`'s supervisor: SIGKILL runs no destructor, so
//! cleanup cannot live in `Drop` alone. The shell's stdin is a pipe whose only writer is the
//! owning process. Lines on it are commands (`start`, `stop`); end of file — the owner dropped
//! the handle, exited, panicked or was killed — stops Prometheus (SIGTERM, SIGKILL after 10 s)
//! and deletes the data directory. No `pre_exec` and no unsafe code.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::{Error, IoContext, Result};

/// `$1` = the data directory, holding `prometheus.sh`. Writes `prometheus.pid` while it runs.
const SUPERVISOR_SCRIPT: &str = r#"
dir=$1
pid=
stop_prometheus() {
  if [ -n "$pid" ]; then
    rm -f "$dir/prometheus.pid"
    kill -TERM "$pid" 2>/dev/null
    polls=0
    while kill -0 "$pid" 2>/dev/null; do
      polls=$((polls + 1))
      if [ "$polls" -gt 100 ]; then kill -KILL "$pid" 2>/dev/null; break; fi
      sleep 0.1
    done
    wait "$pid" 2>/dev/null
    pid=
  fi
}
start_prometheus() {
  stop_prometheus
  sh "$dir/prometheus.sh" </dev/null >>"$dir/prometheus.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/prometheus.pid.tmp" && mv "$dir/prometheus.pid.tmp" "$dir/prometheus.pid"
}
finish() {
  trap '' TERM HUP INT
  stop_prometheus
  rm -rf "$dir"
  exit 0
}
trap finish TERM HUP
trap '' INT
while read -r command; do
  case "$command" in
    start) start_prometheus ;;
    stop) stop_prometheus ;;
  esac
done
finish
"#;

/// A running supervisor and the pipe that commands it (and whose closing stops it).
#[derive(Debug)]
pub(crate) struct Supervisor {
    child: Child,
    commands: Option<ChildStdin>,
}

impl Supervisor {
    /// Starts the supervisor for the `prometheus.sh` already written in `dir`; it starts nothing
    /// until told `start`.
    pub fn spawn(dir: &Path) -> Result<Self> {
        let log_path = dir.join("supervisor.log");
        let log = File::create(&log_path).context("creating", &log_path)?;
        let log_err = log.try_clone().context("opening", &log_path)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR_SCRIPT)
            .arg("testprometheus-supervisor")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C aimed at the test run reaches the supervisor
            // only through its owner's exit, so it always gets to clean up.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn { program: PathBuf::from("sh"), source })?;
        let commands = child.stdin.take();
        Ok(Self { child, commands })
    }

    /// Sends one command line (`start` or `stop`).
    pub fn send(&mut self, command: &str, dir: &Path) -> Result<()> {
        let pipe = self.commands.as_mut().ok_or_else(|| Error::SupervisorGone {
            dir: dir.to_path_buf(),
            log: log_tail(&dir.join("supervisor.log"), 10),
        })?;
        writeln!(pipe, "{command}").and_then(|()| pipe.flush()).map_err(|_| Error::SupervisorGone {
            dir: dir.to_path_buf(),
            log: log_tail(&dir.join("supervisor.log"), 10),
        })
    }

    /// Closes the pipe, lets the supervisor stop Prometheus and delete `dir`, and waits for it.
    /// Escalates to SIGKILL (of Prometheus and the shell) after `grace`.
    pub fn shut_down(&mut self, dir: &Path, grace: Duration) {
        drop(self.commands.take());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Some(pid) = read_pid(&pid_file(dir)) {
                send_signal(pid, Signal::KILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Whatever the shell did not get to; a missing directory is the normal case.
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `<dir>/prometheus.pid`: present while the supervisor runs Prometheus.
pub(crate) fn pid_file(dir: &Path) -> PathBuf {
    dir.join("prometheus.pid")
}

/// The pid in a pid file, if the file exists and holds one.
pub(crate) fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live process: present in /proc and not a zombie.
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: `pid (comm) state ...`; comm may contain spaces and parentheses.
    let state = stat.rfind(')').and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Sends `signal` to `pid`, ignoring processes that are already gone.
fn send_signal(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    // ESRCH (already gone) is the expected race.
    let _ = rustix::process::kill_process(pid, signal);
}

/// Writes `<dir>/prometheus.sh`, which `exec`s Prometheus so its pid is the job's pid.
pub(crate) fn write_launch_script(dir: &Path, program: &Path, args: &[String]) -> Result<()> {
    let mut script = String::from("exec");
    let program = crate::utf8(program)?;
    for word in std::iter::once(program).chain(args.iter().map(String::as_str)) {
        script.push_str(" \\\n  ");
        script.push_str(&shell_quote(word));
    }
    script.push('\n');
    let path = dir.join("prometheus.sh");
    std::fs::write(&path, script).context("writing", &path)
}

/// Quotes one word for `sh`: single quotes, with embedded single quotes spliced in.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The last `lines` lines of a log file, or a note that it is missing.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("({} is missing)", path.display());
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(|l| l.ok()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quoting survives spaces, quotes and `$` through a real `sh`.
    #[test]
    fn shell_quote_round_trips_through_sh() {
        for word in ["plain", "with space", "it's", "$HOME", "--flag=x,y"] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(word)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    /// `start` runs the program, `stop` ends it, closing the pipe removes the directory.
    #[test]
    fn supervisor_starts_stops_and_cleans_up() {
        let base = tempfile::tempdir().expect("temp dir");
        let dir = base.path().join("prometheus");
        std::fs::create_dir(&dir).expect("mkdir");
        write_launch_script(&dir, Path::new("/bin/sleep"), &["600".to_owned()]).expect("write");
        let mut supervisor = Supervisor::spawn(&dir).expect("spawn");
        let wait_pid = || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(pid) = read_pid(&pid_file(&dir)) {
                    return pid;
                }
                assert!(Instant::now() < deadline, "no pid file");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        supervisor.send("start", &dir).expect("start");
        let first = wait_pid();
        assert!(process_alive(first));
        supervisor.send("stop", &dir).expect("stop");
        let deadline = Instant::now() + Duration::from_secs(30);
        while process_alive(first) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!process_alive(first), "stop left {first} running");
        supervisor.send("start", &dir).expect("start again");
        let second = wait_pid();
        assert!(process_alive(second));
        supervisor.shut_down(&dir, Duration::from_secs(30));
        assert!(!process_alive(second), "{second} survived the shutdown");
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
}
