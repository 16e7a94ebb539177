//! `testprometheus [host:port ...]`: runs a test Prometheus scraping the given targets until
//! stdin closes (Ctrl-D) or the process is killed, for hands-on use and the teardown tests.
//! Prints one line first: `address=<url> pid=<pid> dir=<data directory>`.

use std::io::Read;
use std::time::Duration;

use modelrollout_testprometheus::TestPrometheus;

fn main() -> std::process::ExitCode {
    let targets: Vec<String> = std::env::args().skip(1).collect();
    let prometheus = match TestPrometheus::start(&targets, Duration::from_secs(1)) {
        Ok(prometheus) => prometheus,
        Err(err) => {
            eprintln!("testprometheus: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "address={} pid={} dir={}",
        prometheus.address(),
        prometheus.pid().map_or_else(|| "none".to_owned(), |pid| pid.to_string()),
        prometheus.data_dir().display()
    );
    // Until stdin closes; a read error ends the wait just the same.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::process::ExitCode::SUCCESS
}
