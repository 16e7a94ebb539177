//! One shell session per section: blocks are sourced into the same `bash`, so `cd`, exported
//! variables and background jobs carry over from block to block, as in a reader's terminal.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};

/// How long the session's processes get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A `bash` in its own process group; every process it starts (background jobs, what `cargo run`
/// runs) is in that group and is stopped with it.
#[derive(Debug)]
pub struct Session {
    shell: Child,
    stdin: ChildStdin,
    scratch: PathBuf,
    blocks_run: usize,
    /// Set once the group is stopped: its id may belong to someone else afterwards.
    stopped: bool,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every command succeeded.
    Succeeded { output: String },
    /// A command failed (`set -e` ended the shell) with this exit status.
    Failed { status: Option<i32>, output: String },
    /// Still running at the limit.
    TimedOut { output: String },
}

impl Outcome {
    pub fn output(&self) -> &str {
        match self {
            Outcome::Succeeded { output }
            | Outcome::Failed { output, .. }
            | Outcome::TimedOut { output } => output,
        }
    }
}

impl Session {
    /// Starts `bash` in `cwd` with `env` added; `scratch` holds the block files and outputs.
    pub fn start(cwd: &Path, scratch: &Path, env: &[(String, String)]) -> io::Result<Session> {
        use std::os::unix::process::CommandExt;
        let mut shell = reader_command("bash", cwd, env)
            .args(["--noprofile", "--norc"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let mut stdin = shell.stdin.take().expect("stdin is piped");
        // A failing command ends the session, as it would end a reader's attempt.
        writeln!(stdin, "set -e")?;
        Ok(Session { shell, stdin, scratch: scratch.to_path_buf(), blocks_run: 0, stopped: false })
    }

    /// Sources a shell block into the session.
    pub fn run_shell(&mut self, code: &str, limit: Duration) -> io::Result<Outcome> {
        let file = self.next_file("sh", code)?;
        self.run(&format!("source {}", quote(&file)), limit)
    }

    /// Runs a Python block with `python`, in the session's directory and environment.
    pub fn run_python(
        &mut self,
        python: &Path,
        code: &str,
        limit: Duration,
    ) -> io::Result<Outcome> {
        let file = self.next_file("py", code)?;
        self.run(&format!("{} {}", quote(python), quote(&file)), limit)
    }

    fn next_file(&mut self, extension: &str, code: &str) -> io::Result<PathBuf> {
        self.blocks_run += 1;
        let file = self.scratch.join(format!("block-{}.{extension}", self.blocks_run));
        std::fs::write(&file, code)?;
        Ok(file)
    }

    /// Runs `command` in the session, its output (and that of anything it leaves running) going to
    /// a file of its own; a marker file says it finished.
    fn run(&mut self, command: &str, limit: Duration) -> io::Result<Outcome> {
        let output_file = self.scratch.join(format!("block-{}.out", self.blocks_run));
        let done = self.scratch.join(format!("block-{}.done", self.blocks_run));
        writeln!(
            self.stdin,
            "{{ {command}\n}} > {} 2>&1 < /dev/null; : > {}",
            quote(&output_file),
            quote(&done)
        )?;
        self.stdin.flush()?;
        let deadline = Instant::now() + limit;
        let read_output =
            || std::fs::read(&output_file).map(|b| String::from_utf8_lossy(&b).into_owned());
        loop {
            if done.exists() {
                return Ok(Outcome::Succeeded { output: read_output().unwrap_or_default() });
            }
            if let Some(status) = self.shell.try_wait()? {
                return Ok(Outcome::Failed {
                    status: status.code(),
                    output: read_output().unwrap_or_default(),
                });
            }
            if Instant::now() >= deadline {
                return Ok(Outcome::TimedOut { output: read_output().unwrap_or_default() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The output of the last block so far, including what its background jobs wrote since.
    pub fn last_output(&self) -> String {
        let file = self.scratch.join(format!("block-{}.out", self.blocks_run));
        std::fs::read(file).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Whether the shell still runs (a failed command ends it).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.shell.try_wait(), Ok(None))
    }

    /// Stops the shell and everything it started: SIGTERM to the group, SIGKILL after a grace.
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let Some(group) = Pid::from_raw(self.shell.id() as i32) else { return };
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            let _ = self.shell.try_wait();
            if test_kill_process_group(group).is_err()
                || live_members(group.as_raw_nonzero().get()) == 0
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.shell.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `program` in `cwd` with the environment of a reader's terminal plus `env`: without the
/// variables cargo sets for a test process (a build script that watches `CARGO_MANIFEST_DIR`
/// would make the README's `cargo build` rebuild half the workspace) or a parent `make` (its
/// jobserver file descriptors are not ours to pass on).
pub fn reader_command(program: &str, cwd: &Path, env: &[(String, String)]) -> Command {
    const SET_FOR_TESTS: &[&str] = &[
        "CARGO",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_MAKEFLAGS",
        "RUST_RECURSION_COUNT",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
    ];
    let mut command = Command::new(program);
    command.current_dir(cwd);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if SET_FOR_TESTS.contains(&key)
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
        {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// How many processes of process group `group` still run (zombies, which only wait for their
/// parent to collect them, do not count).
fn live_members(group: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
            let fields: Vec<&str> =
                stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
            fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
        })
        .count()
}

/// Whether process `pid` has ended (gone, or a zombie).
pub fn has_ended(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')').is_none_or(|(_, rest)| rest.split_whitespace().next() == Some("Z"))
    })
}

/// `path` quoted for bash.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> (Session, tempfile::TempDir) {
        let scratch = tempfile::tempdir().unwrap();
        let session = Session::start(scratch.path(), scratch.path(), &[]).unwrap();
        (session, scratch)
    }

    const LIMIT: Duration = Duration::from_secs(30);

    /// Directory, variables and functions carry over from one block to the next.
    #[test]
    fn state_carries_over() {
        let (mut session, _scratch) = session();
        let first =
            session.run_shell("mkdir -p sub && cd sub\nexport GREETING=hello\n", LIMIT).unwrap();
        assert_eq!(first, Outcome::Succeeded { output: String::new() });
        let second = session.run_shell("echo \"$GREETING from ${PWD##*/}\"\n", LIMIT).unwrap();
        assert_eq!(second, Outcome::Succeeded { output: "hello from sub\n".into() });
    }

    /// A failing command in the middle of a block fails the block, with the output so far.
    #[test]
    fn a_failing_command_fails_the_block() {
        let (mut session, _scratch) = session();
        let outcome = session.run_shell("echo before\nfalse\necho after\n", LIMIT).unwrap();
        assert_eq!(outcome, Outcome::Failed { status: Some(1), output: "before\n".into() });
        assert!(!session.is_alive());
    }

    /// A block still running at its limit is reported as timed out, and `stop` ends it and its
    /// background jobs.
    #[test]
    fn time_limit_and_stop() {
        let (mut session, scratch) = session();
        let pid_file = scratch.path().join("job.pid");
        let started = session
            .run_shell(&format!("sleep 600 &\necho $! > '{}'\n", pid_file.display()), LIMIT)
            .unwrap();
        assert!(matches!(started, Outcome::Succeeded { .. }), "{started:?}");
        let outcome =
            session.run_shell("echo waiting\nsleep 600\n", Duration::from_millis(300)).unwrap();
        assert_eq!(outcome, Outcome::TimedOut { output: "waiting\n".into() });
        session.stop();
        let job: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(has_ended(job), "the background job survived");
    }
}
