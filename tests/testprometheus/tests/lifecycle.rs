//! A real Prometheus through its whole life: scrape, change targets, stop, restart, drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use modelrollout_testprometheus::{TestPrometheus, process_alive};

/// Serves a fixed `/metrics` body on a loopback port from a background thread.
fn metrics_server(body: &'static str) -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Start, scrape, switch targets, stop and restart on the same port, then drop: nothing is
/// left behind.
#[test]
fn scrapes_switches_targets_restarts_and_cleans_up() {
    let first = metrics_server("up_fixture 1\n");
    let second = metrics_server("up_fixture 2\n");
    let mut prometheus =
        TestPrometheus::start(std::slice::from_ref(&first), Duration::from_secs(1)).expect("start");
    let address = prometheus.address();
    assert!(address.starts_with("http://127.0.0.1:"), "{address}");
    prometheus.wait_scraped(Duration::from_secs(60)).expect("first target scraped");

    prometheus.set_targets(std::slice::from_ref(&second)).expect("set targets");
    prometheus.wait_scraped(Duration::from_secs(60)).expect("second target scraped");

    let pid = prometheus.pid().expect("running");
    prometheus.stop();
    assert!(!process_alive(pid), "stop left Prometheus {pid} running");
    assert_eq!(prometheus.pid(), None);
    let err = prometheus.wait_scraped(Duration::from_millis(200)).expect_err("stopped");
    assert!(err.to_string().contains(&address), "{err}");

    prometheus.restart().expect("restart");
    assert_eq!(prometheus.address(), address, "restart keeps the port");
    prometheus.wait_scraped(Duration::from_secs(60)).expect("scraped after restart");

    let pid = prometheus.pid().expect("running again");
    let dir = prometheus.data_dir().to_path_buf();
    drop(prometheus);
    assert!(!process_alive(pid), "drop left Prometheus {pid} running");
    assert!(!dir.exists(), "drop left {}", dir.display());
}

/// A target that refuses connections is named, with Prometheus' error, when waiting times out.
#[test]
fn unscrapable_target_is_named() {
    // Bound then released: nothing listens there.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let target = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let prometheus = TestPrometheus::start(std::slice::from_ref(&target), Duration::from_secs(1))
        .expect("start");
    let err = prometheus.wait_scraped(Duration::from_secs(3)).expect_err("never up");
    assert!(err.to_string().contains(&target), "{err}");
}

/// SIGKILL runs no destructor: the supervisor notices the owner's pipe closing, stops
/// Prometheus and removes its directory.
#[test]
fn sigkilled_owner_leaves_nothing_behind() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut owner = Command::new(env!("CARGO_BIN_EXE_testprometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn testprometheus");
    let mut line = String::new();
    std::io::BufReader::new(owner.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_owned()
    };
    let pid: u32 = field("pid=").parse().expect("pid");
    let dir = std::path::PathBuf::from(field("dir="));
    assert!(process_alive(pid) && dir.exists(), "not running: {line}");

    owner.kill().expect("SIGKILL the owner");
    owner.wait().expect("reap the owner");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (process_alive(pid) || dir.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!process_alive(pid), "Prometheus {pid} outlived its SIGKILLed owner");
    assert!(!dir.exists(), "{} outlived its SIGKILLed owner", dir.display());
}
