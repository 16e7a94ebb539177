//! Progress lines on stderr, written past the test harness's output capture.
//!
//! libtest captures `eprintln!` of passing tests; writing to the stderr handle directly keeps
//! "started a real kube-apiserver, ready after N s" visible in `make test` output.

use std::io::Write;

/// Writes one `[testcluster] ...` line to stderr.
pub(crate) fn write(message: std::fmt::Arguments<'_>) {
    // Logging must never fail a test; a closed stderr only loses the line.
    let _ = writeln!(std::io::stderr().lock(), "[testcluster] {message}");
}

/// `log!("ready after {}s", n)`: one progress line on stderr.
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::write(format_args!($($arg)*)) };
}
pub(crate) use log;
