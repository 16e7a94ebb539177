//! What clients may hold of the proxy: time (header, body and idle timeouts), connections, and
//! memory (request body bytes across all requests).
//!
//! A slow or hostile client must not pin a connection or memory forever: headers are read
//! within `--client-header-timeout` (hyper's own timer), a body within `--client-body-timeout`,
//! a connection with no request in flight is closed after `--client-idle-timeout`, and every
//! body byte held is counted against one budget (`--max-inflight-body-bytes`) that a request
//! exceeding it is refused from (503, `Retry-After`), instead of the process growing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::ApiError;

/// Limits on client connections and requests (see the flags in [`crate::config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time to receive a request's headers (HTTP/1.1), also the keep-alive wait; zero disables.
    pub header_timeout: Duration,
    /// Time to receive a whole request body; zero disables.
    pub body_timeout: Duration,
    /// A connection without a request in flight for this long is closed; zero disables.
    pub idle_timeout: Duration,
    /// Open connections on the API listener.
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Request body bytes held by all requests together.
    pub max_inflight_body_bytes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            max_connections: 4096,
            max_concurrent_streams: 64,
            max_inflight_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The shared budget of request body bytes held in memory.
#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total: usize,
}

/// A request body read whole, and its share of the [`BodyBudget`] (released on drop).
#[derive(Debug)]
pub struct HeldBody {
    /// The bytes.
    pub bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        // The semaphore's ceiling is far above any memory size this runs with.
        let total = total.min(Semaphore::MAX_PERMITS);
        BodyBudget { permits: Arc::new(Semaphore::new(total)), total }
    }

    /// Bytes currently held by requests.
    pub fn in_use(&self) -> usize {
        self.total - self.permits.available_permits()
    }

    /// Reads `body` whole: at most `limit` bytes (413), within `timeout` (408), each chunk
    /// counted against the budget as it arrives (503 when the budget is spent).
    pub async fn read<B>(
        &self,
        body: B,
        headers: &http::HeaderMap,
        limit: usize,
        timeout: Duration,
    ) -> Result<HeldBody, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(ApiError::body_too_large(limit));
        }
        let read = self.read_chunks(body, limit);
        if timeout.is_zero() {
            return read.await;
        }
        // The error (a formatted message) is built only on a timeout, not on every request.
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| Err(ApiError::body_timeout(timeout)))
    }

    async fn read_chunks<B>(&self, mut body: B, limit: usize) -> Result<HeldBody, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut length = 0usize;
        let mut permit: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ApiError::body_unreadable)?;
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            length += data.len();
            if length > limit {
                return Err(ApiError::body_too_large(limit));
            }
            // A chunk is at most the body limit; a limit past u32 is refused by the budget.
            let wanted = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let more = Arc::clone(&self.permits)
                .try_acquire_many_owned(wanted)
                .map_err(|_| ApiError::overloaded(self.total))?;
            match &mut permit {
                Some(held) => held.merge(more),
                None => permit = Some(more),
            }
            chunks.push(data);
        }
        let bytes = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => {
                let mut joined = Vec::with_capacity(length);
                for chunk in &chunks {
                    joined.extend_from_slice(chunk);
                }
                Bytes::from(joined)
            }
        };
        Ok(HeldBody { bytes, _permit: permit })
    }
}

/// Requests in flight on one connection and when the last one ended, for the idle timeout.
#[derive(Debug)]
pub struct ConnActivity {
    in_flight: AtomicUsize,
    last_end: Mutex<Instant>,
}

/// Marks one request in flight until dropped (with the response body, when it is sent whole).
#[derive(Debug)]
pub struct InFlight(Arc<ConnActivity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut last) = self.0.last_end.lock() {
            *last = Instant::now();
        }
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// `body`, keeping the request in flight until the body is sent or dropped.
    pub fn attach<B>(self, body: B) -> Tracked<B> {
        Tracked { body, _in_flight: self }
    }
}

/// A response body that keeps its request counted in flight (see [`InFlight::attach`]).
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl ConnActivity {
    /// A connection accepted now.
    pub fn new() -> Arc<Self> {
        Arc::new(ConnActivity {
            in_flight: AtomicUsize::new(0),
            last_end: Mutex::new(Instant::now()),
        })
    }

    /// Counts a request in flight.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// When the connection becomes idle for `idle`: `None` while a request is in flight.
    pub fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        self.last_end.lock().ok().map(|last| *last + idle)
    }

    /// Resolves once the connection has had no request in flight for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            match self.idle_deadline(idle) {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                // Busy: look again one idle period later (a request may end any time before).
                None => tokio::time::sleep(idle).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn body_of(
        chunks: &[&'static [u8]],
    ) -> StreamBody<
        impl futures::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> + Unpin,
    > {
        let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> =
            chunks.iter().map(|c| Ok(http_body::Frame::data(Bytes::from_static(c)))).collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    /// Chunks are joined; a chunked body over the limit is 413 although it declared no length;
    /// a declared length over the limit is 413 before anything is read.
    #[tokio::test]
    async fn reads_within_the_limit() {
        let budget = BodyBudget::new(1000);
        let none = http::HeaderMap::new();
        let held = budget.read(body_of(&[b"ab", b"cd"]), &none, 4, Duration::ZERO).await.unwrap();
        assert_eq!(held.bytes, "abcd");
        assert_eq!(budget.in_use(), 4);
        drop(held);
        assert_eq!(budget.in_use(), 0);
        let error = budget.read(body_of(&[b"ab", b"cde"]), &none, 4, Duration::ZERO).await;
        assert_eq!(error.unwrap_err().status, 413);
        let mut declared = http::HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        let error = budget.read(Full::new(Bytes::new()), &declared, 4, Duration::ZERO).await;
        assert_eq!(error.unwrap_err().status, 413);
        assert_eq!(budget.in_use(), 0);
    }

    /// Bodies held together never exceed the budget: the one that would is refused with 503,
    /// and the budget is back once the holders are gone.
    #[tokio::test]
    async fn budget_bounds_bodies_held_together() {
        let budget = BodyBudget::new(10);
        let none = http::HeaderMap::new();
        let first = budget.read(body_of(&[b"123456"]), &none, 100, Duration::ZERO).await.unwrap();
        let refused = budget.read(body_of(&[b"12", b"345"]), &none, 100, Duration::ZERO).await;
        let refused = refused.unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.code), (503, "proxy_overloaded"));
        assert_eq!(budget.in_use(), 6, "a refused body gives back what it took");
        drop(first);
        let again = budget.read(body_of(&[b"12", b"345"]), &none, 100, Duration::ZERO).await;
        assert_eq!(again.unwrap().bytes, "12345");
    }

    /// A body that does not arrive within the body timeout is 408 (paused clock).
    #[tokio::test(start_paused = true)]
    async fn slow_body_times_out() {
        let budget = BodyBudget::new(1000);
        let trickle = futures::stream::unfold(0u32, |i| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(b"x"))), i + 1))
        });
        let body = StreamBody::new(Box::pin(trickle));
        let error = budget
            .read(body, &http::HeaderMap::new(), 1000, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!((error.status.as_u16(), error.code), (408, "request_timeout"));
        assert_eq!(budget.in_use(), 0);
    }

    /// A connection is idle only with nothing in flight, counted from the last request's end.
    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_request() {
        let idle = Duration::from_secs(10);
        let activity = ConnActivity::new();
        let request = activity.begin();
        assert_eq!(activity.idle_deadline(idle), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(activity.idle_deadline(idle), None, "a long request is not idleness");
        drop(request);
        let ended = Instant::now();
        assert_eq!(activity.idle_deadline(idle), Some(ended + idle));
        activity.idle_for(idle).await;
        assert_eq!(Instant::now(), ended + idle);
    }
}
