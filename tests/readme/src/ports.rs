//! The fixed loopback ports a page names (`127.0.0.1:8080`), and whether something listens there.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const LOOPBACK: &str = "127.0.0.1:";

/// Every port written as `127.0.0.1:PORT` in `text`.
pub fn loopback_ports(text: &str) -> BTreeSet<u16> {
    text.match_indices(LOOPBACK)
        .filter_map(|(at, _)| {
            let digits: String =
                text[at + LOOPBACK.len()..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Whether a server accepts connections on `127.0.0.1:port`.
pub fn is_listening(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
}

/// Waits until `is_listening(port) == listening` for every port, at most `limit`; returns the
/// ports that never got there.
pub fn wait_until(ports: &BTreeSet<u16>, listening: bool, limit: Duration) -> Vec<u16> {
    let deadline = Instant::now() + limit;
    loop {
        let pending: Vec<u16> =
            ports.iter().copied().filter(|&port| is_listening(port) != listening).collect();
        if pending.is_empty() || Instant::now() >= deadline {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports are read from URLs, flags and comments alike.
    #[test]
    fn ports_named_in_text() {
        let text = "--listen 127.0.0.1:9001 &\n\"http://127.0.0.1:9002/v1\"\n# API on 127.0.0.1:8080,\n127.0.0.1:x 10.0.0.1:7";
        assert_eq!(loopback_ports(text).into_iter().collect::<Vec<_>>(), [8080, 9001, 9002]);
    }
}
