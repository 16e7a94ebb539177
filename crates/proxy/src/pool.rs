//! Plain-HTTP/1.1 upstream connections, kept per upstream: a list of idle hyper
//! `http1::SendRequest` handles owned by the route's arm, so a request takes the last one back
//! without the legacy client's keyed map, hashing and checkout bookkeeping. TLS (and so HTTP/2
//! by ALPN) upstreams keep using the legacy client ([`crate::client`]).
//!
//! - A connection is lent for one request ([`Lease`]) and given back only when its response
//!   body has been read to the end; a body cut short or dropped closes the connection.
//! - A reused connection the upstream closed in the meantime gives the request back unsent; it
//!   goes on a new connection (what the legacy client's retry of canceled requests does).
//! - Limits as the legacy client had them: 1 024 idle connections per upstream, an idle one
//!   older than 90 s is closed when next met instead of reused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

/// Idle connections kept per upstream (the legacy client's `pool_max_idle_per_host`).
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed, not reused (the legacy `pool_idle_timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive probes on upstream connections (as the legacy connector sets them).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

type Sender = http1::SendRequest<Full<Bytes>>;

/// The idle connections of one plain-HTTP upstream.
#[derive(Debug)]
pub struct Http1Pool {
    /// `host:port` to connect to.
    address: String,
    /// Oldest first; requests take the newest (warm) one.
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    sender: Sender,
    since: Instant,
}

/// A connection lent to one request (see the module documentation).
#[derive(Debug)]
pub struct Lease {
    sender: Sender,
    pool: Arc<Http1Pool>,
}

/// Why a request could not be sent on a pooled connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The TCP connection could not be made.
    #[error("tcp connect error to {address}: {source}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The TCP connection was not made within `--connect-timeout`.
    #[error("tcp connect to {address} timed out after {timeout:?} (--connect-timeout)")]
    ConnectTimeout {
        /// `host:port`.
        address: String,
        /// The timeout.
        timeout: Duration,
    },
    /// HTTP/1.1 on the connection failed.
    #[error("{0}")]
    Http(#[source] hyper::Error),
}

impl PoolError {
    /// True when nothing reached the upstream (no connection was made).
    pub fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect { .. } | PoolError::ConnectTimeout { .. })
    }
}

impl Http1Pool {
    /// The pool of upstream `authority` (`host[:port]`, port 80 when not given).
    pub fn new(authority: &str) -> Arc<Self> {
        let has_port = !authority.ends_with(']')
            && authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        let address = if has_port { authority.to_owned() } else { format!("{authority}:80") };
        Arc::new(Http1Pool { address, idle: Mutex::new(Vec::new()) })
    }

    /// Sends `request` (origin-form URI, `Host` set) on an idle connection or a new one.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        if let Some(mut sender) = self.checkout() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(sender))),
                Err(mut error) => match error.take_message() {
                    // Not sent (the upstream closed the idle connection): a new one.
                    Some(unsent) => request = unsent,
                    None => return Err(PoolError::Http(error.into_error())),
                },
            }
        }
        let mut sender = self.connect(connect_timeout).await?;
        let response = sender.send_request(request).await.map_err(PoolError::Http)?;
        Ok((response, self.lease(sender)))
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    fn lease(self: &Arc<Self>, sender: Sender) -> Lease {
        Lease { sender, pool: Arc::clone(self) }
    }

    /// The newest idle connection ready for a request; expired and closed ones are dropped.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        let expired =
            idle.iter().take_while(|entry| now.duration_since(entry.since) > IDLE_TIMEOUT).count();
        idle.drain(..expired);
        let mut at = idle.len();
        while at > 0 {
            at -= 1;
            if idle[at].sender.is_ready() {
                return Some(idle.remove(at).sender);
            }
            if idle[at].sender.is_closed() {
                idle.remove(at);
            }
            // Open but not ready yet (its last response just ended): kept for the next request.
        }
        None
    }

    async fn connect(&self, timeout: Duration) -> Result<Sender, PoolError> {
        let connect = tokio::net::TcpStream::connect(self.address.as_str());
        let connected = if timeout.is_zero() {
            connect.await
        } else {
            tokio::time::timeout(timeout, connect)
                .await
                .map_err(|_| PoolError::ConnectTimeout { address: self.address.clone(), timeout })?
        };
        let stream = connected
            .map_err(|source| PoolError::Connect { address: self.address.clone(), source })?;
        // Best effort, like the legacy connector: a socket refusing these still works.
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(PoolError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!("upstream connection ended: {error}");
            }
        });
        Ok(sender)
    }
}

impl Lease {
    /// Gives the connection back for the next request (its response was read to the end).
    pub fn release(self) {
        let Lease { sender, pool } = self;
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = pool.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(Idle { sender, since: Instant::now() });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;

    use super::*;

    /// An upstream answering `ok` (with `connection: close` when `close`), counting the
    /// connections it accepted.
    async fn upstream(close: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |_request| async move {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    if close {
                        response
                            .headers_mut()
                            .insert(http::header::CONNECTION, "close".parse().unwrap());
                    }
                    Ok::<_, std::convert::Infallible>(response)
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::spawn(connection);
            }
        });
        (address, accepted)
    }

    fn request(address: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .uri("/v1/x")
            .header(http::header::HOST, address)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    async fn send_and_read(pool: &Arc<Http1Pool>, address: &str) -> (Bytes, Lease) {
        let (response, lease) = pool.send(request(address), Duration::from_secs(5)).await.unwrap();
        (response.into_body().collect().await.unwrap().to_bytes(), lease)
    }

    /// A connection whose answer was read to the end and given back serves the next request;
    /// one whose lease is dropped (a body cut short) is not reused.
    #[tokio::test]
    async fn reuses_only_connections_given_back() {
        let (address, accepted) = upstream(false).await;
        let pool = Http1Pool::new(&address);
        for _ in 0..5 {
            let (body, lease) = send_and_read(&pool, &address).await;
            assert_eq!(&body[..], b"ok");
            lease.release();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
        let (_body, lease) = send_and_read(&pool, &address).await;
        drop(lease);
        let (body, lease) = send_and_read(&pool, &address).await;
        assert_eq!(&body[..], b"ok");
        lease.release();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// Connections the upstream closes are never handed out again: each request gets a new one.
    #[tokio::test]
    async fn closed_connections_are_replaced() {
        let (address, accepted) = upstream(true).await;
        let pool = Http1Pool::new(&address);
        for _ in 0..3 {
            let (body, lease) = send_and_read(&pool, &address).await;
            assert_eq!(&body[..], b"ok");
            lease.release();
            // Let the connection task see the close.
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// Nothing listening is a connect error (the upstream never saw the request).
    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pool = Http1Pool::new(&address);
        let error = pool.send(request(&address), Duration::from_secs(5)).await.unwrap_err();
        assert!(error.is_connect(), "{error}");
    }

    /// The port defaults to 80 when the authority names none (IPv6 literals included).
    #[test]
    fn connect_addresses() {
        let table = [
            ("mock", "mock:80"),
            ("mock:8080", "mock:8080"),
            ("127.0.0.1", "127.0.0.1:80"),
            ("[::1]", "[::1]:80"),
            ("[::1]:9000", "[::1]:9000"),
        ];
        for (authority, expected) in table {
            assert_eq!(Http1Pool::new(authority).address, expected, "{authority}");
        }
    }
}
