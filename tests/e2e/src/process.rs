//! A program run by a test, that cannot outlive the test process.
//!
//! The program runs under a small `sh` whose stdin is a pipe only the test holds. When the test
//! drops the [`Supervised`] handle, panics, exits or is killed (even with SIGKILL), the kernel
//! closes the pipe, the shell reads end-of-file and kills the program. No `pre_exec`, no unsafe.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use modelrollout_testcluster::process_alive as alive;
use rustix::process::{Pid, Signal};

/// `$1` = pid file, `$2` = log file, the rest = the program and its arguments.
const SCRIPT: &str = r#"
pidfile=$1 log=$2
shift 2
"$@" </dev/null >>"$log" 2>&1 &
child=$!
echo "$child" >"$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile"
while read -r _; do :; done
kill -KILL "$child" 2>/dev/null
wait
"#;

/// A program under supervision; killed when this handle goes away.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    shell: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    log: PathBuf,
}

impl Supervised {
    /// Starts `command`'s program with its arguments and environment, appending its output to `log`.
    pub fn spawn(name: &str, command: &Command, log: &Path) -> std::io::Result<Self> {
        let pidfile = log.with_extension(format!("pid{}", rand_suffix()));
        let mut shell = Command::new("sh");
        shell.arg("-c").arg(SCRIPT).arg("supervisor").arg(&pidfile).arg(log);
        shell.arg(command.get_program()).args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => shell.env(key, value),
                None => shell.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            shell.current_dir(dir);
        }
        // Its own process group: a Ctrl-C aimed at the owner (`make demo`) does not end the
        // supervisor before the owner has cleaned up; the pipe still ends it with the owner.
        shell.process_group(0);
        let mut shell =
            shell.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let stdin = shell.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) =
                std::fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse().ok())
            {
                let _ = std::fs::remove_file(&pidfile);
                break pid;
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!("{name} did not start within 10s")));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Supervised { name: name.to_owned(), shell, stdin, pid, log: log.to_path_buf() })
    }

    /// The program's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the program still runs.
    pub fn is_running(&self) -> bool {
        alive(self.pid)
    }

    /// Sends `signal` to the program (SIGKILL to simulate a crash, SIGTERM to stop it).
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Waits up to `timeout` for the program to end.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while alive(self.pid) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The program's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the program's output, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        format!(
            "--- last lines of {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Closing the pipe makes the shell kill the program.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.shell.wait();
    }
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}.{nanos}", std::process::id())
}
