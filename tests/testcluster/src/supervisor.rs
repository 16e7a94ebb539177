//! The supervising shell that runs etcd and kube-apiserver and guarantees their teardown.
//!
//! Statics are never dropped and SIGKILL runs no destructor, so cleanup cannot live in `Drop`
//! alone. Each cluster therefore runs under `sh` in its own process group:
//! - owned clusters: the shell's stdin is a pipe whose only writer is the owning process;
//!   when that process drops the cluster, exits, panics or is killed, the kernel closes the
//!   pipe, the shell reads EOF, stops both servers (SIGTERM, SIGKILL after 15 s each) and deletes
//!   the cluster directory;
//! - detached clusters (`testcluster up`): the shell waits for SIGTERM from `testcluster down`.
//!
//! No `pre_exec` and no unsafe code: the kernel's pipe semantics do the watching.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::{Error, IoContext, Result};

/// The supervising shell. `$1` = cluster directory, `$2` = `owned` | `detached`.
/// The servers' pids are written to `<name>.pid` so the owner can watch and report them.
const SUPERVISOR_SCRIPT: &str = r#"
dir=$1 mode=$2
# SIGTERM, then SIGKILL after 15 s.
stop_one() {
  kill -TERM "$1" 2>/dev/null
  polls=0
  while kill -0 "$1" 2>/dev/null; do
    polls=$((polls + 1))
    if [ "$polls" -gt 150 ]; then kill -KILL "$1" 2>/dev/null; break; fi
    sleep 0.1
  done
}
# The node first (its teardown kills every process of it by cgroup), then the servers started
# after the API server, newest first, then the API server: its shutdown still talks to etcd.
stop() {
  trap '' TERM INT HUP
  [ -f "$dir/node-teardown.sh" ] && sh "$dir/node-teardown.sh"
  for pid in $extra; do stop_one "$pid"; done
  stop_one "$api"
  stop_one "$etcd"
  wait
  rm -rf "$dir"
  exit 0
}
trap stop TERM HUP
trap '' INT
sh "$dir/etcd.sh" </dev/null >"$dir/etcd.log" 2>&1 &
etcd=$!
sh "$dir/kube-apiserver.sh" </dev/null >"$dir/kube-apiserver.log" 2>&1 &
api=$!
echo "$etcd" >"$dir/etcd.pid.tmp" && mv "$dir/etcd.pid.tmp" "$dir/etcd.pid"
echo "$api" >"$dir/kube-apiserver.pid.tmp" && mv "$dir/kube-apiserver.pid.tmp" "$dir/kube-apiserver.pid"
# Optional servers (a node: kube-controller-manager, kube-scheduler, forwarders, kubelet), one
# name a line in $dir/servers; $extra lists their pids newest first.
extra=
if [ -f "$dir/servers" ]; then
  while read -r name; do
    sh "$dir/$name.sh" </dev/null >"$dir/$name.log" 2>&1 &
    extra="$! $extra"
    echo "$!" >"$dir/$name.pid.tmp" && mv "$dir/$name.pid.tmp" "$dir/$name.pid"
  done <"$dir/servers"
fi
if [ "$mode" = owned ]; then
  while read -r _; do :; done
  stop
fi
wait
"#;

/// Who keeps the cluster alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Until the starting process drops it or goes away.
    Owned,
    /// Until `testcluster down` sends SIGTERM to the supervisor.
    Detached,
}

/// One of the two servers under supervision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    Etcd,
    KubeApiserver,
    /// The rest belong to a node (see `node.rs`).
    KubeControllerManager,
    KubeScheduler,
    /// Host side of the node's way to the API server.
    ApiserverBridge,
    /// Host side of the API server's way to the kubelet.
    KubeletBridge,
    /// The node's namespaces: containerd, kubelet and the pods.
    Node,
}

/// The node's servers, in the order the supervisor starts them.
pub(crate) const NODE_SERVERS: [Server; 5] = [
    Server::ApiserverBridge,
    Server::KubeletBridge,
    Server::KubeControllerManager,
    Server::KubeScheduler,
    Server::Node,
];

impl Server {
    /// The program name, also the stem of its script, log and pid files.
    pub fn name(self) -> &'static str {
        match self {
            Server::Etcd => "etcd",
            Server::KubeApiserver => "kube-apiserver",
            Server::KubeControllerManager => "kube-controller-manager",
            Server::KubeScheduler => "kube-scheduler",
            Server::ApiserverBridge => "apiserver-bridge",
            Server::KubeletBridge => "kubelet-bridge",
            Server::Node => "node",
        }
    }

    /// `<dir>/<name>.sh`: the exact command line, kept for debugging.
    pub fn script(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.sh", self.name()))
    }

    /// `<dir>/<name>.log`: its stdout and stderr.
    pub fn log(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.log", self.name()))
    }

    /// `<dir>/<name>.pid`: written by the supervisor once the server is started.
    pub fn pid_file(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.pid", self.name()))
    }
}

/// A running supervisor and, for owned clusters, the pipe whose closing stops it.
#[derive(Debug)]
pub(crate) struct Supervisor {
    child: Child,
    owner_pipe: Option<ChildStdin>,
}

impl Supervisor {
    /// Starts the supervisor for the scripts already written in `dir`.
    pub fn spawn(dir: &Path, lifetime: Lifetime) -> Result<Self> {
        let log_path = dir.join("supervisor.log");
        let log = File::create(&log_path).context("creating", &log_path)?;
        let log_err = log.try_clone().context("opening", &log_path)?;
        let mode = match lifetime {
            Lifetime::Owned => "owned",
            Lifetime::Detached => "detached",
        };
        let stdin = match lifetime {
            Lifetime::Owned => Stdio::piped(),
            Lifetime::Detached => Stdio::null(),
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR_SCRIPT)
            .arg("testcluster-supervisor")
            .arg(dir)
            .arg(mode)
            .stdin(stdin)
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C aimed at the test run reaches the supervisor
            // only through its owner's exit, so it always gets to clean up.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn { program: PathBuf::from("sh"), source })?;
        let owner_pipe = child.stdin.take();
        Ok(Self { child, owner_pipe })
    }

    /// The supervisor's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the supervisor outlive this process (detached clusters).
    pub fn detach(self) {
        // Dropping a `Child` neither kills nor waits for it; the pipe is None when detached.
        drop(self);
    }

    /// Stops both servers, lets the supervisor delete the directory, and waits for it.
    /// Escalates to SIGKILL for anything still running after `grace`.
    pub fn stop(mut self, dir: &Path, grace: Duration) -> Result<()> {
        match self.owner_pipe.take() {
            // Closing the pipe is the owned supervisor's stop signal.
            Some(pipe) => drop(pipe),
            None => send_signal(self.child.id(), Signal::TERM),
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(source) => {
                    return Err(Error::Io {
                        action: "waiting for the supervisor of",
                        path: dir.to_path_buf(),
                        source,
                    });
                }
            }
        }
        kill_servers(dir);
        send_signal(self.child.id(), Signal::KILL);
        // SIGKILL cannot be ignored, so this wait returns promptly.
        self.child.wait().context("waiting for the supervisor of", dir)?;
        remove_dir(dir)
    }
}

/// SIGKILLs whatever server pids are recorded in `dir` and still alive, after the node's
/// teardown script (when the cluster has a node) has killed and removed the node's cgroups.
pub(crate) fn kill_servers(dir: &Path) {
    let teardown = dir.join(crate::node::NODE_TEARDOWN_SCRIPT);
    if teardown.is_file() {
        // Its failure leaves processes that the loop below and the caller's check report.
        let _ = Command::new("sh").arg(&teardown).stdin(Stdio::null()).status();
    }
    let node_servers = NODE_SERVERS.into_iter().rev();
    for server in node_servers.chain([Server::KubeApiserver, Server::Etcd]) {
        if let Some(pid) = read_pid(&server.pid_file(dir))
            && process_alive(pid)
        {
            send_signal(pid, Signal::KILL);
        }
    }
}

/// Removes the cluster directory unless it is already gone.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err).context("removing", dir),
        _ => Ok(()),
    }
}

/// Writes `<dir>/<server>.sh`, which `exec`s the program so its pid is the job's pid.
pub(crate) fn write_launch_script(
    dir: &Path,
    server: Server,
    program: &Path,
    args: &[String],
) -> Result<()> {
    let mut script = String::from("exec");
    for word in std::iter::once(crate::utf8(program)?).chain(args.iter().map(String::as_str)) {
        script.push_str(" \\\n  ");
        script.push_str(&shell_quote(word));
    }
    script.push('\n');
    let path = server.script(dir);
    std::fs::write(&path, script).context("writing", &path)
}

/// Quotes one word for `sh`: single quotes, with embedded single quotes spliced in.
pub(crate) fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Waits until the supervisor has written the server's pid file.
pub(crate) fn wait_for_pid(dir: &Path, server: Server, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pid) = read_pid(&server.pid_file(dir)) {
            return Some(pid);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid in a pid file, if the file exists and holds one.
pub(crate) fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live process: present in /proc and not a zombie (an exited child its
/// parent has not reaped yet, or an orphan the machine's init never reaps).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: `pid (comm) state ...`; comm may contain spaces and parentheses.
    let state = stat.rfind(')').and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Sends `signal` to `pid`, ignoring processes that are already gone.
pub(crate) fn send_signal(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    // ESRCH (already gone) is the expected race; nothing else can be done about EPERM.
    let _ = rustix::process::kill_process(pid, signal);
}

/// The last `lines` lines of a log file, or a note that it is missing.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("({} is missing)", path.display());
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(|l| l.ok()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `count` distinct free TCP ports on 127.0.0.1, found by binding port 0 and letting go.
/// Another process may grab one before our server binds it; callers retry on that.
pub(crate) fn free_loopback_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding a free port on", "127.0.0.1")?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .context("reading the free port of", "127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quoting survives spaces, quotes and `$` through a real `sh`.
    #[test]
    fn shell_quote_round_trips_through_sh() {
        let words = ["plain", "with space", "it's", "$HOME", "a\"b", "--flag=x,y"];
        for word in words {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(word)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    /// The launch script execs the program with every argument intact.
    #[test]
    fn launch_script_execs_program_with_arguments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = vec!["one two".to_owned(), "--x='y'".to_owned()];
        write_launch_script(dir.path(), Server::Etcd, Path::new("/usr/bin/printf"), &args)
            .expect("write");
        let script = Server::Etcd.script(dir.path());
        let out = Command::new("sh").arg(&script).output().expect("sh runs");
        // printf's format is the first argument; the rest is unused.
        assert_eq!(String::from_utf8_lossy(&out.stdout), "one two");
    }

    /// This process is alive; a pid that does not exist is not.
    #[test]
    fn liveness_of_this_process_and_a_missing_one() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
    }

    /// An exited but unreaped child is a zombie, which counts as dead.
    #[test]
    fn zombie_counts_as_dead() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!process_alive(pid), "exited child {pid} still counted as alive");
        child.wait().expect("reap");
    }

    /// The requested number of distinct ports comes back.
    #[test]
    fn free_ports_are_distinct() {
        let ports = free_loopback_ports(3).expect("ports");
        assert_eq!(ports.len(), 3);
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    }

    /// The tail keeps the last lines in order.
    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, "1\n2\n3\n4\n").expect("write");
        assert_eq!(log_tail(&path, 2), "3\n4");
        assert_eq!(log_tail(&path, 10), "1\n2\n3\n4");
        assert!(log_tail(&dir.path().join("missing.log"), 2).contains("missing"));
    }

    /// An owned supervisor stops its servers and removes the directory when its pipe closes.
    #[test]
    fn owned_supervisor_cleans_up_when_the_pipe_closes() {
        let base = tempfile::tempdir().expect("temp dir");
        let dir = base.path().join("cluster");
        std::fs::create_dir(&dir).expect("mkdir");
        for server in [Server::Etcd, Server::KubeApiserver] {
            write_launch_script(&dir, server, Path::new("/bin/sleep"), &["600".to_owned()])
                .expect("write");
        }
        let supervisor = Supervisor::spawn(&dir, Lifetime::Owned).expect("spawn");
        let pids: Vec<u32> = [Server::Etcd, Server::KubeApiserver]
            .into_iter()
            .map(|s| wait_for_pid(&dir, s, Duration::from_secs(30)).expect("pid file"))
            .collect();
        assert!(pids.iter().all(|&pid| process_alive(pid)));
        supervisor.stop(&dir, Duration::from_secs(60)).expect("stop");
        assert!(pids.iter().all(|&pid| !process_alive(pid)), "{pids:?} survived");
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
}
