//! Runs a page's blocks section by section and says, for a failure, where and why.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::markdown::{Block, Language, starts_background_job};
use crate::ports::{loopback_ports, wait_until};
use crate::session::{Outcome, Session, reader_command};

/// How long one block may take: a `cargo build` or `make cluster-up` compiles the crates it names
/// with their own feature set (not the workspace's that `cargo test` built), several minutes on a
/// busy 2-core machine the first time.
pub const BLOCK_LIMIT: Duration = Duration::from_secs(900);
/// How long a previous section's servers get to release the ports the next section names.
const PORTS_FREE_LIMIT: Duration = Duration::from_secs(15);
/// How long background servers a block started get to listen on the ports it names.
const LISTEN_LIMIT: Duration = Duration::from_secs(120);
/// Between reruns of a `retry` block.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What a failed block may leave running outside its session, and how to stop it.
const LEFTOVERS: &[(&str, &str)] = &[(".cache/cluster/testcluster.json", "make cluster-down")];

/// Where and how blocks run.
#[derive(Debug)]
pub struct Runner {
    /// The working directory of every session: a copy of the repository.
    pub cwd: PathBuf,
    /// Block files and outputs.
    pub scratch: PathBuf,
    /// Added to the environment of every session.
    pub env: Vec<(String, String)>,
    /// The Python with the `openai` client, if there is one.
    pub python: Option<PathBuf>,
}

/// What ran and what did not.
#[derive(Debug, Default)]
pub struct Tally {
    pub ran: usize,
    /// `page:line (first line): reason`, one per skipped block.
    pub skipped: Vec<String>,
}

impl Runner {
    /// Runs every section of `page` (named `name` in messages) that has runnable blocks.
    pub fn run_page(&self, name: &str, blocks: &[Block], tally: &mut Tally) -> Result<(), String> {
        let mut rest = blocks;
        while let Some(first) = rest.first() {
            let length = rest.iter().take_while(|b| b.section == first.section).count();
            let (section, after) = rest.split_at(length);
            rest = after;
            for block in section {
                if let Some(reason) = &block.skip {
                    tally.skipped.push(format!(
                        "{name}:{} ({}): {reason}",
                        block.line,
                        block.first_line()
                    ));
                }
            }
            if section.iter().all(|b| b.skip.is_some()) {
                continue;
            }
            let result = self.run_section(name, section, tally);
            let cleaned = self.stop_leftovers();
            result?;
            cleaned?;
        }
        Ok(())
    }

    fn run_section(&self, name: &str, blocks: &[Block], tally: &mut Tally) -> Result<(), String> {
        let runnable: Vec<&Block> = blocks.iter().filter(|b| b.skip.is_none()).collect();
        let heading = &runnable[0].section;
        let ports = runnable.iter().flat_map(|b| loopback_ports(&b.code)).collect();
        let busy = wait_until(&ports, false, PORTS_FREE_LIMIT);
        if !busy.is_empty() {
            return Err(format!(
                "{name} § {heading:?} names the fixed ports {ports:?}, and {} in use: stop what \
                 listens there (a proxy or mock left running, another README test) and run again",
                busy.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(", ")
                    + if busy.len() == 1 { " is" } else { " are" }
            ));
        }
        let scratch =
            tempfile::tempdir_in(&self.scratch).map_err(|e| format!("scratch dir: {e}"))?;
        let mut session = Session::start(&self.cwd, scratch.path(), &self.env)
            .map_err(|e| format!("{name} § {heading:?}: cannot start bash: {e}"))?;
        for block in runnable {
            eprintln!("readme: {name}:{} § {heading}: {}", block.line, block.first_line());
            self.run_block(&mut session, block).map_err(|failure| failure.report(name, block))?;
            tally.ran += 1;
        }
        session.stop();
        Ok(())
    }

    fn run_block(&self, session: &mut Session, block: &Block) -> Result<(), Failure> {
        let deadline = Instant::now() + BLOCK_LIMIT;
        loop {
            let outcome = match block.language {
                Language::Shell | Language::Console => session.run_shell(&block.code, BLOCK_LIMIT),
                Language::Python => {
                    let python = self.python.as_deref().ok_or_else(|| {
                        Failure::new(
                            "no Python with the `openai` client: run `make deps` (it makes \
                         .cache/venv), or set MODELROLLOUT_PYTHON",
                            "",
                        )
                    })?;
                    session.run_python(python, &block.code, BLOCK_LIMIT)
                }
            }
            .map_err(|e| Failure::new(&format!("cannot talk to the session's bash: {e}"), ""))?;
            let output = match outcome {
                Outcome::Succeeded { output } => output,
                Outcome::Failed { status, output } => {
                    let status = status.map_or("a signal".into(), |s| format!("exit status {s}"));
                    return Err(Failure::new(&format!("a command failed ({status})"), &output));
                }
                Outcome::TimedOut { output } => {
                    return Err(Failure::new(
                        &format!("still running after {} s", BLOCK_LIMIT.as_secs()),
                        &output,
                    ));
                }
            };
            if block.language == Language::Shell && starts_background_job(&block.code) {
                let ports = loopback_ports(&block.code);
                let silent = wait_until(&ports, true, LISTEN_LIMIT);
                if !silent.is_empty() {
                    return Err(Failure::new(
                        &format!(
                            "it starts servers in the background, and after {} s nothing listens \
                             on {silent:?} (the ports it names)",
                            LISTEN_LIMIT.as_secs()
                        ),
                        &session.last_output(),
                    ));
                }
            }
            let unmet: Vec<_> = block.expected.iter().filter(|e| !e.is_met_by(&output)).collect();
            if unmet.is_empty() {
                return Ok(());
            }
            if !block.retry || Instant::now() + RETRY_PAUSE >= deadline {
                let expected = unmet.iter().map(|e| e.describe()).collect::<Vec<_>>().join("\n");
                let what = if block.retry {
                    format!("its output did not match within {} s of reruns", BLOCK_LIMIT.as_secs())
                } else {
                    "its output is not what the page says".into()
                };
                return Err(Failure { what, output, expected });
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// Stops what a failed block left running outside its session (a detached cluster).
    fn stop_leftovers(&self) -> Result<(), String> {
        for (marker, command) in LEFTOVERS {
            if !self.cwd.join(marker).exists() {
                continue;
            }
            let (stopped, output) = run_bounded(&self.cwd, &self.env, command, BLOCK_LIMIT)?;
            if !stopped {
                return Err(format!("`{command}` in {} failed:\n{output}", self.cwd.display()));
            }
        }
        Ok(())
    }
}

/// Runs `command` with bash in `cwd`: whether it succeeded within `limit` (it is killed
/// otherwise), and its output (stdout and stderr).
pub fn run_bounded(
    cwd: &Path,
    env: &[(String, String)],
    command: &str,
    limit: Duration,
) -> Result<(bool, String), String> {
    let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let out = log.reopen().map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = reader_command("bash", cwd, env)
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    let deadline = Instant::now() + limit;
    let succeeded = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status.success();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read(log.path()).map_err(|e| e.to_string())?;
    Ok((succeeded, String::from_utf8_lossy(&output).into_owned()))
}

/// Why a block failed.
#[derive(Debug)]
struct Failure {
    what: String,
    output: String,
    expected: String,
}

impl Failure {
    fn new(what: &str, output: &str) -> Failure {
        Failure { what: what.to_owned(), output: output.to_owned(), expected: String::new() }
    }

    /// The message: page, section, the block's first line, what went wrong, output, expected.
    fn report(self, page: &str, block: &Block) -> String {
        let mut message = format!(
            "{page}:{} § {:?}, the block starting `{}`: {}\n--- its output ---\n{}",
            block.line,
            block.section,
            block.first_line(),
            self.what,
            self.output.trim_end()
        );
        if !self.expected.is_empty() {
            message.push_str(&format!("\n--- what the page says it prints ---\n{}", self.expected));
        }
        message
    }
}
